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

    // First every confirmation, then what each says. lapin hands a returned
    // (unroutable) message to whichever confirmation it resolves next, and
    // a broker's "multiple" ack resolves several in no set order, so the
    // confirmation that carries a returned message may be another message's.
    // A returned message is matched to its change by message id (the
    // idempotency key) instead.
    let deadline = Instant::now() + Duration::from_millis(inner.settings.confirm_timeout_ms);
    let mut confirmed: Vec<Option<Confirmed>> = Vec::with_capacity(pending.len());
    let mut returns: Vec<(usize, Returned)> = Vec::new();
    for (i, p) in pending.iter_mut().enumerate() {
        let Pending::Sent { confirm, .. } = p else {
            confirmed.push(None);
            continue;
        };
        let (state, returned) = match tokio::time::timeout_at(deadline, confirm).await {
            Ok(Ok(Confirmation::Ack(r))) => (Confirmed::Ack, r),
            Ok(Ok(Confirmation::Nack(r))) => (Confirmed::Nack, r),
            Ok(Ok(Confirmation::NotRequested)) => (Confirmed::NotRequested, None),
            Ok(Err(e)) => (Confirmed::Failed(e), None),
            Err(_) => (Confirmed::TimedOut, None),
        };
        if let Some(r) = returned {
            returns.push((i, Returned::of(&r)));
        }
        confirmed.push(Some(state));
    }
    let keys: Vec<Option<&str>> = pending
        .iter()
        .zip(&changes)
        .map(|(p, c)| matches!(p, Pending::Sent { .. }).then_some(c.idempotency_key.as_str()))
        .collect();
    let mut unroutable = attribute_returns(&keys, returns);

    let mut outcomes = Vec::with_capacity(changes.len());
    let mut stored = 0usize;
    for (i, (p, change)) in pending.into_iter().zip(&changes).enumerate() {
        let outcome = match (p, confirmed[i].take()) {
            (Pending::Refused(message), _) => PushOutcome::Rejected { message },
            (Pending::Unsent, _) | (Pending::Sent { .. }, None) => {
                retry("not sent: the channel broke before it")
            }
            (
                Pending::Sent {
                    external_id,
                    routing_key,
                    ..
                },
                Some(state),
            ) => match (state, unroutable[i].take()) {
                (Confirmed::Ack | Confirmed::Nack, Some(reply)) => PushOutcome::Rejected {
                    message: format!(
                        "unroutable: exchange `{}` has no queue bound for routing key `{routing_key}` ({reply}); bind one, then retry the record",
                        sink.exchange
                    ),
                },
                (Confirmed::Ack, None) => {
                    stored += 1;
                    if change.external_id.is_some() {
                        PushOutcome::Updated { external_id }
                    } else {
                        PushOutcome::Created { external_id }
                    }
                }
                (Confirmed::Nack, None) => retry("the broker did not store the message (nack)"),
                (Confirmed::NotRequested, _) => retry("the broker did not confirm the message"),
                (Confirmed::Failed(e), _) => {
                    let e = inner.error(&format!("publishing to `{}` failed", sink.exchange), &e);
                    let message = e.to_string();
                    broken.get_or_insert(e);
                    retry(&message)
                }
                (Confirmed::TimedOut, _) => retry(&format!(
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

/// What a message's confirmation said, apart from any returned message.
enum Confirmed {
    Ack,
    Nack,
    NotRequested,
    Failed(lapin::Error),
    TimedOut,
}

/// A message the broker returned as unroutable.
struct Returned {
    message_id: Option<String>,
    /// Reply code and text, e.g. `312 NO_ROUTE`.
    reply: String,
}

impl Returned {
    fn of(r: &lapin::message::BasicReturnMessage) -> Returned {
        Returned {
            message_id: r.properties.message_id().as_ref().map(|id| id.to_string()),
            reply: format!("{} {}", r.reply_code, r.reply_text),
        }
    }
}

/// Which sent message each returned message belongs to: the one whose
/// message id (`keys[i]`, `None` for a message not sent) it carries, the
/// first not yet matched when several share it. A returned message with no
/// id that matches stays with the message whose confirmation carried it.
/// The reply for each message returned, by position.
fn attribute_returns(
    keys: &[Option<&str>],
    returns: Vec<(usize, Returned)>,
) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = vec![None; keys.len()];
    let mut unmatched = Vec::new();
    for (carrier, r) in returns {
        let owner = r
            .message_id
            .as_deref()
            .and_then(|id| (0..keys.len()).find(|&i| keys[i] == Some(id) && out[i].is_none()));
        match owner {
            Some(i) => out[i] = Some(r.reply),
            None => unmatched.push((carrier, r.reply)),
        }
    }
    for (carrier, reply) in unmatched {
        out[carrier].get_or_insert(reply);
    }
    out
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

    fn returned(id: Option<&str>) -> Returned {
        Returned {
            message_id: id.map(str::to_owned),
            reply: "312 NO_ROUTE".into(),
        }
    }

    #[test]
    fn a_returned_message_belongs_to_the_change_it_names_not_to_the_confirmation_carrying_it() {
        // Message 1's return arrived with message 0's confirmation (as a
        // broker's multiple ack resolves them); message 2 was refused
        // before sending and has no key.
        let keys = [
            Some("invoice:a:1:bus"),
            Some("invoice:b:1:bus"),
            None,
            Some("invoice:c:1:bus"),
        ];
        let got = attribute_returns(&keys, vec![(0, returned(Some("invoice:b:1:bus")))]);
        assert_eq!(got, [None, Some("312 NO_ROUTE".to_owned()), None, None]);
    }

    #[test]
    fn returns_sharing_a_key_go_one_each_and_an_unknown_one_stays_with_its_carrier() {
        let keys = [Some("k"), Some("k"), Some("other")];
        let got = attribute_returns(
            &keys,
            vec![
                (2, returned(Some("k"))),
                (2, returned(Some("k"))),
                (2, returned(None)),
            ],
        );
        assert_eq!(
            got,
            [
                Some("312 NO_ROUTE".to_owned()),
                Some("312 NO_ROUTE".to_owned()),
                Some("312 NO_ROUTE".to_owned())
            ]
        );
        let got = attribute_returns(
            &[Some("k"), Some("x")],
            vec![(1, returned(Some("not sent here")))],
        );
        assert_eq!(got, [None, Some("312 NO_ROUTE".to_owned())]);
    }
}
