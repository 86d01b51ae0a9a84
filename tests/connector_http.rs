//! The `http` driver against a local mock API (axum on port 0): the
//! conformance kit for every pagination style, and the faults real APIs
//! show — expired tokens, rate-limit storms, pages in circles, oversize and
//! lying answers — each classified.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::StreamExt;
use serde_json::{Value, json};

use concord::connector::conformance::{self, Fault, Harness, Seed};
use concord::connector::http::HttpConnector;
use concord::connector::{
    Change, Connector, ConnectorError, Cursor, ErrorKind, Instance, Page, PushOutcome,
};
use concord::located::SourceFile;
use concord::model::ExternalId;

const TOKEN: &str = "static-token-s3cret";

// ---------------------------------------------------------------------------
// The mock API

/// Ways the mock misbehaves, one at a time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Quirk {
    #[default]
    None,
    /// Ignores the page number: every page is the first.
    RepeatPages,
    /// The cursor's next token goes back after the second page.
    CursorBackwards,
    /// The same next token on every page.
    CursorRepeats,
    /// 200 with `{"status":"error"}`.
    ErrorBody,
    /// `Link` to another origin.
    ForeignLink,
    /// Answers without Content-Length (chunked).
    Chunked,
    /// The second record of a page has no id.
    NoId,
    /// Every bearer token is refused.
    RejectTokens,
    /// Lists ignore the `since` filter.
    IgnoreSince,
}

#[derive(Default)]
struct Mock {
    records: BTreeMap<String, Value>,
    fault: Option<Fault>,
    /// Requests that pass before the fault applies.
    fault_after: usize,
    /// Requests the fault applies to (then it is gone).
    fault_times: usize,
    requests: Vec<Instant>,
    auth_optional: bool,
    token_requests: usize,
    tokens: HashSet<String>,
    token_lifetime: u64,
    idempotent: HashMap<String, Value>,
    next_id: u64,
    quirk: Quirk,
    /// Most records a page holds, whatever the client asks.
    cap: Option<usize>,
    /// The bodies of search requests.
    searches: Vec<Value>,
}

type Shared = Arc<Mutex<Mock>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Mock> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve() -> (String, Shared) {
    let state = Shared::default();
    let app = Router::new()
        .route("/oauth/token", post(token))
        .route("/batch/items", post(batch))
        .route("/xero/items", post(xero))
        .route("/echo/items", get(echo))
        .route("/search/items", post(search))
        .route("/{style}/items", get(list).post(create))
        .route("/{style}/items/{id}", get(fetch).put(update))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), state)
}

/// Authentication and staged faults, before any handler's own work.
async fn gate(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let fault = {
        let mut m = lock(s);
        m.requests.push(Instant::now());
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let known = auth == format!("Bearer {TOKEN}")
            || auth
                .strip_prefix("Bearer ")
                .is_some_and(|t| m.tokens.contains(t));
        if m.quirk == Quirk::RejectTokens || !(known || m.auth_optional) {
            return Some(
                (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"message": "invalid token"})),
                )
                    .into_response(),
            );
        }
        if m.fault_after > 0 {
            m.fault_after -= 1;
            None
        } else if m.fault_times > 0 {
            m.fault_times -= 1;
            m.fault
        } else {
            None
        }
    };
    Some(match fault? {
        Fault::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "token expired"})),
        )
            .into_response(),
        Fault::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after_secs.to_string())],
            Json(json!({"message": "slow down"})),
        )
            .into_response(),
        Fault::Unavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, "upstream database is down").into_response()
        }
        Fault::Timeout => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Json(json!({"items": []})).into_response()
        }
        Fault::Malformed => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"items": [{"id": "R0000"#,
        )
            .into_response(),
    })
}

fn updated(r: &Value) -> DateTime<Utc> {
    r["updated_at"].as_str().unwrap().parse().unwrap()
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn json_response(body: Value, chunked: bool) -> Response {
    if chunked {
        let text = body.to_string().into_bytes();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            text.chunks(512).map(|c| Ok(c.to_vec())).collect();
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap()
    } else {
        Json(body).into_response()
    }
}

async fn list(
    State(s): State<Shared>,
    Path(style): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&s, &headers).await {
        return r;
    }
    let m = lock(&s);
    let since: Option<DateTime<Utc>> = q
        .get("since")
        .map(|t| t.parse().expect("since is rfc3339"))
        .filter(|_| m.quirk != Quirk::IgnoreSince);
    let mut rows: Vec<Value> = m
        .records
        .values()
        .filter(|r| since.is_none_or(|s| updated(r) >= s))
        .cloned()
        .collect();
    if style == "unordered" {
        rows.sort_by(|a, b| b["id"].as_str().cmp(&a["id"].as_str()));
    } else {
        rows.sort_by(|a, b| (updated(a), a["id"].as_str()).cmp(&(updated(b), b["id"].as_str())));
    }
    let num = |k: &str, d: usize| q.get(k).map_or(d, |v| v.parse().expect("a number"));
    let limit_param = if q.contains_key("limit") {
        "limit"
    } else {
        "per_page"
    };
    let size = num(limit_param, 100).min(m.cap.unwrap_or(usize::MAX));
    let quirk = m.quirk;
    if quirk == Quirk::ErrorBody {
        return Json(json!({"status": "error", "message": "Tenant suspended"})).into_response();
    }
    let window = |start: usize| -> Vec<Value> {
        let mut page: Vec<Value> = rows.iter().skip(start).take(size).cloned().collect();
        if quirk == Quirk::NoId && page.len() > 1 {
            page[1].as_object_mut().unwrap().remove("id");
        }
        page
    };
    let chunked = quirk == Quirk::Chunked;
    match style.as_str() {
        "page" | "unordered" => {
            let page = if quirk == Quirk::RepeatPages {
                1
            } else {
                num("page", 1)
            };
            json_response(json!({"items": window((page - 1) * size)}), chunked)
        }
        "offset" => json_response(json!({"data": window(num("offset", 0))}), chunked),
        "cursor" => {
            let after = num("after", 0);
            let items = window(after);
            let mut next = after + items.len();
            if quirk == Quirk::CursorBackwards && after > 0 {
                next = 1;
            }
            if quirk == Quirk::CursorRepeats {
                next = size;
            }
            let paging = if after + items.len() < rows.len() {
                json!({"next": {"after": next.to_string()}})
            } else {
                json!({})
            };
            json_response(json!({"results": items, "paging": paging}), chunked)
        }
        "link" => {
            let page = num("page", 1);
            let items = window((page - 1) * size);
            let mut resp = json_response(Value::Array(items), chunked);
            if page * size < rows.len() {
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("");
                let origin = if quirk == Quirk::ForeignLink {
                    "http://elsewhere.invalid:9".to_owned()
                } else {
                    format!("http://{host}")
                };
                let since = q
                    .get("since")
                    .map(|s| {
                        format!(
                            "&since={}",
                            url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                        )
                    })
                    .unwrap_or_default();
                let link = format!(
                    "<{origin}/link/items?page={}&per_page={size}{since}>; rel=\"next\", <{origin}/link/items?page=1>; rel=\"first\"",
                    page + 1
                );
                resp.headers_mut()
                    .insert(header::LINK, link.parse().unwrap());
            }
            resp
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn fetch(
    State(s): State<Shared>,
    Path((_style, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&s, &headers).await {
        return r;
    }
    match lock(&s).records.get(&id) {
        Some(r) => Json(json!({"item": r})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "no such item"})),
        )
            .into_response(),
    }
}

fn insert(m: &mut Mock, body: &Value) -> Value {
    m.next_id += 1;
    let mut record = body.clone();
    let id = format!("P{:04}", m.next_id);
    record["id"] = json!(id);
    record["updated_at"] = json!(now_text());
    m.records.insert(id, record.clone());
    record
}

async fn create(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = gate(&s, &headers).await {
        return r;
    }
    let mut m = lock(&s);
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(done) = key.as_ref().and_then(|k| m.idempotent.get(k)) {
        return (StatusCode::CREATED, Json(done.clone())).into_response();
    }
    if body.get("bad") == Some(&json!(true)) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "name must not be empty"})),
        )
            .into_response();
    }
    let record = insert(&mut m, &body);
    if let Some(k) = key {
        m.idempotent.insert(k, record.clone());
    }
    (StatusCode::CREATED, Json(record)).into_response()
}

