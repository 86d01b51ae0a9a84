//! The handlers, each with its OpenAPI description, and the shapes they
//! answer with. The shapes are the API's contract: they are converted from
//! the store's types field by field, so a change there cannot silently
//! change the API.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, Auth, Operator, Viewer};
use super::params::{self, LIST_LIMIT};
use super::{ApiError, ApiState, Body, ErrorBody, PathParams, QueryParams, reply};
use crate::model::{CanonicalId, EntityKind, Money};
use crate::store::{self, AlertFilter, Role, Severity, Store};
use crate::sync::engine::{Choice, IDENTITY_FIELD, InvalidDecision};
use crate::sync::{Engine, RunOptions};

/// Runs engine work on a blocking thread that drives it with the
/// runtime's handle.
///
/// The engine's futures are not provably `Send` to rustc (higher-ranked
/// lifetimes of borrows held across awaits deep in the sync code), and
/// axum needs `Send` handlers; `block_on` on a blocking thread needs
/// neither. Admin operations are few, so a thread each is cheap.
async fn with_engine<T, F, Fut>(state: &ApiState, work: F) -> Result<T, ApiError>
where
    F: FnOnce(Arc<Engine>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    let engine = state.inner.engine.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(work(engine)))
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("the engine task failed: {e}")))?
        .map_err(engine_error)
}

/// A failed engine operation: 422 for a decision that does not fit the
/// record, 502 when a connected system failed it (the system and the kind
/// of failure are named, the details go to the log), 500 otherwise.
fn engine_error(error: anyhow::Error) -> ApiError {
    if let Some(invalid) = error
        .chain()
        .find_map(|e| e.downcast_ref::<InvalidDecision>())
    {
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            invalid.to_string(),
        );
    }
    let Some(failed) = error
        .chain()
        .find_map(|e| e.downcast_ref::<crate::connector::ConnectorError>())
    else {
        return ApiError::internal(error);
    };
    let (system, kind) = (failed.system.clone(), failed.kind.as_str());
    tracing::error!(
        message = "Admin API request failed in a connected system.",
        error = format!("{error:#}")
    );
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "upstream",
        format!(
            "{system} failed ({kind}); what was committed before the failure stays (a run's \
             pages, a decision), and the next run or delivery carries on from there; the \
             server log has the details"
        ),
    )
}

pub(super) fn collect(router: OpenApiRouter<ApiState>) -> OpenApiRouter<ApiState> {
    router
        .routes(routes!(status))
        .routes(routes!(jobs))
        .routes(routes!(run_job))
        .routes(routes!(conflicts))
        .routes(routes!(conflict))
        .routes(routes!(resolve_conflict))
        .routes(routes!(dead_letters))
        .routes(routes!(replay_dead_letters))
        .routes(routes!(quarantine))
        .routes(routes!(replay_quarantine))
        .routes(routes!(replay_job))
        .routes(routes!(show_record))
        .routes(routes!(record_history))
        .routes(routes!(alerts))
        .routes(routes!(ack_alerts))
        .routes(routes!(tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(audit))
}

// ---------------------------------------------------------------------------
// Shapes

/// A sum of money: an exact decimal as a string, and its ISO 4217 code.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MoneyDto {
    #[schema(example = "1234.50")]
    pub amount: String,
    #[schema(example = "EUR")]
    pub currency: String,
}

