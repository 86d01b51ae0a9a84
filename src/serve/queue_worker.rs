//! Workers for `[queue] kind = "amqp"`: webhook events arrive as work items
//! on the [`Queue`] instead of inbox rows. Each item is taken in through
//! the sync engine with its work id marked done in the same transaction
//! ([`Engine::ingest_records_once`]), then acknowledged. A copy whose work
//! id is done already (a duplicate event, or a redelivery after a commit
//! whose acknowledgement was lost) is acknowledged and skipped; a failure
//! is handed back for a retry (dead letters after `queue.max_attempts`),
//! and an event that can never be processed goes to dead letters at once
//! with the reason.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::settings::WebhookSettings;
use super::worker::{Failure, prepare};
use crate::queue::{Lease, Queue, WorkItem};
use crate::sync::Engine;

/// The work item kind of webhook events.
pub const WEBHOOK_KIND: &str = "webhook";

/// The work item for a verified webhook event: work id
/// `webhook:{system}:{event_id}`.
pub fn webhook_item(system: &str, event_id: &str, payload: Value) -> WorkItem {
    WorkItem::new(
        format!("webhook:{system}:{event_id}"),
        WEBHOOK_KIND,
        json!({ "system": system, "event_id": event_id, "payload": payload }),
    )
}

pub struct QueueWorker {
    pub engine: Arc<Engine>,
    pub settings: Arc<WebhookSettings>,
    pub queue: Arc<dyn Queue>,
    /// Items received at once.
    pub batch: usize,
}

/// What became of one item.
enum Outcome {
    Applied,
    Skipped,
    Failed(Failure),
}

impl QueueWorker {
    /// Runs until `stop` turns true. The item being processed is finished;
    /// items received and not started are not acknowledged, so the broker
    /// hands them out again (when their lease runs out, or at once when
    /// the daemon closes its connection at shutdown).
    pub async fn run(self, stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            // `receive` waits at most `queue.receive_wait_ms`, so a stop is
            // seen soon enough without cancelling it halfway.
            let leases = match self.queue.receive(self.batch.max(1)).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(message = "Cannot receive work; trying again.", queue = %self.queue.name(), error = %e);
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            };
            for lease in &leases {
                if *stop.borrow() {
                    break;
                }
                self.process(lease).await;
            }
        }
    }

    /// Processes one item and settles it.
    pub async fn process(&self, lease: &Lease) {
        let work_id = &lease.item.work_id;
        let settled = match self.apply(lease).await {
            Outcome::Applied | Outcome::Skipped => self.queue.ack(lease).await.map(|_| ()),
            Outcome::Failed(Failure::Permanent(reason)) => {
                tracing::warn!(message = "Webhook event cannot be processed; sent to dead letters.", work = %work_id, reason = %reason);
                self.queue.dead_letter(lease, &reason).await
            }
            Outcome::Failed(Failure::Transient(reason)) => {
                let nacked = self.queue.nack(lease, &reason).await;
                tracing::warn!(message = "Webhook event failed.", work = %work_id, attempt = lease.attempt,
                    dead = matches!(nacked, Ok(crate::queue::Nacked::Dead)), reason = %reason);
                nacked.map(|_| ())
            }
        };
        if let Err(e) = settled {
            tracing::warn!(message = "Could not settle a work item; the broker delivers it again and a copy already applied is skipped.", work = %work_id, error = %e);
        }
    }

    async fn apply(&self, lease: &Lease) -> Outcome {
        let item = &lease.item;
        if item.kind != WEBHOOK_KIND {
            return Outcome::Failed(Failure::Permanent(format!(
                "work of kind {:?} is not a webhook event; this queue carries webhook events only",
                item.kind
            )));
        }
        let (Some(system), Some(payload)) = (
            item.payload.get("system").and_then(Value::as_str),
            item.payload.get("payload"),
        ) else {
            return Outcome::Failed(Failure::Permanent(
                "the work item has no \"system\" string and \"payload\"".to_owned(),
            ));
        };
        let prepared = match prepare(&self.engine, &self.settings, system, payload).await {
            Ok(p) => p,
            Err(f) => return Outcome::Failed(f),
        };
        match self
            .engine
            .ingest_records_once(
                &prepared.job,
                &prepared.records,
                self.settings.deliver,
                &item.work_id,
            )
            .await
        {
            Ok(Some(report)) => {
                tracing::info!(message = "Webhook event taken in.", work = %item.work_id, job = %report.job,
                    created = report.created, updated = report.updated, unchanged = report.unchanged,
                    quarantined = report.quarantined, conflicts = report.conflicts);
                Outcome::Applied
            }
            Ok(None) => {
                tracing::info!(message = "Webhook event applied before; skipped.", work = %item.work_id);
                Outcome::Skipped
            }
            Err(e) => Outcome::Failed(Failure::Transient(format!("{e:#}"))),
        }
    }
}
