//! The work queue on RabbitMQ, for several `concord serve` instances
//! sharing the work.
//!
//! # Topology (declared on every new channel; declarations are idempotent)
//! * `NAME`: a durable **quorum** queue (replicated on a cluster; counts
//!   redeliveries in `x-delivery-count`), dead-lettering to `NAME.dlx`.
//! * `NAME.dlx` (direct exchange) → `NAME.dead` (durable queue): dead
//!   letters, each with its reason in the `concord-reason` header.
//! * `NAME.retry.<ms>`: one durable queue per retry delay, with that
//!   message TTL and dead-lettering back to `NAME`: a nacked item waits
//!   there, then returns. One queue per delay, so a long delay never holds
//!   up a short one.
//!
//! # Guarantees
//! * **Enqueue** publishes persistent messages (`message_id` = work id,
//!   `type` = kind) with the mandatory flag and returns once the broker
//!   confirmed every one (publisher confirms).
//! * **Receive** consumes with manual acknowledgement and a prefetch window
//!   (`prefetch`). A message is acknowledged only by [`Queue::ack`] (after
//!   the work is committed), or after its copy was confirmed in a retry or
//!   dead-letter queue. A lease that runs out (`lease_secs`) hands the
//!   message back to the broker (`basic.nack` with requeue); so does a
//!   closed channel or connection, for everything it held.
//! * **Attempts**: failed attempts travel in the `concord-attempts` header;
//!   handed-back deliveries in the broker's `x-delivery-count`. A message
//!   received past `max_attempts` goes to dead letters with the reason.
//! * **Applied once**: redeliveries happen (a worker that committed and
//!   died before acknowledging). Items whose work id is marked done in the
//!   store are acknowledged on receipt without being handed out, and the
//!   work's own commit marks its id in the same transaction
//!   ([`crate::store::Batch::processed_work`]), so a copy handed out
//!   concurrently fails that commit and changes nothing.
//! * **Reconnects**: a broken connection (the broker restarted) is
//!   reopened on the next call, with exponential backoff between refused
//!   attempts; the consumer re-subscribes and the publisher re-enables
//!   confirms. Leases held on the old connection are lost (their messages
//!   come back from the broker).
//! * **Metrics**: `depth` is the ready messages of `NAME` and its retry
//!   queues (not those held unacknowledged by consumers); `oldest_age` is
//!   approximate: the age of the newest message this instance received,
//!   while the queue is not empty (AMQP cannot look at the queue's head
//!   without taking it; the management plugin's metrics are exact).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use backon::{ExponentialBuilder, Retryable};
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind,
};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::*;

/// Failed attempts before this message (set when it is retried).
pub const ATTEMPTS_HEADER: &str = "concord-attempts";
/// Why the last attempt failed.
pub const LAST_ERROR_HEADER: &str = "concord-last-error";
/// Why a message was dead-lettered.
pub const REASON_HEADER: &str = "concord-reason";
/// When the item was first enqueued, in ms since the epoch.
pub const ENQUEUED_HEADER: &str = "concord-enqueued-ms";
/// The broker's count of hand-backs (quorum queues).
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// A [`Queue`] on RabbitMQ. Each `AmqpQueue` has its own connection, one
/// consuming channel and one publishing channel.
pub struct AmqpQueue {
    inner: Arc<Inner>,
    reaper: tokio::task::JoinHandle<()>,
}

struct Inner {
    settings: QueueSettings,
    store: Store,
    url: SecretString,
    /// The URL with its password masked, for messages.
    shown_url: String,
    connection: Mutex<Option<Arc<Connection>>>,
    publisher: Mutex<Option<Channel>>,
    consumer: Mutex<Option<Consumer>>,
    outstanding: std::sync::Mutex<HashMap<u64, Outstanding>>,
    next_lease: AtomicU64,
    newest_received_ms: std::sync::Mutex<Option<i64>>,
}

struct Outstanding {
    acker: Acker,
    deadline: Instant,
    work_id: String,
}

impl Drop for AmqpQueue {
    fn drop(&mut self) {
        self.reaper.abort();
    }
}

