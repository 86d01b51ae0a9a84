//! The `sql` driver: tables or queries in PostgreSQL, MySQL/MariaDB and
//! SQLite, read incrementally and written by upsert.
//!
//! **Reading.** Rows are read in `(updated_at, id…)` order with keyset
//! pagination: each page asks for the rows after the last one read
//! (`WHERE upd >= $u AND (upd > $u OR (upd = $u AND id > $id)) ORDER BY
//! upd, id LIMIT n`), so pages never skip or repeat rows however many share
//! a timestamp. The cursor's token holds the last row's key values in the
//! database's own form, so resuming compares exactly what the database
//! compares; the first page of a resumed pull goes back `look_back_secs`.
//!
//! **Values.** Each row becomes a JSON object keyed by column name:
//! integers and floats as numbers; `DECIMAL`/`NUMERIC` as exact strings
//! (`"12.30"`), never floats; timestamps as RFC 3339 in UTC (timestamps
//! without a zone are read in the definition's `timezone`); dates as
//! `YYYY-MM-DD`; JSON columns as JSON; binary columns as base64 strings
//! (standard alphabet, padded); NULL as `null`; other types (intervals,
//! enums, network addresses …) as the database's text form. A row with a
//! value that cannot be read (text that is not UTF-8, an impossible date)
//! comes back as a [`Reject`] naming its key, and the pull goes on.
//!
//! **Writing.** `push` writes each change on its own: an update
//! (the change names its row) sets the `upsert.columns`; a create inserts or
//! updates by `upsert.key`. With `idempotency_column`, the change's key is
//! stored in the row and a retried push answers with the row it already
//! wrote. Constraint and data errors reject that record only.
//!
//! Table and column names come from the definition, are checked against a
//! strict name syntax and quoted for the dialect; values are always bound
//! as parameters.

mod backend;
pub mod definition;
mod errors;
pub mod ident;
mod keys;
mod plan;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures_util::stream;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Row};

use self::backend::{Pool, bind_all, cursor_instant, cut, with_pool};
use self::definition::{Checked, Entity, Source};
use self::ident::Dialect;
use self::keys::{KeyVal, Position, join_id, naive_text, split_id, utc_to_local};
use self::plan::{Bind, Col, Kind, Plan, SqlBuf, keyset_condition, probe_sql};
use super::{
    Capabilities, Change, Connector, ConnectorError, Cursor, Definition, Driver,
    EntityCapabilities, ErrorKind, Instance, Page, PageStream, PushOutcome, RawRecord, Reject,
};
use crate::located::{LoadError, SourceFile};
use crate::model::ExternalId;
use crate::settings::redact_url;

pub use keys::{join_id as join_external_id, split_id as split_external_id};

/// The driver, registered in [`super::DRIVERS`].
pub static DRIVER: Driver = Driver {
    name: "sql",
    summary: "tables or queries in PostgreSQL, MySQL/MariaDB and SQLite",
    check,
    open,
};

fn check(source: &SourceFile) -> Result<(), Vec<LoadError>> {
    definition::load(source).map(|_| ())
}

