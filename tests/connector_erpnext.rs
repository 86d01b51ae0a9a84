//! The shipped ERPNext definition (`connectors/erpnext.toml`) through the
//! `http` driver, against a local server that behaves as Frappe's REST API
//! does (`tests/support/erpnext.rs`).

#[path = "support/erpnext.rs"]
mod erpnext;
mod support;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use concord::connector::conformance::{self, Fault, Seed};
use concord::connector::{
    Change, Connector, ConnectorError, Cursor, ErrorKind, Instance, PushOutcome, RawRecord,
};
use concord::mapping::{self, Lookups};
use concord::model::ExternalId;
use erpnext::Erpnext;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// The shipped definition with short timeouts and retries, so that staged
/// faults surface in a second.
const TEST_PROFILE: &[(&str, &str)] = &[
    ("timeout_secs = 60", "timeout_secs = 1"),
    (
        "retry = { max_attempts = 5, initial_delay_ms = 500, max_delay_ms = 30000 }",
        "retry = { max_attempts = 2, initial_delay_ms = 10, max_delay_ms = 1000 }",
    ),
    (
        "rate_limit = { per_second = 10, burst = 10 }",
        "rate_limit = { per_second = 1000, burst = 100 }",
    ),
];

fn instance(site: &Erpnext, secret: &str) -> Instance {
    // `base_url = "https://${site}"`: the instance's base URL replaces it.
    Instance::bare("erpnext_test")
        .with_base_url(site.base_url.clone())
        .with_var("site", "erp.example.com")
        .with_var("api_key", erpnext::API_KEY)
        .with_var("api_secret", secret)
        // The mock site keeps its times in UTC.
        .with_var("timezone", "UTC")
}

fn shipped(site: &Erpnext) -> Arc<dyn Connector> {
    support::open(
        &support::definition("erpnext"),
        &instance(site, erpnext::API_SECRET),
    )
}

async fn pull_all(
    c: &dyn Connector,
    entity: &str,
    cursor: Option<Cursor>,
) -> (Vec<RawRecord>, Vec<Cursor>, Option<ConnectorError>) {
    let mut stream = c.pull(entity, cursor);
    let (mut records, mut cursors) = (Vec::new(), Vec::new());
    while let Some(page) = stream.next().await {
        match page {
            Ok(p) => {
                records.extend(p.records);
                cursors.push(p.cursor);
            }
            Err(e) => return (records, cursors, Some(e)),
        }
    }
    (records, cursors, None)
}

fn ids(records: &[RawRecord]) -> Vec<&str> {
    records.iter().map(|r| r.external_id.as_str()).collect()
}

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap() + Span::minutes(minutes)
}

fn change(key: &str, id: Option<&str>, data: Value) -> Change {
    Change {
        idempotency_key: key.to_owned(),
        external_id: id.map(|i| ExternalId::parse(i).unwrap()),
        data,
    }
}

fn mapping_of(file: &str) -> concord::mapping::Mapping {
    mapping::load_file(&support::root().join("mappings/erpnext").join(file)).unwrap()
}

/// Applies an inbound mapping with every lookup answered.
fn map_in(
    m: &concord::mapping::Mapping,
    data: &Value,
) -> Result<Value, Vec<concord::mapping::RecordError>> {
    let mut lookups = Lookups::default();
    for k in m.lookup_keys(data) {
        lookups.insert(
            k.entity,
            &k.system,
            &k.value,
            &format!("canonical-of-{}", k.value.replace(' ', "_")),
        );
    }
    m.apply_canonical(data, &lookups)
}

// ---------------------------------------------------------------------------
// The conformance kit, over customers

