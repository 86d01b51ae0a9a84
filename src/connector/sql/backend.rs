//! The three databases behind one enum: connecting, describing, reading rows
//! into JSON and running statements with bound values.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Column, Executor, Row, Statement, TypeInfo, ValueRef};

use super::ident::{Dialect, TableName};
use super::keys::{KeyVal, float_text, local_to_utc, naive_text, parse_timestamp_text, rfc3339};
use super::plan::{Bind, Col, Kind, Plan};

/// A pool of connections to one database.
#[derive(Clone, Debug)]
pub enum Pool {
    Pg(PgPool),
    My(MySqlPool),
    Lite(SqlitePool),
}

/// Runs `$body` with `$p` bound to the concrete pool, whatever the backend.
macro_rules! with_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            Pool::Pg($p) => $body,
            Pool::My($p) => $body,
            Pool::Lite($p) => $body,
        }
    };
}

/// Binds every value of `$binds` to the query `$q`.
macro_rules! bind_all {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::Null => q.bind(None::<String>),
                Bind::Bool(v) => q.bind(v),
                Bind::Int(v) => q.bind(v),
                Bind::Real(v) => q.bind(v),
                Bind::Text(v) => q.bind(v),
                Bind::Bytes(v) => q.bind(v),
                Bind::Json(v) => q.bind(sqlx::types::Json(v)),
                Bind::Naive(v) => q.bind(v),
            };
        }
        q
    }};
}
pub(crate) use {bind_all, with_pool};

/// A row read: its JSON object (or why it could not be read), its key
/// values, and its `updated_at` instant.
pub struct RowOut {
    pub data: Result<Map<String, Value>, String>,
    pub key: Result<Vec<KeyVal>, String>,
    pub key_text: Vec<String>,
}

impl Pool {
    /// A pool that connects on first use.
    pub fn lazy(
        dialect: Dialect,
        url: &str,
        max: u32,
        acquire_timeout: Duration,
    ) -> Result<Pool, sqlx::Error> {
        Ok(match dialect {
            Dialect::Postgres => {
                let opts = PgConnectOptions::from_str(url)?.application_name("concord");
                Pool::Pg(
                    PgPoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(acquire_timeout)
                        .connect_lazy_with(opts),
                )
            }
            Dialect::MySql => {
                let url = url.replacen("mariadb:", "mysql:", 1);
                let opts = MySqlConnectOptions::from_str(&url)?;
                Pool::My(
                    MySqlPoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(acquire_timeout)
                        .connect_lazy_with(opts),
                )
            }
            Dialect::Sqlite => {
                // Someone else's database: never create it, leave its
                // journal mode alone.
                let opts = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(false)
                    .busy_timeout(acquire_timeout.min(Duration::from_secs(5)));
                Pool::Lite(
                    SqlitePoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(acquire_timeout)
                        .connect_lazy_with(opts),
                )
            }
        })
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        with_pool!(self, |p| sqlx::query("SELECT 1")
            .execute(p)
            .await
            .map(|_| ()))
    }

    /// Opens and closes one connection outside the pool.
    pub async fn connect_once(&self) -> Result<(), sqlx::Error> {
        use sqlx::ConnectOptions as _;
        use sqlx::Connection as _;
        with_pool!(self, |p| {
            let opts = p.connect_options();
            opts.connect().await?.close().await
        })
    }

    pub async fn close(&self) {
        with_pool!(self, |p| p.close().await)
    }

    /// The output columns of a statement, without running it.
    pub async fn describe(&self, sql: String) -> Result<Vec<(String, String)>, sqlx::Error> {
        with_pool!(self, |p| {
            let stmt = p.prepare(AssertSqlSafe(sql).into_sql_str()).await?;
            Ok(stmt
                .columns()
                .iter()
                .map(|c| (c.name().to_owned(), c.type_info().name().to_owned()))
                .collect())
        })
    }