impl AmqpQueue {
    /// Connects and declares the topology. The store records done work.
    pub async fn connect(settings: QueueSettings, store: Store) -> Result<AmqpQueue, QueueError> {
        let url = settings.url.clone().ok_or_else(|| QueueError::Config {
            key: "url",
            reason: "kind = \"amqp\" needs the broker URL (amqp://… or amqps://…)".to_owned(),
        })?;
        let shown_url = crate::settings::redact_url(url.expose_secret());
        let inner = Arc::new(Inner {
            settings,
            store,
            url,
            shown_url,
            connection: Mutex::new(None),
            publisher: Mutex::new(None),
            consumer: Mutex::new(None),
            outstanding: std::sync::Mutex::new(HashMap::new()),
            next_lease: AtomicU64::new(1),
            newest_received_ms: std::sync::Mutex::new(None),
        });
        // Connects, declares, enables confirms: fails now if it cannot.
        inner.publisher().await?;
        let reaper = tokio::spawn(reap(Arc::downgrade(&inner)));
        Ok(AmqpQueue { inner, reaper })
    }

    /// Closes the connection without acknowledging anything: the broker
    /// hands every unacknowledged message to the other consumers, as when
    /// this process dies. A later call reconnects.
    pub async fn close(&self) {
        let conn = self.inner.connection.lock().await.take();
        *self.inner.publisher.lock().await = None;
        *self.inner.consumer.lock().await = None;
        self.inner.lock_outstanding().clear();
        if let Some(conn) = conn {
            let _ = conn.close(200, "concord closes".into()).await;
        }
    }

    /// Dead letters currently in `NAME.dead`, without taking them: their
    /// work ids and reasons (for operators and tests; at most `limit`).
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<(String, String)>, QueueError> {
        let channel = self.inner.channel().await?;
        let dead = format!("{}.dead", self.inner.settings.name);
        let mut out = Vec::new();
        let mut held = Vec::new();
        while out.len() < limit {
            let got = channel
                .basic_get(short(&dead)?, lapin::options::BasicGetOptions::default())
                .await
                .map_err(|e| self.inner.error("cannot read dead letters", e))?;
            let Some(msg) = got else { break };
            let id = msg
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            let reason = header_text(&msg.delivery.properties, REASON_HEADER).unwrap_or_default();
            out.push((id, reason));
            held.push(msg.delivery.acker);
        }
        // Closing the channel hands them all back.
        let _ = channel.close(200, "read".into()).await;
        drop(held);
        Ok(out)
    }
}

fn short(s: &str) -> Result<ShortString, QueueError> {
    ShortString::try_new(s).map_err(|_| QueueError::Broker {
        queue: s.get(..40).unwrap_or(s).to_owned(),
        broker: String::new(),
        message: "the name is longer than AMQP's 255 bytes".to_owned(),
        source: None,
    })
}

fn header_value<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().iter().find(|(k, _)| k.as_str() == name))
        .map(|(_, v)| v)
}

