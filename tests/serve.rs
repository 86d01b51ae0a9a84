//! `concord serve`: webhook intake (verification, refusals, durability),
//! inbox processing, the scheduler across instances, graceful shutdown and
//! the binary itself.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::TestStore;
use concord::connector::{
    Capabilities, Change, Connector, ConnectorError, ErrorKind, PageStream, PushOutcome, RawRecord,
};
use concord::model::ExternalId;
use concord::serve::scheduler::{RunJob, Scheduler};
use concord::serve::settings::{Encoding, EventMode, Scheme, WebhookSystem};
use concord::serve::verify::{sign_plain, sign_standard};
use concord::settings::{Settings, SystemSettings};
use concord::sync::{Endpoint, Engine, JobSettings};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ERP_SECRET: &str = "erp-hmac-key";

on_both_backends!(
    event_is_stored_acknowledged_and_processed,
    burst_every_acknowledged_event_is_durable,
    two_schedulers_fire_once_per_tick,
    missed_runs_collapse_to_one_and_runs_never_overlap,
);

/// A system that records pushes and answers `get` from a map.
struct FakeSystem {
    name: String,
    records: Mutex<HashMap<String, Value>>,
    pushes: Mutex<Vec<Change>>,
    /// `get` waits this long (work in flight at shutdown).
    get_delay: Duration,
    /// `get` fails while this is above zero (counted down).
    get_failures: Mutex<u32>,
}

impl FakeSystem {
    fn new(name: &str) -> Arc<FakeSystem> {
        Arc::new(FakeSystem {
            name: name.into(),
            records: Mutex::new(HashMap::new()),
            pushes: Mutex::new(Vec::new()),
            get_delay: Duration::ZERO,
            get_failures: Mutex::new(0),
        })
    }
}

#[async_trait]
impl Connector for FakeSystem {
    fn name(&self) -> &str {
        &self.name
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        Ok(())
    }
    fn pull<'a>(
        &'a self,
        _entity: &'a str,
        _cursor: Option<concord::connector::Cursor>,
    ) -> PageStream<'a> {
        futures_util::stream::iter(Vec::new()).boxed()
    }
    async fn get(
        &self,
        _entity: &str,
        id: &ExternalId,
    ) -> Result<Option<RawRecord>, ConnectorError> {
        tokio::time::sleep(self.get_delay).await;
        {
            let mut f = self.get_failures.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(ConnectorError::new(
                    ErrorKind::Unavailable,
                    &self.name,
                    "HTTP 503",
                ));
            }
        }
        Ok(self
            .records
            .lock()
            .unwrap()
            .get(id.as_str())
            .map(|v| RawRecord {
                external_id: id.clone(),
                updated_at: None,
                data: v.clone(),
            }))
    }
    async fn push(
        &self,
        _entity: &str,
        changes: Vec<Change>,
    ) -> Result<Vec<PushOutcome>, ConnectorError> {
        let mut pushes = self.pushes.lock().unwrap();
        let mut out = Vec::new();
        for c in changes {
            pushes.push(c);
            out.push(PushOutcome::Created {
                external_id: ExternalId::parse(&format!("E-{}", pushes.len())).unwrap(),
            });
        }
        Ok(out)
    }
}

fn write_mappings(dir: &Path) {
    std::fs::write(
        dir.join("crm-in.toml"),
        r#"[mapping]
name = "crm-customer-in"
version = 1
system = "crm"
entity = "customer"
direction = "in"
[fields]
name = { from = "name", required = true }
email = { from = "email", pipe = ["trim", "lower"] }
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("erp-out.toml"),
        r#"[mapping]
name = "erp-customer-out"
version = 1
system = "erp"
entity = "customer"
direction = "out"
[fields]
customer_name = { from = "name" }
mail = { from = "email" }
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("erp-in.toml"),
        r#"[mapping]
name = "erp-customer-in"
version = 1
system = "erp"
entity = "customer"
direction = "in"
[fields]
name = { from = "customer_name", required = true }
email = { from = "mail" }
"#,
    )
    .unwrap();
}

fn endpoint(system: &str, mapping: &str) -> Endpoint {
    Endpoint {
        system: system.into(),
        entity: "customer".into(),
        mapping: mapping.into(),
    }
}

