//! The shipped HubSpot definition (`connectors/hubspot.toml`) through the
//! `http` driver, against a local server that behaves as HubSpot's CRM v3
//! API does (`tests/support/hubspot.rs`).

#[path = "support/hubspot.rs"]
mod hubspot;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use concord::connector::conformance::{self, Fault, Seed};
use concord::connector::{
    Change, Connector, ConnectorError, Cursor, ErrorKind, Instance, PushOutcome, RawRecord,
};
use concord::mapping::{self, Lookups};
use concord::model::ExternalId;
use futures_util::StreamExt;
use hubspot::HubSpot;
use serde_json::{Value, json};

/// The shipped definition with short timeouts and retries, so that staged
/// faults surface in a second instead of after HubSpot-sized backoffs.
const TEST_PROFILE: &[(&str, &str)] = &[
    ("timeout_secs = 30", "timeout_secs = 1"),
    (
        "retry = { max_attempts = 5, initial_delay_ms = 1000, max_delay_ms = 10000 }",
        "retry = { max_attempts = 2, initial_delay_ms = 10, max_delay_ms = 1000 }",
    ),
    (
        "rate_limit = { per_second = 9, burst = 9 }",
        "rate_limit = { per_second = 1000, burst = 100 }",
    ),
];

fn instance(hs: &HubSpot, token: &str) -> Instance {
    Instance::bare("hubspot_test")
        .with_base_url(hs.base_url.clone())
        .with_var("token", token)
}

