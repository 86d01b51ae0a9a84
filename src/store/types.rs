//! What goes into the store and what comes out of it.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::model::{CanonicalId, Entity, EntityKind, Money};

/// What caused a new version of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Read from a source system by a scheduled or manual pull.
    Pull,
    /// Pushed to us by a source system's webhook or queue event.
    Webhook,
    /// Changed by an operator (conflict resolution, replay, edit).
    Operator,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Pull => "pull",
            Cause::Webhook => "webhook",
            Cause::Operator => "operator",
        }
    }
}

impl FromStr for Cause {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pull" => Ok(Cause::Pull),
            "webhook" => Ok(Cause::Webhook),
            "operator" => Ok(Cause::Operator),
            other => Err(format!(
                "unknown cause {other:?}: expected pull, webhook or operator"
            )),
        }
    }
}

/// Where a version came from: every change is explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    pub source_system: Option<String>,
    pub cause: Cause,
    /// Who, for operator actions.
    pub actor: Option<String>,
    /// The inbound event or pull run that carried the change.
    pub event_id: Option<String>,
    /// Name and version of the mapping that produced the data.
    pub mapping_version: Option<String>,
}

impl Provenance {
    /// A change read from `system` by a pull.
    pub fn pull(system: impl Into<String>) -> Self {
        Provenance {
            source_system: Some(system.into()),
            cause: Cause::Pull,
            actor: None,
            event_id: None,
            mapping_version: None,
        }
    }

    /// A change made by an operator.
    pub fn operator(actor: impl Into<String>) -> Self {
        Provenance {
            source_system: None,
            cause: Cause::Operator,
            actor: Some(actor.into()),
            event_id: None,
            mapping_version: None,
        }
    }
}

/// A new version of a canonical record.
#[derive(Debug, Clone)]
pub struct RecordWrite {
    pub entity: EntityKind,
    pub id: CanonicalId,
    /// The version this write replaces; 0 creates the record.
    pub expected_version: i64,
    pub data: Value,
    /// The content hash of `data`, when the writer has it already (as
    /// [`RecordWrite::of`] does); computed at commit when `None`.
    pub content_hash: Option<String>,
    /// `data` as [`canonical_json`](crate::model::canonical_json), the text
    /// the store keeps, when the writer has it already (as
    /// [`RecordWrite::of`] does); written at commit when `None`.
    pub data_json: Option<String>,
    /// The record's principal amount, indexed for reconciliation.
    pub amount: Option<Money>,
    pub provenance: Provenance,
}

impl RecordWrite {
    /// A write of `entity` under `id`, replacing `expected_version` (0: new).
    pub fn of(
        entity: &Entity,
        id: CanonicalId,
        expected_version: i64,
        provenance: Provenance,
    ) -> Self {
        let data = entity.to_value();
        // Serialized once: the text hashed is the text stored.
        let text = crate::model::canonical_json(&data);
        RecordWrite {
            entity: entity.kind(),
            id,
            expected_version,
            content_hash: Some(crate::model::text_hash(&text)),
            data_json: Some(text),
            data,
            amount: entity.principal_amount(),
            provenance,
        }
    }
}

/// The link between a canonical record and a system's external id.
#[derive(Debug, Clone)]
pub struct LinkWrite {
    pub entity: EntityKind,
    pub system: String,
    pub external_id: String,
    pub canonical_id: CanonicalId,
    /// The canonical version last synced with the system.
    pub synced_version: Option<i64>,
    /// The record as last synced with the system (the merge base).
    pub synced_data: Option<Value>,
    /// The content hash of what the system holds.
    ///
    /// With `synced_data`: that data's hash, when the writer has it already
    /// (computed at commit when `None`).
    ///
    /// Without: the system holds exactly the canonical record at
    /// `synced_version`, whose content hash this is. The link then names
    /// that version instead of copying its data (each record's data is
    /// written once); reading the link gives the version's data back.
    pub synced_hash: Option<String>,
    pub remote_updated_at: Option<DateTime<Utc>>,
    /// Set only by the take-in of the system's own record, whose mapped
    /// form is `synced_data`: the hash of that record as it arrived, with
    /// the mapping that read it ([`crate::model::source_hash`]). The same
    /// record arriving again is then unchanged without being mapped. Any
    /// other write of the link clears it (`None`).
    pub source_hash: Option<String>,
}

/// A link's hashes ([`crate::store::Store::synced_hashes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkHashes {
    /// What the system holds, mapped ([`LinkWrite::synced_hash`]).
    pub synced: Option<String>,
    /// What it sent, as it arrived ([`LinkWrite::source_hash`]).
    pub source: Option<String>,
}

