//! `concord serve` with `[queue] kind = "amqp"`: webhook events are
//! published to RabbitMQ (answered after the broker's confirm) and consumed
//! by the inbox workers, each applied once (its work id marked done in the
//! same transaction as its records).
//!
//! Needs `CONCORD_TEST_AMQP_URL` (and `CONCORD_TEST_DATABASE_URL` for the
//! two-instance test); without them the tests are skipped with the reason
//! printed, and under `CI=true` they fail instead.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use common::TestStore;
use concord::connector::{
    Capabilities, Change, Connector, ConnectorError, PageStream, PushOutcome, RawRecord,
};
use concord::model::{EntityKind, ExternalId};
use concord::queue::{AmqpQueue, Queue, QueueKind, QueueSettings};
use concord::serve::settings::{Encoding, EventMode, Scheme, WebhookSystem};
use concord::serve::verify::{sign_plain, sign_standard};
use concord::settings::{Settings, SystemSettings};
use concord::sync::{Endpoint, Engine, JobSettings};
use futures_util::StreamExt;
use serde_json::{Value, json};

const AMQP_VAR: &str = "CONCORD_TEST_AMQP_URL";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ERP_SECRET: &str = "erp-hmac-key";

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The broker's URL, or `None` (with the reason printed) outside CI.
fn broker() -> Option<String> {
    match std::env::var(AMQP_VAR) {
        Ok(url) => Some(url),
        Err(_) if in_ci() => {
            panic!("{AMQP_VAR} must be set in CI: the serve-over-RabbitMQ tests may not be skipped")
        }
        Err(_) => {
            eprintln!(
                "skipped: {AMQP_VAR} is not set, so the serve-over-RabbitMQ tests did not run"
            );
            None
        }
    }
}

/// A system that answers `get` from a map (counting calls) and records
/// pushes.
struct FakeSystem {
    name: String,
    records: Mutex<HashMap<String, Value>>,
    pushes: Mutex<Vec<Change>>,
    gets: AtomicUsize,
    get_delay: Duration,
}

impl FakeSystem {
    fn new(name: &str, get_delay: Duration) -> Arc<FakeSystem> {
        Arc::new(FakeSystem {
            name: name.into(),
            records: Mutex::new(HashMap::new()),
            pushes: Mutex::new(Vec::new()),
            gets: AtomicUsize::new(0),
            get_delay,
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
        self.gets.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.get_delay).await;
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
                external_id: ExternalId::parse(&format!("E-{}-{}", self.name, pushes.len()))
                    .unwrap(),
            });
        }
        Ok(out)
    }
}

fn write_mappings(dir: &Path) {
    for (file, text) in [
        (
            "crm-in.toml",
            "[mapping]\nname = \"crm-customer-in\"\nversion = 1\nsystem = \"crm\"\nentity = \"customer\"\ndirection = \"in\"\n[fields]\nname = { from = \"name\", required = true }\nemail = { from = \"email\", pipe = [\"trim\", \"lower\"] }\n",
        ),
        (
            "erp-out.toml",
            "[mapping]\nname = \"erp-customer-out\"\nversion = 1\nsystem = \"erp\"\nentity = \"customer\"\ndirection = \"out\"\n[fields]\ncustomer_name = { from = \"name\" }\nmail = { from = \"email\" }\n",
        ),
        (
            "erp-in.toml",
            "[mapping]\nname = \"erp-customer-in\"\nversion = 1\nsystem = \"erp\"\nentity = \"customer\"\ndirection = \"in\"\n[fields]\nname = { from = \"customer_name\", required = true }\nemail = { from = \"mail\" }\n",
        ),
    ] {
        std::fs::write(dir.join(file), text).unwrap();
    }
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

/// crm_main pushes Standard Webhooks whose payload is the record (taken in
/// and delivered to erp_main); erp_main pushes HMAC events naming ids to
/// fetch. Both go through the broker queue `queue`.
fn settings(dir: &Path, url: &str, queue: &str, workers: usize) -> Settings {
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
    s.server.workers = workers;
    s.server.claim_batch = 1;
    s.server.shutdown_timeout_secs = 10;
    s.webhooks.max_body_bytes = 4096;
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
    s.queue = QueueSettings {
        kind: QueueKind::Amqp,
        url: Some(url.into()),
        name: queue.to_owned(),
        prefetch: 1,
        lease_secs: 30,
        max_attempts: 3,
        retry_initial_ms: 50,
        retry_max_secs: 1,
        receive_wait_ms: 200,
        ..QueueSettings::default()
    };
    s
}

struct Daemon {
    running: concord::serve::Running,
    base: String,
    erp: Arc<FakeSystem>,
    _dir: tempfile::TempDir,
}

async fn start(store: &TestStore, url: &str, queue: &str, workers: usize) -> Daemon {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), url, queue, workers);
    let crm = FakeSystem::new("crm_main", Duration::ZERO);
    let erp = FakeSystem::new("erp_main", Duration::from_millis(10));
    let connectors: HashMap<String, Arc<dyn Connector>> = HashMap::from([
        ("crm_main".to_owned(), crm as Arc<dyn Connector>),
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
        erp,
        _dir: dir,
    }
}

