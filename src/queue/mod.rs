//! The durable work queue of `concord serve`: webhook events to process,
//! job runs, deliveries to make.
//!
//! A [`Queue`] takes [`WorkItem`]s and hands them to workers with a lease:
//!
//! * [`Queue::enqueue`] returns only once the item is durable (committed to
//!   the store, or confirmed by the broker), so a webhook receiver may
//!   answer 2xx right after it. Under load use [`GroupCommit`]: many
//!   concurrent enqueues become one transaction (or one pipelined batch of
//!   publishes awaiting their confirms together).
//! * [`Queue::receive`] leases up to `max` items. A lease that is neither
//!   acknowledged nor handed back within `lease_secs` runs out and the item
//!   is delivered again (also when the worker's connection dies).
//! * [`Queue::ack`] only after the work's effects are committed.
//! * [`Queue::nack`] retries later, after `retry_initial_ms` doubling per
//!   attempt up to `retry_max_secs`; after `max_attempts` attempts the item
//!   goes to dead letters with the reason. [`Queue::dead_letter`] sends it
//!   there at once (an item that can never succeed).
//! * [`Queue::depth`], [`Queue::oldest_age`] and [`Queue::dead_count`] are
//!   for metrics.
//!
//! # Delivered at least once, applied once
//! Every queue may deliver an item more than once: a worker can commit and
//! die before its acknowledgement arrives, a broker can redeliver after a
//! restart. Work is therefore applied once by marking its id done in the
//! same transaction as its effects ([`Batch::processed_work`]): the commit
//! of a second copy fails with [`StoreError::AlreadyProcessed`] and changes
//! nothing, and both queues drop items whose id is marked done when they
//! are received (acknowledging them). Work whose effects are outside the
//! store must be idempotent there (an idempotency key the target honours)
//! and is marked with [`Store::work_mark_done`] after it succeeded.
//!
//! [`Batch::processed_work`]: crate::store::Batch::processed_work
//! [`StoreError::AlreadyProcessed`]: crate::store::StoreError::AlreadyProcessed
//! [`Store::work_mark_done`]: crate::store::Store::work_mark_done

mod amqp;
mod group;
mod store;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::store::{Store, StoreError};

pub use amqp::AmqpQueue;
pub use group::GroupCommit;
pub use store::StoreQueue;

/// A unit of work.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkItem {
    /// Identifies the work across redeliveries and duplicates; namespaced
    /// by the producer (`webhook:stripe:evt_1`, `job:nightly:2026-11-28`).
    pub work_id: String,
    /// What kind of work (`webhook`, `job`, `delivery`).
    pub kind: String,
    pub payload: Value,
}

impl WorkItem {
    pub fn new(work_id: impl Into<String>, kind: impl Into<String>, payload: Value) -> WorkItem {
        WorkItem {
            work_id: work_id.into(),
            kind: kind.into(),
            payload,
        }
    }
}

/// What an enqueue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored durably.
    Stored,
    /// An item with this work id is queued already (the store queue knows;
    /// a broker cannot, and its consumers drop the duplicate instead).
    Duplicate,
}

/// A leased work item.
#[derive(Debug)]
pub struct Lease {
    pub item: WorkItem,
    /// 1 on the first delivery; counts failed attempts and leases that ran
    /// out.
    pub attempt: u32,
    pub enqueued_at: Option<DateTime<Utc>>,
    /// Why the previous attempt failed, if one did.
    pub last_error: Option<String>,
    handle: Handle,
}

#[derive(Debug, Clone, Copy)]
enum Handle {
    Store { row_id: i64, token: i64 },
    Amqp { lease_id: u64 },
}

/// What became of a nacked item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nacked {
    /// Delivered again after this delay.
    Retry { after: Duration },
    /// That was the last allowed attempt: it is in dead letters now.
    Dead,
}