struct Customers {
    site: Erpnext,
    connector: Arc<dyn Connector>,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl conformance::Harness for Customers {
    fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }
    fn entity(&self) -> &str {
        "customer"
    }
    fn page_size(&self) -> usize {
        100
    }
    async fn seed(&self, records: &[Seed]) -> anyhow::Result<()> {
        let mut s = self.site.lock();
        s.clear("Customer");
        for r in records {
            s.put(
                "Customer",
                &r.id,
                json!({ "customer_name": r.name }),
                r.updated_at,
            );
        }
        Ok(())
    }
    async fn upsert(&self, records: &[Seed]) -> anyhow::Result<()> {
        let mut s = self.site.lock();
        for r in records {
            s.put(
                "Customer",
                &r.id,
                json!({ "customer_name": r.name }),
                r.updated_at,
            );
        }
        Ok(())
    }
    async fn stored(&self) -> anyhow::Result<std::collections::BTreeMap<String, Value>> {
        Ok(self.site.lock().docs["Customer"]
            .iter()
            .map(|(name, doc)| (name.clone(), Value::Object(doc.clone())))
            .collect())
    }
    fn push_body(&self, n: usize) -> Value {
        json!({ "customer_name": format!("pushed {n}"), "customer_type": "Company" })
    }
    async fn inject(&self, fault: Fault) -> anyhow::Result<bool> {
        self.site.lock().fault = Some(match fault {
            Fault::Unauthorized => erpnext::Fault::Unauthorized,
            Fault::RateLimited { retry_after_secs } => erpnext::Fault::RateLimited {
                retry_after: retry_after_secs,
            },
            Fault::Unavailable => erpnext::Fault::BadGateway,
            Fault::Timeout => erpnext::Fault::Stall(std::time::Duration::from_secs(3)),
            Fault::Malformed => erpnext::Fault::Truncated,
        });
        Ok(true)
    }
    async fn heal(&self) -> anyhow::Result<()> {
        self.site.lock().fault = None;
        Ok(())
    }
}

