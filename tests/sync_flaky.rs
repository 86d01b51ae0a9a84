//! Delivery to a flaky HTTP target, end to end: an NDJSON file (the `file`
//! driver) → map → store → outbox → the real `http` driver → an axum mock.
//!
//! The mock, driven by a seeded generator, fails requests with 500, asks
//! for patience with 429 + `Retry-After`, and sometimes applies a write and
//! then answers too late (the driver's timeout passes: the effect happened,
//! the answer is lost). It applies each idempotency key once and replays
//! the stored answer for a repeated key, and it counts the effects per
//! source record. Every record must end up at the target exactly once, at
//! its latest version, with no effect applied twice; one record the target
//! refuses with 422 waits in dead letters with the reason and, once the
//! target is fixed, `concord replay dead-letters` delivers it.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use concord::settings::Settings;
use concord::store::Store;
use concord::sync::{Engine, RunOptions};

const KEY_HEADER: &str = "idempotency-key";
/// The driver's timeout is 0.3 s; a lost answer comes after 0.6 s.
const LATE: Duration = Duration::from_millis(600);

// ---------------------------------------------------------------------------
// The mock target

#[derive(Default)]
struct Target {
    seed: u64,
    /// Random faults on (500, 429, lost answers).
    chaos: bool,
    records: BTreeMap<String, Value>,
    next_id: u64,
    /// The stored answer of each idempotency key applied.
    answers: HashMap<String, (StatusCode, Value)>,
    /// Effects per source record (`ref`).
    creates: HashMap<String, usize>,
    updates: HashMap<String, usize>,
    /// Records refused with 422 until `fixed`.
    refuse: HashSet<String>,
    fixed: bool,
    /// Requests about these records answer late this many more times.
    lose: HashMap<String, usize>,
    requests: usize,
    errors_500: usize,
    rate_limited: usize,
    lost_answers: usize,
    replayed: usize,
}

type Shared = Arc<Mutex<Target>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Target> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl Target {
    /// xorshift64: the same faults for the same seed.
    fn roll(&mut self) -> u64 {
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        x % 100
    }
}

