//! Inbox workers: claim stored webhook events, turn each into records (the
//! payload is the record, or it names records to fetch), take them in
//! through the sync engine, and settle the event: processed, or failed with
//! the reason (retried with backoff, then dead).
//!
//! Claiming and settling go through [`queue`] only, so that a `Queue`
//! implementation (store tables or a broker) can replace direct inbox
//! access in one place.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::settings::{EventMode, WebhookSettings, WebhookSystem};
use crate::connector::RawRecord;
use crate::model::ExternalId;
use crate::store::{ClaimedEvent, Retry, Store};
use crate::sync::Engine;

/// Claim and settle: the one place that knows events come from the inbox
/// table.
pub(crate) mod queue {
    use crate::store::{ClaimedEvent, Retry, Store, StoreError};

    pub(crate) async fn claim(
        store: &Store,
        owner: &str,
        limit: u32,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        store.inbox_claim(owner, limit, lease_ms).await
    }

    pub(crate) async fn ack(
        store: &Store,
        event: &ClaimedEvent,
        owner: &str,
    ) -> Result<bool, StoreError> {
        store.inbox_done(event.id, owner).await
    }

    pub(crate) async fn nack(
        store: &Store,
        event: &ClaimedEvent,
        owner: &str,
        reason: &str,
        retry: Retry,
    ) -> Result<(), StoreError> {
        store.inbox_fail(event.id, owner, reason, retry).await
    }

    /// Gives back what `owner` holds and did not settle.
    pub(crate) async fn release(store: &Store, owner: &str) -> Result<u64, StoreError> {
        store.inbox_release(owner).await
    }
}

/// Why an event could not be processed.
pub(crate) enum Failure {
    /// Retrying cannot help (the payload is not what the settings say).
    Permanent(String),
    /// May work later (a system or the store was unavailable).
    Transient(String),
}

pub struct Worker {
    pub engine: Arc<Engine>,
    pub settings: Arc<WebhookSettings>,
    pub owner: String,
    pub claim_batch: u32,
    pub lease_ms: i64,
    /// How long to wait when the inbox is empty.
    pub idle: Duration,
}

impl Worker {
    fn store(&self) -> &Store {
        self.engine.store()
    }

    /// Runs until `stop` turns true. The event being processed is
    /// finished; claimed events not yet started are given back.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                break;
            }
            let claimed = match queue::claim(
                self.store(),
                &self.owner,
                self.claim_batch,
                self.lease_ms,
            )
            .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(message = "Cannot claim inbox events; trying again.", error = %e);
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(self.idle) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            for event in &claimed {
                if *stop.borrow() {
                    break;
                }
                self.process(event).await;
            }
            if *stop.borrow() {
                break;
            }
        }
        match queue::release(self.store(), &self.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(message = "Gave back inbox events not started.", events = n),
            Err(e) => {
                tracing::warn!(message = "Could not give back inbox claims; they expire with their lease.", error = %e)
            }
        }
    }

    /// Processes one claimed event and settles it.
    pub async fn process(&self, event: &ClaimedEvent) {
        let outcome = self.handle(event).await;
        let store = self.store();
        let settled = match outcome {
            Ok(report) => {
                tracing::info!(message = "Webhook event taken in.", event = %event.idempotency_key, job = %report.job,
                    created = report.created, updated = report.updated, unchanged = report.unchanged,
                    quarantined = report.quarantined, conflicts = report.conflicts);
                queue::ack(store, event, &self.owner).await.map(|_| ())
            }
            Err(Failure::Permanent(reason)) => {
                tracing::warn!(message = "Webhook event cannot be processed; marked dead.", event = %event.idempotency_key, reason = %reason);
                queue::nack(store, event, &self.owner, &reason, Retry::Dead).await
            }
            Err(Failure::Transient(reason)) => {
                let retry = if event.attempts >= i64::from(self.settings.max_attempts) {
                    Retry::Dead
                } else {
                    let exp = u32::try_from(event.attempts.clamp(1, 20) - 1).unwrap_or(0);
                    let delay = self.settings.retry_secs.saturating_mul(1u64 << exp);
                    Retry::At(
                        chrono::Utc::now().timestamp_millis()
                            + i64::try_from(delay.saturating_mul(1000)).unwrap_or(i64::MAX / 2),
                    )
                };
                tracing::warn!(message = "Webhook event failed.", event = %event.idempotency_key, attempt = event.attempts,
                    dead = matches!(retry, Retry::Dead), reason = %reason);
                queue::nack(store, event, &self.owner, &reason, retry).await
            }
        };
        if let Err(e) = settled {
            tracing::warn!(message = "Could not settle an inbox event; it is taken up again when its claim expires.", event = %event.idempotency_key, error = %e);
        }
    }

    async fn handle(&self, event: &ClaimedEvent) -> Result<crate::sync::JobReport, Failure> {
        let prepared = prepare(&self.engine, &self.settings, &event.system, &event.payload).await?;
        self.engine
            .ingest_records(&prepared.job, &prepared.records, self.settings.deliver)
            .await
            .map_err(|e| Failure::Transient(format!("{e:#}")))
    }
}

