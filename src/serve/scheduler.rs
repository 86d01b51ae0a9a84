//! The scheduler: runs jobs on their cron schedules.
//!
//! Each job's last fired occurrence is kept in the store. On each tick the
//! latest occurrence between it and now is due — one, however many were
//! missed while concord was down. Firing is one conditional UPDATE that
//! records the occurrence and takes the job's lease: of several instances
//! sharing a PostgreSQL store exactly one wins it, and while the lease is
//! held (renewed during the run) the job does not start again anywhere, so
//! it never overlaps itself. A crashed instance's lease expires.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::settings::SettingsError;
use crate::store::Store;
use crate::sync::JobSettings;

/// A job with its parsed schedule.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub job: String,
    pub schedule: cron::Schedule,
    pub tz: Tz,
}

/// The name the scheduler gives the store-mode reconciliation run of
/// `[reconcile] schedule` (its lease and last occurrence are kept under
/// it). Job names cannot hold `@`, so it meets no job.
pub const RECONCILE: &str = "@reconcile";

/// Reads every job's `schedule` and `timezone`; jobs without a schedule
/// are left out. Errors name the job and the problem.
pub fn plan(jobs: &[JobSettings]) -> Result<Vec<Scheduled>, SettingsError> {
    let mut out = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let key = format!("jobs[{i}]");
        let what = format!("job {}", job.name);
        if let Some(s) = parse(
            &job.name,
            job.schedule.as_deref(),
            job.timezone.as_deref(),
            &key,
            &what,
        )? {
            out.push(s);
        }
    }
    Ok(out)
}

/// [`plan`] for the jobs, then the reconciliation run of `[reconcile]
/// schedule` (under [`RECONCILE`]) when one is set.
pub fn plan_all(
    jobs: &[JobSettings],
    reconcile: &crate::settings::ReconcileSettings,
) -> Result<Vec<Scheduled>, SettingsError> {
    let mut out = plan(jobs)?;
    if reconcile.schedule.is_some()
        && let Some(reason) = reconcile.config().problem()
    {
        return Err(SettingsError::Value {
            key: "reconcile".to_owned(),
            reason,
        });
    }
    out.extend(parse(
        RECONCILE,
        reconcile.schedule.as_deref(),
        reconcile.timezone.as_deref(),
        "reconcile",
        "reconciliation",
    )?);
    Ok(out)
}

fn parse(
    name: &str,
    expr: Option<&str>,
    timezone: Option<&str>,
    key: &str,
    what: &str,
) -> Result<Option<Scheduled>, SettingsError> {
    let tz = match timezone {
        None => Tz::UTC,
        Some(zone) => Tz::from_str(zone).map_err(|_| SettingsError::Value {
            key: format!("{key}.timezone"),
            reason: format!("{zone:?} is not an IANA time zone (e.g. Europe/Berlin)"),
        })?,
    };
    let Some(expr) = expr else {
        if timezone.is_some() {
            return Err(SettingsError::Value {
                key: format!("{key}.timezone"),
                reason: format!("{what} has a time zone but no schedule"),
            });
        }
        return Ok(None);
    };
    let schedule = cron::Schedule::from_str(expr).map_err(|e| SettingsError::Value {
        key: format!("{key}.schedule"),
        reason: format!(
            "{expr:?} is not a cron expression (sec min hour day month weekday [year]): {e}"
        ),
    })?;
    Ok(Some(Scheduled {
        job: name.to_owned(),
        schedule,
        tz,
    }))
}

/// The latest occurrence of `schedule` after `last` and at or before
/// `now`, if any.
pub fn latest_due(
    schedule: &cron::Schedule,
    tz: Tz,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let scan = |from: DateTime<Utc>| {
        let mut latest = None;
        for occ in schedule.after(&from.with_timezone(&tz)) {
            let occ = occ.with_timezone(&Utc);
            if occ > now {
                break;
            }
            latest = Some(occ);
        }
        latest
    };
    // Dense schedules after a long stop: look at the last day first.
    let day_ago = now - chrono::Duration::days(1);
    if last < day_ago
        && let Some(found) = scan(day_ago)
    {
        return Some(found);
    }
    scan(last)
}

/// What running a job means (the engine in `concord serve`; a recorder in
/// tests). Gets the job's name and the occurrence being fired.
pub type RunJob =
    Arc<dyn Fn(String, DateTime<Utc>) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