/// A source link's [`LinkWrite::source_hash`] brought up to date, for a
/// record that arrived unchanged by its mapped hash but not by its raw one
/// (its mapping was edited, or the link was last written by a delivery).
/// Applied only while the link still holds `synced_hash`.
#[derive(Debug, Clone)]
pub struct SourceHashWrite {
    pub entity: EntityKind,
    pub system: String,
    pub external_id: String,
    pub synced_hash: String,
    pub source_hash: String,
}

/// A change to deliver to a target system.
#[derive(Debug, Clone)]
pub struct OutboxWrite {
    pub entity: EntityKind,
    pub canonical_id: CanonicalId,
    pub version: i64,
    pub target_system: String,
}

impl OutboxWrite {
    /// (entity, id, version, target): the same change to the same target is
    /// enqueued — and delivered — once.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.entity, self.canonical_id, self.version, self.target_system
        )
    }

    /// The key a create of the record at the target is sent with: one per
    /// (entity, id, target), whatever the version. A create whose answer
    /// was lost is found again by it (by the target's idempotency, or a
    /// look-up by key) even when a newer version is sent next, so the
    /// record is not created twice. Updates keep the per-version key.
    pub fn create_key(&self) -> String {
        format!(
            "{}:{}:create:{}",
            self.entity, self.canonical_id, self.target_system
        )
    }
}

/// How a held outbox entry's reason starts ([`Delivery::Hold`]): the store
/// makes such entries due again when the conflict holding them is resolved.
pub const HELD_PREFIX: &str = "held:";

/// A source cursor, saved with the records it read.
#[derive(Debug, Clone)]
pub struct CursorWrite {
    pub system: String,
    /// The source's entity name (`company`, `Sales Invoice`), which may
    /// differ from the canonical kind it maps to.
    pub entity: String,
    pub cursor: String,
}

/// A record that could not be taken in, with why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantineItem {
    pub system: String,
    pub entity: EntityKind,
    pub external_id: Option<String>,
    /// The record exactly as received.
    pub raw: Value,
    pub reason: String,
    pub rule: Option<String>,
    pub field_path: Option<String>,
}

/// Everything one step of a sync stores together, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub records: Vec<RecordWrite>,
    pub links: Vec<LinkWrite>,
    pub outbox: Vec<OutboxWrite>,
    pub quarantine: Vec<QuarantineItem>,
    pub cursors: Vec<CursorWrite>,
    /// Data-quality alerts raised by what this batch read.
    pub alerts: Vec<NewAlert>,
    /// Fields waiting for the operator, opened with the versions above.
    pub conflicts: Vec<NewConflict>,
    /// Business keys of the records above, for identity matching.
    pub identity_keys: Vec<IdentityKeyWrite>,
    /// Source hashes of links whose records arrived unchanged.
    pub source_hashes: Vec<SourceHashWrite>,
    /// Conflicts the operator decided, closed with the versions above. The
    /// batch fails if one of them is no longer open.
    pub resolved_conflicts: Vec<ConflictResolution>,
    /// Quarantined records taken in again (replayed), closed with the batch.
    pub replayed_quarantine: Vec<i64>,
    /// Ids of the queued work items whose effects this batch is, marked
    /// done with it. The batch fails with
    /// [`StoreError::AlreadyProcessed`](super::StoreError::AlreadyProcessed)
    /// if one was done before, so a redelivered item has no effect twice.
    pub processed_work: Vec<String>,
}

/// How an operator settled a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictResolution {
    pub id: i64,
    /// What was decided, in words (`took theirs (crm_main)`, `value "x"`).
    pub resolution: String,
    pub actor: String,
}

/// A stored conflict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    pub id: i64,
    pub entity: EntityKind,
    pub canonical_id: CanonicalId,
    pub field_path: String,
    pub base: Option<Value>,
    pub ours: Option<Value>,
    pub theirs: Option<Value>,
    pub source_system: String,
    pub status: String,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// A normalised business key of a canonical record. It replaces the
/// record's earlier value of that key; `None` removes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityKeyWrite {
    pub entity: EntityKind,
    /// The canonical field the key came from (`tax_id`, `email`).
    pub key_name: String,
    /// Its normalised value, or `None` when the record no longer has one.
    pub key_value: Option<String>,
    pub canonical_id: CanonicalId,
}

