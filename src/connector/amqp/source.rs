//! Pulling a queue: pages of messages, acknowledged after commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Consumer};
use serde_json::Value;
use tokio::time::Instant;

use super::definition::{Body, IdSource, SourceSettings};
use super::{Inner, REASON_HEADER, SOURCE_QUEUE_HEADER, short};
use crate::connector::{
    Ack, ConnectorError, Cursor, ErrorKind, Notice, Page, PageStream, RawRecord,
};
use crate::model::ExternalId;

/// How long the end of a pull waits for the broker to confirm the
/// consumer's cancellation before handing back what arrived meanwhile.
const CANCEL_WAIT: Duration = Duration::from_secs(2);

pub(super) fn pull<'a>(
    inner: Arc<Inner>,
    entity: &'a str,
    cursor: Option<Cursor>,
) -> PageStream<'a> {
    let settings = match inner.entity(entity) {
        Ok(e) => match &e.source {
            Some(s) => (s.clone(), e.declare),
            None => {
                let err = ConnectorError::config(
                    &inner.name,
                    format!("entity `{entity}` has no `queue` to pull from"),
                );
                return stream::once(async move { Err(err) }).boxed();
            }
        },
        Err(err) => return stream::once(async move { Err(err) }).boxed(),
    };
    let pull = Pull {
        inner,
        source: Arc::new(settings.0),
        declare: settings.1,
        cursor: cursor.unwrap_or_default(),
        session: None,
        consumer: None,
        cancelled: false,
        done: false,
        window: Arc::new(Window::default()),
        full_at: None,
    };
    stream::unfold(pull, |mut pull| async move {
        let next = pull.next_page().await;
        next.map(|page| (page, pull))
    })
    .boxed()
}

struct Pull {
    inner: Arc<Inner>,
    source: Arc<SourceSettings>,
    declare: bool,
    cursor: Cursor,
    session: Option<Arc<Session>>,
    consumer: Option<Consumer>,
    /// The broker ended the consumer (the queue was deleted).
    cancelled: bool,
    done: bool,
    /// What the pages handed out hold of the prefetch window.
    window: Arc<Window>,
    /// The window's answer count when a page last found it full.
    full_at: Option<u64>,
}

/// The prefetch window as the pages of one pull fill it.
#[derive(Default)]
struct Window {
    /// Messages of pages handed out and not yet answered: the broker
    /// delivers no more than `prefetch` beyond those.
    unanswered: AtomicUsize,
    /// Pages answered so far.
    answers: AtomicU64,
}

impl Pull {
    async fn next_page(&mut self) -> Option<Result<Page, ConnectorError>> {
        if self.done {
            return None;
        }
        match self.page().await {
            Ok(Some(page)) => Some(Ok(page)),
            Ok(None) => {
                self.done = true;
                self.stop().await;
                None
            }
            Err(e) => {
                self.done = true;
                self.stop().await;
                Some(Err(e))
            }
        }
    }

    /// Opens the channel and starts consuming.
    async fn start(&mut self) -> Result<(), ConnectorError> {
        let channel = self.inner.channel().await?;
        self.inner
            .prepare_source(&channel, &self.source, self.declare)
            .await?;
        channel
            .basic_qos(self.source.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| self.inner.error("cannot set the prefetch window", &e))?;
        let consumer = channel
            .basic_consume(
                short(&self.source.queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                self.inner
                    .error(&format!("cannot consume `{}`", self.source.queue), &e)
            })?;
        self.consumer = Some(consumer);
        self.session = Some(Arc::new(Session {
            inner: self.inner.clone(),
            channel,
            source: self.source.clone(),
            publisher: tokio::sync::Mutex::new(None),
        }));
        Ok(())
    }