pub struct Scheduler {
    pub store: Store,
    pub jobs: Vec<Scheduled>,
    /// This instance's name in leases.
    pub owner: String,
    pub lease: Duration,
    /// How often due occurrences are looked for.
    pub poll: Duration,
    pub run: RunJob,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

impl Scheduler {
    /// Fires what is due at `now`; started runs join `running`.
    pub async fn tick(&self, now: DateTime<Utc>, running: &mut JoinSet<()>) {
        let now_ms = now.timestamp_millis();
        for s in &self.jobs {
            let last_ms = match self.store.schedule_last_fire(&s.job, now_ms).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(message = "Cannot read a job's schedule.", job = %s.job, error = %e);
                    continue;
                }
            };
            let Some(last) = Utc.timestamp_millis_opt(last_ms).single() else {
                continue;
            };
            let Some(due) = latest_due(&s.schedule, s.tz, last, now) else {
                continue;
            };
            let until = now_ms + ms(self.lease);
            match self
                .store
                .schedule_claim(&s.job, &self.owner, due.timestamp_millis(), now_ms, until)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue, // fired elsewhere, or still running
                Err(e) => {
                    tracing::warn!(message = "Cannot claim a job's schedule.", job = %s.job, error = %e);
                    continue;
                }
            }
            let store = self.store.clone();
            let owner = self.owner.clone();
            let lease = self.lease;
            let job = s.job.clone();
            let run = (self.run)(job.clone(), due);
            running.spawn(async move {
                tracing::info!(message = "Scheduled run starting.", job = %job, occurrence = %due);
                let mut run = std::pin::pin!(run);
                let mut renew = tokio::time::interval(lease / 3);
                renew.tick().await;
                let result = loop {
                    tokio::select! {
                        r = &mut run => break r,
                        _ = renew.tick() => {
                            let until = Utc::now().timestamp_millis() + ms(lease);
                            if !store.schedule_renew(&job, &owner, until).await.unwrap_or(false) {
                                tracing::warn!(message = "Lost a job's lease while it runs.", job = %job);
                            }
                        }
                    }
                };
                match result {
                    Ok(()) => tracing::info!(message = "Scheduled run finished.", job = %job),
                    Err(e) => tracing::error!(message = "Scheduled run failed.", job = %job, error = %format!("{e:#}")),
                }
                if let Err(e) = store.schedule_release(&job, &owner).await {
                    tracing::warn!(message = "Could not release a job's lease; it expires.", job = %job, error = %e);
                }
            });
        }
    }

    /// Ticks until `stop` turns true, then waits for the runs started (the
    /// caller bounds that wait). No run starts after `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut running = JoinSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            self.tick(Utc::now(), &mut running).await;
            while running.try_join_next().is_some() {}
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = stop.changed() => {}
            }
        }
        while running.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn missed_occurrences_collapse_to_the_latest() {
        let every_minute = cron::Schedule::from_str("0 * * * * *").unwrap();
        let last = at("2026-11-28T08:00:00Z");
        let now = at("2026-11-28T10:30:30Z");
        assert_eq!(
            latest_due(&every_minute, Tz::UTC, last, now),
            Some(at("2026-11-28T10:30:00Z"))
        );
        // Nothing due yet.
        assert_eq!(
            latest_due(&every_minute, Tz::UTC, at("2026-11-28T10:30:00Z"), now),
            None
        );
        // A week down with a per-second schedule: still one, the latest.
        let every_second = cron::Schedule::from_str("* * * * * *").unwrap();
        assert_eq!(
            latest_due(&every_second, Tz::UTC, now - chrono::Duration::days(7), now),
            Some(now)
        );
    }

    #[test]
    fn time_zones_shift_occurrences() {
        // 06:00 in Berlin is 05:00 UTC in winter.
        let six = cron::Schedule::from_str("0 0 6 * * *").unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let due = latest_due(
            &six,
            berlin,
            at("2026-11-27T06:00:00Z"),
            at("2026-11-28T05:30:00Z"),
        );
        assert_eq!(due, Some(at("2026-11-28T05:00:00Z")));
        // A sparse schedule missed for months is found too.
        let yearly = cron::Schedule::from_str("0 0 0 1 1 *").unwrap();
        assert_eq!(
            latest_due(
                &yearly,
                Tz::UTC,
                at("2025-06-01T00:00:00Z"),
                at("2026-11-28T00:00:00Z")
            ),
            Some(at("2026-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_and_zones_name_the_job() {
        let job = |schedule: Option<&str>, tz: Option<&str>| -> JobSettings {
            serde_json::from_value(serde_json::json!({
                "name": "j",
                "schedule": schedule,
                "timezone": tz,
                "source": {"system": "s", "entity": "e", "mapping": "m"},
            }))
            .unwrap()
        };
        let e = plan(&[job(Some("every day"), None)]).unwrap_err();
        assert!(e.to_string().contains("jobs[0].schedule"), "{e}");
        let e = plan(&[job(Some("0 0 6 * * *"), Some("Mars/Olympus"))]).unwrap_err();
        assert!(e.to_string().contains("jobs[0].timezone"), "{e}");
        let ok = plan(&[
            job(Some("0 0 6 * * *"), Some("Europe/Berlin")),
            job(None, None),
        ])
        .unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].tz, chrono_tz::Europe::Berlin);
    }

    #[test]
    fn reconciliation_is_scheduled_under_its_own_name() {
        let mut r = crate::settings::ReconcileSettings::default();
        assert!(plan_all(&[], &r).unwrap().is_empty(), "off by default");
        r.schedule = Some("0 */15 7-19 * * Mon-Fri".into());
        r.timezone = Some("Asia/Shanghai".into());
        let planned = plan_all(&[], &r).unwrap();
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].job, RECONCILE);
        assert_eq!(planned[0].tz, chrono_tz::Asia::Shanghai);
        r.schedule = Some("hourly".into());
        let e = plan_all(&[], &r).unwrap_err();
        assert!(e.to_string().contains("reconcile.schedule"), "{e}");
        r.schedule = None;
        let e = plan_all(&[], &r).unwrap_err();
        assert!(e.to_string().contains("reconcile.timezone"), "{e}");
    }
}
