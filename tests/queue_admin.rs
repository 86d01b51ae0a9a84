//! What operators do with queued work: `concord queue list|dead|replay`
//! over the webhook inbox and the store's work queues, and the daemon
//! forgetting done-markers older than `queue.keep_done_days`.
//!
//! The store side runs on SQLite and, with `CONCORD_TEST_DATABASE_URL`, on
//! PostgreSQL (under `CI=true` a missing URL fails instead of skipping);
//! the binary runs on SQLite.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use common::TestStore;
use concord::settings::{Settings, StoreSettings};
use concord::store::{INBOX_QUEUE, InboxEvent, NewWork, Retry, Store};
use concord::sync::Engine;
use serde_json::{Value, json};
use sqlx::Connection;

on_both_backends!(
    counts_dead_letters_and_replay_across_queues,
    done_markers_are_pruned_in_steps,
    processed_webhook_events_are_pruned_dead_and_waiting_ones_kept,
    the_daemon_forgets_done_markers_older_than_keep_done_days,
);

const WORK_QUEUE: &str = "concord.test";
const LEASE_MS: i64 = 60_000;

fn event(key: &str) -> InboxEvent {
    InboxEvent {
        idempotency_key: format!("crm_main:{key}"),
        system: "crm_main".into(),
        entity: None,
        payload: json!({"data": {"id": key}}),
    }
}

fn work(id: &str) -> NewWork {
    NewWork {
        work_id: id.into(),
        kind: "webhook".into(),
        payload: json!({"n": id}),
    }
}

/// The inbox: one processed, two dead (with reasons), one waiting for a
/// retry later, one not yet taken. The work queue: one dead, one leased,
/// one ready. Returns the inbox ids by key and the dead work item's id.
async fn seed(store: &Store) -> (Vec<i64>, i64) {
    let ids: Vec<i64> = store
        .inbox_push_many(&["e1", "e2", "e3", "e4"].map(event), false)
        .await
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let claimed = store.inbox_claim("w1", 4, LEASE_MS).await.unwrap();
    assert_eq!(claimed.len(), 4);
    assert!(store.inbox_done(ids[0], "w1").await.unwrap());
    store
        .inbox_fail(
            ids[1],
            "w1",
            "the event has nothing at \"/data\"",
            Retry::Dead,
        )
        .await
        .unwrap();
    store
        .inbox_fail(ids[2], "w1", "fetching C-9: HTTP 503", Retry::Dead)
        .await
        .unwrap();
    let later = chrono::Utc::now().timestamp_millis() + 3_600_000;
    store
        .inbox_fail(ids[3], "w1", "HTTP 429", Retry::At(later))
        .await
        .unwrap();
    store.inbox_push_many(&[event("e5")], false).await.unwrap();

    store
        .work_enqueue(WORK_QUEUE, &[work("w-a"), work("w-b")], false)
        .await
        .unwrap();
    let claim = store.work_claim(WORK_QUEUE, 2, LEASE_MS, 5).await.unwrap();
    assert_eq!(claim.items.len(), 2);
    let a = &claim.items[0];
    assert_eq!(a.work_id, "w-a");
    assert!(
        store
            .work_dead_letter(a.row_id, a.lease_token, "no job reads erp_main invoice")
            .await
            .unwrap()
    );
    store
        .work_enqueue(WORK_QUEUE, &[work("w-c")], false)
        .await
        .unwrap();
    let dead = store.dead_items(Some(WORK_QUEUE), 10).await.unwrap();
    (ids, dead[0].id)
}