fn job(name: &str, source: Endpoint, targets: Vec<Endpoint>) -> JobSettings {
    JobSettings {
        name: name.into(),
        schedule: None,
        timezone: None,
        source,
        targets,
        identity: vec!["email".into()],
        batch_size: 100,
    }
}

/// Settings: crm_main pushes Standard Webhooks whose payload is the record;
/// erp_main pushes plain HMAC (hex) events that name ids to fetch.
fn settings(dir: &Path) -> Settings {
    write_mappings(dir);
    let mut s = Settings::default();
    s.mappings.dir = dir.to_owned();
    s.connectors.dir = dir.join("no-definitions");
    for (name, connector) in [("crm_main", "crm"), ("erp_main", "erp")] {
        s.systems.insert(
            name.into(),
            SystemSettings {
                connector: connector.into(),
                base_url: None,
                vars: BTreeMap::new(),
            },
        );
    }
    s.jobs = vec![
        job(
            "crm-to-erp",
            endpoint("crm_main", "crm-customer-in"),
            vec![endpoint("erp_main", "erp-customer-out")],
        ),
        job("erp-in", endpoint("erp_main", "erp-customer-in"), vec![]),
    ];
    s.server.listen = "127.0.0.1:0".into();
    s.server.scheduler = false;
    s.server.shutdown_timeout_secs = 10;
    s.webhooks.max_body_bytes = 4096;
    s.webhooks.retry_secs = 0;
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
    s.webhooks.systems.insert(
        "erp_main".into(),
        WebhookSystem {
            scheme: Scheme::Hmac,
            secrets: vec![ERP_SECRET.into()],
            signature_header: Some("X-Erp-Signature".into()),
            encoding: Encoding::Hex,
            id_header: Some("X-Erp-Event".into()),
            id_pointer: None,
            entity: "customer".into(),
            mode: EventMode::Pull,
            records: "/ids".into(),
            record_id: "/id".into(),
        },
    );
    s
}

struct Daemon {
    running: concord::serve::Running,
    base: String,
    crm: Arc<FakeSystem>,
    erp: Arc<FakeSystem>,
    _dir: tempfile::TempDir,
}

async fn start_with(
    store: &TestStore,
    tweak: impl FnOnce(&mut Settings),
    erp: Arc<FakeSystem>,
) -> Daemon {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    tweak(&mut s);
    let crm = FakeSystem::new("crm_main");
    let connectors: HashMap<String, Arc<dyn Connector>> = HashMap::from([
        ("crm_main".to_owned(), crm.clone() as Arc<dyn Connector>),
        ("erp_main".to_owned(), erp.clone() as Arc<dyn Connector>),
    ]);
    let engine = Engine::with_connectors(s.clone(), store.store.clone(), connectors).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = concord::serve::start(s, Arc::new(engine), listener)
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    Daemon {
        running,
        base,
        crm,
        erp,
        _dir: dir,
    }
}

async fn start(store: &TestStore, tweak: impl FnOnce(&mut Settings)) -> Daemon {
    start_with(store, tweak, FakeSystem::new("erp_main")).await
}

fn now() -> i64 {
    Utc::now().timestamp()
}

/// A signed Standard Webhooks request for crm_main.
fn standard(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    ts: i64,
    body: &str,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}/webhooks/crm_main"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            sign_standard(SECRET, id, ts, body.as_bytes()),
        )
        .body(body.to_owned())
}

fn customer_event(id: &str, name: &str) -> String {
    json!({"type": "customer.updated", "data": {"id": id, "name": name, "email": format!("{id}@example.com")}})
        .to_string()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, body)
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

