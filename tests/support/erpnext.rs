//! An ERPNext (Frappe) site for tests: the REST API of Customer, Sales
//! Order, Sales Invoice and Payment Entry as Frappe v15 serves it.
//!
//! What it does as Frappe does (and the tests rely on):
//! - `GET /api/resource/{doctype}`: `fields` (a JSON list; default
//!   `["name"]`; `"*"` is every column of the document itself, never its
//!   child tables; a child-table field is an SQL error), `filters` (a JSON
//!   list of `[field, op, value]` or `[doctype, field, op, value]`, or a
//!   JSON object), `order_by` (default `modified desc`), `limit_start`,
//!   `limit_page_length` (default 20; 0 = all), answered as `{"data": […]}`;
//! - `GET /api/resource/{doctype}/{name}`: the whole document with its child
//!   tables, `{"data": {…}}`; `POST` inserts, `PUT` updates (submitted and
//!   cancelled documents refuse changes; a stale `modified` is a
//!   TimestampMismatchError);
//! - times are naive `YYYY-MM-DD HH:MM:SS.ffffff` in the site's zone (UTC
//!   here); filters on them compare as times;
//! - `Authorization: token <key>:<secret>`: a wrong pair is a 401
//!   AuthenticationError, no header at all is a Guest, refused with 403;
//! - errors are `{"exception", "exc_type", "exc", "_server_messages"}`
//!   with Frappe's status codes (417 validation, 409 duplicate, 404, 403,
//!   401, 500 for SQL errors); 429 is Frappe's rate limiter: a plain
//!   "Too Many Requests" with `Retry-After`;
//! - naming: customers by customer name (a second "Acme" becomes
//!   "Acme - 1", as ERPNext's default naming does), the others by series
//!   (`SAL-ORD-2026-00001`, `ACC-SINV-2026-00001`, `ACC-PAY-2026-00001`);
//! - the site has the custom fields the shipped definition asks for:
//!   Customer and Payment Entry `custom_concord_key` (Data, Unique: a second
//!   document with a value taken is a 417 UniqueValidationError).

#![allow(dead_code)]
// Handlers answer early with a whole response; boxing it buys nothing here.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};

pub const API_KEY: &str = "3f1c2b9a7d4e5f6";
pub const API_SECRET: &str = "a9b8c7d6e5f4a3b2";
pub const USER: &str = "concord@example.com";