async fn counts_dead_letters_and_replay_across_queues(store: &TestStore) {
    let (ids, dead_work) = seed(store).await;

    let counts = store.queue_counts().await.unwrap();
    assert_eq!(counts.len(), 2, "{counts:?}");
    let inbox = &counts[0];
    assert_eq!(inbox.queue, INBOX_QUEUE);
    assert_eq!(
        (
            inbox.ready,
            inbox.delayed,
            inbox.leased,
            inbox.dead,
            inbox.processed
        ),
        (1, 1, 0, 2, Some(1)),
        "{inbox:?}"
    );
    assert!(inbox.oldest_at.is_some());
    let q = &counts[1];
    assert_eq!(q.queue, WORK_QUEUE);
    assert_eq!(
        (q.ready, q.delayed, q.leased, q.dead, q.processed),
        (1, 0, 1, 1, None),
        "{q:?}"
    );

    // Every dead letter, the inbox's first, each with its reason.
    let dead = store.dead_items(None, 100).await.unwrap();
    let seen: Vec<(&str, &str, &str)> = dead
        .iter()
        .map(|d| (d.queue.as_str(), d.work_id.as_str(), d.reason.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                INBOX_QUEUE,
                "crm_main:e2",
                "the event has nothing at \"/data\""
            ),
            (INBOX_QUEUE, "crm_main:e3", "fetching C-9: HTTP 503"),
            (WORK_QUEUE, "w-a", "no job reads erp_main invoice"),
        ]
    );
    assert_eq!(dead[0].payload, json!({"data": {"id": "e2"}}));
    assert_eq!(dead[0].attempts, 1);
    assert!(dead[2].dead_at.is_some());
    assert_eq!(
        store
            .dead_items(Some(INBOX_QUEUE), 100)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store.dead_items(Some(WORK_QUEUE), 100).await.unwrap().len(),
        1
    );
    assert!(
        store
            .dead_items(Some("nope"), 100)
            .await
            .unwrap()
            .is_empty()
    );

    // Replaying one dead event (and an id that is none): only it is back,
    // due now, with fresh attempts; a worker takes it up.
    let requeued = store
        .requeue_dead(INBOX_QUEUE, Some(&[ids[1], 987_654, ids[0]][..]))
        .await
        .unwrap();
    assert_eq!(
        requeued,
        [ids[1]],
        "processed and unknown ids stay as they are"
    );
    assert_eq!(
        store.inbox_status("crm_main:e2").await.unwrap(),
        Some(("pending".into(), None))
    );
    let claimed = store.inbox_claim("w2", 10, LEASE_MS).await.unwrap();
    let keys: Vec<&str> = claimed.iter().map(|c| c.idempotency_key.as_str()).collect();
    assert_eq!(keys, ["crm_main:e2", "crm_main:e5"]);
    assert_eq!(claimed[0].attempts, 1, "fresh attempts");
    // A dead letter is requeued once: the second time there is none.
    assert!(
        store
            .requeue_dead(INBOX_QUEUE, Some(&[ids[1]][..]))
            .await
            .unwrap()
            .is_empty()
    );

    // All of a work queue's dead letters.
    assert_eq!(
        store.requeue_dead(WORK_QUEUE, None).await.unwrap(),
        [dead_work]
    );
    let claim = store.work_claim(WORK_QUEUE, 10, LEASE_MS, 5).await.unwrap();
    let got: Vec<(&str, u32)> = claim
        .items
        .iter()
        .map(|w| (w.work_id.as_str(), w.attempt))
        .collect();
    assert!(got.contains(&("w-a", 1)), "{got:?}");
    let dead = store.dead_items(None, 100).await.unwrap();
    assert_eq!(dead.len(), 1, "only e3 is still dead: {dead:?}");
}

async fn done_markers_are_pruned_in_steps(store: &TestStore) {
    assert_eq!(store.work_mark_done(&["a", "b", "c"]).await.unwrap(), 3);
    let markers = store.work_done_markers().await.unwrap();
    assert_eq!(markers.count, 3);
    assert!(markers.oldest_at.is_some());
    let after = chrono::Utc::now().timestamp_millis() + 1_000;
    assert_eq!(
        store.work_done_prune_some(0, 10).await.unwrap(),
        0,
        "none older"
    );
    assert_eq!(store.work_done_prune_some(after, 2).await.unwrap(), 2);
    assert_eq!(store.work_done_prune_some(after, 2).await.unwrap(), 1);
    assert_eq!(store.work_done_markers().await.unwrap().count, 0);
}

async fn processed_webhook_events_are_pruned_dead_and_waiting_ones_kept(store: &TestStore) {
    seed(store).await;
    let status = |key: &'static str| async move {
        store
            .inbox_status(&format!("crm_main:{key}"))
            .await
            .unwrap()
            .map(|(s, _)| s)
    };
    assert_eq!(status("e1").await.as_deref(), Some("processed"));
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(
        store.inbox_prune_some(an_hour_ago, 10).await.unwrap(),
        0,
        "processed just now: kept"
    );
    let soon = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(store.inbox_prune_some(soon, 10).await.unwrap(), 1);
    assert_eq!(store.inbox_prune_some(soon, 10).await.unwrap(), 0);
    assert_eq!(status("e1").await, None, "the processed event is gone");
    for (key, kept) in [
        ("e2", "dead"),
        ("e3", "dead"),
        ("e4", "pending"),
        ("e5", "pending"),
    ] {
        assert_eq!(status(key).await.as_deref(), Some(kept), "{key}");
    }
    assert_eq!(
        store.dead_items(Some(INBOX_QUEUE), 10).await.unwrap().len(),
        2
    );
}

/// Inserts a done-marker `age` old through a connection of the test's own.
async fn mark_done_long_ago(store: &TestStore, work_id: &str, age: Duration) {
    let at = chrono::Utc::now().timestamp_millis() - age.as_millis() as i64;
    let sql = if store.sqlite_file().is_some() {
        format!("INSERT INTO work_done (work_id, done_at_ms) VALUES ('{work_id}', {at})")
    } else {
        let (_, schema) = store.pg_schema().unwrap();
        format!(
            "INSERT INTO \"{schema}\".work_done (work_id, done_at_ms) VALUES ('{work_id}', {at})"
        )
    };
    if let Some(file) = store.sqlite_file() {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    } else {
        let (url, _) = store.pg_schema().unwrap();
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    }
}