/// The shipped definition, unchanged.
fn shipped(hs: &HubSpot) -> Arc<dyn Connector> {
    support::open(
        &support::definition("hubspot"),
        &instance(hs, hubspot::TOKEN),
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

// ---------------------------------------------------------------------------
// The conformance kit, over companies

struct Companies {
    hs: HubSpot,
    connector: Arc<dyn Connector>,
    _dir: tempfile::TempDir,
}

impl Companies {
    async fn start() -> Companies {
        let hs = HubSpot::start().await;
        let (dir, def) = support::definition_variant("hubspot", TEST_PROFILE);
        let connector = support::open(&def, &instance(&hs, hubspot::TOKEN));
        Companies {
            hs,
            connector,
            _dir: dir,
        }
    }
}

#[async_trait]
impl conformance::Harness for Companies {
    fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }
    fn entity(&self) -> &str {
        "company"
    }
    fn page_size(&self) -> usize {
        100
    }
    async fn seed(&self, records: &[Seed]) -> anyhow::Result<()> {
        let mut s = self.hs.lock();
        s.clear("companies");
        for r in records {
            s.put("companies", &r.id, &[("name", &r.name)], r.updated_at);
        }
        Ok(())
    }
    async fn upsert(&self, records: &[Seed]) -> anyhow::Result<()> {
        let mut s = self.hs.lock();
        for r in records {
            s.put("companies", &r.id, &[("name", &r.name)], r.updated_at);
        }
        Ok(())
    }
    async fn stored(&self) -> anyhow::Result<BTreeMap<String, Value>> {
        let s = self.hs.lock();
        Ok(s.objects["companies"]
            .values()
            .map(|o| (o.id.clone(), json!(o.properties)))
            .collect())
    }
    fn push_body(&self, n: usize) -> Value {
        json!({ "name": format!("pushed {n}"), "city": "Cambridge", "annualrevenue": format!("{}", n * 1000) })
    }
    async fn inject(&self, fault: Fault) -> anyhow::Result<bool> {
        self.hs.lock().fault = Some(match fault {
            Fault::Unauthorized => hubspot::Fault::Unauthorized,
            Fault::RateLimited { retry_after_secs } => hubspot::Fault::RateLimited {
                retry_after: Some(retry_after_secs),
            },
            Fault::Unavailable => hubspot::Fault::BadGateway,
            Fault::Timeout => hubspot::Fault::Stall(std::time::Duration::from_secs(3)),
            Fault::Malformed => hubspot::Fault::Truncated,
        });
        Ok(true)
    }
    async fn heal(&self) -> anyhow::Result<()> {
        self.hs.lock().fault = None;
        Ok(())
    }
}

#[tokio::test]
async fn companies_pass_the_conformance_kit() {
    let h = Companies::start().await;
    conformance::pull_pages(&h).await.unwrap();
    conformance::resume_from_cursor(&h).await.unwrap();
    conformance::change_during_pull(&h).await.unwrap();
    conformance::idempotent_push(&h).await.unwrap();
    let tested = conformance::classify_errors(&h).await.unwrap();
    assert_eq!(tested.len(), 5, "{tested:?}");
    // The resumed pull went through the search endpoint.
    assert!(!h.hs.lock().seen("POST", "/companies/search").is_empty());
}

// ---------------------------------------------------------------------------
// Pulls through the shipped definition and mappings

fn seed_portal(hs: &HubSpot) {
    let mut s = hs.lock();
    s.put(
        "companies",
        "512",
        &[
            ("name", "Northwind  Traders"),
            ("domain", "NorthwindTraders.com"),
            ("phone", "+1 617 555 0134"),
            ("address", "25 First Street"),
            ("address2", "Suite 400"),
            ("city", "Cambridge"),
            ("zip", "02141"),
            ("state", "MA"),
            ("country", "United States"),
            ("annualrevenue", "1250000.50"),
            ("industry", "COMPUTER_SOFTWARE"),
            ("lifecyclestage", "customer"),
        ],
        at(0),
    );
    s.put(
        "companies",
        "513",
        &[
            ("name", "Schmidt & Söhne KG"),
            ("country", "Germany"),
            ("annualrevenue", ""),
        ],
        at(1),
    );
    s.put(
        "contacts",
        "901",
        &[
            ("firstname", "Ada"),
            ("lastname", "Lovelace"),
            ("email", "ada@example.com"),
            ("mobilephone", "+44 20 7946 0958"),
            ("city", "London"),
            ("country", "United Kingdom"),
            ("company", "Analytical Engines Ltd"),
            ("lifecyclestage", "lead"),
        ],
        at(2),
    );
    s.put(
        "deals",
        "7001",
        &[
            ("dealname", "Northwind - 50 seats"),
            ("amount", "24000"),
            ("closedate", "2026-12-15T05:00:00.000Z"),
            ("dealstage", "closedwon"),
            ("pipeline", "default"),
        ],
        at(3),
    );
    s.associate("7001", "512");
    s.put(
        "deals",
        "7002",
        &[
            ("dealname", "Schmidt pilot"),
            ("amount", ""),
            ("dealstage", "qualifiedtobuy"),
            ("pipeline", "default"),
        ],
        at(4),
    );
}

#[tokio::test]
async fn records_pulled_with_the_shipped_definition_go_through_the_inbound_mappings() {
    let hs = HubSpot::start().await;
    seed_portal(&hs);
    let c = shipped(&hs);
    c.healthcheck().await.unwrap();
    let mut mapped = BTreeMap::new();
    for (entity, file, want) in [
        ("company", "company.in.toml", vec!["512", "513"]),
        ("contact", "contact.in.toml", vec!["901"]),
        ("deal", "deal.in.toml", vec!["7001", "7002"]),
    ] {
        let (records, _, err) = pull_all(c.as_ref(), entity, None).await;
        assert!(err.is_none(), "{entity}: {err:?}");
        assert_eq!(ids(&records), want, "{entity}");
        let m = mapping::load_file(&support::root().join("mappings/hubspot").join(file)).unwrap();
        for r in records {
            let mut lookups = Lookups::default();
            for k in m.lookup_keys(&r.data) {
                lookups.insert(
                    k.entity,
                    &k.system,
                    &k.value,
                    &format!("canonical-of-{}", k.value),
                );
            }
            let out = m
                .apply_canonical(&r.data, &lookups)
                .unwrap_or_else(|e| panic!("{entity} {}: {e:?}\n{}", r.external_id, r.data));
            mapped.insert(format!("{entity}/{}", r.external_id), out);
        }
    }
    let company = &mapped["company/512"];
    assert_eq!(company["name"], "Northwind Traders");
    assert_eq!(company["billing"]["country"], "US");
    assert_eq!(company["domain"], "northwindtraders.com");
    assert_eq!(company["status"], "active");
    let contact = &mapped["contact/901"];
    assert_eq!(contact["name"], "Ada Lovelace");
    assert_eq!(contact["email"], "ada@example.com");
    // The deal's company came with it (associations=companies).
    let deal = &mapped["deal/7001"];
    assert_eq!(deal["customer"], "canonical-of-512", "{deal}");
    assert_eq!(deal["status"], "open");
    assert_eq!(deal["order_date"], "2026-12-15");

    // What was asked for: the mapped properties, and deals with companies.
    let s = hs.lock();
    let list = &s.seen("GET", "/crm/v3/objects/deals")[0];
    assert_eq!(
        list.query.get("associations").map(String::as_str),
        Some("companies")
    );
    assert_eq!(list.query.get("limit").map(String::as_str), Some("100"));
    assert!(list.query["properties"].contains("dealstage"));
}

#[tokio::test]
async fn archived_companies_are_read_from_their_own_entity() {
    let hs = HubSpot::start().await;
    seed_portal(&hs);
    hs.lock().archive("companies", "513");
    let c = shipped(&hs);
    let (live, _, _) = pull_all(c.as_ref(), "company", None).await;
    assert_eq!(ids(&live), ["512"]);
    let (gone, _, err) = pull_all(c.as_ref(), "company_archived", None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&gone), ["513"]);
    let m = mapping::load_file(&support::root().join("mappings/hubspot/company.in.toml")).unwrap();
    let out = m
        .apply_canonical(&gone[0].data, &Lookups::default())
        .unwrap();
    assert_eq!(out["status"], "archived");
}