pub const DOCTYPES: [&str; 4] = ["Customer", "Sales Order", "Sales Invoice", "Payment Entry"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 401 AuthenticationError.
    Unauthorized,
    /// 429 from Frappe's rate limiter, with `Retry-After`.
    RateLimited { retry_after: u64 },
    /// 502 from the reverse proxy in front of the site.
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

pub struct State {
    pub docs: BTreeMap<String, BTreeMap<String, Map<String, Value>>>,
    series: BTreeMap<String, u64>,
    pub fault: Option<Fault>,
    pub next_faults: VecDeque<Fault>,
    pub requests: Vec<Seen>,
    /// The next this many lists answer with no rows (a read replica that
    /// lags behind the writes).
    pub stale_lists: usize,
    /// How long a document request takes.
    pub get_delay: Option<Duration>,
    /// Document requests being answered now, and the most at once.
    pub gets_in_flight: usize,
    pub max_gets_in_flight: usize,
    /// (doctype, name): deleted when the first document request arrives
    /// (someone deletes it between a list and the fetches after it).
    pub delete_on_first_get: Option<(String, String)>,
}

pub type Shared = Arc<Mutex<State>>;

pub struct Erpnext {
    pub base_url: String,
    pub state: Shared,
}

impl Erpnext {
    pub async fn start() -> Erpnext {
        let state = Arc::new(Mutex::new(State {
            docs: DOCTYPES
                .iter()
                .map(|d| (d.to_string(), BTreeMap::new()))
                .collect(),
            series: BTreeMap::new(),
            fault: None,
            next_faults: VecDeque::new(),
            requests: Vec::new(),
            stale_lists: 0,
            get_delay: None,
            gets_in_flight: 0,
            max_gets_in_flight: 0,
            delete_on_first_get: None,
        }));
        let app = Router::new()
            .route("/api/resource/{doctype}", get(list).post(insert))
            .route("/api/resource/{doctype}/{name}", get(get_doc).put(update))
            .route("/api/method/frappe.auth.get_logged_user", get(logged_user))
            .with_state(state.clone());
        let addr = crate::support::serve(app).await;
        Erpnext {
            base_url: format!("http://{addr}"),
            state,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Frappe's datetime text (the site's zone is UTC here).
pub fn stamp(t: DateTime<Utc>) -> String {
    t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

fn now() -> String {
    stamp(Utc::now())
}

/// The child tables of a doctype: field name and child doctype.
fn child_tables(doctype: &str) -> &'static [(&'static str, &'static str)] {
    match doctype {
        "Sales Order" => &[("items", "Sales Order Item")],
        "Sales Invoice" => &[("items", "Sales Invoice Item")],
        "Payment Entry" => &[("references", "Payment Entry Reference")],
        _ => &[],
    }
}

fn is_child_table(doctype: &str, field: &str) -> bool {
    child_tables(doctype).iter().any(|(f, _)| *f == field)
}

/// The columns every document has besides its own fields.
const STANDARD: &[&str] = &[
    "name",
    "owner",
    "creation",
    "modified",
    "modified_by",
    "docstatus",
    "idx",
];

/// Each doctype's own fields, with the values a new document gets.
fn fields(doctype: &str) -> Vec<(&'static str, Value)> {
    match doctype {
        "Customer" => vec![
            ("naming_series", json!("CUST-.YYYY.-")),
            ("customer_name", Value::Null),
            ("customer_type", json!("Company")),
            ("customer_group", json!("All Customer Groups")),
            ("territory", json!("All Territories")),
            ("tax_id", Value::Null),
            ("default_currency", Value::Null),
            ("disabled", json!(0)),
            ("email_id", Value::Null),
            ("mobile_no", Value::Null),
            ("customer_primary_contact", Value::Null),
            // The custom field connectors/erpnext.toml asks sites to add
            // (Data, Unique): a column like any other.
            ("custom_concord_key", Value::Null),
        ],
        "Sales Order" => vec![
            ("naming_series", json!("SAL-ORD-.YYYY.-")),
            ("customer", Value::Null),
            ("customer_name", Value::Null),
            ("transaction_date", Value::Null),
            ("delivery_date", Value::Null),
            ("po_no", Value::Null),
            ("currency", json!("EUR")),
            ("net_total", json!(0.0)),
            ("grand_total", json!(0.0)),
            ("status", json!("Draft")),
            ("company", json!("Concord Demo GmbH")),
        ],
        "Sales Invoice" => vec![
            ("naming_series", json!("ACC-SINV-.YYYY.-")),
            ("customer", Value::Null),
            ("customer_name", Value::Null),
            ("posting_date", Value::Null),
            ("due_date", Value::Null),
            ("po_no", Value::Null),
            ("currency", json!("EUR")),
            ("grand_total", json!(0.0)),
            ("rounding_adjustment", json!(0.0)),
            ("rounded_total", json!(0.0)),
            ("outstanding_amount", json!(0.0)),
            ("is_return", json!(0)),
            ("status", json!("Draft")),
            ("company", json!("Concord Demo GmbH")),
        ],
        "Payment Entry" => vec![
            ("naming_series", json!("ACC-PAY-.YYYY.-")),
            ("payment_type", json!("Receive")),
            ("party_type", json!("Customer")),
            ("party", Value::Null),
            ("posting_date", Value::Null),
            ("mode_of_payment", Value::Null),
            ("paid_amount", json!(0.0)),
            ("received_amount", json!(0.0)),
            ("paid_from_account_currency", json!("EUR")),
            ("paid_to_account_currency", json!("EUR")),
            ("unallocated_amount", json!(0.0)),
            ("reference_no", Value::Null),
            ("reference_date", Value::Null),
            ("paid_from", Value::Null),
            ("paid_to", Value::Null),
            ("remarks", Value::Null),
            ("company", json!("Concord Demo GmbH")),
            ("custom_concord_key", Value::Null),
        ],
        _ => Vec::new(),
    }
}

fn is_column(doctype: &str, field: &str) -> bool {
    STANDARD.contains(&field) || fields(doctype).iter().any(|(f, _)| *f == field)
}

const CUSTOMER_GROUPS: &[&str] = &[
    "All Customer Groups",
    "Commercial",
    "Individual",
    "Government",
];
const TERRITORIES: &[&str] = &["All Territories", "Germany", "Rest Of The World"];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "CHF", "INR"];

impl State {
    /// Places a document as the site would hold it, with `modified` at
    /// `at`; child rows get their standard fields.
    pub fn put(&mut self, doctype: &str, name: &str, values: Value, at: DateTime<Utc>) {
        let mut doc = Map::new();
        for (f, v) in fields(doctype) {
            doc.insert(f.into(), v);
        }
        if let Value::Object(given) = values {
            doc.extend(given);
        }
        let t = stamp(at);
        doc.insert("name".into(), json!(name));
        doc.insert("owner".into(), json!("Administrator"));
        doc.entry("creation").or_insert(json!(t.clone()));
        doc.insert("modified".into(), json!(t));
        doc.insert("modified_by".into(), json!("Administrator"));
        doc.entry("docstatus").or_insert(json!(0));
        doc.insert("idx".into(), json!(0));
        let status = doc["docstatus"].clone();
        for (field, child) in child_tables(doctype) {
            let rows = doc.entry(*field).or_insert(json!([]));
            if let Value::Array(rows) = rows {
                for (i, row) in rows.iter_mut().enumerate() {
                    if let Value::Object(r) = row {
                        r.entry("name")
                            .or_insert(json!(format!("{}-row-{}", name, i + 1)));
                        r.insert("parent".into(), json!(name));
                        r.insert("parentfield".into(), json!(field));
                        r.insert("parenttype".into(), json!(doctype));
                        r.insert("idx".into(), json!(i + 1));
                        r.insert("doctype".into(), json!(child));
                        r.insert("docstatus".into(), status.clone());
                    }
                }
            }
        }
        self.docs
            .get_mut(doctype)
            .unwrap()
            .insert(name.to_owned(), doc);
    }

    pub fn clear(&mut self, doctype: &str) {
        self.docs.get_mut(doctype).unwrap().clear();
    }

    fn next_in_series(&mut self, prefix: &str) -> String {
        let year = Utc::now().format("%Y").to_string();
        let prefix = prefix.replace(".YYYY.", &year).replace('.', "");
        let n = self.series.entry(prefix.clone()).or_insert(0);
        *n += 1;
        format!("{prefix}{:05}", n)
    }

    pub fn seen(&self, method: &str, path: &str) -> Vec<Seen> {
        self.requests
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Errors

/// Frappe's error body: the exception, its class, a traceback and the
/// user-facing messages (a JSON list of JSON objects, as text).
fn frappe_error(status: StatusCode, exc_type: &str, message: Option<&str>) -> Response {
    let exception = match message {
        Some(m) => format!("frappe.exceptions.{exc_type}: {m}"),
        None => format!("frappe.exceptions.{exc_type}"),
    };
    let mut body = json!({
        "exception": exception,
        "exc_type": exc_type,
        "exc": serde_json::to_string(&[format!(
            "Traceback (most recent call last):\n  File \"apps/frappe/frappe/app.py\", line 114, in application\n    response = frappe.api.handle(request)\n{exception}\n"
        )]).unwrap(),
    });
    if let Some(m) = message {
        let one = json!({
            "message": m,
            "title": "Message",
            "indicator": "red",
            "raise_exception": 1,
            "__frappe_exc_id": crate::support::correlation_id(),
        });
        body["_server_messages"] =
            json!(serde_json::to_string(&[serde_json::to_string(&one).unwrap()]).unwrap());
    }
    (status, axum::Json(body)).into_response()
}

fn sql_error(status: StatusCode, exc_type: &str, text: &str) -> Response {
    let exception = format!("pymysql.err.{exc_type}: {text}");
    (
        status,
        axum::Json(json!({
            "exception": exception,
            "exc_type": exc_type,
            "exc": serde_json::to_string(&[format!("Traceback (most recent call last):\n{exception}\n")]).unwrap(),
        })),
    )
        .into_response()
}

fn fault_response(f: Fault) -> Response {
    match f {
        Fault::Unauthorized => frappe_error(StatusCode::UNAUTHORIZED, "AuthenticationError", None),
        Fault::RateLimited { retry_after } => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
            let h = r.headers_mut();
            h.insert("retry-after", HeaderValue::from_str(&retry_after.to_string()).unwrap());
            h.insert("x-ratelimit-limit", HeaderValue::from_static("600000000"));
            h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            h.insert("x-ratelimit-reset", HeaderValue::from_str(&retry_after.to_string()).unwrap());
            r
        }
        Fault::BadGateway => (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
        )
            .into_response(),
        Fault::Truncated => (
            StatusCode::OK,
            [("content-type", "application/json")],
            r#"{"data": [{"name": "CUST-0"#,
        )
            .into_response(),
        Fault::Stall(_) => unreachable!(),
    }
}

/// Logs the request, applies faults and authentication; `Err` is the
/// answer to give instead.
async fn gate(
    state: &Shared,
    method: &str,
    path: String,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Option<&Value>,
    doctype: Option<&str>,
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
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => {
            // A Guest: not allowed to read or write business documents.
            let what = doctype.unwrap_or("this method");
            return Err(frappe_error(
                StatusCode::FORBIDDEN,
                "PermissionError",
                Some(&format!("Insufficient Permission for {what}")),
            ));
        }
        Some(v) if v == format!("token {API_KEY}:{API_SECRET}") => {}
        Some(_) => {
            return Err(frappe_error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationError",
                None,
            ));
        }
    }
    if let Some(d) = doctype
        && !DOCTYPES.contains(&d)
    {
        return Err(frappe_error(
            StatusCode::NOT_FOUND,
            "DoesNotExistError",
            Some(&format!("DocType {d} not found")),
        ));
    }
    Ok(())
}

async fn logged_user(AxState(state): AxState<Shared>, headers: HeaderMap) -> Response {
    let path = "/api/method/frappe.auth.get_logged_user".to_owned();
    if let Err(r) = gate(&state, "GET", path, &BTreeMap::new(), &headers, None, None).await {
        return r;
    }
    axum::Json(json!({ "message": USER })).into_response()
}

// ---------------------------------------------------------------------------
// Lists

/// A field name as Frappe accepts it: `name`, `` `tabCustomer`.`name` ``,
/// `tabCustomer.name`.
fn bare_field(text: &str) -> String {
    let t = text.trim().replace('`', "");
    match t.rsplit_once('.') {
        Some((table, f)) if table.starts_with("tab") => f.to_owned(),
        _ => t,
    }
}

fn parse_time(text: &str) -> Option<NaiveDateTime> {
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .or_else(|| {
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .map(|d| d.and_hms_opt(0, 0, 0).unwrap())
    })
}

/// How MariaDB compares a column value with a filter value.
fn compare(stored: &Value, given: &Value) -> Option<std::cmp::Ordering> {
    match (stored, given) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Number(a), b) => {
            let b: f64 = match b {
                Value::Number(n) => n.as_f64()?,
                Value::String(s) => s.trim().parse().unwrap_or(0.0),
                Value::Bool(x) => f64::from(u8::from(*x)),
                _ => return None,
            };
            a.as_f64()?.partial_cmp(&b)
        }
        (Value::String(a), b) => {
            let b = match b {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match (parse_time(a), parse_time(&b)) {
                (Some(x), Some(y)) => Some(x.cmp(&y)),
                _ => Some(a.to_lowercase().cmp(&b.to_lowercase())),
            }
        }
        _ => None,
    }
}

