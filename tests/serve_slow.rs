//! A webhook burst while the store is slow: nothing is acknowledged that is
//! not durable.
//!
//! A second connection locks the inbox (SQLite: a write transaction held
//! open with `BEGIN IMMEDIATE`; PostgreSQL: `LOCK TABLE inbox IN ACCESS
//! EXCLUSIVE MODE`) while 32 senders fire signed events. Whatever each
//! request was answered, afterwards: every event answered 2xx is in the
//! inbox; every other answer is 503 (the sender retries); and after the
//! senders' retries every event is stored exactly once.
//!
//! Runs on SQLite and, with `CONCORD_TEST_DATABASE_URL`, on PostgreSQL
//! (under `CI=true` a missing URL fails instead of skipping).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::TestStore;
use concord::serve::settings::{Encoding, EventMode, Scheme, WebhookSystem};
use concord::serve::verify::sign_standard;
use concord::settings::{Settings, SystemSettings};
use concord::sync::Engine;
use serde_json::json;
use sqlx::Connection;
use tokio::task::JoinSet;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SENDERS: usize = 32;

on_both_backends!(
    a_locked_store_makes_requests_wait_then_succeed,
    a_store_locked_past_the_deadline_answers_503_never_a_false_2xx,
);

/// Intake only: one system sending Standard Webhooks, no workers (every
/// stored event stays visible in the inbox), no scheduler.
async fn start(store: &TestStore, store_timeout_ms: u64) -> (concord::serve::Running, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Settings::default();
    s.connectors.dir = dir.path().join("no-definitions");
    s.systems.insert(
        "crm_main".into(),
        SystemSettings {
            connector: "none".into(),
            base_url: None,
            vars: BTreeMap::new(),
        },
    );
    s.server.workers = 0;
    s.server.scheduler = false;
    s.server.shutdown_timeout_secs = 10;
    s.webhooks.store_timeout_ms = store_timeout_ms;
    s.webhooks.systems.insert(
        "crm_main".into(),
        WebhookSystem {
            scheme: Scheme::Standard,
            secrets: vec![SECRET.into()],
            signature_header: None,
            encoding: Encoding::Base64,
            id_header: None,
            id_pointer: None,
            entity: "customer".into(),
            mode: EventMode::Record,
            records: "/data".into(),
            record_id: "/id".into(),
        },
    );
    let engine = Engine::new(s.clone(), store.store.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = concord::serve::start(s, Arc::new(engine), listener)
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    (running, base)
}

/// Sends one signed event; its HTTP status, or `None` if the connection
/// failed (an unanswered request acknowledges nothing).
async fn send(client: &reqwest::Client, base: &str, id: &str) -> Option<u16> {
    let body =
        json!({"type": "customer.updated", "data": {"id": id, "name": "Slow GmbH"}}).to_string();
    let ts = Utc::now().timestamp();
    client
        .post(format!("{base}/webhooks/crm_main"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            sign_standard(SECRET, id, ts, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// A second connection holding the inbox locked.
enum Lock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Lock {
    /// Returns once the lock is held.
    async fn take(store: &TestStore) -> Lock {
        if let Some(file) = store.sqlite_file() {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
                .await
                .unwrap();
            // Takes the database's write lock now, not at the first write.
            sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            Lock::Sqlite(conn)
        } else {
            let (url, schema) = store.pg_schema().unwrap();
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let lock = format!("BEGIN; LOCK TABLE \"{schema}\".inbox IN ACCESS EXCLUSIVE MODE");
            sqlx::raw_sql(sqlx::AssertSqlSafe(lock))
                .execute(&mut conn)
                .await
                .unwrap();
            Lock::Postgres(conn)
        }
    }

    async fn release(self) {
        match self {
            Lock::Sqlite(mut c) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
            Lock::Postgres(mut c) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
        }
    }
}

/// What one request was answered, and when.
struct Answer {
    id: String,
    status: Option<u16>,
    sent: Instant,
    answered: Instant,
}

impl Answer {
    fn took(&self) -> Duration {
        self.answered - self.sent
    }

    fn acknowledged(&self) -> bool {
        matches!(self.status, Some(200 | 202))
    }
}

/// A burst's answers, and when the lock began to be released.
struct Burst {
    answers: Vec<Answer>,
    released: Instant,
}

/// Fires `SENDERS` concurrent senders, each sending new events one after
/// another, while the inbox is locked for `hold` and for `after` more.
async fn burst(store: &TestStore, base: &str, hold: Duration, after: Duration) -> Burst {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(SENDERS)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let lock = Lock::take(store).await;
    let started = Instant::now();
    let released_at = started + hold;
    let end = released_at + after;
    let mut senders = JoinSet::new();
    for sender in 0..SENDERS {
        let client = client.clone();
        let base = base.to_owned();
        senders.spawn(async move {
            let mut answers = Vec::new();
            let mut n = 0;
            while Instant::now() < end {
                let id = format!("slow_{sender}_{n}");
                n += 1;
                let sent = Instant::now();
                let status = send(&client, &base, &id).await;
                answers.push(Answer {
                    id,
                    status,
                    sent,
                    answered: Instant::now(),
                });
            }
            answers
        });
    }
    tokio::time::sleep_until(released_at.into()).await;
    let released = Instant::now();
    lock.release().await;
    let mut answers = Vec::new();
    while let Some(some) = senders.join_next().await {
        answers.extend(some.unwrap());
    }
    Burst { answers, released }
}

async fn stored(store: &TestStore, id: &str) -> bool {
    store
        .inbox_status(&format!("crm_main:{id}"))
        .await
        .unwrap()
        .is_some()
}

async fn inbox_total(store: &TestStore) -> i64 {
    store
        .inbox_counts()
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum()
}

/// Every 2xx came after the lock was released (nothing can be committed
/// while it is held) and is in the inbox; every other answer is a 503 (or
/// no answer).
async fn assert_acknowledged_are_stored(store: &TestStore, burst: &Burst) {
    let mut missing = Vec::new();
    for a in &burst.answers {
        match a.status {
            Some(200 | 202) => {
                assert!(
                    a.answered > burst.released,
                    "{} was acknowledged while the inbox was locked",
                    a.id
                );
                if !stored(store, &a.id).await {
                    missing.push(a.id.clone());
                }
            }
            Some(503) | None => {}
            Some(other) => panic!("{} was answered {other}", a.id),
        }
    }
    assert!(
        missing.is_empty(),
        "acknowledged but not in the inbox: {missing:?}"
    );
}

/// The senders retry what was not acknowledged: each retry is answered 2xx
/// now, and every event is then stored exactly once.
async fn retry_the_rest_and_count(store: &TestStore, base: &str, answers: &[Answer]) {
    let client = reqwest::Client::new();
    for a in answers.iter().filter(|a| !a.acknowledged()) {
        let status = send(&client, base, &a.id).await;
        assert!(
            matches!(status, Some(200 | 202)),
            "retry of {}: {status:?}",
            a.id
        );
    }
    let ids: BTreeSet<&str> = answers.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), answers.len(), "every event id sent once");
    assert_eq!(
        inbox_total(store).await,
        ids.len() as i64,
        "each event stored once"
    );
}

fn count(answers: &[Answer], f: impl Fn(&Answer) -> bool) -> usize {
    answers.iter().filter(|a| f(a)).count()
}

/// Locked for 2 s, well within the 10 s deadline: requests wait for the
/// store and then are acknowledged; none is refused.
async fn a_locked_store_makes_requests_wait_then_succeed(store: &TestStore) {
    let (running, base) = start(store, 10_000).await;
    let burst = burst(
        store,
        &base,
        Duration::from_secs(2),
        Duration::from_millis(1000),
    )
    .await;
    running.shutdown();
    running.wait().await.unwrap();

    assert_acknowledged_are_stored(store, &burst).await;
    let answers = &burst.answers;
    assert_eq!(
        count(answers, Answer::acknowledged),
        answers.len(),
        "nothing refused within the deadline"
    );
    let waited = count(answers, |a| a.sent < burst.released);
    assert!(
        waited >= SENDERS,
        "every sender sent while the store was locked, and waited: {waited} requests did"
    );
    assert!(
        count(answers, |a| a.sent > burst.released) > 0,
        "intake went on after the lock"
    );
    assert_eq!(inbox_total(store).await, answers.len() as i64);
    eprintln!(
        "{} events acknowledged, {waited} of them after waiting for the lock (longest {:?}), all stored",
        answers.len(),
        answers.iter().map(Answer::took).max().unwrap_or_default()
    );
}

/// Locked for 3 s with a 0.8 s deadline: requests still waiting at the
/// deadline are answered 503, never 2xx; what was acknowledged is stored;
/// intake resumes once the lock is gone; and the senders' retries leave
/// every event stored once (some of the 503'd ones were committed after
/// their answer: their retry is a 200 duplicate).
async fn a_store_locked_past_the_deadline_answers_503_never_a_false_2xx(store: &TestStore) {
    let (running, base) = start(store, 800).await;
    let burst = burst(
        store,
        &base,
        Duration::from_secs(3),
        Duration::from_millis(1500),
    )
    .await;
    assert_acknowledged_are_stored(store, &burst).await;
    let answers = &burst.answers;
    let refused = count(answers, |a| a.status == Some(503));
    assert!(
        refused >= SENDERS,
        "every sender was refused while the store was locked: {refused} 503s"
    );
    assert!(
        answers
            .iter()
            .filter(|a| a.status == Some(503))
            .all(|a| a.took() < Duration::from_millis(2500)),
        "a 503 comes at the deadline, not when the lock is released"
    );
    let ok_after = count(answers, Answer::acknowledged);
    assert!(ok_after > 0, "intake resumed after the lock");
    retry_the_rest_and_count(store, &base, answers).await;
    running.shutdown();
    running.wait().await.unwrap();
    eprintln!(
        "{} events: {refused} answered 503 while locked, {ok_after} acknowledged after; all stored once after retries",
        answers.len()
    );
}

/// SQLite giving up on the lock (busy timeout 300 ms) is a store error:
/// the batch is rolled back and its requests answered 503 — and those
/// events are indeed not stored, until the sender retries them.
#[tokio::test]
async fn sqlite_busy_store_refuses_with_503_and_stores_nothing_it_refused() {
    let store = common::sqlite_with(|s| s.busy_timeout_ms = 300).await;
    let (running, base) = start(&store, 10_000).await;
    let burst = burst(
        &store,
        &base,
        Duration::from_secs(2),
        Duration::from_millis(1000),
    )
    .await;
    assert_acknowledged_are_stored(&store, &burst).await;
    let answers = &burst.answers;
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == Some(503)).collect();
    assert!(
        refused.len() >= SENDERS,
        "the store refused while locked: {} 503s",
        refused.len()
    );
    for a in &refused {
        assert!(
            !stored(&store, &a.id).await,
            "{} was answered 503 because its commit failed, yet it is stored",
            a.id
        );
    }
    retry_the_rest_and_count(&store, &base, answers).await;
    running.shutdown();
    running.wait().await.unwrap();
    eprintln!(
        "{} events: {} refused by the busy store (none of them stored), all stored once after retries",
        answers.len(),
        refused.len()
    );
    store.cleanup().await;
}
