//! Pushing to an exchange: persistent JSON messages, publisher confirms.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use serde_json::Value;
use tokio::time::Instant;

use super::definition::{IdSource, SinkSettings};
use super::{EXTERNAL_ID_HEADER, Inner, short};
use crate::connector::{Change, ConnectorError, PushOutcome};
use crate::model::ExternalId;

/// How long a push asks the sync engine to wait before retrying a message
/// the broker did not confirm.
const RETRY_DELAY: Duration = Duration::from_secs(30);

pub(super) async fn push(
    inner: &Inner,
    entity: &str,
    changes: Vec<Change>,
) -> Result<Vec<PushOutcome>, ConnectorError> {
    let settings = inner.entity(entity)?;
    let Some(sink) = &settings.sink else {
        return Err(ConnectorError::config(
            &inner.name,
            format!("entity `{entity}` has no `exchange` to push to"),
        ));
    };
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let channel = inner.channel().await?;
    inner.prepare_sink(&channel, sink, settings.declare).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| inner.error("cannot enable publisher confirms", &e))?;
    let exchange = short(&sink.exchange)?;

    // Publish everything, then wait for the confirmations.
    let mut pending: Vec<Pending> = Vec::with_capacity(changes.len());
    let mut broken: Option<ConnectorError> = None;
    for change in &changes {
        if broken.is_some() {
            pending.push(Pending::Unsent);
            continue;
        }
        let message = match Message::of(sink, change) {
            Ok(m) => m,
            Err(reason) => {
                pending.push(Pending::Refused(reason));
                continue;
            }
        };
        let published = channel
            .basic_publish(
                exchange.clone(),
                message.routing_key.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &message.body,
                message.properties,
            )
            .await;
        match published {
            Ok(confirm) => pending.push(Pending::Sent {
                confirm,
                external_id: message.external_id,
                routing_key: message.routing_key,
            }),
            Err(e) => {
                broken = Some(inner.error(&format!("cannot publish to `{}`", sink.exchange), &e));
                pending.push(Pending::Unsent);
            }
        }
    }

    let deadline = Instant::now() + Duration::from_millis(inner.settings.confirm_timeout_ms);
    let mut outcomes = Vec::with_capacity(changes.len());
    let mut stored = 0usize;
    for (p, change) in pending.into_iter().zip(&changes) {
        let outcome = match p {
            Pending::Refused(message) => PushOutcome::Rejected { message },
            Pending::Unsent => retry("not sent: the channel broke before it"),
            Pending::Sent {
                confirm,
                external_id,
                routing_key,
            } => match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => {
                    stored += 1;
                    if change.external_id.is_some() {
                        PushOutcome::Updated { external_id }
                    } else {
                        PushOutcome::Created { external_id }
                    }
                }
                Ok(Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)))) => {
                    PushOutcome::Rejected {
                        message: format!(
                            "unroutable: exchange `{}` has no queue bound for routing key `{routing_key}` ({} {}); bind one, then retry the record",
                            sink.exchange, returned.reply_code, returned.reply_text
                        ),
                    }
                }
                Ok(Ok(Confirmation::Nack(None))) => {
                    retry("the broker did not store the message (nack)")
                }
                Ok(Ok(Confirmation::NotRequested)) => {
                    retry("the broker did not confirm the message")
                }
                Ok(Err(e)) => {
                    let e = inner.error(&format!("publishing to `{}` failed", sink.exchange), &e);
                    let message = e.to_string();
                    broken.get_or_insert(e);
                    retry(&message)
                }
                Err(_) => retry(&format!(
                    "the broker did not confirm the message within {} ms",
                    inner.settings.confirm_timeout_ms
                )),
            },
        };
        outcomes.push(outcome);
    }
    match broken {
        // Nothing is known to be stored: the batch failed as a whole (a
        // missing exchange, a refused permission, a dead connection).
        Some(e) if stored == 0 => Err(e),
        _ => Ok(outcomes),
    }
}

fn retry(message: &str) -> PushOutcome {
    PushOutcome::RetryLater {
        delay: RETRY_DELAY,
        message: message.to_owned(),
    }
}

enum Pending {
    /// The record cannot be sent; why.
    Refused(String),
    /// Not sent because the channel broke.
    Unsent,
    Sent {
        confirm: PublisherConfirm,
        external_id: ExternalId,
        routing_key: ShortString,
    },
}

