//! The admin API over HTTP on an ephemeral port: the RBAC matrix (each role
//! × each route), bad requests, masking, audit, every answer checked
//! against the API's own OpenAPI document, and `/metrics` after real runs —
//! on SQLite and, when `CONCORD_TEST_DATABASE_URL` is set, PostgreSQL.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::TestStore;
use concord::api::{self, ApiState};
use concord::connector::{
    Capabilities, Change, Connector, ConnectorError, Cursor, ErrorKind, Page, PageStream,
    PushOutcome, RawRecord,
};
use concord::model::{CanonicalId, EntityKind, ExternalId};
use concord::settings::{Settings, SystemSettings};
use concord::store::{NewAlert, NewConflict, Role, Severity};
use concord::sync::{Endpoint, Engine, JobSettings};
use futures_util::StreamExt;
use serde_json::{Value, json};

on_both_backends!(a_day_of_operations_through_the_api);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_matrix_and_bad_requests() {
    let store = common::sqlite().await;
    rbac(&store).await;
    store.cleanup().await;
}

// ---------------------------------------------------------------------------
// Two in-memory systems: a CRM to read from, an ERP to write to.

struct Memory {
    name: String,
    records: Mutex<BTreeMap<String, Value>>,
    /// Pushes of records with these names are rejected.
    reject: Mutex<Vec<String>>,
    /// Pulls fail as a system that is down does.
    down: AtomicBool,
}

impl Memory {
    fn new(name: &str) -> Arc<Memory> {
        Arc::new(Memory {
            name: name.into(),
            records: Mutex::new(BTreeMap::new()),
            reject: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
        })
    }

    fn put(&self, id: &str, mut data: Value) {
        data["id"] = json!(id);
        self.records.lock().unwrap().insert(id.into(), data);
    }

    fn len(&self) -> usize {
        self.records.lock().unwrap().len()
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

    fn pull<'a>(&'a self, _entity: &'a str, _cursor: Option<Cursor>) -> PageStream<'a> {
        if self.down.load(Ordering::SeqCst) {
            let down = ConnectorError::new(
                ErrorKind::Unavailable,
                &self.name,
                "503 from https://crm.internal/api (maintenance)",
            );
            return futures_util::stream::iter(vec![Err(down)]).boxed();
        }
        let records: Vec<RawRecord> = self
            .records
            .lock()
            .unwrap()
            .iter()
            .map(|(id, v)| RawRecord {
                external_id: ExternalId::parse(id).unwrap(),
                updated_at: None,
                data: v.clone(),
            })
            .collect();
        futures_util::stream::iter(vec![Ok(Page {
            records,
            ..Page::default()
        })])
        .boxed()
    }

    async fn push(
        &self,
        _entity: &str,
        changes: Vec<Change>,
    ) -> Result<Vec<PushOutcome>, ConnectorError> {
        let reject = self.reject.lock().unwrap().clone();
        let mut out = Vec::new();
        for change in changes {
            let name = change.data["customer_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if reject.contains(&name) {
                out.push(PushOutcome::Rejected {
                    message: format!("name {name:?} is not allowed"),
                });
                continue;
            }
            let id = match &change.external_id {
                Some(id) => id.to_string(),
                None => format!("E{}", self.len() + 1),
            };
            self.put(&id, change.data.clone());
            let external_id = ExternalId::parse(&id).unwrap();
            out.push(PushOutcome::Created { external_id });
        }
        Ok(out)
    }
}

fn write_mappings(dir: &std::path::Path) {
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
tax_id = { from = "vat" }
phone = { from = "phone" }
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
tax = { from = "tax_id" }
"#,
    )
    .unwrap();
}

// ---------------------------------------------------------------------------
// A server on an ephemeral port

struct Server {
    base: String,
    client: reqwest::Client,
    crm: Arc<Memory>,
    erp: Arc<Memory>,
    job: String,
    tokens: HashMap<Role, String>,
    doc: Value,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: u16,
    content_type: String,
    body: Value,
    text: String,
}

