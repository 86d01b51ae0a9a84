//! The work queue: one behaviour suite run on the store queue over SQLite
//! and PostgreSQL (`CONCORD_TEST_DATABASE_URL`) and on RabbitMQ
//! (`CONCORD_TEST_AMQP_URL`), plus crash, broker-restart and concurrency
//! scenarios. Without a URL a variant skips with the reason printed; under
//! `CI=true` it fails instead.
//!
//! Work is "applied" by committing an alert (its reason = the work id)
//! together with the work id as done ([`Batch::processed_work`]), so a
//! test counts effects per work id and sees any item applied twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use concord::queue::{
    AmqpQueue, Enqueued, GroupCommit, Lease, Nacked, Queue, QueueError, QueueKind, QueueSettings,
    StoreQueue, WorkItem,
};
use concord::store::{Batch, NewAlert, Severity, Store, StoreError};
use serde_json::json;
use tokio::time::Instant;

const AMQP_VAR: &str = "CONCORD_TEST_AMQP_URL";
const EFFECT_RULE: &str = "queue-test-effect";

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The broker's URL, or `None` (with the reason printed) outside CI.
fn broker() -> Option<String> {
    match std::env::var(AMQP_VAR) {
        Ok(url) => Some(url),
        Err(_) if in_ci() => {
            panic!("{AMQP_VAR} must be set in CI: the RabbitMQ queue tests may not be skipped")
        }
        Err(_) => {
            eprintln!("skipped: {AMQP_VAR} is not set, so the RabbitMQ variant did not run");
            None
        }
    }
}

fn settings(kind: QueueKind) -> QueueSettings {
    QueueSettings {
        kind,
        url: std::env::var(AMQP_VAR).ok().map(Into::into),
        name: format!("concord-test-q-{}", uuid::Uuid::now_v7().simple()),
        prefetch: 16,
        lease_secs: 30,
        max_attempts: 3,
        retry_initial_ms: 50,
        retry_max_secs: 1,
        receive_wait_ms: 300,
        ..QueueSettings::default()
    }
}

/// Deletes a RabbitMQ test queue's topology when dropped, even on failure.
struct Topology {
    url: String,
    settings: QueueSettings,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let url = self.url.clone();
        let s = self.settings.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
                let Ok(conn) =
                    lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await
                else {
                    return;
                };
                let mut queues = vec![s.name.clone(), format!("{}.dead", s.name)];
                let delays: BTreeSet<Duration> =
                    (1..s.max_attempts).map(|a| s.retry_delay(a)).collect();
                queues.extend(
                    delays
                        .iter()
                        .map(|d| format!("{}.retry.{}", s.name, d.as_millis())),
                );
                for q in queues {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch
                        .exchange_delete(
                            format!("{}.dlx", s.name).as_str().into(),
                            ExchangeDeleteOptions::default(),
                        )
                        .await;
                }
                let _ = conn.close(200, "done".into()).await;
            });
        })
        .join();
    }
}

/// Which queue a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    StoreSqlite,
    StorePostgres,
    Amqp,
}

/// A queue under test with its store; cleans up when finished.
struct Rig {
    kind: Kind,
    store: common::TestStore,
    settings: QueueSettings,
    _topology: Option<Topology>,
}

impl Rig {
    /// `None` when the service is not configured (outside CI).
    async fn new(kind: Kind, tune: impl FnOnce(&mut QueueSettings)) -> Option<Rig> {
        let store = match kind {
            Kind::StoreSqlite | Kind::Amqp => common::sqlite().await,
            Kind::StorePostgres => common::postgres().await?,
        };
        let mut settings = settings(match kind {
            Kind::Amqp => QueueKind::Amqp,
            _ => QueueKind::Store,
        });
        tune(&mut settings);
        let topology = if kind == Kind::Amqp {
            let url = broker()?;
            settings.url = Some(url.clone().into());
            Some(Topology {
                url,
                settings: settings.clone(),
            })
        } else {
            None
        };
        Some(Rig {
            kind,
            store,
            settings,
            _topology: topology,
        })
    }

    /// A consumer/producer of the rig's queue (a new connection for AMQP).
    async fn queue(&self) -> Arc<dyn Queue> {
        match self.kind {
            Kind::Amqp => Arc::new(
                AmqpQueue::connect(self.settings.clone(), self.store.store.clone())
                    .await
                    .unwrap_or_else(|e| panic!("cannot open the RabbitMQ queue: {e}")),
            ),
            _ => Arc::new(StoreQueue::new(
                self.store.store.clone(),
                self.settings.clone(),
            )),
        }
    }