    /// The next page, or `None` when nothing arrived within the wait.
    async fn page(&mut self) -> Result<Option<Page>, ConnectorError> {
        if self.consumer.is_none() && !self.cancelled {
            self.start().await?;
        }
        let (Some(consumer), Some(session)) = (self.consumer.as_mut(), self.session.clone()) else {
            return Ok(None);
        };
        // What the prefetch window leaves to deliver while earlier pages
        // wait for their answer (the sync engine asks for the next page
        // while the last one commits). Silence from a full window is not a
        // quiet queue: the page ends when the window is used up, and a
        // window already full gives an empty page at once, so that the
        // caller answers what it holds and asks again. Asked again with
        // nothing answered, the pull ends: its pages are not answered.
        let room = usize::from(self.source.prefetch)
            .saturating_sub(self.window.unanswered.load(Ordering::SeqCst))
            .min(self.source.page_size);
        if room == 0 {
            let answers = self.window.answers.load(Ordering::SeqCst);
            if self.full_at.replace(answers) == Some(answers) {
                return Ok(None);
            }
            return Ok(Some(Page {
                records: Vec::new(),
                rejects: Vec::new(),
                cursor: self.cursor.clone(),
                ack: None,
                notices: Vec::new(),
            }));
        }
        let deadline = Instant::now() + Duration::from_millis(self.source.max_wait_ms);
        let mut records = Vec::new();
        let mut held = Vec::new();
        let mut notices = Vec::new();
        while held.len() < room {
            let delivery = match tokio::time::timeout_at(deadline, consumer.next()).await {
                Err(_) => break,
                Ok(None) => {
                    self.cancelled = true;
                    break;
                }
                Ok(Some(Err(e))) => {
                    hand_back(&held).await;
                    return Err(self
                        .inner
                        .error(&format!("consuming `{}` failed", self.source.queue), &e));
                }
                Ok(Some(Ok(d))) => d,
            };
            match decode(&self.source, &delivery) {
                Ok(mut rs) => {
                    for r in &rs {
                        self.cursor.advance(r.updated_at, r.external_id.as_str());
                    }
                    records.append(&mut rs);
                    held.push(Held {
                        delivery,
                        set_aside: false,
                    });
                }
                Err(reason) => {
                    let item = message_name(&delivery);
                    if let Err(e) = session.dead_letter(&delivery, &reason).await {
                        held.push(Held {
                            delivery,
                            set_aside: false,
                        });
                        hand_back(&held).await;
                        return Err(e);
                    }
                    tracing::warn!(
                        message = "Set aside a message that cannot be read.",
                        system = %self.inner.name,
                        queue = %self.source.queue,
                        %item,
                        %reason
                    );
                    notices.push(Notice::SetAside {
                        item,
                        to: format!(
                            "dead-letter exchange `{}`",
                            self.source.dead_letter_exchange
                        ),
                        reason,
                    });
                    held.push(Held {
                        delivery,
                        set_aside: true,
                    });
                }
            }
        }
        if held.is_empty() {
            if self.cancelled {
                return Err(ConnectorError::unavailable(
                    &self.inner.name,
                    format!(
                        "the broker cancelled the consumer of `{}` (was the queue deleted?)",
                        self.source.queue
                    ),
                ));
            }
            return Ok(None);
        }
        self.window
            .unanswered
            .fetch_add(held.len(), Ordering::SeqCst);
        Ok(Some(Page {
            records,
            rejects: Vec::new(),
            cursor: self.cursor.clone(),
            ack: Some(Box::new(PageAck {
                session,
                held,
                window: self.window.clone(),
            })),
            notices,
        }))
    }

    /// Ends consuming and hands back what arrived after the last page.
    async fn stop(&mut self) {
        let (Some(mut consumer), Some(session)) = (self.consumer.take(), self.session.take())
        else {
            return;
        };
        let cancel = session
            .channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default());
        if tokio::time::timeout(CANCEL_WAIT, cancel).await.is_err() {
            return;
        }
        let mut late = Vec::new();
        while let Ok(Some(Ok(d))) = tokio::time::timeout(CANCEL_WAIT, consumer.next()).await {
            late.push(Held {
                delivery: d,
                set_aside: false,
            });
        }
        hand_back(&late).await;
    }
}

/// Best effort: gives messages back to the queue now rather than when
/// their channel closes.
async fn hand_back(held: &[Held]) {
    for h in held {
        let _ = h
            .delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await;
    }
}

/// A message in the log: its id, else its delivery tag.
fn message_name(d: &Delivery) -> String {
    match d.properties.message_id() {
        Some(id) => format!("message {id}"),
        None => format!("message without id (delivery {})", d.delivery_tag),
    }
}

/// The records of a message, or why it cannot be read.
fn decode(source: &SourceSettings, d: &Delivery) -> Result<Vec<RawRecord>, String> {
    let body: Value =
        serde_json::from_slice(&d.data).map_err(|e| format!("the body is not JSON: {e}"))?;
    let items = match (source.body, body) {
        (Body::Record, v @ Value::Object(_)) => vec![v],
        (Body::Record, _) => return Err("the body is not a JSON object".into()),
        (Body::Array, Value::Array(items)) => items,
        (Body::Array, _) => return Err("the body is not a JSON array of records".into()),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            let at = if source.body == Body::Array {
                format!("record {} of the array: ", i + 1)
            } else {
                String::new()
            };
            record(source, d, data).map_err(|e| format!("{at}{e}"))
        })
        .collect()
}

fn record(source: &SourceSettings, d: &Delivery, data: Value) -> Result<RawRecord, String> {
    if !data.is_object() {
        return Err("not a JSON object".into());
    }
    let id = match &source.id {
        IdSource::MessageId => d
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .ok_or("the message has no message_id property")?,
        IdSource::Pointer(p) => match data.pointer(p) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(Value::Null) | None => return Err(format!("no id at `{p}`")),
            Some(_) => return Err(format!("the id at `{p}` is neither text nor an integer")),
        },
    };
    let external_id = ExternalId::parse(&id).map_err(|e| format!("unusable id: {e}"))?;
    let updated_at = match &source.updated_at {
        None => None,
        Some(p) => match data.pointer(p) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                DateTime::parse_from_rfc3339(s)
                    .map_err(|e| format!("`{p}` is not an RFC 3339 time: {e}"))?
                    .with_timezone(&Utc),
            ),
            Some(_) => return Err(format!("`{p}` is not an RFC 3339 time")),
        },
    };
    Ok(RawRecord {
        external_id,
        updated_at,
        data,
    })
}