#[tokio::test]
async fn customers_pass_the_conformance_kit() {
    let site = Erpnext::start().await;
    let (dir, def) = support::definition_variant("erpnext", TEST_PROFILE);
    let connector = support::open(&def, &instance(&site, erpnext::API_SECRET));
    let h = Customers {
        site,
        connector,
        _dir: dir,
    };
    conformance::pull_pages(&h).await.unwrap();
    conformance::resume_from_cursor(&h).await.unwrap();
    conformance::change_during_pull(&h).await.unwrap();
    conformance::idempotent_push(&h).await.unwrap();
    let tested = conformance::classify_errors(&h).await.unwrap();
    assert_eq!(tested.len(), 5, "{tested:?}");
    let s = h.site.lock();
    // Pull lists, not the look-ups before creates.
    let lists: Vec<_> = s
        .seen("GET", "/api/resource/Customer")
        .into_iter()
        .filter(|r| r.query.get("fields").map(String::as_str) == Some(r#"["*"]"#))
        .collect();
    assert!(
        lists.iter().any(|r| r.query.contains_key("filters")),
        "no incremental list"
    );
    assert!(
        lists
            .iter()
            .all(|r| r.query["order_by"] == "modified asc, name asc")
    );
}

// ---------------------------------------------------------------------------
// A site with one of each

fn seed_site(site: &Erpnext) {
    let mut s = site.lock();
    s.put(
        "Customer",
        "Acme GmbH",
        json!({
            "customer_name": "Acme  GmbH",
            "customer_type": "Company",
            "customer_group": "Commercial",
            "territory": "Germany",
            "tax_id": "DE123456789",
            "default_currency": "EUR",
            "disabled": 0,
            "email_id": "ap@acme.example",
            "mobile_no": "+49 30 1234567"
        }),
        at(0),
    );
    s.put(
        "Sales Order",
        "SAL-ORD-2026-00001",
        json!({
            "customer": "Acme GmbH",
            "customer_name": "Acme GmbH",
            "transaction_date": "2026-11-02",
            "delivery_date": "2026-11-20",
            "po_no": "PO-778",
            "currency": "EUR",
            "net_total": 1000.0,
            "grand_total": 1190.0,
            "status": "To Deliver and Bill",
            "docstatus": 1,
            "items": [{
                "item_code": "WID-1", "item_name": "Widget", "description": "Widget, blue",
                "qty": 10.0, "rate": 100.0, "amount": 1000.0, "uom": "Nos", "delivery_date": "2026-11-20"
            }]
        }),
        at(1),
    );
    s.put(
        "Sales Invoice",
        "ACC-SINV-2026-00001",
        json!({
            "customer": "Acme GmbH",
            "customer_name": "Acme GmbH",
            "posting_date": "2026-11-03",
            "due_date": "2026-12-03",
            "currency": "EUR",
            "grand_total": 1190.0,
            "rounding_adjustment": 0.0,
            "rounded_total": 1190.0,
            "outstanding_amount": 590.0,
            "is_return": 0,
            "status": "Partly Paid",
            "docstatus": 1,
            "items": [{ "item_code": "WID-1", "qty": 10.0, "rate": 100.0, "amount": 1000.0 }]
        }),
        at(2),
    );
    s.put(
        "Sales Invoice",
        "ACC-SINV-2026-00002",
        json!({
            "customer": "Acme GmbH",
            "posting_date": "2026-11-04",
            "currency": "EUR",
            "grand_total": -119.0,
            "outstanding_amount": 0.0,
            "is_return": 1,
            "status": "Return",
            "docstatus": 1
        }),
        at(3),
    );
    s.put(
        "Payment Entry",
        "ACC-PAY-2026-00001",
        json!({
            "payment_type": "Receive",
            "party_type": "Customer",
            "party": "Acme GmbH",
            "posting_date": "2026-11-05",
            "mode_of_payment": "Wire Transfer",
            "paid_amount": 600.0,
            "received_amount": 600.0,
            "paid_from_account_currency": "EUR",
            "paid_to_account_currency": "EUR",
            "unallocated_amount": 0.0,
            "reference_no": "RF18539007547034",
            "reference_date": "2026-11-05",
            "docstatus": 1,
            "references": [{
                "reference_doctype": "Sales Invoice",
                "reference_name": "ACC-SINV-2026-00001",
                "allocated_amount": 600.0
            }]
        }),
        at(4),
    );
    s.put(
        "Payment Entry",
        "ACC-PAY-2026-00002",
        json!({
            "payment_type": "Pay",
            "party_type": "Supplier",
            "party": "Office Supplies AG",
            "posting_date": "2026-11-05",
            "paid_amount": 80.0,
            "docstatus": 1
        }),
        at(5),
    );
}

#[tokio::test]
async fn records_pulled_with_the_shipped_definition_go_through_the_inbound_mappings() {
    let site = Erpnext::start().await;
    seed_site(&site);
    let c = shipped(&site);
    c.healthcheck().await.unwrap();

    let (customers, _, err) = pull_all(c.as_ref(), "customer", None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&customers), ["Acme GmbH"]);
    let customer = map_in(&mapping_of("customer.in.toml"), &customers[0].data).unwrap();
    assert_eq!(customer["name"], "Acme GmbH");
    assert_eq!(customer["status"], "active");
    assert_eq!(customer["tax_id"], "DE123456789");

    // Returns are filtered out at the source.
    let (invoices, _, err) = pull_all(c.as_ref(), "sales_invoice", None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&invoices), ["ACC-SINV-2026-00001"]);
    let invoice = map_in(&mapping_of("sales_invoice.in.toml"), &invoices[0].data).unwrap();
    assert_eq!(invoice["status"], "partially_paid");
    assert_eq!(invoice["open_amount"], "590.0");

    // Only money received from customers.
    let (payments, _, err) = pull_all(c.as_ref(), "payment_entry", None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&payments), ["ACC-PAY-2026-00001"]);

    // Lists never carry child tables: sales orders and payment entries are
    // fetched whole after their lists, and map completely.
    let (orders, _, err) = pull_all(c.as_ref(), "sales_order", None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&orders), ["SAL-ORD-2026-00001"]);
    let order = map_in(&mapping_of("sales_order.in.toml"), &orders[0].data).unwrap();
    assert_eq!(order["lines"][0]["sku"], "WID-1");
    assert_eq!(order["status"], "open");
    let payment = map_in(&mapping_of("payment_entry.in.toml"), &payments[0].data).unwrap();
    assert_eq!(
        payment["allocations"][0]["invoice"],
        "canonical-of-ACC-SINV-2026-00001"
    );
    assert_eq!(payment["method"], "bank_transfer");
    // Sales invoices are read from their list alone.
    assert!(invoices[0].data.get("items").is_none());

    let s = site.lock();
    let list = &s.seen("GET", "/api/resource/Sales Order")[0];
    assert_eq!(list.query["fields"], r#"["*"]"#);
    assert_eq!(list.query["limit_page_length"], "100");
    assert_eq!(list.query["limit_start"], "0");
    assert_eq!(
        s.seen("GET", "/api/resource/Sales Order/SAL-ORD-2026-00001")
            .len(),
        1
    );
    assert_eq!(
        s.seen("GET", "/api/resource/Payment Entry/ACC-PAY-2026-00001")
            .len(),
        1
    );
    assert!(
        s.requests
            .iter()
            .all(|r| !r.path.starts_with("/api/resource/Sales Invoice/"))
    );
}

