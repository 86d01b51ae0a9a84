//! Data-quality alerts end to end: rules over a real store (SQLite and
//! PostgreSQL), once per cause, auto-resolve, acknowledgement; the webhook
//! sink against an axum mock that checks the signature; the AMQP sink
//! against RabbitMQ (`CONCORD_TEST_AMQP_URL`; under `CI=true` it must
//! run); `concord alerts` through the binary.

mod common;

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::TestStore;
use concord::model::{CanonicalId, Currency, EntityKind, Money};
use concord::quality::config::{AmqpSinkSettings, WebhookSinkSettings};
use concord::quality::sinks::{ALERT_ID_HEADER, SIGNATURE_HEADER, sign};
use concord::settings::Settings;
use concord::store::{AlertFilter, Batch, NewAlert, Provenance, RecordWrite, Severity, Store};
use rust_decimal::Decimal;
use serde_json::{Value, json};

fn write(entity: EntityKind, id: &CanonicalId, expected: i64, data: Value) -> RecordWrite {
    RecordWrite {
        entity,
        id: id.clone(),
        expected_version: expected,
        content_hash: None,
        data_json: None,
        data,
        amount: None,
        provenance: Provenance::pull("erp"),
    }
}

async fn commit(store: &Store, records: Vec<RecordWrite>) {
    store
        .commit(&Batch {
            records,
            ..Batch::default()
        })
        .await
        .unwrap();
}

fn invoice(number: &str, open: &str, due: &str) -> Value {
    json!({
        "number": number, "currency": "EUR", "total": "100.00", "open_amount": open,
        "status": if open == "0.00" { "paid" } else { "open" }, "due_date": due,
    })
}

/// An overdue invoice and two customers sharing a tax id.
async fn seed(store: &Store) -> CanonicalId {
    let inv = CanonicalId::new();
    commit(
        store,
        vec![
            write(
                EntityKind::Invoice,
                &inv,
                0,
                invoice("INV-1", "100.00", "2026-01-15"),
            ),
            write(
                EntityKind::Customer,
                &CanonicalId::new(),
                0,
                json!({"name": "ACME GmbH", "tax_id": "DE123456789"}),
            ),
            write(
                EntityKind::Customer,
                &CanonicalId::new(),
                0,
                json!({"name": "ACME", "tax_id": "de 123 456 789"}),
            ),
        ],
    )
    .await;
    inv
}

fn quiet() -> Settings {
    let mut s = Settings::default();
    s.quality.sinks.log = false;
    s
}

fn rules_of(alerts: &[concord::store::AlertRecord]) -> Vec<&str> {
    let mut r: Vec<&str> = alerts.iter().map(|a| a.alert.rule.as_str()).collect();
    r.sort_unstable();
    r
}

