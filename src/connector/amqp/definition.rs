//! The `amqp` definition file: a RabbitMQ broker, its queues as sources
//! and its exchanges as sinks.
//!
//! ```toml
//! name = "erp_bus"
//! driver = "amqp"
//! url = "${amqp_url}"
//!
//! [entities.invoice]
//! queue = "erp.invoices"
//! dead_letter_exchange = "erp.dead"
//! id = "/id"
//! updated_at = "/updated_at"
//!
//! exchange = "concord.events"
//! routing_key = "invoice.{/status}"
//! ```

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use crate::connector::valid_name;
use crate::located::{LoadError, SourceFile};

/// Longest queue, exchange or routing key name AMQP carries.
pub const MAX_NAME: usize = 255;
/// Largest page a definition may ask for.
pub const MAX_PAGE_SIZE: usize = 10_000;
/// The queue concord declares beside a source queue for its dead letters.
pub const DEAD_QUEUE_SUFFIX: &str = ".dead";

/// An `amqp` system: one broker (one virtual host), several entities.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// The system's name (the file is `connectors/NAME.toml`).
    pub name: String,
    /// Always `amqp`.
    pub driver: String,
    /// What this system is, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// The broker, `amqp://user:password@host:5672/vhost` or `amqps://…`
    /// for TLS. Write the password (or the whole URL) as a `${…}`
    /// placeholder filled from the system instance or the environment: a
    /// password written here is refused. A system instance's `base_url`
    /// replaces it. Logs and errors show the URL with the password masked.
    pub url: Spanned<String>,
    /// How long connecting may take, in milliseconds (default 10,000).
    #[serde(default)]
    pub connect_timeout_ms: Option<Spanned<i64>>,
    /// How long a push waits for the broker to confirm its messages, in
    /// milliseconds (default 30,000); unconfirmed messages are retried.
    #[serde(default)]
    pub confirm_timeout_ms: Option<Spanned<i64>>,
    /// The entities, by name: each reads a queue, writes to an exchange,
    /// or both.
    pub entities: Spanned<BTreeMap<Spanned<String>, EntityConfig>>,
}

/// One entity: a queue to pull from, an exchange to push to, or both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityConfig {
    /// Declare what this entity uses (default `true`): the queue (durable,
    /// dead-lettering into `dead_letter_exchange`), the dead-letter
    /// exchange (`direct`) with a queue `QUEUE.dead` bound to it, and the
    /// exchange to push to. With `false` they must exist already, and a
    /// missing one is reported as not found.
    #[serde(default)]
    pub declare: Option<Spanned<bool>>,

    // -- source --
    /// The queue to consume. Messages are acknowledged only when the sync
    /// engine has committed the page holding them.
    #[serde(default)]
    pub queue: Option<Spanned<String>>,
    /// Where messages that cannot be read, or that the sync engine sets
    /// aside, are published (with the reason in a `concord-reason`
    /// header) before they leave the queue. Required with `queue`.
    #[serde(default)]
    pub dead_letter_exchange: Option<Spanned<String>>,
    /// The routing key of dead letters (default: the queue's name).
    #[serde(default)]
    pub dead_letter_routing_key: Option<Spanned<String>>,
    /// Messages per page (default 100, at most 10,000).
    #[serde(default)]
    pub page_size: Option<Spanned<i64>>,
    /// Messages the broker may send ahead of acknowledgements (default
    /// twice the page size, at least the page size, at most 65,535).
    #[serde(default)]
    pub prefetch: Option<Spanned<i64>>,
    /// How long a pull waits for a page to fill before yielding a shorter
    /// one, in milliseconds (default 1,000). A pull ends when no message
    /// arrives for this long, so the sync engine can commit.
    #[serde(default)]
    pub max_wait_ms: Option<Spanned<i64>>,
    /// What a message body holds: `record` (one JSON object, the default)
    /// or `array` (a JSON array of objects, one record each).
    #[serde(default)]
    pub body: Option<Body>,
    /// Where a record's id is: a JSON pointer into the record (`/id`,
    /// `/invoice/number`), or `message_id` for the AMQP message-id
    /// property. Required with `queue`. For pushes it says where the id
    /// of a pushed record is (default `message_id`: the change's
    /// idempotency key).
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    /// JSON pointer to the record's last-change time (RFC 3339); optional.
    #[serde(default)]
    pub updated_at: Option<Spanned<String>>,

    // -- sink --
    /// The exchange to publish pushed records to, with publisher confirms.
    #[serde(default)]
    pub exchange: Option<Spanned<String>>,
    /// The exchange's type when concord declares it: `topic` (default),
    /// `direct`, `fanout` or `headers`.
    #[serde(default)]
    pub exchange_type: Option<Spanned<String>>,
    /// The routing key of pushed records; `{/pointer}` inserts a field of
    /// the record (`invoice.{/status}`), `{{` and `}}` stand for braces.
    /// Default: the entity's name.
    #[serde(default)]
    pub routing_key: Option<Spanned<String>>,
    /// Persistent delivery (default `true`): messages survive a broker
    /// restart in durable queues.
    #[serde(default)]
    pub persistent: Option<Spanned<bool>>,
}

