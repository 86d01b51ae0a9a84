//! The `sql` definition format: a database and the tables or queries that
//! hold each entity.
//!
//! ```toml
//! name = "erp_db"
//! driver = "sql"
//! url = "${erp_db_url}"          # postgres://, mysql:// (also MariaDB) or sqlite://
//! max_connections = 4
//! schema = "sales"               # for table names without a schema
//! timezone = "Europe/Berlin"     # what timestamps without a zone mean
//!
//! [entities.customer]
//! table = "customer"             # or `query = "SELECT …"`
//! id = "customer_no"             # or ["company", "customer_no"]
//! updated_at = "modified_at"     # the cursor column
//! columns = ["customer_no", "name", "email", "modified_at"]
//! page_size = 500
//! look_back_secs = 60
//! idempotency_column = "concord_key"
//! upsert = { key = ["customer_no"], columns = ["name", "email"] }
//! ```

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::ident::{Dialect, TableName, check_name, check_query};
use crate::connector::has_placeholders;
use crate::located::{LoadError, SourceFile};

/// Largest accepted `page_size`.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// A `sql` definition file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlDefinition {
    /// The system's name; the file is `connectors/NAME.toml`.
    pub name: String,
    /// Always `"sql"`.
    pub driver: String,
    /// What the system is, for people reading the definition.
    #[serde(default)]
    pub description: Option<String>,
    /// The database URL: `postgres://user@host:5432/db`,
    /// `mysql://user@host:3306/db` (MySQL and MariaDB) or
    /// `sqlite:///path/to/file.db`. Put the password in a placeholder
    /// (`"${erp_db_url}"` or `"postgres://erp:${ERP_DB_PASSWORD}@db/erp"`),
    /// whose value the system instance or the environment gives; concord
    /// shows the URL with the password masked. A SQLite file must exist:
    /// concord never creates one.
    pub url: Spanned<String>,
    /// Connections concord may hold open to this database at once
    /// (default 4).
    #[serde(default = "default_max_connections")]
    pub max_connections: Spanned<u32>,
    /// The schema (PostgreSQL) or database (MySQL) of table names written
    /// without one. Unset: the connection's default.
    #[serde(default)]
    pub schema: Option<Spanned<String>>,
    /// The IANA time zone (`Europe/Berlin`) that timestamps without a zone
    /// (`timestamp`, `DATETIME`, SQLite text without offset) are in.
    /// Default `UTC`.
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// Seconds to wait for a connection before giving up with a timeout
    /// (default 30).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: Spanned<u64>,
    /// Seconds one page query or one pushed record may take before it is
    /// abandoned with a timeout (default 300).
    #[serde(default = "default_query_timeout")]
    pub query_timeout_secs: Spanned<u64>,
    /// The entities this database holds, by concord entity name.
    #[serde(default)]
    pub entities: BTreeMap<String, Spanned<EntityDef>>,
}

