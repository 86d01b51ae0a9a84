//! A HubSpot CRM v3 server for tests: companies, contacts and deals, with
//! HubSpot's URL shapes, paging, search semantics, batch endpoints, errors
//! and rate-limit answers.
//!
//! What it does as HubSpot does (and the tests rely on):
//! - `GET /crm/v3/objects/{type}`: `limit` (default 10, at most 100),
//!   `after` (the next id), `properties` (comma-separated; only those come
//!   back, plus `hs_object_id`, `createdate` and the last-modified date),
//!   `associations`, `archived` (true lists only archived records); records
//!   in id order; `paging.next.after` while more remain;
//! - `POST …/search`: `filterGroups` (OR of ANDs; at most 5 groups of 6),
//!   one sort, `properties`, `limit` (at most 200) and `after` (an offset);
//!   datetime filters take epoch milliseconds or ISO 8601; no archived
//!   records, no associations; paging stops at 10,000 results (settable);
//! - the last-modified property is `lastmodifieddate` for contacts and
//!   `hs_lastmodifieddate` for companies and deals;
//! - `batch/create`, `batch/update`, `batch/upsert` (on a unique property:
//!   `concord_key`, or a contact's `email`): results in no particular order
//!   (here: reversed), 207 Multi-Status with per-input `errors` where HubSpot
//!   gives them, a whole-batch 400 where it refuses the batch;
//! - property checks: unknown and read-only properties, enumerations
//!   (`dealstage`, `lifecyclestage`), numbers, e-mail addresses, unique
//!   values; error bodies `{"status":"error","message":…,"correlationId":…,
//!   "category":…}`;
//! - `Authorization: Bearer <token>`: 401 INVALID_AUTHENTICATION without or
//!   with a wrong token, 403 MISSING_SCOPES for an object type the token
//!   may not read;
//! - 429 with HubSpot's rate-limit body and headers (`Retry-After` only when
//!   the fault says so: HubSpot does not promise it).

#![allow(dead_code)]
// Handlers answer early with a whole response; boxing it buys nothing here.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value, json};

/// A failure the server shows instead of answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 401 INVALID_AUTHENTICATION.
    Unauthorized,
    /// 429 TEN_SECONDLY_ROLLING, with `Retry-After` when given.
    RateLimited { retry_after: Option<u64> },
    /// 429 SECONDLY, the search endpoints' own limit, without `Retry-After`.
    SearchRateLimited,
    /// 502 with an HTML body, as HubSpot's edge answers.
    BadGateway,
    /// No answer for this long.
    Stall(Duration),
    /// 200 with half a JSON body.
    Truncated,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct Obj {
    pub id: String,
    pub properties: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub archived: bool,
    /// Deals: the ids of their companies.
    pub companies: Vec<String>,
}

pub struct State {
    pub token: String,
    /// Object types the token may not read (403 MISSING_SCOPES).
    pub missing_scopes: BTreeSet<String>,
    pub objects: BTreeMap<String, BTreeMap<String, Obj>>,
    next_id: u64,
    /// Shown on every request until cleared.
    pub fault: Option<Fault>,
    /// Shown once each, before `fault`, in order.
    pub next_faults: VecDeque<Fault>,
    pub requests: Vec<Seen>,
    /// How many search results can be paged through (HubSpot: 10,000).
    pub search_window: usize,
}

pub type Shared = Arc<Mutex<State>>;

pub struct HubSpot {
    pub base_url: String,
    pub state: Shared,
}

pub const TOKEN: &str = "pat-na1-11111111-2222-3333-4444-555555555555";
pub const TYPES: [&str; 3] = ["companies", "contacts", "deals"];

