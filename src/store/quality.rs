//! Data-quality alerts in the store: what the rules read, raising and
//! resolving their alerts, acknowledgements, and sink delivery state.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::types::Json;

use super::dialect::Dialect;
use super::{
    NewAlert, Pool, Result, Severity, Store, StoreError, decode_money, parse_entity, parse_id,
    push_list,
};
use crate::model::{CanonicalId, EntityKind};

/// An alert as stored, with its handling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRecord {
    pub id: i64,
    #[serde(flatten)]
    pub alert: NewAlert,
    /// `open`, `acked` or `resolved`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub acked_by: Option<String>,
    pub acked_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
    /// `pending` until every configured sink has it, then `done`.
    pub sink_state: String,
    /// Sinks that confirmed it.
    pub sinks_delivered: Vec<String>,
    pub sink_attempts: i64,
    pub sink_error: Option<String>,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub rule: Option<String>,
    pub severity: Option<Severity>,
    /// `open`, `acked`, `resolved`, or `None` for all.
    pub status: Option<String>,
    pub limit: Option<u32>,
}

/// What [`Store::ack_alerts`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AckOutcome {
    pub acked: Vec<i64>,
    /// Already acknowledged or resolved: left as they were.
    pub not_open: Vec<i64>,
    pub unknown: Vec<i64>,
}

/// What [`Store::settle_quality_alerts`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettleOutcome {
    /// Ids of the alerts raised now (their cause was new).
    pub raised: Vec<i64>,
    /// Alerts resolved because their cause no longer holds.
    pub resolved: u64,
}

/// A current record's data, for the rules.
#[derive(Debug, Clone)]
pub struct CurrentRecord {
    pub id: CanonicalId,
    pub version: i64,
    pub data: Value,
    /// When concord first stored the record.
    pub created_at: DateTime<Utc>,
}

/// One historical version of a record.
#[derive(Debug, Clone)]
pub struct VersionData {
    pub id: CanonicalId,
    pub version: i64,
    pub data: Value,
    pub at: DateTime<Utc>,
}

/// Columns [`alert_from_row`] reads.
const ALERT_COLUMNS: &str = "id, rule, severity, entity, record_ids, reason, amount, currency, status, created_at, resolved_at, cause, acked_by, acked_at, note, sink_state, sinks_delivered, sink_attempts, sink_error";

/// Suffix given to the cause of a resolved alert, so the same cause, if
/// it comes back, raises a new alert (the unique index covers every
/// status).
fn resolved_cause(cause: &str, id: i64) -> String {
    format!("{cause}#resolved-{id}")
}

macro_rules! alert_record_from_row {
    ($db:ty, $row:expr) => {{
        let row = $row;
        let q = || StoreError::query("read alerts");
        let severity: String = row.try_get("severity").map_err(q())?;
        let entity: Option<String> = row.try_get("entity").map_err(q())?;
        let Json(record_ids): Json<Vec<String>> = row.try_get("record_ids").map_err(q())?;
        let Json(sinks_delivered): Json<Vec<String>> =
            row.try_get("sinks_delivered").map_err(q())?;
        Ok::<_, StoreError>(AlertRecord {
            id: row.try_get("id").map_err(q())?,
            alert: NewAlert {
                rule: row.try_get("rule").map_err(q())?,
                severity: Severity::from_str(&severity).map_err(|reason| StoreError::Corrupt {
                    table: "alerts",
                    column: "severity",
                    reason,
                })?,
                entity: entity
                    .as_deref()
                    .map(|e| parse_entity("alerts", e))
                    .transpose()?,
                record_ids,
                reason: row.try_get("reason").map_err(q())?,
                amount: decode_money::<$db>(
                    "alerts",
                    row.try_get("amount").map_err(q())?,
                    row.try_get("currency").map_err(q())?,
                )?,
                cause: row.try_get("cause").map_err(q())?,
            },
            status: row.try_get("status").map_err(q())?,
            created_at: row.try_get("created_at").map_err(q())?,
            resolved_at: row.try_get("resolved_at").map_err(q())?,
            acked_by: row.try_get("acked_by").map_err(q())?,
            acked_at: row.try_get("acked_at").map_err(q())?,
            note: row.try_get("note").map_err(q())?,
            sink_state: row.try_get("sink_state").map_err(q())?,
            sinks_delivered,
            sink_attempts: row.try_get("sink_attempts").map_err(q())?,
            sink_error: row.try_get("sink_error").map_err(q())?,
        })
    }};
}

