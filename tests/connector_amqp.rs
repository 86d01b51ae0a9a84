//! The `amqp` driver against a real RabbitMQ (`CONCORD_TEST_AMQP_URL`,
//! e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`). Without it the tests
//! skip with the reason printed; under `CI=true` they fail instead.
//!
//! Every test uses queues and exchanges with fresh names and deletes them
//! when it ends. Broker faults are staged through a TCP proxy between the
//! connector and the broker.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use concord::connector::conformance::{self, Fault, Harness, Seed};
use concord::connector::{
    Change, Connector, ErrorKind, Instance, Notice, Page, PushOutcome, check_file,
};
use concord::model::ExternalId;
use concord::settings::{Settings, SystemSettings};
use concord::sync::{Endpoint, Engine, JobSettings, RunOptions};
use futures_util::StreamExt;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;

const URL_VAR: &str = "CONCORD_TEST_AMQP_URL";

/// The broker's URL, or `None` (with the reason printed) outside CI.
fn broker() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{URL_VAR} must be set in CI: the RabbitMQ tests may not be skipped")
        }
        Err(_) => {
            eprintln!("skipped: {URL_VAR} is not set, so the RabbitMQ tests did not run");
            None
        }
    }
}

fn unique(what: &str) -> String {
    format!("concord-test-{what}-{}", uuid::Uuid::now_v7().simple())
}

/// Queues and exchanges a test made; deleted when it ends, even when it
/// fails.
struct Topology {
    url: String,
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let url = self.url.clone();
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        // A thread with its own runtime: drop runs inside the test's.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await
                else {
                    return;
                };
                for q in queues {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                for x in exchanges {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                            .await;
                    }
                }
                let _ = conn.close(200, "OK".into()).await;
            });
        })
        .join();
    }
}

/// A test's own connection to the broker, to publish and inspect.
struct Admin {
    _conn: Connection,
    ch: Channel,
}

impl Admin {
    async fn new(url: &str) -> Admin {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("the test broker accepts connections");
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Admin { _conn: conn, ch }
    }

    /// Publishes to a queue through the default exchange, confirmed.
    async fn send(&self, queue: &str, body: &[u8], props: BasicProperties) {
        let confirm = self
            .ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                props.with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    async fn send_json(&self, queue: &str, body: &Value) {
        self.send(
            queue,
            &serde_json::to_vec(body).unwrap(),
            BasicProperties::default(),
        )
        .await;
    }

    /// Takes every message from a queue.
    async fn take_all(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        let mut out = Vec::new();
        while let Some(m) = self
            .ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            out.push(m.delivery);
        }
        out
    }