/// What a message body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// One JSON object per message.
    Record,
    /// A JSON array of objects per message.
    Array,
}

/// Where a record's id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    /// A JSON pointer into the record.
    Pointer(String),
    /// The AMQP `message_id` property (for pushes: the idempotency key).
    MessageId,
}

/// A queue to pull from.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_routing_key: String,
    pub page_size: usize,
    pub prefetch: u16,
    pub max_wait_ms: u64,
    pub body: Body,
    pub id: IdSource,
    pub updated_at: Option<String>,
}

/// An exchange to push to.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub exchange: String,
    pub exchange_type: lapin::ExchangeKind,
    pub routing_key: RoutingKey,
    pub persistent: bool,
    pub id: IdSource,
}

/// One entity after [`check`].
#[derive(Debug, Clone)]
pub struct EntitySettings {
    pub declare: bool,
    pub source: Option<SourceSettings>,
    pub sink: Option<SinkSettings>,
}

/// The definition with defaults applied, after [`check`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub connect_timeout_ms: u64,
    pub confirm_timeout_ms: u64,
    pub entities: BTreeMap<String, EntitySettings>,
}

/// A routing key template: text and `{/pointer}` fields of the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingKey(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

impl RoutingKey {
    /// Parses `invoice.{/status}`.
    pub fn parse(text: &str) -> Result<RoutingKey, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("{{") {
                lit.push('{');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("}}") {
                lit.push('}');
                rest = after;
            } else if c == '{' {
                let end = rest
                    .find('}')
                    .ok_or_else(|| "unclosed `{` (write `{{` for a brace)".to_owned())?;
                let pointer = &rest[1..end];
                check_pointer(pointer).map_err(|e| format!("`{{{pointer}}}`: {e}"))?;
                if pointer.is_empty() {
                    return Err("`{}` names no field: write `{/field}`".into());
                }
                if !lit.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut lit)));
                }
                parts.push(Part::Field(pointer.to_owned()));
                rest = &rest[end + 1..];
            } else if c == '}' {
                return Err("a `}` without its `{` (write `}}` for a brace)".into());
            } else {
                lit.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(RoutingKey(parts))
    }

    /// The routing key of `record`, or why there is none.
    pub fn render(&self, record: &Value) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(p) => match record.pointer(p) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
                    Some(Value::Null) | None => {
                        return Err(format!(
                            "the routing key needs `{p}`, which the record lacks"
                        ));
                    }
                    Some(_) => {
                        return Err(format!(
                            "the routing key needs `{p}` as text, but the record has an object or array there"
                        ));
                    }
                },
            }
        }
        if out.len() > MAX_NAME {
            return Err(format!(
                "the routing key is {} bytes long; AMQP allows {MAX_NAME}",
                out.len()
            ));
        }
        Ok(out)
    }
}

/// Whether `p` is a JSON pointer (RFC 6901): empty, or `/`-separated with
/// `~` only in `~0` and `~1`.
pub fn check_pointer(p: &str) -> Result<(), String> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err(format!(
            "`{p}` is not a JSON pointer: it must start with `/`"
        ));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "`{p}` is not a JSON pointer: `~` must be followed by 0 or 1"
            ));
        }
    }
    Ok(())
}