/// How a delivery attempt ended, for [`Store::outbox_settle`](super::Store::outbox_settle).
#[derive(Debug, Clone)]
pub enum Delivery {
    /// The target has it; the link records what it holds now.
    Delivered { link: LinkWrite },
    /// Try again at `at`.
    Retry { at: DateTime<Utc>, error: String },
    /// Give up: the entry waits in dead letters for an operator.
    Dead { error: String },
    /// A newer version of the record is queued for the same target.
    Superseded,
    /// Not attempted: wait until `at` (an open conflict with the target,
    /// say). Does not count as an attempt. `reason` starts with
    /// [`HELD_PREFIX`]; resolving the last open conflict with the target on
    /// the record makes the entry due at once.
    Hold { at: DateTime<Utc>, reason: String },
    /// The target has the record (a create an earlier try made, found
    /// again by its key) but which version it holds is unknown: the link
    /// is written without what it holds, and the entry is due again at
    /// once, to be sent as an update of that record.
    Linked { link: LinkWrite },
}

/// What [`Store::commit`](super::Store::commit) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The new version of each record, in the order of `Batch::records`.
    pub versions: Vec<i64>,
    pub outbox_enqueued: usize,
    /// Outbox entries whose idempotency key was already there.
    pub outbox_duplicates: usize,
}

/// A record as stored now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRecord {
    pub entity: EntityKind,
    pub id: CanonicalId,
    pub version: i64,
    pub content_hash: String,
    pub amount: Option<Money>,
    pub data: Value,
    /// The system the current version came from (none for operator edits).
    pub source_system: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Version and hash of a record, without its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHead {
    pub id: CanonicalId,
    pub version: i64,
    pub content_hash: String,
}

/// One version in a record's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordVersion {
    pub version: i64,
    pub data: Value,
    pub content_hash: String,
    pub provenance: Provenance,
    pub at: DateTime<Utc>,
}

/// A stored link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    pub entity: EntityKind,
    pub system: String,
    pub external_id: String,
    pub canonical_id: CanonicalId,
    pub synced_version: Option<i64>,
    pub synced_data: Option<Value>,
    pub synced_hash: Option<String>,
    pub remote_updated_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// An inbound event to store once.
#[derive(Debug, Clone)]
pub struct InboxEvent {
    /// System and event id: the same event delivered twice is stored once.
    pub idempotency_key: String,
    pub system: String,
    pub entity: Option<EntityKind>,
    pub payload: Value,
}

/// An outbox entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    pub id: i64,
    pub idempotency_key: String,
    pub entity: EntityKind,
    pub canonical_id: CanonicalId,
    pub version: i64,
    pub target_system: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// The target's id of the record, once delivered.
    pub external_id: Option<String>,
}

/// A quarantined record as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantinedRecord {
    pub id: i64,
    #[serde(flatten)]
    pub item: QuarantineItem,
    pub status: String,
    pub at: DateTime<Utc>,
}

/// A field on which two systems disagree and the policy says an operator
/// decides.
#[derive(Debug, Clone)]
pub struct NewConflict {
    pub entity: EntityKind,
    pub canonical_id: CanonicalId,
    pub field_path: String,
    pub base: Option<Value>,
    pub ours: Option<Value>,
    pub theirs: Option<Value>,
    pub source_system: String,
}

/// How urgent an alert is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            other => Err(format!(
                "unknown severity {other:?}: expected info, warning or critical"
            )),
        }
    }
}

/// A data-quality alert to raise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewAlert {
    pub rule: String,
    pub severity: Severity,
    pub entity: Option<EntityKind>,
    pub record_ids: Vec<String>,
    pub reason: String,
    pub amount: Option<Money>,
    /// What the alert is about, stably (a statement's fingerprint, a
    /// record's id): an alert of the same rule and cause is raised once.
    /// `None` raises it every time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// A stored open alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub id: i64,
    #[serde(flatten)]
    pub alert: NewAlert,
    pub created_at: DateTime<Utc>,
}

/// What `concord status` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusReport {
    pub backend: String,
    /// The store URL without credentials.
    pub target: String,
    pub schema_applied: usize,
    pub schema_known: usize,
    pub records: Vec<EntityCount>,
    pub links: Vec<SystemCount>,
    pub cursors: Vec<CursorState>,
    pub outbox: Vec<StatusCount>,
    pub inbox: Vec<StatusCount>,
    pub open_quarantine: i64,
    pub open_conflicts: i64,
    pub open_alerts: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntityCount {
    pub entity: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SystemCount {
    pub entity: String,
    pub system: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CursorState {
    pub system: String,
    pub entity: String,
    pub cursor: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusCount {
    pub status: String,
    pub count: i64,
}
