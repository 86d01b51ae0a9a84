//! The `sql` driver against real databases: SQLite (a temp file) always,
//! PostgreSQL (a fresh schema of CONCORD_TEST_DATABASE_URL) and MariaDB/MySQL
//! (a fresh database on CONCORD_TEST_MYSQL_URL) when configured. Under
//! `CI=true` a missing URL fails the test instead of skipping it.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use concord::connector::conformance::{self, Fault, Harness, Seed};
use concord::connector::{
    Change, Connector, Cursor, ErrorKind, Instance, PushOutcome, check_dir, check_file,
};
use concord::model::ExternalId;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, Row};

const PG_URL_VAR: &str = "CONCORD_TEST_DATABASE_URL";
const MYSQL_URL_VAR: &str = "CONCORD_TEST_MYSQL_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    Sqlite,
    Postgres,
    MySql,
}

/// A fresh database place for one test: a SQLite file, a PostgreSQL schema
/// or a MariaDB database, dropped at the end.
struct Env {
    db: Db,
    /// The URL the connector uses (before faults).
    url: String,
    /// PostgreSQL schema or MySQL database created for the test.
    namespace: Option<String>,
    admin_url: String,
    dir: tempfile::TempDir,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

fn skip_or_panic(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("{var} must be set in CI: the sql driver tests on it may not be skipped")
        }
        Err(_) => {
            eprintln!("skipped: {var} is not set, so this variant did not run");
            None
        }
    }
}

impl Env {
    async fn new(db: Db) -> Option<Env> {
        let dir = tempfile::tempdir().unwrap();
        let env = match db {
            Db::Sqlite => {
                let path = dir.path().join("erp.db");
                let url = format!("sqlite://{}", path.display());
                let opts: sqlx::sqlite::SqliteConnectOptions = url
                    .parse::<sqlx::sqlite::SqliteConnectOptions>()
                    .unwrap()
                    .create_if_missing(true);
                let c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
                c.close().await.unwrap();
                Env {
                    db,
                    url: url.clone(),
                    namespace: None,
                    admin_url: url,
                    dir,
                }
            }
            Db::Postgres => {
                let url = skip_or_panic(PG_URL_VAR)?;
                let schema = unique("concord_sql");
                let env = Env {
                    db,
                    url: url.clone(),
                    namespace: Some(schema.clone()),
                    admin_url: url,
                    dir,
                };
                env.exec(&format!("CREATE SCHEMA \"{schema}\"")).await;
                env
            }
            Db::MySql => {
                let admin = skip_or_panic(MYSQL_URL_VAR)?;
                let name = unique("concord_sql");
                let mut u = url::Url::parse(&admin).unwrap();
                u.set_path(&format!("/{name}"));
                let env = Env {
                    db,
                    url: u.to_string(),
                    namespace: Some(name.clone()),
                    admin_url: admin,
                    dir,
                };
                env.exec_admin(&format!("CREATE DATABASE `{name}`")).await;
                env
            }
        };
        Some(env)
    }

    async fn drop_all(self) {
        match (self.db, &self.namespace) {
            (Db::Postgres, Some(s)) => self.exec(&format!("DROP SCHEMA \"{s}\" CASCADE")).await,
            (Db::MySql, Some(d)) => self.exec_admin(&format!("DROP DATABASE `{d}`")).await,
            _ => {}
        }
    }