async fn update(
    State(s): State<Shared>,
    Path((_style, id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = gate(&s, &headers).await {
        return r;
    }
    let mut m = lock(&s);
    let Some(record) = m.records.get_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "no such item"})),
        )
            .into_response();
    };
    for (k, v) in body.as_object().into_iter().flatten() {
        record[k] = v.clone();
    }
    record["updated_at"] = json!(now_text());
    Json(record.clone()).into_response()
}

/// HubSpot-like batch create: all or nothing, results in any order with
/// the caller's reference echoed.
async fn batch(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = gate(&s, &headers).await {
        return r;
    }
    let mut m = lock(&s);
    let inputs = body["inputs"].as_array().cloned().unwrap_or_default();
    if let Some(n) = inputs
        .iter()
        .position(|i| i["properties"]["bad"] == json!(true))
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"status": "error", "message": format!("input {n}: name must not be empty")}),
            ),
        )
            .into_response();
    }
    let mut results: Vec<Value> = inputs
        .iter()
        .map(|i| {
            let r = insert(&mut m, &i["properties"]);
            json!({"id": r["id"], "ref": i["ref"], "properties": i["properties"]})
        })
        .collect();
    results.reverse();
    Json(json!({"status": "COMPLETE", "results": results})).into_response()
}

/// Xero-like: 200 with per-element validation errors.
async fn xero(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = gate(&s, &headers).await {
        return r;
    }
    let mut m = lock(&s);
    let items: Vec<Value> = body["Items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| {
            if i["bad"] == json!(true) {
                json!({"HasErrors": true, "ValidationErrors": [{"Message": "Contact name is required"}]})
            } else {
                let mut r = insert(&mut m, i);
                r["HasErrors"] = json!(false);
                r
            }
        })
        .collect();
    Json(json!({"Status": "OK", "Items": items})).into_response()
}

/// HubSpot-like search: filter, page size and cursor in a JSON body.
async fn search(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = gate(&s, &headers).await {
        return r;
    }
    let mut m = lock(&s);
    m.searches.push(body.clone());
    let (Some(since_ms), Some(limit)) =
        (body["filter"]["since_ms"].as_i64(), body["limit"].as_u64())
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": format!("bad search {body}")})),
        )
            .into_response();
    };
    let after: usize = match body.get("after") {
        None => 0,
        Some(Value::String(t)) => t.parse().unwrap_or(usize::MAX),
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": format!("bad after {other}")})),
            )
                .into_response();
        }
    };
    let mut rows: Vec<&Value> = m
        .records
        .values()
        .filter(|r| updated(r).timestamp_millis() >= since_ms)
        .collect();
    rows.sort_by_key(|r| (updated(r), r["id"].as_str().map(str::to_owned)));
    let page: Vec<&Value> = rows
        .iter()
        .skip(after)
        .take(limit as usize)
        .copied()
        .collect();
    let next = after + page.len();
    let paging = if next < rows.len() {
        json!({"next": {"after": next.to_string()}})
    } else {
        json!(null)
    };
    Json(json!({"total": rows.len(), "results": page, "paging": paging})).into_response()
}

/// Echoes everything it got in an error, as careless systems do.
async fn echo(headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let all: Vec<String> = headers
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
        .collect();
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"message": format!("bad request {uri} with {}", all.join(", "))})),
    )
        .into_response()
}

async fn token(State(s): State<Shared>, body: String) -> Response {
    let mut m = lock(&s);
    m.token_requests += 1;
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && form.get("client_id").map(String::as_str) == Some("client-1")
        && form.get("client_secret").map(String::as_str) == Some("client-s3cret")
        && form.get("scope").map(String::as_str) == Some("items.read items.write");
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "unknown client"})),
        )
            .into_response();
    }
    let token = format!("tok-{}", m.token_requests);
    m.tokens.insert(token.clone());
    Json(json!({"access_token": token, "expires_in": m.token_lifetime, "token_type": "Bearer"}))
        .into_response()
}

// ---------------------------------------------------------------------------
// Definitions