/// What can go wrong with a queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("work queue `{queue}` at {broker}: {message}")]
    Broker {
        queue: String,
        /// The broker URL with its password masked.
        broker: String,
        message: String,
        #[source]
        source: Option<Box<lapin::Error>>,
    },
    #[error(
        "the lease on work {work_id} is lost (it ran out, or the connection holding it closed): the item will be delivered again"
    )]
    LeaseLost { work_id: String },
    #[error("invalid configuration: queue.{key}: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("the group commit of work queue `{queue}` failed: {message}")]
    Group { queue: String, message: String },
}

/// One of concord's work queues.
#[async_trait]
pub trait Queue: Send + Sync {
    /// The queue's name (a store queue's `queue` column, a broker's queue).
    fn name(&self) -> &str;

    /// Stores one item durably before returning.
    async fn enqueue(&self, item: WorkItem) -> Result<Enqueued, QueueError> {
        let mut done = self.enqueue_many(vec![item]).await?;
        Ok(done.pop().unwrap_or(Enqueued::Stored))
    }

    /// Stores many items durably before returning: all of them, or (on an
    /// error) possibly some, which a retry then repeats harmlessly.
    async fn enqueue_many(&self, items: Vec<WorkItem>) -> Result<Vec<Enqueued>, QueueError>;

    /// Leases up to `max` items, waiting up to `receive_wait_ms` for the
    /// first. Empty when none came.
    async fn receive(&self, max: usize) -> Result<Vec<Lease>, QueueError>;

    /// Acknowledges an item whose effects are committed: it leaves the
    /// queue. [`QueueError::LeaseLost`] if the lease ran out meanwhile.
    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        let held = self.ack_many(std::slice::from_ref(lease)).await?;
        if held == 1 {
            Ok(())
        } else {
            Err(QueueError::LeaseLost {
                work_id: lease.item.work_id.clone(),
            })
        }
    }

    /// Acknowledges many items; returns how many still held their lease
    /// (the others will be delivered again, and dropped as done).
    async fn ack_many(&self, leases: &[Lease]) -> Result<usize, QueueError>;

    /// Hands an item back after a failed attempt, to be retried after a
    /// backoff, or dead-lettered with `error` after the last attempt.
    async fn nack(&self, lease: &Lease, error: &str) -> Result<Nacked, QueueError>;

    /// Sends an item to dead letters now, with `reason`.
    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<(), QueueError>;

    /// Items waiting (and, for the store queue, leased).
    async fn depth(&self) -> Result<u64, QueueError>;

    /// How long the oldest waiting item has waited.
    async fn oldest_age(&self) -> Result<Option<Duration>, QueueError>;

    /// Items in dead letters.
    async fn dead_count(&self) -> Result<u64, QueueError>;
}

/// Which queue implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// Tables in the store (the default): nothing else to run.
    #[default]
    Store,
    /// RabbitMQ (AMQP 0-9-1), for several instances sharing the work.
    Amqp,
}

