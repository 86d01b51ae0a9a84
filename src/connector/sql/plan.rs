//! What concord learns about an entity's columns on first use, and the SQL
//! it builds from that: the page query with keyset pagination, and the
//! statements of a push.

use std::collections::HashMap;

use super::definition::{Entity, Source};
use super::ident::Dialect;
use super::keys::KeyVal;

/// How a column's values are read, written and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    /// MySQL unsigned integers (may exceed `i64`).
    UInt,
    Float,
    /// Exact numbers, read as strings.
    Decimal,
    Text,
    Json,
    /// Read as base64.
    Bytes,
    /// A timestamp with a time zone (PostgreSQL `timestamptz`, MySQL
    /// `TIMESTAMP`).
    Tstz,
    /// A timestamp without one, in the definition's `timezone`.
    Ts,
    Date,
    Uuid,
    /// Anything else: read as its text form.
    Other,
}

/// One column of an entity as the database describes it.
#[derive(Debug, Clone)]
pub struct Col {
    pub name: String,
    /// The database's type name (`INT4`, `DECIMAL`, SQLite's declared type).
    pub type_name: String,
    pub kind: Kind,
    /// Selected as `CAST(… AS TEXT)` and read as a string.
    pub cast_text: bool,
}

impl Col {
    pub fn new(dialect: Dialect, name: &str, type_name: &str) -> Col {
        let kind = kind_of(dialect, type_name);
        let cast_text = match dialect {
            Dialect::Postgres => {
                matches!(kind, Kind::Decimal | Kind::Date | Kind::Uuid | Kind::Other)
            }
            Dialect::MySql => matches!(kind, Kind::Other),
            Dialect::Sqlite => false,
        };
        Col {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
            kind,
            cast_text,
        }
    }
}

/// The kind of a type name as the database reports it.
pub fn kind_of(dialect: Dialect, type_name: &str) -> Kind {
    let t = type_name.to_ascii_uppercase();
    match dialect {
        Dialect::Postgres => match t.as_str() {
            "BOOL" => Kind::Bool,
            "INT2" | "INT4" | "INT8" => Kind::Int,
            "FLOAT4" | "FLOAT8" => Kind::Float,
            "NUMERIC" => Kind::Decimal,
            "TEXT" | "VARCHAR" | "CHAR" | "BPCHAR" | "NAME" | "CITEXT" => Kind::Text,
            "JSON" | "JSONB" => Kind::Json,
            "BYTEA" => Kind::Bytes,
            "TIMESTAMPTZ" => Kind::Tstz,
            "TIMESTAMP" => Kind::Ts,
            "DATE" => Kind::Date,
            "UUID" => Kind::Uuid,
            _ => Kind::Other,
        },
        Dialect::MySql => match t.as_str() {
            "BOOLEAN" => Kind::Bool,
            "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => Kind::Int,
            // Unsigned values are read as unsigned, whatever their width.
            "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
            | "BIGINT UNSIGNED" => Kind::UInt,
            "FLOAT" | "DOUBLE" => Kind::Float,
            "DECIMAL" => Kind::Decimal,
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM"
            | "SET" => Kind::Text,
            "JSON" => Kind::Json,
            "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => Kind::Bytes,
            "DATETIME" => Kind::Ts,
            "TIMESTAMP" => Kind::Tstz,
            "DATE" => Kind::Date,
            _ => Kind::Other,
        },
        // SQLite's declared types follow its affinity rules; values are
        // read by their storage class, the declared type only hints.
        Dialect::Sqlite => {
            if t.contains("INT") {
                Kind::Int
            } else if t.contains("BOOL") {
                Kind::Bool
            } else if t.contains("DEC") || t.contains("NUMERIC") || t.contains("MONEY") {
                Kind::Decimal
            } else if t.contains("DATETIME") || t.contains("TIMESTAMP") {
                Kind::Ts
            } else if t.contains("DATE") {
                Kind::Date
            } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
                Kind::Float
            } else if t.contains("BLOB") {
                Kind::Bytes
            } else {
                Kind::Text
            }
        }
    }
}

/// One entity ready to read: its columns and the fixed parts of its SQL.
#[derive(Debug)]
pub struct Plan {
    pub dialect: Dialect,
    pub cols: Vec<Col>,
    pub upd_idx: usize,
    pub id_idx: Vec<usize>,
    /// `SELECT <list> FROM <source> AS q`
    pub select_from: String,
    /// `ORDER BY q.upd, q.id… LIMIT n`
    pub order_limit: String,
    /// Columns of the table by name, for pushes.
    pub table_cols: HashMap<String, Col>,
    /// The quoted table, for pushes.
    pub table: Option<String>,
}