async fn the_daemon_forgets_done_markers_older_than_keep_done_days(store: &TestStore) {
    let day = Duration::from_secs(86_400);
    mark_done_long_ago(store, "webhook:crm_main:old", day * 8).await;
    mark_done_long_ago(store, "webhook:crm_main:recent", day * 6).await;
    store
        .work_mark_done(&["webhook:crm_main:new"])
        .await
        .unwrap();

    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Settings::default();
    s.connectors.dir = dir.path().join("no-definitions");
    s.server.workers = 0;
    s.server.scheduler = false;
    assert_eq!(s.queue.keep_done_days, 7, "the default");
    let engine = Engine::new(s.clone(), store.store.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = concord::serve::start(s, Arc::new(engine), listener)
        .await
        .unwrap();
    let all = [
        "webhook:crm_main:old",
        "webhook:crm_main:recent",
        "webhook:crm_main:new",
    ];
    let mut done = Vec::new();
    for _ in 0..100 {
        done = store.work_done_among(&all).await.unwrap();
        if done.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown();
    running.wait().await.unwrap();
    done.sort();
    assert_eq!(
        done,
        ["webhook:crm_main:new", "webhook:crm_main:recent"],
        "the 8-day-old marker is gone at start, the younger ones stay"
    );
}

fn concord(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("CONCORD_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run concord")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn queue_commands_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let settings = StoreSettings {
        url: format!("sqlite://{}", db.display()).into(),
        ..StoreSettings::default()
    };
    let store = Store::open(&settings).await.unwrap();
    let (ids, dead_work) = seed(&store).await;
    store.close().await;
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("[store]\nurl = \"sqlite://{}\"\n", db.display()),
    )
    .unwrap();
    let c = config.to_str().unwrap();

    let out = concord(dir.path(), &["-c", c, "queue", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for want in ["inbox", WORK_QUEUE, "done-markers: 0", "7 day(s)"] {
        assert!(table.contains(want), "{want}: {table}");
    }

    let out = concord(dir.path(), &["-c", c, "queue", "dead", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dead: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let rows: Vec<(&str, i64)> = dead
        .iter()
        .map(|d| (d["queue"].as_str().unwrap(), d["id"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        rows,
        [
            (INBOX_QUEUE, ids[1]),
            (INBOX_QUEUE, ids[2]),
            (WORK_QUEUE, dead_work)
        ]
    );
    assert_eq!(dead[1]["reason"], "fetching C-9: HTTP 503");

    let out = concord(dir.path(), &["-c", c, "queue", "dead", "--queue", "inbox"]);
    let table = text(&out.stdout);
    assert!(
        table.contains("crm_main:e3") && table.contains("HTTP 503"),
        "{table}"
    );
    assert!(!table.contains("w-a"), "{table}");
    assert!(table.contains("concord queue replay"), "{table}");

    // An id that is not a dead letter: the others are replayed, exit 1
    // naming it.
    let id = ids[2].to_string();
    let out = concord(
        dir.path(),
        &[
            "-c", c, "queue", "replay", "--queue", "inbox", &id, "424242",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(&format!(
            "1 dead letter(s) of inbox back in line with fresh attempts: {id}"
        )),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("no dead letter with id 424242 in inbox"),
        "{}",
        text(&out.stderr)
    );

    // Neither ids nor --all is a usage error: nothing is replayed.
    let out = concord(
        dir.path(),
        &["-c", c, "queue", "replay", "--queue", "inbox"],
    );
    assert_eq!(out.status.code(), Some(2));

    let out = concord(
        dir.path(),
        &["-c", c, "queue", "replay", "-q", WORK_QUEUE, "--all"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = concord(
        dir.path(),
        &["-c", c, "queue", "replay", "-q", "inbox", "--all"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("1 dead letter(s) of inbox"),
        "{}",
        text(&out.stdout)
    );
    let out = concord(dir.path(), &["-c", c, "queue", "dead"]);
    assert_eq!(text(&out.stdout), "no dead letters\n");

    let out = concord(dir.path(), &["-c", c, "queue", "list", "-o", "json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["queues"][0]["queue"], "inbox");
    assert_eq!(list["queues"][0]["ready"], 3, "e2, e3 and e5 wait: {list}");
    assert_eq!(list["queues"][1]["ready"], 2, "w-a and w-c: {list}");
    assert_eq!(list["done_markers"]["keep_days"], 7);

    // With the broker as the daemon's queue, the output says where its
    // events are.
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}\"\n[queue]\nkind = \"amqp\"\nurl = \"amqp://concord:s3cret@mq:5672/%2f\"\nname = \"hooks\"\n",
            db.display()
        ),
    )
    .unwrap();
    let out = concord(dir.path(), &["-c", c, "queue", "dead"]);
    let shown = text(&out.stdout);
    assert!(shown.contains("`hooks.dead`"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}