fn like(stored: &Value, pattern: &Value) -> bool {
    let (Some(s), Some(p)) = (stored.as_str(), pattern.as_str()) else {
        return false;
    };
    let re = regex::Regex::new(&format!(
        "(?i)^{}$",
        regex::escape(p).replace('%', ".*").replace('_', ".")
    ))
    .unwrap();
    re.is_match(s)
}

/// One condition: field, operator, value.
#[derive(Debug)]
struct Cond {
    field: String,
    op: String,
    value: Value,
}

fn parse_filters(doctype: &str, text: &str) -> Result<Vec<Cond>, Response> {
    let bad = |m: String| frappe_error(StatusCode::EXPECTATION_FAILED, "ValidationError", Some(&m));
    let json: Value = serde_json::from_str(text).map_err(|e| {
        sql_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "JSONDecodeError",
            &e.to_string(),
        )
    })?;
    let mut out = Vec::new();
    match json {
        Value::Array(items) => {
            for item in items {
                let parts = item.as_array().cloned().unwrap_or_default();
                let parts = match parts.len() {
                    3 => parts,
                    4 => {
                        if parts[0].as_str() != Some(doctype) {
                            return Err(bad(format!(
                                "Filters on child tables are not supported here: {item}"
                            )));
                        }
                        parts[1..].to_vec()
                    }
                    _ => return Err(bad(format!("Invalid filter: {item}"))),
                };
                out.push(Cond {
                    field: bare_field(parts[0].as_str().unwrap_or("")),
                    op: parts[1].as_str().unwrap_or("").to_lowercase(),
                    value: parts[2].clone(),
                });
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let (op, value) = match &v {
                    Value::Array(a) if a.len() == 2 && a[0].is_string() => {
                        (a[0].as_str().unwrap().to_lowercase(), a[1].clone())
                    }
                    _ => ("=".to_owned(), v.clone()),
                };
                out.push(Cond {
                    field: bare_field(&k),
                    op,
                    value,
                });
            }
        }
        other => return Err(bad(format!("Invalid filters: {other}"))),
    }
    for c in &out {
        if !is_column(doctype, &c.field) {
            return Err(sql_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "OperationalError",
                &format!("(1054, \"Unknown column '{}' in 'where clause'\")", c.field),
            ));
        }
        const OPS: &[&str] = &[
            "=", "!=", ">", "<", ">=", "<=", "like", "not like", "in", "not in", "is", "between",
        ];
        if !OPS.contains(&c.op.as_str()) {
            return Err(bad(format!("Operator must be one of {}", OPS.join(", "))));
        }
    }
    Ok(out)
}