/// A definition of the mock for one pagination style.
fn definition(base: &str, style: &str, size: usize) -> String {
    let (records, pagination) = match style {
        "page" | "unordered" => (
            "/items",
            format!(
                r#"{{ style = "page", param = "page", size_param = "per_page", size = {size} }}"#
            ),
        ),
        "offset" => (
            "/data",
            format!(
                r#"{{ style = "offset", param = "offset", size_param = "limit", size = {size} }}"#
            ),
        ),
        "cursor" => (
            "/results",
            format!(
                r#"{{ style = "cursor", param = "after", next = "/paging/next/after", size_param = "limit", size = {size} }}"#
            ),
        ),
        "link" => (
            "",
            format!(r#"{{ style = "link", size_param = "per_page", size = {size} }}"#),
        ),
        other => panic!("no style {other}"),
    };
    let ordered = style != "unordered";
    format!(
        r#"name = "mock"
driver = "http"
base_url = "{base}"
timeout_secs = 0.5
retry = {{ max_attempts = 2, initial_delay_ms = 10, max_delay_ms = 1000 }}
look_back_secs = 60
idempotency_header = "Idempotency-Key"
auth = {{ kind = "bearer", token = "${{token}}" }}
healthcheck = {{ path = "/page/items", query = {{ per_page = "1" }} }}

[entities.item]
id = "/id"
updated_at = {{ pointer = "/updated_at", format = "rfc3339" }}
list = {{ path = "/{style}/items", records = "{records}", ordered = {ordered} }}
pagination = {pagination}
incremental = {{ query = {{ since = "{{since}}" }}, format = "rfc3339" }}
get = {{ path = "/{style}/items/{{id}}", records = "/item" }}
create = {{ path = "/{style}/items", id = "/id" }}
update = {{ method = "PUT", path = "/{style}/items/{{id}}", id = "/id" }}
"#
    )
}

fn open(text: &str, instance: &str) -> HttpConnector {
    open_with(text, Instance::bare(instance).with_var("token", TOKEN))
}

fn open_with(text: &str, instance: Instance) -> HttpConnector {
    let source = SourceFile {
        path: PathBuf::from("connectors/mock.toml"),
        text: text.to_owned(),
    };
    HttpConnector::open(&source, &instance).unwrap_or_else(|e| panic!("{e}"))
}

fn seed_record(s: &Seed) -> Value {
    json!({
        "id": s.id,
        "updated_at": s.updated_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "name": s.name,
    })
}

async fn seed(state: &Shared, n: usize) {
    let mut m = lock(state);
    m.records = conformance::seeds(n)
        .iter()
        .map(|s| (s.id.clone(), seed_record(s)))
        .collect();
}

async fn pull_all(c: &dyn Connector, cursor: Option<Cursor>) -> Result<Vec<Page>, ConnectorError> {
    let mut stream = c.pull("item", cursor);
    let mut pages = Vec::new();
    while let Some(page) = stream.next().await {
        pages.push(page?);
    }
    Ok(pages)
}

async fn pull_err(c: &dyn Connector) -> ConnectorError {
    match pull_all(c, None).await {
        Ok(pages) => panic!("expected a failure, got {} pages", pages.len()),
        Err(e) => e,
    }
}

fn requests(state: &Shared) -> usize {
    lock(state).requests.len()
}

// ---------------------------------------------------------------------------
// The conformance kit, once per pagination style

struct Mocked {
    state: Shared,
    text: String,
    instance: String,
    size: usize,
}

impl Mocked {
    async fn new(style: &str) -> Mocked {
        let (base, state) = serve().await;
        Mocked {
            state,
            text: definition(&base, style, 5),
            instance: format!("mock_{style}"),
            size: 5,
        }
    }
}

#[async_trait]
impl Harness for Mocked {
    fn connector(&self) -> Arc<dyn Connector> {
        Arc::new(open(&self.text, &self.instance))
    }
    fn entity(&self) -> &str {
        "item"
    }
    fn page_size(&self) -> usize {
        self.size
    }
    async fn seed(&self, records: &[Seed]) -> anyhow::Result<()> {
        lock(&self.state).records = records
            .iter()
            .map(|s| (s.id.clone(), seed_record(s)))
            .collect();
        Ok(())
    }
    async fn upsert(&self, records: &[Seed]) -> anyhow::Result<()> {
        let mut m = lock(&self.state);
        for s in records {
            m.records.insert(s.id.clone(), seed_record(s));
        }
        Ok(())
    }
    async fn stored(&self) -> anyhow::Result<BTreeMap<String, Value>> {
        Ok(lock(&self.state).records.clone())
    }
    async fn inject(&self, fault: Fault) -> anyhow::Result<bool> {
        let mut m = lock(&self.state);
        m.fault = Some(fault);
        m.fault_times = usize::MAX;
        Ok(true)
    }
    async fn heal(&self) -> anyhow::Result<()> {
        let mut m = lock(&self.state);
        m.fault = None;
        m.fault_times = 0;
        Ok(())
    }
}

async fn conformance_for(style: &str) {
    let mut h = Mocked::new(style).await;
    conformance::pull_pages(&h).await.unwrap();
    conformance::resume_from_cursor(&h).await.unwrap();
    conformance::idempotent_push(&h).await.unwrap();
    let tested = conformance::classify_errors(&h).await.unwrap();
    assert_eq!(tested.len(), 5, "{tested:?}");
    // The mock's cursor tokens and links are offsets and page numbers in
    // disguise: only keyset pages keep them from stepping over a record
    // when the list changes during a pull.
    if matches!(style, "cursor" | "link") {
        h.text = h.text.replace("size = 5 }", "size = 5, keyset = true }");
        assert!(h.text.contains("keyset = true"));
    }
    conformance::change_during_pull(&h).await.unwrap();
}

/// Without keyset the mock's offset tokens step over records when the list
/// changes during a pull: what `keyset = true` is for.
#[tokio::test]
async fn offset_tokens_without_keyset_lose_records_when_the_list_changes() {
    let h = Mocked::new("cursor").await;
    let err = conformance::change_during_pull(&h).await.unwrap_err();
    assert!(
        err.to_string().contains("lost while two records changed"),
        "{err:#}"
    );
}

#[tokio::test]
async fn conformance_page_numbers() {
    conformance_for("page").await;
}

#[tokio::test]
async fn conformance_offsets() {
    conformance_for("offset").await;
}

#[tokio::test]
async fn conformance_cursor_tokens() {
    conformance_for("cursor").await;
}

#[tokio::test]
async fn conformance_link_headers() {
    conformance_for("link").await;
}

// ---------------------------------------------------------------------------
// Authentication

fn oauth_definition(base: &str) -> String {
    definition(base, "page", 5).replace(
        r#"auth = { kind = "bearer", token = "${token}" }"#,
        &format!(
            r#"auth = {{ kind = "oauth2_client_credentials", token_url = "{base}/oauth/token", client_id = "${{client_id}}", client_secret = "${{client_secret}}", scopes = ["items.read", "items.write"], auth_style = "body" }}"#
        ),
    )
}

fn oauth_instance(secret: &str) -> Instance {
    Instance::bare("mock_oauth")
        .with_var("client_id", "client-1")
        .with_var("client_secret", secret)
}

#[tokio::test]
async fn oauth2_tokens_are_cached_renewed_before_expiry_and_once_after_a_401() {
    let (base, state) = serve().await;
    seed(&state, 7).await;
    lock(&state).token_lifetime = 2;
    let c = open_with(&oauth_definition(&base), oauth_instance("client-s3cret"));

    for _ in 0..3 {
        assert_eq!(pull_all(&c, None).await.unwrap().len(), 2);
    }
    assert_eq!(
        lock(&state).token_requests,
        1,
        "one token serves many requests"
    );

    // A 2 s token is renewed after 1 s, before it can expire on the way.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pull_all(&c, None).await.unwrap();
    assert_eq!(lock(&state).token_requests, 2, "renewed before expiry");

    // The system forgets the token mid-run: one new token, and on.
    lock(&state).tokens.clear();
    pull_all(&c, None).await.unwrap();
    assert_eq!(lock(&state).token_requests, 3, "renewed once after a 401");

    // Refused whatever the token: Auth after exactly one renewal.
    lock(&state).quirk = Quirk::RejectTokens;
    let before = requests(&state);
    let err = pull_err(&c).await;
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert_eq!(lock(&state).token_requests, 4);
    assert_eq!(
        requests(&state) - before,
        2,
        "the refused request, then one retry with a new token"
    );
}

#[tokio::test]
async fn oauth2_refused_client_credentials_are_auth_errors_without_the_secret() {
    let (base, _state) = serve().await;
    let c = open_with(&oauth_definition(&base), oauth_instance("wrong-s3cret"));
    let err = pull_err(&c).await;
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert!(err.message.contains("invalid_client"), "{err}");
    let shown = format!("{err} {err:?} {c:?}");
    assert!(!shown.contains("wrong-s3cret"), "{shown}");
}

#[tokio::test]
async fn healthcheck_sends_one_authenticated_request() {
    let (base, state) = serve().await;
    let text = definition(&base, "page", 5);
    open(&text, "mock_health").healthcheck().await.unwrap();
    assert_eq!(requests(&state), 1);
    let wrong = open_with(
        &text,
        Instance::bare("mock_health_wrong").with_var("token", "nope"),
    );
    let err = wrong.healthcheck().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
}

// ---------------------------------------------------------------------------
// Rate limits and retries

fn with_retry(text: &str, retry: &str) -> String {
    text.replace(
        "retry = { max_attempts = 2, initial_delay_ms = 10, max_delay_ms = 1000 }",
        retry,
    )
}

#[tokio::test]
async fn a_429_storm_passes_within_the_retry_budget_and_surfaces_beyond_it() {
    let (base, state) = serve().await;
    seed(&state, 3).await;
    let text = with_retry(
        &definition(&base, "page", 5),
        "retry = { max_attempts = 5, initial_delay_ms = 10, max_delay_ms = 200 }",
    );
    let c = open(&text, "mock_storm");
    {
        let mut m = lock(&state);
        m.fault = Some(Fault::RateLimited {
            retry_after_secs: 0,
        });
        m.fault_times = 4;
    }
    let pages = pull_all(&c, None).await.unwrap();
    assert_eq!(pages[0].records.len(), 3);
    assert_eq!(requests(&state), 5, "four 429s, then the page");

    lock(&state).fault_times = 100;
    let err = pull_err(&c).await;
    assert_eq!(
        err.kind,
        ErrorKind::RateLimited {
            retry_after: Some(Duration::ZERO)
        },
        "{err}"
    );
    assert_eq!(requests(&state), 10, "five attempts, no more");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (base, state) = serve().await;
    seed(&state, 3).await;
    let text = with_retry(
        &definition(&base, "page", 5),
        "retry = { max_attempts = 3, initial_delay_ms = 10, max_delay_ms = 5000 }",
    );
    let c = open(&text, "mock_retry_after");
    {
        let mut m = lock(&state);
        m.fault = Some(Fault::RateLimited {
            retry_after_secs: 1,
        });
        m.fault_times = 1;
    }
    pull_all(&c, None).await.unwrap();
    let m = lock(&state);
    assert_eq!(m.requests.len(), 2);
    let waited = m.requests[1] - m.requests[0];
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert!(waited < Duration::from_millis(1800), "waited {waited:?}");
}

/// The issue asks for the rate over 30 s. Tests must stay quick, so the
/// window defaults to 3 s (30 requests at 10/s: enough to see a limiter
/// that is off by 10%); `CONCORD_RATE_TEST_SECS=30` runs the long form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_under_concurrent_load() {
    let secs: f64 = std::env::var("CONCORD_RATE_TEST_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let (base, state) = serve().await;
    let text = definition(&base, "page", 5).replace(
        "look_back_secs = 60",
        "look_back_secs = 60\nrate_limit = { per_second = 10 }\nconcurrency = 4",
    );
    // Two connectors of one instance (two jobs) share its limit.
    let a = Arc::new(open(&text, "mock_rate"));
    let b = Arc::new(open(&text, "mock_rate"));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for n in 0..4 {
        let c = if n % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                c.healthcheck().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let m = lock(&state);
    let (first, last) = (m.requests[0], *m.requests.last().unwrap());
    let rate = (m.requests.len() - 1) as f64 / (last - first).as_secs_f64();
    println!(
        "rate limit 10/s over {secs} s: {} requests, {rate:.2} requests/s observed",
        m.requests.len()
    );
    assert!(
        (9.0..=11.0).contains(&rate),
        "observed {rate:.2} requests/s"
    );
}

// ---------------------------------------------------------------------------
// Pages that cannot be trusted

#[tokio::test]
async fn repeated_pages_are_detected() {
    let (base, state) = serve().await;
    seed(&state, 12).await;
    lock(&state).quirk = Quirk::RepeatPages;
    // Page numbers, not keyset pages (which do not step through numbers).
    let text = definition(&base, "page", 5).replace("size = 5 }", "size = 5, keyset = false }");
    let c = open(&text, "mock_repeat");
    let mut stream = c.pull("item", None);
    assert_eq!(stream.next().await.unwrap().unwrap().records.len(), 5);
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidData);
    assert!(err.message.contains("repeats the previous page"), "{err}");
    assert!(
        stream.next().await.is_none(),
        "the pull ends after a failure"
    );
}

#[tokio::test]
async fn cursor_tokens_that_go_back_or_come_again_are_detected() {
    let (base, state) = serve().await;
    seed(&state, 30).await;
    let c = open(&definition(&base, "cursor", 5), "mock_cursor_back");
    lock(&state).quirk = Quirk::CursorBackwards;
    let err = pull_err(&c).await;
    assert_eq!(err.kind, ErrorKind::InvalidData);
    assert!(err.message.contains("not after the previous"), "{err}");

    lock(&state).quirk = Quirk::CursorRepeats;
    let err = pull_err(&c).await;
    assert_eq!(err.kind, ErrorKind::InvalidData);
    assert!(
        err.message.contains("a second time") || err.message.contains("repeats"),
        "{err}"
    );
}

#[tokio::test]
async fn links_to_another_origin_are_not_followed() {
    let (base, state) = serve().await;
    seed(&state, 12).await;
    lock(&state).quirk = Quirk::ForeignLink;
    let c = open(&definition(&base, "link", 5), "mock_foreign");
    let err = pull_err(&c).await;
    assert_eq!(err.kind, ErrorKind::InvalidData);
    assert!(err.message.contains("elsewhere.invalid"), "{err}");
}

#[tokio::test]
async fn pages_are_requested_only_when_the_consumer_asks() {
    let (base, state) = serve().await;
    seed(&state, 20).await;
    let c = open(&definition(&base, "page", 5), "mock_lazy");
    let mut stream = c.pull("item", None);
    assert_eq!(requests(&state), 0);
    stream.next().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(requests(&state), 1);
    stream.next().await.unwrap().unwrap();
    assert_eq!(requests(&state), 2);
    drop(stream);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(requests(&state), 2);
}

#[tokio::test]
async fn systems_that_return_fewer_than_asked_are_read_to_an_empty_page() {
    let (base, state) = serve().await;
    seed(&state, 12).await;
    lock(&state).cap = Some(3);
    let text = definition(&base, "page", 5);
    // Ending at the first short page would stop after 3 of 12 records.
    let pages = pull_all(&open(&text, "mock_cap_short"), None)
        .await
        .unwrap();
    assert_eq!(pages.iter().map(|p| p.records.len()).sum::<usize>(), 3);
    // Page numbers to the empty page (keyset pages of such a system are
    // below, with offsets).
    let text = text.replace(
        "size = 5 }",
        "size = 5, end = \"empty_page\", keyset = false }",
    );
    let pages = pull_all(&open(&text, "mock_cap_empty"), None)
        .await
        .unwrap();
    assert_eq!(pages.iter().map(|p| p.records.len()).sum::<usize>(), 12);
    assert_eq!(
        requests(&state),
        1 + 5,
        "four pages of 3, then the empty one"
    );
    // Page numbers cannot show that the list held still: the cursor
    // stays after the first page, and the next pull reads on from there.
    let first = conformance::seeds(12)[2].clone();
    assert!(
        pages
            .iter()
            .all(|p| p.cursor == Cursor::at(first.updated_at, first.id.clone())),
        "{:?}",
        pages.iter().map(|p| &p.cursor).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn keyset_offsets_read_a_system_that_returns_fewer_than_asked() {
    let (base, state) = serve().await;
    seed(&state, 12).await;
    lock(&state).cap = Some(3);
    let text =
        definition(&base, "offset", 5).replace("size = 5 }", "size = 5, end = \"empty_page\" }");
    let pages = pull_all(&open(&text, "mock_cap_keyset"), None)
        .await
        .unwrap();
    let ids: Vec<&str> = pages
        .iter()
        .flat_map(|p| p.records.iter().map(|r| r.external_id.as_str()))
        .collect();
    let want: Vec<String> = conformance::seeds(12).into_iter().map(|s| s.id).collect();
    assert_eq!(ids, want, "each record once, in order");
    let newest = conformance::seeds(12).pop().unwrap();
    assert_eq!(
        pages.last().unwrap().cursor,
        Cursor::at(newest.updated_at, newest.id),
        "overlapping offsets within one time need not hold the cursor"
    );
}

#[tokio::test]
async fn unordered_lists_move_the_cursor_only_on_the_last_page() {
    let (base, state) = serve().await;
    seed(&state, 12).await;
    let c = open(&definition(&base, "unordered", 5), "mock_unordered");
    let start = Cursor::default();
    let pages = pull_all(&c, Some(start.clone())).await.unwrap();
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0].cursor, start);
    assert_eq!(pages[1].cursor, start);
    let newest = conformance::seeds(12).pop().unwrap();
    assert_eq!(pages[2].cursor, Cursor::at(newest.updated_at, newest.id));
}

#[tokio::test]
async fn incremental_pulls_ask_since_the_cursor_minus_the_look_back() {
    let (base, state) = serve().await;
    seed(&state, 300).await; // one second per three records: 100 s
    let c = open(&definition(&base, "offset", 50), "mock_since");
    let seeds = conformance::seeds(300);
    let at = &seeds[270]; // 90 s in
    let pages = pull_all(&c, Some(Cursor::at(at.updated_at, at.id.clone())))
        .await
        .unwrap();
    let ids: Vec<&str> = pages
        .iter()
        .flat_map(|p| p.records.iter().map(|r| r.external_id.as_str()))
        .collect();
    // 60 s look-back: from 30 s in, record 90 on; the cursor's own record
    // and its neighbours are read again (harmless), nothing after it lost.
    assert_eq!(ids.first(), Some(&"R000090"));
    assert_eq!(ids.len(), 210);
    assert_eq!(pages.last().unwrap().cursor.id.as_deref(), Some("R000299"));
}

/// A search endpoint: time, page size and an `after` offset in a JSON body.
fn search_definition(base: &str) -> String {
    format!(
        r#"name = "mock"
driver = "http"
base_url = "{base}"
auth = {{ kind = "bearer", token = "${{token}}" }}
[entities.item]
id = "/id"
updated_at = {{ pointer = "/updated_at" }}
[entities.item.incremental]
format = "unix_ms"
pagination = {{ style = "cursor", next = "/paging/next/after", size = 40 }}
[entities.item.incremental.request]
method = "POST"
path = "/search/items"
records = "/results"
ordered = true
body = {{ filter = {{ since_ms = "{{since}}" }}, sorts = ["updated_at"], limit = "{{size}}", after = "{{cursor}}" }}
"#
    )
}

#[tokio::test]
async fn search_requests_carry_time_size_and_cursor_in_a_json_body() {
    let (base, state) = serve().await;
    seed(&state, 300).await;
    let c = open(&search_definition(&base), "mock_search");
    assert!(c.capabilities().entities["item"].pull);
    // No cursor: everything, from the beginning of time.
    let pages = pull_all(&c, None).await.unwrap();
    assert_eq!(pages.len(), 8);
    assert_eq!(pages.iter().map(|p| p.records.len()).sum::<usize>(), 300);
    // From a cursor 90 s in: 60 s of look-back, as in the list case.
    let seeds = conformance::seeds(300);
    let cursor = Cursor::at(seeds[270].updated_at, seeds[270].id.clone());
    let pages = pull_all(&c, Some(cursor)).await.unwrap();
    let ids: Vec<&str> = pages
        .iter()
        .flat_map(|p| p.records.iter().map(|r| r.external_id.as_str()))
        .collect();
    assert_eq!((ids.len(), ids[0]), (210, "R000090"));
}

// ---------------------------------------------------------------------------
// Lists that change while they are read

/// Reads a pull of `item` to its end; `between` runs after the first page.
async fn pull_changing(
    c: &dyn Connector,
    cursor: Option<Cursor>,
    between: impl FnOnce(),
) -> Vec<Page> {
    let mut stream = c.pull("item", cursor);
    let mut pages = vec![stream.next().await.unwrap().unwrap()];
    between();
    while let Some(page) = stream.next().await {
        pages.push(page.unwrap());
    }
    pages
}

fn page_ids(pages: &[Page]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.records.iter().map(|r| r.external_id.as_str().to_owned()))
        .collect()
}

