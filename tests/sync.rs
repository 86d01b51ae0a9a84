//! The sync engine end to end over in-memory systems: ingest, identity,
//! merge, conflicts, quarantine, delivery, echo suppression — on SQLite and,
//! when `CONCORD_TEST_DATABASE_URL` is set, on PostgreSQL.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use common::TestStore;
use concord::connector::{
    Ack, Capabilities, Change, Connector, ConnectorError, Cursor, ErrorKind, Page, PageStream,
    PushOutcome, RawRecord,
};
use concord::model::{EntityKind, ExternalId};
use concord::settings::{Settings, SystemSettings};
use concord::sync::engine::Choice;
use concord::sync::merge::{MergePolicies, Policy};
use concord::sync::{Endpoint, Engine, JobSettings, RunOptions};
use futures_util::StreamExt;
use serde_json::{Value, json};

on_both_backends!(
    first_run_creates_quarantines_and_delivers,
    two_way_sync_settles,
    identity_keys_prevent_duplicates,
    ambiguous_identity_goes_to_the_conflict_queue,
    manual_policy_parks_only_the_conflicting_field,
    delivery_retries_and_dead_letters,
    a_target_asking_to_wait_for_ages_is_asked_again_within_a_day,
    dry_run_writes_nothing,
    older_versions_never_overwrite_newer_ones,
    a_batch_read_ahead_sees_what_the_batch_before_delivered,
    concurrent_changes_to_different_fields_reach_both_sides,
    a_system_that_loses_a_field_gets_the_winner,
    resolving_a_conflict_writes_a_version_and_delivers,
    taking_a_system_takes_the_value_it_holds,
    resolving_the_last_conflict_releases_held_deliveries,
    identity_conflicts_are_resolved_by_linking_or_creating,
    a_second_identity_conflict_of_a_record_cannot_move_its_link,
    quarantined_records_replay_after_a_fix,
    unchanged_records_are_known_by_how_they_arrived_until_the_mapping_changes,
    a_source_whose_pages_wait_for_their_ack_is_read_to_its_end,
);

// ---------------------------------------------------------------------------
// An in-memory system

#[derive(Default)]
struct MemState {
    records: BTreeMap<String, (Value, DateTime<Utc>)>,
    keys: HashMap<String, String>,
    next: u64,
    tick: i64,
    pushes: usize,
    reject_names: Vec<String>,
    retry_names: Vec<String>,
    fail_pushes: usize,
    /// The wait a retry of `retry_names` asks for (Retry-After).
    retry_delay: Duration,
    /// The name of every change pushed, in order.
    pushed: Vec<String>,
    /// How long a push takes (a slow target).
    push_time: Duration,
    /// Pages handed out and not yet acknowledged, at most this many, as a
    /// queue's prefetch window allows: a pull asked for more ends there,
    /// as a quiet queue's does. `None`: pages need no acknowledgement.
    window: Option<usize>,
}

struct Memory {
    name: String,
    prefix: &'static str,
    state: Mutex<MemState>,
    /// Pages handed out with an acknowledgement still to come.
    unacked: Arc<AtomicUsize>,
}

/// The acknowledgement of a page of a [`Memory`] with a window.
struct WindowAck(Arc<AtomicUsize>);