fn holds(doc: &Map<String, Value>, c: &Cond) -> bool {
    use std::cmp::Ordering::*;
    let stored = doc.get(&c.field).unwrap_or(&Value::Null);
    let cmp = compare(stored, &c.value);
    let list = |v: &Value| -> Vec<Value> {
        match v {
            Value::Array(a) => a.clone(),
            Value::String(s) => s.split(',').map(|p| json!(p.trim())).collect(),
            other => vec![other.clone()],
        }
    };
    match c.op.as_str() {
        "=" => cmp == Some(Equal),
        "!=" => cmp != Some(Equal),
        ">" => cmp == Some(Greater),
        "<" => cmp == Some(Less),
        ">=" => matches!(cmp, Some(Greater | Equal)),
        "<=" => matches!(cmp, Some(Less | Equal)),
        "like" => like(stored, &c.value),
        "not like" => !like(stored, &c.value),
        "in" => list(&c.value)
            .iter()
            .any(|v| compare(stored, v) == Some(Equal)),
        "not in" => list(&c.value)
            .iter()
            .all(|v| compare(stored, v) != Some(Equal)),
        "is" => {
            let set = !stored.is_null() && stored != "";
            (c.value == "set") == set
        }
        "between" => {
            let b = list(&c.value);
            b.len() == 2
                && matches!(compare(stored, &b[0]), Some(Greater | Equal))
                && matches!(compare(stored, &b[1]), Some(Less | Equal))
        }
        _ => false,
    }
}