/// An event turned into records for a job.
pub(crate) struct Prepared {
    pub job: String,
    pub records: Vec<RawRecord>,
}

/// Finds the job that reads `system`'s events and the records `payload`
/// holds or names (fetched from the system in `pull` mode).
pub(crate) async fn prepare(
    engine: &Engine,
    settings: &WebhookSettings,
    system: &str,
    payload: &Value,
) -> Result<Prepared, Failure> {
    let cfg = settings
        .systems
        .get(system)
        .ok_or_else(|| Failure::Permanent(format!("no [webhooks.systems.{system}] settings")))?;
    let job = engine
        .jobs()
        .iter()
        .find(|j| j.source.system == *system && j.source.entity == cfg.entity)
        .ok_or_else(|| {
            Failure::Permanent(format!(
                "no job reads {system} {}; add one with that source",
                cfg.entity
            ))
        })?;
    let records = match cfg.mode {
        EventMode::Record => records_in(payload, cfg).map_err(Failure::Permanent)?,
        EventMode::Pull => {
            let ids = ids_in(payload, cfg).map_err(Failure::Permanent)?;
            let connector = engine
                .connector(system)
                .map_err(|e| Failure::Permanent(format!("{e:#}")))?;
            let mut records = Vec::with_capacity(ids.len());
            for id in ids {
                match connector.get(&cfg.entity, &id).await {
                    Ok(Some(r)) => records.push(r),
                    // Gone since the event was sent: nothing to take in.
                    Ok(None) => {
                        tracing::info!(message = "A record named by a webhook no longer exists.", system = %system, id = %id);
                    }
                    Err(e) => return Err(Failure::Transient(format!("fetching {id}: {e}"))),
                }
            }
            records
        }
    };
    Ok(Prepared {
        job: job.name.clone(),
        records,
    })
}

fn at<'a>(payload: &'a Value, pointer: &str) -> Result<&'a Value, String> {
    payload
        .pointer(pointer)
        .ok_or_else(|| format!("the event has nothing at {pointer:?}"))
}

fn id_of(v: &Value, place: &str) -> Result<ExternalId, String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(format!("{place} is not a string or number")),
    };
    ExternalId::parse(&text).map_err(|e| format!("{place}: {e}"))
}

/// `record` mode: the record(s) at `records`, each with its id.
pub fn records_in(payload: &Value, cfg: &WebhookSystem) -> Result<Vec<RawRecord>, String> {
    let found = at(payload, &cfg.records)?;
    let items: Vec<&Value> = match found {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![found],
        _ => {
            return Err(format!(
                "{:?} is neither a record nor a list of records",
                cfg.records
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let id = r
                .pointer(&cfg.record_id)
                .ok_or_else(|| format!("record {i} has no id at {:?}", cfg.record_id))?;
            Ok(RawRecord {
                external_id: id_of(id, &format!("record {i} {}", cfg.record_id))?,
                updated_at: None,
                data: r.clone(),
            })
        })
        .collect()
}

/// `pull` mode: the id(s) at `records`.
pub fn ids_in(payload: &Value, cfg: &WebhookSystem) -> Result<Vec<ExternalId>, String> {
    match at(payload, &cfg.records)? {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| id_of(v, &format!("{}[{i}]", cfg.records)))
            .collect(),
        v => Ok(vec![id_of(v, &cfg.records)?]),
    }
}