/// Where one entity lives and how to read and write it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityDef {
    /// The table (or view) holding the records: `customer` or
    /// `sales.customer`. Names may hold letters, digits, `_`, `$`, `-` and
    /// spaces; concord quotes them, so reserved words such as `order` work.
    #[serde(default)]
    pub table: Option<Spanned<String>>,
    /// Instead of `table`: one `SELECT` whose rows are the records. concord
    /// reads it as a subquery (`SELECT … FROM (query) AS q WHERE … ORDER BY
    /// … LIMIT …`), so it must not end in `;`, and `id` and `updated_at`
    /// name its output columns. Read-only: entities with a query cannot be
    /// pushed.
    #[serde(default)]
    pub query: Option<Spanned<String>>,
    /// The column holding the record's id, or several columns for a
    /// composite key. A composite id is written as its values joined by `/`,
    /// each value with `%` and `/` percent-encoded (`ACME/10`, `a%2Fb/1`);
    /// a single-column id is the value itself.
    pub id: Spanned<IdColumns>,
    /// The cursor column: when the row last changed. A timestamp
    /// (`timestamptz`, `timestamp`, `DATETIME`, `TIMESTAMP`, `DATE`, SQLite
    /// text in one ISO 8601 format) or an ever-growing integer (a row
    /// version, a change serial). Pulls read rows in `(updated_at, id)`
    /// order and resume after the last row read. Rows where it is NULL are
    /// not read: make the column `NOT NULL`.
    pub updated_at: Spanned<String>,
    /// The columns to read (default: all). `id` and `updated_at` are always
    /// read.
    #[serde(default)]
    pub columns: Option<Vec<Spanned<String>>>,
    /// Rows per page (default 500, at most 10,000).
    #[serde(default = "default_page_size")]
    pub page_size: Spanned<usize>,
    /// When resuming, also re-read rows changed up to this many seconds
    /// before the cursor, for rows committed late with an older timestamp
    /// (default 0). Re-reading is harmless: unchanged records are
    /// recognised. Ignored for integer cursor columns.
    #[serde(default = "default_zero")]
    pub look_back_secs: Spanned<u64>,
    /// How pushes write rows; without it the entity is read-only.
    #[serde(default)]
    pub upsert: Option<Spanned<UpsertDef>>,
    /// A column that stores each pushed change's idempotency key, so a
    /// retried push finds the row it already wrote instead of writing
    /// again. Needed when the database generates the key on insert.
    #[serde(default)]
    pub idempotency_column: Option<Spanned<String>>,
}

/// `upsert = { key = [...], columns = [...] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertDef {
    /// The columns of a primary key or unique index that identify a row.
    /// A pushed record with values for all of them is inserted, or updates
    /// the row with the same key (`INSERT … ON CONFLICT … DO UPDATE` on
    /// PostgreSQL and SQLite, `INSERT … ON DUPLICATE KEY UPDATE` on MySQL).
    /// When the key is the `id` and the record has none, the row is inserted
    /// and the database's generated id returned (this needs
    /// `idempotency_column`).
    pub key: Vec<Spanned<String>>,
    /// The columns a push writes, taken from the pushed record's fields of
    /// the same names (a missing field writes NULL). Key columns are written
    /// on insert and never changed by an update.
    pub columns: Vec<Spanned<String>>,
}

/// One id column or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IdColumns {
    One(String),
    Many(Vec<String>),
}

impl IdColumns {
    pub fn columns(&self) -> Vec<String> {
        match self {
            IdColumns::One(c) => vec![c.clone()],
            IdColumns::Many(cs) => cs.clone(),
        }
    }
}

fn default_max_connections() -> Spanned<u32> {
    Spanned::new(0..0, 4)
}
fn default_connect_timeout() -> Spanned<u64> {
    Spanned::new(0..0, 30)
}
fn default_query_timeout() -> Spanned<u64> {
    Spanned::new(0..0, 300)
}
fn default_zero() -> Spanned<u64> {
    Spanned::new(0..0, 0)
}
fn default_page_size() -> Spanned<usize> {
    Spanned::new(0..0, 500)
}

/// Where an entity's rows come from, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Table(TableName),
    Query(String),
}

/// One entity, validated and ready to build SQL from.
#[derive(Debug, Clone)]
pub struct Entity {
    pub name: String,
    pub source: Source,
    pub id: Vec<String>,
    pub updated_at: String,
    /// `None`: all columns.
    pub columns: Option<Vec<String>>,
    pub page_size: usize,
    pub look_back_secs: u64,
    pub upsert: Option<Upsert>,
    pub idempotency_column: Option<String>,
}

/// A validated `upsert`.
#[derive(Debug, Clone)]
pub struct Upsert {
    pub key: Vec<String>,
    pub columns: Vec<String>,
}

/// A whole definition, validated.
#[derive(Debug, Clone)]
pub struct Checked {
    pub url: String,
    pub max_connections: u32,
    pub timezone: chrono_tz::Tz,
    pub connect_timeout_secs: u64,
    pub query_timeout_secs: u64,
    pub entities: BTreeMap<String, Entity>,
}