/// A change as a message.
struct Message {
    routing_key: ShortString,
    body: Vec<u8>,
    properties: BasicProperties,
    external_id: ExternalId,
}

impl Message {
    fn of(sink: &SinkSettings, change: &Change) -> Result<Message, String> {
        let routing_key = sink.routing_key.render(&change.data)?;
        let routing_key = ShortString::try_new(routing_key)
            .map_err(|_| "the routing key is longer than 255 bytes".to_owned())?;
        let message_id = ShortString::try_new(change.idempotency_key.as_str()).map_err(|_| {
            format!(
                "the idempotency key is {} bytes; a message id holds 255",
                change.idempotency_key.len()
            )
        })?;
        let external_id = match (&change.external_id, &sink.id) {
            (Some(id), _) => id.clone(),
            (None, IdSource::MessageId) => ExternalId::parse(&change.idempotency_key)
                .map_err(|e| format!("the idempotency key is not a usable id: {e}"))?,
            (None, IdSource::Pointer(p)) => {
                let id = match change.data.pointer(p) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
                    _ => return Err(format!("the record has no id at `{p}`")),
                };
                ExternalId::parse(&id).map_err(|e| format!("unusable id at `{p}`: {e}"))?
            }
        };
        let body = serde_json::to_vec(&change.data)
            .map_err(|e| format!("the record cannot be written as JSON: {e}"))?;
        let mut headers = FieldTable::default();
        headers.insert(
            EXTERNAL_ID_HEADER.into(),
            AMQPValue::LongString(LongString::from(external_id.as_str())),
        );
        let properties = BasicProperties::default()
            .with_message_id(message_id)
            .with_content_type("application/json".into())
            .with_delivery_mode(if sink.persistent { 2 } else { 1 })
            .with_headers(headers);
        Ok(Message {
            routing_key,
            body,
            properties,
            external_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::amqp::definition::RoutingKey;

    fn sink(id: IdSource) -> SinkSettings {
        SinkSettings {
            exchange: "events".into(),
            exchange_type: lapin::ExchangeKind::Topic,
            routing_key: RoutingKey::parse("invoice.{/status}").unwrap(),
            persistent: true,
            id,
        }
    }

    fn change(data: Value, id: Option<&str>) -> Change {
        Change {
            idempotency_key: "invoice:c1:2:bus".into(),
            external_id: id.map(|i| ExternalId::parse(i).unwrap()),
            data,
        }
    }

    #[test]
    fn a_change_becomes_a_persistent_json_message_keyed_by_its_idempotency_key() {
        let m = Message::of(
            &sink(IdSource::MessageId),
            &change(serde_json::json!({"status": "paid"}), None),
        )
        .unwrap();
        assert_eq!(m.routing_key.as_str(), "invoice.paid");
        assert_eq!(
            m.properties.message_id().as_ref().map(|s| s.as_str()),
            Some("invoice:c1:2:bus")
        );
        assert_eq!(*m.properties.delivery_mode(), Some(2));
        assert_eq!(m.external_id.as_str(), "invoice:c1:2:bus");
        assert_eq!(m.body, br#"{"status":"paid"}"#);

        let m = Message::of(
            &sink(IdSource::Pointer("/number".into())),
            &change(serde_json::json!({"status": "paid", "number": 42}), None),
        )
        .unwrap();
        assert_eq!(m.external_id.as_str(), "42");
        let m = Message::of(
            &sink(IdSource::Pointer("/number".into())),
            &change(serde_json::json!({"status": "paid"}), Some("INV-1")),
        )
        .unwrap();
        assert_eq!(m.external_id.as_str(), "INV-1", "an update keeps its id");
    }

    #[test]
    fn records_without_their_routing_key_or_id_are_refused() {
        let err = Message::of(
            &sink(IdSource::MessageId),
            &change(serde_json::json!({}), None),
        )
        .err()
        .unwrap();
        assert!(err.contains("`/status`"), "{err}");
        let err = Message::of(
            &sink(IdSource::Pointer("/number".into())),
            &change(serde_json::json!({"status": "open"}), None),
        )
        .err()
        .unwrap();
        assert!(err.contains("no id at `/number`"), "{err}");
        let mut c = change(serde_json::json!({"status": "open"}), None);
        c.idempotency_key = "k".repeat(300);
        let err = Message::of(&sink(IdSource::MessageId), &c).err().unwrap();
        assert!(err.contains("300 bytes"), "{err}");
    }
}