/// Fetching each listed document: `concurrency` at a time (4 in the
/// shipped definition), in the list's order, and a document deleted between
/// the list and its fetch is left out. The cursor follows the list.
#[tokio::test]
async fn listed_documents_are_fetched_whole_a_few_at_a_time() {
    let site = Erpnext::start().await;
    {
        let mut s = site.lock();
        for i in 0..12 {
            s.put(
                "Sales Order",
                &format!("SO-{i:02}"),
                json!({ "customer": "Acme GmbH", "items": [{ "item_code": format!("I{i}"), "qty": 1.0, "rate": 1.0, "amount": 1.0 }] }),
                at(i),
            );
        }
        s.get_delay = Some(std::time::Duration::from_millis(30));
    }
    // SO-05 is deleted after the list is read, before it is fetched.
    site.lock().delete_on_first_get = Some(("Sales Order".into(), "SO-05".into()));
    let c = shipped(&site);
    let mut stream = c.pull("sales_order", None);
    let page = stream.next().await.unwrap().unwrap();
    assert!(stream.next().await.is_none());
    let names = ids(&page.records);
    let want: Vec<String> = (0..12)
        .filter(|i| *i != 5)
        .map(|i| format!("SO-{i:02}"))
        .collect();
    assert_eq!(names, want);
    assert!(
        page.records
            .iter()
            .all(|r| r.data["items"][0]["item_code"].is_string())
    );
    assert_eq!(page.cursor, Cursor::at(at(11), "SO-11"));
    let s = site.lock();
    assert_eq!(s.max_gets_in_flight, 4, "at most `concurrency` at once");
}

#[tokio::test]
async fn incremental_pulls_filter_on_modified_in_the_sites_time() {
    let site = Erpnext::start().await;
    seed_site(&site);
    {
        let mut s = site.lock();
        for i in 1..=5 {
            s.put(
                "Customer",
                &format!("C{i}"),
                json!({ "customer_name": format!("C{i}") }),
                at(10 * i),
            );
        }
    }
    let c = shipped(&site);
    let (records, cursors, err) =
        pull_all(c.as_ref(), "customer", Some(Cursor::at(at(30), "C3"))).await;
    assert!(err.is_none(), "{err:?}");
    // From the cursor minus the two-minute look-back.
    assert_eq!(ids(&records), ["C3", "C4", "C5"]);
    assert_eq!(cursors.last().unwrap(), &Cursor::at(at(50), "C5"));
    {
        let s = site.lock();
        let list = s.seen("GET", "/api/resource/Customer").pop().unwrap();
        let filters: Value = serde_json::from_str(&list.query["filters"]).unwrap();
        assert_eq!(filters, json!([["modified", ">=", "2026-11-02 09:28:00"]]));
    }
    // The sales invoices' own filter stays with the time filter.
    let (records, _, err) =
        pull_all(c.as_ref(), "sales_invoice", Some(Cursor::at(at(0), ""))).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&records), ["ACC-SINV-2026-00001"]);
}

