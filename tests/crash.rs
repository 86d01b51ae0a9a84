//! Crash safety: `concord sync run` killed with SIGKILL at random points,
//! then run again, must leave the target holding every record exactly once
//! and the source cursor at the end — nothing lost, nothing done twice.
//!
//! The source is an NDJSON file (the `file` driver), the target a SQLite
//! table (the `sql` driver, which recognises a repeated create by its
//! idempotency key). `CONCORD_CRASH_RECORDS` sets the count (default
//! 20,000, so `cargo test` stays quick on a debug build; 100,000 takes about
//! nine minutes there) and `CONCORD_CRASH_TRIALS` the number of kills
//! (default 4).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn setup(dir: &Path, records: usize) {
    std::fs::create_dir_all(dir.join("connectors")).unwrap();
    std::fs::create_dir_all(dir.join("mappings")).unwrap();
    let mut source =
        std::io::BufWriter::new(std::fs::File::create(dir.join("customers.ndjson")).unwrap());
    for i in 0..records {
        writeln!(
            source,
            r#"{{"id":"C{i:07}","name":"Customer {i}","email":"ap{i}@example.test","changed":"2026-11-01T00:00:00Z"}}"#
        )
        .unwrap();
    }
    source.flush().unwrap();
    let files = [
        (
            "connectors/src.toml",
            r#"name = "src"
driver = "file"
[entities.customer]
path = "customers.ndjson"
format = "ndjson"
id = "id"
page_size = 500
"#,
        ),
        (
            "connectors/dst.toml",
            r#"name = "dst"
driver = "sql"
url = "sqlite://target.db"
[entities.customer]
table = "customer"
id = "row_id"
updated_at = "modified_at"
idempotency_column = "concord_key"
upsert = { key = ["row_id"], columns = ["source_id", "name", "email"] }
"#,
        ),
        (
            "mappings/src.in.toml",
            r#"[mapping]
name = "src-in"
version = 1
system = "src"
entity = "customer"
direction = "in"
[fields]
name = { from = "name", required = true }
email = { from = "email" }
"extra.source_id" = { from = "id" }
"#,
        ),
        (
            "mappings/dst.out.toml",
            r#"[mapping]
name = "dst-out"
version = 1
system = "dst"
entity = "customer"
direction = "out"
[fields]
source_id = { from = "extra.source_id" }
name = { from = "name" }
email = { from = "email" }
"#,
        ),
        (
            "concord.toml",
            r#"[store]
url = "sqlite://state/concord.db"
[connectors]
dir = "connectors"
[mappings]
dir = "mappings"
[systems.source]
connector = "src"
[systems.target]
connector = "dst"
[[jobs]]
name = "copy"
source = { system = "source", entity = "customer", mapping = "src-in" }
targets = [{ system = "target", entity = "customer", mapping = "dst-out" }]
batch_size = 500
[delivery]
batch_size = 500
initial_retry_secs = 0
"#,
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

async fn create_target(dir: &Path) {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("target.db"))
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE customer (
            row_id INTEGER PRIMARY KEY AUTOINCREMENT,
            source_id TEXT, name TEXT, email TEXT,
            concord_key TEXT UNIQUE,
            modified_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')))",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

fn sync(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
    cmd.args([
        "--config",
        "concord.toml",
        "sync",
        "run",
        "copy",
        "-o",
        "json",
    ])
    .current_dir(dir)
    .env("NO_COLOR", "1")
    .env_remove("RUST_LOG")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("CONCORD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A small deterministic generator: kill points differ per trial and run.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_runs_lose_nothing_and_repeat_nothing() {
    let records = env_or("CONCORD_CRASH_RECORDS", 20_000);
    let trials = env_or("CONCORD_CRASH_TRIALS", 4);
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), records);
    create_target(dir.path()).await;

    // How long a full run takes, to aim the kills inside it.
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ records as u64;
    let mut killed = 0;
    for trial in 0..trials {
        let started = Instant::now();
        let mut child = sync(dir.path()).spawn().expect("start concord");
        let wait = Duration::from_millis(300 + next(&mut seed) % 2500);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Finished before the kill: the rest of the work is done.
                assert!(status.success(), "trial {trial}: concord failed: {status}");
                break;
            }
            if started.elapsed() >= wait {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Then run to the end, as many times as it takes (each run resumes).
    let mut last = String::new();
    for _ in 0..5 {
        let out = sync(dir.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        let report: serde_json::Value = serde_json::from_str(&last).unwrap();
        if report[0]["created"] == 0 && report[0]["delivered"] == 0 && report[0]["retry_later"] == 0
        {
            break;
        }
    }
    assert!(
        killed > 0 || records < 1000,
        "no run was killed mid-way; {last}"
    );

    // Every source record is in the target exactly once.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("target.db"));
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT source_id) FROM customer")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        (rows, distinct),
        (records as i64, records as i64),
        "after {killed} kills"
    );
    let missing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM customer WHERE name IS NULL OR email IS NULL")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(missing, 0);
    conn.close().await.unwrap();

    // The store agrees: one canonical record per source record, every
    // delivery settled, nothing quarantined.
    let out = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["--config", "concord.toml", "status", "-o", "json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["records"][0]["count"], records as i64, "{status}");
    assert_eq!(status["open_quarantine"], 0, "{status}");
    let outbox = status["outbox"].as_array().unwrap();
    assert!(
        outbox.iter().all(|s| s["status"] == "delivered"),
        "every delivery settled: {status}"
    );
    // A last run reads nothing new: the cursor is at the end.
    let out = sync(dir.path()).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["created"], 0, "{report}");
    assert_eq!(report[0]["updated"], 0, "{report}");
    println!("{records} records, {killed} of {trials} runs killed, target exact");
}