    /// Runs statements in the test's place (schema search path / database).
    async fn exec(&self, sql: &str) {
        match self.db {
            Db::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                c.close().await.unwrap();
            }
            Db::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
                if let Some(s) = &self.namespace {
                    sqlx::raw_sql(AssertSqlSafe(format!("SET search_path TO \"{s}\"")))
                        .execute(&mut c)
                        .await
                        .unwrap();
                }
                sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                c.close().await.unwrap();
            }
            Db::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                c.close().await.unwrap();
            }
        }
    }

    async fn exec_admin(&self, sql: &str) {
        let mut c = sqlx::MySqlConnection::connect(&self.admin_url)
            .await
            .unwrap();
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        c.close().await.unwrap();
    }

    /// Rows of a query as (text, text) pairs.
    async fn pairs(&self, sql: &str) -> Vec<(String, Option<String>)> {
        macro_rules! run {
            ($conn:expr) => {{
                let mut c = $conn;
                let rows = sqlx::query(AssertSqlSafe(sql.to_owned()))
                    .fetch_all(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.iter()
                    .map(|r| {
                        (
                            r.try_get_unchecked::<String, _>(0).unwrap(),
                            r.try_get_unchecked::<Option<String>, _>(1).unwrap(),
                        )
                    })
                    .collect()
            }};
        }
        match self.db {
            Db::Sqlite => run!(sqlx::SqliteConnection::connect(&self.url).await.unwrap()),
            Db::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "SET search_path TO \"{}\"",
                    self.namespace.as_ref().unwrap()
                )))
                .execute(&mut c)
                .await
                .unwrap();
                run!(c)
            }
            Db::MySql => run!(sqlx::MySqlConnection::connect(&self.url).await.unwrap()),
        }
    }

    /// A table name qualified for the connector (PostgreSQL: the schema).
    fn table(&self, name: &str) -> String {
        match (self.db, &self.namespace) {
            (Db::Postgres, Some(s)) => format!("{s}.{name}"),
            _ => name.to_owned(),
        }
    }

    fn ts_type(&self) -> &'static str {
        match self.db {
            Db::Sqlite => "DATETIME",
            Db::Postgres => "TIMESTAMPTZ",
            Db::MySql => "DATETIME(6)",
        }
    }

    fn text_key(&self) -> &'static str {
        match self.db {
            Db::MySql => "VARCHAR(100)",
            _ => "TEXT",
        }
    }

    fn ts_literal(&self, t: chrono::DateTime<chrono::Utc>) -> String {
        match self.db {
            Db::Postgres => format!("'{}'", t.to_rfc3339()),
            _ => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f")),
        }
    }

    /// Writes a definition file and opens it with the instance var `db_url`.
    fn open(&self, name: &str, body: &str, url: &str) -> Arc<dyn Connector> {
        let dir = self.dir.path().join("connectors");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!("name = \"{name}\"\ndriver = \"sql\"\nurl = \"${{db_url}}\"\n{body}"),
        )
        .unwrap();
        let def = check_file(&path).unwrap_or_else(|e| panic!("{e:#?}"));
        let instance = Instance::bare(name).with_var("db_url", url);
        (def.driver.open)(&def, &instance).unwrap()
    }
}

/// The kit's harness over one table of `Env`.
struct SqlHarness<'a> {
    env: &'a Env,
    page_size: usize,
    /// The URL the next connector gets (a fault swaps it).
    url: Mutex<String>,
    /// Extra definition lines for the next connector.
    extra: Mutex<String>,
    /// SQLite lock holder for the timeout fault.
    lock: tokio::sync::Mutex<Option<sqlx::SqliteConnection>>,
    /// Listener that never answers, for the timeout fault.
    silent: Mutex<Option<TcpListener>>,
    push: bool,
}

