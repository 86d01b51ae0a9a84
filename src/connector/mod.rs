//! Connectors: how concord talks to a system.
//!
//! A *driver* is Rust code under `src/connector/<driver>/`; a *system* is a
//! definition file in `connectors/` that names its driver, so adding a SaaS
//! system usually means adding a file, not code. A *system instance* in the
//! configuration (`[systems.xero_main]`) names a definition and carries the
//! credentials and base-URL overrides of one real account.
//!
//! The contract every driver implements is [`Connector`]:
//!
//! - [`Connector::pull`] reads an entity as a stream of [`Page`]s, each with
//!   its raw records and the [`Cursor`] after it. Saving a page's cursor with
//!   its records and resuming from it later must neither lose nor duplicate
//!   records. Cursors are `(updated_at, id)` pairs, re-read with a look-back
//!   window; re-reading is harmless because concord recognises unchanged
//!   records by content hash.
//! - A page may carry an [`Ack`]: sources that consume what they read (a
//!   queue, a drop folder) only let go of it once the sync engine calls
//!   [`Ack::ack`] after committing the page. A page that is never
//!   acknowledged is read again.
//! - [`Connector::push`] writes a batch of [`Change`]s, each with an
//!   idempotency key, and answers with one [`PushOutcome`] per change.
//! - Every failure is a [`ConnectorError`] whose [`ErrorKind`] alone tells
//!   the sync engine whether to retry.
//!
//! Definitions are validated without any I/O ([`check_file`]) before
//! anything connects; `concord connectors check` runs that over a folder.

pub mod amqp;
pub mod bank;
pub mod conformance;
mod error;
pub mod file;
pub mod http;
pub mod sql;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use error::{ConnectorError, ErrorKind};

use crate::located::{LoadError, SourceFile};
use crate::model::ExternalId;

/// One record as the system gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    /// The system's identifier of the record.
    pub external_id: ExternalId,
    /// When the system last changed it, when the system says.
    pub updated_at: Option<DateTime<Utc>>,
    /// The record, untouched.
    pub data: Value,
}

/// Where a pull stands: the newest `(updated_at, id)` read so far, plus an
/// opaque token for sources whose position is not a timestamp.
///
/// Cursors only move forward: a driver never returns a cursor below the
/// one it was given. Stored as JSON with the records it covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Cursor {
    /// The cursor of a record: its `(updated_at, id)`.
    pub fn at(updated_at: DateTime<Utc>, id: impl Into<String>) -> Cursor {
        Cursor {
            updated_at: Some(updated_at),
            id: Some(id.into()),
            token: None,
        }
    }

    /// Whether a record at `(updated_at, id)` comes after this cursor in
    /// `(updated_at, id)` order. Records without a timestamp always do.
    pub fn is_before(&self, updated_at: Option<DateTime<Utc>>, id: &str) -> bool {
        match (self.updated_at, updated_at) {
            (Some(mine), Some(theirs)) => (theirs, id) > (mine, self.id.as_deref().unwrap_or("")),
            _ => true,
        }
    }

    /// Moves the cursor forward to a record read, never backward.
    pub fn advance(&mut self, updated_at: Option<DateTime<Utc>>, id: &str) {
        if let Some(at) = updated_at
            && self.is_before(Some(at), id)
        {
            self.updated_at = Some(at);
            self.id = Some(id.to_owned());
        }
    }

    /// The timestamp to ask the system for, moved back by the look-back
    /// window so that records written late with an older timestamp are
    /// still seen.
    pub fn since(&self, look_back: Duration) -> Option<DateTime<Utc>> {
        let at = self.updated_at?;
        Some(at - chrono::Duration::from_std(look_back).unwrap_or(chrono::Duration::zero()))
    }

    /// Parses a cursor saved by [`Cursor::to_json`].
    pub fn from_json(text: &str) -> Result<Cursor, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a cursor always serialises")
    }
}