/// `[queue]`: the work queue of `concord serve`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// `store` (default) or `amqp`.
    pub kind: QueueKind,
    /// The broker for `kind = "amqp"`: `amqp://USER:PASSWORD@HOST:5672/VHOST`
    /// or `amqps://…` (TLS, system certificates). A secret: set it with
    /// `CONCORD__QUEUE__URL`.
    #[serde(serialize_with = "serialize_url")]
    pub url: Option<SecretString>,
    /// The queue's name (the broker's queue, or the store's `queue` column).
    pub name: String,
    /// Unacknowledged messages the broker sends a consumer ahead (amqp).
    pub prefetch: u16,
    /// The lease (visibility timeout): how long a received item stays
    /// with its worker before it is delivered again, in seconds.
    pub lease_secs: u64,
    /// Attempts (failures and leases run out) before an item goes to dead
    /// letters.
    pub max_attempts: u32,
    /// First retry delay after a nack, in milliseconds; doubles per attempt.
    pub retry_initial_ms: u64,
    /// Longest retry delay, in seconds.
    pub retry_max_secs: u64,
    /// How long `receive` waits for the first item, in milliseconds.
    pub receive_wait_ms: u64,
    /// Most items one group commit stores together.
    pub group_commit_max: usize,
    /// SQLite store: sync each enqueue to disk (`synchronous = FULL`), so
    /// an acknowledged webhook survives a power cut, not only a crash.
    pub sqlite_full_sync: bool,
    /// How long to wait for the broker when connecting, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long to wait for the broker to confirm a message, in milliseconds.
    pub confirm_timeout_ms: u64,
    /// Days `concord serve` keeps the done-markers (`work_done`) that make
    /// a redelivered item a no-op, and processed webhook events (whose rows
    /// recognise a sender's retry of an event id); older ones are deleted
    /// hourly. They must outlive any redelivery: at least `lease_secs` plus
    /// every retry delay, and the senders' retry schedules. 0 keeps them
    /// forever.
    pub keep_done_days: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            kind: QueueKind::Store,
            url: None,
            name: "concord.work".to_owned(),
            prefetch: 64,
            lease_secs: 300,
            max_attempts: 5,
            retry_initial_ms: 1_000,
            retry_max_secs: 300,
            receive_wait_ms: 1_000,
            group_commit_max: 1_024,
            sqlite_full_sync: true,
            connect_timeout_ms: 5_000,
            confirm_timeout_ms: 10_000,
            keep_done_days: 7,
        }
    }
}

fn serialize_url<S: Serializer>(url: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_str(&crate::settings::redact_url(url.expose_secret())),
        None => s.serialize_none(),
    }
}

impl QueueSettings {
    /// Checks what serde cannot; the error names the key and the problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 200
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err((
                "name",
                format!(
                    "{:?} is not a queue name: 1-200 letters, digits, `.`, `_` or `-`",
                    self.name
                ),
            ));
        }
        for (key, value) in [
            ("lease_secs", self.lease_secs),
            ("max_attempts", u64::from(self.max_attempts)),
            ("prefetch", u64::from(self.prefetch)),
            ("group_commit_max", self.group_commit_max as u64),
            ("confirm_timeout_ms", self.confirm_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
        ] {
            if value == 0 {
                return Err((key, "must be at least 1".to_owned()));
            }
        }
        if self.max_attempts > 100 {
            return Err(("max_attempts", "must be at most 100".to_owned()));
        }
        if self.keep_done_days > 0 {
            let redelivery = self.lease().as_secs().saturating_add(
                (1..self.max_attempts)
                    .map(|a| self.retry_delay(a).as_secs())
                    .sum::<u64>(),
            );
            if u64::from(self.keep_done_days) * 86_400 < redelivery {
                return Err((
                    "keep_done_days",
                    format!(
                        "{} day(s) is shorter than an item can take to come back ({redelivery} s: the lease and every retry delay); raise it, or 0 to keep them forever",
                        self.keep_done_days
                    ),
                ));
            }
        }
        match (&self.kind, &self.url) {
            (QueueKind::Amqp, None) => {
                return Err((
                    "url",
                    "kind = \"amqp\" needs the broker URL (amqp://… or amqps://…)".to_owned(),
                ));
            }
            (QueueKind::Amqp, Some(url)) => {
                let scheme = url::Url::parse(url.expose_secret())
                    .map(|u| u.scheme().to_owned())
                    .map_err(|e| ("url", format!("not a URL: {e}")))?;
                if !matches!(scheme.as_str(), "amqp" | "amqps") {
                    return Err((
                        "url",
                        format!("must start with amqp:// or amqps://, not {scheme}://"),
                    ));
                }
            }
            (QueueKind::Store, _) => {}
        }
        Ok(())
    }

    /// The lease as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    /// The delay before the retry that follows failed attempt `attempt`
    /// (1-based): `retry_initial_ms` doubled per attempt, at most
    /// `retry_max_secs`.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let max = Duration::from_secs(self.retry_max_secs);
        let doublings = attempt.saturating_sub(1).min(40);
        let ms = self
            .retry_initial_ms
            .saturating_mul(1_u64 << doublings.min(63));
        Duration::from_millis(ms).min(max)
    }
}

