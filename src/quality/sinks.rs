//! Where alerts go besides the store: the log, an HTTP webhook, an AMQP
//! exchange.
//!
//! The store is the source of truth: an alert is committed before any
//! sink sees it, and each alert records which sinks confirmed it
//! (`sinks_delivered`) and whether all configured sinks have it
//! (`sink_state`). A sink that fails leaves the alert `pending`; the next
//! evaluation (after a sync, a bank import, or `concord alerts check`)
//! tries that sink again. Sinks get at-least-once delivery: a receiver
//! should de-duplicate on the alert `id` (sent in the body, and as the
//! `X-Concord-Alert-Id` header or the AMQP `message_id`).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::Sha256;

use super::config::{AmqpSinkSettings, SinksSettings, WebhookSinkSettings};
use crate::store::{AlertRecord, Store, StoreError};

/// The header carrying the body's signature: `sha256=<hex HMAC-SHA256 of
/// the body under the configured secret>`.
pub const SIGNATURE_HEADER: &str = "X-Concord-Signature";
/// The header carrying the alert's id, for de-duplication.
pub const ALERT_ID_HEADER: &str = "X-Concord-Alert-Id";

/// Alerts handed to sinks per evaluation; the rest wait for the next.
const DISPATCH_LIMIT: u32 = 1_000;