#[async_trait]
impl Ack for WindowAck {
    async fn ack(self: Box<Self>) -> Result<(), ConnectorError> {
        self.0.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    async fn nack(self: Box<Self>, _requeue: bool, _reason: &str) -> Result<(), ConnectorError> {
        self.0.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

impl Memory {
    fn new(name: &str, prefix: &'static str) -> Arc<Memory> {
        Arc::new(Memory {
            name: name.into(),
            prefix,
            state: Mutex::new(MemState::default()),
            unacked: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn now(st: &mut MemState) -> DateTime<Utc> {
        st.tick += 1;
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(st.tick)
    }

    /// Puts a record at the source as a user of that system would.
    fn put(&self, id: &str, data: Value) {
        let mut st = self.state.lock().unwrap();
        let at = Self::now(&mut st);
        let mut data = data;
        data["id"] = json!(id);
        st.records.insert(id.into(), (data, at));
    }

    fn edit(&self, id: &str, field: &str, value: Value) {
        let mut st = self.state.lock().unwrap();
        let at = Self::now(&mut st);
        let rec = st.records.get_mut(id).unwrap();
        rec.0[field] = value;
        rec.1 = at;
    }

    fn get(&self, id: &str) -> Value {
        self.state.lock().unwrap().records[id].0.clone()
    }

    fn len(&self) -> usize {
        self.state.lock().unwrap().records.len()
    }

    fn pushes(&self) -> usize {
        self.state.lock().unwrap().pushes
    }
}

#[async_trait]
impl Connector for Memory {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn pull<'a>(&'a self, _entity: &'a str, cursor: Option<Cursor>) -> PageStream<'a> {
        let st = self.state.lock().unwrap();
        let cursor = cursor.unwrap_or_default();
        let mut rows: Vec<(DateTime<Utc>, String, Value)> = st
            .records
            .iter()
            .filter(|(id, (_, at))| cursor.is_before(Some(*at), id))
            .map(|(id, (v, at))| (*at, id.clone(), v.clone()))
            .collect();
        rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut pages = Vec::new();
        let mut c = cursor.clone();
        for chunk in rows.chunks(2) {
            let records = chunk
                .iter()
                .map(|(at, id, v)| {
                    c.advance(Some(*at), id);
                    RawRecord {
                        external_id: ExternalId::parse(id).unwrap(),
                        updated_at: Some(*at),
                        data: v.clone(),
                    }
                })
                .collect();
            pages.push(Ok(Page {
                records,
                cursor: c.clone(),
                ..Page::default()
            }));
        }
        let Some(window) = st.window else {
            return futures_util::stream::iter(pages).boxed();
        };
        let unacked = self.unacked.clone();
        futures_util::stream::iter(pages)
            .take_while(move |_| std::future::ready(unacked.load(Ordering::SeqCst) < window))
            .map({
                let unacked = self.unacked.clone();
                move |page| {
                    unacked.fetch_add(1, Ordering::SeqCst);
                    let ack: Box<dyn Ack> = Box::new(WindowAck(unacked.clone()));
                    page.map(|p| Page {
                        ack: Some(ack),
                        ..p
                    })
                }
            })
            .boxed()
    }

    async fn push(
        &self,
        _entity: &str,
        changes: Vec<Change>,
    ) -> Result<Vec<PushOutcome>, ConnectorError> {
        let push_time = self.state.lock().unwrap().push_time;
        tokio::time::sleep(push_time).await;
        let mut st = self.state.lock().unwrap();
        if st.fail_pushes > 0 {
            st.fail_pushes -= 1;
            return Err(ConnectorError::new(
                ErrorKind::Unavailable,
                &self.name,
                "HTTP 503",
            ));
        }
        let mut out = Vec::new();
        for change in changes {
            st.pushes += 1;
            let name = change.data["name"]
                .as_str()
                .or(change.data["customer_name"].as_str())
                .unwrap_or_default()
                .to_owned();
            st.pushed.push(name.clone());
            if st.reject_names.contains(&name) {
                out.push(PushOutcome::Rejected {
                    message: format!("name {name:?} is not allowed"),
                });
                continue;
            }
            if st.retry_names.contains(&name) {
                out.push(PushOutcome::RetryLater {
                    delay: st.retry_delay,
                    message: "busy".into(),
                });
                continue;
            }
            if let Some(id) = st.keys.get(&change.idempotency_key).cloned() {
                out.push(PushOutcome::Updated {
                    external_id: ExternalId::parse(&id).unwrap(),
                });
                continue;
            }
            let at = Self::now(&mut st);
            let (id, created) = match &change.external_id {
                Some(id) => (id.to_string(), false),
                None => {
                    st.next += 1;
                    (format!("{}{}", self.prefix, st.next), true)
                }
            };
            let mut data = change.data.clone();
            data["id"] = json!(id);
            st.records.insert(id.clone(), (data, at));
            st.keys.insert(change.idempotency_key.clone(), id.clone());
            let external_id = ExternalId::parse(&id).unwrap();
            out.push(if created {
                PushOutcome::Created { external_id }
            } else {
                PushOutcome::Updated { external_id }
            });
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Mappings and settings

fn write_mappings(dir: &Path) {
    let files = [
        (
            "crm-in.toml",
            r#"[mapping]
name = "crm-customer-in"
version = 1
system = "crm"
entity = "customer"
direction = "in"
[fields]
name = { from = "name", required = true }
email = { from = "email", pipe = ["trim", "lower"] }
tax_id = { from = "vat" }
phone = { from = "phone" }
"#,
        ),
        (
            "crm-out.toml",
            r#"[mapping]
name = "crm-customer-out"
version = 1
system = "crm"
entity = "customer"
direction = "out"
[fields]
name = { from = "name" }
email = { from = "email" }
vat = { from = "tax_id" }
phone = { from = "phone" }
"#,
        ),
        (
            "erp-in.toml",
            r#"[mapping]
name = "erp-customer-in"
version = 1
system = "erp"
entity = "customer"
direction = "in"
[fields]
name = { from = "customer_name", required = true }
email = { from = "mail", pipe = ["trim", "lower"] }
tax_id = { from = "tax" }
"#,
        ),
        (
            "erp-out.toml",
            r#"[mapping]
name = "erp-customer-out"
version = 1
system = "erp"
entity = "customer"
direction = "out"
[fields]
customer_name = { from = "name" }
mail = { from = "email" }
tax = { from = "tax_id" }
"#,
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

struct World {
    engine: Engine,
    crm: Arc<Memory>,
    erp: Arc<Memory>,
    _dir: tempfile::TempDir,
}

fn endpoint(system: &str, mapping: &str) -> Endpoint {
    Endpoint {
        system: system.into(),
        entity: "customer".into(),
        mapping: mapping.into(),
    }
}

fn world(store: &TestStore, merge: Option<MergePolicies>) -> World {
    world_with(store, merge, |_| {})
}

fn world_with(
    store: &TestStore,
    merge: Option<MergePolicies>,
    tweak: impl FnOnce(&mut Settings),
) -> World {
    let dir = tempfile::tempdir().unwrap();
    write_mappings(dir.path());
    let mut settings = settings_in(dir.path());
    let job = |name: &str, from: Endpoint, to: Endpoint| JobSettings {
        name: name.into(),
        schedule: None,
        timezone: None,
        source: from,
        targets: vec![to],
        identity: vec!["tax_id".into(), "email".into()],
        batch_size: 2,
    };
    settings.jobs = vec![
        job(
            "crm-to-erp",
            endpoint("crm_main", "crm-customer-in"),
            endpoint("erp_main", "erp-customer-out"),
        ),
        job(
            "erp-to-crm",
            endpoint("erp_main", "erp-customer-in"),
            endpoint("crm_main", "crm-customer-out"),
        ),
    ];
    if let Some(m) = merge {
        settings.merge.insert(EntityKind::Customer, m);
    }
    tweak(&mut settings);
    let crm = Memory::new("crm_main", "C");
    let erp = Memory::new("erp_main", "E");
    let engine =
        Engine::with_connectors(settings, store.store.clone(), attached(&crm, &erp)).unwrap();
    World {
        engine,
        crm,
        erp,
        _dir: dir,
    }
}

/// A second engine over the same files and systems (after editing a mapping).
fn world_reusing(store: &TestStore, w: &World) -> Engine {
    let mut settings = settings_in(w._dir.path());
    settings.jobs = w.engine.jobs().to_vec();
    Engine::with_connectors(settings, store.store.clone(), attached(&w.crm, &w.erp)).unwrap()
}

fn attached(crm: &Arc<Memory>, erp: &Arc<Memory>) -> HashMap<String, Arc<dyn Connector>> {
    HashMap::from([
        ("crm_main".to_owned(), crm.clone() as Arc<dyn Connector>),
        ("erp_main".to_owned(), erp.clone() as Arc<dyn Connector>),
    ])
}

/// Settings with the two systems, mappings in `dir`, no jobs yet.
fn settings_in(dir: &Path) -> Settings {
    let mut settings = Settings::default();
    settings.mappings.dir = dir.to_owned();
    settings.connectors.dir = dir.join("no-definitions-needed");
    for (name, connector) in [("crm_main", "crm"), ("erp_main", "erp")] {
        settings.systems.insert(
            name.into(),
            SystemSettings {
                connector: connector.into(),
                base_url: None,
                vars: BTreeMap::new(),
            },
        );
    }
    settings
}

async fn run(w: &World, job: &str) -> concord::sync::JobReport {
    w.engine.run_job(job, RunOptions::default()).await.unwrap()
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

// ---------------------------------------------------------------------------

async fn first_run_creates_quarantines_and_delivers(store: &TestStore) {
    let w = world(store, None);
    w.crm.put(
        "c1",
        json!({"name": "Acme AG", "email": " AP@Acme.test ", "vat": "CHE-1"}),
    );
    w.crm.put(
        "c2",
        json!({"name": "Globex", "email": "billing@globex.test"}),
    );
    w.crm.put("c3", json!({"email": "nameless@x.test"}));

    let r = run(&w, "crm-to-erp").await;
    assert_eq!(
        (r.pulled, r.created, r.quarantined, r.delivered),
        (3, 2, 1, 2),
        "{r:?}"
    );
    assert_eq!(w.erp.len(), 2);
    assert_eq!(
        w.erp.get("E1"),
        json!({"id": "E1", "customer_name": "Acme AG", "mail": "ap@acme.test", "tax": "CHE-1"})
    );
    let q = store.quarantined(10).await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].item.external_id.as_deref(), Some("c3"));
    assert_eq!(q[0].item.field_path.as_deref(), Some("name"));
    assert_eq!(
        q[0].item.raw["email"], "nameless@x.test",
        "kept exactly as received"
    );

    // Each record's data is written once: both links name the version
    // they hold, and read back as it.
    assert_eq!(store.links_with_copies().await, 0);
    let erp = store
        .find_link(EntityKind::Customer, "erp_main", "E1")
        .await
        .unwrap()
        .unwrap();
    let head = store
        .get_record(EntityKind::Customer, &erp.canonical_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(erp.synced_version, Some(1));
    assert_eq!(erp.synced_data.as_ref(), Some(&head.data));
    assert_eq!(erp.synced_hash.as_deref(), Some(head.content_hash.as_str()));

    // The cursor holds: nothing new, nothing read.
    let r = run(&w, "crm-to-erp").await;
    assert_eq!((r.pulled, r.created, r.delivered), (0, 0, 0), "{r:?}");
    // A full re-read recognises everything by hash.
    let r = w
        .engine
        .run_job(
            "crm-to-erp",
            RunOptions {
                full: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (r.pulled, r.unchanged, r.created, r.updated, r.delivered),
        (3, 2, 0, 0, 0),
        "{r:?}"
    );
    assert_eq!(customers(store).await, 2);
}

async fn two_way_sync_settles(store: &TestStore) {
    let w = world(store, None);
    w.crm.put(
        "c1",
        json!({"name": "Acme AG", "email": "ap@acme.test", "vat": "CHE-1", "phone": "+41 1"}),
    );
    w.erp.put(
        "e-9",
        json!({"customer_name": "Initech", "mail": "ap@initech.test", "tax": "US-9"}),
    );

    let mut pushes = Vec::new();
    for _ in 0..3 {
        let a = run(&w, "crm-to-erp").await;
        let b = run(&w, "erp-to-crm").await;
        pushes.push((a.delivered, b.delivered));
    }
    assert_eq!(pushes, [(1, 1), (0, 0), (0, 0)], "the sync must settle");
    assert_eq!(customers(store).await, 2);
    assert_eq!(w.crm.len(), 2);
    assert_eq!(w.erp.len(), 2);
    let (crm_pushes, erp_pushes) = (w.crm.pushes(), w.erp.pushes());

    // A change on one side travels once, and does not come back.
    w.crm.edit("c1", "name", json!("Acme Holding AG"));
    let a = run(&w, "crm-to-erp").await;
    assert_eq!((a.updated, a.delivered), (1, 1), "{a:?}");
    let b = run(&w, "erp-to-crm").await;
    assert_eq!(
        (b.pulled, b.updated, b.delivered),
        (1, 0, 0),
        "echo suppressed: {b:?}"
    );
    assert_eq!(w.erp.get("E1")["customer_name"], "Acme Holding AG");
    let a = run(&w, "crm-to-erp").await;
    assert_eq!((a.pulled, a.delivered), (0, 0));
    assert_eq!(
        (w.crm.pushes(), w.erp.pushes()),
        (crm_pushes, erp_pushes + 1)
    );
    // The phone, which the ERP does not carry, survived the round trip.
    let link = store
        .find_link(EntityKind::Customer, "crm_main", "c1")
        .await
        .unwrap()
        .unwrap();
    let rec = store
        .get_record(EntityKind::Customer, &link.canonical_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.data["phone"], "+41 1");
    assert_eq!(rec.version, 2);
}

async fn identity_keys_prevent_duplicates(store: &TestStore) {
    let w = world(store, None);
    w.erp.put(
        "e-1",
        json!({"customer_name": "Acme AG", "tax": "CHE-123.456"}),
    );
    let b = run(&w, "erp-to-crm").await;
    assert_eq!((b.created, b.delivered), (1, 1));
    // The CRM already had it under another spelling of the tax id; the push
    // above created C1, and CRM's own older record c7 must match too? No:
    // c7 is a second CRM record with the same key — that is a duplicate in
    // the CRM and goes to the operator.
    w.crm
        .put("c7", json!({"name": "ACME", "vat": "che 123 456"}));
    let a = run(&w, "crm-to-erp").await;
    assert_eq!((a.created, a.conflicts), (0, 1), "{a:?}");
    assert_eq!(customers(store).await, 1);

    // A record first seen in the CRM with the same key as an ERP record
    // becomes the same canonical record.
    w.erp.put(
        "e-2",
        json!({"customer_name": "Umbrella", "mail": "ap@umbrella.test"}),
    );
    w.crm.put(
        "c8",
        json!({"name": "Umbrella Corp", "email": "AP@umbrella.test"}),
    );
    let a = run(&w, "crm-to-erp").await;
    let b = run(&w, "erp-to-crm").await;
    assert_eq!(a.created + b.created, 1, "{a:?} {b:?}");
    assert_eq!(customers(store).await, 2);
    let crm_link = store
        .find_link(EntityKind::Customer, "crm_main", "c8")
        .await
        .unwrap()
        .unwrap();
    let erp_link = store
        .find_link(EntityKind::Customer, "erp_main", "e-2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(crm_link.canonical_id, erp_link.canonical_id);
}

async fn ambiguous_identity_goes_to_the_conflict_queue(store: &TestStore) {
    let w = world(store, None);
    // Two ERP records with one e-mail address: a duplicate within the ERP,
    // which the operator must see rather than concord merging them.
    w.erp.put(
        "e-1",
        json!({"customer_name": "Acme Bern", "mail": "ap@acme.test"}),
    );
    w.erp.put(
        "e-2",
        json!({"customer_name": "Acme Zürich", "mail": "AP@acme.test"}),
    );
    let b = run(&w, "erp-to-crm").await;
    assert_eq!((b.created, b.conflicts), (1, 1), "{b:?}");

    // Two canonical records that come to share a key (e-3 changes its
    // address to e-1's): a CRM record with that key matches both.
    w.erp.put(
        "e-3",
        json!({"customer_name": "Acme Basel", "mail": "basel@acme.test"}),
    );
    run(&w, "erp-to-crm").await;
    w.erp.edit("e-3", "mail", json!("ap@acme.test"));
    let b = run(&w, "erp-to-crm").await;
    assert_eq!(b.updated, 1, "{b:?}");
    let before = customers(store).await;
    w.crm
        .put("c9", json!({"name": "Acme", "email": "ap@acme.test"}));
    let a = run(&w, "crm-to-erp").await;
    assert_eq!((a.created, a.updated, a.conflicts), (0, 0, 1), "{a:?}");
    assert_eq!(
        customers(store).await,
        before,
        "never a guess, never another record"
    );
    let alerts = store.open_alerts(10).await.unwrap();
    let ambiguous: Vec<_> = alerts
        .iter()
        .filter(|a| a.alert.rule == "ambiguous_identity")
        .collect();
    assert_eq!(ambiguous.len(), 2);
    assert!(
        ambiguous
            .iter()
            .any(|a| a.alert.record_ids.len() == 2 && a.alert.reason.contains("crm_main c9")),
        "{ambiguous:?}"
    );
    // Its old address no longer identifies e-3.
    let old = store
        .find_identities(EntityKind::Customer, "email", &["basel@acme.test".into()])
        .await
        .unwrap();
    assert!(old.is_empty(), "{old:?}");
}

async fn manual_policy_parks_only_the_conflicting_field(store: &TestStore) {
    let mut m = MergePolicies::default();
    m.fields.insert("email".into(), Policy::MANUAL);
    let w = world(store, Some(m));
    w.crm.put(
        "c1",
        json!({"name": "Acme", "email": "a@acme.test", "vat": "CHE-1"}),
    );
    run(&w, "crm-to-erp").await;
    run(&w, "erp-to-crm").await;

    // Both systems change the e-mail; the CRM also renames.
    w.crm.edit("c1", "email", json!("crm@acme.test"));
    w.crm.edit("c1", "name", json!("Acme AG"));
    w.erp.edit("E1", "mail", json!("erp@acme.test"));
    let b = run(&w, "erp-to-crm").await;
    // The ERP's change comes in; before writing to the CRM, the CRM is read:
    // its rename flows, its e-mail conflicts and waits.
    assert_eq!(
        (b.updated, b.merged_from_targets, b.conflicts),
        (1, 1, 1),
        "{b:?}"
    );
    assert_eq!(
        b.held, 1,
        "the CRM is not written while its conflict is open: {b:?}"
    );
    let link = store
        .find_link(EntityKind::Customer, "crm_main", "c1")
        .await
        .unwrap()
        .unwrap();
    let rec = store
        .get_record(EntityKind::Customer, &link.canonical_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.data["name"], "Acme AG", "the rest of the record flows");
    assert_eq!(
        rec.data["email"], "erp@acme.test",
        "the contested field keeps ours"
    );
    assert_eq!(
        w.crm.get("c1")["email"],
        "crm@acme.test",
        "the CRM's value is not overwritten"
    );
    assert_eq!(store.status().await.unwrap().open_conflicts, 1);
    // The ERP gets the rename.
    let a = run(&w, "crm-to-erp").await;
    assert_eq!(
        a.conflicts, 0,
        "the same conflict is not raised twice: {a:?}"
    );
    assert_eq!(w.erp.get("E1")["customer_name"], "Acme AG");
    assert_eq!(w.erp.get("E1")["mail"], "erp@acme.test");
}

/// A target that answers "retry after" some absurd wait (a 429 with
/// `Retry-After: 10000000000000`): the entry waits a day at most, and the
/// run goes on.
async fn a_target_asking_to_wait_for_ages_is_asked_again_within_a_day(store: &TestStore) {
    let w = world(store, None);
    {
        let mut st = w.erp.state.lock().unwrap();
        st.retry_names.push("Busy".into());
        st.retry_delay = Duration::from_secs(10_000_000_000_000);
    }
    w.crm.put("c1", json!({"name": "Busy"}));
    w.crm.put("c2", json!({"name": "Fine"}));
    let r = run(&w, "crm-to-erp").await;
    assert_eq!((r.created, r.delivered, r.retry_later), (2, 1, 1), "{r:?}");
    assert!(
        store.outbox_due(10).await.unwrap().is_empty(),
        "not due now"
    );
    let dead = store.outbox_dead(None, 10).await.unwrap();
    assert!(dead.is_empty(), "waiting, not a dead letter: {dead:?}");
    // A later run leaves it waiting.
    let r = run(&w, "crm-to-erp").await;
    assert_eq!((r.delivered, r.retry_later), (0, 0), "{r:?}");
    assert_eq!(w.erp.len(), 1);
}

async fn delivery_retries_and_dead_letters(store: &TestStore) {
    let w = world_with(store, None, |s| s.delivery.initial_retry_secs = 0);
    {
        let mut st = w.erp.state.lock().unwrap();
        st.reject_names.push("Bad Name".into());
        st.retry_names.push("Busy".into());
        st.fail_pushes = 1;
    }
    w.crm.put("c1", json!({"name": "Bad Name"}));
    w.crm.put("c2", json!({"name": "Busy"}));
    w.crm.put("c3", json!({"name": "Fine"}));
    let r = run(&w, "crm-to-erp").await;
    // The first push fails as a whole (503): all three wait for a retry, and
    // delivery pauses for this run.
    assert_eq!((r.created, r.delivered, r.retry_later), (3, 0, 3), "{r:?}");
    let r = run(&w, "crm-to-erp").await;
    // Then "Bad Name" is rejected for good, "Fine" lands, and "Busy" is
    // retried until its attempts (8) run out.
    assert_eq!(
        (r.delivered, r.dead_lettered, r.retry_later),
        (1, 2, 6),
        "{r:?}"
    );
    assert_eq!(w.erp.len(), 1);
    let dead = store.outbox_dead(Some("erp_main"), 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    let reasons: Vec<&str> = dead
        .iter()
        .filter_map(|d| d.last_error.as_deref())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|e| e.contains("rejected by erp_main: name \"Bad Name\" is not allowed")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|e| e.contains("gave up after 8 attempts")),
        "{reasons:?}"
    );

    // The operator fixes the target and replays the dead letters.
    {
        let mut st = w.erp.state.lock().unwrap();
        st.reject_names.clear();
        st.retry_names.clear();
    }
    assert_eq!(
        store.outbox_requeue(Some("erp_main"), &[]).await.unwrap(),
        2
    );
    let r = run(&w, "crm-to-erp").await;
    assert_eq!((r.delivered, r.dead_lettered), (2, 0), "{r:?}");
    assert_eq!(w.erp.len(), 3);
    // Delivered exactly once each: a further run pushes nothing.
    let before = w.erp.pushes();
    run(&w, "crm-to-erp").await;
    assert_eq!(w.erp.pushes(), before);
}

async fn dry_run_writes_nothing(store: &TestStore) {
    let w = world(store, None);
    w.crm
        .put("c1", json!({"name": "Acme", "email": "a@acme.test"}));
    w.crm.put("c2", json!({"email": "nameless@x.test"}));
    let r = w
        .engine
        .run_job(
            "crm-to-erp",
            RunOptions {
                dry_run: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((r.created, r.quarantined), (1, 1));
    let create = r.changes.iter().find(|c| c.action == "create").unwrap();
    assert!(
        create
            .fields
            .iter()
            .any(|f| f.field == "email" && f.to == Some(json!("a@acme.test")))
    );
    let status = store.status().await.unwrap();
    assert_eq!(status.open_quarantine, 0);
    assert_eq!(customers(store).await, 0);
    assert!(status.cursors.is_empty());
    assert_eq!(w.erp.len(), 0);
}

async fn older_versions_never_overwrite_newer_ones(store: &TestStore) {
    let w = world(store, None);
    w.erp.state.lock().unwrap().fail_pushes = 1;
    w.crm.put("c1", json!({"name": "v1"}));
    let r = run(&w, "crm-to-erp").await;
    assert_eq!(r.retry_later, 1, "version 1 waits for a retry: {r:?}");
    w.crm.edit("c1", "name", json!("v2"));
    let r = run(&w, "crm-to-erp").await;
    assert_eq!((r.updated, r.delivered), (1, 1), "{r:?}");
    assert_eq!(w.erp.get("E1")["customer_name"], "v2");
    // Version 1's create failed, and a failed create may have been made
    // after all: version 2 is created with the record's create key and then
    // sent once more as an update of what that key found. Version 1 itself
    // is never pushed again.
    let pushed = w.erp.state.lock().unwrap().pushed.clone();
    assert_eq!(pushed, ["v2", "v2"], "version 1 was never pushed");
}

async fn a_batch_read_ahead_sees_what_the_batch_before_delivered(store: &TestStore) {
    // One entry per delivery batch: the second batch (version 2 of the same
    // record) is read while the first one (version 1) is being delivered.
    let w = world_with(store, None, |s| s.delivery.batch_size = 1);
    let take_in = RunOptions {
        no_deliver: true,
        ..RunOptions::default()
    };
    // A slow target: the next batch is read during the push, before the
    // batch pushed is settled.
    w.erp.state.lock().unwrap().push_time = Duration::from_millis(200);
    w.crm.put("c1", json!({"name": "v1"}));
    w.engine.run_job("crm-to-erp", take_in).await.unwrap();
    w.crm.edit("c1", "name", json!("v2"));
    w.engine.run_job("crm-to-erp", take_in).await.unwrap();
    w.crm.put("c2", json!({"name": "other"}));
    w.engine.run_job("crm-to-erp", take_in).await.unwrap();

    let r = w.engine.deliver_all(None).await.unwrap();
    // The first batch creates the record at its head version; the second
    // finds the target holding that version instead of creating it again.
    assert_eq!((r.delivered, r.delivery_skipped), (2, 1), "{r:?}");
    assert_eq!(w.erp.len(), 2, "one record at the target per record");
    assert_eq!(w.erp.state.lock().unwrap().pushed, ["v2", "other"]);
    assert_eq!(w.erp.get("E1")["customer_name"], "v2");
}

async fn concurrent_changes_to_different_fields_reach_both_sides(store: &TestStore) {
    let w = world(store, None);
    w.crm.put(
        "c1",
        json!({"name": "Acme", "email": "a@acme.test", "phone": "+41 1"}),
    );
    run(&w, "crm-to-erp").await;
    run(&w, "erp-to-crm").await;
    w.erp.edit("E1", "mail", json!("billing@acme.test"));
    w.crm.edit("c1", "name", json!("Acme AG"));
    let b = run(&w, "erp-to-crm").await;
    assert_eq!(
        (b.updated, b.merged_from_targets, b.conflicts),
        (1, 1, 0),
        "{b:?}"
    );
    // The CRM receives the ERP's e-mail even though its own rename made a
    // newer canonical version in between, and keeps its rename and phone.
    assert_eq!(w.crm.get("c1")["email"], "billing@acme.test");
    assert_eq!(w.crm.get("c1")["name"], "Acme AG");
    assert_eq!(w.crm.get("c1")["phone"], "+41 1");
    run(&w, "crm-to-erp").await;
    assert_eq!(w.erp.get("E1")["customer_name"], "Acme AG");
    assert_eq!(w.erp.get("E1")["mail"], "billing@acme.test");
    // And it settles.
    let (a, b) = (run(&w, "crm-to-erp").await, run(&w, "erp-to-crm").await);
    assert_eq!((a.delivered, b.delivered), (0, 0), "{a:?} {b:?}");
}

async fn a_system_that_loses_a_field_gets_the_winner(store: &TestStore) {
    let m: MergePolicies =
        toml::from_str(r#"policy = { priority = ["crm_main", "erp_main"] }"#).unwrap();
    let w = world(store, Some(m));
    w.crm
        .put("c1", json!({"name": "Acme", "email": "a@acme.test"}));
    run(&w, "crm-to-erp").await;
    run(&w, "erp-to-crm").await;
    w.crm.edit("c1", "name", json!("Acme (CRM)"));
    w.erp.edit("E1", "customer_name", json!("Acme (ERP)"));
    let a = run(&w, "crm-to-erp").await;
    assert_eq!(a.conflicts, 0, "settled by priority, not parked: {a:?}");
    assert_eq!(
        w.erp.get("E1")["customer_name"],
        "Acme (CRM)",
        "the ERP is corrected"
    );
    assert_eq!(w.crm.get("c1")["name"], "Acme (CRM)");
    let (a, b) = (run(&w, "crm-to-erp").await, run(&w, "erp-to-crm").await);
    assert_eq!(
        (a.delivered, b.delivered, a.updated, b.updated),
        (0, 0, 0, 0),
        "{a:?} {b:?}"
    );
}

/// A record synced between CRM and ERP whose e-mail (a manual field) both
/// then change: the CRM's value waits in a conflict, the ERP's is ours.
async fn email_conflict(store: &TestStore) -> (World, concord::store::Conflict) {
    let mut m = MergePolicies::default();
    m.fields.insert("email".into(), Policy::MANUAL);
    let w = world(store, Some(m));
    w.crm
        .put("c1", json!({"name": "Acme", "email": "a@acme.test"}));
    run(&w, "crm-to-erp").await;
    run(&w, "erp-to-crm").await;
    w.crm.edit("c1", "email", json!("crm@acme.test"));
    w.erp.edit("E1", "mail", json!("erp@acme.test"));
    run(&w, "erp-to-crm").await;
    let mut open = store.conflicts(None, false, 10).await.unwrap();
    assert_eq!(open.len(), 1);
    (w, open.remove(0))
}

/// `--take SYSTEM` takes the value that system holds, read from its link
/// (what it last synced with the record), not whatever the canonical
/// value is: with three systems on a record those differ.
async fn taking_a_system_takes_the_value_it_holds(store: &TestStore) {
    let (w, c) = email_conflict(store).await;
    let c = &c;
    assert_eq!(c.source_system, "crm_main");

    let refused = w
        .engine
        .resolve_conflict(c.id, Choice::System("nowhere".into()), "ada", None)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("nowhere is not linked to customer"),
        "{refused}"
    );
    w.engine
        .resolve_conflict(c.id, Choice::System("erp_main".into()), "ada", None)
        .await
        .unwrap();
    let rec = store
        .get_record(EntityKind::Customer, &c.canonical_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.data["email"], "erp@acme.test");
    let all = store.conflicts(None, true, 10).await.unwrap();
    assert_eq!(
        all[0].resolution.as_deref(),
        Some("took erp_main's value"),
        "{all:?}"
    );
}

async fn resolving_a_conflict_writes_a_version_and_delivers(store: &TestStore) {
    let (w, c) = email_conflict(store).await;
    let c = &c;
    assert_eq!(
        (c.field_path.as_str(), c.source_system.as_str()),
        ("email", "crm_main")
    );
    assert_eq!(c.theirs, Some(json!("crm@acme.test")));

    let version = w
        .engine
        .resolve_conflict(c.id, Choice::Theirs, "ada", Some("the CRM is right"))
        .await
        .unwrap();
    let r = w.engine.deliver_all(None).await.unwrap();
    assert!(r.delivered >= 1, "{r:?}");
    assert_eq!(w.erp.get("E1")["mail"], "crm@acme.test");
    assert_eq!(w.crm.get("c1")["email"], "crm@acme.test");
    let rec = store
        .get_record(EntityKind::Customer, &c.canonical_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.version, rec.data["email"].as_str()),
        (version, Some("crm@acme.test"))
    );
    let history = store
        .history(EntityKind::Customer, &c.canonical_id)
        .await
        .unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.provenance.actor.as_deref(), Some("ada"));
    let closed = store.conflict(c.id).await.unwrap().unwrap();
    assert_eq!(closed.status, "resolved");
    assert_eq!(
        closed.resolution.as_deref(),
        Some("took crm_main's value: the CRM is right")
    );

    let again = w
        .engine
        .resolve_conflict(c.id, Choice::Ours, "ada", None)
        .await
        .unwrap_err();
    assert!(
        again.to_string().contains("resolved already (by ada)"),
        "{again}"
    );
    // Settled.
    let (a, b) = (run(&w, "crm-to-erp").await, run(&w, "erp-to-crm").await);
    assert_eq!(
        (a.delivered, b.delivered, a.conflicts, b.conflicts),
        (0, 0, 0, 0),
        "{a:?} {b:?}"
    );
}

/// A delivery held for open conflicts is due again as soon as the last
/// conflict with that target on the record is resolved, even when the
/// decision writes no new version (keeping ours).
async fn resolving_the_last_conflict_releases_held_deliveries(store: &TestStore) {
    let mut m = MergePolicies::default();
    m.fields.insert("email".into(), Policy::MANUAL);
    m.fields.insert("name".into(), Policy::MANUAL);
    let w = world(store, Some(m));
    w.crm.put(
        "c1",
        json!({"name": "Acme", "email": "a@acme.test", "vat": "CHE-1"}),
    );
    run(&w, "crm-to-erp").await;
    run(&w, "erp-to-crm").await;
    // Two fields contested by the CRM; the ERP's new tax id must reach it.
    w.crm.edit("c1", "email", json!("crm@acme.test"));
    w.crm.edit("c1", "name", json!("Acme CRM"));
    w.erp.edit("E1", "mail", json!("erp@acme.test"));
    w.erp.edit("E1", "customer_name", json!("Acme ERP"));
    w.erp.edit("E1", "tax", json!("CHE-2"));
    let b = run(&w, "erp-to-crm").await;
    assert_eq!((b.conflicts, b.held), (2, 1), "{b:?}");
    let open = store.conflicts(None, false, 10).await.unwrap();
    assert_eq!(open.len(), 2, "{open:?}");
    let before = store
        .get_record(EntityKind::Customer, &open[0].canonical_id)
        .await
        .unwrap()
        .unwrap()
        .version;

    // One of two decided: the CRM still waits.
    let v = w
        .engine
        .resolve_conflict(open[0].id, Choice::Ours, "ada", None)
        .await
        .unwrap();
    assert_eq!(v, before, "keeping ours writes no version");
    let r = w.engine.deliver_all(Some("crm_main")).await.unwrap();
    assert_eq!((r.delivered, r.held), (0, 0), "not due yet: {r:?}");
    assert_eq!(w.crm.get("c1")["vat"], "CHE-1");

    // The last one decided, again without a new version: the held
    // delivery is due at once, not in ten minutes.
    let v = w
        .engine
        .resolve_conflict(open[1].id, Choice::Ours, "ada", None)
        .await
        .unwrap();
    assert_eq!(v, before);
    let r = w.engine.deliver_all(Some("crm_main")).await.unwrap();
    assert_eq!((r.delivered, r.held), (1, 0), "{r:?}");
    let crm = w.crm.get("c1");
    assert_eq!(
        (&crm["vat"], &crm["name"], &crm["email"]),
        (&json!("CHE-2"), &json!("Acme ERP"), &json!("erp@acme.test"))
    );
}

/// Two ERP customers, taken in apart, that then share an email
/// (bern@acme.test): a CRM record with it has two candidates. Returns the
/// run options used (no delivery).
async fn acme_twice_in_the_erp(w: &World) -> RunOptions {
    let quiet = RunOptions {
        no_deliver: true,
        ..RunOptions::default()
    };
    w.erp.put(
        "e-1",
        json!({"customer_name": "Acme Bern", "mail": "bern@acme.test"}),
    );
    w.erp.put(
        "e-2",
        json!({"customer_name": "Acme Basel", "mail": "basel@acme.test"}),
    );
    w.engine.run_job("erp-to-crm", quiet).await.unwrap();
    w.erp.edit("e-2", "mail", json!("bern@acme.test"));
    w.engine.run_job("erp-to-crm", quiet).await.unwrap();
    quiet
}

/// A record whose identity is in question opens a conflict each time it
/// arrives changed while unlinked. Once one of them is resolved, the others
/// cannot decide again: that would move the link and leave the record the
/// first decision made (delivered to the targets already) behind as a
/// duplicate.
async fn a_second_identity_conflict_of_a_record_cannot_move_its_link(store: &TestStore) {
    let w = world(store, None);
    let quiet = acme_twice_in_the_erp(&w).await;
    w.crm
        .put("c1", json!({"name": "Acme", "email": "bern@acme.test"}));
    let a = w.engine.run_job("crm-to-erp", quiet).await.unwrap();
    assert_eq!(a.conflicts, 1, "{a:?}");
    // Edited at the CRM before anyone decided: read again, still unlinked.
    w.crm.edit("c1", "phone", json!("+41 31"));
    let b = w.engine.run_job("crm-to-erp", quiet).await.unwrap();
    assert_eq!(b.conflicts, 1, "{b:?}");
    let open = store.conflicts(None, false, 10).await.unwrap();
    assert_eq!(open.len(), 2);
    let (first, second) = (open[0].id, open[1].id);

    w.engine
        .resolve_conflict(first, Choice::Theirs, "ada", None)
        .await
        .unwrap();
    let made = store
        .find_link(EntityKind::Customer, "crm_main", "c1")
        .await
        .unwrap()
        .unwrap()
        .canonical_id;
    assert_eq!(customers(store).await, 3);

    let refused = w
        .engine
        .resolve_conflict(second, Choice::Theirs, "ada", None)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains(&format!("is linked to {made} already")),
        "{refused}"
    );
    assert_eq!(customers(store).await, 3, "no second record made");
    let linked = store
        .find_link(EntityKind::Customer, "crm_main", "c1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(linked.canonical_id, made, "the link stays");

    // Taking the record it is linked to closes the conflict, changing nothing.
    w.engine
        .resolve_conflict(second, Choice::Link(made.clone()), "ada", Some("seen"))
        .await
        .unwrap();
    assert!(store.conflicts(None, false, 10).await.unwrap().is_empty());
    assert_eq!(customers(store).await, 3);
}

async fn identity_conflicts_are_resolved_by_linking_or_creating(store: &TestStore) {
    let w = world(store, None);
    let quiet = acme_twice_in_the_erp(&w).await;
    w.crm.put(
        "c1",
        json!({"name": "Acme", "email": "bern@acme.test", "phone": "+41 31"}),
    );
    w.crm
        .put("c2", json!({"name": "Acme too", "email": "BERN@acme.test"}));
    let a = w.engine.run_job("crm-to-erp", quiet).await.unwrap();
    assert_eq!(a.conflicts, 2, "{a:?}");
    let open = store.conflicts(None, false, 10).await.unwrap();
    let (first, second) = (&open[0], &open[1]);
    let candidates: Vec<String> = first
        .ours
        .as_ref()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(candidates.len(), 2);

    // The operator checked: c1 is e-1's customer.
    let e1 = store
        .find_link(EntityKind::Customer, "erp_main", "e-1")
        .await
        .unwrap()
        .unwrap()
        .canonical_id;
    let stranger = concord::model::CanonicalId::new();
    let refused = w
        .engine
        .resolve_conflict(first.id, Choice::Link(stranger), "ada", None)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("is not one of the candidates"),
        "{refused}"
    );
    w.engine
        .resolve_conflict(first.id, Choice::Link(e1.clone()), "ada", None)
        .await
        .unwrap();
    let c1 = store
        .find_link(EntityKind::Customer, "crm_main", "c1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c1.canonical_id, e1);
    let rec = store
        .get_record(EntityKind::Customer, &e1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.data["phone"], "+41 31", "the CRM's fields merged in");
    assert_eq!(rec.data["name"], "Acme Bern");

    // c2 cannot also be e-1's (one record per system) …
    let refused = w
        .engine
        .resolve_conflict(second.id, Choice::Link(e1.clone()), "ada", None)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("already linked to crm_main c1"),
        "{refused}"
    );
    let bad = w
        .engine
        .resolve_conflict(second.id, Choice::Value(json!(1)), "ada", None)
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("take a candidate id"), "{bad}");
    // … so it becomes a record of its own.
    w.engine
        .resolve_conflict(second.id, Choice::Theirs, "ada", None)
        .await
        .unwrap();
    let c2 = store
        .find_link(EntityKind::Customer, "crm_main", "c2")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(c2.canonical_id, e1);
    assert_eq!(store.status().await.unwrap().open_conflicts, 0);
    assert_eq!(customers(store).await, 3);
}

async fn quarantined_records_replay_after_a_fix(store: &TestStore) {
    let w = world(store, None);
    w.crm
        .put("c1", json!({"email": "nameless@x.test", "vat": "X-1"}));
    let r = run(&w, "crm-to-erp").await;
    assert_eq!(r.quarantined, 1);
    let q = store.quarantined_open(&[], 10).await.unwrap();
    assert_eq!(q.len(), 1);

    // Still failing: quarantined anew, the old entry closed.
    let r = w.engine.replay_quarantine(&[]).await.unwrap();
    assert_eq!((r.pulled, r.quarantined), (1, 1));
    let q = store.quarantined_open(&[], 10).await.unwrap();
    assert_eq!(q.len(), 1);

    // The mapping is fixed: a default name.
    let dir = w._dir.path();
    let text = std::fs::read_to_string(dir.join("crm-in.toml")).unwrap();
    std::fs::write(
        dir.join("crm-in.toml"),
        text.replace(
            r#"name = { from = "name", required = true }"#,
            r#"name = { from = "name", default = "(no name)" }"#,
        ),
    )
    .unwrap();
    let fixed = world_reusing(store, &w);
    let r = fixed.replay_quarantine(&[q[0].id]).await.unwrap();
    assert_eq!((r.created, r.quarantined), (1, 0), "{r:?}");
    assert!(store.quarantined_open(&[], 10).await.unwrap().is_empty());
    let link = store
        .find_link(EntityKind::Customer, "crm_main", "c1")
        .await
        .unwrap()
        .unwrap();
    let rec = store
        .get_record(EntityKind::Customer, &link.canonical_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.data["name"], "(no name)");
    let err = fixed.replay_quarantine(&[q[0].id]).await.unwrap_err();
    assert!(err.to_string().contains("not open in quarantine"), "{err}");
}

/// Two entities of one system instance used as the same canonical entity
/// would share one id space in the links: refused, naming the remedy.
#[tokio::test]
async fn two_entities_of_one_instance_as_one_canonical_entity_are_refused() {
    let store = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    write_mappings(dir.path());
    let mut settings = settings_in(dir.path());
    let job = |name: &str, entity: &str| JobSettings {
        name: name.into(),
        schedule: None,
        source: Endpoint {
            system: "crm_main".into(),
            entity: entity.into(),
            mapping: "crm-customer-in".into(),
        },
        targets: vec![endpoint("erp_main", "erp-customer-out")],
        identity: vec!["tax_id".into()],
        batch_size: 10,
        timezone: None,
    };
    settings.jobs = vec![job("companies", "company"), job("contacts", "contact")];
    let crm = Memory::new("crm_main", "C");
    let erp = Memory::new("erp_main", "E");
    let err = Engine::with_connectors(settings.clone(), store.store.clone(), attached(&crm, &erp))
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("systems.crm_main: jobs use its entities company, contact all as customer")
            && text.contains("one [systems] instance per entity"),
        "{text}"
    );
    // One instance per entity passes.
    let mut settings = settings;
    settings
        .systems
        .insert("crm_contacts".into(), settings.systems["crm_main"].clone());
    settings.jobs[1].source.system = "crm_contacts".into();
    let mut connectors = attached(&crm, &erp);
    connectors.insert("crm_contacts".into(), Memory::new("crm_contacts", "K"));
    Engine::with_connectors(settings, store.store.clone(), connectors).unwrap();
}

/// A record that arrives again exactly as before is unchanged without being
/// mapped (its link keeps the hash of how it arrived, with the mapping's
/// fingerprint). An edited mapping maps every record again: one whose
/// result changes is updated, one whose result does not gets its new
/// source hash.
async fn unchanged_records_are_known_by_how_they_arrived_until_the_mapping_changes(
    store: &TestStore,
) {
    let w = world(store, None);
    w.crm.put(
        "c1",
        json!({"name": "Acme AG", "email": "AP@Acme.test", "vat": "CHE-1"}),
    );
    w.crm.put(
        "c2",
        json!({"name": "Globex", "email": "billing@globex.test", "vat": "US-2"}),
    );
    let full = RunOptions {
        full: true,
        ..RunOptions::default()
    };
    let r = w.engine.run_job("crm-to-erp", full).await.unwrap();
    assert_eq!(r.created, 2, "{r:?}");
    let source_hashes = || async {
        let found = store
            .synced_hashes(
                EntityKind::Customer,
                "crm_main",
                &["c1".to_string(), "c2".to_string()],
            )
            .await
            .unwrap();
        ["c1", "c2"]
            .iter()
            .map(|id| found[*id].source.clone())
            .collect::<Vec<_>>()
    };
    let first = source_hashes().await;
    assert!(first.iter().all(Option::is_some), "{first:?}");
    let r = w.engine.run_job("crm-to-erp", full).await.unwrap();
    assert_eq!((r.pulled, r.unchanged, r.updated), (2, 2, 0), "{r:?}");
    assert_eq!(source_hashes().await, first);

    // The mapping now spells e-mail addresses in capitals: both change.
    let path = w._dir.path().join("crm-in.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(r#"pipe = ["trim", "lower"]"#, r#"pipe = ["trim", "upper"]"#),
    )
    .unwrap();
    let engine = world_reusing(store, &w);
    let r = engine.run_job("crm-to-erp", full).await.unwrap();
    assert_eq!((r.unchanged, r.updated), (0, 2), "{r:?}");
    let link = store
        .find_link(EntityKind::Customer, "crm_main", "c1")
        .await
        .unwrap()
        .unwrap();
    let record = store
        .get_record(EntityKind::Customer, &link.canonical_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.data["email"], "AP@ACME.TEST");
    let second = source_hashes().await;
    assert!(second.iter().all(Option::is_some) && second != first);

    // An edit that changes no result: unchanged, and remembered anew.
    std::fs::write(
        &path,
        format!(
            "# e-mail addresses in capitals\n{}",
            std::fs::read_to_string(&path).unwrap()
        ),
    )
    .unwrap();
    let engine = world_reusing(store, &w);
    let r = engine.run_job("crm-to-erp", full).await.unwrap();
    assert_eq!((r.unchanged, r.updated), (2, 0), "{r:?}");
    let third = source_hashes().await;
    assert!(third.iter().all(Option::is_some) && third != second);
    let r = engine.run_job("crm-to-erp", full).await.unwrap();
    assert_eq!((r.unchanged, r.updated), (2, 0), "{r:?}");
    assert_eq!(source_hashes().await, third);
}

/// A source that hands out only so many pages before they are acknowledged
/// (a queue's prefetch window of two pages) is read to its end in one run:
/// the engine holds no more of its pages at once than the one committing
/// and the one being prepared.
async fn a_source_whose_pages_wait_for_their_ack_is_read_to_its_end(store: &TestStore) {
    let w = world(store, None);
    w.crm.state.lock().unwrap().window = Some(2);
    for n in 0..10 {
        w.crm.put(
            &format!("c{n}"),
            json!({"name": format!("Customer {n}"), "email": format!("ap{n}@example.com"), "vat": format!("DE{n:09}")}),
        );
    }
    let r = run(&w, "crm-to-erp").await;
    assert_eq!((r.pulled, r.created, r.delivered), (10, 10, 10), "{r:?}");
    assert_eq!(w.erp.len(), 10);
    assert_eq!(
        w.crm.unacked.load(Ordering::SeqCst),
        0,
        "every page acknowledged"
    );
}