/// Waits until the event reaches a settled status.
async fn settled(store: &TestStore, key: &str) -> (String, Option<String>) {
    for _ in 0..200 {
        if let Some((status, err)) = store.inbox_status(key).await.unwrap()
            && status != "pending"
            && status != "processing"
        {
            return (status, err);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "event {key} was not processed in time: {:?}",
        store.inbox_status(key).await
    );
}

async fn event_is_stored_acknowledged_and_processed(store: &TestStore) {
    let d = start(store, |_| {}).await;
    let client = reqwest::Client::new();
    let body = customer_event("C1", "Acme GmbH");
    let (status, reply) = send(standard(&client, &d.base, "msg_1", now(), &body)).await;
    assert_eq!((status, reply["status"].as_str()), (202, Some("accepted")));
    // The same event again (a retried delivery): acknowledged, nothing new.
    let (status, reply) = send(standard(&client, &d.base, "msg_1", now(), &body)).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(inbox_total(store).await, 1);

    // The worker takes it in through the job and delivers it to the ERP.
    assert_eq!(
        settled(store, "crm_main:msg_1").await,
        ("processed".into(), None)
    );
    let pushes = d.erp.pushes.lock().unwrap().clone();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].data["customer_name"], "Acme GmbH");
    assert_eq!(pushes[0].data["mail"], "c1@example.com");

    // An event naming records to pull: fetched with `get`, then taken in.
    d.erp.records.lock().unwrap().insert(
        "E7".into(),
        json!({"id": "E7", "customer_name": "Beta AG", "mail": "beta@example.com"}),
    );
    let pull = json!({"ids": ["E7", "E-gone"]}).to_string();
    let (status, _) = send(
        client
            .post(format!("{}/webhooks/erp_main", d.base))
            .header("content-type", "application/json; charset=utf-8")
            .header("x-erp-event", "evt-9")
            .header(
                "x-erp-signature",
                sign_plain(ERP_SECRET, pull.as_bytes(), Encoding::Hex),
            )
            .body(pull.clone()),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        settled(store, "erp_main:evt-9").await,
        ("processed".into(), None)
    );
    let heads = store.status().await.unwrap().records;
    let customers: i64 = heads
        .iter()
        .filter(|r| r.entity == "customer")
        .map(|r| r.count)
        .sum();
    assert_eq!(
        customers, 2,
        "C1 from the CRM event and E7 fetched for the ERP event"
    );

    // An event without what the settings say it holds is dead at once,
    // with the reason; retrying could not help.
    let bad = json!({"type": "customer.updated", "nodata": true}).to_string();
    let (status, _) = send(standard(&client, &d.base, "msg_bad", now(), &bad)).await;
    assert_eq!(status, 202);
    let (status, reason) = settled(store, "crm_main:msg_bad").await;
    assert_eq!(status, "dead");
    assert!(reason.unwrap().contains("\"/data\""));

    d.running.shutdown();
    d.running.wait().await.unwrap();
    assert!(d.crm.pushes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn refused_requests_store_nothing() {
    let store = common::sqlite().await;
    let d = start(&store, |_| {}).await;
    let c = reqwest::Client::new();
    let base = d.base.as_str();
    let body = customer_event("C1", "Acme GmbH");
    let ts = now();

    let mut cases: Vec<(&str, reqwest::RequestBuilder, u16)> = Vec::new();
    // Tampered: the body changed after signing.
    let sig = sign_standard(SECRET, "msg_t", ts, body.as_bytes());
    cases.push((
        "tampered body",
        c.post(format!("{base}/webhooks/crm_main"))
            .header("content-type", "application/json")
            .header("webhook-id", "msg_t")
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", &sig)
            .body(body.replace("Acme", "Evil")),
        401,
    ));
    // Signed by someone else.
    let other = "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB";
    cases.push((
        "wrong key",
        c.post(format!("{base}/webhooks/crm_main"))
            .header("content-type", "application/json")
            .header("webhook-id", "msg_k")
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                sign_standard(other, "msg_k", ts, body.as_bytes()),
            )
            .body(body.clone()),
        401,
    ));
    // Expired and clock-skewed into the future (validly signed).
    cases.push((
        "expired",
        standard(&c, base, "msg_old", ts - 301, &body),
        401,
    ));
    cases.push((
        "future",
        standard(&c, base, "msg_future", ts + 301, &body),
        401,
    ));
    // No signature at all.
    cases.push((
        "unsigned",
        c.post(format!("{base}/webhooks/crm_main"))
            .header("content-type", "application/json")
            .header("webhook-id", "msg_u")
            .header("webhook-timestamp", ts.to_string())
            .body(body.clone()),
        401,
    ));
    // Too large (validly signed).
    let big = json!({"data": {"id": "C2", "name": "x".repeat(5000)}}).to_string();
    cases.push(("too large", standard(&c, base, "msg_big", ts, &big), 413));
    // Unknown system.
    cases.push((
        "unknown system",
        c.post(format!("{base}/webhooks/nobody"))
            .header("content-type", "application/json")
            .body(body.clone()),
        404,
    ));
    // Wrong content type (validly signed).
    cases.push((
        "content type",
        c.post(format!("{base}/webhooks/crm_main"))
            .header("content-type", "text/plain")
            .header("webhook-id", "msg_ct")
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                sign_standard(SECRET, "msg_ct", ts, body.as_bytes()),
            )
            .body(body.clone()),
        415,
    ));

    // Malformed JSON, validly signed.
    cases.push((
        "malformed",
        standard(&c, base, "msg_mal", ts, "{\"data\": "),
        400,
    ));
    // Plain HMAC without the event id header.
    let pull = json!({"ids": ["E1"]}).to_string();
    cases.push((
        "no event id",
        c.post(format!("{base}/webhooks/erp_main"))
            .header("content-type", "application/json")
            .header(
                "x-erp-signature",
                sign_plain(ERP_SECRET, pull.as_bytes(), Encoding::Hex),
            )
            .body(pull.clone()),
        400,
    ));
    // Wrong method.
    cases.push(("method", c.put(format!("{base}/webhooks/crm_main")), 405));

    for (what, req, expected) in cases {
        let (status, reply) = send(req).await;
        assert_eq!(status, expected, "{what}: {reply}");
        let code = reply["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {reply}"));
        assert!(!code.is_empty());
        let text = reply.to_string().to_lowercase();
        for secret_word in [
            "sqlite", "sqlx", "panic", "whsec", "erp-hmac", "stack", "/tmp",
        ] {
            assert!(
                !text.contains(secret_word),
                "{what} reveals {secret_word}: {text}"
            );
        }
    }
    assert_eq!(
        inbox_total(&store).await,
        0,
        "nothing stored for refused requests"
    );

    // Replayed: the accepted request sent again is a duplicate (within the
    // window) and stores nothing new; later it is refused as stale.
    let (status, _) = send(standard(&c, base, "msg_r", ts, &body)).await;
    assert_eq!(status, 202);
    let (status, reply) = send(standard(&c, base, "msg_r", ts, &body)).await;
    assert_eq!((status, reply["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(inbox_total(&store).await, 1);

    d.running.shutdown();
    d.running.wait().await.unwrap();
    store.cleanup().await;
}

async fn burst_every_acknowledged_event_is_durable(store: &TestStore) {
    // Workers off: only intake is exercised, and every row stays visible.
    let d = start(store, |s| s.server.workers = 0).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = JoinSet::new();
    for conn in 0..64 {
        let client = client.clone();
        let base = d.base.clone();
        let acked = acked.clone();
        tasks.spawn(async move {
            for n in 0..1000 {
                let id = format!("msg_{conn}_{n}");
                let body = customer_event(&id, "Burst");
                let Ok(resp) = standard(&client, &base, &id, now(), &body).send().await else {
                    break; // the server went away
                };
                if resp.status().is_success() {
                    acked.lock().unwrap().push(id);
                } else if resp.status().as_u16() != 503 {
                    panic!("unexpected {}", resp.status());
                }
            }
        });
    }
    // Stop the server in the middle of the burst.
    tokio::time::sleep(Duration::from_millis(700)).await;
    d.running.shutdown();
    d.running.wait().await.unwrap();
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 64,
        "the burst got going: {} acknowledged",
        acked.len()
    );
    let mut missing = Vec::new();
    for id in &acked {
        if store
            .inbox_status(&format!("crm_main:{id}"))
            .await
            .unwrap()
            .is_none()
        {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    // Nothing stored twice, nothing beyond what was sent.
    assert!(inbox_total(store).await >= acked.len() as i64);
    eprintln!("burst: {} events acknowledged, all stored", acked.len());
}

#[tokio::test]
async fn graceful_shutdown_finishes_work_in_flight() {
    let store = common::sqlite().await;
    let erp = Arc::new(FakeSystem {
        get_delay: Duration::from_millis(1500),
        ..Arc::into_inner(FakeSystem::new("erp_main")).unwrap()
    });
    erp.records.lock().unwrap().insert(
        "E1".into(),
        json!({"id": "E1", "customer_name": "Slow GmbH", "mail": "slow@example.com"}),
    );
    let d = start_with(&store, |_| {}, erp).await;
    let pull = json!({"ids": ["E1"]}).to_string();
    let c = reqwest::Client::new();
    let (status, _) = send(
        c.post(format!("{}/webhooks/erp_main", d.base))
            .header("content-type", "application/json")
            .header("x-erp-event", "slow-1")
            .header(
                "x-erp-signature",
                sign_plain(ERP_SECRET, pull.as_bytes(), Encoding::Hex),
            )
            .body(pull),
    )
    .await;
    assert_eq!(status, 202);
    // Wait until the worker is inside the slow fetch, then stop.
    for _ in 0..100 {
        if store
            .inbox_status("erp_main:slow-1")
            .await
            .unwrap()
            .unwrap()
            .0
            == "processing"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.running.shutdown();
    d.running.wait().await.unwrap();
    assert_eq!(
        store
            .inbox_status("erp_main:slow-1")
            .await
            .unwrap()
            .unwrap()
            .0,
        "processed",
        "work in flight finished before exit"
    );
    store.cleanup().await;
}

#[tokio::test]
async fn shutdown_deadline_gives_work_back() {
    let store = common::sqlite().await;
    let erp = Arc::new(FakeSystem {
        get_delay: Duration::from_secs(30),
        ..Arc::into_inner(FakeSystem::new("erp_main")).unwrap()
    });
    let d = start_with(&store, |s| s.server.shutdown_timeout_secs = 1, erp).await;
    let pull = json!({"ids": ["E1"]}).to_string();
    let c = reqwest::Client::new();
    let (status, _) = send(
        c.post(format!("{}/webhooks/erp_main", d.base))
            .header("content-type", "application/json")
            .header("x-erp-event", "stuck-1")
            .header(
                "x-erp-signature",
                sign_plain(ERP_SECRET, pull.as_bytes(), Encoding::Hex),
            )
            .body(pull),
    )
    .await;
    assert_eq!(status, 202);
    for _ in 0..100 {
        if store
            .inbox_status("erp_main:stuck-1")
            .await
            .unwrap()
            .unwrap()
            .0
            == "processing"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    d.running.shutdown();
    d.running.wait().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the timeout"
    );
    // Not lost: pending again, for the next start to take up.
    let claims = store.inbox_claim("next", 10, 1000).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].idempotency_key, "erp_main:stuck-1");
    assert_eq!(
        claims[0].attempts, 1,
        "the interrupted attempt is not counted"
    );
    store.cleanup().await;
}

#[tokio::test]
async fn failing_fetches_are_retried_then_dead() {
    let store = common::sqlite().await;
    let erp = FakeSystem::new("erp_main");
    *erp.get_failures.lock().unwrap() = 100;
    let d = start_with(&store, |s| s.webhooks.max_attempts = 3, erp.clone()).await;
    let pull = json!({"ids": ["E1"]}).to_string();
    let c = reqwest::Client::new();
    let (status, _) = send(
        c.post(format!("{}/webhooks/erp_main", d.base))
            .header("content-type", "application/json")
            .header("x-erp-event", "fail-1")
            .header(
                "x-erp-signature",
                sign_plain(ERP_SECRET, pull.as_bytes(), Encoding::Hex),
            )
            .body(pull),
    )
    .await;
    assert_eq!(status, 202);
    let (status, reason) = settled(&store, "erp_main:fail-1").await;
    assert_eq!(status, "dead");
    assert!(reason.unwrap().contains("HTTP 503"));
    assert_eq!(
        *erp.get_failures.lock().unwrap(),
        97,
        "three attempts, then no more"
    );
    d.running.shutdown();
    d.running.wait().await.unwrap();
    store.cleanup().await;
}

type Fired = Arc<Mutex<Vec<(String, DateTime<Utc>)>>>;

fn recorder(fired: &Fired, owner: &str, takes: Duration) -> RunJob {
    let fired = fired.clone();
    let owner = owner.to_owned();
    Arc::new(move |_job, due| {
        let fired = fired.clone();
        let owner = owner.clone();
        Box::pin(async move {
            fired.lock().unwrap().push((owner, due));
            tokio::time::sleep(takes).await;
            Ok(())
        })
    })
}

fn every_second(store: &TestStore, owner: &str, fired: &Fired, takes: Duration) -> Scheduler {
    let jobs = vec![JobSettings {
        schedule: Some("* * * * * *".into()),
        ..job("tick", endpoint("crm_main", "crm-customer-in"), vec![])
    }];
    Scheduler {
        store: store.store.clone(),
        jobs: concord::serve::scheduler::plan(&jobs).unwrap(),
        owner: owner.into(),
        lease: Duration::from_secs(30),
        poll: Duration::from_millis(100),
        run: recorder(fired, owner, takes),
    }
}

async fn two_schedulers_fire_once_per_tick(store: &TestStore) {
    let fired: Fired = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let a = tokio::spawn(every_second(store, "a", &fired, Duration::ZERO).run(stopped.clone()));
    let b = tokio::spawn(every_second(store, "b", &fired, Duration::ZERO).run(stopped));
    tokio::time::sleep(Duration::from_millis(4300)).await;
    stop.send(true).unwrap();
    a.await.unwrap();
    b.await.unwrap();
    let fired = fired.lock().unwrap().clone();
    let ticks: BTreeSet<DateTime<Utc>> = fired.iter().map(|(_, t)| *t).collect();
    assert_eq!(
        ticks.len(),
        fired.len(),
        "an occurrence fired twice: {fired:?}"
    );
    assert!(fired.len() >= 3, "about one run per second: {fired:?}");
    let owners: BTreeSet<&str> = fired.iter().map(|(o, _)| o.as_str()).collect();
    eprintln!("fired {} ticks, by {owners:?}", fired.len());
}

async fn missed_runs_collapse_to_one_and_runs_never_overlap(store: &TestStore) {
    let fired: Fired = Arc::default();
    let s = every_second(store, "a", &fired, Duration::from_millis(2500));
    let now = Utc::now();
    // Down for an hour: 3600 occurrences missed.
    store
        .schedule_set_last_fire(
            "tick",
            (now - chrono::Duration::hours(1)).timestamp_millis(),
        )
        .await
        .unwrap();
    let mut running = JoinSet::new();
    s.tick(now, &mut running).await;
    // Ticks during the 2.5 s run start nothing: the job holds its lease.
    for i in 1..=2 {
        s.tick(now + chrono::Duration::seconds(i), &mut running)
            .await;
    }
    assert_eq!(running.len(), 1, "one run for the missed hour");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fired.lock().unwrap().len(), 1);
    let first = fired.lock().unwrap()[0].1;
    assert!(
        first <= now && now - first < chrono::Duration::seconds(1),
        "the latest occurrence"
    );
    while running.join_next().await.is_some() {}
    // After the run, the next tick catches up once.
    s.tick(Utc::now(), &mut running).await;
    while running.join_next().await.is_some() {}
    assert_eq!(fired.lock().unwrap().len(), 2);
}

#[test]
fn serve_binary_starts_answers_health_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}\"\n[server]\nlisten = \"127.0.0.1:1\"\n",
            dir.path().join("c.db").display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .current_dir(dir.path())
        .args(["serve", "--config"])
        .arg(&config)
        // The environment overrides the file.
        .env("CONCORD__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (health, ready) = rt.block_on(async {
        let c = reqwest::Client::new();
        let mut health = None;
        for _ in 0..200 {
            if let Ok(r) = c
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .send()
                .await
            {
                health = Some(r.status().as_u16());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ready = c
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .unwrap();
        let status = ready.status().as_u16();
        let body: Value = serde_json::from_str(&ready.text().await.unwrap()).unwrap();
        (health, (status, body))
    });
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(health, Some(200), "{stderr}");
    assert_eq!(ready.0, 200, "{stderr}");
    assert_eq!(ready.1["checks"]["store"], "ok");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