/// Lets go of what a page consumed, once the page is committed.
#[async_trait]
pub trait Ack: Send + Sync {
    /// The page's records are committed: the source may forget them (ack
    /// the messages, move the file to `done/`).
    async fn ack(self: Box<Self>) -> Result<(), ConnectorError>;
    /// The page could not be processed as a whole: hand it back for
    /// another try (`requeue`) or set it aside (`failed/`, dead letter).
    async fn nack(self: Box<Self>, requeue: bool, reason: &str) -> Result<(), ConnectorError>;
}

/// A record the driver found but could not read (a malformed CSV line, a
/// JSON value that does not parse, a row with an unreadable value).
///
/// It travels with its page instead of failing the pull, so one bad line
/// does not block the rest of a file or table: the sync engine quarantines
/// it with its reason, and the page's cursor moves past it like past any
/// record. Nothing is dropped silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Where the record is, so an operator can find it: `invoices.csv:17`,
    /// `public.customer id=42`.
    pub position: String,
    /// Why it could not be read.
    pub reason: String,
    /// The record as found (text, possibly cut to a bounded length).
    pub raw: String,
}

/// A page of a pull.
#[derive(Default)]
pub struct Page {
    pub records: Vec<RawRecord>,
    /// Records found in this stretch of the source that could not be read;
    /// the engine quarantines them. Records and rejects together stay within
    /// the page size.
    pub rejects: Vec<Reject>,
    /// Where to resume after this page.
    pub cursor: Cursor,
    /// For consuming sources: call after the page is committed.
    pub ack: Option<Box<dyn Ack>>,
    /// What the source found beside the records; commit with the page.
    pub notices: Vec<Notice>,
}

/// Something a source found that is not a record but must reach the
/// operator. It travels with the page it was found in, so the sync engine
/// records it (as an alert) in the transaction that commits the page, and
/// a page never acknowledged brings it again.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A bank statement was read to its end. The sync engine raises
    /// `statement_balance_mismatch` when its balance check is present and
    /// not ok (opening + Σ lines ≠ closing).
    Statement {
        /// Where it came from: the file's name in the drop folder.
        source: String,
        /// The statement without its lines.
        summary: Box<crate::bank::StatementSummary>,
    },
    /// Input that could not be read was set aside instead of being lost or
    /// blocking what follows it.
    SetAside {
        /// What: a message id, a file name.
        item: String,
        /// Where it went: a dead-letter exchange, a `failed/` folder.
        to: String,
        /// Why it could not be read.
        reason: String,
    },
}

impl Page {
    /// A page of readable records, without rejects or an ack.
    pub fn new(records: Vec<RawRecord>, cursor: Cursor) -> Page {
        Page {
            records,
            rejects: Vec::new(),
            cursor,
            ack: None,
            notices: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("records", &self.records.len())
            .field("rejects", &self.rejects.len())
            .field("cursor", &self.cursor)
            .field("ack", &self.ack.is_some())
            .field("notices", &self.notices)
            .finish()
    }
}

/// A stream of pages; it ends after the last page.
pub type PageStream<'a> = BoxStream<'a, Result<Page, ConnectorError>>;

/// One record to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Same key, same effect: a retried push must not write twice. concord
    /// uses `entity:canonical id:version:target`.
    pub idempotency_key: String,
    /// The record's id at the target when concord knows it (an update);
    /// `None` to create.
    pub external_id: Option<ExternalId>,
    /// The record in the target's shape (after the outbound mapping).
    pub data: Value,
}

/// What became of one [`Change`].
#[derive(Debug, Clone, PartialEq)]
pub enum PushOutcome {
    Created {
        external_id: ExternalId,
    },
    Updated {
        external_id: ExternalId,
    },
    /// Permanent: the system refused the record and said why.
    Rejected {
        message: String,
    },
    /// Transient: try this record again after `delay`.
    RetryLater {
        delay: Duration,
        message: String,
    },
}

/// What a system supports, per entity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub entities: BTreeMap<String, EntityCapabilities>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EntityCapabilities {
    pub pull: bool,
    pub incremental: bool,
    pub get: bool,
    pub push: bool,
    pub webhooks: bool,
}