/// Two records of the first page change: they move to the end of the
/// list, and every record behind them moves up two places.
fn change_two(state: &Shared) -> DateTime<Utc> {
    let mut m = lock(state);
    // Later than any seed, whatever the clock says.
    let now = conformance::seeds(1)[0].updated_at + chrono::Duration::hours(1);
    for (n, id) in ["R000001", "R000003"].into_iter().enumerate() {
        let r = m.records.get_mut(id).unwrap();
        r["updated_at"] = json!(
            (now + chrono::Duration::milliseconds(n as i64))
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        r["name"] = json!("changed");
    }
    now + chrono::Duration::milliseconds(1)
}

#[tokio::test]
async fn records_changed_during_a_pull_are_not_stepped_over() {
    for style in ["page", "offset"] {
        let (base, state) = serve().await;
        seed(&state, 20).await;
        let c = open(&definition(&base, style, 5), &format!("mock_shift_{style}"));
        let mut newest = None;
        let pages = pull_changing(&c, None, || newest = Some(change_two(&state))).await;
        let ids = page_ids(&pages);
        let want: Vec<String> = conformance::seeds(20).into_iter().map(|s| s.id).collect();
        let unique: BTreeMap<&String, usize> = ids.iter().fold(BTreeMap::new(), |mut m, id| {
            *m.entry(id).or_default() += 1;
            m
        });
        assert_eq!(
            unique.keys().copied().cloned().collect::<Vec<_>>(),
            want,
            "{style}: {ids:?}"
        );
        // The two changed records come again, as their new versions; no
        // other record comes twice.
        assert_eq!(ids.len(), 22, "{style}: {ids:?}");
        assert_eq!(&ids[20..], ["R000001", "R000003"], "{style}");
        let newest = newest.unwrap();
        assert_eq!(
            pages
                .last()
                .unwrap()
                .cursor
                .updated_at
                .map(|t| t.timestamp_millis()),
            Some(newest.timestamp_millis()),
            "{style}"
        );
    }
}

#[tokio::test]
async fn without_keyset_page_numbers_step_over_a_record_but_the_cursor_waits() {
    let (base, state) = serve().await;
    seed(&state, 20).await;
    let text = definition(&base, "page", 5).replace("size = 5 }", "size = 5, keyset = false }");
    let c = open(&text, "mock_shift_numbers");
    let pages = pull_changing(&c, None, || {
        change_two(&state);
    })
    .await;
    let first = page_ids(&pages);
    // Pages 2 and 3 shifted by two: R000005 and R000006 fell into page 1.
    assert!(!first.contains(&"R000005".to_owned()), "{first:?}");
    assert!(!first.contains(&"R000006".to_owned()), "{first:?}");
    let end_of_first = conformance::seeds(5).pop().unwrap();
    let held = Cursor::at(end_of_first.updated_at, end_of_first.id);
    assert!(pages.iter().all(|p| p.cursor == held), "the cursor waits");
    let again = page_ids(&pull_all(&c, Some(held)).await.unwrap());
    assert!(again.contains(&"R000005".to_owned()), "{again:?}");
    assert!(again.contains(&"R000006".to_owned()), "{again:?}");
}

/// A record written late, with a time in front of the page boundary, moves
/// the rest of the list one place back: the overlapping offset finds the
/// last record of the page before one place later, and the pull goes on
/// without holding its cursor. (The late record itself is the look-back's
/// to find, on the next pull.)
#[tokio::test]
async fn a_record_written_in_front_of_the_boundary_does_not_stop_offsets() {
    let (base, state) = serve().await;
    let start = conformance::seeds(1)[0].updated_at;
    let one_a_second: Vec<Seed> = (0..20)
        .map(|i| Seed {
            id: format!("R{i:02}"),
            updated_at: start + chrono::Duration::seconds(i),
            name: format!("r{i}"),
        })
        .collect();
    lock(&state).records = one_a_second
        .iter()
        .map(|s| (s.id.clone(), seed_record(s)))
        .collect();
    let text = definition(&base, "offset", 5).replace("size = 5 }", "size = 5, keyset = false }");
    let c = open(&text, "mock_late_write");
    let pages = pull_changing(&c, None, || {
        // Between R02 and R03: the next page begins with R03, then R04.
        let late = Seed {
            id: "L".into(),
            updated_at: start + chrono::Duration::milliseconds(2500),
            name: "written late".into(),
        };
        lock(&state)
            .records
            .insert(late.id.clone(), seed_record(&late));
    })
    .await;
    let want: Vec<String> = one_a_second.iter().map(|s| s.id.clone()).collect();
    assert_eq!(page_ids(&pages), want);
    let newest = one_a_second.last().unwrap();
    assert_eq!(
        pages.last().unwrap().cursor,
        Cursor::at(newest.updated_at, newest.id.clone())
    );
}

/// Twelve records changed at one instant, five to a page: `{since}` cannot
/// tell them apart, so the pull pages within that instant.
#[tokio::test]
async fn more_records_at_one_time_than_a_page_holds_are_read_within_it() {
    let (base, state) = serve().await;
    let at = conformance::seeds(1)[0].updated_at;
    let same: Vec<Seed> = (0..12)
        .map(|i| Seed {
            id: format!("T{i:02}"),
            updated_at: at,
            name: format!("t{i}"),
        })
        .collect();
    lock(&state).records = same
        .iter()
        .map(|s| (s.id.clone(), seed_record(s)))
        .collect();
    let want: Vec<String> = same.iter().map(|s| s.id.clone()).collect();

    // Offsets overlap by one record and check it: nothing to hold.
    let c = open(&definition(&base, "offset", 5), "mock_crowd_offset");
    let pages = pull_all(&c, None).await.unwrap();
    assert_eq!(page_ids(&pages), want);
    assert_eq!(pages.last().unwrap().cursor, Cursor::at(at, "T11"));

    // Page numbers cannot be checked: every record is read, and the cursor
    // waits at that time (each pull reads the group again until it fits a
    // page).
    let c = open(&definition(&base, "page", 5), "mock_crowd_page");
    let pages = pull_all(&c, None).await.unwrap();
    assert_eq!(page_ids(&pages), want);
    assert_eq!(pages.last().unwrap().cursor, Cursor::at(at, "T04"));
}

#[tokio::test]
async fn keyset_pages_need_a_system_that_applies_the_filter() {
    let (base, state) = serve().await;
    seed(&state, 30).await;
    lock(&state).quirk = Quirk::IgnoreSince;
    let err = pull_err(&open(&definition(&base, "page", 5), "mock_no_filter")).await;
    assert_eq!(err.kind, ErrorKind::InvalidData);
    assert!(
        err.message
            .contains("does not apply the incremental filter"),
        "{err}"
    );
    assert!(err.message.contains("keyset = false"), "{err}");
}

#[tokio::test]
async fn a_list_said_to_be_ordered_that_is_not_is_refused() {
    let (base, state) = serve().await;
    seed(&state, 12).await;
    // This list is in descending order.
    let text = definition(&base, "unordered", 5).replace("ordered = false", "ordered = true");
    let err = pull_err(&open(&text, "mock_not_ordered")).await;
    assert_eq!(err.kind, ErrorKind::InvalidData);
    assert!(err.message.contains("not in ascending"), "{err}");
}

/// A search whose `after` token is an offset (HubSpot's): with keyset,
/// each page starts a new search from the newest record read.
#[tokio::test]
async fn keyset_searches_restart_from_the_newest_record_read() {
    let (base, state) = serve().await;
    seed(&state, 100).await;
    let text = search_definition(&base).replace("size = 40 }", "size = 40, keyset = true }");
    let c = open(&text, "mock_search_keyset");
    let pages = pull_changing(&c, None, || {
        change_two(&state);
    })
    .await;
    let ids = page_ids(&pages);
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 100);
    assert_eq!(ids.len(), 102);
    let m = lock(&state);
    assert!(m.searches.len() >= 3);
    for body in &m.searches {
        assert!(body.get("after").is_none(), "a restarted search: {body}");
    }
    let since: Vec<i64> = m
        .searches
        .iter()
        .map(|b| b["filter"]["since_ms"].as_i64().unwrap())
        .collect();
    assert!(since.windows(2).all(|w| w[0] < w[1]), "{since:?}");
}

