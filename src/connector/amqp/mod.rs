//! The `amqp` driver: RabbitMQ queues as sources, exchanges as sinks.
//!
//! # Pulling from a queue
//! A pull consumes the entity's queue on a channel of its own with manual
//! acknowledgement and a prefetch window. It gathers messages into a page
//! until the page holds `page_size` messages or `max_wait_ms` has passed
//! since the page began; a page that is still empty then ends the pull, so
//! a pull always ends once the queue is quiet and the sync engine can
//! commit. A page is never waited for beyond the prefetch window: the
//! messages of pages not yet answered count against it, a page ends when
//! it is used up, and a window already full gives an empty page at once
//! (nothing can arrive until the caller answers; the sync engine asks for
//! the next page while the last one commits). Asked again with nothing
//! answered, the pull ends.
//!
//! Each page's [`Ack`](super::Ack) acknowledges its messages, so a message
//! leaves the queue only after the sync engine committed it:
//!
//! * `ack` acknowledges every message of the page;
//! * `nack(requeue = true)` hands the page's messages back to the queue;
//! * `nack(requeue = false, reason)` publishes each message to the
//!   dead-letter exchange with the reason in a `concord-reason` header,
//!   waits for the broker to confirm it, and only then acknowledges the
//!   original;
//! * a page never answered keeps its messages unacknowledged until its
//!   channel closes (the pull and all its pages are dropped, or the
//!   connection breaks), and the broker then delivers them again.
//!
//! The cursor has no meaning for a queue: it only moves forward with the
//! records' `updated_at` when the definition names one.
//!
//! # Messages that cannot be read
//! A message whose body is not JSON, not the configured shape, or lacks
//! the record id is neither lost nor left to block the queue: during the
//! pull it is published to the dead-letter exchange with the reason in a
//! `concord-reason` header and its origin in `concord-source-queue` (with
//! publisher confirms and the mandatory flag, so a dead-letter exchange
//! that routes nowhere fails the pull instead of dropping the message).
//! The page then carries a [`Notice::SetAside`](super::Notice) for it and
//! acknowledges the original with the page. If the page is handed back the
//! dead-lettered original is acknowledged all the same; if the page is
//! never answered the original is delivered and dead-lettered again (a
//! duplicate dead letter, never a lost one).
//!
//! # Pushing to an exchange
//! A push publishes each change as a persistent JSON message whose
//! `message_id` is the change's idempotency key, with the mandatory flag
//! and publisher confirms, and waits for every confirmation:
//!
//! * confirmed and routed → `Created` (or `Updated` when the change named
//!   the record's id);
//! * returned as unroutable (no queue bound for its routing key) →
//!   `Rejected`: retrying cannot help until someone binds a queue, and the
//!   operator replays the record after fixing the topology;
//! * nacked by the broker (it could not store the message), unconfirmed
//!   within `confirm_timeout_ms`, or cut off by a broken connection →
//!   `RetryLater`: the message may or may not have been stored;
//! * a routing key or id the record cannot give → `Rejected`.
//!
//! A broker cannot recognise a repeated message: idempotency for a queue
//! sink means every message carries its key as `message_id` (and the
//! record's id in a `concord-external-id` header), so consumers
//! de-duplicate. A push fails as a whole (`Err`) only when no message of
//! it is known to have been stored.
//!
//! # Connections
//! One connection per system instance, opened on first use. A call that
//! finds it closed or broken opens a new one, retrying refused or timed-out
//! connection attempts three times with exponential backoff; refused
//! credentials are not retried. Errors are classified: refused, reset or
//! timed-out connections are `Unavailable` or `Timeout`, `ACCESS_REFUSED`
//! and `NOT_ALLOWED` are `Auth`, a missing queue or exchange is `NotFound`,
//! a declaration that contradicts the broker's (`PRECONDITION_FAILED`) is
//! `Config`. The URL's password never appears in errors, logs or `Debug`.

pub mod definition;
mod sink;
mod source;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use secrecy::{ExposeSecret, SecretString};

use super::{
    Capabilities, Change, Connector, ConnectorError, Cursor, Definition, Driver,
    EntityCapabilities, ErrorKind, Instance, PageStream, PushOutcome,
};
use definition::{DEAD_QUEUE_SUFFIX, EntitySettings, Settings, SinkSettings, SourceSettings};