    async fn finish(self) {
        let Rig {
            store, _topology, ..
        } = self;
        store.cleanup().await;
        drop(_topology);
    }
}

fn item(i: usize) -> WorkItem {
    WorkItem::new(
        format!("test:{i:05}"),
        "webhook",
        json!({ "event": i, "amount": "12.50", "currency": "EUR" }),
    )
}

/// Receives until `n` leases arrived or `within` passed.
async fn receive_n(queue: &dyn Queue, n: usize, within: Duration) -> Vec<Lease> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        match queue.receive(n - got.len()).await {
            Ok(mut leases) => got.append(&mut leases),
            Err(e) => {
                eprintln!("receive failed (retrying): {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    got
}

/// Applies work once: its effect and its done-marker in one transaction.
/// `Ok(false)` when it was done before (nothing changed).
async fn apply(store: &Store, lease: &Lease) -> Result<bool, StoreError> {
    let batch = Batch {
        alerts: vec![NewAlert {
            rule: EFFECT_RULE.into(),
            severity: Severity::Info,
            entity: None,
            record_ids: vec![lease.item.work_id.clone()],
            reason: lease.item.work_id.clone(),
            amount: None,
            cause: None,
        }],
        processed_work: vec![lease.item.work_id.clone()],
        ..Batch::default()
    };
    match store.commit(&batch).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyProcessed { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Effects per work id.
async fn effects(store: &Store) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for alert in store.open_alerts(1_000_000).await.unwrap() {
        if alert.alert.rule == EFFECT_RULE {
            *counts.entry(alert.alert.reason).or_insert(0) += 1;
        }
    }
    counts
}

fn expect_once(counts: &BTreeMap<String, usize>, n: usize) {
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(twice.is_empty(), "applied more than once: {twice:?}");
    let missing: Vec<String> = (0..n)
        .map(|i| item(i).work_id)
        .filter(|id| !counts.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "never applied: {missing:?}");
    assert_eq!(counts.len(), n, "effects of unknown work: {counts:?}");
}

// ---------------------------------------------------------------------
// The behaviour suite
// ---------------------------------------------------------------------

async fn enqueue_receive_ack(rig: &Rig) {
    let q = rig.queue().await;
    let items: Vec<WorkItem> = (0..3).map(item).collect();
    let stored = q.enqueue_many(items.clone()).await.unwrap();
    assert_eq!(stored, vec![Enqueued::Stored; 3]);
    if rig.kind != Kind::Amqp {
        // The store recognises a work id it holds already.
        assert_eq!(q.enqueue(item(1)).await.unwrap(), Enqueued::Duplicate);
    }
    assert_eq!(q.depth().await.unwrap(), 3);
    let oldest = q.oldest_age().await.unwrap();
    let leases = receive_n(q.as_ref(), 3, Duration::from_secs(5)).await;
    let mut got: Vec<&WorkItem> = leases.iter().map(|l| &l.item).collect();
    got.sort_by(|a, b| a.work_id.cmp(&b.work_id));
    assert_eq!(got, items.iter().collect::<Vec<_>>());
    assert!(
        leases
            .iter()
            .all(|l| l.attempt == 1 && l.last_error.is_none())
    );
    if rig.kind != Kind::Amqp {
        assert!(
            oldest.is_some(),
            "a non-empty store queue has an oldest item"
        );
    }
    assert_eq!(q.ack_many(&leases).await.unwrap(), 3);
    assert_eq!(q.depth().await.unwrap(), 0);
    assert_eq!(q.oldest_age().await.unwrap(), None);
    assert!(
        q.receive(10).await.unwrap().is_empty(),
        "acknowledged work came back"
    );
    // An acknowledged lease cannot be acknowledged again.
    assert!(matches!(
        q.ack(&leases[0]).await,
        Err(QueueError::LeaseLost { .. })
    ));
}

async fn nack_retries_with_backoff(rig: &Rig) {
    let q = rig.queue().await;
    q.enqueue(item(7)).await.unwrap();
    let first = receive_n(q.as_ref(), 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    let outcome = q.nack(&first[0], "ERP answered 503").await.unwrap();
    assert_eq!(
        outcome,
        Nacked::Retry {
            after: Duration::from_millis(50)
        }
    );
    let again = receive_n(q.as_ref(), 1, Duration::from_secs(5)).await;
    assert_eq!(again.len(), 1, "a retried item came back");
    assert_eq!(again[0].item, item(7));
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].last_error.as_deref(), Some("ERP answered 503"));
    q.ack(&again[0]).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
    assert_eq!(q.dead_count().await.unwrap(), 0);
}

async fn dead_letter_after_max_attempts(rig: &Rig) {
    let q = rig.queue().await;
    q.enqueue(item(9)).await.unwrap();
    let mut outcomes = Vec::new();
    for attempt in 1..=3 {
        let got = receive_n(q.as_ref(), 1, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1, "attempt {attempt} came");
        assert_eq!(got[0].attempt, attempt);
        outcomes.push(
            q.nack(&got[0], "mapping failed: no customer")
                .await
                .unwrap(),
        );
    }
    assert!(matches!(outcomes[0], Nacked::Retry { .. }));
    assert!(matches!(outcomes[1], Nacked::Retry { .. }));
    assert_eq!(outcomes[2], Nacked::Dead);
    assert!(
        receive_n(q.as_ref(), 1, Duration::from_millis(800))
            .await
            .is_empty()
    );
    assert_eq!(q.depth().await.unwrap(), 0);
    let reason = match rig.kind {
        Kind::Amqp => {
            // Publisher-confirmed into NAME.dead; the count may lag a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            while q.dead_count().await.unwrap() == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(q.dead_count().await.unwrap(), 1);
            let amqp = AmqpQueue::connect(rig.settings.clone(), rig.store.store.clone())
                .await
                .unwrap();
            let dead = amqp.dead_letters(10).await.unwrap();
            assert_eq!(dead.len(), 1);
            assert_eq!(dead[0].0, item(9).work_id);
            dead[0].1.clone()
        }
        _ => {
            assert_eq!(q.dead_count().await.unwrap(), 1);
            let dead = rig
                .store
                .work_dead_letters(&rig.settings.name, 10)
                .await
                .unwrap();
            assert_eq!(dead.len(), 1);
            assert_eq!(dead[0].work_id, item(9).work_id);
            assert_eq!(dead[0].payload, item(9).payload);
            assert_eq!(dead[0].attempts, 3);
            // An operator puts it back in line.
            assert_eq!(
                rig.store
                    .work_requeue_dead(&rig.settings.name, &[dead[0].id])
                    .await
                    .unwrap(),
                1
            );
            let back = receive_n(q.as_ref(), 1, Duration::from_secs(2)).await;
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].attempt, 1);
            q.ack(&back[0]).await.unwrap();
            dead[0].reason.clone()
        }
    };
    assert!(
        reason.contains("3 of 3") && reason.contains("mapping failed: no customer"),
        "{reason}"
    );
}

