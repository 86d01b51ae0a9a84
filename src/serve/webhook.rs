//! `POST /webhooks/{system}`: verify, store durably, then acknowledge.
//!
//! Checks run cheapest first and nothing is stored for a refused request:
//! unknown system 404, wrong content type 415, body too large 413, missing or
//! bad signature or stale timestamp 401, malformed JSON or no event id 400.
//! A stored event gets 202; an event id seen before gets 200 and stores
//! nothing new. The store failing, or not committing the event within
//! `webhooks.store_timeout_ms`, gets 503 so the sender retries: no 2xx is
//! ever sent for an event that is not durable. (A 503'd event may still be
//! committed a moment later; its retry then gets 200.)
//!
//! With `[queue] kind = "amqp"` the event is published to the work queue
//! instead (202 once the broker confirmed it; 503 when it cannot). The
//! broker cannot tell a duplicate, so a repeated event id gets 202 too and
//! its copy is skipped when consumed (its work id is done already).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use super::intake::{Intake, Stored};
use super::settings::{Scheme, WebhookSettings};
use super::verify::Verifier;
use crate::queue::{Enqueued, Queue};
use crate::store::InboxEvent;
use std::sync::Arc;
use std::time::Duration;

/// Where a system's event id comes from.
#[derive(Debug)]
enum IdSource {
    Header(String),
    Pointer(String),
    BodyHash,
}

#[derive(Debug)]
struct Source {
    verifier: Verifier,
    id: IdSource,
}

/// Where verified events go.
pub enum Sink {
    /// The store's inbox, group committed (`[queue] kind = "store"`).
    Inbox(Intake),
    /// The work queue (`[queue] kind = "amqp"`): answered after the
    /// broker confirmed the message.
    Queue(Arc<dyn Queue>),
}

/// The receiving side of every configured system.
pub struct Receiver {
    systems: HashMap<String, Source>,
    max_body: usize,
    /// How long a request waits for its event to be durable.
    store_timeout: Duration,
    sink: Sink,
}

impl Receiver {
    /// Prepares each system's verification; secrets are expanded from the
    /// environment and the system's values. Errors name the system and the
    /// setting, never a secret.
    pub fn new(
        settings: &crate::settings::Settings,
        sink: Sink,
    ) -> Result<Receiver, crate::settings::SettingsError> {
        let hooks: &WebhookSettings = &settings.webhooks;
        let mut systems = HashMap::new();
        for (name, sys) in &hooks.systems {
            let invalid = |key: &str, reason: String| crate::settings::SettingsError::Value {
                key: format!("webhooks.systems.{name}.{key}"),
                reason,
            };
            let instance = match settings.systems.get(name) {
                Some(s) => s.instance(name),
                None => {
                    return Err(invalid("", format!("no system {name:?} in [systems]")));
                }
            };
            let mut secrets = Vec::with_capacity(sys.secrets.len());
            for (i, s) in sys.secrets.iter().enumerate() {
                use secrecy::ExposeSecret;
                secrets.push(
                    instance
                        .expand(s.expose_secret())
                        .map_err(|e| invalid(&format!("secrets[{i}]"), e.to_string()))?,
                );
            }
            let verifier = Verifier::new(
                sys.scheme,
                &secrets,
                sys.signature_header.as_deref(),
                sys.encoding,
                hooks.tolerance_secs,
            )
            .map_err(|reason| invalid("", reason))?;
            for pointer in [
                &sys.id_pointer.clone().unwrap_or_default(),
                &sys.records,
                &sys.record_id,
            ] {
                if !pointer.is_empty() && !pointer.starts_with('/') {
                    return Err(invalid(
                        "",
                        format!("{pointer:?} is not a JSON pointer (starts with /)"),
                    ));
                }
            }
            let id = match (sys.scheme, &sys.id_header, &sys.id_pointer) {
                (Scheme::Standard, _, _) => IdSource::Header("webhook-id".into()),
                (_, Some(h), _) => IdSource::Header(h.to_ascii_lowercase()),
                (_, None, Some(p)) => IdSource::Pointer(p.clone()),
                (Scheme::Stripe, None, None) => IdSource::Pointer("/id".into()),
                (Scheme::Hmac, None, None) => IdSource::BodyHash,
            };
            systems.insert(name.clone(), Source { verifier, id });
        }
        Ok(Receiver {
            systems,
            max_body: hooks.max_body_bytes,
            store_timeout: Duration::from_millis(hooks.store_timeout_ms.max(1)),
            sink,
        })
    }
}