#[tokio::test]
async fn incremental_pulls_search_by_the_last_modified_date() {
    let hs = HubSpot::start().await;
    {
        let mut s = hs.lock();
        for i in 1..=6 {
            s.put(
                "companies",
                &format!("{}", 100 + i),
                &[("name", &format!("c{i}"))],
                at(10 * i),
            );
            s.put(
                "contacts",
                &format!("{}", 200 + i),
                &[("firstname", &format!("p{i}"))],
                at(10 * i),
            );
        }
    }
    let c = shipped(&hs);
    let cursor = Cursor::at(at(40), "104");
    let (records, cursors, err) = pull_all(c.as_ref(), "company", Some(cursor.clone())).await;
    assert!(err.is_none(), "{err:?}");
    // From the cursor minus the five-minute look-back: c4 again, c5, c6.
    assert_eq!(ids(&records), ["104", "105", "106"]);
    assert_eq!(cursors.last().unwrap(), &Cursor::at(at(60), "106"));
    {
        let s = hs.lock();
        let search = &s.seen("POST", "/crm/v3/objects/companies/search")[0];
        let body = search.body.as_ref().unwrap();
        let filter = &body["filterGroups"][0]["filters"][0];
        assert_eq!(filter["propertyName"], "hs_lastmodifieddate");
        assert_eq!(filter["operator"], "GTE");
        assert_eq!(
            filter["value"],
            json!((at(40) - Span::minutes(5)).timestamp_millis())
        );
        assert_eq!(body["sorts"][0]["direction"], "ASCENDING");
        assert_eq!(body["limit"], 200);
        assert!(
            body.get("after").is_none(),
            "the first page has no after: {body}"
        );
    }
    // Contacts filter on their own last-modified property.
    let (records, _, err) = pull_all(c.as_ref(), "contact", Some(Cursor::at(at(50), "205"))).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(ids(&records), ["205", "206"]);
    let s = hs.lock();
    let body = s.seen("POST", "/crm/v3/objects/contacts/search")[0]
        .body
        .clone()
        .unwrap();
    assert_eq!(
        body["filterGroups"][0]["filters"][0]["propertyName"],
        "lastmodifieddate"
    );
}