impl Server {
    async fn start(store: &TestStore, job: &str) -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        write_mappings(dir.path());
        let mut settings = Settings::default();
        settings.mappings.dir = dir.path().to_owned();
        settings.connectors.dir = dir.path().join("no-definitions-needed");
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
        let endpoint = |system: &str, entity: &str, mapping: &str| Endpoint {
            system: system.into(),
            entity: entity.into(),
            mapping: mapping.into(),
        };
        settings.jobs = vec![JobSettings {
            name: job.into(),
            schedule: Some("0 */5 * * * *".into()),
            source: endpoint("crm_main", "company", "crm-customer-in"),
            targets: vec![endpoint("erp_main", "Customer", "erp-customer-out")],
            identity: vec!["tax_id".into()],
            batch_size: 100,
            timezone: None,
        }];
        let crm = Memory::new("crm_main");
        let erp = Memory::new("erp_main");
        let connectors: HashMap<String, Arc<dyn Connector>> = HashMap::from([
            ("crm_main".to_owned(), crm.clone() as Arc<dyn Connector>),
            ("erp_main".to_owned(), erp.clone() as Arc<dyn Connector>),
        ]);
        let engine =
            Engine::with_connectors(settings.clone(), store.store.clone(), connectors).unwrap();
        let state = ApiState::new(Arc::new(engine), &settings);
        let app = api::router(state).merge(concord::metrics::router(store.store.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let mut tokens = HashMap::new();
        for role in Role::ALL {
            let token = api::generate_token().unwrap();
            store
                .create_api_token(&format!("{role}-bot"), role, &api::hash_token(&token))
                .await
                .unwrap()
                .unwrap();
            tokens.insert(role, token);
        }
        let mut server = Server {
            base,
            client: reqwest::Client::new(),
            crm,
            erp,
            job: job.into(),
            tokens,
            doc: Value::Null,
            _dir: dir,
        };
        let doc = server.call("GET", "/openapi.json", None, None).await;
        assert_eq!(doc.status, 200, "{}", doc.text);
        server.doc = doc.body;
        server
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some((content_type, text)) = body {
            request = request
                .header("content-type", content_type)
                .body(text.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            body,
            text,
        }
    }

    /// A call as `role`, its answer checked against the OpenAPI document.
    async fn as_role(&self, role: Role, method: &str, path: &str, body: Option<Value>) -> Reply {
        let text = body.map(|b| b.to_string());
        let reply = self
            .call(
                method,
                path,
                Some(&self.tokens[&role]),
                text.as_deref().map(|t| ("application/json", t)),
            )
            .await;
        self.check_against_doc(method, path, &reply);
        reply
    }

    /// The answer's status is documented for the route, and its JSON body
    /// validates against the schema documented for that status.
    fn check_against_doc(&self, method: &str, path: &str, reply: &Reply) {
        let template = self
            .template_of(path)
            .unwrap_or_else(|| panic!("{path} matches no path of the document"));
        let op = &self.doc["paths"][&template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the document");
        let response = &op["responses"][reply.status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {}, which the document does not list: {}",
            reply.status,
            reply.text
        );
        match response["content"]["application/json"]["schema"].as_object() {
            Some(_) => {
                assert!(
                    reply.content_type.starts_with("application/json"),
                    "{method} {path}: {}",
                    reply.content_type
                );
                let schema = &response["content"]["application/json"]["schema"];
                if let Err(e) = validate(&self.doc, schema, &reply.body, "$") {
                    panic!("{method} {path} → {}: {e}\n{}", reply.status, reply.text);
                }
            }
            None => assert!(
                reply.text.is_empty(),
                "{method} {path}: undocumented body {}",
                reply.text
            ),
        }
    }

    /// The document's path template a concrete path matches.
    fn template_of(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap();
        let parts: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .find(|t| {
                let tp: Vec<&str> = t.split('/').collect();
                tp.len() == parts.len()
                    && tp
                        .iter()
                        .zip(&parts)
                        .all(|(a, b)| a == b || (a.starts_with('{') && a.ends_with('}')))
            })
            .cloned()
    }

    async fn metrics(&self) -> String {
        let r = self.call("GET", "/metrics", None, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.content_type.starts_with("text/plain; version=0.0.4"));
        r.text
    }
}

/// A small JSON Schema (OpenAPI 3.1) validator: `$ref`, `type` (one or a
/// list), `properties`, `required`, `additionalProperties: false`,
/// `items`, `enum`, `oneOf`, `anyOf`, `allOf`, `format: date-time`.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: dangling $ref {r}"));
        }
        return validate(doc, target, value, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            validate(doc, s, value, at)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            let passing = options
                .iter()
                .filter(|s| validate(doc, s, value, at).is_ok())
                .count();
            let ok = if key == "oneOf" {
                passing == 1
            } else {
                passing >= 1
            };
            if !ok {
                return Err(format!(
                    "{at}: {passing} of the {key} alternatives match {value}"
                ));
            }
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !types.iter().any(|t| fits(t)) {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {options:?}"));
    }
    if schema["format"] == "date-time"
        && let Some(s) = value.as_str()
        && chrono::DateTime::parse_from_rfc3339(s).is_err()
    {
        return Err(format!("{at}: {s:?} is not an RFC 3339 date-time"));
    }
    if let Some(obj) = value.as_object() {
        let props = schema["properties"].as_object();
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            if !obj.contains_key(name) {
                return Err(format!("{at}: required property {name:?} is missing"));
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(doc, s, v, &format!("{at}.{k}"))?,
                None if schema["additionalProperties"] == json!(false) => {
                    return Err(format!("{at}: property {k:?} is not in the schema"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, v) in values.iter().enumerate() {
            validate(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[test]
fn the_validator_rejects_what_does_not_fit() {
    let doc = json!({"components": {"schemas": {"E": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "string"}, "n": {"type": ["integer", "null"]}}
    }}}});
    let e = json!({"$ref": "#/components/schemas/E"});
    assert!(validate(&doc, &e, &json!({"error": "x", "n": null}), "$").is_ok());
    assert!(validate(&doc, &e, &json!({"n": 1}), "$").is_err());
    assert!(validate(&doc, &e, &json!({"error": 1}), "$").is_err());
    assert!(validate(&doc, &e, &json!({"error": "x", "n": "1"}), "$").is_err());
    let list = json!({"type": "array", "items": {"$ref": "#/components/schemas/E"}});
    assert!(validate(&doc, &list, &json!([{"error": "x"}, {}]), "$").is_err());
}

// ---------------------------------------------------------------------------
// Fixtures

/// A run, a quarantined record, a dead letter, an open conflict and an alert.
async fn seed(server: &Server, store: &TestStore) -> (CanonicalId, i64) {
    server.crm.put(
        "c1",
        json!({"name": "Acme GmbH", "email": "ap@acme.example", "vat": "DE123456789", "phone": "+49 30 1234567"}),
    );
    server
        .crm
        .put("c2", json!({"name": "Reject Me", "vat": "DE987654321"}));
    server.crm.put("c3", json!({"email": "nameless@x.example"}));
    server.erp.reject.lock().unwrap().push("Reject Me".into());
    let run = server
        .as_role(
            Role::Operator,
            "POST",
            &format!("/api/v1/jobs/{}/run", server.job),
            None,
        )
        .await;
    assert_eq!(run.status, 200, "{}", run.text);
    assert_eq!(run.body["pulled"], 3, "{}", run.text);
    assert_eq!(run.body["created"], 2);
    assert_eq!(run.body["quarantined"], 1);
    assert_eq!(run.body["delivered"], 1);
    assert_eq!(run.body["dead_lettered"], 1);

    let acme = store
        .find_link(EntityKind::Customer, "crm_main", "c1")
        .await
        .unwrap()
        .unwrap()
        .canonical_id;
    let conflict = store
        .open_conflict(&NewConflict {
            entity: EntityKind::Customer,
            canonical_id: acme.clone(),
            field_path: "email".into(),
            base: Some(json!("ap@acme.example")),
            ours: Some(json!("ap@acme.example")),
            theirs: Some(json!("billing@acme.example")),
            source_system: "crm_main".into(),
        })
        .await
        .unwrap();
    store
        .raise_alert(&NewAlert {
            rule: "payer_account_changed".into(),
            severity: Severity::Warning,
            entity: Some(EntityKind::Customer),
            record_ids: vec![acme.to_string()],
            reason: "Acme GmbH now pays from DE89370400440532013000".into(),
            amount: None,
            cause: Some(format!("test:{acme}")),
        })
        .await
        .unwrap();
    (acme, conflict)
}

// ---------------------------------------------------------------------------

/// (method, path, JSON body, expected status per role).
type Row = (&'static str, String, Option<Value>, [(Role, u16); 3]);
/// (method, path, (content type, raw body), expected status).
type BadCase = (
    &'static str,
    String,
    Option<(&'static str, &'static str)>,
    u16,
);

async fn rbac(store: &TestStore) {
    let server = Server::start(store, "rbac-crm-to-erp").await;
    let (acme, conflict) = seed(&server, store).await;
    let spare = api::generate_token().unwrap();
    store
        .create_api_token("to-revoke", Role::Viewer, &api::hash_token(&spare))
        .await
        .unwrap()
        .unwrap();

    let job = &server.job;
    use Role::{Admin, Operator, Viewer};
    let read = [(Viewer, 200), (Operator, 200), (Admin, 200)];
    let operate_ok = [(Viewer, 403), (Operator, 200), (Admin, 200)];
    // (method, path, body, expected status per role). Mutating calls are
    // chosen so that running them for each role in turn answers the same.
    let matrix: Vec<Row> = vec![
        ("GET", "/api/v1/status".into(), None, read),
        ("GET", "/api/v1/jobs".into(), None, read),
        (
            "POST",
            format!("/api/v1/jobs/{job}/run"),
            Some(json!({"full": true})),
            operate_ok,
        ),
        ("GET", "/api/v1/conflicts?all=true".into(), None, read),
        ("GET", format!("/api/v1/conflicts/{conflict}"), None, read),
        (
            "POST",
            "/api/v1/conflicts/999999/resolve".into(),
            Some(json!({"take": "theirs"})),
            [(Viewer, 403), (Operator, 404), (Admin, 404)],
        ),
        ("GET", "/api/v1/dead-letters".into(), None, read),
        (
            "POST",
            "/api/v1/replay/dead-letters".into(),
            Some(json!({"target": "erp_main"})),
            operate_ok,
        ),
        ("GET", "/api/v1/quarantine".into(), None, read),
        (
            "POST",
            "/api/v1/replay/quarantine".into(),
            Some(json!({})),
            operate_ok,
        ),
        (
            "POST",
            format!("/api/v1/replay/jobs/{job}"),
            Some(json!({"since": "2026-11-01"})),
            operate_ok,
        ),
        (
            "GET",
            format!("/api/v1/records/customer/{acme}"),
            None,
            read,
        ),
        (
            "GET",
            "/api/v1/records/customer/crm_main:c1/history".into(),
            None,
            read,
        ),
        ("GET", "/api/v1/alerts?status=all".into(), None, read),
        (
            "POST",
            "/api/v1/alerts/ack".into(),
            Some(json!({"ids": [999999], "note": "checked"})),
            operate_ok,
        ),
        (
            "GET",
            "/api/v1/tokens".into(),
            None,
            [(Viewer, 403), (Operator, 403), (Admin, 200)],
        ),
        (
            "POST",
            "/api/v1/tokens".into(),
            Some(json!({"name": "made-by-api", "role": "viewer"})),
            [(Viewer, 403), (Operator, 403), (Admin, 201)],
        ),
        (
            "DELETE",
            "/api/v1/tokens/to-revoke".into(),
            None,
            [(Viewer, 403), (Operator, 403), (Admin, 204)],
        ),
        (
            "GET",
            "/api/v1/audit".into(),
            None,
            [(Viewer, 403), (Operator, 403), (Admin, 200)],
        ),
    ];

    // The matrix covers exactly the document's operations.
    let documented: BTreeSet<(String, String)> = server.doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), p.clone()))
        })
        .collect();
    let tested: BTreeSet<(String, String)> = matrix
        .iter()
        .map(|(m, p, _, _)| (m.to_string(), server.template_of(p).unwrap()))
        .collect();
    assert_eq!(documented, tested, "routes in the document vs the matrix");
    assert_eq!(documented.len(), 19);

    for (method, path, body, expected) in &matrix {
        for (role, status) in expected {
            let r = server.as_role(*role, method, path, body.clone()).await;
            assert_eq!(r.status, *status, "{role} {method} {path}: {}", r.text);
            if r.status >= 400 {
                assert!(r.body["error"].is_string() && r.body["message"].is_string());
            }
        }
        // No token, a made-up one, a malformed header: 401 before anything.
        for header in [
            None,
            Some("cnc_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned()),
            Some(format!("{}x", server.tokens[&Admin])),
        ] {
            let r = server.call(method, path, header.as_deref(), None).await;
            assert_eq!(r.status, 401, "{method} {path} with {header:?}: {}", r.text);
            assert_eq!(r.body["error"], "unauthorized");
            server.check_against_doc(method, path, &r);
        }
    }
    let basic = server
        .client
        .get(format!("{}/api/v1/status", server.base))
        .header("authorization", format!("Basic {}", server.tokens[&Admin]))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);

    // The revoked token opens nothing any more; the one made over the API
    // appears in the list without its secret.
    let r = server
        .call("GET", "/api/v1/status", Some(&spare), None)
        .await;
    assert_eq!(r.status, 401);
    let list = server.as_role(Admin, "GET", "/api/v1/tokens", None).await;
    assert!(!list.text.contains("cnc_"), "{}", list.text);
    let names: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"made-by-api") && names.contains(&"to-revoke"),
        "{names:?}"
    );
    let again = server
        .as_role(
            Admin,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "made-by-api", "role": "admin"})),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.text);

    // Bad requests, each as JSON, nothing stored.
    let op = server.tokens[&Operator].clone();
    let resolve = format!("/api/v1/conflicts/{conflict}/resolve");
    let cases: Vec<BadCase> = vec![
        (
            "POST",
            resolve.clone(),
            Some(("application/json", "{\"take\": ")),
            400,
        ),
        (
            "POST",
            resolve.clone(),
            Some(("text/plain", "take=theirs")),
            415,
        ),
        (
            "POST",
            resolve.clone(),
            Some(("application/json", "{\"take\": 5}")),
            422,
        ),
        (
            "POST",
            resolve.clone(),
            Some(("application/json", "{\"nope\": 1}")),
            422,
        ),
        (
            "POST",
            resolve.clone(),
            Some(("application/json", "{}")),
            422,
        ),
        // A value that does not fit the field: refused, not a server error.
        (
            "POST",
            resolve.clone(),
            Some(("application/json", "{\"value\": {\"x\": 1}}")),
            422,
        ),
        (
            "POST",
            resolve.clone(),
            Some(("application/json", "{\"take\": \"theirs\", \"value\": 1}")),
            422,
        ),
        (
            "POST",
            "/api/v1/conflicts/abc/resolve".into(),
            Some(("application/json", "{\"take\": \"theirs\"}")),
            400,
        ),
        (
            "GET",
            "/api/v1/conflicts?entity=spaceship".into(),
            None,
            400,
        ),
        ("GET", "/api/v1/records/spaceship/x".into(), None, 400),
        // Not a canonical id: no record has it.
        ("GET", "/api/v1/records/customer/%01%20x".into(), None, 404),
        ("GET", "/api/v1/alerts?severity=loud".into(), None, 400),
        ("GET", "/api/v1/alerts?status=gone".into(), None, 400),
        ("GET", "/api/v1/alerts?limit=0".into(), None, 400),
        ("GET", "/api/v1/alerts?limit=10001".into(), None, 400),
        (
            "POST",
            "/api/v1/alerts/ack".into(),
            Some(("application/json", "{\"ids\": []}")),
            422,
        ),
        // Ids are integers from 1 to 2^53 - 1; 7.0 is the integer 7 (as
        // JSON Schema counts), so 424242.0 is looked for and not found.
        (
            "POST",
            "/api/v1/replay/quarantine".into(),
            Some(("application/json", "{\"ids\": [424242.0]}")),
            404,
        ),
        (
            "POST",
            "/api/v1/replay/quarantine".into(),
            Some(("application/json", "{\"ids\": [0]}")),
            422,
        ),
        // Bodies are objects (serde alone would read a struct from an array).
        (
            "POST",
            "/api/v1/replay/quarantine".into(),
            Some(("application/json", "[]")),
            422,
        ),
        (
            "POST",
            "/api/v1/replay/dead-letters".into(),
            Some(("application/json", "{\"ids\": [7.5]}")),
            422,
        ),
        (
            "POST",
            "/api/v1/replay/dead-letters".into(),
            Some(("application/json", "{\"ids\": [9007199254740992]}")),
            422,
        ),
        (
            "GET",
            "/api/v1/records/customer/crm_main:nope".into(),
            None,
            404,
        ),
        ("POST", "/api/v1/jobs/no-such-job/run".into(), None, 404),
        (
            "POST",
            "/api/v1/replay/quarantine".into(),
            Some(("application/json", "{\"ids\": [424242]}")),
            404,
        ),
        (
            "POST",
            format!("/api/v1/replay/jobs/{job}"),
            Some(("application/json", "{\"since\": \"last tuesday\"}")),
            422,
        ),
    ];
    for (method, path, body, status) in cases {
        let r = server.call(method, &path, Some(&op), body).await;
        assert_eq!(r.status, status, "{method} {path} {body:?}: {}", r.text);
        assert!(r.content_type.starts_with("application/json"), "{path}");
        assert!(r.body["error"].is_string(), "{}", r.text);
        server.check_against_doc(method, &path, &r);
    }
    let still = store.conflict(conflict).await.unwrap().unwrap();
    assert_eq!(still.status, "open", "a rejected request changed nothing");

    // A source that is down fails the run with 502, naming the system and
    // the kind of failure, not what the system said.
    server.crm.down.store(true, Ordering::SeqCst);
    let run = format!("/api/v1/jobs/{job}/run");
    let r = server.call("POST", &run, Some(&op), None).await;
    server.crm.down.store(false, Ordering::SeqCst);
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(r.body["error"], "upstream", "{}", r.text);
    let message = r.body["message"].as_str().unwrap();
    assert!(
        message.contains("crm_main failed (unavailable)") && !message.contains("crm.internal"),
        "{message}"
    );
    server.check_against_doc("POST", &run, &r);
    let r = server.call("POST", &run, Some(&op), None).await;
    assert_eq!(r.status, 200, "the system is back: {}", r.text);
    for (method, path, status, code) in [
        ("GET", "/api/v1/nope", 404, "not_found"),
        ("GET", "/api", 404, "not_found"),
        ("DELETE", "/api/v1/status", 405, "method_not_allowed"),
    ] {
        let r = server.call(method, path, Some(&op), None).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text);
        assert_eq!(r.body["error"], code);
    }

    // Every mutating call is in the audit trail under its token's name.
    let audit = server
        .as_role(Admin, "GET", "/api/v1/audit?limit=500", None)
        .await;
    let entries = audit.body.as_array().unwrap();
    let by = |name: &str, status: u64| {
        entries
            .iter()
            .filter(|e| e["token_name"] == name && e["status"] == status)
            .count()
    };
    assert!(by("operator-bot", 200) >= 4, "{}", audit.text);
    assert_eq!(by("viewer-bot", 403), 8, "denied attempts are audited too");
    assert!(entries.iter().any(|e| e["token_name"] == "admin-bot"
        && e["path"] == "/api/v1/tokens"
        && e["status"] == 201
        && e["detail"]["name"] == "made-by-api"));
    assert!(
        entries.iter().all(|e| e["method"] != "GET"),
        "reads are not audited"
    );
}