/// The contract between concord and a system.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The instance name (`xero_main`), used in errors and logs.
    fn name(&self) -> &str;

    /// Which entities can be pulled, pushed, fetched or announced by webhook.
    fn capabilities(&self) -> Capabilities;

    /// Checks the system is reachable and the credentials work.
    async fn healthcheck(&self) -> Result<(), ConnectorError>;

    /// Reads `entity` from `cursor` on (from the beginning when `None`).
    fn pull<'a>(&'a self, entity: &'a str, cursor: Option<Cursor>) -> PageStream<'a>;

    /// Fetches one record by id, for webhooks that name records to pull.
    async fn get(
        &self,
        entity: &str,
        id: &ExternalId,
    ) -> Result<Option<RawRecord>, ConnectorError> {
        let _ = id;
        Err(ConnectorError::config(
            self.name(),
            format!("fetching one {entity} by id is not supported"),
        ))
    }

    /// Writes a batch of changes; one outcome per change, in order. An
    /// `Err` means nothing in the batch is known to have been written.
    async fn push(
        &self,
        entity: &str,
        changes: Vec<Change>,
    ) -> Result<Vec<PushOutcome>, ConnectorError> {
        let _ = changes;
        Err(ConnectorError::config(
            self.name(),
            format!("writing {entity} is not supported"),
        ))
    }
}

// ---------------------------------------------------------------------------
// Definitions and drivers

/// The part every definition file shares; the rest belongs to the driver.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    /// The system's name, e.g. `xero` (the file is `connectors/xero.toml`).
    pub name: String,
    /// Which driver reads the rest of the file.
    pub driver: String,
}

/// A definition file read and checked, ready to open instances of.
#[derive(Debug, Clone)]
pub struct Definition {
    pub name: String,
    pub driver: &'static Driver,
    pub source: SourceFile,
}

/// Opens an instance of a checked definition.
pub type OpenFn = fn(&Definition, &Instance) -> Result<Arc<dyn Connector>, ConnectorError>;

/// A driver, registered by one line in [`DRIVERS`].
pub struct Driver {
    pub name: &'static str,
    /// What the driver is for, for `concord connectors check`.
    pub summary: &'static str,
    /// Validates a definition without any I/O, reporting every problem.
    pub check: fn(&SourceFile) -> Result<(), Vec<LoadError>>,
    /// Opens an instance. May build clients but should not connect: the
    /// first request or [`Connector::healthcheck`] does.
    pub open: OpenFn,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every driver concord has.
pub static DRIVERS: &[&Driver] = &[
    &http::DRIVER,
    &sql::DRIVER,
    &file::DRIVER,
    &amqp::DRIVER,
    &bank::DRIVER,
];

/// The driver called `name`.
pub fn driver(name: &str) -> Option<&'static Driver> {
    DRIVERS.iter().copied().find(|d| d.name == name)
}

/// Reads and validates one definition file, reporting every problem.
pub fn check_file(path: &Path) -> Result<Definition, Vec<LoadError>> {
    let source = SourceFile::read(path).map_err(|e| vec![e])?;
    let header = parse_header(&source).map_err(|e| vec![e])?;
    let driver = driver(header.driver.get_ref()).ok_or_else(|| {
        let known: Vec<&str> = DRIVERS.iter().map(|d| d.name).collect();
        vec![source.error(
            Some(header.driver.span()),
            format!(
                "unknown driver `{}`; known drivers: {}",
                header.driver.get_ref(),
                known.join(", ")
            ),
        )]
    })?;
    let mut errors = Vec::new();
    let name = header.name.get_ref();
    if !valid_name(name) {
        errors.push(source.error(
            Some(header.name.span()),
            format!("system name `{name}` must be 1-64 lowercase letters, digits, `_` or `-`"),
        ));
    }
    if let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        && stem != name
    {
        errors.push(source.error(
            Some(header.name.span()),
            format!("name `{name}` differs from the file name `{stem}.toml`"),
        ));
    }
    if let Err(mut more) = (driver.check)(&source) {
        errors.append(&mut more);
    }
    if errors.is_empty() {
        Ok(Definition {
            name: name.clone(),
            driver,
            source,
        })
    } else {
        Err(errors)
    }
}