    /// SQLite's declared column types of a table.
    pub async fn sqlite_decltypes(
        &self,
        table: &TableName,
    ) -> Result<HashMap<String, String>, sqlx::Error> {
        let Pool::Lite(p) = self else {
            return Ok(HashMap::new());
        };
        let rows = sqlx::query("SELECT name, type FROM pragma_table_info($1, $2)")
            .bind(&table.table)
            .bind(table.schema.as_deref().unwrap_or("main"))
            .fetch_all(p)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
            .collect()
    }

    /// Runs a page query and reads its rows.
    pub async fn fetch(
        &self,
        sql: String,
        binds: Vec<Bind>,
        plan: &Plan,
        tz: Tz,
    ) -> Result<Vec<RowOut>, sqlx::Error> {
        match self {
            Pool::Pg(p) => {
                let q = bind_all!(sqlx::query(AssertSqlSafe(sql)), binds);
                let rows = q.fetch_all(p).await?;
                Ok(rows
                    .iter()
                    .map(|r| read_row(plan, |i, c| pg_value(r, i, c, tz)))
                    .collect())
            }
            Pool::My(p) => {
                let q = bind_all!(sqlx::query(AssertSqlSafe(sql)), binds);
                let rows = q.fetch_all(p).await?;
                Ok(rows
                    .iter()
                    .map(|r| read_row(plan, |i, c| my_value(r, i, c, tz)))
                    .collect())
            }
            Pool::Lite(p) => {
                let q = bind_all!(sqlx::query(AssertSqlSafe(sql)), binds);
                let rows = q.fetch_all(p).await?;
                Ok(rows
                    .iter()
                    .map(|r| read_row(plan, |i, c| lite_value(r, i, c, tz)))
                    .collect())
            }
        }
    }
}

use sqlx::SqlSafeStr as _;

/// A value read: its JSON form and, for key columns, its key form.
pub struct Cell {
    pub json: Value,
    pub key: Option<KeyVal>,
}

fn read_row(plan: &Plan, mut value: impl FnMut(usize, &Col) -> Result<Cell, String>) -> RowOut {
    let key_cols: Vec<usize> = std::iter::once(plan.upd_idx)
        .chain(plan.id_idx.iter().copied())
        .collect();
    let mut data = Map::new();
    let mut bad = Vec::new();
    let mut keys: Vec<Option<KeyVal>> = vec![None; key_cols.len()];
    let mut key_err = None;
    for (i, col) in plan.cols.iter().enumerate() {
        match value(i, col) {
            Ok(cell) => {
                for (slot, &k) in key_cols.iter().enumerate() {
                    if k == i {
                        match &cell.key {
                            Some(kv) => keys[slot] = Some(kv.clone()),
                            None => key_err = Some(format!("key column `{}` is NULL", col.name)),
                        }
                    }
                }
                data.insert(col.name.clone(), cell.json);
            }
            Err(e) => {
                if key_cols.contains(&i) {
                    key_err = Some(format!("key column `{}`: {e}", col.name));
                }
                bad.push(format!("column `{}`: {e}", col.name));
                data.insert(col.name.clone(), Value::Null);
            }
        }
    }
    let key_text = key_cols
        .iter()
        .map(|&i| match data.get(&plan.cols[i].name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        })
        .collect();
    let key = match key_err {
        Some(e) => Err(e),
        None => Ok(keys
            .into_iter()
            .map(|k| k.expect("every key slot is filled"))
            .collect()),
    };
    RowOut {
        data: if bad.is_empty() {
            Ok(data)
        } else {
            Err(bad.join("; "))
        },
        key,
        key_text,
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn b64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(f.to_string()))
}

fn text_cell(s: String) -> Cell {
    Cell {
        key: Some(KeyVal::Text(s.clone())),
        json: Value::String(s),
    }
}

fn tstz_cell(t: DateTime<Utc>, key_text: String) -> Cell {
    Cell {
        json: Value::String(rfc3339(t)),
        key: Some(KeyVal::Text(key_text)),
    }
}