pub static DRIVER: Driver = Driver {
    name: "amqp",
    summary: "RabbitMQ (AMQP 0-9-1): queues as sources with acknowledgement after commit, exchanges as sinks with publisher confirms",
    check: definition::check,
    open,
};

/// Header naming why a message was dead-lettered.
pub const REASON_HEADER: &str = "concord-reason";
/// Header naming the queue a dead-lettered message came from.
pub const SOURCE_QUEUE_HEADER: &str = "concord-source-queue";
/// Header carrying a pushed record's id.
pub const EXTERNAL_ID_HEADER: &str = "concord-external-id";

fn open(def: &Definition, instance: &Instance) -> Result<Arc<dyn Connector>, ConnectorError> {
    let settings = definition::settings(&def.source).map_err(|errors| {
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        ConnectorError::config(&instance.name, all.join("; "))
    })?;
    Ok(Arc::new(AmqpConnector::new(
        &instance.name,
        settings,
        instance,
    )?))
}

/// A RabbitMQ broker.
pub struct AmqpConnector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AmqpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConnector")
            .field("name", &self.inner.name)
            .field("url", &self.inner.shown_url)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) name: String,
    url: SecretString,
    /// The URL with its password masked, for messages.
    shown_url: String,
    settings: Settings,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl AmqpConnector {
    /// A connector over a checked definition's settings; the URL's `${…}`
    /// (or the instance's `base_url`) is filled from `instance`.
    pub fn new(
        name: &str,
        settings: Settings,
        instance: &Instance,
    ) -> Result<AmqpConnector, ConnectorError> {
        let template = instance.base_url.as_deref().unwrap_or(&settings.url);
        let url = instance.expand(template)?;
        let parsed = url::Url::parse(url.expose_secret()).map_err(|e| {
            ConnectorError::config(name, format!("the broker URL is not valid: {e}"))
        })?;
        if !matches!(parsed.scheme(), "amqp" | "amqps") {
            return Err(ConnectorError::config(
                name,
                format!(
                    "the broker URL must start with amqp:// or amqps://, not {}://",
                    parsed.scheme()
                ),
            ));
        }
        Ok(AmqpConnector {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                shown_url: mask(&parsed),
                url,
                settings,
                connection: tokio::sync::Mutex::new(None),
            }),
        })
    }
}