/// The `FROM` part of an entity.
pub fn source_sql(dialect: Dialect, entity: &Entity) -> String {
    match &entity.source {
        Source::Table(t) => format!("{} AS q", dialect.quote_table(t)),
        Source::Query(q) => format!("({q}) AS q"),
    }
}

/// The columns to read: the configured ones plus `id` and `updated_at`.
pub fn wanted_columns(entity: &Entity) -> Option<Vec<String>> {
    let cols = entity.columns.as_ref()?;
    let mut out: Vec<String> = Vec::new();
    for c in entity
        .id
        .iter()
        .chain(std::iter::once(&entity.updated_at))
        .chain(cols.iter())
    {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    Some(out)
}

/// The probe that finds the columns: `SELECT … FROM source LIMIT 0`.
pub fn probe_sql(dialect: Dialect, entity: &Entity) -> String {
    let list = match wanted_columns(entity) {
        Some(cols) => cols
            .iter()
            .map(|c| format!("q.{}", dialect.quote(c)))
            .collect::<Vec<_>>()
            .join(", "),
        None => "*".to_owned(),
    };
    format!("SELECT {list} FROM {} LIMIT 0", source_sql(dialect, entity))
}

impl Plan {
    /// Builds the plan from the described columns; a configured column the
    /// database does not have, or an id or cursor column of a kind concord
    /// cannot page by, is a configuration error.
    pub fn build(
        dialect: Dialect,
        entity: &Entity,
        cols: Vec<Col>,
        table_cols: Vec<Col>,
    ) -> Result<Plan, String> {
        let find = |name: &str| cols.iter().position(|c| c.name == name);
        let missing = |what: &str, name: &str| {
            format!(
                "entity `{}`: {what} `{name}` is not a column of {}; it has: {}",
                entity.name,
                describe_source(entity),
                cols.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let upd_idx =
            find(&entity.updated_at).ok_or_else(|| missing("updated_at", &entity.updated_at))?;
        let mut id_idx = Vec::new();
        for id in &entity.id {
            id_idx.push(find(id).ok_or_else(|| missing("id", id))?);
        }
        let upd = &cols[upd_idx];
        let cursor_ok = match dialect {
            Dialect::Sqlite => !matches!(upd.kind, Kind::Bytes),
            _ => matches!(
                upd.kind,
                Kind::Int | Kind::UInt | Kind::Tstz | Kind::Ts | Kind::Date
            ),
        };
        if !cursor_ok {
            return Err(format!(
                "entity `{}`: updated_at column `{}` has type {}; use a timestamp, date or integer column",
                entity.name, upd.name, upd.type_name
            ));
        }
        for &i in &id_idx {
            let c = &cols[i];
            let ok = match dialect {
                Dialect::Sqlite => !matches!(c.kind, Kind::Bytes),
                _ => !matches!(
                    c.kind,
                    Kind::Bool | Kind::Float | Kind::Json | Kind::Bytes | Kind::Other
                ),
            };
            if !ok {
                return Err(format!(
                    "entity `{}`: id column `{}` has type {}; an id must be an integer, text, decimal, uuid, date or timestamp column",
                    entity.name, c.name, c.type_name
                ));
            }
        }
        let q = |c: &str| format!("q.{}", dialect.quote(c));
        let list = cols
            .iter()
            .map(|c| {
                if c.cast_text {
                    let text = if dialect == Dialect::MySql {
                        "CHAR"
                    } else {
                        "TEXT"
                    };
                    format!(
                        "CAST({} AS {text}) AS {}",
                        q(&c.name),
                        dialect.quote(&c.name)
                    )
                } else {
                    q(&c.name)
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let select_from = format!("SELECT {list} FROM {}", source_sql(dialect, entity));
        let order = std::iter::once(upd_idx)
            .chain(id_idx.iter().copied())
            .map(|i| q(&cols[i].name))
            .collect::<Vec<_>>()
            .join(", ");
        let order_limit = format!("ORDER BY {order} LIMIT {}", entity.page_size);
        let table = match &entity.source {
            Source::Table(t) => Some(dialect.quote_table(t)),
            Source::Query(_) => None,
        };
        Ok(Plan {
            dialect,
            cols,
            upd_idx,
            id_idx,
            select_from,
            order_limit,
            table_cols: table_cols
                .into_iter()
                .map(|c| (c.name.clone(), c))
                .collect(),
            table,
        })
    }

    /// The key columns in keyset order: cursor column, then ids.
    pub fn key_cols(&self) -> Vec<&Col> {
        std::iter::once(self.upd_idx)
            .chain(self.id_idx.iter().copied())
            .map(|i| &self.cols[i])
            .collect()
    }
}

/// `table t` or `the query`, for messages.
pub fn describe_source(entity: &Entity) -> String {
    match &entity.source {
        Source::Table(t) => format!("table {t}"),
        Source::Query(_) => "the query".to_owned(),
    }
}

/// Collects SQL text and the values bound to it, numbering placeholders.
#[derive(Debug, Default)]
pub struct SqlBuf {
    pub binds: Vec<Bind>,
}

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Null,
    Bool(bool),
    Int(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
    Json(serde_json::Value),
    Naive(chrono::NaiveDateTime),
}

impl SqlBuf {
    /// A placeholder for `value`, cast so the database compares it with a
    /// column of `kind` exactly.
    pub fn key(&mut self, dialect: Dialect, kind: Kind, value: &KeyVal) -> String {
        self.binds.push(match value {
            KeyVal::Int(i) => Bind::Int(*i),
            KeyVal::Real(f) => Bind::Real(*f),
            KeyVal::Text(s) => Bind::Text(s.clone()),
        });
        let p = dialect.placeholder(self.binds.len());
        if matches!(value, KeyVal::Int(_) | KeyVal::Real(_)) {
            return p;
        }
        let cast = match (dialect, kind) {
            (Dialect::Postgres, Kind::Decimal) => Some("NUMERIC"),
            (Dialect::Postgres, Kind::Date) => Some("DATE"),
            (Dialect::Postgres, Kind::Tstz) => Some("TIMESTAMPTZ"),
            (Dialect::Postgres, Kind::Ts) => Some("TIMESTAMP"),
            (Dialect::Postgres, Kind::Uuid) => Some("UUID"),
            (Dialect::Postgres, Kind::Int) => Some("BIGINT"),
            (Dialect::MySql, Kind::UInt) => Some("UNSIGNED"),
            (Dialect::MySql, Kind::Decimal) => Some("DECIMAL(65,30)"),
            (Dialect::MySql, Kind::Date) => Some("DATE"),
            (Dialect::MySql, Kind::Ts | Kind::Tstz) => Some("DATETIME(6)"),
            (Dialect::MySql, Kind::Int) => Some("SIGNED"),
            _ => None,
        };
        match cast {
            Some(t) => format!("CAST({p} AS {t})"),
            None => p,
        }
    }

    /// A placeholder for a plain value.
    pub fn value(&mut self, dialect: Dialect, value: Bind) -> String {
        self.binds.push(value);
        dialect.placeholder(self.binds.len())
    }
}

/// `(k0 > p0) OR (k0 = p0 AND (k1 > p1 OR …))`: rows after `key` in key
/// order, written so the leading `k0 >= p0` can use an index.
pub fn keyset_condition(plan: &Plan, key: &[KeyVal], buf: &mut SqlBuf) -> String {
    let cols = plan.key_cols();
    let q = |c: &Col| format!("q.{}", plan.dialect.quote(&c.name));
    fn after(
        plan: &Plan,
        cols: &[&Col],
        key: &[KeyVal],
        buf: &mut SqlBuf,
        q: &dyn Fn(&Col) -> String,
    ) -> String {
        let (c, k) = (cols[0], &key[0]);
        let gt = format!("{} > {}", q(c), buf.key(plan.dialect, c.kind, k));
        if cols.len() == 1 {
            return gt;
        }
        let eq = format!("{} = {}", q(c), buf.key(plan.dialect, c.kind, k));
        let rest = after(plan, &cols[1..], &key[1..], buf, q);
        format!("({gt} OR ({eq} AND ({rest})))")
    }
    let lead = format!(
        "{} >= {}",
        q(cols[0]),
        buf.key(plan.dialect, cols[0].kind, &key[0])
    );
    let rest = after(plan, &cols, key, buf, &q);
    format!("{lead} AND {rest}")
}
