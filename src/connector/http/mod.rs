//! The `http` driver: a declarative REST / JSON-RPC engine. A system is a
//! definition file in `connectors/` (see [`definition`]); no Rust per system.
//!
//! - [`definition`]: the file format and its pure check;
//! - `request`: the definition compiled for one instance (templates);
//! - `client`: one request sent well (auth, rate limit, retries, capped
//!   reads, classified failures without secrets);
//! - `pull`: pages streamed on demand, keyset pages and checked offsets so
//!   that a list changing under the pull loses nothing, cursors, loop
//!   detection, records fetched whole where lists leave parts out;
//! - `push`: writes one by one or in batches, one outcome per change, and
//!   creates found again by their key where the system has no idempotency.

mod client;
pub mod definition;
mod pull;
mod push;
mod request;
mod time;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;
use serde_json::Value;
use url::Url;

use self::client::{Call, Client, Credentials, OAuth2, Throttle};
use self::definition::{AuthKind, ClientAuthStyle, HttpDefinition, KeyLocation};
use self::request::{Compiler, Entity, RequestTpl, Tpl, Vars};
use super::{
    Capabilities, Change, Connector, ConnectorError, Cursor, Definition, Driver,
    EntityCapabilities, ErrorKind, Instance, PageStream, PushOutcome, RawRecord,
};
use crate::located::SourceFile;
use crate::model::ExternalId;

/// The `http` driver, registered in [`super::DRIVERS`].
pub static DRIVER: Driver = Driver {
    name: "http",
    summary: "REST and JSON-RPC APIs described by a definition file (auth, pages, incremental pulls, writes)",
    check: definition::check,
    open,
};

fn open(def: &Definition, instance: &Instance) -> Result<Arc<dyn Connector>, ConnectorError> {
    Ok(Arc::new(HttpConnector::open(&def.source, instance)?))
}

/// An instance of an `http` system.
pub struct HttpConnector {
    name: String,
    client: Client,
    /// `base_url` without a trailing `/`; paths are appended.
    base: String,
    entities: BTreeMap<String, Entity>,
    look_back: Duration,
    idempotency_header: Option<HeaderName>,
    healthcheck: Option<RequestTpl>,
    /// Records fetched at once by `fetch_each` (the definition's
    /// `concurrency`; the instance's limits apply on top).
    fetch_concurrency: usize,
}