/// HubSpot's search `after` is an offset: a company changed during a pull
/// would shift the others past a page boundary. Each page is a new search
/// from the newest change read instead.
#[tokio::test]
async fn search_pages_restart_from_the_newest_change_read() {
    let hs = HubSpot::start().await;
    {
        let mut s = hs.lock();
        for i in 0..450 {
            s.put(
                "companies",
                &format!("{}", 10_000 + i),
                &[("name", "x")],
                at(i / 7),
            );
        }
    }
    let c = shipped(&hs);
    let mut stream = c.pull("company", Some(Cursor::at(at(-60), "")));
    let mut records = stream.next().await.unwrap().unwrap().records;
    // Two companies of the first page change while the pull goes on.
    for id in ["10003", "10100"] {
        hs.lock()
            .put("companies", id, &[("name", "changed")], at(1000));
    }
    while let Some(page) = stream.next().await {
        records.extend(page.unwrap().records);
    }
    let names = ids(&records);
    let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), 450);
    assert_eq!(names.len(), 452, "each once, and the two new versions");
    assert_eq!(&names[450..], ["10003", "10100"]);

    let s = hs.lock();
    let bodies: Vec<Value> = s
        .seen("POST", "/companies/search")
        .into_iter()
        .map(|r| r.body.unwrap())
        .collect();
    assert!(
        bodies.iter().all(|b| b.get("after").is_none()),
        "{bodies:?}"
    );
    let since: Vec<i64> = bodies
        .iter()
        .map(|b| {
            b["filterGroups"][0]["filters"][0]["value"]
                .as_i64()
                .unwrap()
        })
        .collect();
    // From the cursor minus the look-back, then from the newest change of
    // each page: company 10199 (the 200th, changed at minute 28).
    assert_eq!(since[0], (at(-60) - Span::minutes(5)).timestamp_millis());
    assert_eq!(since[1], at(199 / 7).timestamp_millis());
    assert!(since.windows(2).all(|w| w[0] < w[1]), "{since:?}");
}

/// HubSpot's search stops at 10,000 results (here 5). Changes spread over
/// time, or crowded within the look-back (a bulk import of 10,000+
/// companies within five minutes), are read in one pull: no search pages
/// beyond the window.
#[tokio::test]
async fn the_search_window_does_not_stop_a_pull() {
    for spacing in [Span::minutes(10), Span::seconds(1)] {
        let hs = HubSpot::start().await;
        {
            let mut s = hs.lock();
            s.search_window = 5;
            for i in 0..12 {
                s.put(
                    "companies",
                    &format!("{}", 300 + i),
                    &[("name", "x")],
                    at(0) + spacing * i,
                );
            }
        }
        let c = shipped(&hs);
        let (records, cursors, err) =
            pull_all(c.as_ref(), "company", Some(Cursor::at(at(-60), ""))).await;
        assert!(err.is_none(), "{spacing}: {err:?}");
        let want: Vec<String> = (300..312).map(|i| i.to_string()).collect();
        assert_eq!(ids(&records), want, "{spacing}");
        assert_eq!(
            cursors.last().unwrap(),
            &Cursor::at(at(0) + spacing * 11, "311")
        );
    }
}