/// Every `*.toml` definition in a folder (not recursive), sorted by path.
/// Returns the definitions that passed and every problem found.
pub fn check_dir(dir: &Path) -> Result<(Vec<Definition>, Vec<LoadError>), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LoadError {
        file: dir.to_owned(),
        line: 0,
        column: 0,
        message: format!("cannot read the folder: {e}"),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    paths.sort();
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match check_file(&path) {
            Ok(def) => ok.push(def),
            Err(mut e) => errors.append(&mut e),
        }
    }
    let mut seen = BTreeMap::new();
    for def in &ok {
        if let Some(first) = seen.insert(def.name.clone(), def.source.path.clone()) {
            errors.push(def.source.error(
                None,
                format!(
                    "system `{}` is also defined in {}",
                    def.name,
                    first.display()
                ),
            ));
        }
    }
    Ok((ok, errors))
}

#[derive(Deserialize)]
struct SpannedHeader {
    name: toml::Spanned<String>,
    driver: toml::Spanned<String>,
}

/// Reads only the two shared keys; the driver checks the whole file.
fn parse_header(source: &SourceFile) -> Result<SpannedHeader, LoadError> {
    let table: toml::Table = source.parse()?;
    for key in ["name", "driver"] {
        match table.get(key) {
            Some(toml::Value::String(_)) => {}
            Some(_) => return Err(source.error(None, format!("`{key}` must be a string"))),
            None => return Err(source.error(None, format!("missing `{key}`"))),
        }
    }
    source.parse()
}

/// System and instance names: lowercase letters, digits, `_` and `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

// ---------------------------------------------------------------------------
// Instances and `${…}` values

/// One configured account of a system: `[systems.NAME]` in the config.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The instance name (`xero_main`).
    pub name: String,
    /// Replaces the definition's `base_url` (a sandbox, a mock server).
    pub base_url: Option<String>,
    /// Values for `${…}` in the definition; may themselves be `${ENV}`.
    pub vars: BTreeMap<String, SecretString>,
}

impl Instance {
    /// An instance with no overrides, named after the definition.
    pub fn bare(name: impl Into<String>) -> Instance {
        Instance {
            name: name.into(),
            base_url: None,
            vars: BTreeMap::new(),
        }
    }

    pub fn with_var(mut self, key: &str, value: &str) -> Instance {
        self.vars
            .insert(key.to_owned(), SecretString::from(value.to_owned()));
        self
    }

    pub fn with_base_url(mut self, url: impl Into<String>) -> Instance {
        self.base_url = Some(url.into());
        self
    }

    /// Expands every `${name}` in `text`: from the instance's values first
    /// (which may in turn name environment variables), then from the
    /// environment. `${name:-default}` takes `default` when neither has
    /// `name`, so a definition can ship a value an instance may replace.
    /// `$${` stands for a literal `${`. The result may hold a secret: keep it
    /// in a [`SecretString`] and never log it.
    pub fn expand(&self, text: &str) -> Result<SecretString, ConnectorError> {
        self.expand_with(text, &|k| std::env::var(k).ok())
    }

