//! The store: canonical records and their history, links to external ids,
//! cursors, inbox and outbox, quarantine, conflicts and alerts.
//!
//! One [`Store`] API over two backends: SQLite (the embedded default, a file
//! created on first use) and PostgreSQL (production, several daemons sharing
//! one state). Every statement is written once and runs on both: SQL uses
//! `$N` placeholders, which SQLite accepts too, and the few types that differ
//! (money) go through [`Dialect`].
//!
//! Writes that belong together — the records read in one page, their history,
//! links, outbox entries and the source cursor — are committed as one
//! [`Batch`] in one transaction, so a crash loses nothing and duplicates
//! nothing.

mod dialect;
mod types;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{Connection, Row};

use crate::model::{CanonicalId, Currency, EntityKind, Money};
use crate::settings::{StoreSettings, redact_url};

use dialect::Dialect;
pub use types::*;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// What can go wrong in the store. Each variant names the thing involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store URL {url:?} is not understood: expected sqlite://PATH, sqlite::memory: or postgres://…"
    )]
    UnsupportedUrl { url: String },
    #[error("cannot open the store at {target}")]
    Open {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the store at {target}")]
    Migrate {
        target: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error(
        "the store at {target} is at schema {applied} of {known}: run `concord db migrate` first"
    )]
    NotMigrated {
        target: String,
        applied: usize,
        known: usize,
    },
    #[error(
        "{entity} {id} is at version {actual}, not {expected}: it was changed concurrently; re-read and retry"
    )]
    VersionConflict {
        entity: EntityKind,
        id: CanonicalId,
        expected: i64,
        actual: i64,
    },
    #[error("{what} {id} is not open (already resolved or replayed?)")]
    NotOpen { what: &'static str, id: i64 },
    #[error("stored value in {table}.{column} is not valid: {reason}")]
    Corrupt {
        table: &'static str,
        column: &'static str,
        reason: String,
    },
    #[error(
        "work {work_id} was processed already (its effects are committed): acknowledge it and do nothing"
    )]
    AlreadyProcessed { work_id: String },
    #[error("store query failed: {context}")]
    Query {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    fn query(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Query { context, source }
    }
}

/// Rows per multi-row INSERT (11 columns at most: well under both
/// backends' bind-parameter limits).
const ROWS_PER_STATEMENT: usize = 200;

/// Ids per look-up statement. Each statement costs a hand-over to the
/// store's connection and back (on SQLite, to sqlx's worker thread): an
/// unchanged re-run of 100,000 records on SQLite went from about 160,000 to
/// 185,000–214,000 records/s when 100 became 500 (benches/sync.rs).
/// PostgreSQL connections have Nagle's algorithm off ([`no_delay`]), so
/// larger statements do not stall there.
const LOOKUP_CHUNK: usize = 500;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a link row stores as its synced data and hash ([`synced_to_store`]).
type StoredSynced<'a> = (Option<&'a Value>, Option<String>);

/// One outbox entry's settlement: (id, status, next attempt, error,
/// external id, attempts to add).
type SettleRow<'a> = (
    i64,
    &'a str,
    DateTime<Utc>,
    Option<&'a str>,
    Option<&'a str>,
    i64,
);

/// Which database is behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The durable state of concord. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// The URL with any password removed, for messages.
    target: String,
    /// The PostgreSQL schema concord keeps its tables in, when not the default.
    schema: Option<String>,
    /// A SQLite file's checkpoints, on a task of their own while any
    /// handle of the store lives.
    _checkpoints: Option<Arc<Checkpoints>>,
}

/// How often a SQLite store's write-ahead log is copied into the database
/// (a passive checkpoint: writers go on meanwhile). About as often as a
/// first load filled the 40 MB the commits checkpointed at before; every
/// quarter second copied the pages a load rewrites (index pages) more
/// often, and gained less.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(2000);

/// The task that checkpoints a SQLite store; ends with the last handle.
struct Checkpoints(tokio::task::JoinHandle<()>);

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Checkpoints {
    /// Copies the write-ahead log into the database every
    /// [`CHECKPOINT_EVERY`], beside the commits instead of inside one. A
    /// commit that crosses SQLite's automatic checkpoint threshold copies
    /// the log itself before it returns, and a first load waited for that
    /// (the sync bench, 200,000 records: take-in 9.5–10.0 s with no
    /// checkpoint at all, 12.3–12.9 s with the commits checkpointing; with
    /// this task 10.4–10.5 s against 11.7 s, and 56 against 60 s at
    /// 1,000,000). The threshold stays, raised, for a log that grows faster
    /// than this task copies it.
    fn start(pool: SqlitePool) -> Checkpoints {
        Checkpoints(tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECKPOINT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if pool.is_closed() {
                    return;
                }
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                {
                    tracing::debug!(message = "A checkpoint did not run.", error = %e);
                }
            }
        }))
    }
}

/// Runs `$body` once per backend with `$pool` bound to the concrete pool and
/// `$db` to the concrete `sqlx::Database`, so each query is written once.
macro_rules! on_pool {
    ($store:expr, |$pool:ident, $db:ident| $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $body
            }
            Pool::Postgres($pool) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}

/// A link's synced data as read: its own copy, or, when it names the
/// version it holds (data NULL, hash set; see [`LinkWrite`]), that
/// version's data. A literal for `concat!`, over a `FROM links` without an
/// alias.
macro_rules! synced_data_column {
    () => {
        "COALESCE(links.synced_data, CASE WHEN links.synced_hash IS NOT NULL THEN
           (SELECT v.data FROM record_versions v WHERE v.entity = links.entity
              AND v.id = links.canonical_id AND v.version = links.synced_version) END)"
    };
}

/// The columns [`link_from_row`] reads, as a literal for `concat!`.
macro_rules! link_columns {
    () => {
        concat!(
            "system, external_id, canonical_id, synced_version, ",
            synced_data_column!(),
            " AS synced_data, synced_hash, remote_updated_at, updated_at"
        )
    };
}

/// Reads a [`Link`] from a row selected with [`link_columns`].
macro_rules! link_from_row {
    ($entity:expr, $row:expr) => {{
        let row = $row;
        let q = || StoreError::query("read link");
        let canonical: String = row.try_get("canonical_id").map_err(q())?;
        let synced_data: Option<Json<Value>> = row.try_get("synced_data").map_err(q())?;
        Ok::<_, StoreError>(Link {
            entity: $entity,
            system: row.try_get("system").map_err(q())?,
            external_id: row.try_get("external_id").map_err(q())?,
            canonical_id: parse_id("links", &canonical)?,
            synced_version: row.try_get("synced_version").map_err(q())?,
            synced_data: synced_data.map(|Json(v)| v),
            synced_hash: row.try_get("synced_hash").map_err(q())?,
            remote_updated_at: row.try_get("remote_updated_at").map_err(q())?,
            updated_at: row.try_get("updated_at").map_err(q())?,
        })
    }};
}