// ---------------------------------------------------------------------------
// Answers that cannot be used

#[tokio::test]
async fn oversize_answers_are_refused_with_or_without_a_length() {
    let (base, state) = serve().await;
    seed(&state, 200).await;
    let text = definition(&base, "page", 100).replace(
        "timeout_secs = 0.5",
        "timeout_secs = 5\nmax_response_bytes = 4000",
    );
    let c = open(&text, "mock_oversize");
    for quirk in [Quirk::None, Quirk::Chunked] {
        lock(&state).quirk = quirk;
        let err = pull_err(&c).await;
        assert_eq!(err.kind, ErrorKind::InvalidData, "{quirk:?}: {err}");
        assert!(
            err.message.contains("larger than max_response_bytes"),
            "{quirk:?}: {err}"
        );
    }
    // Under the cap, a chunked answer reads fine.
    lock(&state).quirk = Quirk::Chunked;
    let small = definition(&base, "page", 10);
    let pages = pull_all(&open(&small, "mock_small"), None).await.unwrap();
    assert_eq!(pages.iter().map(|p| p.records.len()).sum::<usize>(), 200);
}

#[tokio::test]
async fn a_200_with_an_error_body_is_invalid_data_with_the_systems_words() {
    let (base, state) = serve().await;
    seed(&state, 3).await;
    lock(&state).quirk = Quirk::ErrorBody;
    let text = definition(&base, "page", 5).replace(
        "look_back_secs = 60",
        "look_back_secs = 60\nerror = { pointer = \"/status\", equals = \"error\", message = [\"/message\"] }",
    );
    let err = pull_err(&open(&text, "mock_error_body")).await;
    assert_eq!(err.kind, ErrorKind::InvalidData);
    assert!(err.message.contains("Tenant suspended"), "{err}");
}