/// A pull's channel, kept open while its pages are unanswered, and a
/// channel with publisher confirms for dead letters.
pub(crate) struct Session {
    inner: Arc<Inner>,
    channel: Channel,
    source: Arc<SourceSettings>,
    publisher: tokio::sync::Mutex<Option<Channel>>,
}

impl Session {
    /// Publishes a copy of `d` to the dead-letter exchange with `reason`,
    /// confirmed by the broker. The original is left to acknowledge.
    async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<(), ConnectorError> {
        let mut slot = self.publisher.lock().await;
        let channel = match slot.as_ref() {
            Some(ch) if ch.status().connected() => ch.clone(),
            _ => {
                let ch = self.inner.channel().await?;
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| self.inner.error("cannot enable publisher confirms", &e))?;
                *slot = Some(ch.clone());
                ch
            }
        };
        drop(slot);
        let mut headers = d.properties.headers().clone().unwrap_or_default();
        headers.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        headers.insert(
            SOURCE_QUEUE_HEADER.into(),
            AMQPValue::LongString(LongString::from(self.source.queue.as_str())),
        );
        let props: BasicProperties = d
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2);
        let exchange = &self.source.dead_letter_exchange;
        let key = &self.source.dead_letter_routing_key;
        let what = format!("cannot dead-letter a message to `{exchange}`");
        let publish = async {
            channel
                .basic_publish(
                    short(exchange)?,
                    short(key)?,
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &d.data,
                    props,
                )
                .await
                .map_err(|e| self.inner.error(&what, &e))?
                .await
                .map_err(|e| self.inner.error(&what, &e))
        };
        let timeout = Duration::from_millis(self.inner.settings.confirm_timeout_ms);
        let confirmation = match tokio::time::timeout(timeout, publish).await {
            Ok(c) => c?,
            Err(_) => {
                return Err(ConnectorError::new(
                    ErrorKind::Timeout,
                    &self.inner.name,
                    format!("{what}: the broker did not confirm it within {timeout:?}"),
                ));
            }
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                Err(ConnectorError::config(
                    &self.inner.name,
                    format!(
                        "{what}: no queue is bound to it for routing key `{key}`, so the message would be lost; bind one (declare = true does)"
                    ),
                ))
            }
            Confirmation::Nack(None) => Err(ConnectorError::unavailable(
                &self.inner.name,
                format!("{what}: the broker refused to store it"),
            )),
            Confirmation::NotRequested => Err(ConnectorError::unavailable(
                &self.inner.name,
                format!("{what}: publisher confirms are off"),
            )),
        }
    }
}

/// A message of a page and whether it was already dead-lettered.
struct Held {
    delivery: Delivery,
    set_aside: bool,
}

/// Answers the messages of one page.
struct PageAck {
    session: Arc<Session>,
    held: Vec<Held>,
    /// The pull's window, which this page's answer frees.
    window: Arc<Window>,
}

impl PageAck {
    /// The page is answered (or its channel is gone): its messages no
    /// longer fill the prefetch window.
    fn answered(&self) {
        self.window
            .unanswered
            .fetch_sub(self.held.len(), Ordering::SeqCst);
        self.window.answers.fetch_add(1, Ordering::SeqCst);
    }

    fn lost(&self, what: &str) -> ConnectorError {
        ConnectorError::unavailable(
            &self.session.inner.name,
            format!(
                "cannot {what} messages of `{}`: their channel closed; the broker delivers them again",
                self.session.source.queue
            ),
        )
    }

    async fn settle(&self, h: &Held, requeue: Option<bool>) -> Result<(), ConnectorError> {
        let acker = &h.delivery.acker;
        let (done, what) = match requeue {
            None => (acker.ack(BasicAckOptions::default()).await, "acknowledge"),
            Some(requeue) => (
                acker
                    .nack(BasicNackOptions {
                        requeue,
                        ..Default::default()
                    })
                    .await,
                "hand back",
            ),
        };
        match done {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.lost(what)),
            Err(e) => Err(self
                .session
                .inner
                .error(&format!("cannot {what} messages"), &e)),
        }
    }
}

#[async_trait]
impl Ack for PageAck {
    async fn ack(self: Box<Self>) -> Result<(), ConnectorError> {
        let mut first_error = None;
        for h in &self.held {
            if let Err(e) = self.settle(h, None).await {
                first_error.get_or_insert(e);
            }
        }
        self.answered();
        first_error.map_or(Ok(()), Err)
    }

    async fn nack(self: Box<Self>, requeue: bool, reason: &str) -> Result<(), ConnectorError> {
        let mut first_error = None;
        for h in &self.held {
            let result = if h.set_aside {
                // Its copy is in the dead-letter exchange already.
                self.settle(h, None).await
            } else if requeue {
                self.settle(h, Some(true)).await
            } else {
                match self.session.dead_letter(&h.delivery, reason).await {
                    Ok(()) => self.settle(h, None).await,
                    Err(e) => {
                        let _ = self.settle(h, Some(true)).await;
                        Err(e)
                    }
                }
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        self.answered();
        first_error.map_or(Ok(()), Err)
    }
}