/// Inserts a [`NewConflict`] through any executor (pool or transaction).
macro_rules! insert_conflict {
    ($executor:expr, $conflict:expr, $now:expr) => {{
        let conflict: &NewConflict = $conflict;
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO conflicts (entity, canonical_id, field_path, base, ours, theirs, source_system, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(conflict.entity.as_str())
        .bind(conflict.canonical_id.as_str())
        .bind(&conflict.field_path)
        .bind(conflict.base.as_ref().map(Json))
        .bind(conflict.ours.as_ref().map(Json))
        .bind(conflict.theirs.as_ref().map(Json))
        .bind(&conflict.source_system)
        .bind($now)
        .fetch_one($executor)
        .await
        .map_err(StoreError::query("open conflict"))
    }};
}

/// Inserts a [`QuarantineItem`] through any executor (pool or transaction).
macro_rules! insert_quarantine {
    ($executor:expr, $item:expr, $now:expr) => {{
        let item: &QuarantineItem = $item;
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO quarantine (system, entity, external_id, raw, reason, rule, field_path, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(item.system.as_str())
        .bind(item.entity.as_str())
        .bind(item.external_id.as_deref())
        .bind(Json(&item.raw))
        .bind(item.reason.as_str())
        .bind(item.rule.as_deref())
        .bind(item.field_path.as_deref())
        .bind($now)
        .fetch_one($executor)
        .await
        .map_err(StoreError::query("quarantine record"))
    }};
}

/// Inserts a [`NewAlert`] through any executor (pool or transaction).
macro_rules! insert_alert {
    ($db:ty, $executor:expr, $alert:expr, $now:expr) => {{
        let alert: &NewAlert = $alert;
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO alerts (rule, severity, entity, record_ids, reason, amount, currency, created_at, cause)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (rule, cause) WHERE cause IS NOT NULL DO NOTHING RETURNING id",
        )
        .bind(&alert.rule)
        .bind(alert.severity.as_str())
        .bind(alert.entity.map(EntityKind::as_str))
        .bind(Json(&alert.record_ids))
        .bind(&alert.reason)
        .bind(alert.amount.as_ref().map(|m| <$db>::encode_amount(m.amount())))
        .bind(alert.amount.as_ref().map(|m| m.currency().as_str().to_owned()))
        .bind($now)
        .bind(alert.cause.as_deref())
        .fetch_optional($executor)
        .await
        .map_err(StoreError::query("raise alert"))
    }};
}

mod admin;
pub use admin::{ApiAuditEntry, ApiAuditWrite, ApiToken, MetricsSnapshot, Role};
mod queue;
pub use queue::*;
// `concord queue`: counts, dead letters and requeueing across queues.
mod queue_admin;
pub use queue_admin::*;
mod serve;
pub use serve::{ClaimedEvent, Retry};
mod sync;
// Data-quality alerts: after the macros, which it uses.
mod quality;
pub use quality::*;
mod reconcile;
pub use reconcile::{
    AllocationChange, AllocationChangeError, AllocationStatus, NewAllocation, PayerAlias,
    StoredAllocation,
};
// Payments for confirmed and manual allocations, pushed to the ERP.
mod reconcile_push;
pub use reconcile_push::{
    AllocationDecision, AllocationPayment, AppliedSnapshot, PaymentBuilder, PaymentDelivery,
    PaymentEffect, PaymentOutcome, PaymentStatus, PaymentWrite,
};

impl Store {
    /// Opens the store described by `settings`: SQLite files are created on
    /// first use (WAL mode, busy timeout); PostgreSQL must be reachable within
    /// the connect timeout. Runs pending migrations when `auto_migrate` is
    /// set, otherwise fails if the schema is behind.
    pub async fn open(settings: &StoreSettings) -> Result<Store> {
        let store = Store::connect(settings).await?;
        if settings.auto_migrate {
            store.migrate().await?;
        } else {
            store.ensure_migrated().await?;
        }
        Ok(store)
    }

    /// Connects without touching the schema.
    pub async fn connect(settings: &StoreSettings) -> Result<Store> {
        let url = settings.url.as_str();
        let target = redact_url(url);
        let open_err = |source| StoreError::Open {
            target: target.clone(),
            source,
        };
        let timeout = Duration::from_secs(settings.connect_timeout_secs);
        let mut checkpoints = None;
        let pool = if url.starts_with("sqlite:") {
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let options = SqliteConnectOptions::from_str(url)
                .map_err(open_err)?
                .create_if_missing(true)
                .journal_mode(if in_memory {
                    SqliteJournalMode::Memory
                } else {
                    SqliteJournalMode::Wal
                })
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_millis(settings.busy_timeout_ms))
                .foreign_keys(true)
                .pragma("cache_size", "-65536")
                // A commit checkpoints only when the log passes 160 MB:
                // `Checkpoints` copies it every two seconds, beside the
                // commits (the default, 4 MB, made a load copy pages it
                // writes again and again — index pages — many times over).
                .pragma("wal_autocheckpoint", "40000");
            if !in_memory {
                create_parent_dir(options.get_filename()).map_err(|e| open_err(e.into()))?;
            }
            // An in-memory database lives and dies with its one connection.
            let max = if in_memory {
                1
            } else {
                settings.max_connections
            };
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .acquire_timeout(timeout)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await
                .map_err(open_err)?;
            if !in_memory {
                checkpoints = Some(Arc::new(Checkpoints::start(pool.clone())));
            }
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let mut options = PgConnectOptions::from_str(url).map_err(open_err)?;
            if let Some(password) = &settings.password {
                use secrecy::ExposeSecret;
                options = options.password(password.expose_secret());
            }
            if let Some(schema) = &settings.schema {
                options = options.options([("search_path", schema.as_str())]);
            }
            // Statements are prepared once per connection. After five runs
            // PostgreSQL may keep a generic plan for one, made while the
            // tables it reads were small (a first load starts empty), that
            // goes on scanning them as they grow: a first load of 100,000
            // records ran at 191 records/s. Custom plans are made for the
            // tables as they are at each execution, for a fraction of a
            // millisecond.
            options = options.options([("plan_cache_mode", "force_custom_plan")]);
            // One direct connection first: a pool that cannot connect only
            // reports a timeout, while this names the cause (refused, unknown
            // host, authentication failed, no such database).
            let probe = tokio::time::timeout(timeout, sqlx::PgConnection::connect_with(&options))
                .await
                .map_err(|_| open_err(sqlx::Error::PoolTimedOut))?
                .map_err(open_err)?;
            let _ = probe.close().await;
            let pool = PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(timeout)
                .after_connect(|conn, _meta| Box::pin(async move { no_delay(conn).await }))
                .connect_with(options)
                .await
                .map_err(open_err)?;
            Pool::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl { url: target });
        };
        Ok(Store {
            pool,
            target,
            schema: settings.schema.clone(),
            _checkpoints: checkpoints,
        })
    }

    /// The backend behind this store.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Refreshes the planner's statistics of the sync tables after a large
    /// load. PostgreSQL plans from statistics; taken while a table was
    /// empty, they made it read every link of a system per look-up by
    /// canonical id (100k links: 115 ms per look-up) until autovacuum
    /// caught up. SQLite's hot queries name their index and need nothing.
    pub async fn refresh_statistics(&self) -> Result<()> {
        if let Pool::Postgres(pool) = &self.pool {
            sqlx::query("ANALYZE records, record_versions, links, identity_keys, outbox")
                .execute(pool)
                .await
                .map_err(StoreError::query("refresh statistics"))?;
        }
        Ok(())
    }

    /// The store's URL without credentials, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.pool {
            Pool::Sqlite(_) => &SQLITE_MIGRATIONS,
            Pool::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies pending migrations. Returns how many were applied now.
    pub async fn migrate(&self) -> Result<usize> {
        if let (Pool::Postgres(pool), Some(schema)) = (&self.pool, &self.schema) {
            // Validated in settings as a plain identifier, so quoting is safe.
            let sql = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await
                .map_err(StoreError::query("create schema"))?;
        }
        let before = self.applied_migrations().await?;
        let result = on_pool!(self, |pool, _Db| self.migrator().run(pool).await);
        result.map_err(|source| StoreError::Migrate {
            target: self.target.clone(),
            source,
        })?;
        Ok(self.applied_migrations().await?.saturating_sub(before))
    }

    /// How many migrations this build knows, and how many the store has.
    pub async fn schema_state(&self) -> Result<(usize, usize)> {
        let known = self.migrator().iter().count();
        Ok((self.applied_migrations().await?, known))
    }

    async fn ensure_migrated(&self) -> Result<()> {
        let (applied, known) = self.schema_state().await?;
        if applied < known {
            return Err(StoreError::NotMigrated {
                target: self.target.clone(),
                applied,
                known,
            });
        }
        Ok(())
    }

    async fn applied_migrations(&self) -> Result<usize> {
        // The bookkeeping table appears with the first migration; its absence
        // means a fresh store, anything else is a real failure.
        let exists: bool = on_pool!(self, |pool, _Db| {
            let sql = match self.backend() {
                Backend::Sqlite => {
                    "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
                }
                Backend::Postgres => "SELECT to_regclass('_sqlx_migrations') IS NOT NULL",
            };
            sqlx::query_scalar(sql)
                .fetch_one(pool)
                .await
                .map_err(|source| StoreError::Open {
                    target: self.target.clone(),
                    source,
                })?
        });
        if !exists {
            return Ok(0);
        }
        let n: i64 = on_pool!(self, |pool, _Db| {
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool)
                .await
                .map_err(StoreError::query("count applied migrations"))?
        });
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Closes the pool, waiting for connections to return.
    pub async fn close(&self) {
        on_pool!(self, |pool, _Db| pool.close().await)
    }

    /// Commits everything in `batch` in one transaction: either all of it is
    /// stored or none of it. Records are checked against their expected
    /// version; a mismatch aborts the whole batch with
    /// [`StoreError::VersionConflict`].
    pub async fn commit(&self, batch: &Batch) -> Result<BatchOutcome> {
        let now = Utc::now();
        on_pool!(self, |pool, Db| {
            let mut tx = pool.begin().await.map_err(StoreError::query("begin"))?;
            let mut outcome = BatchOutcome::default();
            // First, so work done twice fails before it changes anything.
            for work_id in &batch.processed_work {
                let fresh = sqlx::query(
                    "INSERT INTO work_done (work_id, done_at_ms) VALUES ($1, $2) ON CONFLICT (work_id) DO NOTHING",
                )
                .bind(work_id)
                .bind(now.timestamp_millis())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("mark work done"))?
                .rows_affected();
                if fresh != 1 {
                    return Err(StoreError::AlreadyProcessed {
                        work_id: work_id.clone(),
                    });
                }
            }
            // Computed once, used by both tables: the hash, the amount, and
            // the data as the canonical JSON text the hash is of.
            type Prepared<'a, A> = (String, Option<A>, Option<String>, std::borrow::Cow<'a, str>);
            let prepared: Vec<Prepared<'_, <Db as Dialect>::Amount>> = batch
                .records
                .iter()
                .map(|w| {
                    let text = match &w.data_json {
                        Some(text) => std::borrow::Cow::Borrowed(text.as_str()),
                        None => std::borrow::Cow::Owned(crate::model::canonical_json(&w.data)),
                    };
                    debug_assert_eq!(
                        *text,
                        crate::model::canonical_json(&w.data),
                        "a record write's text is its data's"
                    );
                    let hash = w
                        .content_hash
                        .clone()
                        .unwrap_or_else(|| crate::model::text_hash(&text));
                    debug_assert_eq!(
                        hash,
                        crate::model::text_hash(&text),
                        "a record write's hash is its data's"
                    );
                    (
                        hash,
                        w.amount.as_ref().map(|m| Db::encode_amount(m.amount())),
                        w.amount.as_ref().map(|m| m.currency().as_str().to_owned()),
                        text,
                    )
                })
                .collect();
            // New records: multi-row inserts; any that exists already fails
            // the batch (found out after the rollback, below).
            let creates: Vec<usize> = (0..batch.records.len())
                .filter(|&i| batch.records[i].expected_version == 0)
                .collect();
            for chunk in creates.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO records (entity, id, version, content_hash, amount, currency, created_at, updated_at) ",
                );
                q.push_values(chunk, |mut row, &i| {
                    let w = &batch.records[i];
                    let (hash, amount, currency, _) = &prepared[i];
                    row.push_bind(w.entity.as_str())
                        .push_bind(w.id.as_str())
                        .push_bind(1_i64)
                        .push_bind(hash.as_str())
                        .push_bind(amount.to_owned())
                        .push_bind(currency.as_deref())
                        .push_bind(now)
                        .push_bind(now);
                });
                q.push(" ON CONFLICT (entity, id) DO NOTHING");
                let inserted = q
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("insert records"))?
                    .rows_affected();
                if inserted != chunk.len() as u64 {
                    drop(tx);
                    return Err(self.creation_conflict(batch, chunk).await);
                }
            }
            // Updates: many per statement, each only if the record is still
            // at the version it was read at; any that is not fails the batch.
            // A record written twice in one batch goes in separate
            // statements, in order (one statement updates a row once).
            let mut update_chunks: Vec<Vec<usize>> = vec![Vec::new()];
            let mut in_chunk = std::collections::HashSet::new();
            for i in (0..batch.records.len()).filter(|&i| batch.records[i].expected_version > 0) {
                let w = &batch.records[i];
                let last = update_chunks.last().map_or(0, Vec::len);
                if last == ROWS_PER_STATEMENT || in_chunk.contains(&(w.entity, w.id.as_str())) {
                    update_chunks.push(Vec::new());
                    in_chunk.clear();
                }
                in_chunk.insert((w.entity, w.id.as_str()));
                update_chunks.last_mut().expect("a chunk").push(i);
            }
            for chunk in update_chunks.iter().filter(|c| !c.is_empty()) {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE records SET version = v.column3 + 1, content_hash = v.column4,
                       amount = v.column5, currency = v.column6, updated_at = ",
                );
                q.push_bind(now).push(" FROM (");
                q.push_values(chunk, |mut row, &i| {
                    let w = &batch.records[i];
                    let (hash, amount, currency, _) = &prepared[i];
                    row.push_bind(w.entity.as_str())
                        .push_bind(w.id.as_str())
                        .push_bind(w.expected_version)
                        .push_bind(hash.as_str())
                        .push_bind(amount.to_owned())
                        .push_bind(currency.as_deref());
                });
                q.push(
                    ") AS v WHERE records.entity = v.column1 AND records.id = v.column2
                       AND records.version = v.column3",
                );
                let changed = q
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("update records"))?
                    .rows_affected();
                if changed != chunk.len() as u64 {
                    drop(tx);
                    return Err(self.update_conflict(batch, chunk).await);
                }
            }
            let all: Vec<usize> = (0..batch.records.len()).collect();
            for chunk in all.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO record_versions
                     (entity, id, version, data, content_hash, source_system, cause, actor, event_id, mapping_version, at) ",
                );
                q.push_values(chunk, |mut row, &i| {
                    let w = &batch.records[i];
                    let p = &w.provenance;
                    row.push_bind(w.entity.as_str())
                        .push_bind(w.id.as_str())
                        .push_bind(w.expected_version + 1)
                        .push_bind(prepared[i].3.as_ref())
                        .push_unseparated(<Db as Dialect>::JSON_TEXT)
                        .push_bind(prepared[i].0.as_str())
                        .push_bind(p.source_system.as_deref())
                        .push_bind(p.cause.as_str())
                        .push_bind(p.actor.as_deref())
                        .push_bind(p.event_id.as_deref())
                        .push_bind(p.mapping_version.as_deref())
                        .push_bind(now);
                });
                q.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("insert record versions"))?;
            }
            outcome.versions = batch
                .records
                .iter()
                .map(|w| w.expected_version + 1)
                .collect();

            // The last write of a link wins (one statement may not touch a
            // row twice).
            let mut last_link: HashMap<(EntityKind, &str, &str), usize> = HashMap::new();
            for (i, l) in batch.links.iter().enumerate() {
                last_link.insert((l.entity, l.system.as_str(), l.external_id.as_str()), i);
            }
            let mut links: Vec<usize> = last_link.into_values().collect();
            links.sort_unstable();
            // A link that holds a version written in this batch names it
            // instead of copying its data.
            let written: HashMap<(EntityKind, &str, i64), &str> = batch
                .records
                .iter()
                .zip(&prepared)
                .map(|(w, p)| {
                    (
                        (w.entity, w.id.as_str(), w.expected_version + 1),
                        p.0.as_str(),
                    )
                })
                .collect();
            let link_synced: Vec<StoredSynced<'_>> = batch
                .links
                .iter()
                .map(|l| synced_to_store(l, &written))
                .collect();
            for chunk in links.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO links (entity, system, external_id, canonical_id, synced_version, synced_data, synced_hash, remote_updated_at, source_hash, updated_at) ",
                );
                q.push_values(chunk, |mut row, &i| {
                    let l = &batch.links[i];
                    row.push_bind(l.entity.as_str())
                        .push_bind(l.system.as_str())
                        .push_bind(l.external_id.as_str())
                        .push_bind(l.canonical_id.as_str())
                        .push_bind(l.synced_version)
                        .push_bind(link_synced[i].0.map(Json))
                        .push_bind(link_synced[i].1.as_deref())
                        .push_bind(l.remote_updated_at)
                        .push_bind(l.source_hash.as_deref())
                        .push_bind(now);
                });
                q.push(
                    " ON CONFLICT (entity, system, external_id) DO UPDATE SET
                       canonical_id = excluded.canonical_id,
                       synced_version = excluded.synced_version,
                       synced_data = excluded.synced_data,
                       synced_hash = excluded.synced_hash,
                       remote_updated_at = excluded.remote_updated_at,
                       source_hash = excluded.source_hash,
                       updated_at = excluded.updated_at",
                );
                q.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("write links"))?;
            }
            // Source hashes of links whose records arrived unchanged, each
            // only while its link still holds what that record maps to.
            for chunk in batch.source_hashes.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE links SET source_hash = v.column5 FROM (",
                );
                q.push_values(chunk, |mut row, h| {
                    row.push_bind(h.entity.as_str())
                        .push_bind(h.system.as_str())
                        .push_bind(h.external_id.as_str())
                        .push_bind(h.synced_hash.as_str())
                        .push_bind(h.source_hash.as_str());
                });
                q.push(
                    ") AS v WHERE links.entity = v.column1 AND links.system = v.column2
                       AND links.external_id = v.column3 AND links.synced_hash = v.column4",
                );
                q.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("write source hashes"))?;
            }
            let keys: Vec<String> = batch
                .outbox
                .iter()
                .map(OutboxWrite::idempotency_key)
                .collect();
            for (chunk_no, chunk) in batch.outbox.chunks(ROWS_PER_STATEMENT).enumerate() {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO outbox (idempotency_key, entity, canonical_id, version, target_system, next_attempt_at, created_at, updated_at) ",
                );
                q.push_values(chunk.iter().enumerate(), |mut row, (j, entry)| {
                    row.push_bind(keys[chunk_no * ROWS_PER_STATEMENT + j].as_str())
                        .push_bind(entry.entity.as_str())
                        .push_bind(entry.canonical_id.as_str())
                        .push_bind(entry.version)
                        .push_bind(entry.target_system.as_str())
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(now);
                });
                q.push(" ON CONFLICT (idempotency_key) DO NOTHING");
                let inserted = q
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("enqueue outbox entries"))?
                    .rows_affected() as usize;
                outcome.outbox_enqueued += inserted;
                outcome.outbox_duplicates += chunk.len() - inserted;
            }
            for item in &batch.quarantine {
                insert_quarantine!(&mut *tx, item, now)?;
            }
            for alert in &batch.alerts {
                insert_alert!(Db, &mut *tx, alert, now)?;
            }
            for conflict in &batch.conflicts {
                insert_conflict!(&mut *tx, conflict, now)?;
            }
            // Identity keys: a record's old value of a key goes, the new one
            // comes. A record created in this batch has no old keys.
            let created: std::collections::HashSet<(EntityKind, &str)> = batch
                .records
                .iter()
                .filter(|w| w.expected_version == 0)
                .map(|w| (w.entity, w.id.as_str()))
                .collect();
            let mut last_key: HashMap<(EntityKind, &str, &str), &IdentityKeyWrite> = HashMap::new();
            let mut key_order: Vec<(EntityKind, &str, &str)> = Vec::new();
            for key in &batch.identity_keys {
                let k = (key.entity, key.canonical_id.as_str(), key.key_name.as_str());
                if last_key.insert(k, key).is_none() {
                    key_order.push(k);
                }
            }
            let stale: Vec<&(EntityKind, &str, &str)> = key_order
                .iter()
                .filter(|(entity, id, _)| !created.contains(&(*entity, *id)))
                .collect();
            // Grouped by key name, so that each statement is a search of
            // the (entity, canonical_id, key_name) index, not a scan.
            let mut stale_by_name: std::collections::BTreeMap<(&str, &str), Vec<&str>> =
                std::collections::BTreeMap::new();
            for (entity, id, name) in stale {
                stale_by_name
                    .entry((entity.as_str(), name))
                    .or_default()
                    .push(id);
            }
            for ((entity, name), ids) in &stale_by_name {
                for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                    let mut q =
                        sqlx::QueryBuilder::<Db>::new("DELETE FROM identity_keys WHERE entity = ");
                    q.push_bind(*entity)
                        .push(" AND key_name = ")
                        .push_bind(*name)
                        .push(" AND canonical_id IN ");
                    push_list(&mut q, chunk.iter().copied());
                    q.build()
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::query("replace identity keys"))?;
                }
            }
            let fresh: Vec<&IdentityKeyWrite> = key_order
                .iter()
                .map(|k| last_key[k])
                .filter(|k| k.key_value.is_some())
                .collect();
            for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO identity_keys (entity, key_name, key_value, canonical_id) ",
                );
                q.push_values(chunk, |mut row, key| {
                    row.push_bind(key.entity.as_str())
                        .push_bind(key.key_name.as_str())
                        .push_bind(key.key_value.as_deref())
                        .push_bind(key.canonical_id.as_str());
                });
                q.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("write identity keys"))?;
            }
            for r in &batch.resolved_conflicts {
                let closed = sqlx::query(
                    "UPDATE conflicts SET status = 'resolved', resolution = $2, resolved_by = $3, resolved_at = $4
                     WHERE id = $1 AND status = 'open'",
                )
                .bind(r.id)
                // A JSON document in both backends (JSONB in PostgreSQL).
                .bind(Json(&r.resolution))
                .bind(&r.actor)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("resolve conflict"))?
                .rows_affected();
                if closed != 1 {
                    return Err(StoreError::NotOpen {
                        what: "conflict",
                        id: r.id,
                    });
                }
                // Deliveries of the record held for it are due now, unless
                // another conflict with the same target is still open.
                sqlx::query(
                    "UPDATE outbox SET next_attempt_at = $2, updated_at = $2
                     WHERE status = 'pending' AND last_error LIKE $3 AND next_attempt_at > $2
                       AND EXISTS (SELECT 1 FROM conflicts r WHERE r.id = $1
                                   AND r.entity = outbox.entity AND r.canonical_id = outbox.canonical_id)
                       AND NOT EXISTS (SELECT 1 FROM conflicts o WHERE o.status = 'open'
                                   AND o.entity = outbox.entity AND o.canonical_id = outbox.canonical_id
                                   AND o.source_system = outbox.target_system)",
                )
                .bind(r.id)
                .bind(now)
                .bind(format!("{HELD_PREFIX}%"))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("release held deliveries"))?;
            }
            for id in &batch.replayed_quarantine {
                let closed = sqlx::query(
                    "UPDATE quarantine SET status = 'replayed' WHERE id = $1 AND status = 'open'",
                )
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("close quarantined record"))?
                .rows_affected();
                if closed != 1 {
                    return Err(StoreError::NotOpen {
                        what: "quarantined record",
                        id: *id,
                    });
                }
            }
            for cursor in &batch.cursors {
                sqlx::query(
                    "INSERT INTO cursors (system, entity, cursor, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (system, entity) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                )
                .bind(&cursor.system)
                .bind(&cursor.entity)
                .bind(&cursor.cursor)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("save cursor"))?;
            }
            tx.commit().await.map_err(StoreError::query("commit"))?;
            Ok(outcome)
        })
    }

    /// After a failed multi-row insert (rolled back): the first record of
    /// `chunk` that exists already, as a version conflict.
    async fn creation_conflict(&self, batch: &Batch, chunk: &[usize]) -> StoreError {
        let mut seen = std::collections::HashSet::new();
        for &i in chunk {
            let w = &batch.records[i];
            if !seen.insert((w.entity, w.id.as_str())) {
                return StoreError::VersionConflict {
                    entity: w.entity,
                    id: w.id.clone(),
                    expected: 0,
                    actual: 1,
                };
            }
            match self
                .record_heads(w.entity, std::slice::from_ref(&w.id))
                .await
            {
                Ok(heads) if !heads.is_empty() => {
                    return StoreError::VersionConflict {
                        entity: w.entity,
                        id: w.id.clone(),
                        expected: 0,
                        actual: heads[0].version,
                    };
                }
                Ok(_) => {}
                Err(e) => return e,
            }
        }
        StoreError::Corrupt {
            table: "records",
            column: "id",
            reason: "a new record could not be inserted, but none of its ids exists".into(),
        }
    }

    /// After a failed multi-row update (rolled back): the first record of
    /// `chunk` that is no longer at the version it was read at.
    async fn update_conflict(&self, batch: &Batch, chunk: &[usize]) -> StoreError {
        for &i in chunk {
            let w = &batch.records[i];
            match self
                .record_heads(w.entity, std::slice::from_ref(&w.id))
                .await
            {
                Ok(heads) => {
                    let actual = heads.first().map_or(0, |h| h.version);
                    if actual != w.expected_version {
                        return StoreError::VersionConflict {
                            entity: w.entity,
                            id: w.id.clone(),
                            expected: w.expected_version,
                            actual,
                        };
                    }
                }
                Err(e) => return e,
            }
        }
        StoreError::Corrupt {
            table: "records",
            column: "version",
            reason:
                "an update of records did not apply, but every record is at its expected version"
                    .into(),
        }
    }

    /// The current version of a record, with its data.
    pub async fn get_record(
        &self,
        entity: EntityKind,
        id: &CanonicalId,
    ) -> Result<Option<StoredRecord>> {
        on_pool!(self, |pool, Db| {
            let row = sqlx::query(
                "SELECT r.version, r.content_hash, r.amount, r.currency, r.created_at, r.updated_at, v.data, v.source_system
                 FROM records r JOIN record_versions v
                   ON v.entity = r.entity AND v.id = r.id AND v.version = r.version
                 WHERE r.entity = $1 AND r.id = $2",
            )
            .bind(entity.as_str())
            .bind(id.as_str())
            .fetch_optional(pool)
            .await
            .map_err(StoreError::query("read record"))?;
            let Some(row) = row else { return Ok(None) };
            let amount = decode_money::<Db>(
                "records",
                row.try_get("amount")
                    .map_err(StoreError::query("read record"))?,
                row.try_get("currency")
                    .map_err(StoreError::query("read record"))?,
            )?;
            let Json(data): Json<Value> = row
                .try_get("data")
                .map_err(StoreError::query("read record"))?;
            Ok(Some(StoredRecord {
                entity,
                id: id.clone(),
                version: row
                    .try_get("version")
                    .map_err(StoreError::query("read record"))?,
                content_hash: row
                    .try_get("content_hash")
                    .map_err(StoreError::query("read record"))?,
                amount,
                data,
                source_system: row
                    .try_get("source_system")
                    .map_err(StoreError::query("read record"))?,
                created_at: row
                    .try_get("created_at")
                    .map_err(StoreError::query("read record"))?,
                updated_at: row
                    .try_get("updated_at")
                    .map_err(StoreError::query("read record"))?,
            }))
        })
    }

    /// Current version and content hash of many records in one query per
    /// [`LOOKUP_CHUNK`] ids: how a re-sync recognises unchanged records without reading data.
    pub async fn record_heads(
        &self,
        entity: EntityKind,
        ids: &[CanonicalId],
    ) -> Result<Vec<RecordHead>> {
        let mut heads = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            on_pool!(self, |pool, Db| {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "SELECT id, version, content_hash FROM records WHERE entity = ",
                );
                q.push_bind(entity.as_str()).push(" AND id IN ");
                push_list(&mut q, chunk.iter().map(CanonicalId::as_str));
                let rows = q
                    .build()
                    .fetch_all(pool)
                    .await
                    .map_err(StoreError::query("read record heads"))?;
                for row in rows {
                    let id: String = row
                        .try_get("id")
                        .map_err(StoreError::query("read record heads"))?;
                    heads.push(RecordHead {
                        id: parse_id("records", &id)?,
                        version: row
                            .try_get("version")
                            .map_err(StoreError::query("read record heads"))?,
                        content_hash: row
                            .try_get("content_hash")
                            .map_err(StoreError::query("read record heads"))?,
                    });
                }
            });
        }
        Ok(heads)
    }

    /// Every version of a record, oldest first.
    pub async fn history(
        &self,
        entity: EntityKind,
        id: &CanonicalId,
    ) -> Result<Vec<RecordVersion>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(
                "SELECT version, data, content_hash, source_system, cause, actor, event_id, mapping_version, at
                 FROM record_versions WHERE entity = $1 AND id = $2 ORDER BY version",
            )
            .bind(entity.as_str())
            .bind(id.as_str())
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read history"))?;
            rows.iter()
                .map(|row| {
                    let get = StoreError::query("read history");
                    let Json(data): Json<Value> = row.try_get("data").map_err(get)?;
                    let cause: String = row
                        .try_get("cause")
                        .map_err(StoreError::query("read history"))?;
                    Ok(RecordVersion {
                        version: row
                            .try_get("version")
                            .map_err(StoreError::query("read history"))?,
                        data,
                        content_hash: row
                            .try_get("content_hash")
                            .map_err(StoreError::query("read history"))?,
                        provenance: Provenance {
                            source_system: row
                                .try_get("source_system")
                                .map_err(StoreError::query("read history"))?,
                            cause: Cause::from_str(&cause).map_err(|reason| {
                                StoreError::Corrupt {
                                    table: "record_versions",
                                    column: "cause",
                                    reason,
                                }
                            })?,
                            actor: row
                                .try_get("actor")
                                .map_err(StoreError::query("read history"))?,
                            event_id: row
                                .try_get("event_id")
                                .map_err(StoreError::query("read history"))?,
                            mapping_version: row
                                .try_get("mapping_version")
                                .map_err(StoreError::query("read history"))?,
                        },
                        at: row
                            .try_get("at")
                            .map_err(StoreError::query("read history"))?,
                    })
                })
                .collect()
        })
    }

    /// The link of one external id, if concord knows it.
    pub async fn find_link(
        &self,
        entity: EntityKind,
        system: &str,
        external_id: &str,
    ) -> Result<Option<Link>> {
        Ok(self
            .find_links(entity, system, &[external_id.to_owned()])
            .await?
            .pop())
    }

    /// Links of many external ids of one system, in one query per
    /// [`LOOKUP_CHUNK`] ids (lookups in mappings are batched, never one
    /// query per record).
    pub async fn find_links(
        &self,
        entity: EntityKind,
        system: &str,
        external_ids: &[String],
    ) -> Result<Vec<Link>> {
        let values: Vec<&str> = external_ids.iter().map(String::as_str).collect();
        self.links_by(entity, system, "external_id", &values, true)
            .await
    }

    /// What each linked external id of one system last synced, by hash
    /// (external id → [`LinkHashes`]): all that tells an unchanged record,
    /// read without the link's data, ids or timestamps. Ids without a link
    /// are absent.
    pub async fn synced_hashes(
        &self,
        entity: EntityKind,
        system: &str,
        external_ids: &[String],
    ) -> Result<HashMap<String, LinkHashes>> {
        let mut hashes = HashMap::with_capacity(external_ids.len());
        for chunk in external_ids.chunks(LOOKUP_CHUNK) {
            on_pool!(self, |pool, Db| {
                let rows = <Db as Dialect>::json_rows("external_id, synced_hash, source_hash", "");
                let mut q = sqlx::QueryBuilder::<Db>::new(format!(
                    "SELECT {rows} FROM links WHERE entity = "
                ));
                q.push_bind(entity.as_str())
                    .push(" AND system = ")
                    .push_bind(system)
                    .push(" AND external_id IN ");
                push_list(&mut q, chunk.iter().map(String::as_str));
                let text: String = q
                    .build_query_scalar()
                    .fetch_one(pool)
                    .await
                    .map_err(StoreError::query("read link hashes"))?;
                type Row = (String, Option<String>, Option<String>);
                hashes.extend(json_rows::<Row>("links", &text)?.into_iter().map(
                    |(external_id, synced, source)| (external_id, LinkHashes { synced, source }),
                ));
            });
        }
        Ok(hashes)
    }

    /// Of records arriving as (external id, source hash), those not known
    /// to have arrived so before, each with its link's hashes (`None`: not
    /// linked). An id absent from the answer has a link that holds that
    /// very source hash ([`LinkWrite::source_hash`]).
    ///
    /// [`Store::synced_hashes`] with the comparison done in the store: on a
    /// re-run that finds a page unchanged, the answer is empty, where that
    /// look-up reads and parses the hashes of every link.
    pub async fn changed_arrivals(
        &self,
        entity: EntityKind,
        system: &str,
        arrivals: &[(String, String)],
    ) -> Result<HashMap<String, Option<LinkHashes>>> {
        let mut changed = HashMap::new();
        for chunk in arrivals.chunks(LOOKUP_CHUNK) {
            on_pool!(self, |pool, Db| {
                let rows = <Db as Dialect>::json_rows(
                    "v.column1, CASE WHEN l.external_id IS NULL THEN 0 ELSE 1 END, l.synced_hash, l.source_hash",
                    "",
                );
                let mut q = sqlx::QueryBuilder::<Db>::new(format!("SELECT {rows} FROM ("));
                q.push_values(chunk, |mut row, (id, hash)| {
                    row.push_bind(id.as_str()).push_bind(hash.as_str());
                });
                q.push(") AS v LEFT JOIN links l ON l.entity = ")
                    .push_bind(entity.as_str())
                    .push(" AND l.system = ")
                    .push_bind(system)
                    .push(
                        " AND l.external_id = v.column1 WHERE l.source_hash IS DISTINCT FROM v.column2",
                    );
                let text: String = q
                    .build_query_scalar()
                    .fetch_one(pool)
                    .await
                    .map_err(StoreError::query("read link hashes"))?;
                type Row = (String, u8, Option<String>, Option<String>);
                changed.extend(json_rows::<Row>("links", &text)?.into_iter().map(
                    |(external_id, linked, synced, source)| {
                        let hashes = (linked == 1).then_some(LinkHashes { synced, source });
                        (external_id, hashes)
                    },
                ));
            });
        }
        Ok(changed)
    }

    /// The links of many canonical records to one system, in one query per
    /// [`LOOKUP_CHUNK`] ids (outbound lookups: canonical id → external id).
    pub async fn external_links(
        &self,
        entity: EntityKind,
        system: &str,
        canonical_ids: &[CanonicalId],
    ) -> Result<Vec<Link>> {
        let values: Vec<&str> = canonical_ids.iter().map(CanonicalId::as_str).collect();
        self.links_by(entity, system, "canonical_id", &values, true)
            .await
    }

    /// Links of one system whose `column` (a fixed column name, never
    /// input) is one of `values`; with their synced data when `with_data`.
    async fn links_by(
        &self,
        entity: EntityKind,
        system: &str,
        column: &'static str,
        values: &[&str],
        with_data: bool,
    ) -> Result<Vec<Link>> {
        let mut links = Vec::with_capacity(values.len());
        for chunk in values.chunks(LOOKUP_CHUNK) {
            on_pool!(self, |pool, Db| {
                let (table, system_column) = if column == "canonical_id" {
                    (
                        <Db as Dialect>::LINKS_BY_CANONICAL,
                        <Db as Dialect>::SYSTEM_BY_CANONICAL,
                    )
                } else {
                    ("links", "system")
                };
                let data = if with_data {
                    <Db as Dialect>::json_value(synced_data_column!())
                } else {
                    "NULL".to_owned()
                };
                let rows = <Db as Dialect>::json_rows(
                    &format!(
                        "system, external_id, canonical_id, synced_version, {data}, synced_hash, remote_updated_at, updated_at"
                    ),
                    "",
                );
                let mut q = sqlx::QueryBuilder::<Db>::new(format!(
                    "SELECT {rows} FROM {table} WHERE entity = "
                ));
                q.push_bind(entity.as_str())
                    .push(format!(" AND {system_column} = "))
                    .push_bind(system)
                    .push(" AND ")
                    .push(column)
                    .push(" IN ");
                push_list(&mut q, chunk.iter().copied());
                let text: String = q
                    .build_query_scalar()
                    .fetch_one(pool)
                    .await
                    .map_err(StoreError::query("read links"))?;
                for row in json_rows::<LinkRow>("links", &text)? {
                    links.push(row.into_link(entity)?);
                }
            });
        }
        Ok(links)
    }

    /// Every system's link to one canonical record.
    pub async fn links_of(
        &self,
        entity: EntityKind,
        canonical_id: &CanonicalId,
    ) -> Result<Vec<Link>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                link_columns!(),
                " FROM links WHERE entity = $1 AND canonical_id = $2 ORDER BY system"
            ))
            .bind(entity.as_str())
            .bind(canonical_id.as_str())
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read links"))?;
            rows.iter().map(|row| link_from_row!(entity, row)).collect()
        })
    }

    /// The cursor saved for a system's entity, if any.
    pub async fn load_cursor(&self, system: &str, entity: &str) -> Result<Option<String>> {
        on_pool!(self, |pool, _Db| {
            sqlx::query_scalar("SELECT cursor FROM cursors WHERE system = $1 AND entity = $2")
                .bind(system)
                .bind(entity)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::query("read cursor"))
        })
    }

    /// Stores an inbound event unless one with the same key is already there.
    /// Returns the inbox id when stored, `None` for a duplicate.
    pub async fn inbox_push(&self, event: &InboxEvent) -> Result<Option<i64>> {
        on_pool!(self, |pool, _Db| {
            sqlx::query_scalar(
                "INSERT INTO inbox (idempotency_key, system, entity, payload, received_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (idempotency_key) DO NOTHING
                 RETURNING id",
            )
            .bind(&event.idempotency_key)
            .bind(&event.system)
            .bind(event.entity.map(EntityKind::as_str))
            .bind(Json(&event.payload))
            .bind(Utc::now())
            .fetch_optional(pool)
            .await
            .map_err(StoreError::query("store inbox event"))
        })
    }

    /// Outbox entries waiting for delivery (pending and due), oldest first.
    pub async fn outbox_due(&self, limit: u32) -> Result<Vec<OutboxEntry>> {
        self.outbox_query(None, None, limit).await
    }

    /// [`Store::outbox_due`] for one target system (and one entity).
    pub async fn outbox_due_for(
        &self,
        target: &str,
        entity: Option<EntityKind>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>> {
        self.outbox_due_after(target, entity, 0, limit).await
    }

    /// [`Store::outbox_due_for`], only entries with an id above `after`:
    /// a delivery pass walks the outbox once, in order, instead of
    /// re-reading every pending entry per batch.
    pub async fn outbox_due_after(
        &self,
        target: &str,
        entity: Option<EntityKind>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>> {
        on_pool!(self, |pool, Db| {
            // The table name is a constant of the dialect, never input.
            let text: String =
                sqlx::query_scalar(sqlx::AssertSqlSafe(outbox_select::<Db>(&format!(
                    "{} WHERE target_system = $1 AND status = 'pending' AND id > $2
                   AND next_attempt_at <= $3 AND ($4 IS NULL OR entity = $4)
                 ORDER BY id LIMIT $5",
                    <Db as Dialect>::OUTBOX_BY_TARGET
                ))))
                .bind(target)
                .bind(after)
                .bind(Utc::now())
                .bind(entity.map(EntityKind::as_str))
                .bind(i64::from(limit))
                .fetch_one(pool)
                .await
                .map_err(StoreError::query("read outbox"))?;
            outbox_entries(&text)
        })
    }

    async fn outbox_query(
        &self,
        target: Option<&str>,
        entity: Option<EntityKind>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>> {
        on_pool!(self, |pool, Db| {
            let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(outbox_select::<Db>(
                "outbox WHERE status = 'pending' AND next_attempt_at <= $1
                   AND ($3 IS NULL OR target_system = $3) AND ($4 IS NULL OR entity = $4)
                 ORDER BY id LIMIT $2",
            )))
            .bind(Utc::now())
            .bind(i64::from(limit))
            .bind(target)
            .bind(entity.map(EntityKind::as_str))
            .fetch_one(pool)
            .await
            .map_err(StoreError::query("read outbox"))?;
            outbox_entries(&text)
        })
    }

    /// Dead-lettered outbox entries, oldest first.
    pub async fn outbox_dead(&self, target: Option<&str>, limit: u32) -> Result<Vec<OutboxEntry>> {
        on_pool!(self, |pool, Db| {
            let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(outbox_select::<Db>(
                "outbox WHERE status = 'dead' AND ($2 IS NULL OR target_system = $2)
                 ORDER BY id LIMIT $1",
            )))
            .bind(i64::from(limit))
            .bind(target)
            .fetch_one(pool)
            .await
            .map_err(StoreError::query("read outbox"))?;
            outbox_entries(&text)
        })
    }

    /// Records how a delivery attempt ended. A delivery writes the target's
    /// link in the same transaction, so what the target holds and what the
    /// outbox says never disagree.
    pub async fn outbox_settle(&self, entry_id: i64, delivery: &Delivery) -> Result<()> {
        self.outbox_settle_many(&[(entry_id, delivery.clone())])
            .await
    }

    /// [`Store::outbox_settle`] for many entries, in one transaction.
    pub async fn outbox_settle_many(&self, settles: &[(i64, Delivery)]) -> Result<()> {
        if settles.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        // Links written by deliveries: the last write of a link wins (one
        // statement may not touch a row twice).
        let mut last_link: HashMap<(EntityKind, &str, &str), &LinkWrite> = HashMap::new();
        let mut link_order: Vec<(EntityKind, &str, &str)> = Vec::new();
        for (_, delivery) in settles {
            if let Delivery::Delivered { link } | Delivery::Linked { link } = delivery {
                let key = (link.entity, link.system.as_str(), link.external_id.as_str());
                if last_link.insert(key, link).is_none() {
                    link_order.push(key);
                }
            }
        }
        let links: Vec<(&LinkWrite, StoredSynced<'_>)> = link_order
            .iter()
            .map(|k| {
                let l = last_link[k];
                (l, synced_to_store(l, &HashMap::new()))
            })
            .collect();
        let rows: Vec<SettleRow<'_>> = settles
            .iter()
            .map(|(entry_id, delivery)| {
                let (status, at, error, external_id) = match delivery {
                    Delivery::Delivered { link } => {
                        ("delivered", now, None, Some(link.external_id.as_str()))
                    }
                    Delivery::Linked { link } => {
                        ("pending", now, None, Some(link.external_id.as_str()))
                    }
                    Delivery::Retry { at, error } => ("pending", *at, Some(error.as_str()), None),
                    Delivery::Dead { error } => ("dead", now, Some(error.as_str()), None),
                    Delivery::Superseded => ("superseded", now, None, None),
                    Delivery::Hold { at, reason } => ("pending", *at, Some(reason.as_str()), None),
                };
                let counts_attempt =
                    !matches!(delivery, Delivery::Superseded | Delivery::Hold { .. });
                (
                    *entry_id,
                    status,
                    at,
                    error,
                    external_id,
                    i64::from(counts_attempt),
                )
            })
            .collect();
        on_pool!(self, |pool, Db| {
            let mut tx = pool.begin().await.map_err(StoreError::query("begin"))?;
            for chunk in links.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO links (entity, system, external_id, canonical_id, synced_version, synced_data, synced_hash, remote_updated_at, source_hash, updated_at) ",
                );
                q.push_values(chunk, |mut row, (link, (data, hash))| {
                    row.push_bind(link.entity.as_str())
                        .push_bind(link.system.as_str())
                        .push_bind(link.external_id.as_str())
                        .push_bind(link.canonical_id.as_str())
                        .push_bind(link.synced_version)
                        .push_bind(data.map(Json))
                        .push_bind(hash.as_deref())
                        .push_bind(link.remote_updated_at)
                        .push_bind(link.source_hash.as_deref())
                        .push_bind(now);
                });
                q.push(
                    " ON CONFLICT (entity, system, external_id) DO UPDATE SET
                       canonical_id = excluded.canonical_id,
                       synced_version = excluded.synced_version,
                       synced_data = excluded.synced_data,
                       synced_hash = excluded.synced_hash,
                       source_hash = excluded.source_hash,
                       updated_at = excluded.updated_at",
                );
                q.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("write links"))?;
            }
            // Many entries per statement: UPDATE … FROM (VALUES …), whose
            // columns both backends name column1, column2, ….
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE outbox SET status = v.column2, next_attempt_at = v.column3,
                       last_error = COALESCE(v.column4, outbox.last_error),
                       external_id = COALESCE(v.column5, outbox.external_id),
                       attempts = outbox.attempts + v.column6, updated_at = ",
                );
                q.push_bind(now)
                    .push(", delivered_at = CASE WHEN v.column2 = 'delivered' THEN ")
                    .push_bind(now)
                    .push(" ELSE outbox.delivered_at END FROM (");
                q.push_values(
                    chunk,
                    |mut row, (id, status, at, error, external_id, attempts)| {
                        row.push_bind(*id)
                            .push_bind(*status)
                            .push_bind(*at)
                            .push_bind(*error)
                            .push_bind(*external_id)
                            .push_bind(*attempts);
                    },
                );
                q.push(") AS v WHERE outbox.id = v.column1");
                q.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("settle outbox entries"))?;
            }
            tx.commit().await.map_err(StoreError::query("commit"))?;
            Ok(())
        })
    }

    /// Puts dead-lettered entries back in line (all of a target, or the ids
    /// given). Returns how many.
    pub async fn outbox_requeue(&self, target: Option<&str>, ids: &[i64]) -> Result<u64> {
        self.outbox_requeue_since(target, None, ids).await
    }

    /// Which of `ids` are dead letters now.
    pub async fn outbox_dead_among(&self, ids: &[i64]) -> Result<Vec<i64>> {
        let mut dead = Vec::new();
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            on_pool!(self, |pool, Db| {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "SELECT id FROM outbox WHERE status = 'dead' AND id IN ",
                );
                push_list(&mut q, chunk.iter().copied());
                let found: Vec<i64> = q
                    .build_query_scalar()
                    .fetch_all(pool)
                    .await
                    .map_err(StoreError::query("read dead letters"))?;
                dead.extend(found);
            });
        }
        Ok(dead)
    }

    /// [`Store::outbox_requeue`], only entries that became dead letters at
    /// or after `since` (when given).
    pub async fn outbox_requeue_since(
        &self,
        target: Option<&str>,
        since: Option<DateTime<Utc>>,
        ids: &[i64],
    ) -> Result<u64> {
        let now = Utc::now();
        let mut total = 0;
        let all = ids.is_empty();
        let chunks: Vec<&[i64]> = if all {
            vec![&[]]
        } else {
            ids.chunks(LOOKUP_CHUNK).collect()
        };
        for chunk in chunks {
            on_pool!(self, |pool, Db| {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ",
                );
                q.push_bind(now).push(", updated_at = ").push_bind(now);
                q.push(" WHERE status = 'dead'");
                if let Some(target) = target {
                    q.push(" AND target_system = ").push_bind(target);
                }
                if let Some(since) = since {
                    q.push(" AND updated_at >= ").push_bind(since);
                }
                if !all {
                    q.push(" AND id IN ");
                    push_list(&mut q, chunk.iter().copied());
                }
                total += q
                    .build()
                    .execute(pool)
                    .await
                    .map_err(StoreError::query("requeue dead letters"))?
                    .rows_affected();
            });
        }
        Ok(total)
    }

    /// The current version of many records with their data, by id, in one
    /// query per [`LOOKUP_CHUNK`] ids. Unknown ids are absent.
    pub async fn get_records(
        &self,
        entity: EntityKind,
        ids: &[CanonicalId],
    ) -> Result<HashMap<CanonicalId, StoredRecord>> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            on_pool!(self, |pool, Db| {
                let rows = <Db as Dialect>::json_rows(
                    &format!(
                        "r.id, r.version, r.content_hash, {}, r.currency, r.created_at, r.updated_at, {}, v.source_system",
                        <Db as Dialect>::amount_text("r.amount"),
                        <Db as Dialect>::json_value("v.data"),
                    ),
                    "",
                );
                let mut q = sqlx::QueryBuilder::<Db>::new(format!(
                    "SELECT {rows}
                     FROM records r JOIN record_versions v
                       ON v.entity = r.entity AND v.id = r.id AND v.version = r.version
                     WHERE r.entity = "
                ));
                q.push_bind(entity.as_str()).push(" AND r.id IN ");
                push_list(&mut q, chunk.iter().map(CanonicalId::as_str));
                let text: String = q
                    .build_query_scalar()
                    .fetch_one(pool)
                    .await
                    .map_err(StoreError::query("read records"))?;
                for row in json_rows::<RecordRow>("records", &text)? {
                    let record = row.into_record(entity)?;
                    out.insert(record.id.clone(), record);
                }
            });
        }
        Ok(out)
    }

    /// The data of one version of a record, if it exists.
    pub async fn get_version(
        &self,
        entity: EntityKind,
        id: &CanonicalId,
        version: i64,
    ) -> Result<Option<Value>> {
        on_pool!(self, |pool, _Db| {
            let data: Option<Json<Value>> = sqlx::query_scalar(
                "SELECT data FROM record_versions WHERE entity = $1 AND id = $2 AND version = $3",
            )
            .bind(entity.as_str())
            .bind(id.as_str())
            .bind(version)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::query("read record version"))?;
            Ok(data.map(|Json(v)| v))
        })
    }

    /// Canonical records holding any of `values` as business key
    /// `key_name`: `(value, id)` pairs, in one query per [`LOOKUP_CHUNK`].
    pub async fn find_identities(
        &self,
        entity: EntityKind,
        key_name: &str,
        values: &[String],
    ) -> Result<Vec<(String, CanonicalId)>> {
        let mut out = Vec::new();
        for chunk in values.chunks(LOOKUP_CHUNK) {
            on_pool!(self, |pool, Db| {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "SELECT key_value, canonical_id FROM identity_keys WHERE entity = ",
                );
                q.push_bind(entity.as_str())
                    .push(" AND key_name = ")
                    .push_bind(key_name)
                    .push(" AND key_value IN ");
                push_list(&mut q, chunk.iter().map(String::as_str));
                let rows = q
                    .build()
                    .fetch_all(pool)
                    .await
                    .map_err(StoreError::query("read identity keys"))?;
                for row in &rows {
                    let q = || StoreError::query("read identity keys");
                    let id: String = row.try_get("canonical_id").map_err(q())?;
                    out.push((
                        row.try_get("key_value").map_err(q())?,
                        parse_id("identity_keys", &id)?,
                    ));
                }
            });
        }
        Ok(out)
    }

    /// Puts one record aside with its reason (outside a batch).
    pub async fn quarantine(&self, item: &QuarantineItem) -> Result<i64> {
        let now = Utc::now();
        on_pool!(self, |pool, _Db| insert_quarantine!(pool, item, now))
    }

    /// Quarantined records, newest first.
    pub async fn quarantined(&self, limit: u32) -> Result<Vec<QuarantinedRecord>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(
                "SELECT id, system, entity, external_id, raw, reason, rule, field_path, status, at
                 FROM quarantine ORDER BY id DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read quarantine"))?;
            rows.iter().map(quarantine_from_row).collect()
        })
    }

    /// Open quarantined records, oldest first: those of `ids`, or all.
    pub async fn quarantined_open(
        &self,
        ids: &[i64],
        limit: u32,
    ) -> Result<Vec<QuarantinedRecord>> {
        let mut out = Vec::new();
        let all = ids.is_empty();
        let chunks: Vec<&[i64]> = if all {
            vec![&[]]
        } else {
            ids.chunks(LOOKUP_CHUNK).collect()
        };
        for chunk in chunks {
            on_pool!(self, |pool, Db| {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "SELECT id, system, entity, external_id, raw, reason, rule, field_path, status, at
                     FROM quarantine WHERE status = 'open'",
                );
                if !all {
                    q.push(" AND id IN ");
                    push_list(&mut q, chunk.iter().copied());
                }
                q.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
                let rows = q
                    .build()
                    .fetch_all(pool)
                    .await
                    .map_err(StoreError::query("read quarantine"))?;
                for row in &rows {
                    out.push(quarantine_from_row(row)?);
                }
            });
        }
        Ok(out)
    }

    /// Opens a conflict for the operator. Returns its id.
    pub async fn open_conflict(&self, conflict: &NewConflict) -> Result<i64> {
        let now = Utc::now();
        on_pool!(self, |pool, _Db| insert_conflict!(pool, conflict, now))
    }

    /// Conflicts, oldest first: the open ones, or all with `all`.
    pub async fn conflicts(
        &self,
        entity: Option<EntityKind>,
        all: bool,
        limit: u32,
    ) -> Result<Vec<Conflict>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(
                "SELECT id, entity, canonical_id, field_path, base, ours, theirs, source_system, status, resolution, resolved_by, created_at, resolved_at
                 FROM conflicts WHERE ($1 OR status = 'open') AND ($2 IS NULL OR entity = $2)
                 ORDER BY id LIMIT $3",
            )
            .bind(all)
            .bind(entity.map(EntityKind::as_str))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read conflicts"))?;
            rows.iter().map(conflict_from_row).collect()
        })
    }

    /// One conflict by id.
    pub async fn conflict(&self, id: i64) -> Result<Option<Conflict>> {
        on_pool!(self, |pool, _Db| {
            let row = sqlx::query(
                "SELECT id, entity, canonical_id, field_path, base, ours, theirs, source_system, status, resolution, resolved_by, created_at, resolved_at
                 FROM conflicts WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::query("read conflict"))?;
            row.as_ref().map(conflict_from_row).transpose()
        })
    }

    /// Records (of `ids`) with an open conflict raised by `system`.
    pub async fn open_conflicts_from(
        &self,
        entity: EntityKind,
        system: &str,
        ids: &[CanonicalId],
    ) -> Result<Vec<CanonicalId>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            on_pool!(self, |pool, Db| {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "SELECT DISTINCT canonical_id FROM conflicts WHERE status = 'open' AND entity = ",
                );
                q.push_bind(entity.as_str())
                    .push(" AND source_system = ")
                    .push_bind(system)
                    .push(" AND canonical_id IN ");
                push_list(&mut q, chunk.iter().map(CanonicalId::as_str));
                let rows = q
                    .build()
                    .fetch_all(pool)
                    .await
                    .map_err(StoreError::query("read conflicts"))?;
                for row in &rows {
                    let id: String = row
                        .try_get("canonical_id")
                        .map_err(StoreError::query("read conflicts"))?;
                    out.push(parse_id("conflicts", &id)?);
                }
            });
        }
        Ok(out)
    }

    /// Raises a data-quality alert. Returns its id, or `None` when an alert
    /// of the same rule and cause was raised before.
    pub async fn raise_alert(&self, alert: &NewAlert) -> Result<Option<i64>> {
        let now = Utc::now();
        on_pool!(self, |pool, Db| insert_alert!(Db, pool, alert, now))
    }

    /// Open alerts, newest first.
    pub async fn open_alerts(&self, limit: u32) -> Result<Vec<Alert>> {
        on_pool!(self, |pool, Db| {
            let rows = sqlx::query(
                "SELECT id, rule, severity, entity, record_ids, reason, amount, currency, created_at, cause
                 FROM alerts WHERE status = 'open' ORDER BY id DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read alerts"))?;
            rows.iter()
                .map(|row| {
                    let q = || StoreError::query("read alerts");
                    let severity: String = row.try_get("severity").map_err(q())?;
                    let entity: Option<String> = row.try_get("entity").map_err(q())?;
                    let Json(record_ids): Json<Vec<String>> =
                        row.try_get("record_ids").map_err(q())?;
                    Ok(Alert {
                        id: row.try_get("id").map_err(q())?,
                        alert: NewAlert {
                            rule: row.try_get("rule").map_err(q())?,
                            severity: Severity::from_str(&severity).map_err(|reason| {
                                StoreError::Corrupt {
                                    table: "alerts",
                                    column: "severity",
                                    reason,
                                }
                            })?,
                            entity: entity
                                .as_deref()
                                .map(|e| parse_entity("alerts", e))
                                .transpose()?,
                            record_ids,
                            reason: row.try_get("reason").map_err(q())?,
                            amount: decode_money::<Db>(
                                "alerts",
                                row.try_get("amount").map_err(q())?,
                                row.try_get("currency").map_err(q())?,
                            )?,
                            cause: row.try_get("cause").map_err(q())?,
                        },
                        created_at: row.try_get("created_at").map_err(q())?,
                    })
                })
                .collect()
        })
    }

    /// Counts for `concord status`: records, links, cursors, queues,
    /// quarantine, conflicts and alerts.
    pub async fn status(&self) -> Result<StatusReport> {
        let (applied, known) = self.schema_state().await?;
        on_pool!(self, |pool, _Db| {
            let q = || StoreError::query("read status");
            let mut report = StatusReport {
                backend: self.backend().to_string(),
                target: self.target.clone(),
                schema_applied: applied,
                schema_known: known,
                ..StatusReport::default()
            };
            for row in sqlx::query(
                "SELECT entity, COUNT(*) AS n FROM records GROUP BY entity ORDER BY entity",
            )
            .fetch_all(pool)
            .await
            .map_err(q())?
            {
                report.records.push(EntityCount {
                    entity: row.try_get("entity").map_err(q())?,
                    count: row.try_get("n").map_err(q())?,
                });
            }
            for row in sqlx::query(
                "SELECT entity, system, COUNT(*) AS n FROM links GROUP BY entity, system ORDER BY entity, system",
            )
            .fetch_all(pool)
            .await
            .map_err(q())?
            {
                report.links.push(SystemCount {
                    entity: row.try_get("entity").map_err(q())?,
                    system: row.try_get("system").map_err(q())?,
                    count: row.try_get("n").map_err(q())?,
                });
            }
            for row in sqlx::query(
                "SELECT system, entity, cursor, updated_at FROM cursors ORDER BY system, entity",
            )
            .fetch_all(pool)
            .await
            .map_err(q())?
            {
                report.cursors.push(CursorState {
                    system: row.try_get("system").map_err(q())?,
                    entity: row.try_get("entity").map_err(q())?,
                    cursor: row.try_get("cursor").map_err(q())?,
                    updated_at: row.try_get("updated_at").map_err(q())?,
                });
            }
            for (sql, into) in [
                (
                    "SELECT status, COUNT(*) AS n FROM outbox GROUP BY status ORDER BY status",
                    &mut report.outbox,
                ),
                (
                    "SELECT status, COUNT(*) AS n FROM inbox GROUP BY status ORDER BY status",
                    &mut report.inbox,
                ),
            ] {
                for row in sqlx::query(sql).fetch_all(pool).await.map_err(q())? {
                    into.push(StatusCount {
                        status: row.try_get("status").map_err(q())?,
                        count: row.try_get("n").map_err(q())?,
                    });
                }
            }
            report.open_quarantine =
                sqlx::query_scalar("SELECT COUNT(*) FROM quarantine WHERE status = 'open'")
                    .fetch_one(pool)
                    .await
                    .map_err(q())?;
            report.open_conflicts =
                sqlx::query_scalar("SELECT COUNT(*) FROM conflicts WHERE status = 'open'")
                    .fetch_one(pool)
                    .await
                    .map_err(q())?;
            report.open_alerts =
                sqlx::query_scalar("SELECT COUNT(*) FROM alerts WHERE status = 'open'")
                    .fetch_one(pool)
                    .await
                    .map_err(q())?;
            Ok(report)
        })
    }

    /// Checks that the database answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |pool, _Db| {
            let mut conn = pool.acquire().await.map_err(StoreError::query("acquire"))?;
            conn.ping().await.map_err(StoreError::query("ping"))
        })
    }
}