impl std::fmt::Debug for HttpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnector")
            .field("name", &self.name)
            .field("entities", &self.entities.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl HttpConnector {
    /// Checks a definition and opens an instance of it. Builds the client
    /// but sends nothing.
    pub fn open(source: &SourceFile, instance: &Instance) -> Result<HttpConnector, ConnectorError> {
        let spec = definition::parse(source).map_err(|errors| {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            ConnectorError::config(&instance.name, all.join("; "))
        })?;
        HttpConnector::from_definition(&spec, instance)
    }

    /// Opens an instance of a parsed, checked definition.
    pub fn from_definition(
        spec: &HttpDefinition,
        instance: &Instance,
    ) -> Result<HttpConnector, ConnectorError> {
        let system = instance.name.clone();
        let config = |m: String| ConnectorError::config(&system, m);
        let mut c = Compiler {
            instance,
            system: system.clone(),
            secrets: Vec::new(),
        };

        let base_text = match &instance.base_url {
            Some(b) => c.expand(b)?,
            None => c.expand(spec.base_url.get_ref())?,
        };
        let base = Url::parse(&base_text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.query().is_none())
            .ok_or_else(|| config("the base URL is not an http(s) URL without a query".into()))?;

        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in &spec.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| config(format!("`{name}` is not a header name")))?;
            let text = c.expand(value.get_ref())?;
            let value = client::sensitive(&text)
                .ok_or_else(|| config(format!("the value of header `{name}` cannot be sent")))?;
            headers.insert(name, value);
        }

        let mut credentials = Credentials::None;
        if let Some(auth) = &spec.auth {
            let a = auth.get_ref();
            let mut value_of = |field: &Option<toml::Spanned<String>>,
                                what: &str|
             -> Result<String, ConnectorError> {
                let text = field.as_ref().ok_or_else(|| {
                    ConnectorError::config(&system, format!("auth needs `{what}`"))
                })?;
                let v = c.expand(text.get_ref())?;
                // Credentials are secrets even when written literally.
                if v.len() >= 4 && !c.secrets.contains(&v) {
                    c.secrets.push(v.clone());
                }
                Ok(v)
            };
            match *a.kind.get_ref() {
                AuthKind::None => {}
                AuthKind::Bearer => {
                    let token = value_of(&a.token, "token")?;
                    let v = client::sensitive(&format!("Bearer {token}")).ok_or_else(|| {
                        config("the bearer token cannot be sent in a header".into())
                    })?;
                    headers.insert(reqwest::header::AUTHORIZATION, v);
                }
                AuthKind::Basic => {
                    credentials = Credentials::Basic {
                        username: SecretString::from(value_of(&a.username, "username")?),
                        password: SecretString::from(value_of(&a.password, "password")?),
                    };
                }
                AuthKind::ApiKey => {
                    let name = a
                        .name
                        .as_ref()
                        .map(|n| n.get_ref().clone())
                        .unwrap_or_default();
                    let value = value_of(&a.value, "value")?;
                    match a.location.as_ref().map(|l| *l.get_ref()) {
                        Some(KeyLocation::Query) => {
                            credentials = Credentials::Query {
                                name,
                                value: SecretString::from(value),
                            };
                        }
                        _ => {
                            let hn = HeaderName::from_bytes(name.as_bytes())
                                .map_err(|_| config(format!("`{name}` is not a header name")))?;
                            let v = client::sensitive(&value).ok_or_else(|| {
                                config("the API key cannot be sent in a header".into())
                            })?;
                            headers.insert(hn, v);
                        }
                    }
                }
                AuthKind::Oauth2ClientCredentials => {
                    let url_text = value_of(&a.token_url, "token_url")?;
                    let token_url = Url::parse(&url_text)
                        .map_err(|_| config("`token_url` is not a URL".into()))?;
                    credentials = Credentials::OAuth2(OAuth2::new(
                        token_url,
                        SecretString::from(value_of(&a.client_id, "client_id")?),
                        SecretString::from(value_of(&a.client_secret, "client_secret")?),
                        a.scopes.iter().map(|s| s.get_ref().clone()).collect(),
                        a.auth_style.as_ref().map(|s| *s.get_ref()) == Some(ClientAuthStyle::Body),
                    ));
                }
            }
        }

        let mut entities = BTreeMap::new();
        for (name, e) in &spec.entities {
            entities.insert(name.clone(), c.entity(e.get_ref())?);
        }
        let error_check = c.error_rule(spec);
        let healthcheck = c.healthcheck(spec)?;

        let rate = spec.rate_limit.as_ref().map(|r| r.get_ref());
        let quota = rate.and_then(|r| {
            client::quota(
                r.per_second.as_ref().map(|v| *v.get_ref()),
                r.per_minute.as_ref().map(|v| *v.get_ref()),
                r.burst.as_ref().map(|v| *v.get_ref()),
            )
        });
        let throttle = Throttle::shared(&spec.name, &instance.name, quota, spec.concurrency());
        let (max_attempts, initial_delay, max_delay) = spec.retry_policy();

        // concord's binary installs the ring provider at start; a library
        // user (a test, a benchmark) may not have.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let timeout = spec.timeout();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(spec.concurrency() as usize)
            .user_agent(concat!("concord/", env!("CARGO_PKG_VERSION")))
            // Redirects stay on the origin they started from: headers with
            // keys (`X-API-Key`, a tenant id) must not follow elsewhere.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| first.origin() == attempt.url().origin());
                if same && attempt.previous().len() <= 5 {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()
            .map_err(|e| config(format!("cannot build the HTTP client: {e}")))?;

        let idempotency_header = spec
            .idempotency_header
            .as_ref()
            .map(|h| HeaderName::from_bytes(h.get_ref().as_bytes()))
            .transpose()
            .map_err(|_| config("`idempotency_header` is not a header name".into()))?;

        Ok(HttpConnector {
            name: system.clone(),
            base: base.as_str().trim_end_matches('/').to_owned(),
            client: Client {
                system,
                http,
                base,
                headers,
                credentials,
                throttle,
                max_attempts,
                initial_delay,
                max_delay,
                max_response_bytes: spec.max_response_bytes(),
                error_check,
                secrets: c.secrets,
                tokens: std::sync::Mutex::new(Vec::new()),
            },
            entities,
            look_back: spec.look_back(),
            idempotency_header,
            healthcheck,
            fetch_concurrency: spec.concurrency() as usize,
        })
    }

    fn entity(&self, name: &str) -> Result<&Entity, ConnectorError> {
        self.entities.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.entities.keys().map(String::as_str).collect();
            ConnectorError::config(
                &self.name,
                format!(
                    "no entity `{name}`; the definition has {}",
                    known.join(", ")
                ),
            )
        })
    }

    /// The URL of a request: base, rendered path, and query parameters
    /// (those without a value left out).
    fn url<'q>(
        &self,
        path: &Tpl,
        query: impl IntoIterator<Item = (&'q str, &'q Tpl)>,
        extra: &[(&str, String)],
        vars: &Vars<'_>,
    ) -> Result<Url, ConnectorError> {
        let path = path.render(vars, true).ok_or_else(|| {
            ConnectorError::config(&self.name, "a placeholder of the request path has no value")
        })?;
        let mut url = Url::parse(&format!("{}{}", self.base, path)).map_err(|e| {
            ConnectorError::config(&self.name, format!("the request URL is not valid: {e}"))
        })?;
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (k, t) in query {
            if let Some(v) = t.render(vars, false) {
                pairs.push((k, v));
            }
        }
        pairs.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        if !pairs.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, &v);
            }
        }
        Ok(url)
    }

    /// A record from the system: its id and `updated_at` read, or why not.
    fn record(&self, entity: &Entity, data: Value) -> Result<RawRecord, String> {
        let external_id = extract_id(&data, &entity.id)?;
        let updated_at = match &entity.updated_at {
            None => None,
            Some((pointer, spec)) => {
                let v = data
                    .pointer(pointer)
                    .filter(|v| !v.is_null())
                    .ok_or_else(|| format!("`{external_id}` has no `updated_at` at `{pointer}`"))?;
                Some(
                    spec.parse(v)
                        .map_err(|e| format!("`{external_id}` at `{pointer}`: {e}"))?,
                )
            }
        };
        Ok(RawRecord {
            external_id,
            updated_at,
            data,
        })
    }

    /// One record by id through `get`: `None` when the system has no such
    /// record.
    async fn fetch(
        &self,
        e: &Entity,
        entity: &str,
        id: &ExternalId,
    ) -> Result<Option<RawRecord>, ConnectorError> {
        let g = e.get.as_ref().ok_or_else(|| {
            ConnectorError::config(
                &self.name,
                format!(
                    "fetching one {entity} by id is not supported: the definition has no `get`"
                ),
            )
        })?;
        let vars = Vars {
            id: Some(id.as_str()),
            ..Vars::default()
        };
        let url = self.url(
            &g.path,
            g.query.iter().map(|(k, t)| (k.as_str(), t)),
            &[],
            &vars,
        )?;
        let mut call = Call::new(g.method.clone(), url);
        if let Some(b) = &g.body {
            call = call.json(&b.render(&vars).unwrap_or(Value::Null));
        }
        let what = format!("{} {}", call.method, self.client.shown(&call.url));
        let mut answer = match self.client.send(&call).await {
            Ok(a) => a,
            Err(f) if f.error.kind == ErrorKind::NotFound => return Ok(None),
            Err(f) => return Err(f.error),
        };
        let found = if g.records.is_empty() {
            answer.body.take()
        } else {
            answer
                .body
                .pointer_mut(&g.records)
                .map(Value::take)
                .ok_or_else(|| {
                    ConnectorError::invalid_data(
                        &self.name,
                        format!("the answer to {what} has nothing at `{}`", g.records),
                    )
                })?
        };
        let data = match found {
            Value::Null => return Ok(None),
            Value::Array(mut a) => match a.len() {
                0 => return Ok(None),
                1 => a.swap_remove(0),
                n => {
                    return Err(ConnectorError::invalid_data(
                        &self.name,
                        format!("the answer to {what} holds {n} records, expected one"),
                    ));
                }
            },
            other => other,
        };
        let record = self.record(e, data).map_err(|m| {
            ConnectorError::invalid_data(&self.name, format!("the answer to {what}: {m}"))
        })?;
        if !record
            .external_id
            .as_str()
            .eq_ignore_ascii_case(id.as_str())
        {
            return Err(ConnectorError::invalid_data(
                &self.name,
                format!("asked {what} for `{id}`, got `{}`", record.external_id),
            ));
        }
        Ok(Some(record))
    }
}