async fn list(
    AxState(state): AxState<Shared>,
    Path(doctype): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/api/resource/{doctype}");
    if let Err(r) = gate(&state, "GET", path, &q, &headers, None, Some(&doctype)).await {
        return r;
    }
    let wanted: Vec<String> = match q.get("fields") {
        None => vec!["name".into()],
        Some(text) => match serde_json::from_str::<Vec<String>>(text) {
            Ok(f) => f,
            Err(e) => {
                return sql_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "JSONDecodeError",
                    &e.to_string(),
                );
            }
        },
    };
    let mut columns: Vec<(String, String)> = Vec::new(); // (column, shown as)
    for w in &wanted {
        if w.trim() == "*" {
            columns.extend(STANDARD.iter().map(|c| (c.to_string(), c.to_string())));
            columns.extend(
                fields(&doctype)
                    .iter()
                    .map(|(c, _)| (c.to_string(), c.to_string())),
            );
            continue;
        }
        let (col, alias) = match w.split_once(" as ") {
            Some((c, a)) => (bare_field(c), a.trim().to_owned()),
            None => (bare_field(w), bare_field(w)),
        };
        if is_child_table(&doctype, &col) {
            // A Table field is no column: Frappe builds broken SQL.
            return sql_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ProgrammingError",
                &format!(
                    "(1064, \"You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near 'from `tab{doctype}`'\")"
                ),
            );
        }
        if !is_column(&doctype, &col) {
            return sql_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "OperationalError",
                &format!("(1054, \"Unknown column '{col}' in 'field list'\")"),
            );
        }
        columns.push((col, alias));
    }
    let conds = match q.get("filters") {
        Some(text) => match parse_filters(&doctype, text) {
            Ok(c) => c,
            Err(r) => return r,
        },
        None => Vec::new(),
    };
    let mut order: Vec<(String, bool)> = Vec::new();
    for part in q
        .get("order_by")
        .map_or("modified desc", String::as_str)
        .split(',')
    {
        let mut words = part.split_whitespace();
        let Some(field) = words.next() else { continue };
        let field = bare_field(field);
        if !is_column(&doctype, &field) {
            return sql_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "OperationalError",
                &format!("(1054, \"Unknown column '{field}' in 'order clause'\")"),
            );
        }
        let desc = words.next().is_some_and(|d| d.eq_ignore_ascii_case("desc"));
        order.push((field, desc));
    }
    let number = |k: &str, d: usize| -> Result<usize, Response> {
        match q.get(k) {
            None => Ok(d),
            Some(v) => v.parse().map_err(|_| {
                frappe_error(
                    StatusCode::EXPECTATION_FAILED,
                    "ValidationError",
                    Some(&format!("{k} must be a number")),
                )
            }),
        }
    };
    let start = match number("limit_start", 0) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let length = match q.get("limit_page_length").or(q.get("limit")) {
        None => 20,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                return frappe_error(
                    StatusCode::EXPECTATION_FAILED,
                    "ValidationError",
                    Some("limit_page_length must be a number"),
                );
            }
        },
    };
    let mut s = state.lock().unwrap();
    if s.stale_lists > 0 {
        s.stale_lists -= 1;
        return axum::Json(json!({ "data": [] })).into_response();
    }
    let mut rows: Vec<&Map<String, Value>> = s.docs[&doctype]
        .values()
        .filter(|d| conds.iter().all(|c| holds(d, c)))
        .collect();
    rows.sort_by(|a, b| {
        for (field, desc) in &order {
            let o = compare(&a[field], &b[field]).unwrap_or(std::cmp::Ordering::Equal);
            let o = if *desc { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    let take = if length == 0 { usize::MAX } else { length };
    let data: Vec<Value> = rows
        .into_iter()
        .skip(start)
        .take(take)
        .map(|d| {
            let mut row = Map::new();
            for (col, alias) in &columns {
                row.insert(alias.clone(), d.get(col).cloned().unwrap_or(Value::Null));
            }
            Value::Object(row)
        })
        .collect();
    axum::Json(json!({ "data": data })).into_response()
}

async fn get_doc(
    AxState(state): AxState<Shared>,
    Path((doctype, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/api/resource/{doctype}/{name}");
    if let Err(r) = gate(
        &state,
        "GET",
        path,
        &BTreeMap::new(),
        &headers,
        None,
        Some(&doctype),
    )
    .await
    {
        return r;
    }
    let delay = {
        let mut s = state.lock().unwrap();
        if let Some((doctype, name)) = s.delete_on_first_get.take() {
            s.docs.get_mut(&doctype).unwrap().remove(&name);
        }
        s.gets_in_flight += 1;
        s.max_gets_in_flight = s.max_gets_in_flight.max(s.gets_in_flight);
        s.get_delay
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut s = state.lock().unwrap();
    s.gets_in_flight -= 1;
    match s.docs[&doctype].get(&name) {
        Some(d) => {
            let mut d = d.clone();
            d.insert("doctype".into(), json!(doctype));
            axum::Json(json!({ "data": d })).into_response()
        }
        None => frappe_error(
            StatusCode::NOT_FOUND,
            "DoesNotExistError",
            Some(&format!("{doctype} {name} not found")),
        ),
    }
}

// ---------------------------------------------------------------------------
// Writes

fn label(field: &str) -> String {
    field
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Frappe's validation of a Customer: mandatory and link fields.
fn validate(doctype: &str, doc: &Map<String, Value>) -> Result<(), Response> {
    let blank = |f: &str| {
        doc.get(f)
            .is_none_or(|v| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()))
    };
    if doctype == "Customer" {
        if blank("customer_name") {
            return Err(frappe_error(
                StatusCode::EXPECTATION_FAILED,
                "MandatoryError",
                Some("Error: Value missing for Customer: Customer Name"),
            ));
        }
        for (field, known, link) in [
            ("customer_group", CUSTOMER_GROUPS, "Customer Group"),
            ("territory", TERRITORIES, "Territory"),
            ("default_currency", CURRENCIES, "Currency"),
        ] {
            if let Some(v) = doc.get(field).and_then(Value::as_str)
                && !v.is_empty()
                && !known.contains(&v)
            {
                return Err(frappe_error(
                    StatusCode::EXPECTATION_FAILED,
                    "LinkValidationError",
                    Some(&format!("Could not find {}: {v}", link)),
                ));
            }
        }
        if let Some(v) = doc.get("customer_type").and_then(Value::as_str)
            && !["Company", "Individual", "Partnership"].contains(&v)
        {
            return Err(frappe_error(
                StatusCode::EXPECTATION_FAILED,
                "ValidationError",
                Some(&format!(
                    "Customer Type cannot be \"{v}\". It should be one of \"Company\", \"Individual\", \"Partnership\""
                )),
            ));
        }
    }
    Ok(())
}

fn body_doc(text: &str) -> Result<Map<String, Value>, Response> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        sql_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "JSONDecodeError",
            &e.to_string(),
        )
    })?;
    // Frappe also takes {"data": "<json>"}.
    let v = match v.get("data") {
        Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
            sql_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "JSONDecodeError",
                &e.to_string(),
            )
        })?,
        _ => v,
    };
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(frappe_error(
            StatusCode::EXPECTATION_FAILED,
            "ValidationError",
            Some("The document must be a JSON object"),
        )),
    }
}