/// The synced data and hash a link row stores: nothing and no hash when
/// nothing is known; no data and the version's hash when the link names
/// the version it holds (given, or found among `written`: versions written
/// with it, by (entity, id, version), with their content hashes); else its
/// own copy and that copy's hash.
fn synced_to_store<'a>(
    link: &'a LinkWrite,
    written: &HashMap<(EntityKind, &str, i64), &str>,
) -> StoredSynced<'a> {
    let Some(data) = &link.synced_data else {
        let named = link.synced_version.and(link.synced_hash.clone());
        return (None, named);
    };
    debug_assert!(
        link.synced_hash
            .as_ref()
            .is_none_or(|h| *h == crate::model::content_hash(data)),
        "a link write's hash is its data's"
    );
    let hash = link
        .synced_hash
        .clone()
        .unwrap_or_else(|| crate::model::content_hash(data));
    let is_version = link.synced_version.is_some_and(|v| {
        written.get(&(link.entity, link.canonical_id.as_str(), v)) == Some(&hash.as_str())
    });
    (if is_version { None } else { Some(data) }, Some(hash))
}

fn decode_money<Db: Dialect>(
    table: &'static str,
    amount: Option<Db::Amount>,
    currency: Option<String>,
) -> Result<Option<Money>> {
    let (Some(amount), Some(currency)) = (amount, currency) else {
        return Ok(None);
    };
    let corrupt = |column, reason: String| StoreError::Corrupt {
        table,
        column,
        reason,
    };
    let amount: Decimal = Db::decode_amount(amount).map_err(|r| corrupt("amount", r))?;
    let currency = Currency::parse(&currency).map_err(|e| corrupt("currency", e.to_string()))?;
    Money::new(amount, currency)
        .map(Some)
        .map_err(|e| corrupt("amount", e.to_string()))
}