impl<'a> SqlHarness<'a> {
    async fn new(env: &'a Env, push: bool) -> SqlHarness<'a> {
        let h = SqlHarness {
            env,
            page_size: 4,
            url: Mutex::new(env.url.clone()),
            extra: Mutex::new(String::new()),
            lock: tokio::sync::Mutex::new(None),
            silent: Mutex::new(None),
            push,
        };
        let key = env.text_key();
        let ts = env.ts_type();
        if push {
            let id = match env.db {
                Db::Sqlite => "id INTEGER PRIMARY KEY AUTOINCREMENT",
                Db::Postgres => "id BIGSERIAL PRIMARY KEY",
                Db::MySql => "id BIGINT AUTO_INCREMENT PRIMARY KEY",
            };
            let now = match env.db {
                Db::Sqlite => "CURRENT_TIMESTAMP",
                Db::Postgres => "now()",
                Db::MySql => "CURRENT_TIMESTAMP(6)",
            };
            env.exec(&format!(
                "CREATE TABLE pushed ({id}, updated_at {ts} NOT NULL DEFAULT {now}, name {key}, idem_key {key})"
            ))
            .await;
        } else {
            env.exec(&format!(
                "CREATE TABLE contact (id {key} PRIMARY KEY, updated_at {ts} NOT NULL, name {key})"
            ))
            .await;
        }
        h
    }

    fn definition(&self) -> String {
        let extra = self.extra.lock().unwrap().clone();
        if self.push {
            format!(
                "connect_timeout_secs = 2\n{extra}\n[entities.contact]\ntable = \"{}\"\nid = \"id\"\nupdated_at = \"updated_at\"\npage_size = {}\nidempotency_column = \"idem_key\"\nupsert = {{ key = [\"id\"], columns = [\"name\"] }}\n",
                self.env.table("pushed"),
                self.page_size
            )
        } else {
            format!(
                "connect_timeout_secs = 2\n{extra}\n[entities.contact]\ntable = \"{}\"\nid = \"id\"\nupdated_at = \"updated_at\"\ncolumns = [\"name\"]\npage_size = {}\n",
                self.env.table("contact"),
                self.page_size
            )
        }
    }

    async fn insert(&self, records: &[Seed]) {
        for chunk in records.chunks(200) {
            let values: Vec<String> = chunk
                .iter()
                .map(|r| {
                    format!(
                        "('{}', {}, '{}')",
                        r.id,
                        self.env.ts_literal(r.updated_at),
                        r.name.replace('\'', "''")
                    )
                })
                .collect();
            self.env
                .exec(&format!(
                    "INSERT INTO contact (id, updated_at, name) VALUES {}",
                    values.join(", ")
                ))
                .await;
        }
    }
}

#[async_trait]
impl Harness for SqlHarness<'_> {
    fn connector(&self) -> Arc<dyn Connector> {
        let url = self.url.lock().unwrap().clone();
        self.env.open("erp", &self.definition(), &url)
    }
    fn entity(&self) -> &str {
        "contact"
    }
    fn page_size(&self) -> usize {
        self.page_size
    }
    async fn seed(&self, records: &[Seed]) -> anyhow::Result<()> {
        let table = if self.push { "pushed" } else { "contact" };
        self.env.exec(&format!("DELETE FROM {table}")).await;
        self.insert(records).await;
        Ok(())
    }
    async fn upsert(&self, records: &[Seed]) -> anyhow::Result<()> {
        let ids: Vec<String> = records.iter().map(|r| format!("'{}'", r.id)).collect();
        self.env
            .exec(&format!(
                "DELETE FROM contact WHERE id IN ({})",
                ids.join(", ")
            ))
            .await;
        self.insert(records).await;
        Ok(())
    }
    async fn stored(&self) -> anyhow::Result<BTreeMap<String, Value>> {
        let text = if self.env.db == Db::MySql {
            "CHAR"
        } else {
            "TEXT"
        };
        let rows = self
            .env
            .pairs(&format!("SELECT CAST(id AS {text}), name FROM pushed"))
            .await;
        Ok(rows
            .into_iter()
            .map(|(id, name)| (id, json!({ "name": name })))
            .collect())
    }
    async fn inject(&self, fault: Fault) -> anyhow::Result<bool> {
        let closed_port = || {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let with_port = |port: u16| {
            let mut u = url::Url::parse(&self.env.url).unwrap();
            u.set_port(Some(port)).unwrap();
            u.to_string()
        };
        let url = match (fault, self.env.db) {
            (Fault::Unavailable, Db::Sqlite) => format!(
                "sqlite://{}",
                self.env.dir.path().join("no-such-dir/erp.db").display()
            ),
            (Fault::Unavailable, _) => with_port(closed_port()),
            (Fault::Unauthorized, Db::MySql) => {
                let mut u = url::Url::parse(&self.env.url).unwrap();
                u.set_password(Some("wrong-password")).unwrap();
                u.to_string()
            }
            (Fault::Unauthorized, Db::Postgres) => {
                let mut u = url::Url::parse(&self.env.url).unwrap();
                u.set_username("concord_no_such_role").unwrap();
                u.to_string()
            }
            (Fault::Timeout, Db::Sqlite) => {
                let mut c = sqlx::SqliteConnection::connect(&self.env.url).await?;
                sqlx::raw_sql("BEGIN EXCLUSIVE").execute(&mut c).await?;
                *self.lock.lock().await = Some(c);
                return Ok(true);
            }
            (Fault::Timeout, _) => {
                // Accepts connections and never answers.
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                let port = l.local_addr().unwrap().port();
                *self.silent.lock().unwrap() = Some(l);
                with_port(port)
            }
            _ => return Ok(false),
        };
        *self.url.lock().unwrap() = url;
        Ok(true)
    }
    async fn heal(&self) -> anyhow::Result<()> {
        *self.url.lock().unwrap() = self.env.url.clone();
        if let Some(mut c) = self.lock.lock().await.take() {
            sqlx::raw_sql("ROLLBACK").execute(&mut c).await?;
            c.close().await?;
        }
        self.silent.lock().unwrap().take();
        Ok(())
    }
    async fn seed_malformed(&self, records: &[Seed], malformed: usize) -> anyhow::Result<bool> {
        if self.env.db != Db::Sqlite {
            return Ok(false);
        }
        self.seed(records).await?;
        for i in 0..malformed {
            // A cursor value that is no timestamp, and a name that is not
            // UTF-8: SQLite stores whatever it is given.
            let sql = if i % 2 == 0 {
                format!(
                    "INSERT INTO contact VALUES ('BAD{i}', '2026-11-01 08:00:0{i} and then some', 'x')"
                )
            } else {
                format!(
                    "INSERT INTO contact VALUES ('BAD{i}', '2026-11-01 08:00:01', CAST(x'ff00fe' AS TEXT))"
                )
            };
            self.env.exec(&sql).await;
        }
        Ok(true)
    }
}

async fn conformance_pull(db: Db) {
    let Some(env) = Env::new(db).await else {
        return;
    };
    let h = SqlHarness::new(&env, false).await;
    conformance::pull_pages(&h).await.unwrap();
    conformance::resume_from_cursor(&h).await.unwrap();
    let tested = conformance::classify_errors(&h).await.unwrap();
    let want: &[Fault] = match db {
        Db::Sqlite => &[Fault::Unavailable, Fault::Timeout],
        _ => &[Fault::Unauthorized, Fault::Unavailable, Fault::Timeout],
    };
    assert_eq!(tested, want);
    let quarantined = conformance::quarantine_malformed(&h).await.unwrap();
    assert_eq!(quarantined, db == Db::Sqlite);
    env.drop_all().await;
}

async fn conformance_push(db: Db) {
    let Some(env) = Env::new(db).await else {
        return;
    };
    let h = SqlHarness::new(&env, true).await;
    conformance::idempotent_push(&h).await.unwrap();
    env.drop_all().await;
}

/// Look-back re-reads rows committed late with an older timestamp.
async fn look_back(db: Db) {
    let Some(env) = Env::new(db).await else {
        return;
    };
    let h = SqlHarness::new(&env, false).await;
    *h.extra.lock().unwrap() = String::new();
    h.seed(&conformance::seeds(6)).await.unwrap();
    let body = h
        .definition()
        .replace("page_size = 4", "page_size = 10\nlook_back_secs = 3600");
    let c = env.open("erp", &body, &env.url);
    let pages: Vec<_> = c.pull("contact", None).collect().await;
    let cursor = pages.last().unwrap().as_ref().unwrap().cursor.clone();
    // A row committed late, 30 minutes before the cursor.
    let late = cursor.updated_at.unwrap() - chrono::Duration::minutes(30);
    h.upsert(&[Seed {
        id: "LATE".into(),
        updated_at: late,
        name: "late".into(),
    }])
    .await
    .unwrap();
    let again: Vec<_> = c.pull("contact", Some(cursor.clone())).collect().await;
    let page = again[0].as_ref().unwrap();
    assert!(
        page.records
            .iter()
            .any(|r| r.external_id.as_str() == "LATE")
    );
    assert!(
        page.cursor.updated_at >= cursor.updated_at,
        "{:?}",
        page.cursor
    );
    // Without look-back the late row is not seen.
    let plain = env.open("erp2", &h.definition(), &env.url);
    let again: Vec<_> = plain.pull("contact", Some(cursor)).collect().await;
    assert!(again.iter().all(|p| {
        p.as_ref()
            .unwrap()
            .records
            .iter()
            .all(|r| r.external_id.as_str() != "LATE")
    }));
    env.drop_all().await;
}

/// Reserved words and spaces in names, exact decimals, a composite key and
/// upsert by it, `get` by a composite id.
async fn names_decimals_composite(db: Db) {
    let Some(env) = Env::new(db).await else {
        return;
    };
    let (dec, ts, key) = (
        match db {
            Db::Sqlite => "DECIMAL(30,10)",
            Db::Postgres => "NUMERIC(30,10)",
            Db::MySql => "DECIMAL(30,10)",
        },
        env.ts_type(),
        env.text_key(),
    );
    let now = match db {
        Db::Sqlite => "CURRENT_TIMESTAMP",
        Db::Postgres => "now()",
        Db::MySql => "CURRENT_TIMESTAMP(6)",
    };
    let q = |s: &str| match db {
        Db::MySql => format!("`{s}`"),
        _ => format!("\"{s}\""),
    };
    env.exec(&format!(
        "CREATE TABLE {} ({} {key} NOT NULL, {} INTEGER NOT NULL, {} {ts} NOT NULL DEFAULT {now}, {} {dec}, {} {key}, PRIMARY KEY ({}, {}))",
        q("order"),
        q("company"),
        q("order"),
        q("changed at"),
        q("unit price"),
        q("note"),
        q("company"),
        q("order")
    ))
    .await;
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-01T08:00:00Z")
        .unwrap()
        .to_utc();
    let mut rows = Vec::new();
    for (company, n, price) in [
        ("ACME", 1, "12345678901234567890.1234567890"),
        ("ACME", 2, "0.1000000000"),
        ("A/B%", 1, "-7.5000000000"),
        ("ZED", 10, "99.0000000000"),
        ("ZED", 9, "1.0000000000"),
    ] {
        rows.push(format!(
            "('{company}', {n}, {}, '{price}', 'x')",
            env.ts_literal(t0)
        ));
    }
    env.exec(&format!(
        "INSERT INTO {} VALUES {}",
        q("order"),
        rows.join(", ")
    ))
    .await;
    let body = format!(
        "[entities.order]\ntable = \"{}\"\nid = [\"company\", \"order\"]\nupdated_at = \"changed at\"\npage_size = 2\nupsert = {{ key = [\"company\", \"order\"], columns = [\"unit price\", \"note\"] }}\n",
        env.table("order")
    );
    let c = env.open("erp", &body, &env.url);
    c.healthcheck().await.unwrap();
    let pages: Vec<_> = c.pull("order", None).collect().await;
    let records: Vec<_> = pages.into_iter().flat_map(|p| p.unwrap().records).collect();
    let ids: Vec<&str> = records.iter().map(|r| r.external_id.as_str()).collect();
    assert_eq!(ids, ["A%2FB%25/1", "ACME/1", "ACME/2", "ZED/9", "ZED/10"]);
    let big = &records[1].data["unit price"];
    let small = &records[2].data["unit price"];
    if db == Db::Sqlite {
        // SQLite itself stores DECIMAL text as REAL when 15 digits survive:
        // concord reads the stored value exactly, as a string.
        assert_eq!(big, &json!("12345678901234567000"));
        assert_eq!(small, &json!("0.1"));
    } else {
        assert_eq!(big, &json!("12345678901234567890.1234567890"));
        assert_eq!(small, &json!("0.1000000000"));
    }
    assert_eq!(records[0].data["company"], json!("A/B%"));
    assert_eq!(records[0].data["order"], json!(1));
    assert_eq!(records[0].updated_at, Some(t0));
    assert_eq!(records[0].data["changed at"], json!("2026-11-01T08:00:00Z"));

    // get by a composite id with escapes.
    let got = c
        .get("order", &ExternalId::parse("A%2FB%25/1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.data["unit price"], records[0].data["unit price"]);
    assert!(
        c.get("order", &ExternalId::parse("NOPE/1").unwrap())
            .await
            .unwrap()
            .is_none()
    );

    // Upsert by the composite key: one update, one insert, exact decimals.
    let out = c
        .push(
            "order",
            vec![
                Change {
                    idempotency_key: "k1".into(),
                    external_id: None,
                    data: json!({ "company": "ACME", "order": 2, "unit price": "0.3000000001", "note": "upd" }),
                },
                Change {
                    idempotency_key: "k2".into(),
                    external_id: None,
                    data: json!({ "company": "NEW", "order": 1, "unit price": "123456789012345678.5", "note": "ins" }),
                },
                Change {
                    idempotency_key: "k3".into(),
                    external_id: None,
                    data: json!({ "company": "NEW", "unit price": "1" }),
                },
                Change {
                    idempotency_key: "k4".into(),
                    external_id: Some(ExternalId::parse("ACME/1").unwrap()),
                    data: json!({ "unit price": "2.5", "note": "by id" }),
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        out[0],
        PushOutcome::Updated {
            external_id: ExternalId::parse("ACME/2").unwrap()
        }
    );
    assert_eq!(
        out[1],
        PushOutcome::Created {
            external_id: ExternalId::parse("NEW/1").unwrap()
        }
    );
    assert!(
        matches!(&out[2], PushOutcome::Rejected { message } if message.contains("`order`")),
        "{:?}",
        out[2]
    );
    assert_eq!(
        out[3],
        PushOutcome::Updated {
            external_id: ExternalId::parse("ACME/1").unwrap()
        }
    );
    let stored = env
        .pairs(&format!(
            "SELECT CAST({} AS {}), {} FROM {} ORDER BY {}, {}",
            q("unit price"),
            if db == Db::MySql { "CHAR" } else { "TEXT" },
            q("note"),
            q("order"),
            q("company"),
            q("order")
        ))
        .await;
    let prices: Vec<&str> = stored.iter().map(|(p, _)| p.as_str()).collect();
    if db != Db::Sqlite {
        assert!(
            prices.contains(&"123456789012345678.5000000000"),
            "{prices:?}"
        );
        assert!(prices.contains(&"0.3000000001"), "{prices:?}");
        assert!(prices.contains(&"2.5000000000"), "{prices:?}");
    }
    assert!(stored.iter().any(|(_, n)| n.as_deref() == Some("by id")));
    env.drop_all().await;
}

/// An entity read through a query, paged like a table.
async fn query_entity(db: Db) {
    let Some(env) = Env::new(db).await else {
        return;
    };
    let h = SqlHarness::new(&env, false).await;
    h.seed(&conformance::seeds(9)).await.unwrap();
    let body = format!(
        "[entities.vip]\nquery = \"\"\"\nSELECT c.id AS code, c.updated_at AS changed, UPPER(c.name) AS label\nFROM {} c -- only some; a ';' here is fine\nWHERE c.name <> 'record 4'\n\"\"\"\nid = \"code\"\nupdated_at = \"changed\"\npage_size = 2\n",
        env.table("contact")
    );
    let c = env.open("erp", &body, &env.url);
    c.healthcheck().await.unwrap();
    let mut ids = Vec::new();
    let mut stream = c.pull("vip", None);
    while let Some(page) = stream.next().await {
        let page = page.unwrap();
        assert!(page.records.len() <= 2);
        for r in page.records {
            assert!(r.data["label"].as_str().unwrap().starts_with("RECORD"));
            ids.push(r.external_id.as_str().to_owned());
        }
    }
    assert_eq!(ids.len(), 8, "{ids:?}");
    assert!(!ids.contains(&"R000004".to_owned()));
    assert!(c.push("vip", vec![]).await.is_err());
    env.drop_all().await;
}

/// Unknown tables and columns are configuration errors at healthcheck and
/// at the first pull, naming what is missing.
async fn unknown_names(db: Db) {
    let Some(env) = Env::new(db).await else {
        return;
    };
    let _h = SqlHarness::new(&env, false).await;
    let body = format!(
        "[entities.a]\ntable = \"{}\"\nid = \"id\"\nupdated_at = \"updated_at\"\n",
        env.table("no_such_table")
    );
    let c = env.open("erp", &body, &env.url);
    let e = c.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    let body = format!(
        "[entities.a]\ntable = \"{}\"\nid = \"id\"\nupdated_at = \"modified\"\n",
        env.table("contact")
    );
    let c = env.open("erp", &body, &env.url);
    let e = c.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("modified"), "{e}");
    let first = c.pull("a", None).next().await.unwrap().unwrap_err();
    assert_eq!(first.kind, ErrorKind::Config);
    let body = format!(
        "[entities.a]\ntable = \"{}\"\nid = \"id\"\nupdated_at = \"updated_at\"\ncolumns = [\"nope\"]\n",
        env.table("contact")
    );
    let c = env.open("erp", &body, &env.url);
    let e = c.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    env.drop_all().await;
}

macro_rules! on_every_database {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name(super::Db::Sqlite).await } )* }
        mod postgres { $( #[tokio::test] async fn $name() { super::$name(super::Db::Postgres).await } )* }
        mod mariadb { $( #[tokio::test] async fn $name() { super::$name(super::Db::MySql).await } )* }
    };
}

on_every_database!(
    conformance_pull,
    conformance_push,
    look_back,
    names_decimals_composite,
    query_entity,
    unknown_names,
);

#[test]
fn an_injection_in_a_table_name_is_refused_where_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("erp.toml");
    std::fs::write(
        &path,
        "name = \"erp\"\ndriver = \"sql\"\nurl = \"${db}\"\n\n[entities.customer]\ntable = \"customer; DROP TABLE invoice --\"\nid = \"id\"\nupdated_at = \"updated_at\"\n",
    )
    .unwrap();
    let errors = check_file(&path).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let shown = errors[0].to_string();
    assert!(
        shown.starts_with(&format!("{}:6:9:", path.display())),
        "{shown}"
    );
    assert!(shown.contains("contains ';'"), "{shown}");
}

#[test]
fn passwords_never_show_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("erp.toml");
    std::fs::write(
        &path,
        "name = \"erp\"\ndriver = \"sql\"\nurl = \"${db}\"\n[entities.a]\ntable = \"t\"\nid = \"id\"\nupdated_at = \"u\"\n",
    )
    .unwrap();
    let def = check_file(&path).unwrap();
    let instance = Instance::bare("erp").with_var("db", "oracle://scott:tiger@db/erp");
    let e = (def.driver.open)(&def, &instance).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(!e.to_string().contains("tiger"), "{e}");
}

#[tokio::test]
async fn unreachable_postgres_names_the_masked_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("erp.toml");
    std::fs::write(
        &path,
        "name = \"erp\"\ndriver = \"sql\"\nurl = \"${db}\"\nconnect_timeout_secs = 2\n[entities.a]\ntable = \"t\"\nid = \"id\"\nupdated_at = \"u\"\n",
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let def = check_file(&path).unwrap();
    let instance = Instance::bare("erp")
        .with_var("db", &format!("postgres://erp:s3cret@127.0.0.1:{port}/erp"));
    let c = (def.driver.open)(&def, &instance).unwrap();
    let e = c.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert!(e.message.contains("********"), "{e}");
    assert!(!format!("{e:?} {e}").contains("s3cret"));
    let _ = Cursor::default();
}

#[test]
fn the_examples_pass_their_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/examples");
    let (ok, errors) = check_dir(&dir).unwrap();
    assert!(errors.is_empty(), "{errors:#?}");
    let names: Vec<&str> = ok.iter().map(|d| d.name.as_str()).collect();
    assert!(names.contains(&"example_sql"), "{names:?}");
    let _: PathBuf = dir;
}