async fn insert(
    AxState(state): AxState<Shared>,
    Path(doctype): Path<String>,
    headers: HeaderMap,
    text: String,
) -> Response {
    let body = serde_json::from_str::<Value>(&text).ok();
    let path = format!("/api/resource/{doctype}");
    if let Err(r) = gate(
        &state,
        "POST",
        path,
        &BTreeMap::new(),
        &headers,
        body.as_ref(),
        Some(&doctype),
    )
    .await
    {
        return r;
    }
    let given = match body_doc(&text) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut doc = Map::new();
    for (f, v) in fields(&doctype) {
        doc.insert(f.into(), v);
    }
    for (k, v) in given {
        if is_column(&doctype, &k) || is_child_table(&doctype, &k) {
            doc.insert(k, v);
        }
    }
    if let Err(r) = validate(&doctype, &doc) {
        return r;
    }
    let mut s = state.lock().unwrap();
    // A Unique field refuses a value another document holds.
    if let Some(key) = doc.get("custom_concord_key").filter(|k| !k.is_null())
        && s.docs[&doctype]
            .values()
            .any(|d| d.get("custom_concord_key") == Some(key))
    {
        return frappe_error(
            StatusCode::EXPECTATION_FAILED,
            "UniqueValidationError",
            Some("Concord Key must be unique"),
        );
    }
    let name = if doctype == "Customer" {
        // ERPNext's default: named by the customer name, numbered on clash.
        let base = doc["customer_name"].as_str().unwrap().trim().to_owned();
        let taken = &s.docs["Customer"];
        if !taken.contains_key(&base) {
            base
        } else {
            (1..)
                .map(|n| format!("{base} - {n}"))
                .find(|n| !taken.contains_key(n))
                .unwrap()
        }
    } else {
        let series = doc["naming_series"]
            .as_str()
            .unwrap_or("DOC-.YYYY.-")
            .to_owned();
        s.next_in_series(&series)
    };
    doc.insert("docstatus".into(), json!(0));
    let at = Utc::now();
    s.put(&doctype, &name, Value::Object(doc), at);
    let mut out = s.docs[&doctype][&name].clone();
    out.insert("doctype".into(), json!(doctype));
    axum::Json(json!({ "data": out })).into_response()
}