fn open(def: &Definition, instance: &Instance) -> Result<Arc<dyn Connector>, ConnectorError> {
    let checked = definition::load(&def.source).map_err(|errors| {
        ConnectorError::config(
            &instance.name,
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    Ok(Arc::new(SqlConnector::new(
        &instance.name,
        checked,
        instance,
    )?))
}

/// One database account.
pub struct SqlConnector {
    system: String,
    dialect: Dialect,
    pool: Pool,
    /// The URL with its password masked, for messages.
    target: String,
    timezone: Tz,
    query_timeout: Duration,
    entities: BTreeMap<String, Entity>,
    plans: Mutex<HashMap<String, Arc<Plan>>>,
}

impl std::fmt::Debug for SqlConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlConnector")
            .field("system", &self.system)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl SqlConnector {
    /// Builds the pool (without connecting) from a checked definition.
    pub fn new(
        system: &str,
        def: Checked,
        instance: &Instance,
    ) -> Result<SqlConnector, ConnectorError> {
        let url = instance.expand(&def.url)?;
        let url = url.expose_secret();
        let target = redact_url(url);
        let dialect = Dialect::of_url(url).ok_or_else(|| {
            ConnectorError::config(
                system,
                format!(
                    "`url` {target} must start with postgres://, mysql://, mariadb:// or sqlite:"
                ),
            )
        })?;
        let pool = Pool::lazy(
            dialect,
            url,
            def.max_connections,
            Duration::from_secs(def.connect_timeout_secs),
        )
        .map_err(|e| {
            ConnectorError::config(system, format!("`url` {target} is not usable: {}", e))
        })?;
        Ok(SqlConnector {
            system: system.to_owned(),
            dialect,
            pool,
            target,
            timezone: def.timezone,
            query_timeout: Duration::from_secs(def.query_timeout_secs),
            entities: def.entities,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn fail(&self, doing: &str, e: sqlx::Error) -> ConnectorError {
        errors::classify(&self.system, &self.target, doing, e)
    }

    fn entity(&self, name: &str) -> Result<&Entity, ConnectorError> {
        self.entities.get(name).ok_or_else(|| {
            ConnectorError::config(
                &self.system,
                format!(
                    "no entity `{name}` in this definition; it has: {}",
                    self.entities.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    /// The pool found no connection in time. The pool retries refused
    /// connections until then, so one direct attempt tells a database that
    /// is down (or refuses the credentials) from one that does not answer.
    async fn pool_timed_out(&self, doing: &str) -> ConnectorError {
        let probe = tokio::time::timeout(Duration::from_secs(5), self.pool.connect_once()).await;
        match probe {
            Ok(Err(e)) => self.fail(doing, e),
            _ => self.fail(doing, sqlx::Error::PoolTimedOut),
        }
    }

    /// Runs `fut` within the query timeout.
    async fn timed<T>(
        &self,
        doing: &str,
        fut: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, ConnectorError> {
        match tokio::time::timeout(self.query_timeout, fut).await {
            Ok(Err(sqlx::Error::PoolTimedOut)) => Err(self.pool_timed_out(doing).await),
            Ok(r) => r.map_err(|e| self.fail(doing, e)),
            Err(_) => Err(ConnectorError::new(
                ErrorKind::Timeout,
                &self.system,
                format!(
                    "{doing} on {} took longer than `query_timeout_secs` ({} s)",
                    self.target,
                    self.query_timeout.as_secs()
                ),
            )),
        }
    }

    /// The entity's plan, learned from the database on first use. Unknown
    /// tables and columns are configuration errors.
    async fn plan(&self, entity: &Entity) -> Result<Arc<Plan>, ConnectorError> {
        if let Some(p) = self.plans.lock().expect("plans lock").get(&entity.name) {
            return Ok(p.clone());
        }
        let doing = format!("reading the columns of entity `{}`", entity.name);
        let described = self
            .timed(&doing, self.pool.describe(probe_sql(self.dialect, entity)))
            .await?;
        let decl = match &entity.source {
            Source::Table(t) if self.dialect == Dialect::Sqlite => {
                self.timed(&doing, self.pool.sqlite_decltypes(t)).await?
            }
            _ => HashMap::new(),
        };
        let col = |(name, ty): &(String, String)| {
            let ty = decl.get(name).cloned().unwrap_or_else(|| {
                if self.dialect == Dialect::Sqlite {
                    String::new()
                } else {
                    ty.clone()
                }
            });
            Col::new(self.dialect, name, &ty)
        };
        let cols: Vec<Col> = described.iter().map(col).collect();
        let table_cols = match (&entity.source, &entity.upsert, &entity.columns) {
            (Source::Table(_), Some(_), Some(_)) => {
                let all = definition::Entity {
                    columns: None,
                    ..entity.clone()
                };
                let described = self
                    .timed(&doing, self.pool.describe(probe_sql(self.dialect, &all)))
                    .await?;
                described.iter().map(col).collect()
            }
            (Source::Table(_), Some(_), None) => cols.clone(),
            _ => Vec::new(),
        };
        let plan = Plan::build(self.dialect, entity, cols, table_cols)
            .map_err(|m| ConnectorError::config(&self.system, m))?;
        if let Some(up) = &entity.upsert {
            for c in up
                .key
                .iter()
                .chain(&up.columns)
                .chain(entity.idempotency_column.iter())
            {
                match plan.table_cols.get(c) {
                    None => {
                        return Err(ConnectorError::config(
                            &self.system,
                            format!(
                                "entity `{}`: upsert column `{c}` is not a column of {}",
                                entity.name,
                                plan::describe_source(entity)
                            ),
                        ));
                    }
                    Some(col) if col.kind == Kind::Bytes && self.dialect == Dialect::Postgres => {
                        return Err(ConnectorError::config(
                            &self.system,
                            format!(
                                "entity `{}`: column `{c}` is binary; concord does not push binary columns",
                                entity.name
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        let plan = Arc::new(plan);
        self.plans
            .lock()
            .expect("plans lock")
            .insert(entity.name.clone(), plan.clone());
        Ok(plan)
    }

    /// The `updated_at >= since` condition of the first page of a resumed
    /// pull (the look-back, or a cursor that has only a timestamp).
    fn since_condition(
        &self,
        entity: &Entity,
        plan: &Plan,
        cursor: &Cursor,
        position: Option<&Position>,
        buf: &mut SqlBuf,
    ) -> Option<String> {
        let upd = &plan.cols[plan.upd_idx];
        let look_back = Duration::from_secs(entity.look_back_secs);
        let at = match position {
            Some(p) => {
                if entity.look_back_secs == 0 {
                    return None;
                }
                cursor_instant(self.dialect, upd.kind, &p.key[0], self.timezone).ok()??
            }
            None => cursor.updated_at?,
        };
        let since = at - chrono::Duration::from_std(look_back).unwrap_or_default();
        let q = format!("q.{}", self.dialect.quote(&upd.name));
        let text = |s: String| KeyVal::Text(s);
        Some(match (self.dialect, upd.kind) {
            (Dialect::Sqlite, _) => {
                let local = utc_to_local(since, self.timezone);
                let p = buf.key(
                    self.dialect,
                    Kind::Text,
                    &text(local.format("%Y-%m-%d %H:%M:%S%.f").to_string()),
                );
                format!("julianday({q}) >= julianday({p})")
            }
            (_, Kind::Tstz) => {
                let value = if self.dialect == Dialect::Postgres {
                    since.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
                } else {
                    naive_text(since.naive_utc())
                };
                format!("{q} >= {}", buf.key(self.dialect, upd.kind, &text(value)))
            }
            (_, Kind::Ts) => {
                let value = naive_text(utc_to_local(since, self.timezone));
                format!("{q} >= {}", buf.key(self.dialect, upd.kind, &text(value)))
            }
            (_, Kind::Date) => {
                let value = utc_to_local(since, self.timezone)
                    .date()
                    .format("%Y-%m-%d")
                    .to_string();
                format!("{q} >= {}", buf.key(self.dialect, upd.kind, &text(value)))
            }
            _ => return None,
        })
    }

    /// Reads one page after `position` (or from `since`).
    async fn page(
        &self,
        entity: &Entity,
        state: &mut PullState,
    ) -> Result<Option<Page>, ConnectorError> {
        let plan = self.plan(entity).await?;
        let upd = &plan.cols[plan.upd_idx];
        let mut buf = SqlBuf::default();
        let mut conds = vec![format!("q.{} IS NOT NULL", self.dialect.quote(&upd.name))];
        if state.first {
            state.first = false;
            let resumed = state.given.clone();
            if let Some(given) = &resumed
                && let Some(c) =
                    self.since_condition(entity, &plan, given, state.position.as_ref(), &mut buf)
            {
                conds.push(c);
                state.position = None;
            }
        }
        if let Some(p) = &state.position {
            if p.key.len() != 1 + plan.id_idx.len() {
                return Err(ConnectorError::config(
                    &self.system,
                    format!(
                        "the cursor of entity `{}` holds {} key values, the entity has {}; was `id` changed? Reset the cursor",
                        entity.name,
                        p.key.len(),
                        1 + plan.id_idx.len()
                    ),
                ));
            }
            conds.push(keyset_condition(&plan, &p.key, &mut buf));
        }
        let sql = format!(
            "{} WHERE {} {}",
            plan.select_from,
            conds.join(" AND "),
            plan.order_limit
        );
        let doing = format!("reading entity `{}`", entity.name);
        let rows = self
            .timed(
                &doing,
                self.pool.fetch(sql, buf.binds, &plan, self.timezone),
            )
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let full = rows.len() >= entity.page_size;
        let mut records = Vec::with_capacity(rows.len());
        let mut rejects = Vec::new();
        for row in rows {
            let key = row.key.map_err(|m| {
                ConnectorError::invalid_data(
                    &self.system,
                    format!(
                        "entity `{}`: a row after {:?} cannot be paged past: {m}",
                        entity.name, state.position
                    ),
                )
            })?;
            let position = Position::new(key);
            let id_text = join_id(&row.key_text[1..]);
            let where_ = format!("{} id={}", plan::describe_source(entity), cut(&id_text));
            let upd_at = cursor_instant(self.dialect, upd.kind, &position.key[0], self.timezone);
            // The reported cursor stays at the given one while the
            // look-back re-reads rows before it.
            if !state.passed {
                let after = match (&upd_at, &state.given_at) {
                    (Ok(Some(at)), Some(given)) => at > given,
                    _ => false,
                };
                if after || state.given_position.as_ref() == Some(&position) {
                    state.passed = true;
                }
            }
            let record = match (row.data, upd_at, ExternalId::parse(&id_text)) {
                (Ok(data), Ok(updated_at), Ok(external_id)) => Ok(RawRecord {
                    external_id,
                    updated_at,
                    data: Value::Object(data),
                }),
                (Err(m), _, _) | (_, Err(m), _) => Err(m),
                (_, _, Err(e)) => Err(format!("the id is not usable: {e}")),
            };
            match record {
                Ok(r) => records.push(r),
                Err(reason) => rejects.push(Reject {
                    position: where_,
                    reason,
                    raw: cut(&row.key_text.join(", ")),
                }),
            }
            let at = upd_at_of(self.dialect, upd.kind, &position, self.timezone);
            if state.passed {
                state.cursor = Cursor {
                    updated_at: at.or(state.cursor.updated_at),
                    id: Some(id_text),
                    token: Some(position.to_token()),
                };
            }
            state.position = Some(position);
        }
        state.done = !full;
        Ok(Some(Page {
            records,
            rejects,
            cursor: state.cursor.clone(),
            ack: None,
            notices: Vec::new(),
        }))
    }

    async fn push_one(
        &self,
        entity: &Entity,
        plan: &Plan,
        change: &Change,
    ) -> Result<PushOutcome, ConnectorError> {
        let up = entity.upsert.as_ref().expect("checked before");
        let Value::Object(data) = &change.data else {
            return Ok(PushOutcome::Rejected {
                message: "the record is not a JSON object".into(),
            });
        };
        let w = Writer {
            c: self,
            entity,
            plan,
            table: plan.table.as_deref().expect("upsert needs a table"),
        };
        // A retried change finds the row it wrote.
        if let Some(idem) = &entity.idempotency_column {
            let mut obj = Map::new();
            obj.insert(idem.clone(), Value::String(change.idempotency_key.clone()));
            if let Some(id) = w.find(std::slice::from_ref(idem), &obj).await? {
                return Ok(outcome(change, id));
            }
        }
        let mut obj: Map<String, Value> = up
            .columns
            .iter()
            .map(|c| (c.clone(), data.get(c).cloned().unwrap_or(Value::Null)))
            .collect();
        if let Some(idem) = &entity.idempotency_column {
            obj.insert(idem.clone(), Value::String(change.idempotency_key.clone()));
        }
        let mut set: Vec<String> = up
            .columns
            .iter()
            .filter(|c| !up.key.contains(c))
            .cloned()
            .collect();
        set.extend(entity.idempotency_column.iter().cloned());

        if let Some(external_id) = &change.external_id {
            // An update of a known row, found by its id.
            let parts = match split_id(external_id.as_str(), entity.id.len()) {
                Ok(p) => p,
                Err(m) => return Ok(PushOutcome::Rejected { message: m }),
            };
            let mut key = Map::new();
            for (c, v) in entity.id.iter().zip(parts) {
                key.insert(c.clone(), Value::String(v));
            }
            if w.find(&entity.id, &key).await?.is_none() {
                return Ok(PushOutcome::Rejected {
                    message: format!(
                        "{} has no row with id {external_id}: it was deleted or never existed",
                        plan::describe_source(entity)
                    ),
                });
            }
            for c in &entity.id {
                obj.remove(c);
            }
            set.retain(|c| !entity.id.contains(c));
            w.update(&set, &obj, &key).await?;
            return Ok(PushOutcome::Updated {
                external_id: external_id.clone(),
            });
        }

        let missing: Vec<&String> = up
            .key
            .iter()
            .filter(|k| data.get(*k).is_none_or(Value::is_null))
            .collect();
        if missing.len() == up.key.len() && up.key == entity.id {
            // The database generates the key.
            if entity.idempotency_column.is_none() {
                return Ok(PushOutcome::Rejected {
                    message: format!(
                        "the record has no {} and the entity has no `idempotency_column`: a retried push could insert it twice",
                        up.key.join(", ")
                    ),
                });
            }
            let cols: Vec<String> = obj
                .keys()
                .filter(|c| !up.key.contains(c))
                .cloned()
                .collect();
            let id = w.insert_generated(&cols, &obj).await?;
            return Ok(PushOutcome::Created {
                external_id: parse_id(&self.system, &id)?,
            });
        }
        if !missing.is_empty() {
            return Ok(PushOutcome::Rejected {
                message: format!(
                    "the record has no value for {}, the key of `upsert`",
                    missing
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        for k in &up.key {
            obj.insert(k.clone(), data[k].clone());
        }
        let existed = w.find(&up.key, &obj).await?.is_some();
        if existed {
            // An UPDATE, not an upsert: SQLite checks NOT NULL columns the
            // record does not write before it sees the conflict.
            let key: Map<String, Value> =
                up.key.iter().map(|k| (k.clone(), obj[k].clone())).collect();
            let values: Map<String, Value> = obj
                .iter()
                .filter(|(k, _)| !up.key.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            w.update(&set, &values, &key).await?;
        } else {
            w.upsert(&up.key, &set, &obj).await?;
        }
        let id = w.find(&up.key, &obj).await?.ok_or_else(|| {
            ConnectorError::invalid_data(
                &self.system,
                format!(
                    "entity `{}`: the row written is not found by its key {}: is `upsert.key` a unique key?",
                    entity.name,
                    up.key.join(", ")
                ),
            )
        })?;
        let external_id = parse_id(&self.system, &id)?;
        Ok(if existed {
            PushOutcome::Updated { external_id }
        } else {
            PushOutcome::Created { external_id }
        })
    }
}

fn outcome(change: &Change, id: String) -> PushOutcome {
    match ExternalId::parse(&id) {
        Ok(external_id) if change.external_id.is_some() => PushOutcome::Updated { external_id },
        Ok(external_id) => PushOutcome::Created { external_id },
        Err(e) => PushOutcome::Rejected {
            message: format!("the row's id is not usable: {e}"),
        },
    }
}

fn parse_id(system: &str, id: &str) -> Result<ExternalId, ConnectorError> {
    ExternalId::parse(id).map_err(|e| {
        ConnectorError::invalid_data(system, format!("the written row's id is not usable: {e}"))
    })
}

fn upd_at_of(dialect: Dialect, kind: Kind, p: &Position, tz: Tz) -> Option<DateTime<Utc>> {
    cursor_instant(dialect, kind, &p.key[0], tz).ok().flatten()
}

/// Where a pull stands between pages.
struct PullState {
    /// The cursor the pull was started from.
    given: Option<Cursor>,
    given_position: Option<Position>,
    given_at: Option<DateTime<Utc>>,
    /// The last row read.
    position: Option<Position>,
    /// Whether rows after the given cursor have been reached.
    passed: bool,
    /// The cursor reported with the next page.
    cursor: Cursor,
    first: bool,
    done: bool,
}

/// The statements of one pushed record, run in one transaction.
struct Writer<'a> {
    c: &'a SqlConnector,
    entity: &'a Entity,
    plan: &'a Plan,
    table: &'a str,
}

impl Writer<'_> {
    fn quote(&self, c: &str) -> String {
        self.c.dialect.quote(c)
    }

    /// The id of the row whose `cols` equal the record's values, as text.
    async fn find(
        &self,
        cols: &[String],
        obj: &Map<String, Value>,
    ) -> Result<Option<String>, ConnectorError> {
        let d = self.c.dialect;
        let text = if d == Dialect::MySql { "CHAR" } else { "TEXT" };
        let ids = self
            .entity
            .id
            .iter()
            .map(|c| format!("CAST(t.{} AS {text})", self.quote(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut buf = SqlBuf::default();
        let sql = if d == Dialect::Postgres {
            let on = cols
                .iter()
                .map(|c| format!("t.{0} = r.{0}", self.quote(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            buf.value(d, Bind::Json(Value::Object(obj.clone())));
            format!(
                "SELECT {ids} FROM {} AS t JOIN jsonb_populate_record(NULL::{}, $1::jsonb) AS r ON {on} LIMIT 1",
                self.table, self.table
            )
        } else {
            let mut conds = Vec::new();
            for c in cols {
                let v = self.bind_for(c, obj.get(c).unwrap_or(&Value::Null))?;
                conds.push(format!("t.{} = {}", self.quote(c), buf.value(d, v)));
            }
            format!(
                "SELECT {ids} FROM {} AS t WHERE {} LIMIT 1",
                self.table,
                conds.join(" AND ")
            )
        };
        let n = self.entity.id.len();
        let doing = format!("looking up a row of entity `{}`", self.entity.name);
        let row: Option<Vec<Option<String>>> = self
            .c
            .timed(&doing, async {
                with_pool!(&self.c.pool, |p| {
                    let q = bind_all!(sqlx::query(AssertSqlSafe(sql)), buf.binds);
                    match q.fetch_optional(p).await? {
                        Some(r) => (0..n)
                            .map(|i| r.try_get_unchecked::<Option<String>, _>(i))
                            .collect::<Result<Vec<_>, _>>()
                            .map(Some),
                        None => Ok(None),
                    }
                })
            })
            .await?;
        Ok(row.map(|vals| {
            join_id(
                &vals
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect::<Vec<_>>(),
            )
        }))
    }

    /// A record value bound for a column of the table (MySQL and SQLite).
    fn bind_for(&self, col: &str, v: &Value) -> Result<Bind, ConnectorError> {
        let kind = self.plan.table_cols.get(col).map_or(Kind::Text, |c| c.kind);
        to_bind(self.c.dialect, kind, v, self.c.timezone).map_err(|m| {
            ConnectorError::invalid_data(&self.c.system, format!("field `{col}`: {m}"))
        })
    }

    async fn execute(&self, sql: String, binds: Vec<Bind>) -> Result<u64, ConnectorError> {
        let doing = format!("writing entity `{}`", self.entity.name);
        self.c
            .timed(&doing, async {
                with_pool!(&self.c.pool, |p| {
                    let q = bind_all!(sqlx::query(AssertSqlSafe(sql)), binds);
                    q.execute(p).await.map(|r| r.rows_affected())
                })
            })
            .await
    }

    fn values(
        &self,
        cols: &[String],
        obj: &Map<String, Value>,
        buf: &mut SqlBuf,
    ) -> Result<String, ConnectorError> {
        let d = self.c.dialect;
        if d == Dialect::Postgres {
            buf.value(d, Bind::Json(Value::Object(obj.clone())));
            let list = cols
                .iter()
                .map(|c| self.quote(c))
                .collect::<Vec<_>>()
                .join(", ");
            return Ok(format!(
                "SELECT {list} FROM jsonb_populate_record(NULL::{}, $1::jsonb)",
                self.table
            ));
        }
        let mut ps = Vec::new();
        for c in cols {
            let v = self.bind_for(c, obj.get(c).unwrap_or(&Value::Null))?;
            ps.push(buf.value(d, v));
        }
        Ok(format!("VALUES ({})", ps.join(", ")))
    }

    async fn upsert(
        &self,
        key: &[String],
        set: &[String],
        obj: &Map<String, Value>,
    ) -> Result<(), ConnectorError> {
        let d = self.c.dialect;
        let cols: Vec<String> = obj.keys().cloned().collect();
        let mut buf = SqlBuf::default();
        let values = self.values(&cols, obj, &mut buf)?;
        let list = cols
            .iter()
            .map(|c| self.quote(c))
            .collect::<Vec<_>>()
            .join(", ");
        let keys = key
            .iter()
            .map(|c| self.quote(c))
            .collect::<Vec<_>>()
            .join(", ");
        let tail = match d {
            Dialect::MySql => {
                let sets = if set.is_empty() {
                    format!("{0} = {0}", self.quote(&key[0]))
                } else {
                    set.iter()
                        .map(|c| format!("{0} = VALUES({0})", self.quote(c)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!("ON DUPLICATE KEY UPDATE {sets}")
            }
            _ if set.is_empty() => format!("ON CONFLICT ({keys}) DO NOTHING"),
            _ => {
                let sets = set
                    .iter()
                    .map(|c| format!("{0} = excluded.{0}", self.quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("ON CONFLICT ({keys}) DO UPDATE SET {sets}")
            }
        };
        let sql = format!("INSERT INTO {} ({list}) {values} {tail}", self.table);
        self.execute(sql, buf.binds).await.map(|_| ())
    }

    async fn update(
        &self,
        set: &[String],
        obj: &Map<String, Value>,
        key: &Map<String, Value>,
    ) -> Result<(), ConnectorError> {
        if set.is_empty() {
            return Ok(());
        }
        let d = self.c.dialect;
        let mut buf = SqlBuf::default();
        let sql = if d == Dialect::Postgres {
            let mut all = obj.clone();
            all.extend(key.clone());
            buf.value(d, Bind::Json(Value::Object(all)));
            let sets = set
                .iter()
                .map(|c| format!("{0} = r.{0}", self.quote(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let conds = key
                .keys()
                .map(|c| format!("t.{0} = r.{0}", self.quote(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            format!(
                "UPDATE {} AS t SET {sets} FROM jsonb_populate_record(NULL::{}, $1::jsonb) AS r WHERE {conds}",
                self.table, self.table
            )
        } else {
            let mut sets = Vec::new();
            for c in set {
                let v = self.bind_for(c, obj.get(c).unwrap_or(&Value::Null))?;
                sets.push(format!("{} = {}", self.quote(c), buf.value(d, v)));
            }
            let mut conds = Vec::new();
            for (c, v) in key {
                let v = self.bind_for(c, v)?;
                conds.push(format!("{} = {}", self.quote(c), buf.value(d, v)));
            }
            format!(
                "UPDATE {} SET {} WHERE {}",
                self.table,
                sets.join(", "),
                conds.join(" AND ")
            )
        };
        self.execute(sql, buf.binds).await.map(|_| ())
    }

    /// Inserts a row whose id the database generates; returns the id.
    async fn insert_generated(
        &self,
        cols: &[String],
        obj: &Map<String, Value>,
    ) -> Result<String, ConnectorError> {
        let mut buf = SqlBuf::default();
        let values = self.values(cols, obj, &mut buf)?;
        let list = cols
            .iter()
            .map(|c| self.quote(c))
            .collect::<Vec<_>>()
            .join(", ");
        let id = &self.entity.id[0];
        let doing = format!("inserting into entity `{}`", self.entity.name);
        let sql = format!("INSERT INTO {} ({list}) {values}", self.table);
        match &self.c.pool {
            Pool::My(p) => {
                let q = bind_all!(sqlx::query(AssertSqlSafe(sql)), buf.binds);
                let r = self.c.timed(&doing, q.execute(p)).await?;
                Ok(r.last_insert_id().to_string())
            }
            Pool::Pg(p) => {
                let sql = format!("{sql} RETURNING CAST({} AS TEXT)", self.quote(id));
                let q = bind_all!(
                    sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)),
                    buf.binds
                );
                self.c.timed(&doing, q.fetch_one(p)).await
            }
            Pool::Lite(p) => {
                let sql = format!("{sql} RETURNING CAST({} AS TEXT)", self.quote(id));
                let q = bind_all!(
                    sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)),
                    buf.binds
                );
                self.c.timed(&doing, q.fetch_one(p)).await
            }
        }
    }
}

/// A JSON value bound for a column of `kind` (MySQL and SQLite; PostgreSQL
/// converts from JSON itself).
fn to_bind(dialect: Dialect, kind: Kind, v: &Value, tz: Tz) -> Result<Bind, String> {
    Ok(match v {
        Value::Null => Bind::Null,
        Value::Bool(b) => Bind::Bool(*b),
        Value::Number(n) => match (n.as_i64(), kind) {
            (Some(i), _) => Bind::Int(i),
            (None, Kind::Float) => Bind::Real(n.as_f64().unwrap_or(f64::NAN)),
            // Exact: the database parses the text.
            (None, _) => Bind::Text(n.to_string()),
        },
        Value::String(s) => match kind {
            Kind::Bytes => Bind::Bytes(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s)
                    .map_err(|e| format!("binary columns take base64 text: {e}"))?,
            ),
            Kind::Ts | Kind::Tstz if dialect == Dialect::MySql => {
                match DateTime::parse_from_rfc3339(s) {
                    Ok(t) if kind == Kind::Tstz => Bind::Naive(t.naive_utc()),
                    Ok(t) => Bind::Naive(utc_to_local(t.with_timezone(&Utc), tz)),
                    Err(_) => Bind::Text(s.clone()),
                }
            }
            _ => Bind::Text(s.clone()),
        },
        Value::Array(_) | Value::Object(_) => Bind::Text(v.to_string()),
    })
}

#[async_trait]
impl Connector for SqlConnector {
    fn name(&self) -> &str {
        &self.system
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            entities: self
                .entities
                .iter()
                .map(|(name, e)| {
                    (
                        name.clone(),
                        EntityCapabilities {
                            pull: true,
                            incremental: true,
                            get: true,
                            push: e.upsert.is_some(),
                            webhooks: false,
                        },
                    )
                })
                .collect(),
        }
    }

    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        self.timed("connecting", self.pool.ping()).await?;
        for entity in self.entities.values() {
            self.plan(entity).await?;
        }
        Ok(())
    }

    fn pull<'a>(&'a self, entity: &'a str, cursor: Option<Cursor>) -> PageStream<'a> {
        let start = (|| {
            let e = self.entity(entity)?;
            let given_position = match cursor.as_ref().and_then(|c| c.token.as_deref()) {
                Some(t) => Some(Position::from_token(t).map_err(|m| {
                    ConnectorError::config(&self.system, format!("entity `{entity}`: {m}"))
                })?),
                None => None,
            };
            Ok((e, given_position))
        })();
        let (e, given_position) = match start {
            Ok(s) => s,
            Err(err) => return Box::pin(stream::once(async move { Err(err) })),
        };
        let state = PullState {
            given_at: cursor.as_ref().and_then(|c| c.updated_at),
            position: given_position.clone(),
            passed: cursor.is_none(),
            cursor: cursor.clone().unwrap_or_default(),
            given: cursor,
            given_position,
            first: true,
            done: false,
        };
        Box::pin(stream::unfold(state, move |mut state| async move {
            if state.done {
                return None;
            }
            match self.page(e, &mut state).await {
                Ok(Some(page)) => Some((Ok(page), state)),
                Ok(None) => None,
                Err(err) => {
                    state.done = true;
                    Some((Err(err), state))
                }
            }
        }))
    }

    async fn get(
        &self,
        entity: &str,
        id: &ExternalId,
    ) -> Result<Option<RawRecord>, ConnectorError> {
        let e = self.entity(entity)?;
        let plan = self.plan(e).await?;
        let parts = split_id(id.as_str(), e.id.len())
            .map_err(|m| ConnectorError::new(ErrorKind::NotFound, &self.system, m))?;
        let mut buf = SqlBuf::default();
        let conds = plan
            .id_idx
            .iter()
            .zip(parts)
            .map(|(&i, v)| {
                let col = &plan.cols[i];
                let v = match (col.kind, v.parse::<i64>()) {
                    (Kind::Int, Ok(n)) => KeyVal::Int(n),
                    _ => KeyVal::Text(v),
                };
                format!(
                    "q.{} = {}",
                    self.dialect.quote(&col.name),
                    buf.key(self.dialect, col.kind, &v)
                )
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!("{} WHERE {conds} LIMIT 1", plan.select_from);
        let doing = format!("reading one `{entity}`");
        let rows = self
            .timed(
                &doing,
                self.pool.fetch(sql, buf.binds, &plan, self.timezone),
            )
            .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let data = row.data.map_err(|m| {
            ConnectorError::invalid_data(&self.system, format!("`{entity}` {id}: {m}"))
        })?;
        let upd = &plan.cols[plan.upd_idx];
        let updated_at = match &row.key {
            Ok(k) => cursor_instant(self.dialect, upd.kind, &k[0], self.timezone)
                .map_err(|m| ConnectorError::invalid_data(&self.system, m))?,
            Err(_) => None,
        };
        Ok(Some(RawRecord {
            external_id: id.clone(),
            updated_at,
            data: Value::Object(data),
        }))
    }

    async fn push(
        &self,
        entity: &str,
        changes: Vec<Change>,
    ) -> Result<Vec<PushOutcome>, ConnectorError> {
        let e = self.entity(entity)?;
        if e.upsert.is_none() {
            return Err(ConnectorError::config(
                &self.system,
                format!("entity `{entity}` has no `upsert`: it cannot be written"),
            ));
        }
        let plan = self.plan(e).await?;
        let mut outcomes = Vec::with_capacity(changes.len());
        for change in &changes {
            match self.push_one(e, &plan, change).await {
                Ok(o) => outcomes.push(o),
                Err(err) => match err.kind {
                    ErrorKind::InvalidData | ErrorKind::Conflict | ErrorKind::NotFound => {
                        outcomes.push(PushOutcome::Rejected {
                            message: format!("{}: {}", err.kind, err.message),
                        });
                    }
                    _ if outcomes.is_empty() => return Err(err),
                    kind if kind.is_retryable() => {
                        let delay = err.retry_after().unwrap_or(Duration::from_secs(30));
                        while outcomes.len() < changes.len() {
                            outcomes.push(PushOutcome::RetryLater {
                                delay,
                                message: err.to_string(),
                            });
                        }
                        break;
                    }
                    _ => {
                        while outcomes.len() < changes.len() {
                            outcomes.push(PushOutcome::Rejected {
                                message: err.to_string(),
                            });
                        }
                        break;
                    }
                },
            }
        }
        Ok(outcomes)
    }
}
