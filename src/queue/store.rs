//! The work queue in the store's tables (`work_queue`, `work_dead`,
//! `work_done`; see [`crate::store::NewWork`] for why not the inbox).
//!
//! # Concurrency
//! * **PostgreSQL**: any number of workers in any number of processes.
//!   A claim is one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
//!   LOCKED)`: concurrent claimers skip each other's rows instead of
//!   waiting, and no row is leased to two workers at once. A lease is a
//!   visibility time: the claim moves `visible_at_ms` past the lease, so a
//!   crashed worker's items become claimable again by themselves, with no
//!   sweeper. Every later step (ack, retry, dead letter) names the lease's
//!   random token and does nothing once someone else has claimed the row.
//! * **SQLite**: one writer at a time. All writes of a [`StoreQueue`]
//!   (and its clones) in this process go through one async gate, each in a
//!   `BEGIN IMMEDIATE` transaction, so they queue in order instead of
//!   retrying on `SQLITE_BUSY`; the enqueue side is batched by a
//!   [`GroupCommit`](super::GroupCommit) with one writer task. Readers
//!   (depth, age) do not take the gate (WAL). Other writers of the same
//!   file (the sync engine, a second process) are serialised by SQLite's
//!   lock and the busy timeout, which is correct but slower: run one
//!   `concord serve` per SQLite file.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

use super::{
    Enqueued, Handle, Lease, Nacked, Queue, QueueError, QueueSettings, WorkItem, age_since_ms,
    time_of_ms,
};
use crate::store::{Backend, NewWork, Store};

/// How often an idle `receive` looks again (enqueues in this process wake
/// it at once).
const POLL: Duration = Duration::from_millis(100);

/// A [`Queue`] in the store. Cheap to clone; clones share the SQLite gate.
#[derive(Clone)]
pub struct StoreQueue {
    store: Store,
    settings: Arc<QueueSettings>,
    gate: Option<Arc<Mutex<()>>>,
    arrived: Arc<Notify>,
}

impl StoreQueue {
    pub fn new(store: Store, settings: QueueSettings) -> StoreQueue {
        let gate = (store.backend() == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        StoreQueue {
            store,
            settings: Arc::new(settings),
            gate,
            arrived: Arc::new(Notify::new()),
        }
    }

    /// Holds the SQLite write gate (nothing on PostgreSQL).
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        }
    }

    fn lease_of(lease: &Lease) -> (i64, i64) {
        match lease.handle {
            Handle::Store { row_id, token } => (row_id, token),
            // A lease from another queue never matches a row.
            Handle::Amqp { .. } => (-1, 0),
        }
    }

    /// Keeps `lease` for another lease period (long work). `LeaseLost` if
    /// it ran out and someone else has the item.
    pub async fn extend(&self, lease: &Lease) -> Result<(), QueueError> {
        let (row, token) = Self::lease_of(lease);
        let _turn = self.write_turn().await;
        let ms = i64::try_from(self.settings.lease().as_millis()).unwrap_or(i64::MAX);
        if self.store.work_extend(row, token, ms).await? {
            Ok(())
        } else {
            Err(QueueError::LeaseLost {
                work_id: lease.item.work_id.clone(),
            })
        }
    }
}

#[async_trait]
impl Queue for StoreQueue {
    fn name(&self) -> &str {
        &self.settings.name
    }

    async fn enqueue_many(&self, items: Vec<WorkItem>) -> Result<Vec<Enqueued>, QueueError> {
        let items: Vec<NewWork> = items
            .into_iter()
            .map(|i| NewWork {
                work_id: i.work_id,
                kind: i.kind,
                payload: i.payload,
            })
            .collect();
        let stored = {
            let _turn = self.write_turn().await;
            self.store
                .work_enqueue(&self.settings.name, &items, self.settings.sqlite_full_sync)
                .await?
        };
        self.arrived.notify_waiters();
        Ok(stored
            .into_iter()
            .map(|new| {
                if new {
                    Enqueued::Stored
                } else {
                    Enqueued::Duplicate
                }
            })
            .collect())
    }

    async fn receive(&self, max: usize) -> Result<Vec<Lease>, QueueError> {
        let deadline = Instant::now() + Duration::from_millis(self.settings.receive_wait_ms);
        let lease_ms = i64::try_from(self.settings.lease().as_millis()).unwrap_or(i64::MAX);
        let max = u32::try_from(max.max(1)).unwrap_or(u32::MAX);
        loop {
            // Registered before the claim, so an enqueue between the claim
            // and the wait still wakes us.
            let arrived = self.arrived.notified();
            let claim = {
                let _turn = self.write_turn().await;
                self.store
                    .work_claim(
                        &self.settings.name,
                        max,
                        lease_ms,
                        self.settings.max_attempts,
                    )
                    .await?
            };
            for work_id in &claim.dead_lettered {
                tracing::warn!(
                    message = "Work went to dead letters: its lease ran out on the last attempt.",
                    queue = %self.settings.name,
                    %work_id
                );
            }
            if !claim.items.is_empty() {
                return Ok(claim
                    .items
                    .into_iter()
                    .map(|w| Lease {
                        item: WorkItem {
                            work_id: w.work_id,
                            kind: w.kind,
                            payload: w.payload,
                        },
                        attempt: w.attempt,
                        enqueued_at: time_of_ms(w.enqueued_at_ms),
                        last_error: w.last_error,
                        handle: Handle::Store {
                            row_id: w.row_id,
                            token: w.lease_token,
                        },
                    })
                    .collect());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout(POLL.min(deadline - now), arrived).await;
        }
    }

    async fn ack_many(&self, leases: &[Lease]) -> Result<usize, QueueError> {
        let pairs: Vec<(i64, i64)> = leases.iter().map(Self::lease_of).collect();
        let _turn = self.write_turn().await;
        Ok(self.store.work_ack(&pairs).await?)
    }

    async fn nack(&self, lease: &Lease, error: &str) -> Result<Nacked, QueueError> {
        let (row, token) = Self::lease_of(lease);
        let lost = || QueueError::LeaseLost {
            work_id: lease.item.work_id.clone(),
        };
        let _turn = self.write_turn().await;
        if lease.attempt >= self.settings.max_attempts {
            let reason = format!(
                "failed {} of {} attempts; the last: {error}",
                lease.attempt, self.settings.max_attempts
            );
            return if self.store.work_dead_letter(row, token, &reason).await? {
                Ok(Nacked::Dead)
            } else {
                Err(lost())
            };
        }
        let after = self.settings.retry_delay(lease.attempt);
        let at = crate::store::now_ms()
            .saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
        if self.store.work_retry(row, token, at, error).await? {
            Ok(Nacked::Retry { after })
        } else {
            Err(lost())
        }
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<(), QueueError> {
        let (row, token) = Self::lease_of(lease);
        let _turn = self.write_turn().await;
        if self.store.work_dead_letter(row, token, reason).await? {
            Ok(())
        } else {
            Err(QueueError::LeaseLost {
                work_id: lease.item.work_id.clone(),
            })
        }
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        let stats = self.store.work_stats(&self.settings.name).await?;
        Ok(u64::try_from(stats.depth).unwrap_or(0))
    }

    async fn oldest_age(&self) -> Result<Option<Duration>, QueueError> {
        let stats = self.store.work_stats(&self.settings.name).await?;
        Ok(stats.oldest_enqueued_at_ms.map(age_since_ms))
    }

    async fn dead_count(&self) -> Result<u64, QueueError> {
        let stats = self.store.work_stats(&self.settings.name).await?;
        Ok(u64::try_from(stats.dead).unwrap_or(0))
    }
}