impl HubSpot {
    pub async fn start() -> HubSpot {
        let state = Arc::new(Mutex::new(State {
            token: TOKEN.to_owned(),
            missing_scopes: BTreeSet::new(),
            objects: TYPES
                .iter()
                .map(|t| (t.to_string(), BTreeMap::new()))
                .collect(),
            next_id: 1000,
            fault: None,
            next_faults: VecDeque::new(),
            requests: Vec::new(),
            search_window: 10_000,
        }));
        let app = Router::new()
            .route("/crm/v3/objects/{kind}", get(list).post(create_one))
            .route("/crm/v3/objects/{kind}/search", post(search))
            .route("/crm/v3/objects/{kind}/batch/create", post(batch_create))
            .route("/crm/v3/objects/{kind}/batch/update", post(batch_update))
            .route("/crm/v3/objects/{kind}/batch/upsert", post(batch_upsert))
            .route(
                "/crm/v3/objects/{kind}/{id}",
                get(get_one).patch(update_one),
            )
            .with_state(state.clone());
        let addr = crate::support::serve(app).await;
        HubSpot {
            base_url: format!("http://{addr}"),
            state,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// HubSpot's datetime text: milliseconds, `Z`.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn now() -> DateTime<Utc> {
    let t = Utc::now();
    Utc.timestamp_millis_opt(t.timestamp_millis()).unwrap()
}

/// The last-modified property of an object type.
pub fn modified_property(kind: &str) -> &'static str {
    if kind == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
    Email,
    DateTime,
    Enum(&'static [&'static str]),
    /// Text whose values are unique among the type's records.
    Unique,
    ReadOnly,
}

const LIFECYCLE: &[&str] = &[
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
];
const DEAL_STAGES: &[&str] = &[
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
];

fn schema(kind: &str) -> &'static [(&'static str, Kind)] {
    use Kind::*;
    match kind {
        "companies" => &[
            ("name", Text),
            ("domain", Text),
            ("website", Text),
            ("phone", Text),
            ("address", Text),
            ("address2", Text),
            ("city", Text),
            ("zip", Text),
            ("state", Text),
            ("country", Text),
            ("annualrevenue", Number),
            ("numberofemployees", Number),
            ("industry", Text),
            ("description", Text),
            ("lifecyclestage", Enum(LIFECYCLE)),
            ("concord_key", Unique),
            ("hs_object_id", ReadOnly),
            ("createdate", ReadOnly),
            ("hs_lastmodifieddate", ReadOnly),
        ],
        "contacts" => &[
            ("firstname", Text),
            ("lastname", Text),
            ("email", Email),
            ("phone", Text),
            ("mobilephone", Text),
            ("address", Text),
            ("city", Text),
            ("zip", Text),
            ("state", Text),
            ("country", Text),
            ("company", Text),
            ("lifecyclestage", Enum(LIFECYCLE)),
            ("concord_key", Unique),
            ("hs_object_id", ReadOnly),
            ("createdate", ReadOnly),
            ("lastmodifieddate", ReadOnly),
        ],
        "deals" => &[
            ("dealname", Text),
            ("amount", Number),
            ("deal_currency_code", Text),
            ("closedate", DateTime),
            ("dealstage", Enum(DEAL_STAGES)),
            ("pipeline", Enum(&["default"])),
            ("concord_key", Unique),
            ("hs_object_id", ReadOnly),
            ("createdate", ReadOnly),
            ("hs_lastmodifieddate", ReadOnly),
        ],
        _ => &[],
    }
}

fn property_kind(kind: &str, name: &str) -> Option<Kind> {
    schema(kind)
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
}

/// What a read returns when it names no properties.
fn default_properties(kind: &str) -> &'static [&'static str] {
    match kind {
        "companies" => &[
            "createdate",
            "domain",
            "hs_lastmodifieddate",
            "hs_object_id",
            "name",
        ],
        "contacts" => &[
            "createdate",
            "email",
            "firstname",
            "hs_object_id",
            "lastmodifieddate",
            "lastname",
        ],
        _ => &[
            "amount",
            "closedate",
            "createdate",
            "dealname",
            "dealstage",
            "hs_lastmodifieddate",
            "hs_object_id",
            "pipeline",
        ],
    }
}

fn singular(kind: &str) -> &'static str {
    match kind {
        "companies" => "COMPANY",
        "contacts" => "CONTACT",
        _ => "DEAL",
    }
}

impl State {
    /// Adds or replaces a record as it would be after a write at
    /// `updated_at`.
    pub fn put(
        &mut self,
        kind: &str,
        id: &str,
        properties: &[(&str, &str)],
        updated_at: DateTime<Utc>,
    ) {
        let created_at = self.objects[kind]
            .get(id)
            .map_or(updated_at, |o| o.created_at);
        let mut props: BTreeMap<String, String> = properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        props.insert("hs_object_id".into(), id.to_owned());
        props.insert("createdate".into(), iso(created_at));
        props.insert(modified_property(kind).into(), iso(updated_at));
        self.objects.get_mut(kind).unwrap().insert(
            id.to_owned(),
            Obj {
                id: id.to_owned(),
                properties: props,
                created_at,
                updated_at,
                archived: false,
                companies: Vec::new(),
            },
        );
    }