    async fn count(&self, queue: &str) -> u32 {
        self.ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    /// Waits until `exchange` routes `key` to `queue`: a binding is in
    /// place when its `queue_bind` answers, but the broker has been seen to
    /// return a publish on another connection as unroutable just after.
    /// Probes with mandatory publishes until one is routed, then purges it.
    async fn wait_routed(&self, exchange: &str, key: &str, queue: &str) {
        for _ in 0..100 {
            let confirm = self
                .ch
                .basic_publish(
                    exchange.into(),
                    key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    b"probe",
                    BasicProperties::default(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            if confirm.take_message().is_none() {
                self.purge(queue).await;
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("{exchange} does not route {key} to {queue} after 100 probes");
    }

    async fn purge(&self, queue: &str) {
        self.ch
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await
            .unwrap();
    }
}

fn header(d: &lapin::message::Delivery, name: &str) -> Option<String> {
    match d.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Opens a connector from a definition file, with `url` as `${amqp_url}`.
fn open(url: &str, body: &str) -> Arc<dyn Connector> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bus_test.toml");
    std::fs::write(
        &file,
        format!("name = \"bus_test\"\ndriver = \"amqp\"\nurl = \"${{amqp_url}}\"\n{body}"),
    )
    .unwrap();
    let def = check_file(&file).unwrap_or_else(|e| panic!("{e:?}"));
    let instance = Instance::bare("bus_test").with_var("amqp_url", url);
    (def.driver.open)(&def, &instance).unwrap()
}

/// A queue entity definition.
fn queue_entity(queue: &str, dlx: &str, extra: &str) -> String {
    format!(
        "[entities.invoice]\nqueue = \"{queue}\"\ndead_letter_exchange = \"{dlx}\"\nid = \"/id\"\nupdated_at = \"/updated_at\"\npage_size = 4\nprefetch = 8\nmax_wait_ms = 300\n{extra}"
    )
}

async fn drain(c: &dyn Connector, entity: &str) -> Vec<Page> {
    let mut stream = c.pull(entity, None);
    let mut pages = Vec::new();
    while let Some(page) = stream.next().await {
        let mut page = page.unwrap_or_else(|e| panic!("page {}: {e}", pages.len() + 1));
        page.ack.take().unwrap().ack().await.unwrap();
        pages.push(page);
    }
    pages
}

fn ids(pages: &[Page]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| &p.records)
        .map(|r| r.external_id.to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// A TCP proxy between connector and broker, to stage faults

const PASS: u8 = 0;
/// Accept, then close at once.
const DROP: u8 = 1;
/// Forward, with the password in the login altered: the broker refuses it.
const WRONG_PASSWORD: u8 = 2;
/// Accept and never answer.
const SILENT: u8 = 3;

struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    /// Bumped to cut every connection through the proxy.
    generation: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    async fn start(broker: &url::Url) -> Proxy {
        let upstream = format!(
            "{}:{}",
            broker.host_str().unwrap_or("127.0.0.1"),
            broker.port().unwrap_or(5672)
        );
        let password = broker.password().unwrap_or("guest").to_owned();
        let user = broker.username().to_owned();
        // The PLAIN login the client sends: \0user\0password.
        let login: Vec<u8> = [b"\0", user.as_bytes(), b"\0", password.as_bytes()].concat();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let task = {
            let mode = mode.clone();
            let generation = generation.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let m = mode.load(Ordering::SeqCst);
                    let cut = generation.subscribe();
                    let upstream = upstream.clone();
                    let login = login.clone();
                    tokio::spawn(serve(client, m, cut, upstream, login));
                }
            })
        };
        Proxy {
            port,
            mode,
            generation,
            task,
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn url(&self, broker: &url::Url) -> String {
        let mut u = broker.clone();
        u.set_host(Some("127.0.0.1")).unwrap();
        u.set_port(Some(self.port)).unwrap();
        u.to_string()
    }
}

async fn serve(
    mut client: TcpStream,
    mode: u8,
    mut cut: tokio::sync::watch::Receiver<u64>,
    upstream: String,
    login: Vec<u8>,
) {
    match mode {
        DROP => {}
        SILENT => {
            let mut sink = [0u8; 1024];
            loop {
                tokio::select! {
                    _ = cut.changed() => return,
                    n = client.read(&mut sink) => if matches!(n, Ok(0) | Err(_)) { return },
                }
            }
        }
        _ => {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let chunk = &mut buf[..n];
                    if mode == WRONG_PASSWORD
                        && let Some(at) = chunk.windows(login.len()).position(|w| w == login)
                    {
                        let last = at + login.len() - 1;
                        chunk[last] = if chunk[last] == b'x' { b'y' } else { b'x' };
                    }
                    if sw.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            };
            let down = async {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            };
            tokio::select! {
                _ = up => {}
                _ = down => {}
                _ = cut.changed() => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The conformance kit: a queue behind the proxy

struct QueueHarness {
    connector: Arc<dyn Connector>,
    admin: Admin,
    queue: String,
    proxy: Proxy,
    _topology: Topology,
}

impl QueueHarness {
    async fn new(url: &str) -> QueueHarness {
        let broker: url::Url = url.parse().unwrap();
        let proxy = Proxy::start(&broker).await;
        let queue = unique("q");
        let dlx = unique("dlx");
        let connector = open(
            &proxy.url(&broker),
            &format!(
                "connect_timeout_ms = 1500\n{}",
                queue_entity(&queue, &dlx, "")
            ),
        );
        let topology = Topology {
            url: url.to_owned(),
            queues: vec![queue.clone(), format!("{queue}.dead")],
            exchanges: vec![dlx],
        };
        connector.healthcheck().await.unwrap();
        QueueHarness {
            connector,
            admin: Admin::new(url).await,
            queue,
            proxy,
            _topology: topology,
        }
    }

    async fn publish(&self, records: &[Seed]) {
        for s in records {
            self.admin
                .send_json(
                    &self.queue,
                    &json!({"id": s.id, "updated_at": s.updated_at.to_rfc3339(), "name": s.name}),
                )
                .await;
        }
    }
}

#[async_trait]
impl Harness for QueueHarness {
    fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }
    fn entity(&self) -> &str {
        "invoice"
    }
    fn page_size(&self) -> usize {
        4
    }
    async fn seed(&self, records: &[Seed]) -> anyhow::Result<()> {
        self.admin.purge(&self.queue).await;
        self.publish(records).await;
        Ok(())
    }
    async fn upsert(&self, records: &[Seed]) -> anyhow::Result<()> {
        self.publish(records).await;
        Ok(())
    }
    async fn inject(&self, fault: Fault) -> anyhow::Result<bool> {
        let mode = match fault {
            Fault::Unauthorized => WRONG_PASSWORD,
            Fault::Unavailable => DROP,
            Fault::Timeout => SILENT,
            // A broker has no rate limits to hit, and malformed messages
            // are dead-lettered rather than failing the pull (tested below).
            Fault::RateLimited { .. } | Fault::Malformed => return Ok(false),
        };
        self.proxy.set(mode);
        Ok(true)
    }
    async fn heal(&self) -> anyhow::Result<()> {
        self.proxy.set(PASS);
        Ok(())
    }
}

#[tokio::test]
async fn conformance_pull_pages() {
    let Some(url) = broker() else { return };
    let h = QueueHarness::new(&url).await;
    conformance::pull_pages(&h).await.unwrap();
}

#[tokio::test]
async fn conformance_redeliver_unacked() {
    let Some(url) = broker() else { return };
    let h = QueueHarness::new(&url).await;
    conformance::redeliver_unacked(&h).await.unwrap();
}

#[tokio::test]
async fn conformance_classify_errors() {
    let Some(url) = broker() else { return };
    let h = QueueHarness::new(&url).await;
    let tested = conformance::classify_errors(&h).await.unwrap();
    assert_eq!(
        tested,
        [Fault::Unauthorized, Fault::Unavailable, Fault::Timeout]
    );
    // Healed, the same connector reads again over a new connection.
    let pages = drain(h.connector.as_ref(), "invoice").await;
    assert_eq!(ids(&pages).len(), 8);
}

// ---------------------------------------------------------------------------
// The conformance kit: an exchange
//
// A broker cannot recognise a message published twice; idempotency for a
// queue sink means every message carries its change's idempotency key as
// `message_id` (and the record's id in `concord-external-id`) so that
// consumers de-duplicate. `stored` therefore plays such a consumer: it
// reads the queue bound to the exchange, skips message ids it has seen,
// and keeps the latest body per record id. The test after the kit checks
// that the broker did carry the repeated message.

struct ExchangeHarness {
    connector: Arc<dyn Connector>,
    admin: Admin,
    queue: String,
    seen: Mutex<(BTreeSet<String>, BTreeMap<String, Value>)>,
    _topology: Topology,
}

impl ExchangeHarness {
    async fn new(url: &str) -> ExchangeHarness {
        let exchange = unique("x");
        let queue = unique("bound");
        let connector = open(
            url,
            &format!(
                "[entities.customer]\nexchange = \"{exchange}\"\nrouting_key = \"customer.{{/name}}\"\n"
            ),
        );
        let topology = Topology {
            url: url.to_owned(),
            queues: vec![queue.clone()],
            exchanges: vec![exchange.clone()],
        };
        connector.healthcheck().await.unwrap();
        let admin = Admin::new(url).await;
        admin
            .ch
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        admin
            .ch
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "customer.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        admin.wait_routed(&exchange, "customer.probe", &queue).await;
        ExchangeHarness {
            connector,
            admin,
            queue,
            seen: Mutex::new(Default::default()),
            _topology: topology,
        }
    }
}

#[async_trait]
impl Harness for ExchangeHarness {
    fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }
    fn entity(&self) -> &str {
        "customer"
    }
    fn page_size(&self) -> usize {
        4
    }
    async fn seed(&self, records: &[Seed]) -> anyhow::Result<()> {
        anyhow::ensure!(records.is_empty(), "an exchange holds no records to seed");
        self.admin.purge(&self.queue).await;
        *self.seen.lock().unwrap() = Default::default();
        Ok(())
    }
    async fn upsert(&self, _: &[Seed]) -> anyhow::Result<()> {
        anyhow::bail!("an exchange holds no records to change")
    }
    async fn stored(&self) -> anyhow::Result<BTreeMap<String, Value>> {
        let messages = self.admin.take_all(&self.queue).await;
        let mut seen = self.seen.lock().unwrap();
        for m in messages {
            let key = m
                .properties
                .message_id()
                .as_ref()
                .context("a pushed message without message_id")?
                .to_string();
            if !seen.0.insert(key) {
                continue;
            }
            let id = header(&m, "concord-external-id").context("no concord-external-id")?;
            seen.1.insert(id, serde_json::from_slice(&m.data)?);
        }
        Ok(seen.1.clone())
    }
}

#[tokio::test]
async fn conformance_idempotent_push() {
    let Some(url) = broker() else { return };
    let h = ExchangeHarness::new(&url).await;
    conformance::idempotent_push(&h).await.unwrap();
}

#[tokio::test]
async fn a_repeated_push_reaches_the_queue_again_with_the_same_message_id() {
    let Some(url) = broker() else { return };
    let h = ExchangeHarness::new(&url).await;
    let change = Change {
        idempotency_key: "customer:c9:1:bus".into(),
        external_id: None,
        data: json!({"name": "acme"}),
    };
    for _ in 0..2 {
        let out = h
            .connector
            .push("customer", vec![change.clone()])
            .await
            .unwrap();
        assert_eq!(
            out,
            [PushOutcome::Created {
                external_id: ExternalId::parse("customer:c9:1:bus").unwrap()
            }]
        );
    }
    let got = h.admin.take_all(&h.queue).await;
    assert_eq!(got.len(), 2, "the broker does not de-duplicate");
    for m in &got {
        assert_eq!(
            m.properties.message_id().as_ref().map(|s| s.as_str()),
            Some("customer:c9:1:bus")
        );
        assert_eq!(m.routing_key.as_str(), "customer.acme");
        assert_eq!(
            m.properties.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(*m.properties.delivery_mode(), Some(2), "persistent");
        assert_eq!(m.data, br#"{"name":"acme"}"#);
    }
}

// ---------------------------------------------------------------------------
// Pushing

#[tokio::test]
async fn pushes_are_created_only_when_routed_and_confirmed() {
    let Some(url) = broker() else { return };
    let exchange = unique("x");
    let paid = unique("paid");
    let _t = Topology {
        url: url.clone(),
        queues: vec![paid.clone()],
        exchanges: vec![exchange.clone()],
    };
    let c = open(
        &url,
        &format!(
            "[entities.invoice]\nexchange = \"{exchange}\"\nrouting_key = \"invoice.{{/status}}\"\nid = \"/number\"\n"
        ),
    );
    c.healthcheck().await.unwrap();
    let admin = Admin::new(&url).await;
    admin
        .ch
        .queue_declare(
            paid.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    admin
        .ch
        .queue_bind(
            paid.as_str().into(),
            exchange.as_str().into(),
            "invoice.paid".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    admin.wait_routed(&exchange, "invoice.paid", &paid).await;
    let change = |n: u32, data: Value| Change {
        idempotency_key: format!("invoice:i{n}:1:bus"),
        external_id: None,
        data,
    };
    let out = c
        .push(
            "invoice",
            vec![
                change(1, json!({"number": "INV-1", "status": "paid"})),
                change(2, json!({"number": "INV-2", "status": "open"})),
                change(3, json!({"number": "INV-3"})),
                Change {
                    external_id: Some(ExternalId::parse("INV-1").unwrap()),
                    ..change(
                        4,
                        json!({"number": "INV-1", "status": "paid", "note": "v2"}),
                    )
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        out[0],
        PushOutcome::Created {
            external_id: ExternalId::parse("INV-1").unwrap()
        }
    );
    match &out[1] {
        PushOutcome::Rejected { message } => {
            assert!(
                message.contains("invoice.open") && message.contains("NO_ROUTE"),
                "{message}"
            )
        }
        other => panic!("unroutable: {other:?}"),
    }
    match &out[2] {
        PushOutcome::Rejected { message } => assert!(message.contains("`/status`"), "{message}"),
        other => panic!("no routing key: {other:?}"),
    }
    assert_eq!(
        out[3],
        PushOutcome::Updated {
            external_id: ExternalId::parse("INV-1").unwrap()
        }
    );
    let got = admin.take_all(&paid).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        header(&got[1], "concord-external-id").as_deref(),
        Some("INV-1")
    );
}

#[tokio::test]
async fn a_missing_exchange_is_not_found_when_not_declared() {
    let Some(url) = broker() else { return };
    let exchange = unique("absent");
    let c = open(
        &url,
        &format!("[entities.invoice]\nexchange = \"{exchange}\"\ndeclare = false\n"),
    );
    let err = c.healthcheck().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(err.message.contains(&exchange), "{err}");
    let err = c
        .push(
            "invoice",
            vec![Change {
                idempotency_key: "k".into(),
                external_id: None,
                data: json!({}),
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
}

// ---------------------------------------------------------------------------
// Pulling

#[tokio::test]
async fn unreadable_messages_are_dead_lettered_with_their_reason_and_do_not_block() {
    let Some(url) = broker() else { return };
    let h = QueueHarness::new(&url).await;
    let props = BasicProperties::default().with_message_id("m-bad-1".into());
    h.admin.send(&h.queue, b"not json {", props).await;
    h.admin.send_json(&h.queue, &json!({"name": "no id"})).await;
    h.admin
        .send_json(&h.queue, &json!({"id": "A1", "updated_at": "yesterday"}))
        .await;
    h.admin
        .send_json(&h.queue, &json!({"id": "A2", "name": "fine"}))
        .await;

    let pages = drain(h.connector.as_ref(), "invoice").await;
    assert_eq!(ids(&pages), ["A2"], "the good message after them is read");
    let reasons: Vec<(&str, &str)> = pages
        .iter()
        .flat_map(|p| &p.notices)
        .map(|n| match n {
            Notice::SetAside { item, reason, .. } => (item.as_str(), reason.as_str()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[0].0, "message m-bad-1");
    assert!(reasons[0].1.contains("not JSON"), "{reasons:?}");
    assert!(reasons[1].1.contains("no id at `/id`"), "{reasons:?}");
    assert!(reasons[2].1.contains("RFC 3339"), "{reasons:?}");

    assert_eq!(
        h.admin.count(&h.queue).await,
        0,
        "nothing left in the queue"
    );
    let dead = h.admin.take_all(&format!("{}.dead", h.queue)).await;
    assert_eq!(dead.len(), 3);
    assert_eq!(dead[0].data, b"not json {");
    assert_eq!(
        dead[0].properties.message_id().as_ref().map(|s| s.as_str()),
        Some("m-bad-1"),
        "the message is kept as it was"
    );
    assert!(
        header(&dead[0], "concord-reason")
            .unwrap()
            .contains("not JSON")
    );
    assert_eq!(
        header(&dead[1], "concord-source-queue").as_deref(),
        Some(h.queue.as_str())
    );
}

#[tokio::test]
async fn a_page_set_aside_by_the_engine_is_dead_lettered_with_its_reason() {
    let Some(url) = broker() else { return };
    let h = QueueHarness::new(&url).await;
    h.publish(&conformance::seeds(3)).await;
    let mut stream = h.connector.pull("invoice", None);
    let page = stream.next().await.unwrap().unwrap();
    assert_eq!(page.records.len(), 3);
    page.ack
        .unwrap()
        .nack(false, "mapping: customer number missing")
        .await
        .unwrap();
    assert!(stream.next().await.is_none());
    drop(stream);
    assert_eq!(h.admin.count(&h.queue).await, 0);
    let dead = h.admin.take_all(&format!("{}.dead", h.queue)).await;
    assert_eq!(dead.len(), 3);
    assert_eq!(
        header(&dead[0], "concord-reason").as_deref(),
        Some("mapping: customer number missing")
    );
}

#[tokio::test]
async fn unacknowledged_messages_come_back_when_the_connection_goes() {
    let Some(url) = broker() else { return };
    let h = QueueHarness::new(&url).await;
    h.publish(&conformance::seeds(3)).await;
    let mut stream = h.connector.pull("invoice", None);
    let page = stream.next().await.unwrap().unwrap();
    let first = ids(std::slice::from_ref(&page));
    assert_eq!(first.len(), 3);
    drop(stream);
    // The consumer's connection dies before the page is committed.
    h.proxy.set(PASS);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = page.ack.unwrap().ack().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    assert!(err.message.contains("delivers them again"), "{err}");
    // The next pull reconnects and reads them again.
    let pages = drain(h.connector.as_ref(), "invoice").await;
    assert_eq!(ids(&pages), first);
    assert_eq!(h.admin.count(&h.queue).await, 0);
}

#[tokio::test]
async fn messages_of_a_dropped_pull_come_back() {
    let Some(url) = broker() else { return };
    let h = QueueHarness::new(&url).await;
    h.publish(&conformance::seeds(6)).await;
    {
        let mut stream = h.connector.pull("invoice", None);
        let page = stream.next().await.unwrap().unwrap();
        assert_eq!(page.records.len(), 4);
        // The pull and its page are dropped unanswered.
    }
    let pages = drain(h.connector.as_ref(), "invoice").await;
    let got: BTreeSet<String> = ids(&pages).into_iter().collect();
    assert_eq!(got.len(), 6);
}

/// A fresh queue holding ten messages, `A0` to `A9`, read in pages of four
/// with `prefetch`; its topology goes when the first value is dropped.
async fn ten_on_a_queue(url: &str, prefetch: u16) -> (Topology, Arc<dyn Connector>, Admin, String) {
    let queue = unique("q");
    let dlx = unique("dlx");
    let topology = Topology {
        url: url.to_owned(),
        queues: vec![queue.clone(), format!("{queue}.dead")],
        exchanges: vec![dlx.clone()],
    };
    let c = open(
        url,
        &format!(
            "[entities.invoice]\nqueue = \"{queue}\"\ndead_letter_exchange = \"{dlx}\"\nid = \"/id\"\npage_size = 4\nprefetch = {prefetch}\nmax_wait_ms = 300\n"
        ),
    );
    c.healthcheck().await.unwrap();
    let admin = Admin::new(url).await;
    for n in 0..10 {
        admin
            .send_json(
                &queue,
                &json!({"id": format!("A{n}"), "name": format!("Customer {n}")}),
            )
            .await;
    }
    (topology, c, admin, queue)
}

/// The sync engine asks for a queue's next page while the last one
/// commits, before answering it. With `prefetch` no larger than
/// `page_size` the window is then full and the broker sends nothing: that
/// silence is not a quiet queue. The pull gives an empty page at once and
/// goes on once the page is answered; asked again with nothing answered,
/// it ends.
#[tokio::test]
async fn a_full_prefetch_window_does_not_end_the_pull() {
    let Some(url) = broker() else { return };
    let (_t, c, admin, queue) = ten_on_a_queue(&url, 4).await;

    // As the engine reads: the next page is asked for before the one
    // before it is answered.
    let mut stream = c.pull("invoice", None);
    let mut got = Vec::new();
    let mut empty = 0;
    let mut last: Option<Page> = None;
    while let Some(page) = stream.next().await {
        let page = page.unwrap();
        if page.records.is_empty() {
            assert!(page.ack.is_none(), "an empty page holds no message");
            empty += 1;
        }
        got.extend(page.records.iter().map(|r| r.external_id.to_string()));
        if let Some(ack) = last.take().and_then(|mut p| p.ack.take()) {
            ack.ack().await.unwrap();
        }
        last = Some(page);
    }
    if let Some(ack) = last.and_then(|p| p.ack) {
        ack.ack().await.unwrap();
    }
    drop(stream);
    let want: Vec<String> = (0..10).map(|n| format!("A{n}")).collect();
    assert_eq!(got, want, "one pull reads the whole queue, in order");
    // A0–A3 and A4–A7 fill the window; A8–A9 leave room, and the wait
    // for more ends the pull.
    assert_eq!(
        empty, 2,
        "an empty page after each page that fills the window"
    );
    assert_eq!(admin.count(&queue).await, 0);

    // A caller that answers nothing is not given empty pages forever.
    for n in 0..6 {
        admin
            .send_json(&queue, &json!({"id": format!("B{n}")}))
            .await;
    }
    let mut stream = c.pull("invoice", None);
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.records.len(), 4);
    let second = stream.next().await.unwrap().unwrap();
    assert!(second.records.is_empty());
    assert!(
        stream.next().await.is_none(),
        "nothing answered: the pull ends"
    );
    drop((stream, first));
    let again: BTreeSet<String> = ids(&drain(c.as_ref(), "invoice").await)
        .into_iter()
        .collect();
    assert_eq!(again.len(), 6, "the unanswered messages come back");
}

/// A dry run answers nothing until it ends, then hands every page back:
/// answered page by page, the messages it hands back would come round to
/// it again and the run would never end. It previews what the prefetch
/// window holds, and the queue is as it was.
#[tokio::test]
async fn a_dry_run_of_a_queue_ends_and_leaves_every_message() {
    let Some(url) = broker() else { return };
    let (_t, bus, admin, queue) = ten_on_a_queue(&url, 8).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bus-in.toml"),
        "[mapping]\nname = \"bus-in\"\nversion = 1\nsystem = \"bus_test\"\nentity = \"customer\"\ndirection = \"in\"\n[fields]\nname = { from = \"name\", required = true }\n",
    )
    .unwrap();
    let mut settings = Settings::default();
    settings.mappings.dir = dir.path().to_owned();
    settings.connectors.dir = dir.path().join("no-definitions-needed");
    settings.systems.insert(
        "bus_test".into(),
        SystemSettings {
            connector: "bus_test".into(),
            base_url: None,
            vars: BTreeMap::new(),
        },
    );
    settings.jobs = vec![JobSettings {
        name: "bus".into(),
        schedule: None,
        timezone: None,
        source: Endpoint {
            system: "bus_test".into(),
            entity: "invoice".into(),
            mapping: "bus-in".into(),
        },
        targets: Vec::new(),
        identity: Vec::new(),
        batch_size: 4,
    }];
    let store = common::sqlite().await;
    let engine = Engine::with_connectors(
        settings,
        store.store.clone(),
        HashMap::from([("bus_test".to_owned(), bus)]),
    )
    .unwrap();
    let dry = RunOptions {
        dry_run: true,
        ..RunOptions::default()
    };
    let r = tokio::time::timeout(Duration::from_secs(30), engine.run_job("bus", dry))
        .await
        .expect("the dry run ends")
        .unwrap();
    assert_eq!((r.pulled, r.created), (8, 8), "the window's worth: {r:?}");
    assert_eq!(admin.count(&queue).await, 10, "every message is back");

    let r = engine.run_job("bus", RunOptions::default()).await.unwrap();
    assert_eq!((r.pulled, r.created), (10, 10), "{r:?}");
    assert_eq!(admin.count(&queue).await, 0);
}

#[tokio::test]
async fn array_bodies_and_message_ids() {
    let Some(url) = broker() else { return };
    let queue = unique("q");
    let dlx = unique("dlx");
    let q2 = unique("q");
    let _t = Topology {
        url: url.clone(),
        queues: vec![
            queue.clone(),
            format!("{queue}.dead"),
            q2.clone(),
            format!("{q2}.dead"),
        ],
        exchanges: vec![dlx.clone()],
    };
    let c = open(
        &url,
        &format!(
            "[entities.line]\nqueue = \"{queue}\"\ndead_letter_exchange = \"{dlx}\"\nbody = \"array\"\nid = \"/n\"\nmax_wait_ms = 200\n\
             [entities.event]\nqueue = \"{q2}\"\ndead_letter_exchange = \"{dlx}\"\nid = \"message_id\"\nmax_wait_ms = 200\n"
        ),
    );
    c.healthcheck().await.unwrap();
    let admin = Admin::new(&url).await;
    admin.send_json(&queue, &json!([{"n": 1}, {"n": 2}])).await;
    admin.send_json(&queue, &json!([{"n": 3}, {"x": 4}])).await;
    admin.send_json(&queue, &json!([])).await;
    let pages = drain(c.as_ref(), "line").await;
    assert_eq!(ids(&pages), ["1", "2"]);
    let notices: Vec<&Notice> = pages.iter().flat_map(|p| &p.notices).collect();
    assert_eq!(
        notices.len(),
        1,
        "a bad element sets the whole message aside"
    );

    admin
        .send(
            &q2,
            b"{}",
            BasicProperties::default().with_message_id("evt-7".into()),
        )
        .await;
    let pages = drain(c.as_ref(), "event").await;
    assert_eq!(ids(&pages), ["evt-7"]);
}

#[tokio::test]
async fn a_missing_queue_is_not_found_when_not_declared() {
    let Some(url) = broker() else { return };
    let queue = unique("absent");
    let c = open(
        &url,
        &format!(
            "[entities.invoice]\nqueue = \"{queue}\"\ndeclare = false\ndead_letter_exchange = \"amq.direct\"\nid = \"/id\"\n"
        ),
    );
    let mut stream = c.pull("invoice", None);
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(err.message.contains(&queue), "{err}");
    assert!(stream.next().await.is_none(), "a failed pull ends");
    let err = c.healthcheck().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
}

// ---------------------------------------------------------------------------
// Connecting

#[tokio::test]
async fn a_closed_port_is_unavailable() {
    if broker().is_none() {
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = open(
        &format!("amqp://guest:s3cret@127.0.0.1:{port}/%2f"),
        "[entities.invoice]\nexchange = \"x\"\n",
    );
    let err = c.healthcheck().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    assert!(err.message.contains("guest:***@127.0.0.1"), "{err}");
    assert!(!format!("{err:?}").contains("s3cret"), "{err:?}");
}

#[tokio::test]
async fn wrong_credentials_are_an_auth_error() {
    let Some(url) = broker() else { return };
    let mut wrong: url::Url = url.parse().unwrap();
    wrong.set_password(Some("definitely-wrong")).unwrap();
    let c = open(wrong.as_str(), "[entities.invoice]\nexchange = \"x\"\n");
    let err = c.healthcheck().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains("definitely-wrong"), "{err}");
}

// ---------------------------------------------------------------------------
// The example definition

#[test]
fn the_example_definition_passes_the_check() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/examples/erp_bus.toml");
    let def = check_file(&path).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(def.driver.name, "amqp");
}