/// The rows of a [`Dialect::json_rows`] query, each read as a `T` from
/// its array of columns.
fn json_rows<T: serde::de::DeserializeOwned>(table: &'static str, text: &str) -> Result<Vec<T>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        table,
        column: "(row)",
        reason: e.to_string(),
    })
}

/// A link as [`Store::links_by`] reads it, column by column.
#[derive(serde::Deserialize)]
struct LinkRow {
    system: String,
    external_id: String,
    canonical_id: String,
    synced_version: Option<i64>,
    synced_data: Option<Value>,
    synced_hash: Option<String>,
    remote_updated_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

impl LinkRow {
    fn into_link(self, entity: EntityKind) -> Result<Link> {
        Ok(Link {
            entity,
            system: self.system,
            external_id: self.external_id,
            canonical_id: parse_id("links", &self.canonical_id)?,
            synced_version: self.synced_version,
            synced_data: self.synced_data,
            synced_hash: self.synced_hash,
            remote_updated_at: self.remote_updated_at,
            updated_at: self.updated_at,
        })
    }
}

/// A record's head with its data, as [`Store::get_records`] reads it.
#[derive(serde::Deserialize)]
struct RecordRow {
    id: String,
    version: i64,
    content_hash: String,
    amount: Option<String>,
    currency: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    data: Value,
    source_system: Option<String>,
}

impl RecordRow {
    fn into_record(self, entity: EntityKind) -> Result<StoredRecord> {
        Ok(StoredRecord {
            entity,
            id: parse_id("records", &self.id)?,
            version: self.version,
            content_hash: self.content_hash,
            // Read as exact decimal text on both backends, as SQLite keeps it.
            amount: decode_money::<sqlx::Sqlite>("records", self.amount, self.currency)?,
            data: self.data,
            source_system: self.source_system,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A query of outbox entries: `rest` names the table and picks and orders
/// the rows (`outbox WHERE … ORDER BY id LIMIT …`).
fn outbox_select<Db: Dialect>(rest: &str) -> String {
    format!(
        "SELECT {} FROM (SELECT id, idempotency_key, entity, canonical_id, version, target_system, status, attempts, next_attempt_at, last_error, external_id FROM {rest}) AS o",
        Db::json_rows(
            "o.id, o.idempotency_key, o.entity, o.canonical_id, o.version, o.target_system, o.status, o.attempts, o.next_attempt_at, o.last_error, o.external_id",
            "o.id"
        )
    )
}

/// The entries of an [`outbox_select`] query.
fn outbox_entries(text: &str) -> Result<Vec<OutboxEntry>> {
    json_rows::<OutboxRow>("outbox", text)?
        .into_iter()
        .map(OutboxRow::into_entry)
        .collect()
}

/// An outbox entry as [`outbox_select`] reads it.
#[derive(serde::Deserialize)]
struct OutboxRow {
    id: i64,
    idempotency_key: String,
    entity: String,
    canonical_id: String,
    version: i64,
    target_system: String,
    status: String,
    attempts: i64,
    next_attempt_at: DateTime<Utc>,
    last_error: Option<String>,
    external_id: Option<String>,
}

impl OutboxRow {
    fn into_entry(self) -> Result<OutboxEntry> {
        Ok(OutboxEntry {
            id: self.id,
            idempotency_key: self.idempotency_key,
            entity: parse_entity("outbox", &self.entity)?,
            canonical_id: parse_id("outbox", &self.canonical_id)?,
            version: self.version,
            target_system: self.target_system,
            status: self.status,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            last_error: self.last_error,
            external_id: self.external_id,
        })
    }
}

/// Turns off Nagle's algorithm on a new PostgreSQL TCP connection.
///
/// sqlx 0.9.0 leaves it on (sqlx issue #4335): a statement larger than a
/// segment then waits for the server's delayed ACK, ~40 ms per batched
/// INSERT, which made batched commits slower than row-by-row ones. sqlx
/// does not hand out its socket, so the server tells us our port
/// (`inet_client_port()`) and we find our socket by its local address.
/// Unix sockets (no port) and other platforms are left as they are.
async fn no_delay(conn: &mut sqlx::PgConnection) -> std::result::Result<(), sqlx::Error> {
    let port: Option<i32> = sqlx::query_scalar("SELECT inet_client_port()")
        .fetch_one(&mut *conn)
        .await?;
    #[cfg(target_os = "linux")]
    if let Some(port) = port.and_then(|p| u16::try_from(p).ok()) {
        set_no_delay_on_local_port(port);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = port;
    Ok(())
}

#[cfg(target_os = "linux")]
fn set_no_delay_on_local_port(port: u16) {
    use std::os::fd::BorrowedFd;
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: the descriptor is only borrowed for the calls below; if it
        // closes meanwhile they fail (or, reused, act on another socket,
        // where TCP_NODELAY is harmless).
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let ours = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a.port() == port);
        let connected = socket.peer_addr().is_ok();
        if ours && connected && socket.r#type().is_ok_and(|t| t == socket2::Type::STREAM) {
            let _ = socket.set_tcp_nodelay(true);
            return;
        }
    }
}

/// Appends `(v1, v2, …)` with each value bound: the list of an `IN`.
fn push_list<'t, Db, T>(q: &mut sqlx::QueryBuilder<Db>, values: impl IntoIterator<Item = T>)
where
    Db: sqlx::Database,
    T: sqlx::Encode<'t, Db> + sqlx::Type<Db>,
{
    q.push("(");
    let mut list = q.separated(", ");
    for v in values {
        list.push_bind(v);
    }
    q.push(")");
}

fn quarantine_from_row<R: sqlx::Row>(row: &R) -> Result<QuarantinedRecord>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Json<Value>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> DateTime<Utc>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let q = || StoreError::query("read quarantine");
    let entity: String = row.try_get("entity").map_err(q())?;
    let Json(raw): Json<Value> = row.try_get("raw").map_err(q())?;
    Ok(QuarantinedRecord {
        id: row.try_get("id").map_err(q())?,
        item: QuarantineItem {
            system: row.try_get("system").map_err(q())?,
            entity: parse_entity("quarantine", &entity)?,
            external_id: row.try_get("external_id").map_err(q())?,
            raw,
            reason: row.try_get("reason").map_err(q())?,
            rule: row.try_get("rule").map_err(q())?,
            field_path: row.try_get("field_path").map_err(q())?,
        },
        status: row.try_get("status").map_err(q())?,
        at: row.try_get("at").map_err(q())?,
    })
}

fn conflict_from_row<R: sqlx::Row>(row: &R) -> Result<Conflict>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<Json<Value>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<Json<String>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> DateTime<Utc>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<DateTime<Utc>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let q = || StoreError::query("read conflicts");
    let entity: String = row.try_get("entity").map_err(q())?;
    let id: String = row.try_get("canonical_id").map_err(q())?;
    let json = |col: &str| -> Result<Option<Value>> {
        let v: Option<Json<Value>> = row.try_get(col).map_err(q())?;
        Ok(v.map(|Json(v)| v))
    };
    Ok(Conflict {
        id: row.try_get("id").map_err(q())?,
        entity: parse_entity("conflicts", &entity)?,
        canonical_id: parse_id("conflicts", &id)?,
        field_path: row.try_get("field_path").map_err(q())?,
        base: json("base")?,
        ours: json("ours")?,
        theirs: json("theirs")?,
        source_system: row.try_get("source_system").map_err(q())?,
        status: row.try_get("status").map_err(q())?,
        resolution: {
            let r: Option<Json<String>> = row.try_get("resolution").map_err(q())?;
            r.map(|Json(r)| r)
        },
        resolved_by: row.try_get("resolved_by").map_err(q())?,
        created_at: row.try_get("created_at").map_err(q())?,
        resolved_at: row.try_get("resolved_at").map_err(q())?,
    })
}

fn parse_entity(table: &'static str, value: &str) -> Result<EntityKind> {
    EntityKind::from_str(value).map_err(|e| StoreError::Corrupt {
        table,
        column: "entity",
        reason: e.to_string(),
    })
}

fn parse_id(table: &'static str, value: &str) -> Result<CanonicalId> {
    CanonicalId::parse(value).map_err(|e| StoreError::Corrupt {
        table,
        column: "canonical_id",
        reason: e.to_string(),
    })
}

fn create_parent_dir(path: &std::path::Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}