fn queue_name() -> String {
    format!("concord-test-serve-{}", uuid::Uuid::now_v7().simple())
}

/// A queue handle of the test's own, to look at dead letters.
async fn observer(url: &str, queue: &str, store: &TestStore) -> AmqpQueue {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), url, queue, 1).queue;
    AmqpQueue::connect(s, store.store.clone()).await.unwrap()
}

fn standard(client: &reqwest::Client, base: &str, id: &str, body: &str) -> reqwest::RequestBuilder {
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
        .body(body.to_owned())
}

fn erp_event(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    body: &str,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}/webhooks/erp_main"))
        .header("content-type", "application/json")
        .header("x-erp-event", id)
        .header(
            "x-erp-signature",
            sign_plain(ERP_SECRET, body.as_bytes(), Encoding::Hex),
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

/// Waits until every work id in `ids` is marked done.
async fn all_done(store: &TestStore, ids: &[String]) {
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for _ in 0..400 {
        if store.work_done_among(&refs).await.unwrap().len() == ids.len() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = store.work_done_among(&refs).await.unwrap().len();
    panic!("only {done} of {} events were applied in time", ids.len());
}

async fn customers(store: &TestStore) -> i64 {
    store
        .status()
        .await
        .unwrap()
        .records
        .iter()
        .filter(|r| r.entity == "customer")
        .map(|r| r.count)
        .sum()
}

/// The versions of the customer `system` knows as `external_id`.
async fn versions(store: &TestStore, system: &str, external_id: &str) -> Vec<Value> {
    let link = store
        .find_link(EntityKind::Customer, system, external_id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{system} {external_id} was not taken in"));
    store
        .history(EntityKind::Customer, &link.canonical_id)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.data)
        .collect()
}

#[tokio::test]
async fn events_through_the_broker_are_applied_once() {
    let Some(url) = broker() else { return };
    let store = common::sqlite().await;
    let queue = queue_name();
    // One worker: events are taken in the order they were published.
    let d = start(&store, &url, &queue, 1).await;
    let client = reqwest::Client::new();

    let (status, reply) = send(standard(
        &client,
        &d.base,
        "msg_1",
        &customer_event("C1", "Acme GmbH"),
    ))
    .await;
    assert_eq!((status, reply["status"].as_str()), (202, Some("accepted")));
    // The same event id again, with another body: the broker cannot tell,
    // so it is accepted, and skipped when consumed.
    let (status, reply) = send(standard(
        &client,
        &d.base,
        "msg_1",
        &customer_event("C1", "Changed Name"),
    ))
    .await;
    assert_eq!((status, reply["status"].as_str()), (202, Some("accepted")));
    let (status, _) = send(standard(
        &client,
        &d.base,
        "msg_2",
        &customer_event("C2", "Beta AG"),
    ))
    .await;
    assert_eq!(status, 202);
    // Not what the settings say the event holds: dead at once, with why.
    let bad = json!({"type": "customer.updated", "nodata": true}).to_string();
    let (status, _) = send(standard(&client, &d.base, "msg_bad", &bad)).await;
    assert_eq!(status, 202);

    all_done(
        &store,
        &[
            "webhook:crm_main:msg_1".into(),
            "webhook:crm_main:msg_2".into(),
        ],
    )
    .await;
    // The bad event was published last: once it is in dead letters, the
    // duplicate before it has been consumed too.
    let watch = observer(&url, &queue, &store).await;
    let mut dead = Vec::new();
    for _ in 0..200 {
        dead = watch.dead_letters(10).await.unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "webhook:crm_main:msg_bad");
    assert!(dead[0].1.contains("\"/data\""), "{}", dead[0].1);

    assert_eq!(customers(&store).await, 2);
    let c1 = versions(&store, "crm_main", "C1").await;
    assert_eq!(c1.len(), 1, "one version of C1: {c1:?}");
    assert_eq!(c1[0]["name"], "Acme GmbH");
    assert_eq!(versions(&store, "crm_main", "C2").await.len(), 1);
    // Delivered to the ERP once each.
    let pushed: Vec<String> = d
        .erp
        .pushes
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.data["customer_name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(pushed.len(), 2, "{pushed:?}");
    assert!(pushed.contains(&"Acme GmbH".to_owned()), "{pushed:?}");
    assert_eq!(watch.depth().await.unwrap(), 0);

    // Ready: the store and the broker answer.
    let (status, ready) = send(client.get(format!("{}/readyz", d.base))).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["broker"], "ok");
    assert_eq!(ready["checks"]["store"], "ok");

    d.running.shutdown();
    d.running.wait().await.unwrap();
    watch.close().await;
    store.cleanup().await;
}

#[tokio::test]
async fn two_daemons_share_the_broker_and_apply_each_event_once() {
    let Some(url) = broker() else { return };
    let Some(store) = common::postgres().await else {
        return;
    };
    let queue = queue_name();
    let a = start(&store, &url, &queue, 2).await;
    let b = start(&store, &url, &queue, 2).await;
    const EVENTS: usize = 40;
    for d in [&a, &b] {
        let mut records = d.erp.records.lock().unwrap();
        for i in 0..EVENTS {
            for p in ["E", "X"] {
                records.insert(
                    format!("{p}{i}"),
                    json!({"id": format!("{p}{i}"), "customer_name": format!("Customer {p}{i}"), "mail": format!("{p}{i}@example.com")}),
                );
            }
        }
    }
    // Let both instances subscribe before the events arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = reqwest::Client::new();
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..EVENTS {
        // Each event id is sent to both instances, the copies naming
        // different records (E… and X…): were both copies applied, both
        // records would exist.
        for (base, p) in [(&a.base, "E"), (&b.base, "X")] {
            let body = json!({"ids": [format!("{p}{i}")]}).to_string();
            let req = erp_event(&client, base, &format!("evt-{i}"), &body);
            posts.spawn(send(req));
        }
    }
    let mut accepted = 0;
    while let Some(r) = posts.join_next().await {
        let (status, reply) = r.unwrap();
        assert_eq!(status, 202, "{reply}");
        accepted += 1;
    }
    assert_eq!(accepted, 2 * EVENTS);

    let ids: Vec<String> = (0..EVENTS)
        .map(|i| format!("webhook:erp_main:evt-{i}"))
        .collect();
    all_done(&store, &ids).await;
    // Let the copies still queued drain.
    let watch = observer(&url, &queue, &store).await;
    for _ in 0..200 {
        if watch.depth().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.running.shutdown();
    b.running.shutdown();
    a.running.wait().await.unwrap();
    b.running.wait().await.unwrap();

    assert_eq!(watch.depth().await.unwrap(), 0);
    assert!(watch.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(customers(&store).await, EVENTS as i64);
    for i in 0..EVENTS {
        let mut taken = Vec::new();
        for p in ["E", "X"] {
            let id = format!("{p}{i}");
            if store
                .find_link(EntityKind::Customer, "erp_main", &id)
                .await
                .unwrap()
                .is_some()
            {
                let v = versions(&store, "erp_main", &id).await;
                assert_eq!(v.len(), 1, "{id}: {v:?}");
                taken.push(id);
            }
        }
        assert_eq!(taken.len(), 1, "evt-{i} applied once: {taken:?}");
    }
    // Both instances did work.
    let (ga, gb) = (
        a.erp.gets.load(Ordering::SeqCst),
        b.erp.gets.load(Ordering::SeqCst),
    );
    eprintln!("fetches: instance a {ga}, instance b {gb}, events {EVENTS}");
    assert!(ga > 0 && gb > 0, "the work was not shared: a {ga}, b {gb}");
    assert!(ga + gb >= EVENTS, "a {ga} + b {gb} < {EVENTS}");
    watch.close().await;
    store.cleanup().await;
}