async fn expired_lease_returns_the_item(rig: &Rig) {
    let q = rig.queue().await;
    q.enqueue(item(3)).await.unwrap();
    let first = receive_n(q.as_ref(), 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    // Not acknowledged: after the lease (1 s) it is delivered again.
    let again = receive_n(q.as_ref(), 1, Duration::from_secs(6)).await;
    assert_eq!(again.len(), 1, "the item came back after its lease ran out");
    assert_eq!(again[0].item, item(3));
    assert_eq!(again[0].attempt, 2);
    assert!(
        matches!(q.ack(&first[0]).await, Err(QueueError::LeaseLost { .. })),
        "the expired lease cannot acknowledge"
    );
    q.ack(&again[0]).await.unwrap();
    assert!(
        receive_n(q.as_ref(), 1, Duration::from_millis(1500))
            .await
            .is_empty()
    );
}

async fn done_work_is_not_handed_out_again(rig: &Rig) {
    let q = rig.queue().await;
    q.enqueue_many(vec![item(1), item(2)]).await.unwrap();
    let leases = receive_n(q.as_ref(), 2, Duration::from_secs(5)).await;
    assert_eq!(leases.len(), 2);
    // Both committed; only the first acknowledged, then the worker "dies"
    // (its lease runs out).
    for l in &leases {
        assert!(apply(&rig.store, l).await.unwrap());
    }
    let first = leases.iter().find(|l| l.item == item(1)).unwrap();
    q.ack(first).await.unwrap();
    drop(leases);
    // The second comes back after the lease and is dropped as done.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        receive_n(q.as_ref(), 1, Duration::from_secs(2))
            .await
            .is_empty()
    );
    assert_eq!(q.depth().await.unwrap(), 0);
    let counts = effects(&rig.store).await;
    assert_eq!(counts.values().sum::<usize>(), 2);
}