/// The URL with its password replaced by `***`.
fn mask(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

impl Inner {
    fn entity(&self, entity: &str) -> Result<&EntitySettings, ConnectorError> {
        self.settings.entities.get(entity).ok_or_else(|| {
            let known: Vec<&str> = self.settings.entities.keys().map(String::as_str).collect();
            ConnectorError::config(
                &self.name,
                format!("no entity `{entity}` in this system; it has {known:?}"),
            )
        })
    }

    fn error(&self, what: &str, e: &lapin::Error) -> ConnectorError {
        classify(&self.name, what, e)
    }

    /// The open connection, or a new one when there is none or it broke.
    async fn connection(&self) -> Result<Arc<Connection>, ConnectorError> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref() {
            if conn.status().connected() {
                return Ok(conn.clone());
            }
            tracing::info!(
                message = "The broker connection is gone; reconnecting.",
                system = %self.name,
                broker = %self.shown_url
            );
        }
        *slot = None;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(3)
            .with_jitter();
        let conn = (|| self.connect_once())
            .retry(backoff)
            .when(ConnectorError::is_retryable)
            .notify(|e, wait| {
                tracing::warn!(
                    message = "Cannot connect to the broker; retrying.",
                    system = %self.name,
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64
                );
            })
            .await?;
        let conn = Arc::new(conn);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn connect_once(&self) -> Result<Connection, ConnectorError> {
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("concord {}", self.name)));
        let timeout = Duration::from_millis(self.settings.connect_timeout_ms);
        let what = format!("cannot connect to {}", self.shown_url);
        match tokio::time::timeout(
            timeout,
            Connection::connect(self.url.expose_secret(), props),
        )
        .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.error(&what, &e)),
            Err(_) => Err(ConnectorError::new(
                ErrorKind::Timeout,
                &self.name,
                format!("{what}: no answer within {} ms", timeout.as_millis()),
            )),
        }
    }

    /// Forgets `conn` if it is still the current connection.
    async fn forget(&self, conn: &Arc<Connection>) {
        let mut slot = self.connection.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    /// A new channel, on a new connection if the current one broke.
    pub(crate) async fn channel(&self) -> Result<Channel, ConnectorError> {
        let conn = self.connection().await?;
        match conn.create_channel().await {
            Ok(ch) => Ok(ch),
            Err(_) if !conn.status().connected() || conn.status().errored() => {
                // The connection died since it was last used.
                self.forget(&conn).await;
                let conn = self.connection().await?;
                conn.create_channel()
                    .await
                    .map_err(|e| self.error("cannot open a channel", &e))
            }
            Err(e) => Err(self.error("cannot open a channel", &e)),
        }
    }

    /// Declares a source's queue and dead-letter topology, or checks that
    /// they exist when the definition says `declare = false`.
    pub(crate) async fn prepare_source(
        &self,
        channel: &Channel,
        source: &SourceSettings,
        declare: bool,
    ) -> Result<(), ConnectorError> {
        if declare {
            let dead_queue = format!("{}{DEAD_QUEUE_SUFFIX}", source.queue);
            channel
                .exchange_declare(
                    short(&source.dead_letter_exchange)?,
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    self.error(
                        &format!(
                            "cannot declare the dead-letter exchange `{}`",
                            source.dead_letter_exchange
                        ),
                        &e,
                    )
                })?;
            channel
                .queue_declare(short(&dead_queue)?, durable(), FieldTable::default())
                .await
                .map_err(|e| self.error(&format!("cannot declare the queue `{dead_queue}`"), &e))?;
            channel
                .queue_bind(
                    short(&dead_queue)?,
                    short(&source.dead_letter_exchange)?,
                    short(&source.dead_letter_routing_key)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.error(&format!("cannot bind `{dead_queue}`"), &e))?;
            let mut args = FieldTable::default();
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(source.dead_letter_exchange.as_str().into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(source.dead_letter_routing_key.as_str().into()),
            );
            channel
                .queue_declare(short(&source.queue)?, durable(), args)
                .await
                .map_err(|e| {
                    self.error(&format!("cannot declare the queue `{}`", source.queue), &e)
                })?;
        } else {
            channel
                .queue_declare(
                    short(&source.queue)?,
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    self.error(
                        &format!(
                            "the queue `{}` is not available (declare = false)",
                            source.queue
                        ),
                        &e,
                    )
                })?;
        }
        Ok(())
    }

    /// Declares a sink's exchange, or checks it exists (`declare = false`).
    pub(crate) async fn prepare_sink(
        &self,
        channel: &Channel,
        sink: &SinkSettings,
        declare: bool,
    ) -> Result<(), ConnectorError> {
        if sink.exchange.is_empty() {
            return Ok(());
        }
        let options = ExchangeDeclareOptions {
            durable: true,
            passive: !declare,
            ..Default::default()
        };
        channel
            .exchange_declare(
                short(&sink.exchange)?,
                sink.exchange_type.clone(),
                options,
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                let what = if declare {
                    format!("cannot declare the exchange `{}`", sink.exchange)
                } else {
                    format!(
                        "the exchange `{}` is not available (declare = false)",
                        sink.exchange
                    )
                };
                self.error(&what, &e)
            })
    }

    /// Checks the dead-letter exchange of an existing queue exists.
    async fn check_dead_letter_exchange(
        &self,
        source: &SourceSettings,
    ) -> Result<(), ConnectorError> {
        let channel = self.channel().await?;
        channel
            .exchange_declare(
                short(&source.dead_letter_exchange)?,
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                self.error(
                    &format!(
                        "the dead-letter exchange `{}` is not available",
                        source.dead_letter_exchange
                    ),
                    &e,
                )
            })
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// A name checked to fit AMQP's 255 bytes (definitions are checked; this
/// guards names built at run time).
pub(crate) fn short(s: &str) -> Result<ShortString, ConnectorError> {
    ShortString::try_new(s).map_err(|_| {
        ConnectorError::invalid_data(
            "amqp",
            format!(
                "`{}…` is longer than AMQP's 255 bytes",
                s.get(..40).unwrap_or(s)
            ),
        )
    })
}