fn naive_cell(t: NaiveDateTime, tz: Tz) -> Cell {
    Cell {
        json: Value::String(rfc3339(local_to_utc(t, tz))),
        key: Some(KeyVal::Text(naive_text(t))),
    }
}

fn date_cell(d: NaiveDate) -> Cell {
    text_cell(d.format("%Y-%m-%d").to_string())
}

fn int_cell(i: i64) -> Cell {
    Cell {
        json: Value::from(i),
        key: Some(KeyVal::Int(i)),
    }
}

const NULL: Cell = Cell {
    json: Value::Null,
    key: None,
};

fn pg_value(row: &PgRow, i: usize, col: &Col, tz: Tz) -> Result<Cell, String> {
    if row.try_get_raw(i).map_err(err)?.is_null() {
        return Ok(NULL);
    }
    if col.cast_text {
        return row.try_get::<String, _>(i).map(text_cell).map_err(err);
    }
    let t = col.type_name.as_str();
    Ok(match t {
        "BOOL" => Cell {
            json: Value::Bool(row.try_get(i).map_err(err)?),
            key: None,
        },
        "INT2" => int_cell(row.try_get::<i16, _>(i).map_err(err)?.into()),
        "INT4" => int_cell(row.try_get::<i32, _>(i).map_err(err)?.into()),
        "INT8" => int_cell(row.try_get::<i64, _>(i).map_err(err)?),
        "FLOAT4" => Cell {
            json: float(row.try_get::<f32, _>(i).map_err(err)?.into()),
            key: None,
        },
        "FLOAT8" => Cell {
            json: float(row.try_get::<f64, _>(i).map_err(err)?),
            key: None,
        },
        "JSON" | "JSONB" => Cell {
            json: row
                .try_get::<sqlx::types::Json<Value>, _>(i)
                .map_err(err)?
                .0,
            key: None,
        },
        "BYTEA" => Cell {
            json: b64(&row.try_get::<Vec<u8>, _>(i).map_err(err)?),
            key: None,
        },
        "TIMESTAMPTZ" => {
            let at: DateTime<Utc> = row.try_get(i).map_err(err)?;
            tstz_cell(at, at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        }
        "TIMESTAMP" => naive_cell(row.try_get(i).map_err(err)?, tz),
        _ => text_cell(row.try_get::<String, _>(i).map_err(err)?),
    })
}

fn my_value(row: &MySqlRow, i: usize, col: &Col, tz: Tz) -> Result<Cell, String> {
    if row.try_get_raw(i).map_err(err)?.is_null() {
        return Ok(NULL);
    }
    let text = || row.try_get_unchecked::<String, _>(i).map_err(err);
    Ok(match col.kind {
        Kind::Bool => Cell {
            json: Value::Bool(row.try_get_unchecked::<i64, _>(i).map_err(err)? != 0),
            key: None,
        },
        Kind::Int => int_cell(row.try_get_unchecked::<i64, _>(i).map_err(err)?),
        Kind::UInt => {
            let u = row.try_get_unchecked::<u64, _>(i).map_err(err)?;
            Cell {
                json: Value::from(u),
                key: Some(KeyVal::Text(u.to_string())),
            }
        }
        Kind::Float => Cell {
            json: float(if col.type_name == "FLOAT" {
                row.try_get_unchecked::<f32, _>(i).map_err(err)?.into()
            } else {
                row.try_get_unchecked::<f64, _>(i).map_err(err)?
            }),
            key: None,
        },
        Kind::Json => {
            let s = text()?;
            Cell {
                json: serde_json::from_str(&s).unwrap_or(Value::String(s)),
                key: None,
            }
        }
        Kind::Bytes => Cell {
            json: b64(&row.try_get_unchecked::<Vec<u8>, _>(i).map_err(err)?),
            key: None,
        },
        Kind::Tstz => {
            let at: DateTime<Utc> = row.try_get_unchecked(i).map_err(err)?;
            tstz_cell(at, naive_text(at.naive_utc()))
        }
        Kind::Ts => naive_cell(row.try_get_unchecked(i).map_err(err)?, tz),
        Kind::Date => date_cell(row.try_get_unchecked(i).map_err(err)?),
        Kind::Decimal | Kind::Text | Kind::Uuid | Kind::Other => text_cell(text()?),
    })
}

fn lite_value(row: &SqliteRow, i: usize, col: &Col, tz: Tz) -> Result<Cell, String> {
    let raw = row.try_get_raw(i).map_err(err)?;
    if raw.is_null() {
        return Ok(NULL);
    }
    let storage = raw.type_info().name().to_owned();
    Ok(match storage.as_str() {
        "INTEGER" => {
            let v: i64 = row.try_get_unchecked(i).map_err(err)?;
            let json = match col.kind {
                Kind::Bool => Value::Bool(v != 0),
                Kind::Decimal => Value::String(v.to_string()),
                _ => Value::from(v),
            };
            Cell {
                json,
                key: Some(KeyVal::Int(v)),
            }
        }
        "REAL" => {
            let v: f64 = row.try_get_unchecked(i).map_err(err)?;
            let json = match col.kind {
                Kind::Decimal => Value::String(float_text(v)),
                _ => float(v),
            };
            Cell {
                json,
                key: Some(KeyVal::Real(v)),
            }
        }
        "BLOB" => Cell {
            json: b64(&row.try_get_unchecked::<Vec<u8>, _>(i).map_err(err)?),
            key: None,
        },
        _ => {
            let s: String = row
                .try_get_unchecked(i)
                .map_err(|e| format!("not valid UTF-8 text: {e}"))?;
            let json = match col.kind {
                Kind::Ts => match parse_timestamp_text(&s, tz) {
                    Some(at) => Value::String(rfc3339(at)),
                    None => Value::String(s.clone()),
                },
                _ => Value::String(s.clone()),
            };
            Cell {
                json,
                key: Some(KeyVal::Text(s)),
            }
        }
    })
}

/// The instant a cursor value stands for, when it is a time: `None` for
/// integer positions.
pub fn cursor_instant(
    dialect: Dialect,
    kind: Kind,
    value: &KeyVal,
    tz: Tz,
) -> Result<Option<DateTime<Utc>>, String> {
    match (value, dialect, kind) {
        (KeyVal::Int(i), Dialect::Sqlite, Kind::Ts | Kind::Date) => DateTime::from_timestamp(*i, 0)
            .map(Some)
            .ok_or_else(|| format!("{i} is not a Unix time")),
        (KeyVal::Int(_) | KeyVal::Real(_), _, _) => Ok(None),
        (KeyVal::Text(s), Dialect::Sqlite, _) => parse_timestamp_text(s, tz)
            .map(Some)
            .ok_or_else(|| format!("updated_at `{}` is not a timestamp", cut(s))),
        (KeyVal::Text(s), _, Kind::Tstz) => {
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Ok(Some(t.with_timezone(&Utc)));
            }
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                .map(|n| Some(n.and_utc()))
                .map_err(|e| format!("updated_at `{}`: {e}", cut(s)))
        }
        (KeyVal::Text(s), _, Kind::Ts) => NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .map(|n| Some(local_to_utc(n, tz)))
            .map_err(|e| format!("updated_at `{}`: {e}", cut(s))),
        (KeyVal::Text(s), _, Kind::Date) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(|d| {
                Some(local_to_utc(
                    d.and_hms_opt(0, 0, 0).expect("midnight exists"),
                    tz,
                ))
            })
            .map_err(|e| format!("updated_at `{}`: {e}", cut(s))),
        (KeyVal::Text(_), _, _) => Ok(None),
    }
}

/// At most 80 characters of a value, for messages.
pub fn cut(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}