async fn group_commit_makes_one_batch_of_many(rig: &Rig) {
    let q = Arc::new(GroupCommit::new(rig.queue().await, 256, 1));
    let n = 300;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move { q.enqueue(item(i)).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Enqueued::Stored);
    }
    let depth_deadline = Instant::now() + Duration::from_secs(5);
    while q.depth().await.unwrap() < n as u64 && Instant::now() < depth_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(q.depth().await.unwrap(), n as u64);
    if rig.kind != Kind::Amqp {
        assert_eq!(q.enqueue(item(5)).await.unwrap(), Enqueued::Duplicate);
    }
}

macro_rules! suite {
    ($($name:ident $(with $tune:expr)?),* $(,)?) => {
        mod store_sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::run(super::Kind::StoreSqlite, |_s| { $( ($tune)(_s) )? }, super::$name).await }
        )* }
        mod store_postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::run(super::Kind::StorePostgres, |_s| { $( ($tune)(_s) )? }, super::$name).await }
        )* }
        mod amqp {
            #[allow(unused_imports)]
            use super::*;
            $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::run(super::Kind::Amqp, |_s| { $( ($tune)(_s) )? }, super::$name).await }
        )* }
    };
}

async fn run<F>(kind: Kind, tune: impl FnOnce(&mut QueueSettings), test: F)
where
    F: for<'a> AsyncFn(&'a Rig),
{
    let Some(rig) = Rig::new(kind, tune).await else {
        return;
    };
    test(&rig).await;
    rig.finish().await;
}

fn short_lease(s: &mut QueueSettings) {
    s.lease_secs = 1;
}

suite!(
    enqueue_receive_ack,
    nack_retries_with_backoff,
    dead_letter_after_max_attempts,
    expired_lease_returns_the_item with short_lease,
    done_work_is_not_handed_out_again with short_lease,
    group_commit_makes_one_batch_of_many,
    two_consumers_one_killed_mid_batch with short_lease,
    concurrent_consumers_apply_each_item_once,
);

// ---------------------------------------------------------------------
// Crashes and concurrency
// ---------------------------------------------------------------------

/// Works until every one of `n` items has its effect (or `within` ends).
async fn drain(queue: &dyn Queue, store: &Store, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if effects(store).await.len() >= n {
            return;
        }
        let leases = match queue.receive(16).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("receive failed (retrying): {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for lease in &leases {
            apply(store, lease).await.unwrap();
        }
        // A lost lease means the item comes back and is dropped as done.
        let _ = queue.ack_many(&leases).await;
    }
}

/// Consumer A takes a batch, applies part of it (acknowledging only some
/// of that) and dies; consumer B takes over. Every item has its effect once.
async fn two_consumers_one_killed_mid_batch(rig: &Rig) {
    let n = 40;
    let producer = rig.queue().await;
    producer
        .enqueue_many((0..n).map(item).collect())
        .await
        .unwrap();
    let a = match rig.kind {
        Kind::Amqp => Some(
            AmqpQueue::connect(rig.settings.clone(), rig.store.store.clone())
                .await
                .unwrap(),
        ),
        _ => None,
    };
    let store_a: Arc<dyn Queue> = rig.queue().await;
    let queue_a: &dyn Queue = match &a {
        Some(amqp) => amqp,
        None => store_a.as_ref(),
    };
    let batch = receive_n(queue_a, 10, Duration::from_secs(5)).await;
    assert!(batch.len() >= 4, "consumer A got a batch ({})", batch.len());
    // Applied and acknowledged; applied but the ack never sent; untouched.
    apply(&rig.store, &batch[0]).await.unwrap();
    apply(&rig.store, &batch[1]).await.unwrap();
    queue_a.ack_many(&batch[..2]).await.unwrap();
    apply(&rig.store, &batch[2]).await.unwrap();
    apply(&rig.store, &batch[3]).await.unwrap();
    // Killed: the connection goes without acknowledging (AMQP), or the
    // worker simply vanishes and its leases run out (store).
    if let Some(amqp) = &a {
        amqp.close().await;
    }
    drop(batch);
    let b = rig.queue().await;
    drain(b.as_ref(), &rig.store, n, Duration::from_secs(30)).await;
    expect_once(&effects(&rig.store).await, n);
    let settle = Instant::now() + Duration::from_secs(5);
    while b.depth().await.unwrap() != 0 && Instant::now() < settle {
        // Redelivered copies of done work, dropped as they arrive.
        let _ = b.receive(16).await;
    }
    assert_eq!(b.depth().await.unwrap(), 0);
}