/// Opens the queue `settings` describe; a store queue is wrapped in a
/// [`GroupCommit`].
pub async fn open(settings: &QueueSettings, store: &Store) -> Result<Arc<dyn Queue>, QueueError> {
    settings
        .validate()
        .map_err(|(key, reason)| QueueError::Config { key, reason })?;
    let (queue, writers): (Arc<dyn Queue>, usize) = match settings.kind {
        QueueKind::Store => {
            let writers = match store.backend() {
                // One writer: SQLite takes one write transaction at a time.
                crate::store::Backend::Sqlite => 1,
                crate::store::Backend::Postgres => 4,
            };
            (
                Arc::new(StoreQueue::new(store.clone(), settings.clone())),
                writers,
            )
        }
        QueueKind::Amqp => {
            // Not grouped: concurrent publishes already share the channel
            // and await their confirms together, which measured faster
            // (benches/queue.rs) than batching them.
            let q = AmqpQueue::connect(settings.clone(), store.clone()).await?;
            return Ok(Arc::new(q));
        }
    };
    Ok(Arc::new(GroupCommit::new(
        queue,
        settings.group_commit_max,
        writers,
    )))
}

fn age_since_ms(enqueued_at_ms: i64) -> Duration {
    let now = Utc::now().timestamp_millis();
    Duration::from_millis(u64::try_from(now.saturating_sub(enqueued_at_ms)).unwrap_or(0))
}

fn time_of_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let s = QueueSettings {
            retry_initial_ms: 500,
            retry_max_secs: 3,
            ..QueueSettings::default()
        };
        let delays: Vec<u64> = (1..=5)
            .map(|a| s.retry_delay(a).as_millis() as u64)
            .collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000]);
        assert_eq!(s.retry_delay(200), Duration::from_secs(3));
    }

    #[test]
    fn settings_are_checked_with_the_key_named() {
        assert!(QueueSettings::default().validate().is_ok());
        let amqp = QueueSettings {
            kind: QueueKind::Amqp,
            ..QueueSettings::default()
        };
        assert_eq!(amqp.validate().unwrap_err().0, "url");
        let http = QueueSettings {
            kind: QueueKind::Amqp,
            url: Some("http://broker".into()),
            ..QueueSettings::default()
        };
        let (key, reason) = http.validate().unwrap_err();
        assert_eq!(key, "url");
        assert!(reason.contains("amqp://"), "{reason}");
        let bad_name = QueueSettings {
            name: "a b".into(),
            ..QueueSettings::default()
        };
        assert_eq!(bad_name.validate().unwrap_err().0, "name");
        let zero = QueueSettings {
            lease_secs: 0,
            ..QueueSettings::default()
        };
        assert_eq!(zero.validate().unwrap_err().0, "lease_secs");
        // Done-markers must outlive a lease of two days; 0 keeps them.
        let short = QueueSettings {
            lease_secs: 2 * 86_400,
            keep_done_days: 1,
            ..QueueSettings::default()
        };
        assert_eq!(short.validate().unwrap_err().0, "keep_done_days");
        assert!(
            QueueSettings {
                keep_done_days: 0,
                ..short
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn the_broker_password_is_never_shown() {
        let s = QueueSettings {
            kind: QueueKind::Amqp,
            url: Some("amqp://concord:s3cret@broker:5672/prod".into()),
            ..QueueSettings::default()
        };
        let shown = toml::to_string(&s).unwrap();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("broker:5672"), "{shown}");
        let debug = format!("{s:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
