//! Sending one request well: authentication, the instance's rate limit and
//! concurrency, retries of what may pass, a capped read of the answer, and
//! every failure classified with a message that holds no secret.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Semaphore;
use url::Url;

use super::request::ErrorCheck;
use crate::connector::{ConnectorError, ErrorKind};

/// Error bodies are read up to this much for the system's message.
const ERROR_BODY_BYTES: u64 = 64 * 1024;
/// Messages quoted from a system are cut to this many characters.
const MESSAGE_CHARS: usize = 300;

/// One request to send; built afresh for every attempt from these parts.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Vec<u8>>,
}

impl Call {
    pub fn new(method: Method, url: Url) -> Call {
        Call {
            method,
            url,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn json(mut self, body: &Value) -> Call {
        self.body = Some(serde_json::to_vec(body).unwrap_or_default());
        self
    }
}

/// A successful answer, its body parsed.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// A failed request: the classified error plus what the driver needs to
/// decide about retries and per-record outcomes.
#[derive(Debug)]
pub struct Failure {
    pub error: ConnectorError,
    pub status: Option<StatusCode>,
    /// How long the system asked us to wait (429, 503).
    pub retry_after: Option<Duration>,
    /// The system's own words, shortened, secrets removed.
    pub said: Option<String>,
}

impl Failure {
    fn new(error: ConnectorError) -> Failure {
        Failure {
            error,
            status: None,
            retry_after: None,
            said: None,
        }
    }
}

/// How requests authenticate, with values already filled in.
pub enum Credentials {
    None,
    Basic {
        username: SecretString,
        password: SecretString,
    },
    /// Header values (bearer, api key in a header) live in the client's
    /// fixed headers; only query keys are added per request.
    Query {
        name: String,
        value: SecretString,
    },
    OAuth2(OAuth2),
}

pub struct OAuth2 {
    pub token_url: Url,
    pub client_id: SecretString,
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
    pub in_body: bool,
    token: tokio::sync::Mutex<Option<Token>>,
}

struct Token {
    value: SecretString,
    /// Renewed from this instant on, a little before it really expires.
    renew_at: Instant,
    generation: u64,
}

impl OAuth2 {
    pub fn new(
        token_url: Url,
        client_id: SecretString,
        client_secret: SecretString,
        scopes: Vec<String>,
        in_body: bool,
    ) -> OAuth2 {
        OAuth2 {
            token_url,
            client_id,
            client_secret,
            scopes,
            in_body,
            token: tokio::sync::Mutex::new(None),
        }
    }
}

/// The instance-wide limits: one per instance, shared by every connector
/// opened for it (every job using the instance).
pub struct Throttle {
    limiter: Option<DefaultDirectRateLimiter>,
    slots: Semaphore,
    shape: (Option<Quota>, u32),
}

type ThrottleKey = (String, String);
static THROTTLES: Mutex<Vec<(ThrottleKey, Weak<Throttle>)>> = Mutex::new(Vec::new());

impl Throttle {
    /// The instance's throttle, shared while any connector of it is alive.
    pub fn shared(system: &str, instance: &str, quota: Option<Quota>, slots: u32) -> Arc<Throttle> {
        let key = (system.to_owned(), instance.to_owned());
        let mut all = THROTTLES.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(_, w)| w.strong_count() > 0);
        if let Some(t) = all
            .iter()
            .filter(|(k, _)| *k == key)
            .find_map(|(_, w)| w.upgrade())
            .filter(|t| t.shape == (quota, slots))
        {
            return t;
        }
        let t = Arc::new(Throttle {
            limiter: quota.map(DefaultDirectRateLimiter::direct),
            slots: Semaphore::new(slots as usize),
            shape: (quota, slots),
        });
        all.retain(|(k, _)| *k != key);
        all.push((key, Arc::downgrade(&t)));
        t
    }
}

/// `per_second` or `per_minute` with a burst (default 1: evenly spaced).
pub fn quota(
    per_second: Option<u32>,
    per_minute: Option<u32>,
    burst: Option<u32>,
) -> Option<Quota> {
    let q = match (
        per_second.and_then(NonZeroU32::new),
        per_minute.and_then(NonZeroU32::new),
    ) {
        (Some(n), _) => Quota::per_second(n),
        (None, Some(n)) => Quota::per_minute(n),
        (None, None) => return None,
    };
    let burst = burst.and_then(NonZeroU32::new).unwrap_or(NonZeroU32::MIN);
    Some(q.allow_burst(burst))
}

pub struct Client {
    pub system: String,
    pub http: reqwest::Client,
    pub base: Url,
    /// Sent with every request (marked sensitive).
    pub headers: HeaderMap,
    pub credentials: Credentials,
    pub throttle: Arc<Throttle>,
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub max_response_bytes: u64,
    pub error_check: Option<ErrorCheck>,
    /// Values filled in from the instance; cut out of every message.
    pub secrets: Vec<String>,
    /// OAuth2 tokens issued lately; cut out of every message too.
    pub tokens: Mutex<Vec<String>>,
}

impl Client {
    /// Sends with retries of what may pass; the last failure otherwise.
    pub async fn send(&self, call: &Call) -> Result<Answer, Failure> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_jitter();
        let max_delay = self.max_delay;
        (|| self.attempt(call))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|f: &Failure| f.error.is_retryable())
            .adjust(move |f: &Failure, next: Option<Duration>| {
                let next = next?;
                match f.retry_after {
                    // Longer than we would wait here: the scheduler waits.
                    Some(asked) if asked > max_delay => None,
                    Some(asked) => Some(asked),
                    None => Some(next),
                }
            })
            .notify(|f: &Failure, delay: Duration| {
                tracing::debug!(
                    message = "Retrying a request.",
                    system = %self.system,
                    error = %f.error,
                    delay_ms = delay.as_millis() as u64,
                );
            })
            .await
    }

    /// One attempt (two when an OAuth2 token was refused and renewed).
    async fn attempt(&self, call: &Call) -> Result<Answer, Failure> {
        let _slot = self.throttle.slots.acquire().await.map_err(|_| {
            Failure::new(ConnectorError::unavailable(
                &self.system,
                "the connector is shutting down",
            ))
        })?;
        let mut renewed = false;
        loop {
            if let Some(l) = &self.throttle.limiter {
                l.until_ready().await;
            }
            let mut url = call.url.clone();
            if let Credentials::Query { name, value } = &self.credentials {
                url.query_pairs_mut()
                    .append_pair(name, value.expose_secret());
            }
            let mut req = self
                .http
                .request(call.method.clone(), url)
                .headers(self.headers.clone());
            for (k, v) in &call.headers {
                req = req.header(k, v);
            }
            if let Some(body) = &call.body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let mut generation = None;
            match &self.credentials {
                Credentials::None | Credentials::Query { .. } => {}
                Credentials::Basic { username, password } => {
                    req = req.basic_auth(username.expose_secret(), Some(password.expose_secret()));
                }
                Credentials::OAuth2(o) => {
                    let (token, g) = self.token(o).await?;
                    generation = Some(g);
                    let mut value = HeaderValue::from_str(&format!(
                        "Bearer {}",
                        token.expose_secret()
                    ))
                    .map_err(|_| {
                        Failure::new(ConnectorError::new(
                            ErrorKind::Auth,
                            &self.system,
                            "the token endpoint issued a token that cannot be sent in a header",
                        ))
                    })?;
                    value.set_sensitive(true);
                    req = req.header(reqwest::header::AUTHORIZATION, value);
                }
            }
            let result = self.exchange(call, req, self.max_response_bytes).await;
            match (result, &self.credentials) {
                (Err(f), Credentials::OAuth2(o))
                    if f.status == Some(StatusCode::UNAUTHORIZED) && !renewed =>
                {
                    // The token may have been revoked or expired early: one
                    // new token, one more try.
                    renewed = true;
                    let mut slot = o.token.lock().await;
                    if slot.as_ref().map(|t| t.generation) == generation {
                        *slot = None;
                    }
                }
                (result, _) => return result,
            }
        }
    }

    /// Sends a built request and reads its answer within the cap.
    async fn exchange(
        &self,
        call: &Call,
        req: reqwest::RequestBuilder,
        cap: u64,
    ) -> Result<Answer, Failure> {
        let what = format!("{} {}", call.method, self.shown(&call.url));
        let mut resp = req.send().await.map_err(|e| self.transport(&what, &e))?;
        let status = resp.status();
        let headers = std::mem::take(resp.headers_mut());
        if !status.is_success() {
            let body = self
                .read(&mut resp, cap.min(ERROR_BODY_BYTES), &what)
                .await
                .ok();
            return Err(self.status_failure(status, &headers, body.as_deref(), &what));
        }
        let bytes = self.read(&mut resp, cap, &what).await?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| Failure {
                error: ConnectorError::invalid_data(
                    &self.system,
                    format!(
                        "the answer to {what} is not JSON ({e}): {}",
                        self.excerpt(&bytes)
                    ),
                ),
                status: Some(status),
                retry_after: None,
                said: None,
            })?
        };
        if let Some(check) = &self.error_check
            && check.failed(&body)
        {
            let said = self.message_of(check, &body);
            return Err(Failure {
                error: ConnectorError::invalid_data(
                    &self.system,
                    format!(
                        "{what} answered {status} but reports a failure: {}",
                        said.as_deref().unwrap_or("(no message)")
                    ),
                ),
                status: Some(status),
                retry_after: None,
                said,
            });
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Reads a body of at most `cap` bytes, refusing larger ones without
    /// reading them whole.
    async fn read(
        &self,
        resp: &mut reqwest::Response,
        cap: u64,
        what: &str,
    ) -> Result<Vec<u8>, Failure> {
        let too_big = |n: u64| {
            Failure::new(ConnectorError::invalid_data(
                &self.system,
                format!(
                    "the answer to {what} is larger than max_response_bytes ({cap} bytes; at least {n})"
                ),
            ))
        };
        if let Some(len) = resp.content_length()
            && len > cap
        {
            return Err(too_big(len));
        }
        let mut out = Vec::with_capacity(resp.content_length().unwrap_or(0).min(cap) as usize);
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(what, &e))? {
            if (out.len() + chunk.len()) as u64 > cap {
                return Err(too_big((out.len() + chunk.len()) as u64));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    fn transport(&self, what: &str, e: &reqwest::Error) -> Failure {
        let (kind, text) = if e.is_timeout() {
            (ErrorKind::Timeout, "no answer within timeout_secs")
        } else if e.is_connect() {
            (ErrorKind::Unavailable, "cannot connect")
        } else if e.is_body() || e.is_decode() {
            // The connection broke while the answer was coming: the system
            // or the network failed, not the data; another try may pass.
            (
                ErrorKind::Unavailable,
                "the connection broke while reading the answer",
            )
        } else if e.is_builder() {
            (ErrorKind::Config, "the request cannot be built")
        } else {
            (ErrorKind::Unavailable, "the connection failed")
        };
        // reqwest's own text can hold the URL with a query key: leave it out.
        let mut cause = std::error::Error::source(e);
        let mut detail = String::new();
        while let Some(c) = cause {
            detail = c.to_string();
            cause = c.source();
        }
        let detail = self.redact(&detail);
        let message = if detail.is_empty() {
            format!("{what}: {text}")
        } else {
            format!("{what}: {text} ({detail})")
        };
        Failure::new(ConnectorError::new(kind, &self.system, message))
    }

    fn status_failure(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Option<&[u8]>,
        what: &str,
    ) -> Failure {
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let said = body.and_then(|b| self.said(b));
        let kind = match status.as_u16() {
            401 | 403 => ErrorKind::Auth,
            404 | 410 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            408 => ErrorKind::Timeout,
            425 | 429 => ErrorKind::RateLimited { retry_after },
            500..=599 => ErrorKind::Unavailable,
            _ => ErrorKind::InvalidData,
        };
        let mut message = format!("{what} answered {status}");
        if let Some(s) = &said {
            message.push_str(": ");
            message.push_str(s);
        }
        if status.is_server_error() {
            // Details of a 5xx are for the log, not for the caller.
            tracing::warn!(message = "A system failed a request.", system = %self.system, request = %what, %status, said = said.as_deref().unwrap_or(""));
            message = format!("{what} answered {status}");
        }
        Failure {
            error: ConnectorError::new(kind, &self.system, message),
            status: Some(status),
            retry_after,
            said,
        }
    }

    /// The system's message in an error body: the definition's message
    /// pointers, else a short excerpt.
    fn said(&self, body: &[u8]) -> Option<String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        if let Ok(json) = serde_json::from_slice::<Value>(body)
            && let Some(check) = &self.error_check
            && let Some(m) = self.message_of(check, &json)
        {
            return Some(m);
        }
        Some(self.excerpt(body))
    }

    /// The first message pointer with a value, unwrapped and shortened.
    pub fn message_of(&self, check: &ErrorCheck, body: &Value) -> Option<String> {
        check
            .message
            .iter()
            .find_map(|p| body.pointer(p).filter(|v| !v.is_null()))
            .map(|v| self.shorten(&plain_message(v)))
    }

    pub fn excerpt(&self, bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4 * MESSAGE_CHARS)]);
        self.shorten(&text)
    }

    /// One line, at most [`MESSAGE_CHARS`], secrets cut out.
    pub fn shorten(&self, text: &str) -> String {
        let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let clean = self.redact(&one_line);
        if clean.chars().count() > MESSAGE_CHARS {
            let cut: String = clean.chars().take(MESSAGE_CHARS).collect();
            format!("{cut}…")
        } else {
            clean
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        for s in self.secrets.iter().chain(tokens.iter()) {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }

    /// A URL as it may be shown: path and query without credentials.
    pub fn shown(&self, url: &Url) -> String {
        let mut shown = url.path().to_owned();
        if let Some(q) = url.query() {
            shown.push('?');
            shown.push_str(q);
        }
        let shown = self.redact(&shown);
        match &self.credentials {
            Credentials::Query { name, .. } => strip_param(&shown, name),
            _ => shown,
        }
    }

    /// A valid token, fetched when there is none or it is about to expire.
    async fn token(&self, o: &OAuth2) -> Result<(SecretString, u64), Failure> {
        let mut slot = o.token.lock().await;
        if let Some(t) = slot.as_ref()
            && Instant::now() < t.renew_at
        {
            return Ok((t.value.clone(), t.generation));
        }
        let generation = slot.as_ref().map_or(1, |t| t.generation + 1);
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if !o.scopes.is_empty() {
                form.append_pair("scope", &o.scopes.join(" "));
            }
            if o.in_body {
                form.append_pair("client_id", o.client_id.expose_secret());
                form.append_pair("client_secret", o.client_secret.expose_secret());
            }
            form.finish()
        };
        let mut req = self.http.post(o.token_url.clone());
        if !o.in_body {
            req = req.basic_auth(
                o.client_id.expose_secret(),
                Some(o.client_secret.expose_secret()),
            );
        }
        let req = req
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form);
        let call = Call::new(Method::POST, o.token_url.clone());
        let answer = self.exchange_token(&call, req).await?;
        let access = answer
            .body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Failure::new(ConnectorError::new(
                    ErrorKind::Auth,
                    &self.system,
                    "the token endpoint answered without an access_token",
                ))
            })?;
        let lifetime = answer
            .body
            .get("expires_in")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .map_or(Duration::from_secs(3600), Duration::from_secs);
        // Renew a minute early (or at half-life for short-lived tokens), so
        // a request never leaves with a token that expires on the way.
        let margin = Duration::from_secs(60).min(lifetime / 2);
        {
            let mut recent = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() >= 4 {
                recent.remove(0);
            }
            recent.push(access.to_owned());
        }
        let value = SecretString::from(access.to_owned());
        *slot = Some(Token {
            value: value.clone(),
            renew_at: Instant::now() + lifetime - margin,
            generation,
        });
        tracing::debug!(message = "Fetched an OAuth2 token.", system = %self.system, lifetime_secs = lifetime.as_secs());
        Ok((value, generation))
    }

    async fn exchange_token(
        &self,
        call: &Call,
        req: reqwest::RequestBuilder,
    ) -> Result<Answer, Failure> {
        let what = format!(
            "the token request to {}",
            call.url.host_str().unwrap_or("?")
        );
        let mut resp = req.send().await.map_err(|e| self.transport(&what, &e))?;
        let status = resp.status();
        let bytes = self.read(&mut resp, ERROR_BODY_BYTES, &what).await?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let mut f = self.status_failure(status, resp.headers(), None, &what);
            // The endpoint's `error` / `error_description` say why; a
            // refused client is a credentials problem whatever the code.
            let said = body.as_ref().and_then(|b| {
                let e = b.get("error").and_then(Value::as_str)?;
                let d = b
                    .get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Some(self.shorten(&format!("{e} {d}")))
            });
            if matches!(status.as_u16(), 400 | 401 | 403) {
                f.error = ConnectorError::new(
                    ErrorKind::Auth,
                    &self.system,
                    format!(
                        "{what} answered {status}: {}",
                        said.as_deref().unwrap_or("credentials refused")
                    ),
                );
            }
            f.said = said;
            return Err(f);
        }
        let body = body.ok_or_else(|| {
            Failure::new(ConnectorError::new(
                ErrorKind::Auth,
                &self.system,
                format!("{what} did not answer JSON"),
            ))
        })?;
        Ok(Answer {
            status,
            headers: HeaderMap::new(),
            body,
        })
    }
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(text).ok()?.with_timezone(&Utc);
    Some((at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

/// Messages some systems nest as JSON inside a string (Frappe's
/// `_server_messages`), or wrap in HTML: the plain words.
fn plain_message(v: &Value) -> String {
    let mut v = v.clone();
    for _ in 0..4 {
        v = match v {
            Value::String(s) => match serde_json::from_str::<Value>(&s) {
                Ok(inner @ (Value::Array(_) | Value::Object(_) | Value::String(_))) => inner,
                _ => return strip_tags(&s),
            },
            Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
            Value::Object(mut o) => match o.remove("message").or_else(|| o.remove("Message")) {
                Some(m) => m,
                None => return Value::Object(o).to_string(),
            },
            other => return other.to_string(),
        };
    }
    value_words(&v)
}

fn value_words(v: &Value) -> String {
    match v {
        Value::String(s) => strip_tags(s),
        other => other.to_string(),
    }
}

fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Removes `name=…` from the query of a shown URL.
fn strip_param(shown: &str, name: &str) -> String {
    let Some((path, query)) = shown.split_once('?') else {
        return shown.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some(name))
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Header values that hold credentials or instance values are sensitive.
pub fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("system", &self.system)
            .field("base", &self.base.origin().ascii_serialization())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let soon = (Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&soon).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2001 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn nested_messages_come_out_plain() {
        let frappe =
            json!("[\"{\\\"message\\\": \\\"Customer <strong>ACME</strong> already exists\\\"}\"]");
        assert_eq!(plain_message(&frappe), "Customer ACME already exists");
        assert_eq!(plain_message(&json!({"message": "bad"})), "bad");
        assert_eq!(plain_message(&json!(["first", "second"])), "first");
        assert_eq!(plain_message(&json!(42)), "42");
    }

    #[test]
    fn query_keys_are_stripped_from_shown_urls() {
        assert_eq!(
            strip_param("/a?x=1&api_key=s3&y=2", "api_key"),
            "/a?x=1&y=2"
        );
        assert_eq!(strip_param("/a?api_key=s3", "api_key"), "/a");
    }
}