impl Store {
    /// Alerts matching `filter`, newest first.
    pub async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>> {
        on_pool!(self, |pool, Db| {
            let mut q = sqlx::QueryBuilder::<Db>::new(format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE 1 = 1"
            ));
            if let Some(rule) = &filter.rule {
                q.push(" AND rule = ").push_bind(rule.clone());
            }
            if let Some(severity) = filter.severity {
                q.push(" AND severity = ").push_bind(severity.as_str());
            }
            if let Some(status) = &filter.status {
                q.push(" AND status = ").push_bind(status.clone());
            }
            q.push(" ORDER BY id DESC LIMIT ")
                .push_bind(i64::from(filter.limit.unwrap_or(u32::MAX)));
            let rows = q
                .build()
                .fetch_all(pool)
                .await
                .map_err(StoreError::query("read alerts"))?;
            rows.iter()
                .map(|row| alert_record_from_row!(Db, row))
                .collect()
        })
    }

    /// Alerts by id, in id order.
    pub async fn alerts_by_id(&self, ids: &[i64]) -> Result<Vec<AlertRecord>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(super::LOOKUP_CHUNK) {
            on_pool!(self, |pool, Db| {
                let mut q = sqlx::QueryBuilder::<Db>::new(format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts WHERE id IN "
                ));
                push_list(&mut q, chunk.iter().copied());
                q.push(" ORDER BY id");
                let rows = q
                    .build()
                    .fetch_all(pool)
                    .await
                    .map_err(StoreError::query("read alerts"))?;
                for row in &rows {
                    out.push(alert_record_from_row!(Db, row)?);
                }
            });
        }
        out.sort_by_key(|a| a.id);
        Ok(out)
    }

    /// Acknowledges open alerts: who, when, and an optional note. Alerts
    /// not open are reported, not changed.
    pub async fn ack_alerts(
        &self,
        ids: &[i64],
        actor: &str,
        note: Option<&str>,
    ) -> Result<AckOutcome> {
        let now = Utc::now();
        let mut outcome = AckOutcome::default();
        let existing: std::collections::HashMap<i64, String> = self
            .alerts_by_id(ids)
            .await?
            .into_iter()
            .map(|a| (a.id, a.status))
            .collect();
        on_pool!(self, |pool, _Db| {
            let mut tx = pool.begin().await.map_err(StoreError::query("begin"))?;
            for &id in ids {
                match existing.get(&id).map(String::as_str) {
                    None => outcome.unknown.push(id),
                    Some("open") => {
                        let done = sqlx::query(
                            "UPDATE alerts SET status = 'acked', acked_by = $2, acked_at = $3, note = COALESCE($4, note)
                             WHERE id = $1 AND status = 'open'",
                        )
                        .bind(id)
                        .bind(actor)
                        .bind(now)
                        .bind(note)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::query("ack alert"))?;
                        if done.rows_affected() == 1 {
                            outcome.acked.push(id);
                        } else {
                            outcome.not_open.push(id);
                        }
                    }
                    Some(_) => outcome.not_open.push(id),
                }
            }
            tx.commit().await.map_err(StoreError::query("commit"))?;
        });
        Ok(outcome)
    }

    /// Stores what one evaluation of the rules found, in one transaction:
    /// raises each alert whose cause is new (an alert of the same rule and
    /// cause, open or acknowledged, is not raised again), and resolves
    /// the open and acknowledged alerts of `rules` whose cause is not among
    /// `alerts` any more. A resolved alert's cause gets a
    /// `#resolved-<id>` suffix, so the same cause coming back later raises
    /// a new alert.
    pub async fn settle_quality_alerts(
        &self,
        rules: &[&str],
        alerts: &[NewAlert],
    ) -> Result<SettleOutcome> {
        let now = Utc::now();
        let mut outcome = SettleOutcome::default();
        let current: BTreeSet<(&str, &str)> = alerts
            .iter()
            .filter_map(|a| a.cause.as_deref().map(|c| (a.rule.as_str(), c)))
            .collect();
        on_pool!(self, |pool, Db| {
            let mut tx = pool.begin().await.map_err(StoreError::query("begin"))?;
            // The rules' live alerts, to find those whose cause went away.
            let mut live: Vec<(i64, String, String)> = Vec::new();
            for chunk in rules.chunks(super::LOOKUP_CHUNK) {
                if chunk.is_empty() {
                    continue;
                }
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "SELECT id, rule, cause FROM alerts WHERE status IN ('open', 'acked') AND cause IS NOT NULL AND rule IN ",
                );
                push_list(&mut q, chunk.iter().copied());
                for row in q
                    .build()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(StoreError::query("read alerts"))?
                {
                    let q = || StoreError::query("read alerts");
                    live.push((
                        row.try_get("id").map_err(q())?,
                        row.try_get("rule").map_err(q())?,
                        row.try_get("cause").map_err(q())?,
                    ));
                }
            }
            for (id, rule, cause) in &live {
                if current.contains(&(rule.as_str(), cause.as_str())) {
                    continue;
                }
                let done = sqlx::query(
                    "UPDATE alerts SET status = 'resolved', resolved_at = $2, cause = $3,
                       note = COALESCE(note || ' / ', '') || 'resolved: the cause no longer holds'
                     WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .bind(resolved_cause(cause, *id))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("resolve alert"))?;
                outcome.resolved += done.rows_affected();
            }
            // Causes already raised are skipped here rather than left to
            // the unique index: most of a run's alerts hold from before.
            let raised: BTreeSet<(&str, &str)> = live
                .iter()
                .map(|(_, rule, cause)| (rule.as_str(), cause.as_str()))
                .collect();
            for alert in alerts {
                let known = alert
                    .cause
                    .as_deref()
                    .is_some_and(|c| raised.contains(&(alert.rule.as_str(), c)));
                if known {
                    continue;
                }
                if let Some(id) = insert_alert!(Db, &mut *tx, alert, now)? {
                    outcome.raised.push(id);
                }
            }
            tx.commit().await.map_err(StoreError::query("commit"))?;
        });
        Ok(outcome)
    }

    /// Alerts some sink has not confirmed yet, oldest first.
    pub async fn alerts_pending_sinks(&self, limit: u32) -> Result<Vec<AlertRecord>> {
        on_pool!(self, |pool, Db| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE sink_state = 'pending' ORDER BY id LIMIT $1"
            )))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read alerts"))?;
            rows.iter()
                .map(|row| alert_record_from_row!(Db, row))
                .collect()
        })
    }

    /// Records a dispatch attempt of one alert: the sinks that have it now
    /// (all so far), whether that is every configured sink, and the last
    /// error.
    pub async fn record_alert_dispatch(
        &self,
        id: i64,
        delivered: &[String],
        done: bool,
        error: Option<&str>,
    ) -> Result<()> {
        on_pool!(self, |pool, _Db| {
            sqlx::query(
                "UPDATE alerts SET sinks_delivered = $2, sink_state = $3, sink_error = $4,
                   sink_attempts = sink_attempts + 1
                 WHERE id = $1",
            )
            .bind(id)
            .bind(Json(delivered))
            .bind(if done { "done" } else { "pending" })
            .bind(error)
            .execute(pool)
            .await
            .map_err(StoreError::query("record alert dispatch"))?;
        });
        Ok(())
    }

    /// The current version of every record of `entity`, with its data.
    pub async fn current_records(&self, entity: EntityKind) -> Result<Vec<CurrentRecord>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(
                "SELECT r.id, r.version, r.created_at, v.data
                 FROM records r JOIN record_versions v
                   ON v.entity = r.entity AND v.id = r.id AND v.version = r.version
                 WHERE r.entity = $1 ORDER BY r.id",
            )
            .bind(entity.as_str())
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read records"))?;
            rows.iter()
                .map(|row| {
                    let q = || StoreError::query("read records");
                    let id: String = row.try_get("id").map_err(q())?;
                    let Json(data): Json<Value> = row.try_get("data").map_err(q())?;
                    Ok(CurrentRecord {
                        id: parse_id("records", &id)?,
                        version: row.try_get("version").map_err(q())?,
                        data,
                        created_at: row.try_get("created_at").map_err(q())?,
                    })
                })
                .collect()
        })
    }

    /// Every version of every record of `entity`, ordered by id and
    /// version.
    pub async fn all_versions(&self, entity: EntityKind) -> Result<Vec<VersionData>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(
                "SELECT id, version, data, at FROM record_versions WHERE entity = $1 ORDER BY id, version",
            )
            .bind(entity.as_str())
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read record versions"))?;
            rows.iter()
                .map(|row| {
                    let q = || StoreError::query("read record versions");
                    let id: String = row.try_get("id").map_err(q())?;
                    let Json(data): Json<Value> = row.try_get("data").map_err(q())?;
                    Ok(VersionData {
                        id: parse_id("record_versions", &id)?,
                        version: row.try_get("version").map_err(q())?,
                        data,
                        at: row.try_get("at").map_err(q())?,
                    })
                })
                .collect()
        })
    }

    /// Every link with its last-synced view:
    /// `(entity, system, canonical id, synced data)`.
    pub async fn all_link_views(
        &self,
    ) -> Result<Vec<(EntityKind, String, CanonicalId, Option<Value>)>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(concat!(
                "SELECT entity, system, canonical_id, ",
                synced_data_column!(),
                " AS synced_data FROM links ORDER BY entity, canonical_id, system"
            ))
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read links"))?;
            rows.iter()
                .map(|row| {
                    let q = || StoreError::query("read links");
                    let entity: String = row.try_get("entity").map_err(q())?;
                    let id: String = row.try_get("canonical_id").map_err(q())?;
                    let data: Option<Json<Value>> = row.try_get("synced_data").map_err(q())?;
                    Ok((
                        parse_entity("links", &entity)?,
                        row.try_get("system").map_err(q())?,
                        parse_id("links", &id)?,
                        data.map(|Json(v)| v),
                    ))
                })
                .collect()
        })
    }

    /// Outbox entries not delivered (pending or dead):
    /// `(entity, canonical id, target, status)`.
    pub async fn undelivered_outbox(
        &self,
    ) -> Result<Vec<(EntityKind, CanonicalId, String, String)>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(
                // One query per status, so that each reads its own index.
                "SELECT id, entity, canonical_id, target_system, status FROM outbox WHERE status = 'pending'
                 UNION ALL
                 SELECT id, entity, canonical_id, target_system, status FROM outbox WHERE status = 'dead'
                 ORDER BY id",
            )
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read outbox"))?;
            rows.iter()
                .map(|row| {
                    let q = || StoreError::query("read outbox");
                    let entity: String = row.try_get("entity").map_err(q())?;
                    let id: String = row.try_get("canonical_id").map_err(q())?;
                    Ok((
                        parse_entity("outbox", &entity)?,
                        parse_id("outbox", &id)?,
                        row.try_get("target_system").map_err(q())?,
                        row.try_get("status").map_err(q())?,
                    ))
                })
                .collect()
        })
    }
}