#[tokio::test]
async fn records_without_id_or_records_without_a_list_name_the_place() {
    let (base, state) = serve().await;
    seed(&state, 3).await;
    lock(&state).quirk = Quirk::NoId;
    let c = open(&definition(&base, "page", 5), "mock_no_id");
    let err = pull_err(&c).await;
    assert_eq!(err.kind, ErrorKind::InvalidData);
    assert!(
        err.message.contains("record 2") && err.message.contains("no id at `/id`"),
        "{err}"
    );
    assert!(err.message.contains("/page/items"), "{err}");

    lock(&state).quirk = Quirk::None;
    let text =
        definition(&base, "page", 5).replace(r#"records = "/items""#, r#"records = "/Items""#);
    let err = pull_err(&open(&text, "mock_no_list")).await;
    assert_eq!(err.kind, ErrorKind::InvalidData);
    assert!(
        err.message.contains("no records at `/Items`") && err.message.contains("/page/items"),
        "{err}"
    );
}

#[tokio::test]
async fn secrets_never_appear_in_errors_or_debug_output() {
    let (base, state) = serve().await;
    lock(&state).auth_optional = true;
    let text = definition(&base, "page", 5)
        .replace(
            r#"auth = { kind = "bearer", token = "${token}" }"#,
            "auth = { kind = \"api_key\", in = \"query\", name = \"api_key\", value = \"${api_key}\" }\nheaders = { \"x-tenant\" = \"${tenant}\" }",
        )
        .replace(r#"path = "/page/items", records"#, r#"path = "/echo/items", records"#);
    let c = open_with(
        &text,
        Instance::bare("mock_secrets")
            .with_var("api_key", "key-s3cret-77")
            .with_var("tenant", "tenant-s3cret-88"),
    );
    let err = pull_err(&c).await;
    assert_eq!(err.kind, ErrorKind::InvalidData, "{err}");
    let shown = format!("{err} | {err:?} | {c:?}");
    assert!(
        shown.contains("bad request"),
        "the system's words are kept: {shown}"
    );
    for secret in ["key-s3cret-77", "tenant-s3cret-88"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }

    // A bearer token echoed back is hidden too.
    let text = definition(&base, "page", 5).replace(
        r#"path = "/page/items", records"#,
        r#"path = "/echo/items", records"#,
    );
    let c = open(&text, "mock_secrets_bearer");
    let err = pull_err(&c).await;
    let shown = format!("{err} | {err:?} | {c:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
}

// ---------------------------------------------------------------------------
// Fetching one record

#[tokio::test]
async fn get_fetches_one_record_or_none() {
    let (base, state) = serve().await;
    seed(&state, 3).await;
    let c = open(&definition(&base, "page", 5), "mock_get");
    let id = ExternalId::parse("R000001").unwrap();
    let got = c.get("item", &id).await.unwrap().unwrap();
    assert_eq!(got.external_id, id);
    assert_eq!(got.data["name"], json!("record 1"));
    let missing = ExternalId::parse("no such/one").unwrap();
    assert_eq!(c.get("item", &missing).await.unwrap(), None);
    let caps = c.capabilities();
    let item = caps.entities["item"];
    assert!(item.pull && item.incremental && item.get && item.push && !item.webhooks);
}

// ---------------------------------------------------------------------------
// Pushes

fn change(n: usize, data: Value) -> Change {
    Change {
        idempotency_key: format!("item:c{n}:1:mock"),
        external_id: None,
        data,
    }
}

#[tokio::test]
async fn batches_match_results_by_key_and_isolate_refused_records() {
    let (base, state) = serve().await;
    let text = definition(&base, "page", 5).replace(
        r#"create = { path = "/page/items", id = "/id" }"#,
        r#"create = { path = "/batch/items", batch_size = 10, item = { properties = "{record}", ref = "{key}" }, body = { inputs = "{records}" }, results = "/results", id = "/id", match = "key", key = "/ref" }"#,
    )
    .replace("look_back_secs = 60", "look_back_secs = 60\nerror = { message = [\"/message\"] }");
    let c = open(&text, "mock_batch");
    let changes: Vec<Change> = (0..5)
        .map(|n| {
            change(
                n,
                if n == 2 {
                    json!({"name": "", "bad": true})
                } else {
                    json!({"name": format!("n{n}")})
                },
            )
        })
        .collect();
    let before = requests(&state);
    let out = c.push("item", changes).await.unwrap();
    assert_eq!(out.len(), 5);
    let stored = lock(&state).records.clone();
    for (n, o) in out.iter().enumerate() {
        match (n, o) {
            (2, PushOutcome::Rejected { message }) => {
                assert!(message.contains("name must not be empty"), "{message}")
            }
            (_, PushOutcome::Created { external_id }) => {
                assert_eq!(
                    stored[external_id.as_str()]["name"],
                    json!(format!("n{n}")),
                    "result {n} matched to its record"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stored.len(), 4);
    // 5 refused, then halves: [0,1] ok, [2,3,4] refused, [2] refused, [3,4] ok.
    assert_eq!(requests(&state) - before, 5);
}

#[tokio::test]
async fn per_result_errors_reject_only_their_record() {
    let (base, state) = serve().await;
    let text = definition(&base, "page", 5).replace(
        r#"create = { path = "/page/items", id = "/id" }"#,
        r#"create = { path = "/xero/items", batch_size = 50, body = { Items = "{records}" }, results = "/Items", id = "/id", result_error = { pointer = "/HasErrors", equals = true, message = ["/ValidationErrors/0/Message"] } }"#,
    );
    let c = open(&text, "mock_xero");
    let out = c
        .push(
            "item",
            vec![
                change(1, json!({"name": "a"})),
                change(2, json!({"bad": true})),
                change(3, json!({"name": "c"})),
            ],
        )
        .await
        .unwrap();
    assert!(matches!(out[0], PushOutcome::Created { .. }), "{out:?}");
    assert!(
        matches!(&out[1], PushOutcome::Rejected { message } if message.contains("Contact name is required")),
        "{out:?}"
    );
    assert!(matches!(out[2], PushOutcome::Created { .. }), "{out:?}");
    assert_eq!(lock(&state).records.len(), 2);
}

#[tokio::test]
async fn push_failures_are_errors_before_any_write_and_retry_later_after() {
    let (base, state) = serve().await;
    let c = open(&definition(&base, "page", 5), "mock_push_faults");
    {
        let mut m = lock(&state);
        m.fault = Some(Fault::Unavailable);
        m.fault_times = usize::MAX;
    }
    let err = c
        .push(
            "item",
            vec![
                change(1, json!({"name": "a"})),
                change(2, json!({"name": "b"})),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    assert!(lock(&state).records.is_empty());

    {
        let mut m = lock(&state);
        m.fault = Some(Fault::RateLimited {
            retry_after_secs: 30,
        });
        m.fault_after = 1;
    }
    let out = c
        .push(
            "item",
            vec![
                change(1, json!({"name": "a"})),
                change(2, json!({"name": "b"})),
                change(3, json!({"name": "c"})),
            ],
        )
        .await
        .unwrap();
    assert!(matches!(out[0], PushOutcome::Created { .. }), "{out:?}");
    for o in &out[1..] {
        assert!(
            matches!(o, PushOutcome::RetryLater { delay, .. } if *delay == Duration::from_secs(30)),
            "{out:?}"
        );
    }

    // Refused records are rejected with the system's words; an update of
    // a record the system does not have is rejected too.
    lock(&state).fault_times = 0;
    let mut gone = change(9, json!({"name": "x"}));
    gone.external_id = Some(ExternalId::parse("P9999").unwrap());
    let out = c
        .push("item", vec![change(4, json!({"bad": true})), gone])
        .await
        .unwrap();
    assert!(
        matches!(&out[0], PushOutcome::Rejected { message } if message.contains("422")),
        "{out:?}"
    );
    assert!(
        matches!(&out[1], PushOutcome::Rejected { message } if message.contains("404")),
        "{out:?}"
    );
}