async fn a_day_of_operations_through_the_api(store: &TestStore) {
    let job = format!(
        "day-{}",
        if store.backend() == concord::store::Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
    let server = Server::start(store, &job).await;
    let (acme, conflict) = seed(&server, store).await;
    use Role::{Operator, Viewer};

    // Viewers see sensitive fields masked; operators see them.
    let path = format!("/api/v1/records/customer/{acme}");
    let viewed = server.as_role(Viewer, "GET", &path, None).await;
    let data = &viewed.body["record"]["data"];
    assert_eq!(data["name"], "Acme GmbH");
    assert_eq!(data["email"], "a•••@acme.example", "{}", viewed.text);
    assert_eq!(data["tax_id"], "•••••••6789");
    assert!(!viewed.text.contains("DE123456789"), "{}", viewed.text);
    let operated = server.as_role(Operator, "GET", &path, None).await;
    assert_eq!(operated.body["record"]["data"]["tax_id"], "DE123456789");
    assert_eq!(operated.body["links"].as_array().unwrap().len(), 2);
    let c = server
        .as_role(
            Viewer,
            "GET",
            &format!("/api/v1/conflicts/{conflict}"),
            None,
        )
        .await;
    assert_eq!(c.body["theirs"], "b•••@acme.example", "{}", c.text);
    let alerts = server.as_role(Viewer, "GET", "/api/v1/alerts", None).await;
    assert_eq!(
        alerts.body[0]["reason"],
        "Acme GmbH now pays from DE89••••••••••••••3000"
    );
    let q = server
        .as_role(Viewer, "GET", "/api/v1/quarantine", None)
        .await;
    assert_eq!(q.body[0]["raw"]["email"], "n•••@x.example", "{}", q.text);
    let status = server.as_role(Viewer, "GET", "/api/v1/status", None).await;
    assert_eq!(status.body["open_conflicts"], 1);
    assert_eq!(status.body["open_quarantine"], 1);

    // An operator resolves the conflict: a new version by api:operator-bot.
    let r = server
        .as_role(
            Operator,
            "POST",
            &format!("/api/v1/conflicts/{conflict}/resolve"),
            Some(json!({"take": "theirs", "note": "the CRM has the new address"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["actor"], "api:operator-bot");
    assert_eq!(r.body["version"], 2);
    let history = server
        .as_role(
            Operator,
            "GET",
            "/api/v1/records/customer/crm_main:c1/history",
            None,
        )
        .await;
    let last = history.body.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["provenance"]["actor"], "api:operator-bot");
    assert_eq!(last["provenance"]["cause"], "operator");
    assert_eq!(last["data"]["email"], "billing@acme.example");
    let twice = server
        .as_role(
            Operator,
            "POST",
            &format!("/api/v1/conflicts/{conflict}/resolve"),
            Some(json!({"take": "ours"})),
        )
        .await;
    assert_eq!(twice.status, 409, "{}", twice.text);

    // The ERP takes the rejected customer after a fix: replay delivers it.
    let dead = server
        .as_role(Viewer, "GET", "/api/v1/dead-letters", None)
        .await;
    assert_eq!(dead.body.as_array().unwrap().len(), 1, "{}", dead.text);
    let before = server.metrics().await;
    assert!(
        before.contains("# TYPE concord_dead_letters gauge")
            && before.contains("concord_dead_letters{system=\"erp_main\"} 1"),
        "{before}"
    );
    server.erp.reject.lock().unwrap().clear();
    let replayed = server
        .as_role(Operator, "POST", "/api/v1/replay/dead-letters", None)
        .await;
    assert_eq!(replayed.status, 200, "{}", replayed.text);
    assert_eq!(replayed.body["requeued"], 1);
    assert_eq!(replayed.body["delivered"], 1);
    assert!(server.erp.len() >= 2);

    // The audit trail names the token of every mutating call.
    let audit = server
        .call(
            "GET",
            "/api/v1/audit",
            Some(&server.tokens[&Role::Admin]),
            None,
        )
        .await;
    let paths: Vec<(&str, &str)> = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["token_name"].as_str().unwrap(),
                e["path"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        paths.contains(&("operator-bot", "/api/v1/replay/dead-letters")),
        "{paths:?}"
    );
    assert!(paths.contains(&(
        "operator-bot",
        &*format!("/api/v1/conflicts/{conflict}/resolve")
    )));
    assert!(paths.contains(&("operator-bot", &*format!("/api/v1/jobs/{job}/run"))));

    // Metrics: what the runs did, and the store's state at scrape time.
    concord::metrics::webhook("crm_main", "accepted");
    let text = server.metrics().await;
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let js = format!("job=\"{job}\",system=\"crm_main\"");
    assert_eq!(value(&format!("concord_records_pulled_total{{{js}}}")), 3.0);
    assert_eq!(
        value(&format!("concord_records_quarantined_total{{{js}}}")),
        1.0
    );
    assert_eq!(
        value(&format!("concord_records_conflicted_total{{{js}}}")),
        0.0
    );
    let pushed = format!("job=\"{job}\",system=\"erp_main\"");
    assert!(
        value(&format!(
            "concord_records_pushed_total{{{pushed},outcome=\"delivered\"}}"
        )) >= 3.0
    );
    assert_eq!(
        value(&format!(
            "concord_records_pushed_total{{{pushed},outcome=\"rejected\"}}"
        )),
        1.0
    );
    assert!(value("concord_push_duration_seconds_count{system=\"erp_main\"}") >= 3.0);
    assert!(value("concord_push_duration_seconds_sum{system=\"erp_main\"}") >= 0.0);
    assert!(value("concord_push_duration_seconds_bucket{system=\"erp_main\",le=\"+Inf\"}") >= 3.0);
    assert!(
        value("concord_webhook_requests_total{system=\"crm_main\",outcome=\"accepted\"}") >= 1.0
    );
    // A state series with nothing to count is absent (reads as 0 in sums).
    assert!(
        !text.contains("concord_dead_letters{"),
        "none left after the replay"
    );
    assert!(
        !text.contains("concord_open_conflicts{entity=\"customer\"}"),
        "resolved"
    );
    assert_eq!(
        value("concord_open_alerts{rule=\"payer_account_changed\",severity=\"warning\"}"),
        1.0
    );
    assert_eq!(value("concord_open_quarantine{system=\"crm_main\"}"), 1.0);
    assert!(value("concord_queue_depth{queue=\"outbox\",status=\"delivered\"}") >= 2.0);
    let age = value("concord_queue_oldest_age_seconds{queue=\"outbox\"}");
    assert!((0.0..60.0).contains(&age), "{age}");
    assert_eq!(
        value("concord_queue_oldest_age_seconds{queue=\"inbox\"}"),
        0.0
    );
    for family in [
        "concord_records_pulled_total",
        "concord_records_pushed_total",
        "concord_push_duration_seconds",
        "concord_queue_depth",
        "concord_queue_oldest_age_seconds",
        "concord_webhook_requests_total",
        "concord_open_alerts",
        "concord_open_quarantine",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
    }
}

// ---------------------------------------------------------------------------
// `concord tokens`

fn concord(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_concord"));
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("CONCORD_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run concord")
}

#[tokio::test]
async fn tokens_are_shown_once_stored_hashed_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let out = concord(
        dir.path(),
        &["tokens", "create", "ci-bot", "--role", "operator"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert!(token.starts_with("cnc_") && token.len() == 47, "{token:?}");
    assert!(text(&out.stderr).contains("shown this once"));

    // The same name again, a bad role, a bad name: refused, nothing stored.
    let again = concord(
        dir.path(),
        &["tokens", "create", "ci-bot", "--role", "admin"],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("ci-bot"),
        "{}",
        text(&again.stderr)
    );
    assert!(!text(&again.stdout).contains("cnc_"));
    let role = concord(dir.path(), &["tokens", "create", "x", "--role", "root"]);
    assert_eq!(role.status.code(), Some(2));
    let name = concord(dir.path(), &["tokens", "create", "a b", "--role", "viewer"]);
    assert_eq!(name.status.code(), Some(1));

    let list = concord(dir.path(), &["tokens", "list"]);
    assert_eq!(list.status.code(), Some(0));
    let listed = text(&list.stdout);
    assert!(
        listed.contains("ci-bot") && listed.contains("operator"),
        "{listed}"
    );
    assert!(!listed.contains("cnc_"), "{listed}");
    let json = concord(dir.path(), &["tokens", "list", "-o", "json"]);
    let rows: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert!(rows[0].get("token_hash").is_none(), "{rows}");

    // The store keeps the hash only, and it finds the token.
    let settings = concord::settings::StoreSettings {
        url: format!("sqlite://{}", dir.path().join("data/concord.db").display()).into(),
        ..concord::settings::StoreSettings::default()
    };
    let store = concord::store::Store::open(&settings).await.unwrap();
    let found = store
        .api_token_by_hash(&api::hash_token(&token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.name.as_str(), found.role),
        ("ci-bot", Role::Operator)
    );
    assert_ne!(found.token_hash, token);
    for file in ["concord.db", "concord.db-wal"] {
        let raw = std::fs::read(dir.path().join("data").join(file)).unwrap_or_default();
        assert!(
            !raw.windows(token.len()).any(|w| w == token.as_bytes()),
            "the token itself is not in {file}"
        );
    }

    let revoked = concord(dir.path(), &["tokens", "revoke", "ci-bot"]);
    assert_eq!(revoked.status.code(), Some(0), "{}", text(&revoked.stderr));
    assert!(
        store
            .api_token_by_hash(&api::hash_token(&token))
            .await
            .unwrap()
            .is_none()
    );
    let twice = concord(dir.path(), &["tokens", "revoke", "ci-bot"]);
    assert_eq!(twice.status.code(), Some(1));
    // The name is free again once revoked.
    let reused = concord(
        dir.path(),
        &["tokens", "create", "ci-bot", "--role", "viewer"],
    );
    assert_eq!(reused.status.code(), Some(0), "{}", text(&reused.stderr));
    store.close().await;
}