/// The id at `pointer`: a string, or an integer read as its digits.
fn extract_id(data: &Value, pointer: &str) -> Result<ExternalId, String> {
    let text = match data.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(Value::Null) | None => return Err(format!("no id at `{pointer}`")),
        Some(other) => {
            return Err(format!(
                "the id at `{pointer}` is {}, not a string or integer",
                json_type(other)
            ));
        }
    };
    ExternalId::parse(&text).map_err(|e| format!("the id at `{pointer}`: {e}"))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[async_trait]
impl Connector for HttpConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            entities: self
                .entities
                .iter()
                .map(|(name, e)| {
                    (
                        name.clone(),
                        EntityCapabilities {
                            pull: e.list.is_some()
                                || e.incremental.as_ref().is_some_and(|i| i.request.is_some()),
                            incremental: e.incremental.is_some(),
                            get: e.get.is_some(),
                            push: e.create.is_some() || e.update.is_some(),
                            webhooks: false,
                        },
                    )
                })
                .collect(),
        }
    }

    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        let call = match &self.healthcheck {
            Some(h) => {
                let url = self.url(
                    &h.path,
                    h.query.iter().map(|(k, t)| (k.as_str(), t)),
                    &[],
                    &Vars::default(),
                )?;
                Call::new(h.method.clone(), url)
            }
            None => {
                let (name, _) = self
                    .entities
                    .iter()
                    .find(|(_, e)| e.list.is_some())
                    .ok_or_else(|| {
                        ConnectorError::config(
                            &self.name,
                            "no `healthcheck` and no entity with `list` to check with",
                        )
                    })?;
                pull::Pull::new(self, name, None)?.call()?
            }
        };
        self.client
            .send(&call)
            .await
            .map(|_| ())
            .map_err(|f| f.error)
    }

    fn pull<'a>(&'a self, entity: &'a str, cursor: Option<Cursor>) -> PageStream<'a> {
        pull::stream(self, entity, cursor)
    }

    async fn get(
        &self,
        entity: &str,
        id: &ExternalId,
    ) -> Result<Option<RawRecord>, ConnectorError> {
        let e = self.entity(entity)?;
        self.fetch(e, entity, id).await
    }

    async fn push(
        &self,
        entity: &str,
        changes: Vec<Change>,
    ) -> Result<Vec<PushOutcome>, ConnectorError> {
        push::push(self, entity, changes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn source(text: &str) -> SourceFile {
        SourceFile {
            path: PathBuf::from("connectors/demo.toml"),
            text: text.to_owned(),
        }
    }

    const DEF: &str = r#"
name = "demo"
driver = "http"
base_url = "https://api.example.com/v1/"
headers = { "x-tenant" = "${tenant}" }
auth = { kind = "api_key", in = "query", name = "api_key", value = "${key}" }
[entities.customer]
id = "/id"
list = { path = "/customers", records = "/items" }
"#;

    #[test]
    fn secrets_stay_out_of_debug_and_shown_urls() {
        let inst = Instance::bare("demo_main")
            .with_var("tenant", "tenant-secret-1")
            .with_var("key", "key-secret-2");
        let c = HttpConnector::open(&source(DEF), &inst).unwrap();
        let debug = format!("{c:?} {:?}", c.client);
        assert!(!debug.contains("secret"), "{debug}");
        let mut url = Url::parse("https://api.example.com/v1/customers?page=2").unwrap();
        url.query_pairs_mut().append_pair("api_key", "key-secret-2");
        assert_eq!(c.client.shown(&url), "/v1/customers?page=2");
        assert_eq!(c.client.redact("tenant tenant-secret-1"), "tenant ***");
    }

    #[test]
    fn a_missing_instance_value_is_a_config_error_naming_it() {
        let err = HttpConnector::open(
            &source(DEF),
            &Instance::bare("demo_main").with_var("tenant", "t"),
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("`${key}` has no value"), "{err}");
    }

    #[test]
    fn ids_are_strings_or_integers() {
        let rec = serde_json::json!({"a": "X1", "n": 42, "f": 1.5, "o": {}});
        assert_eq!(extract_id(&rec, "/a").unwrap().as_str(), "X1");
        assert_eq!(extract_id(&rec, "/n").unwrap().as_str(), "42");
        assert!(extract_id(&rec, "/f").unwrap_err().contains("a number"));
        assert!(extract_id(&rec, "/o").unwrap_err().contains("an object"));
        assert!(
            extract_id(&rec, "/missing")
                .unwrap_err()
                .contains("no id at `/missing`")
        );
    }
}