    /// [`Instance::expand`] with a given environment (for tests).
    pub fn expand_with(
        &self,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SecretString, ConnectorError> {
        expand(
            text,
            &|key| match self.vars.get(key) {
                Some(v) => Ok(Some(
                    expand(v.expose_secret(), &|k| Ok(env(k)), &self.name)?
                        .expose_secret()
                        .to_owned(),
                )),
                None => Ok(env(key)),
            },
            &self.name,
        )
    }
}

type Lookup<'a> = &'a dyn Fn(&str) -> Result<Option<String>, ConnectorError>;

fn expand(text: &str, lookup: Lookup<'_>, system: &str) -> Result<SecretString, ConnectorError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| {
                ConnectorError::config(
                    system,
                    format!("unclosed `${{` in `{}`", placeholder_hint(text)),
                )
            })?;
            let (key, default) = match after[..end].split_once(":-") {
                Some((key, default)) => (key, Some(default)),
                None => (&after[..end], None),
            };
            if !valid_placeholder_name(key) {
                return Err(ConnectorError::config(
                    system,
                    format!("`${{{key}}}` is not a valid placeholder name"),
                ));
            }
            match lookup(key)?.or_else(|| default.map(str::to_owned)) {
                Some(v) => out.push_str(&v),
                None => {
                    return Err(ConnectorError::config(
                        system,
                        format!(
                            "`${{{key}}}` has no value: set `{key}` in the system's configuration or the environment variable {key}"
                        ),
                    ));
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(SecretString::from(out))
}

/// A `${name}` placeholder's name: letters, digits, `_`, `.` and `-`.
pub fn valid_placeholder_name(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Only the placeholders of a template, never its expanded value.
fn placeholder_hint(text: &str) -> String {
    if text.len() > 60 {
        format!("{}…", &text[..text.floor_char_boundary(60)])
    } else {
        text.to_owned()
    }
}

/// Whether a template has placeholders (a value that may be secret).
pub fn has_placeholders(text: &str) -> bool {
    text.contains("${")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "XERO_TENANT_ID" => Some("tenant-1".into()),
            "TOKEN" => Some("s3cret".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_instance_values_then_environment() {
        let inst = Instance::bare("xero_main").with_var("tenant_id", "${XERO_TENANT_ID}");
        let got = inst
            .expand_with("t=${tenant_id}; k=${TOKEN}; $${literal}", &env)
            .unwrap();
        assert_eq!(got.expose_secret(), "t=tenant-1; k=s3cret; ${literal}");
    }

    #[test]
    fn a_missing_value_names_the_placeholder_not_any_value() {
        let inst = Instance::bare("hubspot_main");
        let err = inst
            .expand_with("Bearer ${HUBSPOT_TOKEN}", &env)
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("HUBSPOT_TOKEN"), "{err}");
        let err = inst.expand_with("x ${TOKEN", &env).unwrap_err();
        assert!(err.message.contains("unclosed"), "{err}");
        assert!(!err.to_string().contains("s3cret"));
    }

    #[test]
    fn a_default_applies_only_when_no_value_is_set() {
        let url = "${token_url:-https://identity.example.com/connect/token}";
        let got = Instance::bare("x").expand_with(url, &env).unwrap();
        assert_eq!(
            got.expose_secret(),
            "https://identity.example.com/connect/token"
        );
        let inst = Instance::bare("x").with_var("token_url", "http://127.0.0.1:9/token");
        let got = inst.expand_with(url, &env).unwrap();
        assert_eq!(got.expose_secret(), "http://127.0.0.1:9/token");
        // From the environment too, and an empty default is a value.
        let got = inst
            .expand_with("${TOKEN:-none}/${nothing:-}", &env)
            .unwrap();
        assert_eq!(got.expose_secret(), "s3cret/");
        let err = inst.expand_with("${bad key:-x}", &env).unwrap_err();
        assert!(
            err.message.contains("not a valid placeholder name"),
            "{err}"
        );
    }

    #[test]
    fn cursors_order_by_time_then_id_and_never_go_back() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let mut c = Cursor::at(t("2026-11-01T10:00:00Z"), "B");
        assert!(c.is_before(Some(t("2026-11-01T10:00:00Z")), "C"));
        assert!(!c.is_before(Some(t("2026-11-01T10:00:00Z")), "B"));
        assert!(!c.is_before(Some(t("2026-11-01T09:00:00Z")), "Z"));
        c.advance(Some(t("2026-10-01T00:00:00Z")), "Z");
        assert_eq!(c, Cursor::at(t("2026-11-01T10:00:00Z"), "B"));
        c.advance(Some(t("2026-11-02T00:00:00Z")), "A");
        assert_eq!(c, Cursor::at(t("2026-11-02T00:00:00Z"), "A"));
        assert_eq!(
            c.since(Duration::from_secs(3600)),
            Some(t("2026-11-01T23:00:00Z"))
        );
        assert_eq!(Cursor::from_json(&c.to_json()).unwrap(), c);
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("xero_main"));
        assert!(!valid_name("Xero"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
    }
}