/// A JSON error that says what was wrong with the request and nothing
/// about the inside.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": code, "message": message })),
    )
        .into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

pub async fn receive(
    State(state): State<AppState>,
    Path(system): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Only configured systems become label values, so a scan of random
    // paths cannot grow the metric's label set.
    let known = state.inner.receiver.systems.contains_key(&system);
    let label = if known {
        system.clone()
    } else {
        "unknown".to_owned()
    };
    let response = intake(&state, system, headers, body).await;
    let outcome = match response.status() {
        StatusCode::ACCEPTED => "accepted",
        StatusCode::OK => "duplicate",
        StatusCode::UNAUTHORIZED => "invalid_signature",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::NOT_FOUND => "unknown_system",
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => "bad_request",
        _ => "error",
    };
    crate::metrics::webhook(&label, outcome);
    response
}

async fn intake(state: &AppState, system: String, headers: HeaderMap, body: Body) -> Response {
    let receiver = &state.inner.receiver;
    let Some(source) = receiver.systems.get(&system) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_system",
            "no such webhook endpoint",
        );
    };
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be application/json",
        );
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("the body is larger than {} bytes", receiver.max_body),
        )
    };
    if declared.is_some_and(|n| n > receiver.max_body as u64) {
        return too_large();
    }
    let Ok(bytes) = axum::body::to_bytes(body, receiver.max_body).await else {
        return too_large();
    };
    let now = chrono::Utc::now().timestamp();
    if let Err(rejection) = source.verifier.verify(&headers, &bytes, now) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            &rejection.message(),
        );
    }
    let payload: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                &format!(
                    "the body is not JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            );
        }
    };
    let event_id = match &source.id {
        IdSource::Header(h) => headers
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        IdSource::Pointer(p) => match payload.pointer(p) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        },
        IdSource::BodyHash => Some(hex::encode(Sha256::digest(&bytes))),
    };
    let Some(event_id) = event_id else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing_event_id",
            "the event has no id where this endpoint expects it",
        );
    };
    if event_id.len() > 256 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_event_id",
            "the event id is longer than 256 characters",
        );
    }
    // Both waits are cancellation safe: the inbox writer and the publish
    // run in tasks of their own, so a request that gives up (the deadline,
    // or the sender hanging up) never cuts a commit or a publish in half.
    let stored = match &receiver.sink {
        Sink::Inbox(intake) => {
            let event = InboxEvent {
                idempotency_key: format!("{system}:{event_id}"),
                system: system.clone(),
                entity: None,
                payload,
            };
            match tokio::time::timeout(receiver.store_timeout, intake.push(event)).await {
                Ok(Ok(stored)) => Ok(stored),
                Ok(Err(_)) => Err(()),
                Err(_) => {
                    tracing::warn!(message = "A webhook event was not stored in time; the sender is told to retry.", system = %system,
                        timeout_ms = receiver.store_timeout.as_millis() as u64);
                    Err(())
                }
            }
        }
        Sink::Queue(queue) => {
            let item = super::queue_worker::webhook_item(&system, &event_id, payload);
            let queue = queue.clone();
            let publish = tokio::spawn(async move { queue.enqueue(item).await });
            match tokio::time::timeout(receiver.store_timeout, publish).await {
                Ok(Ok(Ok(Enqueued::Stored))) => Ok(Stored::New(0)),
                Ok(Ok(Ok(Enqueued::Duplicate))) => Ok(Stored::Duplicate),
                Ok(Ok(Err(e))) => {
                    tracing::error!(message = "A webhook event could not be queued; the sender is told to retry.", system = %system, error = %e);
                    Err(())
                }
                Ok(Err(_)) => Err(()),
                Err(_) => {
                    tracing::warn!(message = "A webhook event was not confirmed by the broker in time; the sender is told to retry.", system = %system,
                        timeout_ms = receiver.store_timeout.as_millis() as u64);
                    Err(())
                }
            }
        }
    };
    match stored {
        Ok(Stored::New(_)) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "status": "accepted", "event_id": event_id })),
        )
            .into_response(),
        Ok(Stored::Duplicate) => (
            StatusCode::OK,
            axum::Json(json!({ "status": "duplicate", "event_id": event_id })),
        )
            .into_response(),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the event could not be stored; retry later",
        ),
    }
}
