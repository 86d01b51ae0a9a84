//! Stores for tests: a fresh SQLite file, or a fresh PostgreSQL schema when
//! `CONCORD_TEST_DATABASE_URL` is set. Under CI the PostgreSQL variant must
//! run: a missing URL there is a failure, not a skip.

#![allow(dead_code)]

use concord::settings::StoreSettings;
use concord::store::Store;

pub const PG_URL_VAR: &str = "CONCORD_TEST_DATABASE_URL";

/// A store plus what it needs to stay alive and be cleaned up.
pub struct TestStore {
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
}

impl std::ops::Deref for TestStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl TestStore {
    /// The SQLite database file, for a test's own connection beside the
    /// store's pool.
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        self._dir.as_ref().map(|d| d.path().join("concord.db"))
    }

    /// The PostgreSQL URL and schema, for a test's own connection.
    pub fn pg_schema(&self) -> Option<(&str, &str)> {
        self.pg_schema
            .as_ref()
            .map(|(url, schema)| (url.as_str(), schema.as_str()))
    }

    /// How many links keep a copy of their synced data rather than naming
    /// the version they hold, read on the store's tables through a
    /// connection of the test's own.
    #[allow(dead_code)] // not every suite that shares this module asks
    pub async fn links_with_copies(&self) -> i64 {
        use sqlx::Connection;
        let sql = "SELECT COUNT(*) FROM links WHERE synced_data IS NOT NULL";
        if let Some(file) = self.sqlite_file() {
            let url = format!("sqlite://{}", file.display());
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            return sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
        }
        let (url, schema) = self.pg_schema().expect("a SQLite or PostgreSQL store");
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let sql = format!("SELECT COUNT(*) FROM \"{schema}\".links WHERE synced_data IS NOT NULL");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut c)
            .await
            .unwrap()
    }

    /// Drops a PostgreSQL test schema; SQLite files go with the temp dir.
    pub async fn cleanup(self) {
        self.store.close().await;
        if let Some((url, schema)) = self.pg_schema {
            admin_execute(&url, &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await;
        }
    }
}

async fn admin_execute(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
}

async fn connect(url: &str, schema: Option<&str>) -> Store {
    let settings = StoreSettings {
        url: url.into(),
        schema: schema.map(str::to_owned),
        max_connections: 4,
        auto_migrate: false,
        ..StoreSettings::default()
    };
    Store::connect(&settings)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e:#}"))
}

pub async fn sqlite() -> TestStore {
    sqlite_with(|_| {}).await
}

/// A fresh SQLite store with some settings changed (say its busy timeout).
pub async fn sqlite_with(tweak: impl FnOnce(&mut StoreSettings)) -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = StoreSettings {
        url: format!("sqlite://{}", dir.path().join("concord.db").display()).into(),
        ..StoreSettings::default()
    };
    tweak(&mut settings);
    let store = Store::open(&settings).await.unwrap();
    TestStore {
        store,
        _dir: Some(dir),
        pg_schema: None,
    }
}

/// A store in a new schema of the test database, or `None` (with the reason
/// printed) when no test database is configured outside CI.
pub async fn postgres() -> Option<TestStore> {
    let Ok(url) = std::env::var(PG_URL_VAR) else {
        if std::env::var_os("CI").is_some() {
            panic!("{PG_URL_VAR} must be set in CI: the PostgreSQL store tests may not be skipped");
        }
        eprintln!("skipped: {PG_URL_VAR} is not set, so the PostgreSQL variant did not run");
        return None;
    };
    let schema = format!("concord_test_{}", uuid::Uuid::now_v7().simple());
    admin_execute(&url, &format!("CREATE SCHEMA \"{schema}\"")).await;
    let store = connect(&url, Some(&schema)).await;
    store.migrate().await.unwrap();
    Some(TestStore {
        store,
        _dir: None,
        pg_schema: Some((url, schema)),
    })
}

/// Defines each listed `async fn name(store: &TestStore)` as a test on SQLite
/// and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let store = $crate::common::sqlite().await;
                    super::$name(&store).await;
                    store.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(store) = $crate::common::postgres().await else { return };
                    super::$name(&store).await;
                    store.cleanup().await;
                }
            )*
        }
    };
}

/// Drops a schema a test created, from synchronous code.
pub fn drop_schema(url: &str, schema: &str) {
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(admin_execute(url, &sql));
}