/// Parses and validates a definition without any I/O, reporting every
/// problem with its place.
pub fn load(source: &SourceFile) -> Result<Checked, Vec<LoadError>> {
    let def: SqlDefinition = source.parse().map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut err = |span: Range<usize>, msg: String| errors.push(source.error(Some(span), msg));

    let url = def.url.get_ref();
    if !has_placeholders(url) && Dialect::of_url(url).is_none() {
        err(
            def.url.span(),
            "`url` must start with postgres://, mysql://, mariadb:// or sqlite: (or be a `${…}` placeholder)".into(),
        );
    }
    if !has_placeholders(url) && url_has_password(url) {
        err(
            def.url.span(),
            "`url` holds a password: put it in a `${…}` placeholder so it stays out of the definition".into(),
        );
    }
    if *def.max_connections.get_ref() == 0 || *def.max_connections.get_ref() > 100 {
        err(
            def.max_connections.span(),
            "`max_connections` must be between 1 and 100".into(),
        );
    }
    if *def.connect_timeout_secs.get_ref() == 0 {
        err(
            def.connect_timeout_secs.span(),
            "`connect_timeout_secs` must be at least 1".into(),
        );
    }
    if *def.query_timeout_secs.get_ref() == 0 {
        err(
            def.query_timeout_secs.span(),
            "`query_timeout_secs` must be at least 1".into(),
        );
    }
    let schema = def
        .schema
        .as_ref()
        .and_then(|s| match check_name(s.get_ref()) {
            Ok(()) => Some(s.get_ref().clone()),
            Err(m) => {
                err(s.span(), format!("`schema`: {m}"));
                None
            }
        });
    let timezone = match &def.timezone {
        None => chrono_tz::UTC,
        Some(tz) => tz.get_ref().parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
            err(
                tz.span(),
                format!(
                    "`timezone` `{}` is not an IANA time zone name such as `Europe/Berlin` or `UTC`",
                    tz.get_ref()
                ),
            );
            chrono_tz::UTC
        }),
    };
    if def.entities.is_empty() {
        err(
            0..0,
            "no entities: add at least one `[entities.NAME]` table".into(),
        );
    }

    let mut entities = BTreeMap::new();
    for (name, spanned) in &def.entities {
        let span = spanned.span();
        let e = spanned.get_ref();
        let name_ok =
            |n: &Spanned<String>, what: &str, err: &mut dyn FnMut(Range<usize>, String)| {
                match check_name(n.get_ref()) {
                    Ok(()) => true,
                    Err(m) => {
                        err(n.span(), format!("entity `{name}`: `{what}`: {m}"));
                        false
                    }
                }
            };
        let source_ = match (&e.table, &e.query) {
            (Some(t), None) => match TableName::parse(t.get_ref(), schema.as_deref()) {
                Ok(t) => Some(Source::Table(t)),
                Err(m) => {
                    err(t.span(), format!("entity `{name}`: `table`: {m}"));
                    None
                }
            },
            (None, Some(q)) => match check_query(q.get_ref()) {
                Ok(()) => Some(Source::Query(q.get_ref().trim().to_owned())),
                Err(m) => {
                    err(q.span(), format!("entity `{name}`: `query`: {m}"));
                    None
                }
            },
            (Some(_), Some(q)) => {
                err(
                    q.span(),
                    format!("entity `{name}`: give `table` or `query`, not both"),
                );
                None
            }
            (None, None) => {
                err(
                    span.clone(),
                    format!("entity `{name}`: missing `table` (or `query`)"),
                );
                None
            }
        };
        let id = spanned_id(&e.id, name, &mut err);
        let upd_ok = name_ok(&e.updated_at, "updated_at", &mut err);
        let mut columns = None;
        if let Some(cols) = &e.columns {
            if cols.is_empty() {
                err(
                    span.clone(),
                    format!(
                        "entity `{name}`: `columns` is empty: leave it out to read all columns"
                    ),
                );
            }
            let mut list = Vec::new();
            for c in cols {
                if name_ok(c, "columns", &mut err) {
                    if list.contains(c.get_ref()) {
                        err(
                            c.span(),
                            format!("entity `{name}`: column `{}` is listed twice", c.get_ref()),
                        );
                    }
                    list.push(c.get_ref().clone());
                }
            }
            columns = Some(list);
        }
        let page_size = *e.page_size.get_ref();
        if page_size == 0 || page_size > MAX_PAGE_SIZE {
            err(
                e.page_size.span(),
                format!("entity `{name}`: `page_size` must be between 1 and {MAX_PAGE_SIZE}"),
            );
        }
        if *e.look_back_secs.get_ref() > 366 * 86_400 {
            err(
                e.look_back_secs.span(),
                format!("entity `{name}`: `look_back_secs` is more than a year"),
            );
        }
        let idem = e
            .idempotency_column
            .as_ref()
            .and_then(|c| name_ok(c, "idempotency_column", &mut err).then(|| c.get_ref().clone()));
        let mut upsert = None;
        if let Some(u) = &e.upsert {
            let ud = u.get_ref();
            if e.query.is_some() {
                err(
                    u.span(),
                    format!(
                        "entity `{name}`: `upsert` needs a `table`: a query cannot be written to"
                    ),
                );
            }
            if ud.key.is_empty() {
                err(u.span(), format!("entity `{name}`: `upsert.key` is empty"));
            }
            if ud.columns.is_empty() {
                err(
                    u.span(),
                    format!("entity `{name}`: `upsert.columns` is empty"),
                );
            }
            let mut key = Vec::new();
            for k in &ud.key {
                if name_ok(k, "upsert.key", &mut err) {
                    key.push(k.get_ref().clone());
                }
            }
            let mut cols: Vec<String> = Vec::new();
            for c in &ud.columns {
                if name_ok(c, "upsert.columns", &mut err) {
                    if cols.contains(c.get_ref()) {
                        err(
                            c.span(),
                            format!("entity `{name}`: column `{}` is listed twice", c.get_ref()),
                        );
                    }
                    if idem.as_deref() == Some(c.get_ref().as_str()) {
                        err(
                            c.span(),
                            format!(
                                "entity `{name}`: `{}` is the idempotency column: concord writes it, not the record",
                                c.get_ref()
                            ),
                        );
                    }
                    cols.push(c.get_ref().clone());
                }
            }
            upsert = Some(Upsert { key, columns: cols });
        } else if let Some(c) = &e.idempotency_column {
            err(
                c.span(),
                format!("entity `{name}`: `idempotency_column` only matters with `upsert`"),
            );
        }
        if let (Some(source_), Some(id), true) = (source_, id, upd_ok) {
            entities.insert(
                name.clone(),
                Entity {
                    name: name.clone(),
                    source: source_,
                    id,
                    updated_at: e.updated_at.get_ref().clone(),
                    columns,
                    page_size,
                    look_back_secs: *e.look_back_secs.get_ref(),
                    upsert,
                    idempotency_column: idem,
                },
            );
        }
    }
    if def.driver != "sql" {
        errors.push(source.error(None, format!("driver is `{}`, not `sql`", def.driver)));
    }
    if errors.is_empty() {
        Ok(Checked {
            url: url.clone(),
            max_connections: *def.max_connections.get_ref(),
            timezone,
            connect_timeout_secs: *def.connect_timeout_secs.get_ref(),
            query_timeout_secs: *def.query_timeout_secs.get_ref(),
            entities,
        })
    } else {
        Err(errors)
    }
}