/// Whether a URL template holds a password written out rather than as a
/// `${…}` placeholder.
fn literal_password(url: &str) -> bool {
    let mut probe = String::new();
    let mut rest = url;
    while let Some(at) = rest.find("${") {
        probe.push_str(&rest[..at]);
        match rest[at..].find('}') {
            Some(end) => {
                probe.push_str("PLACEHOLDER");
                rest = &rest[at + end + 1..];
            }
            None => {
                rest = &rest[at..];
                break;
            }
        }
    }
    probe.push_str(rest);
    match url::Url::parse(&probe) {
        Ok(u) => u.password().is_some_and(|p| !p.contains("PLACEHOLDER")),
        Err(_) => false,
    }
}

/// Reads and validates a definition without any I/O.
pub fn check(source: &SourceFile) -> Result<(), Vec<LoadError>> {
    settings(source).map(|_| ())
}

/// [`check`], returning the settings.
pub fn settings(source: &SourceFile) -> Result<Settings, Vec<LoadError>> {
    let config: AmqpConfig = source.parse().map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut err = |span: Range<usize>, msg: String| errors.push(source.error(Some(span), msg));

    let url = config.url.get_ref();
    if url.trim().is_empty() {
        err(
            config.url.span(),
            "`url` is empty: write `url = \"${amqp_url}\"`".into(),
        );
    } else if !url.contains("${") {
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "amqp" | "amqps") => {}
            Ok(u) => err(
                config.url.span(),
                format!(
                    "`url` must start with amqp:// or amqps://, not {}://",
                    u.scheme()
                ),
            ),
            Err(e) => err(config.url.span(), format!("`url` is not a valid URL: {e}")),
        }
    }
    if literal_password(url) {
        err(
            config.url.span(),
            "`url` holds a password: write it as a placeholder, `amqp://user:${amqp_password}@host/vhost` or `${amqp_url}`, and set the value in the system instance or the environment".into(),
        );
    }
    let millis = |field: &Option<Spanned<i64>>,
                  name: &str,
                  default: u64,
                  max: i64,
                  err: &mut dyn FnMut(Range<usize>, String)| match field {
        None => default,
        Some(v) if (1..=max).contains(v.get_ref()) => *v.get_ref() as u64,
        Some(v) => {
            err(
                v.span(),
                format!("`{name}` must be 1 to {max}, not {}", v.get_ref()),
            );
            default
        }
    };
    let connect_timeout_ms = millis(
        &config.connect_timeout_ms,
        "connect_timeout_ms",
        10_000,
        300_000,
        &mut err,
    );
    let confirm_timeout_ms = millis(
        &config.confirm_timeout_ms,
        "confirm_timeout_ms",
        30_000,
        600_000,
        &mut err,
    );

    let mut entities = BTreeMap::new();
    if config.entities.get_ref().is_empty() {
        err(
            config.entities.span(),
            "no entities: add `[entities.NAME]` with a `queue` or an `exchange`".into(),
        );
    }
    for (name, e) in config.entities.get_ref() {
        if !valid_name(name.get_ref()) {
            err(
                name.span(),
                format!(
                    "entity name `{}` must be 1-64 lowercase letters, digits, `_` or `-`",
                    name.get_ref()
                ),
            );
        }
        if let Some(entity) = entity_settings(name, e, &mut err) {
            entities.insert(name.get_ref().clone(), entity);
        }
    }
    if errors.is_empty() {
        Ok(Settings {
            url: config.url.into_inner(),
            connect_timeout_ms,
            confirm_timeout_ms,
            entities,
        })
    } else {
        Err(errors)
    }
}

fn amqp_name(
    field: &Spanned<String>,
    what: &str,
    max: usize,
    err: &mut dyn FnMut(Range<usize>, String),
) -> String {
    let v = field.get_ref();
    if v.is_empty() {
        err(field.span(), format!("`{what}` is empty"));
    } else if v.len() > max {
        err(
            field.span(),
            format!("`{what}` is {} bytes long; at most {max} fit", v.len()),
        );
    }
    v.clone()
}