    pub fn associate(&mut self, deal: &str, company: &str) {
        let d = self
            .objects
            .get_mut("deals")
            .unwrap()
            .get_mut(deal)
            .unwrap();
        d.companies.push(company.to_owned());
    }

    pub fn archive(&mut self, kind: &str, id: &str) {
        let o = self.objects.get_mut(kind).unwrap().get_mut(id).unwrap();
        o.archived = true;
    }

    pub fn clear(&mut self, kind: &str) {
        self.objects.get_mut(kind).unwrap().clear();
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    /// The requests seen whose path ends with `suffix`.
    pub fn seen(&self, method: &str, suffix: &str) -> Vec<Seen> {
        self.requests
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(suffix))
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Answers

fn error(status: StatusCode, category: &str, message: &str, extra: Value) -> Response {
    let mut body = json!({
        "status": "error",
        "message": message,
        "correlationId": crate::support::correlation_id(),
        "category": category,
    });
    if let (Some(b), Value::Object(more)) = (body.as_object_mut(), extra) {
        b.extend(more);
    }
    (status, axum::Json(body)).into_response()
}

fn fault_response(fault: Fault) -> Response {
    match fault {
        Fault::Unauthorized => unauthorized(),
        Fault::RateLimited { retry_after } => {
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({
                    "status": "error",
                    "message": "You have reached your ten_secondly_rolling limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": crate::support::correlation_id(),
                    "policyName": "TEN_SECONDLY_ROLLING",
                    "groupName": "publicapi:private-app-api-calls-ten-secondly:4711",
                })),
            )
                .into_response();
            let h = r.headers_mut();
            h.insert(
                "x-hubspot-ratelimit-interval-milliseconds",
                HeaderValue::from_static("10000"),
            );
            h.insert("x-hubspot-ratelimit-max", HeaderValue::from_static("190"));
            h.insert(
                "x-hubspot-ratelimit-remaining",
                HeaderValue::from_static("0"),
            );
            if let Some(s) = retry_after {
                h.insert(
                    "retry-after",
                    HeaderValue::from_str(&s.to_string()).unwrap(),
                );
            }
            r
        }
        Fault::SearchRateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({
                "status": "error",
                "message": "You have reached your secondly limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": crate::support::correlation_id(),
                "policyName": "SECONDLY",
                "groupName": "publicapi:private-app-search-api-calls-secondly:4711",
            })),
        )
            .into_response(),
        Fault::BadGateway => (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>",
        )
            .into_response(),
        Fault::Truncated => (
            StatusCode::OK,
            [("content-type", "application/json;charset=utf-8")],
            r#"{"results":[{"id":"1","properties":{"name":"#,
        )
            .into_response(),
        Fault::Stall(_) => unreachable!("stalls are waited out by the caller"),
    }
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "INVALID_AUTHENTICATION",
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        json!({}),
    )
}

/// Logs the request and applies faults, authentication and scopes; `Err`
/// is the answer to give instead.
async fn gate(
    state: &Shared,
    method: &str,
    kind: &str,
    path: String,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Option<&Value>,
) -> Result<(), Response> {
    let fault = {
        let mut s = state.lock().unwrap();
        s.requests.push(Seen {
            method: method.to_owned(),
            path,
            query: query.clone(),
            body: body.cloned(),
        });
        s.next_faults.pop_front().or(s.fault)
    };
    if let Some(f) = fault {
        if let Fault::Stall(d) = f {
            tokio::time::sleep(d).await;
        } else {
            return Err(fault_response(f));
        }
    }
    let s = state.lock().unwrap();
    let expected = format!("Bearer {}", s.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Err(unauthorized());
    }
    if !TYPES.contains(&kind) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("Unable to infer object type from: {kind}"),
            json!({}),
        ));
    }
    if s.missing_scopes.contains(kind) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "MISSING_SCOPES",
            "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
            json!({"errors": [{
                "message": "One or more of the following scopes are required.",
                "context": {"requiredGranularScopes": [format!("crm.objects.{kind}.read")]}
            }]}),
        ));
    }
    Ok(())
}

fn parse_body(body: &str) -> Result<Value, Response> {
    serde_json::from_str(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("Invalid input JSON on line 1, column {}: {e}", e.column()),
            json!({}),
        )
    })
}