// ---------------------------------------------------------------------------
// Pushes

#[tokio::test]
async fn customer_pushes_report_each_record_with_frappes_words() {
    let site = Erpnext::start().await;
    let c = shipped(&site);
    let out_mapping = mapping_of("customer.out.toml");
    let good = out_mapping
        .apply(
            &json!({
                "name": "Northwind Traders",
                "tax_id": "US12-3456789",
                "email": "ap@northwind.example",
                "phone": "+16175550134",
                "currency": "USD",
                "status": "active"
            }),
            &Lookups::default(),
        )
        .unwrap();
    let out = c
        .push(
            "customer",
            vec![
                change("customer:n:1:erpnext", None, good),
                change(
                    "customer:x:1:erpnext",
                    None,
                    json!({ "customer_type": "Company" }),
                ),
                change(
                    "customer:y:1:erpnext",
                    None,
                    json!({ "customer_name": "Yoyodyne", "customer_group": "Nope" }),
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        out[0],
        PushOutcome::Created {
            external_id: ExternalId::parse("Northwind Traders").unwrap()
        }
    );
    match (&out[1], &out[2]) {
        (PushOutcome::Rejected { message: missing }, PushOutcome::Rejected { message: link }) => {
            assert!(
                missing.contains("Value missing for Customer: Customer Name"),
                "{missing}"
            );
            assert!(missing.contains("417"), "{missing}");
            assert!(
                link.contains("Could not find Customer Group: Nope"),
                "{link}"
            );
        }
        other => panic!("{other:?}"),
    }
    {
        let s = site.lock();
        let doc = &s.docs["Customer"]["Northwind Traders"];
        assert_eq!(doc["default_currency"], "USD");
        assert_eq!(doc["disabled"], 0);
        assert_eq!(s.docs["Customer"].len(), 1);
    }

    // Updates: a known customer, one ERPNext does not have.
    let disabled = out_mapping
        .apply(
            &json!({ "name": "Northwind Traders", "status": "blocked" }),
            &Lookups::default(),
        )
        .unwrap();
    let out = c
        .push(
            "customer",
            vec![
                change(
                    "customer:n:2:erpnext",
                    Some("Northwind Traders"),
                    disabled.clone(),
                ),
                change("customer:z:2:erpnext", Some("Zeta Corp"), disabled),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        out[0],
        PushOutcome::Updated {
            external_id: ExternalId::parse("Northwind Traders").unwrap()
        }
    );
    match &out[1] {
        PushOutcome::Rejected { message } => {
            assert!(message.contains("Zeta Corp not found"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let s = site.lock();
    assert_eq!(s.docs["Customer"]["Northwind Traders"]["disabled"], 1);
    let put = &s.seen("PUT", "/api/resource/Customer/Northwind Traders")[0];
    assert_eq!(
        put.body.as_ref().unwrap()["customer_name"],
        "Northwind Traders"
    );
}

/// Frappe has neither idempotency keys nor an upsert: the definition stores
/// each new customer's key in a custom field and looks for it first, so a
/// create pushed again (a retry after a lost answer) finds the customer it
/// made instead of making "Acme GmbH - 1".
#[tokio::test]
async fn a_repeated_create_finds_the_customer_it_made() {
    let site = Erpnext::start().await;
    let c = shipped(&site);
    let body = json!({ "customer_name": "Acme GmbH", "customer_type": "Company" });
    let acme = [PushOutcome::Created {
        external_id: ExternalId::parse("Acme GmbH").unwrap(),
    }];
    let first = c
        .push(
            "customer",
            vec![change("customer:a:1:erpnext", None, body.clone())],
        )
        .await
        .unwrap();
    assert_eq!(first, acme);
    let again = c
        .push(
            "customer",
            vec![change("customer:a:1:erpnext", None, body.clone())],
        )
        .await
        .unwrap();
    assert_eq!(again, acme);
    {
        let s = site.lock();
        assert_eq!(s.docs["Customer"].len(), 1);
        assert_eq!(
            s.docs["Customer"]["Acme GmbH"]["custom_concord_key"],
            "customer:a:1:erpnext"
        );
        let lookups = s.seen("GET", "/api/resource/Customer");
        assert_eq!(lookups.len(), 2, "one look-up before each create");
        assert_eq!(
            lookups[0].query["filters"],
            r#"[["custom_concord_key", "=", "customer:a:1:erpnext"]]"#
        );
        assert_eq!(s.seen("POST", "/api/resource/Customer").len(), 1);
    }

    // A look-up that misses (a lagging replica, or two tries racing): the
    // unique field refuses the second create, and a second look-up finds
    // the first customer.
    site.lock().stale_lists = 1;
    let raced = c
        .push("customer", vec![change("customer:a:1:erpnext", None, body)])
        .await
        .unwrap();
    assert_eq!(raced, acme);
    {
        let s = site.lock();
        assert_eq!(s.docs["Customer"].len(), 1);
        assert_eq!(s.seen("POST", "/api/resource/Customer").len(), 2);
    }

    // Another customer of the same name (another key) is another customer.
    let other = c
        .push(
            "customer",
            vec![change(
                "customer:b:1:erpnext",
                None,
                json!({ "customer_name": "Acme GmbH" }),
            )],
        )
        .await
        .unwrap();
    assert_eq!(
        other,
        [PushOutcome::Created {
            external_id: ExternalId::parse("Acme GmbH - 1").unwrap()
        }]
    );
}

#[tokio::test]
async fn the_sites_time_zone_is_an_instance_value() {
    let site = Erpnext::start().await;
    seed_site(&site);
    let def = support::definition("erpnext");
    let berlin = support::open(
        &def,
        &instance(&site, erpnext::API_SECRET).with_var("timezone", "Europe/Berlin"),
    );
    let (_, _, err) = pull_all(berlin.as_ref(), "customer", Some(Cursor::at(at(30), ""))).await;
    assert!(err.is_none(), "{err:?}");
    {
        let s = site.lock();
        let list = s.seen("GET", "/api/resource/Customer").pop().unwrap();
        let filters: Value = serde_json::from_str(&list.query["filters"]).unwrap();
        // 09:28 UTC is 10:28 in Berlin in November.
        assert_eq!(filters, json!([["modified", ">=", "2026-11-02 10:28:00"]]));
    }
    let no_zone = Instance::bare("erpnext_test")
        .with_base_url(site.base_url.clone())
        .with_var("api_key", erpnext::API_KEY)
        .with_var("api_secret", erpnext::API_SECRET);
    let Err(err) = (def.driver.open)(&def, &no_zone) else {
        panic!("opened without a time zone")
    };
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.message.contains("`${timezone}` has no value"), "{err}");
    let wrong = instance(&site, erpnext::API_SECRET).with_var("timezone", "Mars/Olympus");
    let Err(err) = (def.driver.open)(&def, &wrong) else {
        panic!("opened with a time zone that does not exist")
    };
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.message.contains("not an IANA time zone"), "{err}");
}

// ---------------------------------------------------------------------------
// Rate limits, credentials, errors

#[tokio::test]
async fn frappes_rate_limiter_is_waited_out() {
    let site = Erpnext::start().await;
    seed_site(&site);
    site.lock()
        .next_faults
        .push_back(erpnext::Fault::RateLimited { retry_after: 1 });
    let c = shipped(&site);
    let (records, _, err) = pull_all(c.as_ref(), "customer", None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(records.len(), 1);
    assert_eq!(site.lock().seen("GET", "/api/resource/Customer").len(), 2);
}

#[tokio::test]
async fn a_wrong_api_secret_is_an_auth_error() {
    let site = Erpnext::start().await;
    seed_site(&site);
    let wrong = "0000000000000000";
    let c = support::open(&support::definition("erpnext"), &instance(&site, wrong));
    let err = c.healthcheck().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    let (_, _, err) = pull_all(c.as_ref(), "customer", None).await;
    let err = err.expect("an error");
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert!(err.message.contains("AuthenticationError"), "{err}");
    assert!(!err.to_string().contains(wrong), "the secret leaked: {err}");
}

#[tokio::test]
async fn the_site_refuses_what_frappe_refuses() {
    // Checks of the mock itself, against the shapes the definition relies
    // on: child tables are no list fields, and a Guest may not list.
    // A client of our own: its TLS provider is installed as main does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let site = Erpnext::start().await;
    seed_site(&site);
    let client = reqwest::Client::new();
    let auth = format!("token {}:{}", erpnext::API_KEY, erpnext::API_SECRET);
    let resp = client
        .get(format!(
            "{}/api/resource/Sales%20Order?fields=%5B%22items%22%5D",
            site.base_url
        ))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 500);
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["exc_type"], "ProgrammingError");
    let resp = client
        .get(format!("{}/api/resource/Customer", site.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["exc_type"], "PermissionError");
    let messages: Vec<String> =
        serde_json::from_str(body["_server_messages"].as_str().unwrap()).unwrap();
    let first: Value = serde_json::from_str(&messages[0]).unwrap();
    assert_eq!(first["message"], "Insufficient Permission for Customer");
    // Default list: 20 names, newest change first.
    {
        let mut s = site.lock();
        for i in 0..25 {
            s.put(
                "Customer",
                &format!("K{i:02}"),
                json!({ "customer_name": "k" }),
                at(100 + i),
            );
        }
    }
    let resp = client
        .get(format!("{}/api/resource/Customer", site.base_url))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let rows = body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 20);
    assert_eq!(rows[0], json!({ "name": "K24" }));
}

// ---------------------------------------------------------------------------
// Lists that change while they are read

fn seed_customers(site: &Erpnext, n: usize, at_of: impl Fn(usize) -> DateTime<Utc>) {
    let mut s = site.lock();
    for i in 0..n {
        s.put(
            "Customer",
            &format!("C{i:03}"),
            json!({ "customer_name": format!("C{i:03}") }),
            at_of(i),
        );
    }
}

/// Reads a pull to its end; `between` runs after the first `after` pages.
async fn pull_changing(
    c: &dyn Connector,
    cursor: Option<Cursor>,
    after: usize,
    between: impl FnOnce(),
) -> (Vec<RawRecord>, Vec<Cursor>) {
    let mut stream = c.pull("customer", cursor);
    let (mut records, mut cursors) = (Vec::new(), Vec::new());
    let mut between = Some(between);
    while let Some(page) = stream.next().await {
        let page = page.unwrap();
        records.extend(page.records);
        cursors.push(page.cursor);
        if cursors.len() == after
            && let Some(f) = between.take()
        {
            f();
        }
    }
    (records, cursors)
}

fn edit(site: &Erpnext, name: &str, at: DateTime<Utc>) {
    site.lock().put(
        "Customer",
        name,
        json!({ "customer_name": format!("{name} (edited)") }),
        at,
    );
}

/// A customer edited while a pull is under way moves to the end of the
/// `modified asc` list and every customer behind it moves up a place: an
/// offset would step over the one that crosses the page boundary. Keyset
/// pages ask from the last `modified` read instead, so none is missed, and
/// none is read twice (the edited one comes again with its new version).
#[tokio::test]
async fn a_change_during_a_pull_hides_no_record() {
    let site = Erpnext::start().await;
    seed_customers(&site, 150, |i| at(i as i64));
    let c = shipped(&site);
    let (records, cursors) = pull_changing(c.as_ref(), None, 1, || {
        edit(&site, "C010", at(500));
        edit(&site, "C020", at(501));
    })
    .await;
    let names = ids(&records);
    assert_eq!(names.len(), 152, "150 and the two new versions: {names:?}");
    let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), 150);
    assert_eq!(&names[100..102], ["C100", "C101"]);
    assert_eq!(&names[150..], ["C010", "C020"]);
    assert_eq!(cursors.last().unwrap(), &Cursor::at(at(501), "C020"));
    // The second page asked from the last `modified` read, at offset 0.
    let s = site.lock();
    let second = &s.seen("GET", "/api/resource/Customer")[1];
    assert_eq!(second.query["limit_start"], "0");
    let filters: Value = serde_json::from_str(&second.query["filters"]).unwrap();
    assert_eq!(filters, json!([["modified", ">=", "2026-11-02 10:39:00"]]));
}

/// Without keyset pages, offsets overlap by one customer and check it.
/// Two customers edited in front of the boundary shift the list by two:
/// the check fails, the pull reads on, and its cursor stays before the
/// boundary, so the customer stepped over is read by the next pull.
#[tokio::test]
async fn without_keyset_an_overlap_catches_the_shift_and_the_cursor_waits() {
    let site = Erpnext::start().await;
    seed_customers(&site, 150, |i| at(i as i64));
    // The customers' pagination (the first in the file) without keyset.
    let shipped_text =
        std::fs::read_to_string(support::root().join("connectors/erpnext.toml")).unwrap();
    let line = "size_param = \"limit_page_length\", size = 100 }";
    assert!(shipped_text.contains(line));
    let text = shipped_text.replacen(
        line,
        "size_param = \"limit_page_length\", size = 100, keyset = false }",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("erpnext.toml");
    std::fs::write(&path, text).unwrap();
    let def = concord::connector::check_file(&path).unwrap();
    let c = support::open(&def, &instance(&site, erpnext::API_SECRET));

    let (first, cursors) = pull_changing(c.as_ref(), None, 1, || {
        edit(&site, "C010", at(500));
        edit(&site, "C020", at(501));
    })
    .await;
    assert!(
        !ids(&first).contains(&"C100"),
        "offsets step over C100 when two records move"
    );
    let held = cursors.last().unwrap().clone();
    assert_eq!(held, Cursor::at(at(99), "C099"), "the cursor waits");
    {
        let s = site.lock();
        let second = &s.seen("GET", "/api/resource/Customer")[1];
        assert_eq!(second.query["limit_start"], "99", "one record of overlap");
    }
    let (again, _, err) = pull_all(c.as_ref(), "customer", Some(held)).await;
    assert!(err.is_none(), "{err:?}");
    let mut all: std::collections::BTreeSet<&str> = ids(&first).into_iter().collect();
    all.extend(ids(&again));
    assert_eq!(all.len(), 150);
}

/// More customers changed within one second than a page holds (a bulk
/// import): `{since}` cannot tell them apart, so the pull pages within that
/// second with overlapping offsets. The overlap shows the list held still,
/// or else the cursor waits at that second.
#[tokio::test]
async fn more_changes_within_one_second_than_a_page_are_read_within_it() {
    let site = Erpnext::start().await;
    let bulk = |i: usize| at(0) + Span::milliseconds(i as i64);
    seed_customers(&site, 250, bulk);
    let c = shipped(&site);
    let (records, cursors) = pull_changing(c.as_ref(), None, 0, || {}).await;
    let want: Vec<String> = (0..250).map(|i| format!("C{i:03}")).collect();
    assert_eq!(ids(&records), want);
    assert_eq!(cursors.last().unwrap(), &Cursor::at(bulk(249), "C249"));

    // Again, with two customers in front of the page boundary edited
    // after the second page: C199 is stepped over, the cursor waits
    // before it, and the next pull reads it.
    let (records, cursors) = pull_changing(c.as_ref(), None, 2, || {
        edit(&site, "C120", at(500));
        edit(&site, "C130", at(501));
    })
    .await;
    assert!(!ids(&records).contains(&"C199"));
    let held = cursors.last().unwrap().clone();
    assert_eq!(held, Cursor::at(bulk(198), "C198"));
    let (again, _, err) = pull_all(c.as_ref(), "customer", Some(held)).await;
    assert!(err.is_none(), "{err:?}");
    assert!(ids(&again).contains(&"C199"));
}