fn header_int(props: &BasicProperties, name: &str) -> Option<i64> {
    match header_value(props, name)? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

fn header_text(props: &BasicProperties, name: &str) -> Option<String> {
    match header_value(props, name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Hands back deliveries whose lease ran out.
async fn reap(inner: Weak<Inner>) {
    let every = {
        let Some(inner) = inner.upgrade() else { return };
        (inner.settings.lease() / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<Outstanding> = {
            let mut map = inner.lock_outstanding();
            let ids: Vec<u64> = map
                .iter()
                .filter(|(_, o)| o.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        for o in expired {
            tracing::warn!(
                message = "A lease ran out: the work goes back to the queue.",
                queue = %inner.settings.name,
                work_id = %o.work_id
            );
            let _ = o
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
    }
}

/// A delivery turned into work, or why it cannot be.
enum Received {
    Work(Lease, i64),
    /// Dead-letter with this reason.
    Poison(String),
}

impl Inner {
    fn lock_outstanding(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Outstanding>> {
        self.outstanding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn error(&self, what: &str, e: lapin::Error) -> QueueError {
        QueueError::Broker {
            queue: self.settings.name.clone(),
            broker: self.shown_url.clone(),
            message: format!("{what}: {e}"),
            source: Some(Box::new(e)),
        }
    }

    fn failure(&self, message: String) -> QueueError {
        QueueError::Broker {
            queue: self.settings.name.clone(),
            broker: self.shown_url.clone(),
            message,
            source: None,
        }
    }

    /// The open connection, or a new one (with backoff between refused
    /// attempts) when there is none or it broke.
    async fn connection(&self) -> Result<Arc<Connection>, QueueError> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref() {
            if conn.status().connected() {
                return Ok(conn.clone());
            }
            tracing::info!(
                message = "The broker connection is gone; reconnecting.",
                queue = %self.settings.name,
                broker = %self.shown_url
            );
        }
        *slot = None;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(6)
            .with_jitter();
        let conn = (|| self.connect_once())
            .retry(backoff)
            .notify(|e, wait| {
                tracing::warn!(
                    message = "Cannot connect to the broker; retrying.",
                    queue = %self.settings.name,
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64
                );
            })
            .await?;
        let conn = Arc::new(conn);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn connect_once(&self) -> Result<Connection, QueueError> {
        let props = ConnectionProperties::default().with_connection_name(LongString::from(
            format!("concord queue {}", self.settings.name),
        ));
        let timeout = Duration::from_millis(self.settings.connect_timeout_ms);
        match tokio::time::timeout(
            timeout,
            Connection::connect(self.url.expose_secret(), props),
        )
        .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.error("cannot connect", e)),
            Err(_) => Err(self.failure(format!(
                "cannot connect: no answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// A new channel with the topology declared.
    async fn channel(&self) -> Result<Channel, QueueError> {
        let conn = self.connection().await?;
        let channel = match conn.create_channel().await {
            Ok(ch) => ch,
            Err(_) => {
                // The connection died since it was last used.
                {
                    let mut slot = self.connection.lock().await;
                    if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                        *slot = None;
                    }
                }
                self.connection()
                    .await?
                    .create_channel()
                    .await
                    .map_err(|e| self.error("cannot open a channel", e))?
            }
        };
        self.declare(&channel).await?;
        Ok(channel)
    }

    fn retry_queue(&self, delay: Duration) -> String {
        format!("{}.retry.{}", self.settings.name, delay.as_millis())
    }

    async fn declare(&self, channel: &Channel) -> Result<(), QueueError> {
        let name = &self.settings.name;
        let dlx = format!("{name}.dlx");
        let dead = format!("{name}.dead");
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                short(&dlx)?,
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.error(&format!("cannot declare the exchange `{dlx}`"), e))?;
        channel
            .queue_declare(short(&dead)?, durable, FieldTable::default())
            .await
            .map_err(|e| self.error(&format!("cannot declare the queue `{dead}`"), e))?;
        channel
            .queue_bind(
                short(&dead)?,
                short(&dlx)?,
                short(name)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.error(&format!("cannot bind `{dead}`"), e))?;
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dlx.as_str().into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(name.as_str().into()),
        );
        channel
            .queue_declare(short(name)?, durable, args)
            .await
            .map_err(|e| self.error(&format!("cannot declare the queue `{name}`"), e))?;
        let delays: BTreeSet<Duration> = (1..self.settings.max_attempts)
            .map(|a| self.settings.retry_delay(a))
            .collect();
        for delay in delays {
            let retry = self.retry_queue(delay);
            let mut args = FieldTable::default();
            let ttl = i32::try_from(delay.as_millis()).unwrap_or(i32::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl));
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(name.as_str().into()),
            );
            channel
                .queue_declare(short(&retry)?, durable, args)
                .await
                .map_err(|e| self.error(&format!("cannot declare the queue `{retry}`"), e))?;
        }
        Ok(())
    }

    /// The publishing channel (confirms on), opened when there is none.
    async fn publisher(&self) -> Result<Channel, QueueError> {
        let mut slot = self.publisher.lock().await;
        if let Some(ch) = slot.as_ref()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        *slot = None;
        let ch = self.channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.error("cannot enable publisher confirms", e))?;
        *slot = Some(ch.clone());
        Ok(ch)
    }

    /// Publishes persistent messages and waits for the broker to confirm
    /// every one. On any failure the publisher is reopened next time.
    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        messages: Vec<(Vec<u8>, BasicProperties)>,
    ) -> Result<(), QueueError> {
        let result = self.publish_once(exchange, routing_key, messages).await;
        if result.is_err() {
            *self.publisher.lock().await = None;
        }
        result
    }

    async fn publish_once(
        &self,
        exchange: &str,
        routing_key: &str,
        messages: Vec<(Vec<u8>, BasicProperties)>,
    ) -> Result<(), QueueError> {
        let channel = self.publisher().await?;
        let what = format!("cannot publish to `{routing_key}`");
        let mut confirms = Vec::with_capacity(messages.len());
        for (body, props) in messages {
            let confirm = channel
                .basic_publish(
                    short(exchange)?,
                    short(routing_key)?,
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    props.with_delivery_mode(2),
                )
                .await
                .map_err(|e| self.error(&what, e))?;
            confirms.push(confirm);
        }
        let deadline = Instant::now() + Duration::from_millis(self.settings.confirm_timeout_ms);
        for confirm in confirms {
            match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => {}
                Ok(Ok(Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)))) => {
                    return Err(self.failure(format!(
                        "{what}: unroutable ({} {}): is the queue deleted?",
                        r.reply_code, r.reply_text
                    )));
                }
                Ok(Ok(Confirmation::Nack(None))) => {
                    return Err(self.failure(format!("{what}: the broker did not store it")));
                }
                Ok(Ok(Confirmation::NotRequested)) => {
                    return Err(self.failure(format!("{what}: publisher confirms are off")));
                }
                Ok(Err(e)) => return Err(self.error(&what, e)),
                Err(_) => {
                    return Err(self.failure(format!(
                        "{what}: not confirmed within {} ms",
                        self.settings.confirm_timeout_ms
                    )));
                }
            }
        }
        Ok(())
    }

    fn properties(item: &WorkItem, enqueued_ms: i64) -> Result<BasicProperties, QueueError> {
        let mut headers = FieldTable::default();
        headers.insert(ENQUEUED_HEADER.into(), AMQPValue::LongLongInt(enqueued_ms));
        Ok(BasicProperties::default()
            .with_message_id(short(&item.work_id)?)
            .with_type(short(&item.kind)?)
            .with_content_type("application/json".into())
            .with_timestamp(u64::try_from(enqueued_ms / 1000).unwrap_or(0))
            .with_headers(headers))
    }

    /// A consuming channel with prefetch, subscribed to the queue.
    async fn start_consuming(&self) -> Result<Consumer, QueueError> {
        let channel = self.channel().await?;
        channel
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| self.error("cannot set the prefetch window", e))?;
        channel
            .basic_consume(
                short(&self.settings.name)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.error("cannot consume", e))
    }

    fn accept(&self, d: &lapin::message::Delivery) -> Received {
        let props = &d.properties;
        let Some(work_id) = props.message_id().as_ref().map(|s| s.as_str().to_owned()) else {
            return Received::Poison("the message has no message_id (work id)".to_owned());
        };
        let payload: Value = match serde_json::from_slice(&d.data) {
            Ok(v) => v,
            Err(e) => return Received::Poison(format!("the body is not JSON: {e}")),
        };
        let kind = props
            .kind()
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        let failed = header_int(props, ATTEMPTS_HEADER).unwrap_or(0).max(0);
        let handed_back = header_int(props, DELIVERY_COUNT_HEADER).unwrap_or(0).max(0);
        let attempt = u32::try_from(failed + handed_back + 1).unwrap_or(u32::MAX);
        let max = self.settings.max_attempts;
        if attempt > max {
            let mut reason = format!(
                "handed back {handed_back} times after {failed} failed attempts ({max} allowed): the worker stopped, hung or took longer than the lease"
            );
            if let Some(e) = header_text(props, LAST_ERROR_HEADER) {
                reason.push_str(&format!("; the last failure: {e}"));
            }
            return Received::Poison(reason);
        }
        let enqueued_ms = header_int(props, ENQUEUED_HEADER).unwrap_or_else(crate::store::now_ms);
        let lease_id = self.next_lease.fetch_add(1, Ordering::Relaxed);
        Received::Work(
            Lease {
                item: WorkItem {
                    work_id,
                    kind,
                    payload,
                },
                attempt,
                enqueued_at: time_of_ms(enqueued_ms),
                last_error: header_text(props, LAST_ERROR_HEADER),
                handle: Handle::Amqp { lease_id },
            },
            enqueued_ms,
        )
    }

    /// Publishes a copy of a message to dead letters with `reason`.
    async fn publish_dead(
        &self,
        body: Vec<u8>,
        props: BasicProperties,
        reason: &str,
    ) -> Result<(), QueueError> {
        let mut headers = props.headers().clone().unwrap_or_default();
        headers.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        let dlx = format!("{}.dlx", self.settings.name);
        self.publish(
            &dlx,
            &self.settings.name,
            vec![(body, props.with_headers(headers))],
        )
        .await
    }

    fn take(&self, lease: &Lease) -> Result<Outstanding, QueueError> {
        let lost = || QueueError::LeaseLost {
            work_id: lease.item.work_id.clone(),
        };
        let Handle::Amqp { lease_id } = lease.handle else {
            return Err(lost());
        };
        self.lock_outstanding().remove(&lease_id).ok_or_else(lost)
    }

    /// The body and properties of a leased item, for its copy.
    fn copy_of(&self, lease: &Lease) -> Result<(Vec<u8>, BasicProperties), QueueError> {
        let body = serde_json::to_vec(&lease.item.payload)
            .map_err(|e| self.failure(format!("cannot encode work {}: {e}", lease.item.work_id)))?;
        let enqueued = lease
            .enqueued_at
            .map_or_else(crate::store::now_ms, |t| t.timestamp_millis());
        Ok((body, Inner::properties(&lease.item, enqueued)?))
    }
}

async fn ack_or_lost(acker: &Acker, work_id: &str) -> Result<(), QueueError> {
    match acker.ack(BasicAckOptions::default()).await {
        Ok(true) => Ok(()),
        _ => Err(QueueError::LeaseLost {
            work_id: work_id.to_owned(),
        }),
    }
}

#[async_trait]
impl Queue for AmqpQueue {
    fn name(&self) -> &str {
        &self.inner.settings.name
    }

    async fn enqueue_many(&self, items: Vec<WorkItem>) -> Result<Vec<Enqueued>, QueueError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let now = crate::store::now_ms();
        let mut messages = Vec::with_capacity(items.len());
        for item in &items {
            let body = serde_json::to_vec(&item.payload).map_err(|e| {
                self.inner
                    .failure(format!("cannot encode work {}: {e}", item.work_id))
            })?;
            messages.push((body, Inner::properties(item, now)?));
        }
        self.inner
            .publish("", &self.inner.settings.name, messages)
            .await?;
        Ok(vec![Enqueued::Stored; items.len()])
    }

    async fn receive(&self, max: usize) -> Result<Vec<Lease>, QueueError> {
        let inner = &self.inner;
        let deadline = Instant::now() + Duration::from_millis(inner.settings.receive_wait_ms);
        let lease = inner.settings.lease();
        let mut got: Vec<(Lease, Acker, i64)> = Vec::new();
        let mut poison = Vec::new();
        {
            let mut slot = inner.consumer.lock().await;
            while got.len() < max.max(1) {
                if slot.is_none() {
                    *slot = Some(inner.start_consuming().await?);
                }
                let Some(consumer) = slot.as_mut() else { break };
                let next = if got.is_empty() && poison.is_empty() {
                    match tokio::time::timeout_at(deadline, consumer.next()).await {
                        Err(_) => break,
                        Ok(next) => next,
                    }
                } else {
                    match consumer.next().now_or_never() {
                        None => break,
                        Some(next) => next,
                    }
                };
                match next {
                    Some(Ok(d)) => match inner.accept(&d) {
                        Received::Work(lease, enqueued_ms) => {
                            got.push((lease, d.acker, enqueued_ms));
                        }
                        Received::Poison(reason) => poison.push((d, reason)),
                    },
                    broken => {
                        // The channel or connection is gone, and with it
                        // everything it held: the broker delivers it again.
                        *slot = None;
                        inner.lock_outstanding().clear();
                        got.clear();
                        poison.clear();
                        if let Some(Err(e)) = broken {
                            tracing::warn!(
                                message = "Consuming stopped; reconnecting.",
                                queue = %inner.settings.name,
                                error = %e
                            );
                        }
                        if Instant::now() >= deadline {
                            return Err(inner.failure(
                                "the consumer was cut off and could not resume in time".to_owned(),
                            ));
                        }
                    }
                }
            }
        }
        for (d, reason) in poison {
            tracing::warn!(
                message = "Work goes to dead letters.",
                queue = %inner.settings.name,
                message_id = ?d.properties.message_id(),
                %reason
            );
            inner
                .publish_dead(d.data.clone(), d.properties.clone(), &reason)
                .await?;
            let _ = d.acker.ack(BasicAckOptions::default()).await;
        }
        if got.is_empty() {
            return Ok(Vec::new());
        }
        // Done already: acknowledge without handing out.
        let ids: Vec<&str> = got
            .iter()
            .map(|(l, _, _)| l.item.work_id.as_str())
            .collect();
        let done: std::collections::HashSet<String> = inner
            .store
            .work_done_among(&ids)
            .await?
            .into_iter()
            .collect();
        let mut out = Vec::with_capacity(got.len());
        let deadline = Instant::now() + lease;
        let mut outstanding = Vec::new();
        for (l, acker, enqueued_ms) in got {
            if done.contains(&l.item.work_id) {
                tracing::debug!(
                    message = "Dropped a delivery of work done already.",
                    queue = %inner.settings.name,
                    work_id = %l.item.work_id
                );
                let _ = acker.ack(BasicAckOptions::default()).await;
                continue;
            }
            *inner
                .newest_received_ms
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(enqueued_ms);
            let Handle::Amqp { lease_id } = l.handle else {
                continue;
            };
            outstanding.push((
                lease_id,
                Outstanding {
                    acker,
                    deadline,
                    work_id: l.item.work_id.clone(),
                },
            ));
            out.push(l);
        }
        inner.lock_outstanding().extend(outstanding);
        Ok(out)
    }

    async fn ack_many(&self, leases: &[Lease]) -> Result<usize, QueueError> {
        let mut held = 0;
        for lease in leases {
            let Ok(o) = self.inner.take(lease) else {
                continue;
            };
            if ack_or_lost(&o.acker, &o.work_id).await.is_ok() {
                held += 1;
            }
        }
        Ok(held)
    }

    async fn nack(&self, lease: &Lease, error: &str) -> Result<Nacked, QueueError> {
        let o = self.inner.take(lease)?;
        let max = self.inner.settings.max_attempts;
        let (body, props) = self.inner.copy_of(lease)?;
        let outcome = if lease.attempt >= max {
            let reason = format!(
                "failed {} of {max} attempts; the last: {error}",
                lease.attempt
            );
            self.inner
                .publish_dead(body, props, &reason)
                .await
                .map(|()| Nacked::Dead)
        } else {
            let after = self.inner.settings.retry_delay(lease.attempt);
            let mut headers = props.headers().clone().unwrap_or_default();
            headers.insert(
                ATTEMPTS_HEADER.into(),
                AMQPValue::LongLongInt(i64::from(lease.attempt)),
            );
            headers.insert(
                LAST_ERROR_HEADER.into(),
                AMQPValue::LongString(LongString::from(error)),
            );
            let retry = self.inner.retry_queue(after);
            self.inner
                .publish("", &retry, vec![(body, props.with_headers(headers))])
                .await
                .map(|()| Nacked::Retry { after })
        };
        match outcome {
            Ok(n) => {
                // The copy is confirmed: the original may go. If this ack
                // is lost the original returns and the copy is a duplicate
                // that the done-marker absorbs.
                ack_or_lost(&o.acker, &o.work_id).await?;
                Ok(n)
            }
            Err(e) => {
                // No copy: hand the original back (it counts as an attempt).
                let _ = o
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                Err(e)
            }
        }
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<(), QueueError> {
        let o = self.inner.take(lease)?;
        let (body, props) = self.inner.copy_of(lease)?;
        match self.inner.publish_dead(body, props, reason).await {
            Ok(()) => ack_or_lost(&o.acker, &o.work_id).await,
            Err(e) => {
                let _ = o
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                Err(e)
            }
        }
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        let mut names = vec![self.inner.settings.name.clone()];
        let delays: BTreeSet<Duration> = (1..self.inner.settings.max_attempts)
            .map(|a| self.inner.settings.retry_delay(a))
            .collect();
        names.extend(delays.into_iter().map(|d| self.inner.retry_queue(d)));
        ready_counts(&self.inner, &names).await
    }

    async fn oldest_age(&self) -> Result<Option<Duration>, QueueError> {
        if self.depth().await? == 0 {
            return Ok(None);
        }
        let newest = *self
            .inner
            .newest_received_ms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(newest.map(age_since_ms))
    }

    async fn dead_count(&self) -> Result<u64, QueueError> {
        ready_counts(&self.inner, &[format!("{}.dead", self.inner.settings.name)]).await
    }
}

/// Ready messages in `queues` (passive declarations on a channel of
/// their own).
async fn ready_counts(inner: &Inner, queues: &[String]) -> Result<u64, QueueError> {
    let channel = inner.channel().await?;
    let mut total = 0;
    for q in queues {
        let declared = channel
            .queue_declare(
                short(q)?,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| inner.error(&format!("cannot read the depth of `{q}`"), e))?;
        total += u64::from(declared.message_count());
    }
    let _ = channel.close(200, "counted".into()).await;
    Ok(total)
}