/// The JSON every sink sends.
#[derive(Debug, Clone, Serialize)]
pub struct AlertMessage<'a> {
    pub id: i64,
    pub rule: &'a str,
    pub severity: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<&'static str>,
    pub record_ids: &'a [String],
    pub reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl<'a> AlertMessage<'a> {
    pub fn of(a: &'a AlertRecord) -> Self {
        AlertMessage {
            id: a.id,
            rule: &a.alert.rule,
            severity: a.alert.severity.as_str(),
            entity: a.alert.entity.map(|e| e.as_str()),
            record_ids: &a.alert.record_ids,
            reason: &a.alert.reason,
            amount: a.alert.amount.map(|m| m.amount().to_string()),
            currency: a.alert.amount.map(|m| m.currency().as_str().to_owned()),
            created_at: a.created_at,
        }
    }

    pub fn body(&self) -> Vec<u8> {
        // Cannot fail: plain strings and numbers.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// What one dispatch did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DispatchReport {
    /// Alerts every configured sink has now.
    pub completed: usize,
    /// Alerts still waiting for a sink (retried next time).
    pub pending: usize,
    /// What failed, per sink (no secrets).
    pub errors: Vec<String>,
}

/// A failed send and whether trying again may help.
#[derive(Debug)]
struct SendError {
    message: String,
    transient: bool,
}

/// Logs each newly raised alert (the log sink).
pub fn log(alerts: &[AlertRecord]) {
    for a in alerts {
        let amount = a.alert.amount.map(|m| m.to_string()).unwrap_or_default();
        match a.alert.severity {
            crate::store::Severity::Critical | crate::store::Severity::Warning => tracing::warn!(
                target: "concord::quality",
                message = "Data-quality alert raised.",
                id = a.id,
                rule = %a.alert.rule,
                severity = a.alert.severity.as_str(),
                reason = %a.alert.reason,
                amount = %amount,
            ),
            crate::store::Severity::Info => tracing::info!(
                target: "concord::quality",
                message = "Data-quality alert raised.",
                id = a.id,
                rule = %a.alert.rule,
                severity = a.alert.severity.as_str(),
                reason = %a.alert.reason,
                amount = %amount,
            ),
        }
    }
}

/// Sends every alert some configured sink does not have yet, and records
/// the outcome per alert. Sink failures are reported, never returned as
/// errors: the alerts stay pending in the store.
pub async fn dispatch(store: &Store, sinks: &SinksSettings) -> Result<DispatchReport, StoreError> {
    let pending = store.alerts_pending_sinks(DISPATCH_LIMIT).await?;
    let mut report = DispatchReport::default();
    if pending.is_empty() {
        return Ok(report);
    }
    let mut delivered: Vec<Vec<String>> =
        pending.iter().map(|a| a.sinks_delivered.clone()).collect();
    let mut errors: Vec<Option<String>> = vec![None; pending.len()];

    if let Some(webhook) = &sinks.webhook {
        let client = webhook_client(webhook);
        for (i, alert) in pending.iter().enumerate() {
            if delivered[i].iter().any(|s| s == "webhook") {
                continue;
            }
            match &client {
                Ok(client) => match post(client, webhook, alert).await {
                    Ok(()) => delivered[i].push("webhook".to_owned()),
                    Err(e) => {
                        errors[i] = Some(format!("webhook: {}", e.message));
                    }
                },
                Err(e) => errors[i] = Some(format!("webhook: {e}")),
            }
        }
    }
    if let Some(amqp) = &sinks.amqp {
        let wanted: Vec<usize> = (0..pending.len())
            .filter(|&i| !delivered[i].iter().any(|s| s == "amqp"))
            .collect();
        if !wanted.is_empty() {
            let alerts: Vec<&AlertRecord> = wanted.iter().map(|&i| &pending[i]).collect();
            let outcomes = publish(amqp, &alerts).await;
            for (i, outcome) in wanted.into_iter().zip(outcomes) {
                match outcome {
                    Ok(()) => delivered[i].push("amqp".to_owned()),
                    Err(e) => {
                        let e = format!("amqp: {e}");
                        errors[i] = Some(match errors[i].take() {
                            Some(before) => format!("{before}; {e}"),
                            None => e,
                        });
                    }
                }
            }
        }
    }

    let configured: Vec<&str> = [
        sinks.webhook.as_ref().map(|_| "webhook"),
        sinks.amqp.as_ref().map(|_| "amqp"),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (i, alert) in pending.iter().enumerate() {
        let done = configured
            .iter()
            .all(|s| delivered[i].iter().any(|d| d == s));
        store
            .record_alert_dispatch(alert.id, &delivered[i], done, errors[i].as_deref())
            .await?;
        if done {
            report.completed += 1;
        } else {
            report.pending += 1;
        }
        if let Some(e) = &errors[i]
            && !report.errors.contains(e)
        {
            tracing::warn!(
                target: "concord::quality",
                message = "An alert sink failed; the alert stays pending.",
                id = alert.id,
                error = %e,
            );
            report.errors.push(e.clone());
        }
    }
    Ok(report)
}

fn webhook_client(settings: &WebhookSinkSettings) -> Result<reqwest::Client, String> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let timeout = Duration::from_secs(settings.timeout_secs.max(1));
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("concord/", env!("CARGO_PKG_VERSION")))
        // A signed body must not be replayed to wherever a redirect points.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

async fn post(
    client: &reqwest::Client,
    settings: &WebhookSinkSettings,
    alert: &AlertRecord,
) -> Result<(), SendError> {
    let body = AlertMessage::of(alert).body();
    let signature = sign(settings.secret.expose_secret().as_bytes(), &body);
    let shown = crate::settings::redact_url(&settings.url);
    let attempt = || async {
        let response = client
            .post(&settings.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .header(ALERT_ID_HEADER, alert.id.to_string())
            .body(body.clone())
            .send()
            .await
            .map_err(|e| SendError {
                message: format!(
                    "POST {shown} failed: {}",
                    if e.is_timeout() {
                        "timed out".to_owned()
                    } else if e.is_connect() {
                        "cannot connect".to_owned()
                    } else {
                        "transport error".to_owned()
                    }
                ),
                transient: true,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(SendError {
            message: format!("POST {shown} answered {status}"),
            transient: status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408,
        })
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(settings.retry_delay_ms))
        .with_max_delay(Duration::from_secs(30))
        .with_max_times(settings.retries)
        .with_jitter();
    attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &SendError| e.transient)
        .await
}

/// The routing key for `alert`: `{rule}` and `{severity}` filled in.
pub fn routing_key(template: &str, alert: &AlertRecord) -> String {
    template
        .replace("{rule}", &alert.alert.rule)
        .replace("{severity}", alert.alert.severity.as_str())
}

/// Publishes `alerts` with publisher confirms; one outcome per alert.
async fn publish(settings: &AmqpSinkSettings, alerts: &[&AlertRecord]) -> Vec<Result<(), String>> {
    let all = |e: String| alerts.iter().map(|_| Err(e.clone())).collect::<Vec<_>>();
    let timeout = Duration::from_millis(settings.confirm_timeout_ms.max(100));
    let props = ConnectionProperties::default()
        .with_connection_name(LongString::from("concord alerts".to_owned()));
    let conn = match tokio::time::timeout(
        timeout,
        Connection::connect(settings.url.expose_secret(), props),
    )
    .await
    {
        Ok(Ok(c)) => c,
        // lapin's message may quote the URL: name the exchange only.
        Ok(Err(_)) => {
            return all(format!(
                "cannot connect to the broker for exchange `{}`",
                settings.exchange
            ));
        }
        Err(_) => return all("timed out connecting to the broker".to_owned()),
    };
    let result = publish_on(&conn, settings, alerts, timeout).await;
    let _ = conn.close(200, "bye".into()).await;
    match result {
        Ok(outcomes) => outcomes,
        Err(e) => all(e),
    }
}

async fn publish_on(
    conn: &Connection,
    settings: &AmqpSinkSettings,
    alerts: &[&AlertRecord],
    timeout: Duration,
) -> Result<Vec<Result<(), String>>, String> {
    let exchange = ShortString::try_new(settings.exchange.as_str())
        .map_err(|_| "the exchange name is longer than 255 bytes".to_owned())?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a channel: {e}"))?;
    if settings.declare {
        channel
            .exchange_declare(
                exchange.clone(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("cannot declare exchange `{}`: {e}", settings.exchange))?;
    }
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("cannot enable publisher confirms: {e}"))?;
    let mut confirms = Vec::with_capacity(alerts.len());
    for alert in alerts {
        let body = AlertMessage::of(alert).body();
        let key = routing_key(&settings.routing_key, alert);
        let Ok(key) = ShortString::try_new(key.as_str()) else {
            confirms.push(Err("routing key longer than 255 bytes".to_owned()));
            continue;
        };
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(alert.id.to_string()))
            .with_type(ShortString::try_new(alert.alert.rule.as_str()).unwrap_or_default());
        match channel
            .basic_publish(
                exchange.clone(),
                key,
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                properties,
            )
            .await
        {
            Ok(confirm) => confirms.push(Ok(confirm)),
            Err(e) => confirms.push(Err(format!("cannot publish: {e}"))),
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::with_capacity(alerts.len());
    for c in confirms {
        out.push(match c {
            Err(e) => Err(e),
            Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                Ok(Ok(Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)))) => Err(format!(
                    "unroutable: no queue bound to exchange `{}` for this alert ({} {})",
                    settings.exchange, r.reply_code, r.reply_text
                )),
                Ok(Ok(Confirmation::Nack(None))) => {
                    Err("the broker did not store it (nack)".into())
                }
                Ok(Ok(Confirmation::NotRequested)) => Err("the broker did not confirm it".into()),
                Ok(Err(e)) => Err(format!("publishing failed: {e}")),
                Err(_) => Err("no confirm from the broker in time".into()),
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
