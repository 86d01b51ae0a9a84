//! Work-queue throughput: enqueues from 64 concurrent producers (as the
//! webhook receiver makes them), with group commit and without, then
//! receive + acknowledge.
//!
//! `cargo bench --bench queue` runs the store queue on a fresh SQLite file
//! (synchronous = FULL for enqueues, the default). Set
//! `CONCORD_BENCH_DATABASE_URL=postgres://…` for PostgreSQL (a fresh schema,
//! dropped afterwards) and `CONCORD_BENCH_AMQP_URL=amqp://…` for RabbitMQ
//! (a fresh queue, deleted afterwards). `CONCORD_BENCH_ITEMS` sets the
//! count (default 20000); each item is a ~300-byte webhook event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use concord::queue::{
    AmqpQueue, GroupCommit, Queue, QueueKind, QueueSettings, StoreQueue, WorkItem,
};
use concord::settings::StoreSettings;
use concord::store::Store;
use serde_json::json;

const PRODUCERS: usize = 64;

fn item(run: &str, i: usize) -> WorkItem {
    WorkItem::new(
        format!("webhook:bench:{run}:{i:08}"),
        "webhook",
        json!({
            "id": format!("evt_{i:08}"),
            "type": "invoice.paid",
            "created": 1_764_316_800 + i,
            "data": { "object": { "id": format!("in_{i:08}"), "amount_paid": "1250.00", "currency": "EUR",
                                  "customer": "cus_0192f0c4", "number": format!("INV-2026-{i:06}") } }
        }),
    )
}

/// `n` enqueues from `PRODUCERS` tasks; items per second.
async fn enqueue_rate(queue: Arc<dyn Queue>, run: &str, n: usize) -> f64 {
    let started = Instant::now();
    let per = n.div_ceil(PRODUCERS);
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let queue = queue.clone();
            let run = run.to_owned();
            tokio::spawn(async move {
                for i in (p * per)..((p + 1) * per).min(n) {
                    queue.enqueue(item(&run, i)).await.expect("enqueue");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("producer");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Receives and acknowledges `n` items, 256 at a time; items per second.
async fn drain_rate(queue: &dyn Queue, n: usize) -> f64 {
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let leases = queue.receive(256).await.expect("receive");
        assert!(!leases.is_empty(), "the queue ran dry after {done} of {n}");
        done += queue.ack_many(&leases).await.expect("ack");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn bench(label: &str, make: impl AsyncFn() -> Arc<dyn Queue>, writers: usize, n: usize) {
    let plain_n = (n / 10).max(500);
    let plain = enqueue_rate(make().await, "plain", plain_n).await;
    let inner = make().await;
    let grouped = Arc::new(GroupCommit::new(inner.clone(), 1024, writers));
    let rate = enqueue_rate(grouped, "grouped", n).await;
    let drained = drain_rate(inner.as_ref(), n + plain_n).await;
    println!(
        "{label:<10} enqueue, 64 producers: {rate:>9.0} items/s with group commit ({writers} writer{}), {plain:>8.0} items/s without ({plain_n} items); receive+ack: {drained:>8.0} items/s",
        if writers == 1 { "" } else { "s" }
    );
}

fn settings(kind: QueueKind) -> QueueSettings {
    QueueSettings {
        kind,
        name: format!("concord-bench-{}", uuid::Uuid::now_v7().simple()),
        prefetch: 512,
        receive_wait_ms: 2_000,
        max_attempts: 2,
        ..QueueSettings::default()
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("queue bench: run with `cargo bench --bench queue`");
        return;
    }
    let n: usize = std::env::var("CONCORD_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = Store::open(&StoreSettings {
            url: format!("sqlite://{}", dir.path().join("bench.db").display()).into(),
            ..StoreSettings::default()
        })
        .await
        .expect("open sqlite");
        let s = settings(QueueKind::Store);
        let make = async || -> Arc<dyn Queue> {
            let q: Arc<dyn Queue> = Arc::new(StoreQueue::new(sqlite.clone(), s.clone()));
            q
        };
        bench("sqlite", make, 1, n).await;

        if let Ok(url) = std::env::var("CONCORD_BENCH_DATABASE_URL") {
            let schema = format!("concord_bench_{}", uuid::Uuid::now_v7().simple());
            let store_settings = StoreSettings {
                url: url.into(),
                schema: Some(schema.clone()),
                max_connections: 16,
                ..StoreSettings::default()
            };
            let pg = Store::open(&store_settings).await.expect("open postgres");
            let s = settings(QueueKind::Store);
            let make = async || -> Arc<dyn Queue> {
                let q: Arc<dyn Queue> = Arc::new(StoreQueue::new(pg.clone(), s.clone()));
                q
            };
            bench("postgres", make, 4, n).await;
            pg.close().await;
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(store_settings.url.as_str())
                .await
                .expect("connect");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{schema}\" CASCADE"
            )))
            .execute(&mut conn)
            .await
            .expect("drop bench schema");
        }

        if let Ok(url) = std::env::var("CONCORD_BENCH_AMQP_URL") {
            let mut s = settings(QueueKind::Amqp);
            s.url = Some(url.clone().into());
            let make = async || -> Arc<dyn Queue> {
                let q: Arc<dyn Queue> = Arc::new(
                    AmqpQueue::connect(s.clone(), sqlite.clone())
                        .await
                        .expect("connect amqp"),
                );
                q
            };
            bench("rabbitmq", make, 4, n).await;
            // Delete the bench topology.
            let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
                .await
                .expect("connect");
            let ch = conn.create_channel().await.expect("channel");
            let delays: std::collections::BTreeSet<Duration> =
                (1..s.max_attempts).map(|a| s.retry_delay(a)).collect();
            let mut queues = vec![s.name.clone(), format!("{}.dead", s.name)];
            queues.extend(
                delays
                    .iter()
                    .map(|d| format!("{}.retry.{}", s.name, d.as_millis())),
            );
            for q in queues {
                let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
            }
            let _ = ch
                .exchange_delete(
                    format!("{}.dlx", s.name).as_str().into(),
                    Default::default(),
                )
                .await;
        }
        sqlite.close().await;
    });
}