async fn serve(state: Shared) -> String {
    let app = Router::new()
        .route("/customers", post(create))
        .route("/customers/{id}", put(update))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn create(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    write(s, headers, None, body).await
}

async fn update(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    write(s, headers, Some(id), body).await
}

/// One write: faults first (nothing applied), then the key's stored answer
/// or the effect, then perhaps an answer that comes too late.
async fn write(s: Shared, headers: HeaderMap, id: Option<String>, body: Value) -> Response {
    let (status, answer, late) = {
        let mut t = lock(&s);
        t.requests += 1;
        if t.chaos {
            let r = t.roll();
            if r < 30 {
                t.errors_500 += 1;
                return (StatusCode::INTERNAL_SERVER_ERROR, "database is busy").into_response();
            }
            if r < 36 {
                t.rate_limited += 1;
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "1")],
                    Json(json!({"message": "slow down"})),
                )
                    .into_response();
            }
        }
        let Some(key) = headers.get(KEY_HEADER).and_then(|v| v.to_str().ok()) else {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": "no Idempotency-Key"})),
            )
                .into_response();
        };
        let key = key.to_owned();
        let r#ref = body["ref"].as_str().unwrap_or_default().to_owned();
        let (status, answer) = if let Some(stored) = t.answers.get(&key).cloned() {
            t.replayed += 1;
            stored
        } else if t.refuse.contains(&r#ref) && !t.fixed {
            // Refusals are not stored: the same key may pass once fixed.
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(
                    json!({"message": format!("vat {:?} is not a valid VAT number", body["vat"])}),
                ),
            )
                .into_response();
        } else {
            let (status, id) = match id {
                None => {
                    t.next_id += 1;
                    *t.creates.entry(r#ref.clone()).or_default() += 1;
                    (StatusCode::CREATED, format!("T{}", t.next_id))
                }
                Some(id) if t.records.contains_key(&id) => {
                    *t.updates.entry(r#ref.clone()).or_default() += 1;
                    (StatusCode::OK, id)
                }
                Some(id) => {
                    return (
                        StatusCode::NOT_FOUND,
                        Json(json!({"message": format!("no customer {id}")})),
                    )
                        .into_response();
                }
            };
            let mut record = body.clone();
            record["id"] = json!(id);
            t.records.insert(id, record.clone());
            t.answers.insert(key, (status, record.clone()));
            (status, record)
        };
        let scripted = t.lose.get_mut(&r#ref).filter(|n| **n > 0).map(|n| *n -= 1);
        let late = scripted.is_some() || (t.chaos && t.roll() < 12);
        if late {
            t.lost_answers += 1;
        }
        (status, answer, late)
    };
    if late {
        // The effect is applied; the client has stopped waiting.
        tokio::time::sleep(LATE).await;
    }
    (status, Json(answer)).into_response()
}

// ---------------------------------------------------------------------------
// Setup: a file source, the http target, the job

struct Setup {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    target: Shared,
}

impl Setup {
    async fn new(seed: u64) -> Setup {
        let target: Shared = Arc::new(Mutex::new(Target {
            seed,
            ..Target::default()
        }));
        let base = serve(target.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["connectors", "mappings"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let text = |p: &str, t: String| std::fs::write(d.join(p), t).unwrap();
        text(
            "connectors/src.toml",
            format!(
                r#"name = "src"
driver = "file"
[entities.company]
path = "{}"
format = "ndjson"
id = "id"
"#,
                d.join("in.ndjson").display()
            ),
        );
        // Short timeout and quick retries keep the test fast; the engine's
        // own retries (below) carry what the driver's do not.
        text(
            "connectors/flaky.toml",
            format!(
                r#"name = "flaky"
driver = "http"
base_url = "{base}"
timeout_secs = 0.3
retry = {{ max_attempts = 3, initial_delay_ms = 10, max_delay_ms = 1000 }}
idempotency_header = "Idempotency-Key"
[entities.customer]
id = "/id"
create = {{ path = "/customers", id = "/id" }}
update = {{ method = "PUT", path = "/customers/{{id}}", id = "/id" }}
"#
            ),
        );
        text(
            "mappings/in.toml",
            r#"[mapping]
name = "src-in"
version = 1
system = "src"
entity = "customer"
direction = "in"
[fields]
name = { from = "company", required = true }
tax_id = { from = "vat" }
email = { from = "email", pipe = ["trim", "lower"] }
"extra.source_id" = { from = "id" }
"#
            .into(),
        );
        text(
            "mappings/out.toml",
            r#"[mapping]
name = "flaky-out"
version = 1
system = "flaky"
entity = "customer"
direction = "out"
[fields]
ref = { from = "extra.source_id" }
name = { from = "name" }
vat = { from = "tax_id" }
email = { from = "email" }
"#
            .into(),
        );
        text(
            "concord.toml",
            format!(
                r#"[store]
url = "sqlite://{}"
[connectors]
dir = "{}"
[mappings]
dir = "{}"
[systems.files]
connector = "src"
[systems.crm]
connector = "flaky"
[[jobs]]
name = "push"
source = {{ system = "files", entity = "company", mapping = "src-in" }}
targets = [{{ system = "crm", entity = "customer", mapping = "flaky-out" }}]
identity = ["tax_id"]
batch_size = 10
[delivery]
max_attempts = 40
initial_retry_secs = 0
max_retry_secs = 1
batch_size = 10
"#,
                d.join("concord.db").display(),
                d.join("connectors").display(),
                d.join("mappings").display()
            ),
        );
        let config = d.join("concord.toml");
        Setup {
            dir,
            config,
            target,
        }
    }

    fn write_source(&self, rows: &[(String, String)]) {
        let mut text = String::new();
        for (i, (id, email)) in rows.iter().enumerate() {
            text.push_str(
                &json!({
                    "id": id,
                    "company": format!("Customer {id} AG"),
                    "vat": format!("CHE-{:09}", 100_000_000 + i),
                    "email": email,
                })
                .to_string(),
            );
            text.push('\n');
        }
        std::fs::write(self.dir.path().join("in.ndjson"), text).unwrap();
    }

    async fn engine(&self) -> Engine {
        let settings = Settings::load_from(
            Path::new("/nonexistent"),
            Some(&self.config),
            std::iter::empty(),
        )
        .unwrap();
        let store = Store::open(&settings.store).await.unwrap();
        Engine::new(settings, store).unwrap()
    }
}

fn outbox(status: &concord::store::StatusReport, which: &str) -> i64 {
    status
        .outbox
        .iter()
        .filter(|c| c.status == which)
        .map(|c| c.count)
        .sum()
}

/// Delivers until nothing is pending (retries come due within about a
/// second), failing after `limit`.
async fn deliver_until_settled(engine: &Engine, limit: Duration) -> usize {
    let started = Instant::now();
    let mut passes = 0;
    loop {
        engine.deliver_all(None).await.unwrap();
        passes += 1;
        let status = engine.store().status().await.unwrap();
        if outbox(&status, "pending") == 0 {
            return passes;
        }
        assert!(
            started.elapsed() < limit,
            "still pending after {passes} passes: {:?}",
            status.outbox
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rows(n: usize, edited: &HashSet<usize>) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let id = format!("C{i:04}");
            let email = if edited.contains(&i) {
                format!("billing-{i}@example.test")
            } else {
                format!("info-{i}@example.test")
            };
            (id, email)
        })
        .collect()
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_target_gets_every_record_once_at_its_latest_version() {
    const N: usize = 40;
    let setup = Setup::new(0x5EED_F1A4_u64).await;
    let refused = "C0012".to_owned();
    {
        let mut t = lock(&setup.target);
        t.chaos = true;
        t.refuse.insert(refused.clone());
    }
    setup.write_source(&rows(N, &HashSet::new()));
    let engine = setup.engine().await;

    let first = engine.run_job("push", RunOptions::default()).await.unwrap();
    assert_eq!(first.created, N, "{first:?}");
    deliver_until_settled(&engine, Duration::from_secs(40)).await;

    // Newer versions of a third of the records, delivered through the same
    // storm.
    let edited: HashSet<usize> = (0..N).filter(|i| i % 3 == 1).collect();
    setup.write_source(&rows(N, &edited));
    let second = engine
        .run_job(
            "push",
            RunOptions {
                full: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(second.updated, edited.len(), "{second:?}");
    deliver_until_settled(&engine, Duration::from_secs(40)).await;

    let status = engine.store().status().await.unwrap();
    assert_eq!(
        outbox(&status, "dead"),
        1,
        "{:?} {:?}",
        status.outbox,
        engine.store().outbox_dead(None, 10).await.unwrap()
    );
    let dead = engine.store().outbox_dead(None, 10).await.unwrap();
    let reason = dead[0].last_error.clone().unwrap_or_default();
    assert!(
        reason.contains("rejected by crm") && reason.contains("is not a valid VAT number"),
        "the dead letter keeps the target's reason: {reason}"
    );

    let expected: BTreeMap<String, String> = rows(N, &edited).into_iter().collect();
    {
        let t = lock(&setup.target);
        eprintln!(
            "{} requests: {} answered 500, {} answered 429, {} answers lost after the write, {} stored answers replayed",
            t.requests, t.errors_500, t.rate_limited, t.lost_answers, t.replayed
        );
        // The storm happened.
        assert!(t.errors_500 >= 5 && t.rate_limited >= 1 && t.lost_answers >= 2);
        assert_eq!(
            t.records.len(),
            N - 1,
            "one record each, the refused one aside"
        );
        let mut seen = HashSet::new();
        for record in t.records.values() {
            let r#ref = record["ref"].as_str().unwrap();
            assert!(
                seen.insert(r#ref.to_owned()),
                "{ref} is at the target twice"
            );
            assert_eq!(
                record["email"], expected[r#ref],
                "{ref} is at its latest version"
            );
        }
        for (r#ref, n) in &t.creates {
            assert_eq!(*n, 1, "{ref} was created {n} times");
        }
        // At most one update per newer version: no effect applied twice.
        for (r#ref, n) in &t.updates {
            let i: usize = r#ref[1..].parse().unwrap();
            assert!(
                edited.contains(&i) && *n == 1,
                "{ref} was updated {n} times (edited: {})",
                edited.contains(&i)
            );
        }
        assert!(!seen.contains(&refused));
    }

    // The target is fixed; the operator replays the dead letter with the
    // command line, which delivers it.
    {
        let mut t = lock(&setup.target);
        t.fixed = true;
        t.chaos = false;
    }
    engine.store().close().await;
    // The mock keeps serving on this runtime while the command runs.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_concord"));
    cmd.arg("--config")
        .arg(&setup.config)
        .args(["replay", "dead-letters"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", setup.dir.path())
        .env("NO_COLOR", "1")
        .current_dir(setup.dir.path());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 dead letter(s) back in line; 1 delivered"),
        "{stdout}"
    );
    let t = lock(&setup.target);
    let arrived: Vec<&Value> = t
        .records
        .values()
        .filter(|r| r["ref"] == refused.as_str())
        .collect();
    assert_eq!(arrived.len(), 1);
    assert_eq!(arrived[0]["email"], expected[&refused]);
    assert_eq!(t.records.len(), N);
}

/// A create whose answer was lost, then a newer version of the record:
/// the newer version finds the record the lost create made (by the
/// record's create key) and updates it, instead of creating it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_is_found_again_by_a_newer_version() {
    let setup = Setup::new(7).await;
    // Every answer about C0001 of the first push comes too late (the
    // driver tries three times): the create happened, nobody knows.
    lock(&setup.target).lose.insert("C0001".into(), 3);
    setup.write_source(&rows(3, &HashSet::new()));
    let engine = setup.engine().await;
    engine.run_job("push", RunOptions::default()).await.unwrap();
    {
        let mut t = lock(&setup.target);
        assert_eq!(t.creates.get("C0001"), Some(&1), "the create was applied");
        assert!(t.lost_answers >= 1);
        t.lose.clear();
    }
    let status = engine.store().status().await.unwrap();
    assert!(outbox(&status, "pending") >= 1, "{:?}", status.outbox);

    // A newer version of C0001 arrives before the old one is retried.
    setup.write_source(&rows(3, &HashSet::from([1])));
    let r = engine
        .run_job(
            "push",
            RunOptions {
                full: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.updated, 1, "{r:?}");
    deliver_until_settled(&engine, Duration::from_secs(20)).await;

    {
        let t = lock(&setup.target);
        c1_once_at_its_latest_version(&t);
        assert_eq!(t.creates.get("C0001"), Some(&1));
        assert_eq!(
            t.updates.get("C0001"),
            Some(&1),
            "the newer version as an update"
        );
        assert_eq!(t.records.len(), 3);
    }
    let status = engine.store().status().await.unwrap();
    assert_eq!(outbox(&status, "dead"), 0, "{:?}", status.outbox);
}

/// The target holds C0001 once, with the newer version's e-mail.
fn c1_once_at_its_latest_version(t: &Target) {
    let c1: Vec<&Value> = t.records.values().filter(|r| r["ref"] == "C0001").collect();
    assert_eq!(c1.len(), 1, "created once: {:?}", t.records);
    assert_eq!(
        c1[0]["email"], "billing-1@example.test",
        "at its latest version"
    );
}

/// C0001 edited at the source and taken in again, its delivery answered
/// late three times (the driver's tries); answers come in time afterwards.
async fn newer_version_answered_late(setup: &Setup, engine: &Engine) -> concord::sync::JobReport {
    lock(&setup.target).lose.insert("C0001".into(), 3);
    setup.write_source(&rows(3, &HashSet::from([1])));
    let full = RunOptions {
        full: true,
        ..RunOptions::default()
    };
    let r = engine.run_job("push", full).await.unwrap();
    assert_eq!(r.updated, 1, "{r:?}");
    lock(&setup.target).lose.clear();
    r
}

/// As above, but the newer version's own create is tried and lost too
/// before it gets through: the target found the first create by its key
/// and holds that version, not the one the answer is for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_retried_at_a_newer_version_is_still_updated() {
    let setup = Setup::new(7).await;
    lock(&setup.target).lose.insert("C0001".into(), 3);
    setup.write_source(&rows(3, &HashSet::new()));
    let engine = setup.engine().await;
    engine.run_job("push", RunOptions::default()).await.unwrap();

    // The newer version's create (the same create key) is answered late
    // three times as well: it goes back in line, an attempt counted.
    let r = newer_version_answered_late(&setup, &engine).await;
    assert_eq!(r.retry_later, 1, "{r:?}");
    deliver_until_settled(&engine, Duration::from_secs(20)).await;

    let t = lock(&setup.target);
    c1_once_at_its_latest_version(&t);
    assert_eq!(
        t.updates.get("C0001"),
        Some(&1),
        "the newer version as an update"
    );
}

/// Both creates' answers are lost until the entries are dead letters; the
/// operator puts them back in line (`replay dead-letters`, which starts
/// their attempts again). The target still gets the newer version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_lost_creates_replayed_reach_the_latest_version() {
    let setup = Setup::new(7).await;
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("max_attempts = 40", "max_attempts = 1"),
    )
    .unwrap();
    lock(&setup.target).lose.insert("C0001".into(), 3);
    setup.write_source(&rows(3, &HashSet::new()));
    let engine = setup.engine().await;
    // (A batch waiting on C0001's late answers may time out beside it.)
    let r = engine.run_job("push", RunOptions::default()).await.unwrap();
    assert!(r.dead_lettered >= 1, "{r:?}");

    let r = newer_version_answered_late(&setup, &engine).await;
    assert!(r.dead_lettered >= 1, "{r:?}");

    assert!(engine.store().outbox_requeue(None, &[]).await.unwrap() >= 2);
    deliver_until_settled(&engine, Duration::from_secs(20)).await;
    let t = lock(&setup.target);
    c1_once_at_its_latest_version(&t);
    assert_eq!(t.records.len(), 3);
}