/// What is left of the window: more companies changed within one
/// millisecond than it holds (10,000 in HubSpot) can only be paged by
/// offset, which stops at the window. The pull fails with HubSpot's words;
/// nothing is skipped.
#[tokio::test]
async fn only_more_changes_at_one_millisecond_than_the_window_holds_reach_it() {
    let hs = HubSpot::start().await;
    {
        let mut s = hs.lock();
        s.search_window = 5;
        for i in 0..7 {
            s.put(
                "companies",
                &format!("{}", 300 + i),
                &[("name", "x")],
                at(0),
            );
        }
    }
    let c = shipped(&hs);
    let (records, cursors, err) =
        pull_all(c.as_ref(), "company", Some(Cursor::at(at(-60), ""))).await;
    let err = err.expect("the window stops the search");
    assert_eq!(err.kind, ErrorKind::InvalidData, "{err}");
    assert!(err.message.contains("only up to 5 results"), "{err}");
    assert_eq!(records.len(), 5);
    assert!(cursors.iter().all(|c| c.updated_at <= Some(at(0))));
}

// ---------------------------------------------------------------------------
// Pushes

#[tokio::test]
async fn batch_pushes_report_each_record_and_never_create_twice() {
    let hs = HubSpot::start().await;
    let c = shipped(&hs);
    let out = c
        .push(
            "company",
            vec![
                change(
                    "customer:a:1:hubspot",
                    None,
                    json!({"name": "Alpha GmbH", "country": "DE"}),
                ),
                change(
                    "customer:b:1:hubspot",
                    None,
                    json!({"name": "Beta Ltd", "annualrevenue": "lots"}),
                ),
                change(
                    "customer:c:1:hubspot",
                    None,
                    json!({"name": "Gamma SA", "zip": "75001"}),
                ),
                change(
                    "customer:d:1:hubspot",
                    None,
                    json!({"name": "Delta AG", "lifecyclestage": "bestfriend"}),
                ),
            ],
        )
        .await
        .unwrap();
    let created: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            PushOutcome::Created { external_id } => Some(external_id.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 2, "{out:?}");
    // One 207 for the batch; each refused record with its own failure.
    match (&out[1], &out[3]) {
        (PushOutcome::Rejected { message: b }, PushOutcome::Rejected { message: d }) => {
            assert!(b.contains("annualrevenue") && b.contains("lots"), "{b}");
            assert!(!b.contains("bestfriend"), "{b}");
            assert!(d.contains("bestfriend"), "{d}");
            assert!(!d.contains("lots"), "{d}");
        }
        other => panic!("the bad records were not rejected: {other:?}"),
    }
    {
        let s = hs.lock();
        let companies = &s.objects["companies"];
        assert_eq!(companies.len(), 2);
        // Results come back in another order: each id went to its record.
        assert_eq!(companies[&created[0]].properties["name"], "Alpha GmbH");
        assert_eq!(companies[&created[1]].properties["name"], "Gamma SA");
        assert_eq!(
            companies[&created[0]].properties["concord_key"],
            "customer:a:1:hubspot"
        );
        let upserts = s.seen("POST", "/companies/batch/upsert");
        assert_eq!(upserts.len(), 1, "one request for the batch");
        assert_eq!(
            upserts[0].body.as_ref().unwrap()["inputs"][0]["idProperty"],
            "concord_key"
        );
    }

    // The same creates again (a retry after a lost answer): the same ids.
    let again = c
        .push(
            "company",
            vec![
                change(
                    "customer:a:1:hubspot",
                    None,
                    json!({"name": "Alpha GmbH", "country": "DE"}),
                ),
                change(
                    "customer:c:1:hubspot",
                    None,
                    json!({"name": "Gamma SA", "zip": "75001"}),
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        created
            .iter()
            .map(|id| PushOutcome::Created {
                external_id: ExternalId::parse(id).unwrap()
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(hs.lock().objects["companies"].len(), 2);

    // Updates: one of an id HubSpot does not have (a 207 error), one with a
    // value HubSpot refuses (the whole batch refused, then split), one good.
    let out = c
        .push(
            "company",
            vec![
                change(
                    "customer:a:2:hubspot",
                    Some(&created[0]),
                    json!({"city": "Berlin"}),
                ),
                change(
                    "customer:x:2:hubspot",
                    Some("999999"),
                    json!({"city": "Nowhere"}),
                ),
                change(
                    "customer:c:2:hubspot",
                    Some(&created[1]),
                    json!({"lifecyclestage": "bestfriend"}),
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        out[0],
        PushOutcome::Updated {
            external_id: ExternalId::parse(&created[0]).unwrap()
        }
    );
    match (&out[1], &out[2]) {
        (PushOutcome::Rejected { message: gone }, PushOutcome::Rejected { message: bad }) => {
            assert!(
                gone.contains("Could not get some COMPANY objects"),
                "{gone}"
            );
            assert!(
                bad.contains("lifecyclestage") || bad.contains("bestfriend"),
                "{bad}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        hs.lock().objects["companies"][&created[0]].properties["city"],
        "Berlin"
    );
}

// ---------------------------------------------------------------------------
// Rate limits and credentials

#[tokio::test]
async fn rate_limits_are_waited_out_within_the_retry_budget() {
    let hs = HubSpot::start().await;
    seed_portal(&hs);
    hs.lock().next_faults.extend([
        hubspot::Fault::RateLimited {
            retry_after: Some(1),
        },
        hubspot::Fault::RateLimited {
            retry_after: Some(1),
        },
    ]);
    let c = shipped(&hs);
    let (records, _, err) = pull_all(c.as_ref(), "company", None).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(records.len(), 2);
    assert_eq!(hs.lock().seen("GET", "/crm/v3/objects/companies").len(), 3);

    // The search limit's 429 has no Retry-After: the backoff waits instead.
    hs.lock()
        .next_faults
        .push_back(hubspot::Fault::SearchRateLimited);
    let (records, _, err) = pull_all(c.as_ref(), "company", Some(Cursor::at(at(-10), ""))).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(records.len(), 2);
}

#[tokio::test]
async fn a_rate_limit_longer_than_the_retry_budget_goes_to_the_scheduler() {
    let hs = HubSpot::start().await;
    seed_portal(&hs);
    hs.lock().fault = Some(hubspot::Fault::RateLimited {
        retry_after: Some(30),
    });
    let c = shipped(&hs);
    let (records, _, err) = pull_all(c.as_ref(), "company", None).await;
    assert!(records.is_empty());
    let err = err.expect("an error");
    assert_eq!(
        err.kind,
        ErrorKind::RateLimited {
            retry_after: Some(std::time::Duration::from_secs(30))
        },
        "{err}"
    );
    assert!(err.message.contains("ten_secondly_rolling"), "{err}");
    // Not waited out here: one request.
    assert_eq!(hs.lock().requests.len(), 1);
}

#[tokio::test]
async fn refused_credentials_and_missing_scopes_are_auth_errors() {
    let hs = HubSpot::start().await;
    seed_portal(&hs);
    let wrong = "pat-na1-00000000-0000-0000-0000-000000000000";
    let c = support::open(&support::definition("hubspot"), &instance(&hs, wrong));
    let err = c.healthcheck().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    let (_, _, err) = pull_all(c.as_ref(), "company", None).await;
    let err = err.expect("an error");
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert!(
        err.message.contains("Authentication credentials not found"),
        "{err}"
    );
    assert!(!err.to_string().contains(wrong), "the token leaked: {err}");
    assert!(
        !format!("{err:?}").contains(wrong),
        "the token leaked: {err:?}"
    );

    hs.lock().missing_scopes.insert("deals".into());
    let (_, _, err) = pull_all(shipped(&hs).as_ref(), "deal", None).await;
    let err = err.expect("an error");
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert!(err.message.contains("scopes"), "{err}");
    assert!(!err.is_retryable());
}