async fn raised_once_resolved_when_gone_and_acked(store: &TestStore) {
    let inv = seed(store).await;
    // An alert of another raiser: never resolved by the quality rules.
    store
        .raise_alert(&NewAlert {
            rule: "ambiguous_identity".into(),
            severity: Severity::Warning,
            entity: Some(EntityKind::Customer),
            record_ids: vec![],
            reason: "two candidates".into(),
            amount: None,
            cause: Some("x".into()),
        })
        .await
        .unwrap();
    let settings = quiet();

    let first = concord::quality::evaluate(store, &settings).await.unwrap();
    assert_eq!(
        rules_of(&first.raised),
        ["duplicate_record", "overdue_receivable"]
    );
    assert_eq!(first.holding, 2);
    let overdue = first
        .raised
        .iter()
        .find(|a| a.alert.rule == "overdue_receivable")
        .unwrap();
    assert_eq!(
        overdue.alert.amount,
        Some(Money::new(Decimal::new(10000, 2), Currency::parse("EUR").unwrap()).unwrap())
    );
    assert_eq!(overdue.alert.record_ids, [inv.to_string()]);

    // Once per cause: the same data raises nothing new.
    let second = concord::quality::evaluate(store, &settings).await.unwrap();
    assert!(second.raised.is_empty(), "{:?}", second.raised);
    assert_eq!((second.holding, second.resolved), (2, 0));

    // Paid: the overdue alert resolves; the other raiser's alert stays.
    commit(
        store,
        vec![write(
            EntityKind::Invoice,
            &inv,
            1,
            invoice("INV-1", "0.00", "2026-01-15"),
        )],
    )
    .await;
    let third = concord::quality::evaluate(store, &settings).await.unwrap();
    assert_eq!((third.raised.len(), third.resolved), (0, 1));
    let resolved = store
        .alerts(&AlertFilter {
            status: Some("resolved".into()),
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].id, overdue.id);
    assert!(resolved[0].resolved_at.is_some());
    let open = store
        .alerts(&AlertFilter {
            status: Some("open".into()),
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(rules_of(&open), ["ambiguous_identity", "duplicate_record"]);

    // Open again: the same cause raises a new alert.
    commit(
        store,
        vec![write(
            EntityKind::Invoice,
            &inv,
            2,
            invoice("INV-1", "100.00", "2026-01-15"),
        )],
    )
    .await;
    let fourth = concord::quality::evaluate(store, &settings).await.unwrap();
    assert_eq!(rules_of(&fourth.raised), ["overdue_receivable"]);
    assert_ne!(fourth.raised[0].id, overdue.id);

    // Acknowledge the duplicate: who, when, why; not raised again.
    let dup = open
        .iter()
        .find(|a| a.alert.rule == "duplicate_record")
        .unwrap();
    let acked = store
        .ack_alerts(&[dup.id, 987_654], "alice", Some("merging them"))
        .await
        .unwrap();
    assert_eq!(acked.acked, [dup.id]);
    assert_eq!(acked.unknown, [987_654]);
    let again = store.ack_alerts(&[dup.id], "bob", None).await.unwrap();
    assert_eq!(again.not_open, [dup.id]);
    let listed = store
        .alerts(&AlertFilter {
            status: Some("acked".into()),
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].acked_by.as_deref(), Some("alice"));
    assert_eq!(listed[0].note.as_deref(), Some("merging them"));
    assert!(listed[0].acked_at.is_some());
    let fifth = concord::quality::evaluate(store, &settings).await.unwrap();
    assert!(fifth.raised.is_empty());

    // Filters.
    let by_rule = store
        .alerts(&AlertFilter {
            rule: Some("overdue_receivable".into()),
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_rule.len(), 2);
    let critical = store
        .alerts(&AlertFilter {
            severity: Some(Severity::Critical),
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert!(critical.is_empty());
    // No sinks configured: nothing is left pending.
    assert!(store.alerts_pending_sinks(100).await.unwrap().is_empty());
}

async fn thresholds_come_from_settings(store: &TestStore) {
    seed(store).await;
    let mut settings = quiet();
    // 2026-01-15 is long past; a threshold of 100 years keeps it quiet.
    settings.quality.rules.overdue_receivable.days = 36_500;
    settings.quality.rules.duplicate_record.enabled = false;
    let report = concord::quality::evaluate(store, &settings).await.unwrap();
    assert!(report.raised.is_empty(), "{:?}", report.raised);
    assert!(!report.rules.contains(&"duplicate_record"));
}

on_both_backends!(
    raised_once_resolved_when_gone_and_acked,
    thresholds_come_from_settings,
);

// --- webhook -------------------------------------------------------------

#[derive(Clone, Default)]
struct Hook {
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// Answers to give before succeeding.
    fail_first: Arc<Mutex<Vec<StatusCode>>>,
}

async fn receive(State(hook): State<Hook>, headers: HeaderMap, body: Bytes) -> StatusCode {
    hook.seen.lock().unwrap().push((headers, body));
    let mut fail = hook.fail_first.lock().unwrap();
    if fail.is_empty() {
        StatusCode::NO_CONTENT
    } else {
        fail.remove(0)
    }
}

async fn serve(hook: Hook) -> String {
    let app = Router::new()
        .route("/alerts", post(receive))
        .with_state(hook);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/alerts")
}

fn webhook(url: &str, secret: &str) -> WebhookSinkSettings {
    WebhookSinkSettings {
        url: url.to_owned(),
        secret: secret.to_owned().into(),
        timeout_secs: 5,
        retries: 2,
        retry_delay_ms: 10,
    }
}

#[tokio::test]
async fn webhook_gets_each_new_alert_once_signed_and_retried() {
    let store = common::sqlite().await;
    seed(&store).await;
    let hook = Hook::default();
    hook.fail_first
        .lock()
        .unwrap()
        .push(StatusCode::SERVICE_UNAVAILABLE);
    let url = serve(hook.clone()).await;
    let mut settings = quiet();
    settings.quality.sinks.webhook = Some(webhook(&url, "hook-s3cret"));

    let report = concord::quality::evaluate(&store, &settings).await.unwrap();
    assert_eq!(report.raised.len(), 2);
    assert_eq!(report.sinks.completed, 2, "{:?}", report.sinks);
    let seen = hook.seen.lock().unwrap().clone();
    // One 503, retried, then both alerts.
    assert_eq!(seen.len(), 3);
    let mut ids = Vec::new();
    for (headers, body) in &seen[1..] {
        let signature = headers[SIGNATURE_HEADER].to_str().unwrap();
        assert_eq!(signature, sign(b"hook-s3cret", body));
        assert_ne!(signature, sign(b"another key", body));
        let alert: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            headers[ALERT_ID_HEADER].to_str().unwrap(),
            alert["id"].to_string()
        );
        assert!(alert["reason"].as_str().is_some_and(|r| !r.is_empty()));
        ids.push(alert["id"].as_i64().unwrap());
    }
    ids.sort_unstable();
    let mut raised: Vec<i64> = report.raised.iter().map(|a| a.id).collect();
    raised.sort_unstable();
    assert_eq!(ids, raised);
    for a in store.alerts_by_id(&raised).await.unwrap() {
        assert_eq!(a.sink_state, "done");
        assert_eq!(a.sinks_delivered, ["webhook"]);
    }

    // Nothing new: nothing sent.
    concord::quality::evaluate(&store, &settings).await.unwrap();
    assert_eq!(hook.seen.lock().unwrap().len(), 3);
    store.cleanup().await;
}

#[tokio::test]
async fn webhook_failures_keep_alerts_pending_until_a_later_run() {
    let store = common::sqlite().await;
    seed(&store).await;
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut settings = quiet();
    settings.quality.sinks.webhook =
        Some(webhook(&format!("http://{closed}/alerts"), "hook-s3cret"));
    let report = concord::quality::evaluate(&store, &settings).await.unwrap();
    assert_eq!(report.raised.len(), 2);
    assert_eq!((report.sinks.completed, report.sinks.pending), (0, 2));
    assert!(
        report.sinks.errors[0].contains("cannot connect"),
        "{:?}",
        report.sinks
    );
    assert!(!format!("{:?}", report.sinks).contains("hook-s3cret"));
    let pending = store.alerts_pending_sinks(10).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert!(
        pending
            .iter()
            .all(|a| a.sink_error.is_some() && a.sink_attempts == 1)
    );

    // A 401 is not retried within the run, and the alerts stay pending.
    let hook = Hook::default();
    hook.fail_first
        .lock()
        .unwrap()
        .extend([StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED]);
    let url = serve(hook.clone()).await;
    settings.quality.sinks.webhook = Some(webhook(&url, "hook-s3cret"));
    let report = concord::quality::evaluate(&store, &settings).await.unwrap();
    assert!(report.raised.is_empty());
    assert_eq!(report.sinks.pending, 2);
    assert_eq!(hook.seen.lock().unwrap().len(), 2, "one request per alert");

    // The endpoint works again: the next run delivers what waited.
    let report = concord::quality::evaluate(&store, &settings).await.unwrap();
    assert_eq!((report.sinks.completed, report.sinks.pending), (2, 0));
    assert_eq!(hook.seen.lock().unwrap().len(), 4);
    assert!(store.alerts_pending_sinks(10).await.unwrap().is_empty());
    store.cleanup().await;
}

// --- AMQP ----------------------------------------------------------------

const AMQP_VAR: &str = "CONCORD_TEST_AMQP_URL";

fn broker() -> Option<String> {
    match std::env::var(AMQP_VAR) {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{AMQP_VAR} must be set in CI: the RabbitMQ alert sink test may not be skipped")
        }
        Err(_) => {
            eprintln!(
                "skipped: {AMQP_VAR} is not set, so the RabbitMQ alert sink test did not run"
            );
            None
        }
    }
}

#[tokio::test]
async fn amqp_sink_publishes_confirmed_and_retries_a_missing_exchange() {
    use lapin::options::{
        BasicGetOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{Connection, ConnectionProperties};

    let Some(url) = broker() else { return };
    let store = common::sqlite().await;
    seed(&store).await;
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let exchange = format!("concord-test-alerts-{suffix}");
    let queue = format!("concord-test-alerts-{suffix}");
    let mut settings = quiet();
    settings.quality.sinks.amqp = Some(AmqpSinkSettings {
        url: url.clone().into(),
        exchange: exchange.clone(),
        routing_key: "concord.alert.{severity}.{rule}".into(),
        declare: false,
        confirm_timeout_ms: 5_000,
    });

    // The exchange does not exist yet: the alerts stay pending.
    let report = concord::quality::evaluate(&store, &settings).await.unwrap();
    assert_eq!(report.raised.len(), 2);
    assert_eq!(report.sinks.pending, 2, "{:?}", report.sinks);
    assert!(!report.sinks.errors.is_empty());

    // Declared (and a queue bound): the next run publishes both.
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions {
            durable: false,
            auto_delete: false,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "concord.alert.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let report = concord::quality::evaluate(&store, &settings).await.unwrap();
    assert_eq!(
        (report.sinks.completed, report.sinks.pending),
        (2, 0),
        "{:?}",
        report.sinks
    );

    let mut got = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        got.push(m.delivery);
    }
    assert_eq!(got.len(), 2);
    let mut rules = Vec::new();
    for d in &got {
        let body: Value = serde_json::from_slice(&d.data).unwrap();
        let rule = body["rule"].as_str().unwrap().to_owned();
        assert_eq!(
            d.routing_key.as_str(),
            format!("concord.alert.warning.{rule}")
        );
        assert_eq!(
            d.properties.message_id().as_ref().unwrap().as_str(),
            body["id"].to_string()
        );
        rules.push(rule);
    }
    rules.sort();
    assert_eq!(rules, ["duplicate_record", "overdue_receivable"]);

    // Nothing new: nothing published.
    concord::quality::evaluate(&store, &settings).await.unwrap();
    assert!(
        ch.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .is_none()
    );
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = ch
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    store.cleanup().await;
}

// --- CLI -----------------------------------------------------------------

fn concord(dir: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("CONCORD_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.env(
        "CONCORD__STORE__URL",
        format!("sqlite://{}", dir.join("concord.db").display()),
    );
    cmd.output().expect("run concord")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn cli_check_list_and_ack() {
    let dir = tempfile::tempdir().unwrap();
    let settings = concord::settings::StoreSettings {
        url: format!("sqlite://{}", dir.path().join("concord.db").display()).into(),
        ..Default::default()
    };
    let store = Store::open(&settings).await.unwrap();
    seed(&store).await;
    store.close().await;

    let out = concord(dir.path(), &["alerts", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("overdue_receivable"), "{shown}");
    assert!(shown.contains("2 alert(s) raised now"), "{shown}");
    assert!(shown.contains("consistency rate: n/a"), "{shown}");

    let out = concord(dir.path(), &["alerts", "check", "-o", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["raised"].as_array().unwrap().len(),
        0,
        "once per cause"
    );
    assert_eq!(report["holding"], 2);

    let out = concord(
        dir.path(),
        &[
            "alerts",
            "list",
            "--rule",
            "overdue_receivable",
            "-o",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "open");
    let id = listed[0]["id"].to_string();

    let out = concord(
        dir.path(),
        &[
            "alerts",
            "ack",
            &id,
            "--note",
            "calling them",
            "--actor",
            "alice",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("acknowledged 1 alert(s) as alice"));

    let out = concord(
        dir.path(),
        &["alerts", "list", "--status", "acked", "-o", "json"],
    );
    let acked: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(acked[0]["acked_by"], "alice");
    assert_eq!(acked[0]["note"], "calling them");
    let out = concord(dir.path(), &["alerts", "list"]);
    let table = text(&out.stdout);
    assert!(table.contains("duplicate_record"), "{table}");
    assert!(
        !table.contains("overdue_receivable"),
        "acked is not open: {table}"
    );

    let out = concord(dir.path(), &["alerts", "ack", "999999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no alert with id 999999"));
    let out = concord(dir.path(), &["alerts", "list", "--severity", "loud"]);
    assert_eq!(out.status.code(), Some(2));
}

const MT940: &str = ":20:STMT-1\r\n:25:DE89370400440532013000\r\n:28C:7/1\r\n:60F:C261127EUR1000,00\r\n:61:2611281128C250,00NTRFNONREF//B1\r\n:86:166?20RE INV-2026-0042?32ACME GMBH\r\n:61:2611281128D100,00NTRFNONREF//B2\r\n:86:177?20Rent\r\n:62F:C261127EUR1150,00\r\n-\r\n";

#[test]
fn bank_import_runs_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stmt.sta"), MT940).unwrap();
    // Environment overrides arrive lower-cased: `eur` is EUR.
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
        cmd.args(args).current_dir(dir.path());
        for (key, _) in std::env::vars() {
            if key.starts_with("CONCORD_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("CONCORD__STORE__URL", "sqlite://c.db")
            .env("CONCORD__QUALITY__TIME_ZONE", "Europe/Berlin")
            .env(
                "CONCORD__QUALITY__RULES__LARGE_OUTSIDE_HOURS__THRESHOLDS__EUR",
                "200",
            )
            .output()
            .unwrap()
    };
    let out = run(&["bank", "import", "stmt.sta"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // 250.00 booked on Saturday 2026-11-28, over the 200 threshold; the
    // 100.00 debit is under it.
    assert!(
        text(&out.stdout).contains("data quality: 1 new alert(s)"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&[
        "alerts",
        "list",
        "--rule",
        "large_outside_hours",
        "-o",
        "json",
    ]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(
        listed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("non-working day"),
        "{listed}"
    );
    let amount: Decimal = listed[0]["amount"]["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(amount, Decimal::from(250));
}