/// Classifies a broker or connection error.
pub(crate) fn classify(system: &str, what: &str, e: &lapin::Error) -> ConnectorError {
    use lapin::ErrorKind as L;
    let kind = match e.kind() {
        L::ProtocolError(amqp) => match amqp.get_id() {
            // ACCESS_REFUSED, NOT_ALLOWED (no access to the virtual host)
            403 | 530 => ErrorKind::Auth,
            404 => ErrorKind::NotFound,
            // RESOURCE_LOCKED: an exclusive queue another connection holds.
            405 => ErrorKind::Conflict,
            // PRECONDITION_FAILED: declared differently; INVALID_PATH: vhost.
            406 | 402 => ErrorKind::Config,
            // CONTENT_TOO_LARGE
            311 => ErrorKind::InvalidData,
            _ => ErrorKind::Unavailable,
        },
        L::AuthProviderError(_) => ErrorKind::Auth,
        L::InvalidProtocolVersion(_) => ErrorKind::Config,
        _ => ErrorKind::Unavailable,
    };
    let detail = match e.kind() {
        L::ProtocolError(amqp) => format!("{}", amqp.get_message()),
        L::IOError(io) => io.to_string(),
        L::InvalidProtocolVersion(v) => {
            format!("the server speaks {v:?}, not AMQP 0-9-1: is this a RabbitMQ port?")
        }
        _ => e.to_string(),
    };
    ConnectorError::new(kind, system, format!("{what}: {detail}")).with_source(e.clone())
}

#[async_trait]
impl Connector for AmqpConnector {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        for (name, e) in &self.inner.settings.entities {
            caps.entities.insert(
                name.clone(),
                EntityCapabilities {
                    pull: e.source.is_some(),
                    push: e.sink.is_some(),
                    ..EntityCapabilities::default()
                },
            );
        }
        caps
    }

    /// Connects, and declares (or, with `declare = false`, checks) every
    /// entity's queues and exchanges.
    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        for e in self.inner.settings.entities.values() {
            if let Some(source) = &e.source {
                let channel = self.inner.channel().await?;
                self.inner
                    .prepare_source(&channel, source, e.declare)
                    .await?;
                if !e.declare {
                    self.inner.check_dead_letter_exchange(source).await?;
                }
            }
            if let Some(sink) = &e.sink {
                let channel = self.inner.channel().await?;
                self.inner.prepare_sink(&channel, sink, e.declare).await?;
            }
        }
        if self.inner.settings.entities.is_empty() {
            self.inner.channel().await?;
        }
        Ok(())
    }

    fn pull<'a>(&'a self, entity: &'a str, cursor: Option<Cursor>) -> PageStream<'a> {
        source::pull(self.inner.clone(), entity, cursor)
    }

    async fn push(
        &self,
        entity: &str,
        changes: Vec<Change>,
    ) -> Result<Vec<PushOutcome>, ConnectorError> {
        sink::push(&self.inner, entity, changes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_masked() {
        let url = url::Url::parse("amqp://concord:s3cret@broker:5672/prod").unwrap();
        assert_eq!(mask(&url), "amqp://concord:***@broker:5672/prod");
        let url = url::Url::parse("amqps://broker/prod").unwrap();
        assert_eq!(mask(&url), "amqps://broker/prod");
    }

    #[test]
    fn open_fills_the_url_and_never_shows_the_password() {
        let source = crate::located::SourceFile {
            path: "connectors/bus.toml".into(),
            text: "name = \"bus\"\ndriver = \"amqp\"\nurl = \"amqp://concord:${pw}@broker/prod\"\n[entities.e]\nexchange = \"x\"\n".into(),
        };
        let settings = definition::settings(&source).unwrap();
        let inst = Instance::bare("bus_main").with_var("pw", "s3cret");
        let c = AmqpConnector::new("bus_main", settings.clone(), &inst).unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("concord:***@broker"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let err =
            AmqpConnector::new("bus_main", settings, &Instance::bare("bus_main")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("${pw}"), "{err}");
    }
}