impl From<Money> for MoneyDto {
    fn from(m: Money) -> Self {
        MoneyDto {
            amount: m.amount().to_string(),
            currency: m.currency().as_str().to_owned(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Count {
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SystemCount {
    pub entity: String,
    pub system: String,
    pub count: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CursorDto {
    pub system: String,
    pub entity: String,
    pub cursor: String,
    pub updated_at: DateTime<Utc>,
}

/// What `concord status` shows.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusDto {
    pub backend: String,
    /// The store URL without credentials.
    pub target: String,
    pub schema_applied: usize,
    pub schema_known: usize,
    /// Records per entity.
    pub records: Vec<Count>,
    /// Links per entity and system.
    pub links: Vec<SystemCount>,
    pub cursors: Vec<CursorDto>,
    /// Outbox entries per status.
    pub outbox: Vec<Count>,
    /// Inbox entries per status.
    pub inbox: Vec<Count>,
    pub open_quarantine: i64,
    pub open_conflicts: i64,
    pub open_alerts: i64,
}

impl From<store::StatusReport> for StatusDto {
    fn from(r: store::StatusReport) -> Self {
        let counts = |v: Vec<store::StatusCount>| {
            v.into_iter()
                .map(|c| Count {
                    name: c.status,
                    count: c.count,
                })
                .collect()
        };
        StatusDto {
            backend: r.backend,
            target: r.target,
            schema_applied: r.schema_applied,
            schema_known: r.schema_known,
            records: r
                .records
                .into_iter()
                .map(|c| Count {
                    name: c.entity,
                    count: c.count,
                })
                .collect(),
            links: r
                .links
                .into_iter()
                .map(|c| SystemCount {
                    entity: c.entity,
                    system: c.system,
                    count: c.count,
                })
                .collect(),
            cursors: r
                .cursors
                .into_iter()
                .map(|c| CursorDto {
                    system: c.system,
                    entity: c.entity,
                    cursor: c.cursor,
                    updated_at: c.updated_at,
                })
                .collect(),
            outbox: counts(r.outbox),
            inbox: counts(r.inbox),
            open_quarantine: r.open_quarantine,
            open_conflicts: r.open_conflicts,
            open_alerts: r.open_alerts,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EndpointDto {
    pub system: String,
    pub entity: String,
    pub mapping: String,
}

impl From<&crate::sync::Endpoint> for EndpointDto {
    fn from(e: &crate::sync::Endpoint) -> Self {
        EndpointDto {
            system: e.system.clone(),
            entity: e.entity.clone(),
            mapping: e.mapping.clone(),
        }
    }
}

/// A configured sync job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobDto {
    pub name: String,
    /// Cron expression (seconds first); none: runs only when asked.
    pub schedule: Option<String>,
    pub source: EndpointDto,
    pub targets: Vec<EndpointDto>,
    pub identity: Vec<String>,
    pub batch_size: usize,
}

/// How to run a job. An empty body runs it as the scheduler would.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RunRequest {
    /// Read the source from the beginning instead of its saved cursor.
    pub full: bool,
    /// Compute every change, write nothing.
    pub dry_run: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FieldChangeDto {
    pub field: String,
    pub from: Option<Value>,
    pub to: Option<Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlannedChangeDto {
    pub external_id: String,
    pub action: String,
    pub canonical_id: Option<String>,
    pub fields: Vec<FieldChangeDto>,
    pub reason: Option<String>,
}

/// What a run did (or, dry, would do).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunReport {
    pub job: String,
    pub pages: usize,
    pub pulled: usize,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub quarantined: usize,
    pub conflicts: usize,
    pub delivered: usize,
    pub delivery_skipped: usize,
    pub retry_later: usize,
    pub dead_lettered: usize,
    /// Held back: the record has an open conflict with the target.
    pub held: usize,
    pub merged_from_targets: usize,
    /// Dry runs: each change, per record and field.
    pub changes: Vec<PlannedChangeDto>,
}

impl From<crate::sync::JobReport> for RunReport {
    fn from(r: crate::sync::JobReport) -> Self {
        RunReport {
            job: r.job,
            pages: r.pages,
            pulled: r.pulled,
            created: r.created,
            updated: r.updated,
            unchanged: r.unchanged,
            quarantined: r.quarantined,
            conflicts: r.conflicts,
            delivered: r.delivered,
            delivery_skipped: r.delivery_skipped,
            retry_later: r.retry_later,
            dead_lettered: r.dead_lettered,
            held: r.held,
            merged_from_targets: r.merged_from_targets,
            changes: r
                .changes
                .into_iter()
                .map(|c| PlannedChangeDto {
                    external_id: c.external_id,
                    action: c.action.to_owned(),
                    canonical_id: c.canonical_id,
                    fields: c
                        .fields
                        .into_iter()
                        .map(|f| FieldChangeDto {
                            field: f.field,
                            from: f.from,
                            to: f.to,
                        })
                        .collect(),
                    reason: c.reason,
                })
                .collect(),
        }
    }
}

/// A field two systems disagree on (or, for field `(identity)`, an
/// incoming record that may be one of several candidates).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConflictDto {
    pub id: i64,
    pub entity: String,
    pub canonical_id: String,
    pub field_path: String,
    /// The value last synced with the source (the merge base).
    pub base: Option<Value>,
    /// The canonical value.
    pub ours: Option<Value>,
    /// The incoming system's value.
    pub theirs: Option<Value>,
    pub source_system: String,
    /// `open` or `resolved`.
    pub status: String,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl From<store::Conflict> for ConflictDto {
    fn from(c: store::Conflict) -> Self {
        ConflictDto {
            id: c.id,
            entity: c.entity.to_string(),
            canonical_id: c.canonical_id.to_string(),
            field_path: c.field_path,
            base: c.base,
            ours: c.ours,
            theirs: c.theirs,
            source_system: c.source_system,
            status: c.status,
            resolution: c.resolution,
            resolved_by: c.resolved_by,
            created_at: c.created_at,
            resolved_at: c.resolved_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConflictQuery {
    /// Only conflicts of this entity.
    #[param(inline)]
    pub entity: Option<EntityKind>,
    /// Resolved ones too.
    #[serde(default)]
    pub all: bool,
}

/// A decision: exactly one of `take` and `value`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// `theirs`, `ours`, the name of the system whose value to take, or,
    /// for identity conflicts, the canonical id of the candidate.
    pub take: Option<String>,
    /// The value to set (any JSON; `null` clears the field).
    #[serde(default, deserialize_with = "present")]
    pub value: Option<Value>,
    /// Why, kept with the decision.
    pub note: Option<String>,
}

/// A field that is there, even as `null`, is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

// Built by hand: "exactly one of take and value" is a `oneOf` the derive
// cannot express.
impl utoipa::PartialSchema for ResolveRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, AllOfBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type,
        };
        let text = |t: &str| Some(t.to_owned());
        let fields = ObjectBuilder::new()
            .description(text("A decision: exactly one of `take` and `value`."))
            .property(
                "take",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .description(text(
                        "`theirs`, `ours`, the name of the system whose value to take, or, \
                         for identity conflicts, the canonical id of the candidate.",
                    )),
            )
            .property(
                "value",
                ObjectBuilder::new()
                    .schema_type(SchemaType::AnyValue)
                    .description(text(
                        "The value to set (any JSON; `null` clears the field).",
                    )),
            )
            .property(
                "note",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                    .description(text("Why, kept with the decision.")),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let exactly_one = OneOfBuilder::new()
            .item(ObjectBuilder::new().required("take"))
            .item(ObjectBuilder::new().required("value"));
        utoipa::openapi::schema::Schema::AllOf(
            AllOfBuilder::new().item(fields).item(exactly_one).build(),
        )
        .into()
    }
}

impl ToSchema for ResolveRequest {}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Resolved {
    pub conflict: i64,
    pub entity: String,
    pub canonical_id: String,
    /// The record's version after the decision.
    pub version: i64,
    /// Who decided: `api:TOKEN_NAME`.
    pub actor: String,
    /// Deliveries made right after.
    pub delivered: usize,
}

/// An outbox entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryDto {
    pub id: i64,
    pub entity: String,
    pub canonical_id: String,
    pub version: i64,
    pub target_system: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

impl From<store::OutboxEntry> for DeliveryDto {
    fn from(e: store::OutboxEntry) -> Self {
        DeliveryDto {
            id: e.id,
            entity: e.entity.to_string(),
            canonical_id: e.canonical_id.to_string(),
            version: e.version,
            target_system: e.target_system,
            status: e.status,
            attempts: e.attempts,
            next_attempt_at: e.next_attempt_at,
            last_error: e.last_error,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TargetQuery {
    /// Only deliveries to this system.
    pub target: Option<String>,
}

/// Which dead letters to replay: all (of a target), or these ids.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayDeadLetters {
    pub target: Option<String>,
    #[serde(deserialize_with = "params::ids")]
    #[schema(schema_with = params::ids_schema)]
    pub ids: Vec<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLettersReplayed {
    /// Entries put back in line.
    pub requeued: u64,
    pub delivered: usize,
    pub retrying: usize,
    /// Dead again.
    pub dead: usize,
}

/// A record set aside, as received, with why.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuarantinedDto {
    pub id: i64,
    pub system: String,
    pub entity: String,
    pub external_id: Option<String>,
    /// The record exactly as received.
    pub raw: Value,
    pub reason: String,
    pub rule: Option<String>,
    pub field_path: Option<String>,
    pub status: String,
    pub at: DateTime<Utc>,
}

/// Which quarantined records to replay (default: every open one).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayQuarantine {
    #[serde(deserialize_with = "params::ids")]
    #[schema(schema_with = params::ids_schema)]
    pub ids: Vec<i64>,
}

/// Re-read a job's source from a point in time.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayJob {
    /// RFC 3339 time (`2026-11-01T00:00:00Z`) or date (`2026-11-01`).
    #[schema(schema_with = params::time_schema)]
    pub since: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecordDto {
    pub entity: String,
    pub id: String,
    pub version: i64,
    pub content_hash: String,
    pub amount: Option<MoneyDto>,
    pub data: Value,
    /// The system the current version came from (none for operator edits).
    pub source_system: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkDto {
    pub system: String,
    pub external_id: String,
    pub synced_version: Option<i64>,
    /// The record as last synced with the system.
    pub synced_data: Option<Value>,
    pub remote_updated_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A canonical record and its links in every system.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecordWithLinks {
    pub record: RecordDto,
    pub links: Vec<LinkDto>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProvenanceDto {
    pub source_system: Option<String>,
    /// `pull`, `webhook` or `operator`.
    pub cause: String,
    /// Who, for operator actions (`api:NAME` through this API).
    pub actor: Option<String>,
    pub event_id: Option<String>,
    pub mapping_version: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionDto {
    pub version: i64,
    pub data: Value,
    pub content_hash: String,
    pub provenance: ProvenanceDto,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertDto {
    pub id: i64,
    pub rule: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    pub entity: Option<String>,
    pub record_ids: Vec<String>,
    pub reason: String,
    pub amount: Option<MoneyDto>,
    pub cause: Option<String>,
    pub created_at: DateTime<Utc>,
    /// `open`, `acked` or `resolved`.
    pub status: String,
    pub acked_by: Option<String>,
    pub acked_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

/// Which alerts to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// Only this rule, e.g. `duplicate_payment`.
    pub rule: Option<String>,
    /// Only this severity.
    #[param(inline)]
    pub severity: Option<Severity>,
    /// Open ones (the default), acknowledged, resolved, or all.
    #[param(inline)]
    pub status: Option<AlertState>,
    /// At most this many (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

/// Alerts by where they stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Open,
    Acked,
    Resolved,
    All,
}

/// Alerts to acknowledge.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    #[serde(deserialize_with = "params::ids")]
    #[schema(schema_with = params::some_ids_schema)]
    pub ids: Vec<i64>,
    /// Why, kept with the alert.
    pub note: Option<String>,
}

/// What acknowledging did, per id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AckResult {
    pub acked: Vec<i64>,
    /// Acknowledged or resolved before: left as they were.
    pub not_open: Vec<i64>,
    pub unknown: Vec<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// At most this many (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

/// A token, never its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenDto {
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<store::ApiToken> for TokenDto {
    fn from(t: store::ApiToken) -> Self {
        TokenDto {
            name: t.name,
            role: t.role.to_string(),
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// 1-64 letters, digits, `.`, `_` or `-`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    #[schema(pattern = "^(viewer|operator|admin)$")]
    pub role: String,
}

/// A new token: the only time its secret is shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub name: String,
    pub role: String,
    /// `cnc_…`: keep it now; only its hash is stored.
    pub token: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditDto {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub token_name: String,
    pub role: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The request body, when it was JSON.
    pub detail: Option<Value>,
}

// ---------------------------------------------------------------------------
// Handlers

#[utoipa::path(get, path = "/api/v1/status", tag = "status",
    responses(
        (status = 200, description = "Counts of records, links, queues, quarantine, conflicts, alerts", body = StatusDto),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn status(State(state): State<ApiState>, Auth(caller): Viewer) -> Result<Response, ApiError> {
    let report = state.store().status().await.map_err(ApiError::internal)?;
    reply(&state, &caller, StatusCode::OK, &StatusDto::from(report))
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "status",
    responses(
        (status = 200, description = "The configured jobs, in order", body = Vec<JobDto>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn jobs(State(state): State<ApiState>, Auth(caller): Viewer) -> Result<Response, ApiError> {
    let jobs: Vec<JobDto> = state
        .engine()
        .jobs()
        .iter()
        .map(|j| JobDto {
            name: j.name.clone(),
            schedule: j.schedule.clone(),
            source: (&j.source).into(),
            targets: j.targets.iter().map(Into::into).collect(),
            identity: j.identity.clone(),
            batch_size: j.batch_size,
        })
        .collect();
    reply(&state, &caller, StatusCode::OK, &jobs)
}

/// Marks a job as running through the API until dropped.
struct Running<'a> {
    state: &'a ApiState,
    job: String,
}

impl<'a> Running<'a> {
    fn start(state: &'a ApiState, job: &str) -> Result<Running<'a>, ApiError> {
        let mut running = state.inner.running.lock().expect("running jobs");
        if !running.insert(job.to_owned()) {
            return Err(ApiError::conflict(format!(
                "job {job} is running already; try again when it is done"
            )));
        }
        Ok(Running {
            state,
            job: job.to_owned(),
        })
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.state.inner.running.lock() {
            running.remove(&self.job);
        }
    }
}

fn known_job(state: &ApiState, name: &str) -> Result<(), ApiError> {
    if state.engine().jobs().iter().any(|j| j.name == name) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no job named {name:?}")))
    }
}

async fn run(
    state: &ApiState,
    name: &str,
    options: RunOptions,
) -> Result<crate::sync::JobReport, ApiError> {
    known_job(state, name)?;
    let _running = Running::start(state, name)?;
    let name = name.to_owned();
    with_engine(state, move |engine| async move {
        engine.run_job(&name, options).await
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/jobs/{name}/run", tag = "status",
    params(("name" = String, Path, description = "The job's name")),
    request_body(content = Option<RunRequest>, description = "Options; may be empty"),
    responses(
        (status = 200, description = "The run is over: what it did", body = RunReport),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is running already", body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 500, description = "The run failed (details in the server log)", body = ErrorBody),
        (status = 502, description = "A connected system failed the run", body = ErrorBody)))]
async fn run_job(
    State(state): State<ApiState>,
    Auth(caller): Operator,
    PathParams(name): PathParams<String>,
    Body(request): Body<RunRequest>,
) -> Result<Response, ApiError> {
    let options = RunOptions {
        full: request.full,
        dry_run: request.dry_run,
        ..RunOptions::default()
    };
    let report = run(&state, &name, options).await?;
    reply(&state, &caller, StatusCode::OK, &RunReport::from(report))
}

#[utoipa::path(get, path = "/api/v1/conflicts", tag = "conflicts",
    params(ConflictQuery),
    responses(
        (status = 200, description = "Open conflicts (all with `all=true`), oldest first", body = Vec<ConflictDto>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn conflicts(
    State(state): State<ApiState>,
    Auth(caller): Viewer,
    QueryParams(query): QueryParams<ConflictQuery>,
) -> Result<Response, ApiError> {
    let list = state
        .store()
        .conflicts(query.entity, query.all, LIST_LIMIT)
        .await
        .map_err(ApiError::internal)?;
    let list: Vec<ConflictDto> = list
        .into_iter()
        .map(|c| masked_conflict(&state, &caller, c))
        .collect();
    reply(&state, &caller, StatusCode::OK, &list)
}

/// A conflict on a sensitive field shows both sides masked to viewers.
fn masked_conflict(state: &ApiState, caller: &super::Caller, c: store::Conflict) -> ConflictDto {
    let mut dto = ConflictDto::from(c);
    if caller.role == Role::Viewer && state.inner.masker.is_sensitive(&dto.field_path) {
        for side in [&mut dto.base, &mut dto.ours, &mut dto.theirs]
            .into_iter()
            .flatten()
        {
            super::mask::mask_all(side);
        }
    }
    dto
}

fn conflict_id(text: &str) -> Result<i64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a conflict id (a number)")))
}

#[utoipa::path(get, path = "/api/v1/conflicts/{id}", tag = "conflicts",
    params(("id" = i64, Path, minimum = 1, description = "The conflict's id")),
    responses(
        (status = 200, description = "Base, ours and theirs", body = ConflictDto),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn conflict(
    State(state): State<ApiState>,
    Auth(caller): Viewer,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    let id = conflict_id(&id)?;
    let c = state
        .store()
        .conflict(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no conflict {id}")))?;
    let dto = masked_conflict(&state, &caller, c);
    reply(&state, &caller, StatusCode::OK, &dto)
}

#[utoipa::path(post, path = "/api/v1/conflicts/{id}/resolve", tag = "conflicts",
    params(("id" = i64, Path, minimum = 1, description = "The conflict's id")),
    request_body = ResolveRequest,
    responses(
        (status = 200, description = "Decided: a new version by `api:TOKEN_NAME`, delivered to every system that receives the entity", body = Resolved),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not open any more", body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 500, body = ErrorBody),
        (status = 502, description = "A connected system failed", body = ErrorBody)))]
async fn resolve_conflict(
    State(state): State<ApiState>,
    Auth(caller): Operator,
    PathParams(id): PathParams<String>,
    Body(request): Body<ResolveRequest>,
) -> Result<Response, ApiError> {
    let id = conflict_id(&id)?;
    let conflict = state
        .store()
        .conflict(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no conflict {id}")))?;
    if conflict.status != "open" {
        return Err(ApiError::conflict(format!(
            "conflict {id} is {} already",
            conflict.status
        )));
    }
    let unprocessable =
        |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", m);
    let choice = match (request.take.as_deref(), request.value) {
        (Some(_), Some(_)) => return Err(unprocessable("give take or value, not both".into())),
        (None, None) => return Err(unprocessable("say what to take: take or value".into())),
        (None, Some(v)) => Choice::Value(v),
        (Some("theirs"), None) => Choice::Theirs,
        (Some("ours"), None) => Choice::Ours,
        (Some(s), None) if s == conflict.source_system || state.inner.systems.contains(s) => {
            Choice::System(s.to_owned())
        }
        (Some(s), None) if conflict.field_path == IDENTITY_FIELD => Choice::Link(
            CanonicalId::parse(s).map_err(|e| unprocessable(format!("take {s:?}: {e}")))?,
        ),
        (Some(s), None) => {
            return Err(unprocessable(format!(
                "take {s:?}: expected theirs, ours or a system name ({} raised this conflict)",
                conflict.source_system
            )));
        }
    };
    let actor = caller.actor();
    let (version, delivered) = {
        let actor = actor.clone();
        with_engine(&state, move |engine| async move {
            let version = engine
                .resolve_conflict(id, choice, &actor, request.note.as_deref())
                .await?;
            Ok((version, engine.deliver_all(None).await?))
        })
        .await?
    };
    let body = Resolved {
        conflict: id,
        entity: conflict.entity.to_string(),
        canonical_id: conflict.canonical_id.to_string(),
        version,
        actor,
        delivered: delivered.delivered,
    };
    reply(&state, &caller, StatusCode::OK, &body)
}

#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "replay",
    params(TargetQuery),
    responses(
        (status = 200, description = "Deliveries given up on, oldest first", body = Vec<DeliveryDto>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn dead_letters(
    State(state): State<ApiState>,
    Auth(caller): Viewer,
    QueryParams(query): QueryParams<TargetQuery>,
) -> Result<Response, ApiError> {
    let list: Vec<DeliveryDto> = state
        .store()
        .outbox_dead(query.target.as_deref(), LIST_LIMIT)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(Into::into)
        .collect();
    reply(&state, &caller, StatusCode::OK, &list)
}

#[utoipa::path(post, path = "/api/v1/replay/dead-letters", tag = "replay",
    request_body(content = Option<ReplayDeadLetters>, description = "Which; empty: all"),
    responses(
        (status = 200, description = "Put back in line and delivered now", body = DeadLettersReplayed),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 500, body = ErrorBody),
        (status = 502, description = "A connected system failed", body = ErrorBody)))]
async fn replay_dead_letters(
    State(state): State<ApiState>,
    Auth(caller): Operator,
    Body(request): Body<ReplayDeadLetters>,
) -> Result<Response, ApiError> {
    let (requeued, report) = with_engine(&state, move |engine| async move {
        let requeued = engine
            .store()
            .outbox_requeue(request.target.as_deref(), &request.ids)
            .await?;
        Ok((
            requeued,
            engine.deliver_all(request.target.as_deref()).await?,
        ))
    })
    .await?;
    let body = DeadLettersReplayed {
        requeued,
        delivered: report.delivered,
        retrying: report.retry_later,
        dead: report.dead_lettered,
    };
    reply(&state, &caller, StatusCode::OK, &body)
}

#[utoipa::path(get, path = "/api/v1/quarantine", tag = "replay",
    responses(
        (status = 200, description = "Open quarantined records, oldest first", body = Vec<QuarantinedDto>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn quarantine(
    State(state): State<ApiState>,
    Auth(caller): Viewer,
) -> Result<Response, ApiError> {
    let list: Vec<QuarantinedDto> = state
        .store()
        .quarantined_open(&[], LIST_LIMIT)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|q| QuarantinedDto {
            id: q.id,
            system: q.item.system,
            entity: q.item.entity.to_string(),
            external_id: q.item.external_id,
            raw: q.item.raw,
            reason: q.item.reason,
            rule: q.item.rule,
            field_path: q.item.field_path,
            status: q.status,
            at: q.at,
        })
        .collect();
    reply(&state, &caller, StatusCode::OK, &list)
}

#[utoipa::path(post, path = "/api/v1/replay/quarantine", tag = "replay",
    request_body(content = Option<ReplayQuarantine>, description = "Which; empty: every open one"),
    responses(
        (status = 200, description = "Mapped again with today's mappings; what passed is taken in and delivered", body = RunReport),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "Some ids are not open in quarantine", body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 500, body = ErrorBody),
        (status = 502, description = "A connected system failed", body = ErrorBody)))]
async fn replay_quarantine(
    State(state): State<ApiState>,
    Auth(caller): Operator,
    Body(request): Body<ReplayQuarantine>,
) -> Result<Response, ApiError> {
    if !request.ids.is_empty() {
        let open = state
            .store()
            .quarantined_open(&request.ids, LIST_LIMIT)
            .await
            .map_err(ApiError::internal)?;
        let missing: Vec<String> = request
            .ids
            .iter()
            .filter(|id| !open.iter().any(|q| q.id == **id))
            .map(ToString::to_string)
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::not_found(format!(
                "not open in quarantine: {}",
                missing.join(", ")
            )));
        }
    }
    let (mut report, delivered) = with_engine(&state, move |engine| async move {
        let report = engine.replay_quarantine(&request.ids).await?;
        Ok((report, engine.deliver_all(None).await?))
    })
    .await?;
    report.delivered += delivered.delivered;
    report.retry_later += delivered.retry_later;
    report.dead_lettered += delivered.dead_lettered;
    reply(&state, &caller, StatusCode::OK, &RunReport::from(report))
}

#[utoipa::path(post, path = "/api/v1/replay/jobs/{name}", tag = "replay",
    params(("name" = String, Path, description = "The job's name")),
    request_body = ReplayJob,
    responses(
        (status = 200, description = "The job's source re-read from `since`, and the run's report", body = RunReport),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 500, body = ErrorBody),
        (status = 502, description = "A connected system failed", body = ErrorBody)))]
async fn replay_job(
    State(state): State<ApiState>,
    Auth(caller): Operator,
    PathParams(name): PathParams<String>,
    Body(request): Body<ReplayJob>,
) -> Result<Response, ApiError> {
    let since = params::parse_time(&request.since).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            format!(
                "since {:?} is neither an RFC 3339 time nor a YYYY-MM-DD date",
                request.since
            ),
        )
    })?;
    let options = RunOptions {
        since: Some(since),
        ..RunOptions::default()
    };
    let report = run(&state, &name, options).await?;
    reply(&state, &caller, StatusCode::OK, &RunReport::from(report))
}

/// A record named by canonical id or by `SYSTEM:EXTERNAL_ID`.
async fn find_record(
    store: &Store,
    entity: &str,
    id: &str,
) -> Result<(EntityKind, CanonicalId), ApiError> {
    let entity = EntityKind::from_str(entity).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // Canonical ids never hold a colon; SYSTEM:EXTERNAL_ID always does.
    let Some((system, external)) = id.split_once(':') else {
        // Not a canonical id: it names no record, as an unknown one does.
        let id = CanonicalId::parse(id)
            .map_err(|e| ApiError::not_found(format!("no {entity} has the id {id:?} ({e})")))?;
        return Ok((entity, id));
    };
    let link = store
        .find_link(entity, system, external)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::not_found(format!("no {entity} is linked to {system} {external}"))
        })?;
    Ok((entity, link.canonical_id))
}

#[utoipa::path(get, path = "/api/v1/records/{entity}/{id}", tag = "records",
    params(
        ("entity" = inline(EntityKind), Path, description = "The kind of record"),
        ("id" = String, Path, description = "Canonical id, or SYSTEM:EXTERNAL_ID")),
    responses(
        (status = 200, description = "The record and its links", body = RecordWithLinks),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn show_record(
    State(state): State<ApiState>,
    Auth(caller): Viewer,
    PathParams((entity, id)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let store = state.store();
    let (entity, id) = find_record(store, &entity, &id).await?;
    let r = store
        .get_record(entity, &id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no {entity} {id}")))?;
    let links = store
        .links_of(entity, &id)
        .await
        .map_err(ApiError::internal)?;
    let body = RecordWithLinks {
        record: RecordDto {
            entity: r.entity.to_string(),
            id: r.id.to_string(),
            version: r.version,
            content_hash: r.content_hash,
            amount: r.amount.map(Into::into),
            data: r.data,
            source_system: r.source_system,
            created_at: r.created_at,
            updated_at: r.updated_at,
        },
        links: links
            .into_iter()
            .map(|l| LinkDto {
                system: l.system,
                external_id: l.external_id,
                synced_version: l.synced_version,
                synced_data: l.synced_data,
                remote_updated_at: l.remote_updated_at,
                updated_at: l.updated_at,
            })
            .collect(),
    };
    reply(&state, &caller, StatusCode::OK, &body)
}

#[utoipa::path(get, path = "/api/v1/records/{entity}/{id}/history", tag = "records",
    params(
        ("entity" = inline(EntityKind), Path, description = "The kind of record"),
        ("id" = String, Path, description = "Canonical id, or SYSTEM:EXTERNAL_ID")),
    responses(
        (status = 200, description = "Every version, oldest first: what, when, from where, by whom", body = Vec<VersionDto>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn record_history(
    State(state): State<ApiState>,
    Auth(caller): Viewer,
    PathParams((entity, id)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let store = state.store();
    let (entity, id) = find_record(store, &entity, &id).await?;
    let versions = store
        .history(entity, &id)
        .await
        .map_err(ApiError::internal)?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("no {entity} {id}")));
    }
    let body: Vec<VersionDto> = versions
        .into_iter()
        .map(|v| VersionDto {
            version: v.version,
            data: v.data,
            content_hash: v.content_hash,
            provenance: ProvenanceDto {
                source_system: v.provenance.source_system,
                cause: v.provenance.cause.as_str().to_owned(),
                actor: v.provenance.actor,
                event_id: v.provenance.event_id,
                mapping_version: v.provenance.mapping_version,
            },
            at: v.at,
        })
        .collect();
    reply(&state, &caller, StatusCode::OK, &body)
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    params(AlertQuery),
    responses(
        (status = 200, description = "Data-quality alerts, newest first (open ones unless `status` says otherwise)", body = Vec<AlertDto>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn alerts(
    State(state): State<ApiState>,
    Auth(caller): Viewer,
    QueryParams(query): QueryParams<AlertQuery>,
) -> Result<Response, ApiError> {
    let limit = params::limit(query.limit, 1000).map_err(ApiError::bad_request)?;
    let status = match query.status.unwrap_or(AlertState::Open) {
        AlertState::Open => Some("open"),
        AlertState::Acked => Some("acked"),
        AlertState::Resolved => Some("resolved"),
        AlertState::All => None,
    };
    let filter = AlertFilter {
        rule: query.rule,
        severity: query.severity,
        status: status.map(str::to_owned),
        limit: Some(limit),
    };
    let list: Vec<AlertDto> = state
        .store()
        .alerts(&filter)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|a| AlertDto {
            id: a.id,
            rule: a.alert.rule,
            severity: a.alert.severity.as_str().to_owned(),
            entity: a.alert.entity.map(|e| e.to_string()),
            record_ids: a.alert.record_ids,
            reason: a.alert.reason,
            amount: a.alert.amount.map(Into::into),
            cause: a.alert.cause,
            created_at: a.created_at,
            status: a.status,
            acked_by: a.acked_by,
            acked_at: a.acked_at,
            note: a.note,
        })
        .collect();
    reply(&state, &caller, StatusCode::OK, &list)
}

#[utoipa::path(post, path = "/api/v1/alerts/ack", tag = "alerts",
    request_body = AckRequest,
    responses(
        (status = 200, description = "Acknowledged by `api:TOKEN_NAME`; ids not open or unknown are listed, not changed", body = AckResult),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn ack_alerts(
    State(state): State<ApiState>,
    Auth(caller): Operator,
    Body(request): Body<AckRequest>,
) -> Result<Response, ApiError> {
    if request.ids.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            "name the alerts to acknowledge: ids is empty",
        ));
    }
    let outcome = state
        .store()
        .ack_alerts(&request.ids, &caller.actor(), request.note.as_deref())
        .await
        .map_err(ApiError::internal)?;
    let body = AckResult {
        acked: outcome.acked,
        not_open: outcome.not_open,
        unknown: outcome.unknown,
    };
    reply(&state, &caller, StatusCode::OK, &body)
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "admin",
    responses(
        (status = 200, description = "Every token, active and revoked; never their secrets", body = Vec<TokenDto>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn tokens(State(state): State<ApiState>, Auth(caller): Admin) -> Result<Response, ApiError> {
    let list: Vec<TokenDto> = state
        .store()
        .api_tokens()
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(Into::into)
        .collect();
    reply(&state, &caller, StatusCode::OK, &list)
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "admin",
    request_body = CreateToken,
    responses(
        (status = 201, description = "Created; the secret is in this answer and nowhere else", body = CreatedToken),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "An active token has that name", body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_token(
    State(state): State<ApiState>,
    Auth(caller): Admin,
    Body(request): Body<CreateToken>,
) -> Result<Response, ApiError> {
    let unprocessable =
        |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", m);
    if !super::valid_token_name(&request.name) {
        return Err(unprocessable(format!(
            "{:?}: token names are 1-64 letters, digits, `.`, `_` or `-`",
            request.name
        )));
    }
    let role = Role::from_str(&request.role).map_err(unprocessable)?;
    let token = super::generate_token().map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    let created = state
        .store()
        .create_api_token(&request.name, role, &super::hash_token(&token))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "an active token is named {:?}; revoke it first or pick another name",
                request.name
            ))
        })?;
    let body = CreatedToken {
        name: created.name,
        role: created.role.to_string(),
        token,
    };
    reply(&state, &caller, StatusCode::CREATED, &body)
}

#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "admin",
    params(("name" = String, Path, description = "The token's name")),
    responses(
        (status = 204, description = "Revoked: it no longer opens anything"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No active token has that name", body = ErrorBody)))]
async fn revoke_token(
    State(state): State<ApiState>,
    Auth(_caller): Admin,
    PathParams(name): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    let revoked = state
        .store()
        .revoke_api_token(&name)
        .await
        .map_err(ApiError::internal)?;
    if revoked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no active token is named {name:?}"
        )))
    }
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "admin",
    params(LimitQuery),
    responses(
        (status = 200, description = "Mutating calls, newest first", body = Vec<AuditDto>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn audit(
    State(state): State<ApiState>,
    Auth(caller): Admin,
    QueryParams(query): QueryParams<LimitQuery>,
) -> Result<Response, ApiError> {
    let limit = params::limit(query.limit, 1000).map_err(ApiError::bad_request)?;
    let list: Vec<AuditDto> = state
        .store()
        .api_audit(limit)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|e| AuditDto {
            id: e.id,
            at: e.at,
            token_name: e.call.token_name,
            role: e.call.role.to_string(),
            method: e.call.method,
            path: e.call.path,
            status: e.call.status,
            detail: e.call.detail,
        })
        .collect();
    reply(&state, &caller, StatusCode::OK, &list)
}