fn spanned_id(
    id: &Spanned<IdColumns>,
    entity: &str,
    err: &mut dyn FnMut(Range<usize>, String),
) -> Option<Vec<String>> {
    let cols = id.get_ref().columns();
    if cols.is_empty() {
        err(
            id.span(),
            format!("entity `{entity}`: `id` names no column"),
        );
        return None;
    }
    let mut ok = true;
    for (i, c) in cols.iter().enumerate() {
        if let Err(m) = check_name(c) {
            err(id.span(), format!("entity `{entity}`: `id`: {m}"));
            ok = false;
        } else if cols[..i].contains(c) {
            err(
                id.span(),
                format!("entity `{entity}`: `id` names `{c}` twice"),
            );
            ok = false;
        }
    }
    ok.then_some(cols)
}

/// Whether a literal URL carries a password (`user:pass@`).
fn url_has_password(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.password().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn src(text: &str) -> SourceFile {
        SourceFile {
            path: PathBuf::from("connectors/erp.toml"),
            text: text.to_owned(),
        }
    }

    const HEAD: &str = "name = \"erp\"\ndriver = \"sql\"\nurl = \"${erp_url}\"\n";

    #[test]
    fn a_full_definition_loads() {
        let text = format!(
            "{HEAD}schema = \"sales\"\ntimezone = \"Asia/Shanghai\"\n\
             [entities.customer]\ntable = \"customer\"\nid = [\"company\", \"no\"]\nupdated_at = \"modified\"\n\
             columns = [\"company\", \"no\", \"order\", \"unit price\"]\nlook_back_secs = 30\n\
             idempotency_column = \"concord_key\"\nupsert = {{ key = [\"company\", \"no\"], columns = [\"order\"] }}\n\
             [entities.open_items]\nquery = \"SELECT id, amount, changed FROM items WHERE open\"\nid = \"id\"\nupdated_at = \"changed\"\n"
        );
        let def = load(&src(&text)).unwrap();
        let c = &def.entities["customer"];
        assert_eq!(
            c.source,
            Source::Table(TableName {
                schema: Some("sales".into()),
                table: "customer".into()
            })
        );
        assert_eq!(c.id, ["company", "no"]);
        assert_eq!(def.timezone, chrono_tz::Asia::Shanghai);
        assert!(matches!(
            def.entities["open_items"].source,
            Source::Query(_)
        ));
    }

    #[test]
    fn every_problem_is_reported_at_its_place() {
        let text = format!(
            "{HEAD}max_connections = 0\n\
             [entities.a]\ntable = \"customer; DROP TABLE x\"\nid = \"id\"\nupdated_at = \"up\\\"d\"\npage_size = 0\n\
             [entities.b]\nquery = \"DELETE FROM t\"\nid = \"id\"\nupdated_at = \"u\"\nupsert = {{ key = [\"id\"], columns = [\"x\"] }}\n"
        );
        let errors = load(&src(&text)).unwrap_err();
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let has = |line: usize, needle: &str| {
            assert!(
                errors
                    .iter()
                    .any(|e| e.line == line && e.message.contains(needle)),
                "no error at line {line} with {needle:?}: {shown:#?}"
            )
        };
        has(4, "max_connections");
        has(6, "`customer; DROP TABLE x` contains ';'");
        has(8, "`updated_at`");
        has(9, "page_size");
        has(11, "SELECT");
        has(14, "needs a `table`");
        assert_eq!(errors.len(), 6, "{shown:#?}");
        assert!(
            shown[1].starts_with("connectors/erp.toml:6:"),
            "{}",
            shown[1]
        );
    }

    #[test]
    fn literal_passwords_and_unknown_schemes_are_refused() {
        let text = "name = \"erp\"\ndriver = \"sql\"\nurl = \"postgres://u:hunter2@db/erp\"\n[entities.a]\ntable = \"t\"\nid = \"id\"\nupdated_at = \"u\"\n";
        let e = load(&src(text)).unwrap_err();
        assert!(e[0].message.contains("password"), "{e:?}");
        assert!(!e[0].message.contains("hunter2"));
        let text = text.replace("postgres://u:hunter2@db/erp", "oracle://db");
        let e = load(&src(&text)).unwrap_err();
        assert!(e[0].message.contains("must start with"), "{e:?}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_place() {
        let text = format!(
            "{HEAD}[entities.a]\ntable = \"t\"\nid = \"id\"\nupdated_at = \"u\"\npage = 3\n"
        );
        let e = load(&src(&text)).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("unknown field `page`"), "{e:?}");
        assert_eq!(e[0].line, 8);
    }
}