fn entity_settings(
    name: &Spanned<String>,
    e: &EntityConfig,
    err: &mut dyn FnMut(Range<usize>, String),
) -> Option<EntitySettings> {
    let declare = e.declare.as_ref().is_none_or(|d| *d.get_ref());
    if e.queue.is_none() && e.exchange.is_none() {
        err(
            name.span(),
            format!(
                "entity `{}` has neither a `queue` to pull from nor an `exchange` to push to",
                name.get_ref()
            ),
        );
        return None;
    }
    let id = match &e.id {
        None => None,
        Some(id) if id.get_ref() == "message_id" => Some(IdSource::MessageId),
        Some(id) => match check_pointer(id.get_ref()) {
            Ok(()) if id.get_ref().is_empty() => {
                err(
                    id.span(),
                    "`id` is empty: write a JSON pointer such as `/id`, or `message_id`".into(),
                );
                None
            }
            Ok(()) => Some(IdSource::Pointer(id.get_ref().clone())),
            Err(msg) => {
                err(id.span(), format!("`id`: {msg}, or `message_id`"));
                None
            }
        },
    };

    let source = match &e.queue {
        None => {
            let only = [
                (
                    "dead_letter_exchange",
                    e.dead_letter_exchange.as_ref().map(Spanned::span),
                ),
                (
                    "dead_letter_routing_key",
                    e.dead_letter_routing_key.as_ref().map(Spanned::span),
                ),
                ("page_size", e.page_size.as_ref().map(Spanned::span)),
                ("prefetch", e.prefetch.as_ref().map(Spanned::span)),
                ("max_wait_ms", e.max_wait_ms.as_ref().map(Spanned::span)),
                ("updated_at", e.updated_at.as_ref().map(Spanned::span)),
            ];
            for (field, span) in only {
                if let Some(span) = span {
                    err(
                        span,
                        format!(
                            "`{field}` is for pulling from a `queue`, which this entity has not"
                        ),
                    );
                }
            }
            if e.body.is_some() {
                err(
                    name.span(),
                    "`body` is for pulling from a `queue`, which this entity has not".into(),
                );
            }
            None
        }
        Some(queue) => {
            let max = if declare {
                MAX_NAME - DEAD_QUEUE_SUFFIX.len()
            } else {
                MAX_NAME
            };
            let queue_name = amqp_name(queue, "queue", max, err);
            let dlx = match &e.dead_letter_exchange {
                Some(x) => amqp_name(x, "dead_letter_exchange", MAX_NAME, err),
                None => {
                    err(
                        queue.span(),
                        "a queue needs `dead_letter_exchange`: messages that cannot be read are published there with the reason, so they are neither lost nor block the queue".into(),
                    );
                    String::new()
                }
            };
            let dlrk = match &e.dead_letter_routing_key {
                Some(k) if k.get_ref().len() > MAX_NAME => {
                    amqp_name(k, "dead_letter_routing_key", MAX_NAME, err)
                }
                Some(k) => k.get_ref().clone(),
                None => queue_name.clone(),
            };
            let page_size = match &e.page_size {
                None => 100,
                Some(n) if (1..=MAX_PAGE_SIZE as i64).contains(n.get_ref()) => {
                    *n.get_ref() as usize
                }
                Some(n) => {
                    err(
                        n.span(),
                        format!(
                            "`page_size` must be 1 to {MAX_PAGE_SIZE}, not {}",
                            n.get_ref()
                        ),
                    );
                    100
                }
            };
            let prefetch = match &e.prefetch {
                None => (page_size * 2).min(u16::MAX as usize) as u16,
                Some(n) if (page_size as i64..=u16::MAX as i64).contains(n.get_ref()) => {
                    *n.get_ref() as u16
                }
                Some(n) => {
                    err(
                        n.span(),
                        format!(
                            "`prefetch` must be at least the page size ({page_size}) and at most {}, not {}",
                            u16::MAX,
                            n.get_ref()
                        ),
                    );
                    page_size as u16
                }
            };
            let max_wait_ms = match &e.max_wait_ms {
                None => 1_000,
                Some(n) if (1..=600_000).contains(n.get_ref()) => *n.get_ref() as u64,
                Some(n) => {
                    err(
                        n.span(),
                        format!("`max_wait_ms` must be 1 to 600000, not {}", n.get_ref()),
                    );
                    1_000
                }
            };
            let body = e.body.unwrap_or(Body::Record);
            let updated_at = e
                .updated_at
                .as_ref()
                .and_then(|p| match check_pointer(p.get_ref()) {
                    Ok(()) => Some(p.get_ref().clone()),
                    Err(msg) => {
                        err(p.span(), format!("`updated_at`: {msg}"));
                        None
                    }
                });
            let source_id = match (&id, &e.id) {
                (Some(IdSource::MessageId), Some(span)) if body == Body::Array => {
                    err(
                        span.span(),
                        "`id = \"message_id\"` cannot tell apart the records of an array body: point into each record instead".into(),
                    );
                    None
                }
                (Some(id), _) => Some(id.clone()),
                (None, Some(_)) => None,
                (None, None) => {
                    err(
                        queue.span(),
                        "a queue needs `id`: a JSON pointer to each record's id (`/id`), or `message_id`".into(),
                    );
                    None
                }
            };
            source_id.map(|id| SourceSettings {
                queue: queue_name,
                dead_letter_exchange: dlx,
                dead_letter_routing_key: dlrk,
                page_size,
                prefetch,
                max_wait_ms,
                body,
                id,
                updated_at,
            })
        }
    };

    let sink = match &e.exchange {
        None => {
            let only = [
                ("exchange_type", e.exchange_type.as_ref().map(Spanned::span)),
                ("routing_key", e.routing_key.as_ref().map(Spanned::span)),
                ("persistent", e.persistent.as_ref().map(Spanned::span)),
            ];
            for (field, span) in only {
                if let Some(span) = span {
                    err(
                        span,
                        format!(
                            "`{field}` is for pushing to an `exchange`, which this entity has not"
                        ),
                    );
                }
            }
            None
        }
        Some(exchange) => {
            let x = exchange.get_ref();
            if x.len() > MAX_NAME {
                amqp_name(exchange, "exchange", MAX_NAME, err);
            }
            if x.is_empty() && declare {
                err(
                    exchange.span(),
                    "the default exchange `\"\"` always exists: set `declare = false` to publish to it".into(),
                );
            }
            let exchange_type = match e.exchange_type.as_ref().map(|t| (t, t.get_ref().as_str())) {
                None | Some((_, "topic")) => lapin::ExchangeKind::Topic,
                Some((_, "direct")) => lapin::ExchangeKind::Direct,
                Some((_, "fanout")) => lapin::ExchangeKind::Fanout,
                Some((_, "headers")) => lapin::ExchangeKind::Headers,
                Some((t, other)) => {
                    err(
                        t.span(),
                        format!(
                            "`exchange_type` must be topic, direct, fanout or headers, not `{other}`"
                        ),
                    );
                    lapin::ExchangeKind::Topic
                }
            };
            if let (Some(t), false) = (&e.exchange_type, declare) {
                err(
                    t.span(),
                    "`exchange_type` is only used to declare the exchange, and `declare = false`"
                        .into(),
                );
            }
            let routing_key = match &e.routing_key {
                None => RoutingKey(vec![Part::Text(name.get_ref().clone())]),
                Some(k) => RoutingKey::parse(k.get_ref()).unwrap_or_else(|msg| {
                    err(k.span(), format!("`routing_key`: {msg}"));
                    RoutingKey(Vec::new())
                }),
            };
            Some(SinkSettings {
                exchange: x.clone(),
                exchange_type,
                routing_key,
                persistent: e.persistent.as_ref().is_none_or(|p| *p.get_ref()),
                id: id.clone().unwrap_or(IdSource::MessageId),
            })
        }
    };
    Some(EntitySettings {
        declare,
        source,
        sink,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> SourceFile {
        SourceFile {
            path: "connectors/erp_bus.toml".into(),
            text: text.to_owned(),
        }
    }

    const HEAD: &str = "name = \"erp_bus\"\ndriver = \"amqp\"\nurl = \"${amqp_url}\"\n";

    #[test]
    fn a_source_and_sink_entity_gets_defaults() {
        let s = settings(&source(&format!(
            "{HEAD}[entities.invoice]\nqueue = \"erp.invoices\"\ndead_letter_exchange = \"erp.dead\"\nid = \"/id\"\nexchange = \"events\"\n"
        )))
        .unwrap();
        let e = &s.entities["invoice"];
        assert!(e.declare);
        let src = e.source.as_ref().unwrap();
        assert_eq!(
            (src.page_size, src.prefetch, src.max_wait_ms),
            (100, 200, 1_000)
        );
        assert_eq!(src.dead_letter_routing_key, "erp.invoices");
        assert_eq!(src.id, IdSource::Pointer("/id".into()));
        let sink = e.sink.as_ref().unwrap();
        assert_eq!(
            sink.id,
            IdSource::Pointer("/id".into()),
            "one `id` for both ways"
        );
        assert!(sink.persistent);
        assert_eq!(sink.routing_key.render(&Value::Null).unwrap(), "invoice");
    }

    #[test]
    fn every_problem_is_reported_at_its_place() {
        let text = format!(
            "{HEAD}connect_timeout_ms = 0\n\
             [entities.invoice]\n\
             queue = \"q\"\n\
             page_size = 50\n\
             prefetch = 10\n\
             body = \"array\"\n\
             id = \"message_id\"\n\
             updated_at = \"updated\"\n\
             routing_key = \"x\"\n\
             [entities.Order]\n\
             declare = false\n"
        );
        let errors = check(&source(&text)).unwrap_err();
        let got: Vec<(usize, &str)> = errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        let lines: Vec<usize> = got.iter().map(|g| g.0).collect();
        assert_eq!(lines, [4, 13, 13, 6, 8, 11, 10, 12], "{got:#?}");
        assert!(got[0].1.contains("connect_timeout_ms"));
        assert!(got[1].1.contains("lowercase"));
        assert!(got[2].1.contains("neither a `queue`"));
        assert!(got[3].1.contains("dead_letter_exchange"));
        assert!(got[4].1.contains("at least the page size"));
        assert!(got[5].1.contains("must start with `/`"));
        assert!(got[6].1.contains("array body"));
        assert!(got[7].1.contains("pushing to an `exchange`"));
    }

    #[test]
    fn passwords_must_be_placeholders() {
        for (url, refused) in [
            ("amqp://guest:guest@localhost:5672/%2f", true),
            ("amqp://guest:guest@${amqp_host}/%2f", true),
            ("amqp://concord:${amqp_password}@broker/prod", false),
            ("${amqp_url}", false),
            ("amqps://broker.example.com/prod", false),
        ] {
            let text = format!(
                "name = \"b\"\ndriver = \"amqp\"\nurl = \"{url}\"\n[entities.e]\nexchange = \"x\"\n"
            );
            let result = check(&source(&text));
            assert_eq!(result.is_err(), refused, "{url}: {result:?}");
            if let Err(e) = result {
                assert!(e[0].message.contains("password"), "{e:?}");
                assert!(!e[0].message.contains("guest:guest"), "{e:?}");
            }
        }
        let e = check(&source(
            "name = \"b\"\ndriver = \"amqp\"\nurl = \"http://x\"\n[entities.e]\nexchange = \"x\"\n",
        ))
        .unwrap_err();
        assert!(e[0].message.contains("amqp://"), "{e:?}");
    }

    #[test]
    fn routing_keys_insert_record_fields() {
        let k = RoutingKey::parse("invoice.{/status}.{/lines/0/n}.{{x}}").unwrap();
        let rec = serde_json::json!({"status": "paid", "lines": [{"n": 3}]});
        assert_eq!(k.render(&rec).unwrap(), "invoice.paid.3.{x}");
        let err = k
            .render(&serde_json::json!({"lines": [{"n": 3}]}))
            .unwrap_err();
        assert!(err.contains("`/status`"), "{err}");
        let err = k
            .render(&serde_json::json!({"status": {"a": 1}}))
            .unwrap_err();
        assert!(err.contains("object or array"), "{err}");
        for bad in ["a.{status}", "a.{/s", "a}", "{}"] {
            assert!(RoutingKey::parse(bad).is_err(), "{bad}");
        }
        assert!(check_pointer("/a~1b/~0").is_ok());
        assert!(check_pointer("/a~2").is_err());
    }
}