/// One record as HubSpot shows it.
fn show(kind: &str, o: &Obj, props: Option<&[String]>, associations: &[String]) -> Value {
    let mut properties = Map::new();
    match props {
        None => {
            for p in default_properties(kind) {
                properties.insert(
                    p.to_string(),
                    o.properties.get(*p).map_or(Value::Null, |v| json!(v)),
                );
            }
        }
        Some(names) => {
            let always = ["hs_object_id", "createdate", modified_property(kind)];
            for p in names.iter().map(String::as_str).chain(always) {
                if property_kind(kind, p).is_some() {
                    properties.insert(
                        p.to_owned(),
                        o.properties.get(p).map_or(Value::Null, |v| json!(v)),
                    );
                }
            }
        }
    }
    let mut v = json!({
        "id": o.id,
        "properties": properties,
        "createdAt": iso(o.created_at),
        "updatedAt": iso(o.updated_at),
        "archived": o.archived,
    });
    if o.archived {
        v["archivedAt"] = json!(iso(o.updated_at));
    }
    if kind == "deals" && associations.iter().any(|a| a == "companies") && !o.companies.is_empty() {
        let results: Vec<Value> = o
            .companies
            .iter()
            .flat_map(|c| {
                [
                    json!({"id": c, "type": "deal_to_company"}),
                    json!({"id": c, "type": "deal_to_company_unlabeled"}),
                ]
            })
            .collect();
        v["associations"] = json!({"companies": {"results": results}});
    }
    v
}

fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    (a.len(), a).cmp(&(b.len(), b))
}

fn comma_list(q: &BTreeMap<String, String>, key: &str) -> Option<Vec<String>> {
    q.get(key).map(|v| {
        v.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

// ---------------------------------------------------------------------------
// Reads

async fn list(
    AxState(state): AxState<Shared>,
    Path(kind): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(
        &state,
        "GET",
        &kind,
        format!("/crm/v3/objects/{kind}"),
        &q,
        &headers,
        None,
    )
    .await
    {
        return r;
    }
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 10,
        Some(Ok(l)) if (1..=100).contains(&l) => l,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "limit must be a number from 1 to 100",
                json!({}),
            );
        }
    };
    let archived = q.get("archived").is_some_and(|a| a == "true");
    let props = comma_list(&q, "properties");
    let assoc = comma_list(&q, "associations").unwrap_or_default();
    let s = state.lock().unwrap();
    let mut rows: Vec<&Obj> = s.objects[&kind]
        .values()
        .filter(|o| o.archived == archived)
        .collect();
    rows.sort_by(|a, b| id_order(&a.id, &b.id));
    if let Some(after) = q.get("after") {
        rows.retain(|o| id_order(&o.id, after).is_ge());
    }
    let page: Vec<Value> = rows
        .iter()
        .take(limit)
        .map(|o| show(&kind, o, props.as_deref(), &assoc))
        .collect();
    let mut body = json!({ "results": page });
    if let Some(next) = rows.get(limit) {
        body["paging"] = json!({"next": {
            "after": next.id,
            "link": format!("https://api.hubapi.com/crm/v3/objects/{kind}?after={}", next.id),
        }});
    }
    axum::Json(body).into_response()
}