async fn update(
    AxState(state): AxState<Shared>,
    Path((doctype, name)): Path<(String, String)>,
    headers: HeaderMap,
    text: String,
) -> Response {
    let body = serde_json::from_str::<Value>(&text).ok();
    let path = format!("/api/resource/{doctype}/{name}");
    if let Err(r) = gate(
        &state,
        "PUT",
        path,
        &BTreeMap::new(),
        &headers,
        body.as_ref(),
        Some(&doctype),
    )
    .await
    {
        return r;
    }
    let given = match body_doc(&text) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut s = state.lock().unwrap();
    let Some(current) = s.docs[&doctype].get(&name).cloned() else {
        return frappe_error(
            StatusCode::NOT_FOUND,
            "DoesNotExistError",
            Some(&format!("{doctype} {name} not found")),
        );
    };
    if let Some(m) = given.get("modified").and_then(Value::as_str)
        && m != current["modified"].as_str().unwrap_or("")
    {
        return frappe_error(
            StatusCode::EXPECTATION_FAILED,
            "TimestampMismatchError",
            Some(&format!(
                "Error: Document has been modified after you have opened it ({}, {m}). Please refresh to get the latest document.",
                current["modified"].as_str().unwrap_or("")
            )),
        );
    }
    match current["docstatus"].as_i64() {
        Some(2) => {
            return frappe_error(
                StatusCode::EXPECTATION_FAILED,
                "ValidationError",
                Some("Cannot edit cancelled document"),
            );
        }
        Some(1) => {
            if let Some(field) = given
                .iter()
                .find(|(k, v)| !STANDARD.contains(&k.as_str()) && current.get(*k) != Some(*v))
                .map(|(k, _)| k)
            {
                return frappe_error(
                    StatusCode::EXPECTATION_FAILED,
                    "UpdateAfterSubmitError",
                    Some(&format!(
                        "Not allowed to change {} after submission",
                        label(field)
                    )),
                );
            }
        }
        _ => {}
    }
    let mut doc = current;
    for (k, v) in given {
        if (is_column(&doctype, &k) && !STANDARD.contains(&k.as_str()))
            || is_child_table(&doctype, &k)
        {
            doc.insert(k, v);
        }
    }
    if let Err(r) = validate(&doctype, &doc) {
        return r;
    }
    s.put(&doctype, &name, Value::Object(doc), Utc::now());
    let mut out = s.docs[&doctype][&name].clone();
    out.insert("doctype".into(), json!(doctype));
    axum::Json(json!({ "data": out })).into_response()
}