/// Three consumers on one queue at once: each item is handed to exactly
/// one of them (no lease runs out here) and applied once.
async fn concurrent_consumers_apply_each_item_once(rig: &Rig) {
    let n = 300;
    let producer = rig.queue().await;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        producer
            .enqueue_many(chunk.iter().map(|&i| item(i)).collect())
            .await
            .unwrap();
    }
    let delivered = Arc::new(std::sync::Mutex::new(BTreeMap::<String, usize>::new()));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let q = rig.queue().await;
        let store = rig.store.store.clone();
        let delivered = delivered.clone();
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut idle = 0;
            while idle < 3 && Instant::now() < deadline {
                let leases = q.receive(20).await.unwrap();
                if leases.is_empty() {
                    idle += 1;
                    continue;
                }
                idle = 0;
                for lease in &leases {
                    *delivered
                        .lock()
                        .unwrap()
                        .entry(lease.item.work_id.clone())
                        .or_insert(0) += 1;
                    apply(&store, lease).await.unwrap();
                }
                assert_eq!(q.ack_many(&leases).await.unwrap(), leases.len());
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let delivered = delivered.lock().unwrap().clone();
    let twice: Vec<_> = delivered.iter().filter(|(_, c)| **c != 1).collect();
    assert!(twice.is_empty(), "handed to two consumers: {twice:?}");
    assert_eq!(delivered.len(), n);
    expect_once(&effects(&rig.store).await, n);
}

// ---------------------------------------------------------------------
// Broker restart
// ---------------------------------------------------------------------

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Starts the broker's app again when dropped, so a failing test never
/// leaves it stopped.
struct RestoreBroker;

impl Drop for RestoreBroker {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&["start_app"]) {
            eprintln!("could not restart the broker: {e}");
        }
        let _ = rabbitmqctl(&["await_startup"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_broker_restart_mid_stream_loses_nothing() {
    if let Err(e) = rabbitmqctl(&["status"]) {
        if in_ci() {
            panic!("the broker-restart test needs rabbitmqctl in CI: {e}");
        }
        eprintln!("skipped: {e}");
        return;
    }
    let Some(rig) = Rig::new(Kind::Amqp, |s| {
        s.lease_secs = 5;
        s.max_attempts = 10;
        s.connect_timeout_ms = 2_000;
    })
    .await
    else {
        return;
    };
    let n = 150;
    let producer = rig.queue().await;
    let consumer = rig.queue().await;
    let store = rig.store.store.clone();
    let work = tokio::spawn({
        let consumer = consumer.clone();
        let store = store.clone();
        async move { drain(consumer.as_ref(), &store, n, Duration::from_secs(90)).await }
    });
    let restore = RestoreBroker;
    let mut restarted = false;
    for i in 0..n {
        if i == n / 3 {
            rabbitmqctl(&["stop_app"]).expect("stop the broker");
            restarted = true;
            let producer = producer.clone();
            // Enqueues while the broker is down fail (nothing is lost: the
            // caller, a webhook sender, retries).
            let failed = producer.enqueue(item(i)).await;
            assert!(failed.is_err(), "an enqueue without a broker returned Ok");
            tokio::time::sleep(Duration::from_secs(1)).await;
            rabbitmqctl(&["start_app"]).expect("start the broker");
            rabbitmqctl(&["await_startup"]).expect("wait for the broker");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match producer.enqueue(item(i)).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("enqueue {i} failed (retrying): {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("enqueue {i} kept failing: {e}"),
            }
        }
    }
    drop(restore);
    assert!(restarted);
    work.await.unwrap();
    expect_once(&effects(&store).await, n);
    rig.finish().await;
}