async fn get_one(
    AxState(state): AxState<Shared>,
    Path((kind, id)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(
        &state,
        "GET",
        &kind,
        format!("/crm/v3/objects/{kind}/{id}"),
        &q,
        &headers,
        None,
    )
    .await
    {
        return r;
    }
    let s = state.lock().unwrap();
    let props = comma_list(&q, "properties");
    let assoc = comma_list(&q, "associations").unwrap_or_default();
    match s.objects[&kind].get(&id).filter(|o| !o.archived) {
        Some(o) => axum::Json(show(&kind, o, props.as_deref(), &assoc)).into_response(),
        // HubSpot answers an unknown id with an empty 404.
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A filter's value as an instant (epoch milliseconds or ISO 8601).
fn instant(v: &Value) -> Option<DateTime<Utc>> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    if let Ok(ms) = text.parse::<i64>() {
        return Utc.timestamp_millis_opt(ms).single();
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_hms_opt(0, 0, 0).unwrap().and_utc())
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Compares a stored property with a filter value, by the property's kind.
fn compare(kind: &str, property: &str, stored: &str, value: &Value) -> Option<std::cmp::Ordering> {
    let is_time = matches!(
        property,
        "createdate" | "hs_lastmodifieddate" | "lastmodifieddate"
    ) || property_kind(kind, property) == Some(Kind::DateTime);
    if is_time {
        let a = DateTime::parse_from_rfc3339(stored)
            .ok()?
            .with_timezone(&Utc);
        return Some(a.cmp(&instant(value)?));
    }
    if property_kind(kind, property) == Some(Kind::Number) {
        let a: f64 = stored.parse().ok()?;
        let b: f64 = value_text(value)?.parse().ok()?;
        return a.partial_cmp(&b);
    }
    Some(
        stored
            .to_lowercase()
            .cmp(&value_text(value)?.to_lowercase()),
    )
}

fn matches(kind: &str, o: &Obj, f: &Value) -> Result<bool, String> {
    let property = f["propertyName"]
        .as_str()
        .ok_or("a filter has no propertyName")?;
    if property_kind(kind, property).is_none() {
        return Err(format!(
            "There was a problem with the request. Property {property} does not exist on {}",
            singular(kind)
        ));
    }
    let op = f["operator"].as_str().ok_or("a filter has no operator")?;
    let stored = o.properties.get(property).filter(|v| !v.is_empty());
    use std::cmp::Ordering::*;
    let cmp = |v: &Value| stored.and_then(|s| compare(kind, property, s, v));
    Ok(match op {
        "HAS_PROPERTY" => stored.is_some(),
        "NOT_HAS_PROPERTY" => stored.is_none(),
        "EQ" => cmp(&f["value"]) == Some(Equal),
        "NEQ" => cmp(&f["value"]) != Some(Equal),
        "LT" => cmp(&f["value"]) == Some(Less),
        "LTE" => matches!(cmp(&f["value"]), Some(Less | Equal)),
        "GT" => cmp(&f["value"]) == Some(Greater),
        "GTE" => matches!(cmp(&f["value"]), Some(Greater | Equal)),
        "BETWEEN" => {
            matches!(cmp(&f["value"]), Some(Greater | Equal))
                && matches!(cmp(&f["highValue"]), Some(Less | Equal))
        }
        "IN" => f["values"]
            .as_array()
            .is_some_and(|vs| vs.iter().any(|v| cmp(v) == Some(Equal))),
        "NOT_IN" => f["values"]
            .as_array()
            .is_some_and(|vs| vs.iter().all(|v| cmp(v) != Some(Equal))),
        other => return Err(format!("Unknown filter operator {other}")),
    })
}

async fn search(
    AxState(state): AxState<Shared>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    text: String,
) -> Response {
    let body = match parse_body(&text) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let q = BTreeMap::new();
    if let Err(r) = gate(
        &state,
        "POST",
        &kind,
        format!("/crm/v3/objects/{kind}/search"),
        &q,
        &headers,
        Some(&body),
    )
    .await
    {
        return r;
    }
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m, json!({}));
    let groups = body["filterGroups"].as_array().cloned().unwrap_or_default();
    if groups.len() > 5
        || groups
            .iter()
            .any(|g| g["filters"].as_array().is_none_or(|f| f.len() > 6))
    {
        return bad(
            "There was a problem with the request. At most 5 filterGroups of at most 6 filters each.",
        );
    }
    let sorts = body["sorts"].as_array().cloned().unwrap_or_default();
    if sorts.len() > 1 {
        return bad("There was a problem with the request. Only one sort is allowed.");
    }
    let limit = match &body["limit"] {
        Value::Null => 10,
        v => match value_text(v).and_then(|t| t.parse::<usize>().ok()) {
            Some(l) if (1..=200).contains(&l) => l,
            _ => return bad("limit must be a number from 1 to 200"),
        },
    };
    let offset = match &body["after"] {
        Value::Null => 0,
        v => match value_text(v).and_then(|t| t.parse::<usize>().ok()) {
            Some(a) => a,
            None => return bad("after must be a number"),
        },
    };
    let props: Option<Vec<String>> = body["properties"].as_array().map(|a| {
        a.iter()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect()
    });
    let s = state.lock().unwrap();
    if offset >= s.search_window {
        return bad(&format!(
            "There was a problem with the request. Search results can be paged through only up to {} results.",
            s.search_window
        ));
    }
    let mut hits: Vec<&Obj> = Vec::new();
    for o in s.objects[&kind].values().filter(|o| !o.archived) {
        let mut any = groups.is_empty();
        for g in &groups {
            let mut all = true;
            for f in g["filters"].as_array().unwrap() {
                match matches(&kind, o, f) {
                    Ok(m) => all &= m,
                    Err(e) => return bad(&e),
                }
            }
            any |= all;
        }
        if any {
            hits.push(o);
        }
    }
    hits.sort_by(|a, b| id_order(&a.id, &b.id));
    if let Some(sort) = sorts.first() {
        let (property, descending) = match sort {
            Value::String(s) => (s.trim_start_matches('-').to_owned(), s.starts_with('-')),
            other => (
                other["propertyName"].as_str().unwrap_or("").to_owned(),
                other["direction"].as_str() == Some("DESCENDING"),
            ),
        };
        if property_kind(&kind, &property).is_none() {
            return bad(&format!(
                "There was a problem with the request. Cannot sort by {property}"
            ));
        }
        hits.sort_by(|a, b| {
            let (x, y) = (a.properties.get(&property), b.properties.get(&property));
            let o = match (x, y) {
                (Some(x), Some(y)) => {
                    compare(&kind, &property, x, &json!(y)).unwrap_or(std::cmp::Ordering::Equal)
                }
                (a, b) => a.is_some().cmp(&b.is_some()),
            };
            if descending { o.reverse() } else { o }
        });
    }
    let total = hits.len();
    let take = limit.min(s.search_window - offset);
    let page: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(take)
        .map(|o| show(&kind, o, props.as_deref(), &[]))
        .collect();
    let mut out = json!({ "total": total, "results": page });
    if offset + take < total {
        out["paging"] = json!({"next": {"after": (offset + take).to_string()}});
    }
    axum::Json(out).into_response()
}

// ---------------------------------------------------------------------------
// Writes

#[derive(Debug)]
struct Invalid {
    name: String,
    code: &'static str,
    message: String,
}

fn check_properties(
    s: &State,
    kind: &str,
    props: &Map<String, Value>,
    own_id: Option<&str>,
) -> Vec<Invalid> {
    let mut out = Vec::new();
    for (name, value) in props {
        let invalid = |code, message: String| Invalid {
            name: name.clone(),
            code,
            message,
        };
        let Some(k) = property_kind(kind, name) else {
            out.push(invalid(
                "PROPERTY_DOESNT_EXIST",
                format!("Property \"{name}\" does not exist"),
            ));
            continue;
        };
        if value.is_null() {
            continue;
        }
        let Some(text) = value_text(value) else {
            out.push(invalid(
                "INVALID_PROPERTY_VALUE",
                format!("{value} is not a valid value for {name}"),
            ));
            continue;
        };
        if text.is_empty() {
            continue;
        }
        match k {
            Kind::ReadOnly => out.push(invalid(
                "READ_ONLY_VALUE",
                format!("{name} is a read only property; its value cannot be set."),
            )),
            Kind::Number if text.parse::<f64>().is_err() => out.push(invalid(
                "INVALID_DECIMAL",
                format!("{text} was not a valid number."),
            )),
            Kind::Email if !text.contains('@') || text.ends_with('@') => out.push(invalid(
                "INVALID_EMAIL",
                format!("Email address {text} is invalid"),
            )),
            Kind::Enum(options) if !options.contains(&text.as_str()) => out.push(invalid(
                "INVALID_OPTION",
                format!(
                    "{text} was not one of the allowed options: [{}]",
                    options.join(", ")
                ),
            )),
            Kind::DateTime if instant(&json!(text)).is_none() => out.push(invalid(
                "INVALID_DATE",
                format!("{text} is not a valid date"),
            )),
            Kind::Unique => {
                if let Some(other) = s.objects[kind].values().find(|o| {
                    o.properties.get(name) == Some(&text) && Some(o.id.as_str()) != own_id
                }) {
                    out.push(invalid(
                        "DUPLICATE_VALUE",
                        format!(
                            "A {} with {name} {text} already exists: {}",
                            singular(kind).to_lowercase(),
                            other.id
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// HubSpot's message for invalid property values.
fn invalid_message(errors: &[Invalid]) -> String {
    let details: Vec<Value> = errors
        .iter()
        .map(|e| {
            json!({
                "isValid": false,
                "message": e.message,
                "error": e.code,
                "name": e.name,
                "localizedErrorMessage": e.message,
            })
        })
        .collect();
    format!(
        "Property values were not valid: {}",
        serde_json::to_string(&details).unwrap()
    )
}

fn write(s: &mut State, kind: &str, id: &str, props: &Map<String, Value>) -> Obj {
    let at = now();
    let entry = s.objects.get_mut(kind).unwrap();
    let o = entry.entry(id.to_owned()).or_insert_with(|| Obj {
        id: id.to_owned(),
        properties: BTreeMap::new(),
        created_at: at,
        updated_at: at,
        archived: false,
        companies: Vec::new(),
    });
    for (k, v) in props {
        match value_text(v) {
            Some(t) if !t.is_empty() => {
                o.properties.insert(k.clone(), t);
            }
            _ => {
                o.properties.remove(k);
            }
        }
    }
    o.updated_at = at;
    o.properties.insert("hs_object_id".into(), id.to_owned());
    o.properties.insert("createdate".into(), iso(o.created_at));
    o.properties.insert(modified_property(kind).into(), iso(at));
    o.clone()
}

/// A written record as write endpoints answer it: the properties written
/// plus the defaults.
fn written(kind: &str, o: &Obj, props: &Map<String, Value>) -> Value {
    let mut names: Vec<String> = props.keys().cloned().collect();
    names.extend(default_properties(kind).iter().map(|s| s.to_string()));
    show(kind, o, Some(&names), &[])
}

fn inputs(body: &Value) -> Result<Vec<Value>, Response> {
    let inputs = body["inputs"].as_array().cloned().ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Invalid input JSON: `inputs` is required",
            json!({}),
        )
    })?;
    if inputs.len() > 100 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!(
                "Batch input limit exceeded: {} inputs, at most 100",
                inputs.len()
            ),
            json!({}),
        ));
    }
    Ok(inputs)
}

fn properties_of(input: &Value) -> Map<String, Value> {
    input["properties"].as_object().cloned().unwrap_or_default()
}

fn batch_answer(results: Vec<Value>, errors: Vec<Value>, ok: StatusCode) -> Response {
    let started = iso(now());
    let mut body = json!({
        "status": "COMPLETE",
        // HubSpot does not keep the order of the inputs.
        "results": results.into_iter().rev().collect::<Vec<_>>(),
        "startedAt": started,
        "completedAt": iso(now()),
    });
    let status = if errors.is_empty() {
        ok
    } else {
        body["numErrors"] = json!(errors.len());
        body["errors"] = Value::Array(errors);
        StatusCode::MULTI_STATUS
    };
    (status, axum::Json(body)).into_response()
}

fn input_error(category: &str, message: String, context: Value) -> Value {
    json!({"status": "error", "category": category, "message": message, "context": context})
}

async fn batch_create(
    AxState(state): AxState<Shared>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    text: String,
) -> Response {
    let body = match parse_body(&text) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = gate(
        &state,
        "POST",
        &kind,
        format!("/crm/v3/objects/{kind}/batch/create"),
        &BTreeMap::new(),
        &headers,
        Some(&body),
    )
    .await
    {
        return r;
    }
    let inputs = match inputs(&body) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut s = state.lock().unwrap();
    // Multi-status answers only when every input carries a trace id.
    let traced = inputs.iter().all(|i| i["objectWriteTraceId"].is_string());
    let checks: Vec<Vec<Invalid>> = inputs
        .iter()
        .map(|i| check_properties(&s, &kind, &properties_of(i), None))
        .collect();
    if !traced && let Some(bad) = checks.iter().find(|c| !c.is_empty()) {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &invalid_message(bad),
            json!({}),
        );
    }
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (input, check) in inputs.iter().zip(&checks) {
        let trace = input["objectWriteTraceId"].clone();
        if !check.is_empty() {
            errors.push(input_error(
                "VALIDATION_ERROR",
                invalid_message(check),
                json!({"objectWriteTraceId": [trace]}),
            ));
            continue;
        }
        let props = properties_of(input);
        let id = s.new_id();
        let o = write(&mut s, &kind, &id, &props);
        let mut r = written(&kind, &o, &props);
        if !trace.is_null() {
            r["objectWriteTraceId"] = trace;
        }
        results.push(r);
    }
    batch_answer(results, errors, StatusCode::CREATED)
}

async fn batch_update(
    AxState(state): AxState<Shared>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    text: String,
) -> Response {
    let body = match parse_body(&text) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = gate(
        &state,
        "POST",
        &kind,
        format!("/crm/v3/objects/{kind}/batch/update"),
        &BTreeMap::new(),
        &headers,
        Some(&body),
    )
    .await
    {
        return r;
    }
    let inputs = match inputs(&body) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut s = state.lock().unwrap();
    for input in &inputs {
        let id = value_text(&input["id"]).unwrap_or_default();
        let check = check_properties(&s, &kind, &properties_of(input), Some(&id));
        if !check.is_empty() {
            // An invalid value refuses the whole batch.
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &invalid_message(&check),
                json!({}),
            );
        }
    }
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for input in &inputs {
        let id = value_text(&input["id"]).unwrap_or_default();
        if s.objects[&kind].get(&id).is_none_or(|o| o.archived) {
            missing.push(id);
            continue;
        }
        let props = properties_of(input);
        let o = write(&mut s, &kind, &id, &props);
        results.push(written(&kind, &o, &props));
    }
    let errors = if missing.is_empty() {
        Vec::new()
    } else {
        vec![input_error(
            "OBJECT_NOT_FOUND",
            format!(
                "Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
                singular(&kind)
            ),
            json!({"ids": missing}),
        )]
    };
    batch_answer(results, errors, StatusCode::OK)
}

async fn batch_upsert(
    AxState(state): AxState<Shared>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    text: String,
) -> Response {
    let body = match parse_body(&text) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = gate(
        &state,
        "POST",
        &kind,
        format!("/crm/v3/objects/{kind}/batch/upsert"),
        &BTreeMap::new(),
        &headers,
        Some(&body),
    )
    .await
    {
        return r;
    }
    let inputs = match inputs(&body) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut s = state.lock().unwrap();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in &inputs {
        let id_property = input["idProperty"].as_str().unwrap_or("");
        let unique = property_kind(&kind, id_property) == Some(Kind::Unique)
            || (kind == "contacts" && id_property == "email");
        if !unique {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!(
                    "Upsert needs idProperty to be a property with unique values; {id_property:?} is not one"
                ),
                json!({}),
            );
        }
        let Some(key) = value_text(&input["id"]).filter(|k| !k.is_empty()) else {
            errors.push(input_error(
                "VALIDATION_ERROR",
                "An input has no id".into(),
                json!({}),
            ));
            continue;
        };
        let existing = s.objects[&kind]
            .values()
            .find(|o| !o.archived && o.properties.get(id_property) == Some(&key))
            .map(|o| o.id.clone());
        let mut props = properties_of(input);
        let check = check_properties(&s, &kind, &props, existing.as_deref().or(Some("")));
        if !check.is_empty() {
            let mut context = json!({"ids": [key]});
            if input["objectWriteTraceId"].is_string() {
                context["objectWriteTraceId"] = json!([input["objectWriteTraceId"]]);
            }
            errors.push(input_error(
                "VALIDATION_ERROR",
                invalid_message(&check),
                context,
            ));
            continue;
        }
        props.insert(id_property.to_owned(), json!(key));
        let new = existing.is_none();
        let id = existing.unwrap_or_else(|| s.new_id());
        let o = write(&mut s, &kind, &id, &props);
        let mut r = written(&kind, &o, &props);
        r["new"] = json!(new);
        results.push(r);
    }
    batch_answer(results, errors, StatusCode::OK)
}

async fn create_one(
    AxState(state): AxState<Shared>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    text: String,
) -> Response {
    let body = match parse_body(&text) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = gate(
        &state,
        "POST",
        &kind,
        format!("/crm/v3/objects/{kind}"),
        &BTreeMap::new(),
        &headers,
        Some(&body),
    )
    .await
    {
        return r;
    }
    let mut s = state.lock().unwrap();
    let props = properties_of(&body);
    let check = check_properties(&s, &kind, &props, None);
    if !check.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &invalid_message(&check),
            json!({}),
        );
    }
    let id = s.new_id();
    let o = write(&mut s, &kind, &id, &props);
    (StatusCode::CREATED, axum::Json(written(&kind, &o, &props))).into_response()
}

async fn update_one(
    AxState(state): AxState<Shared>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    text: String,
) -> Response {
    let body = match parse_body(&text) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = gate(
        &state,
        "PATCH",
        &kind,
        format!("/crm/v3/objects/{kind}/{id}"),
        &BTreeMap::new(),
        &headers,
        Some(&body),
    )
    .await
    {
        return r;
    }
    let mut s = state.lock().unwrap();
    if s.objects[&kind].get(&id).is_none_or(|o| o.archived) {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Object not found.  objectId are usually numeric.",
            json!({"context": {"id": [id]}}),
        );
    }
    let props = properties_of(&body);
    let check = check_properties(&s, &kind, &props, Some(&id));
    if !check.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &invalid_message(&check),
            json!({}),
        );
    }
    let o = write(&mut s, &kind, &id, &props);
    axum::Json(written(&kind, &o, &props)).into_response()
}
