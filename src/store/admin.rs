//! The admin API's state: bearer tokens (hashed), the audit trail of the
//! calls made with them, and the counts `/metrics` reads at scrape time.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::types::Json;

use super::{Pool, Result, Store, StoreError};

/// What a token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything, with sensitive fields masked.
    Viewer,
    /// Also runs jobs, resolves conflicts, replays and acknowledges.
    Operator,
    /// Everything, including tokens and the audit trail.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected viewer, operator or admin"
            )),
        }
    }
}

/// A stored API token: never the token itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token.
    #[serde(skip)]
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One mutating API call, for the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiAuditWrite {
    pub token_name: String,
    pub role: Role,
    pub method: String,
    pub path: String,
    /// The HTTP status answered.
    pub status: u16,
    /// What was asked (the request body, parsed), when there was one.
    pub detail: Option<Value>,
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiAuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub call: ApiAuditWrite,
}

/// Gauges `/metrics` reads from the store at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// (queue, status, entries, oldest entry of that status).
    pub queues: Vec<(String, String, i64, Option<DateTime<Utc>>)>,
    /// Dead-lettered outbox entries per target system.
    pub dead_letters: Vec<(String, i64)>,
    /// Open conflicts per entity.
    pub open_conflicts: Vec<(String, i64)>,
    /// Open alerts per rule and severity.
    pub open_alerts: Vec<(String, String, i64)>,
    /// Open quarantined records per system.
    pub open_quarantine: Vec<(String, i64)>,
}

const TOKEN_COLUMNS: &str = "id, name, role, token_hash, created_at, last_used_at, revoked_at";

fn token_from_row<R: sqlx::Row>(row: &R) -> Result<ApiToken>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> DateTime<Utc>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<DateTime<Utc>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let q = || StoreError::query("read api tokens");
    let role: String = row.try_get("role").map_err(q())?;
    Ok(ApiToken {
        id: row.try_get("id").map_err(q())?,
        name: row.try_get("name").map_err(q())?,
        role: Role::from_str(&role).map_err(|reason| StoreError::Corrupt {
            table: "api_tokens",
            column: "role",
            reason,
        })?,
        token_hash: row.try_get("token_hash").map_err(q())?,
        created_at: row.try_get("created_at").map_err(q())?,
        last_used_at: row.try_get("last_used_at").map_err(q())?,
        revoked_at: row.try_get("revoked_at").map_err(q())?,
    })
}

impl Store {
    /// Stores a new token under `name`. Returns `None` when an active token
    /// of that name exists already (nothing is stored then).
    pub async fn create_api_token(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
    ) -> Result<Option<ApiToken>> {
        let now = Utc::now();
        on_pool!(self, |pool, _Db| {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO api_tokens (name, role, token_hash, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING RETURNING {TOKEN_COLUMNS}"
            )))
            .bind(name)
            .bind(role.as_str())
            .bind(token_hash)
            .bind(now)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::query("create api token"))?;
            row.as_ref().map(token_from_row).transpose()
        })
    }

    /// Every token, active and revoked, by name.
    pub async fn api_tokens(&self) -> Result<Vec<ApiToken>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY name, id"
            )))
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read api tokens"))?;
            rows.iter().map(token_from_row).collect()
        })
    }

    /// The active (not revoked) token with this hash.
    pub async fn api_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        on_pool!(self, |pool, _Db| {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
            )))
            .bind(token_hash)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::query("read api tokens"))?;
            row.as_ref().map(token_from_row).transpose()
        })
    }

    /// Notes that a token was used now.
    pub async fn touch_api_token(&self, id: i64) -> Result<()> {
        on_pool!(self, |pool, _Db| {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(Utc::now())
                .bind(id)
                .execute(pool)
                .await
                .map_err(StoreError::query("touch api token"))?;
            Ok(())
        })
    }

    /// Revokes the active token of this name. Returns whether there was one.
    pub async fn revoke_api_token(&self, name: &str) -> Result<bool> {
        on_pool!(self, |pool, _Db| {
            let done = sqlx::query(
                "UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
            )
            .bind(Utc::now())
            .bind(name)
            .execute(pool)
            .await
            .map_err(StoreError::query("revoke api token"))?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Appends a call to the audit trail.
    pub async fn audit_api_call(&self, call: &ApiAuditWrite) -> Result<i64> {
        on_pool!(self, |pool, _Db| {
            sqlx::query_scalar(
                "INSERT INTO api_audit (at, token_name, role, method, path, status, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(Utc::now())
            .bind(&call.token_name)
            .bind(call.role.as_str())
            .bind(&call.method)
            .bind(&call.path)
            .bind(i64::from(call.status))
            .bind(call.detail.as_ref().map(Json))
            .fetch_one(pool)
            .await
            .map_err(StoreError::query("write api audit"))
        })
    }

    /// The audit trail, newest first.
    pub async fn api_audit(&self, limit: u32) -> Result<Vec<ApiAuditEntry>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(
                "SELECT id, at, token_name, role, method, path, status, detail
                 FROM api_audit ORDER BY id DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read api audit"))?;
            rows.iter()
                .map(|row| {
                    let q = || StoreError::query("read api audit");
                    let role: String = row.try_get("role").map_err(q())?;
                    let status: i64 = row.try_get("status").map_err(q())?;
                    let detail: Option<Json<Value>> = row.try_get("detail").map_err(q())?;
                    Ok(ApiAuditEntry {
                        id: row.try_get("id").map_err(q())?,
                        at: row.try_get("at").map_err(q())?,
                        call: ApiAuditWrite {
                            token_name: row.try_get("token_name").map_err(q())?,
                            role: Role::from_str(&role).map_err(|reason| StoreError::Corrupt {
                                table: "api_audit",
                                column: "role",
                                reason,
                            })?,
                            method: row.try_get("method").map_err(q())?,
                            path: row.try_get("path").map_err(q())?,
                            status: u16::try_from(status).unwrap_or(0),
                            detail: detail.map(|Json(v)| v),
                        },
                    })
                })
                .collect()
        })
    }

    /// Queue depths, dead letters, open conflicts, alerts and quarantine,
    /// counted now.
    pub async fn metrics_snapshot(&self) -> Result<MetricsSnapshot> {
        on_pool!(self, |pool, _Db| {
            let q = || StoreError::query("read metrics");
            let mut snap = MetricsSnapshot::default();
            for (queue, sql) in [
                (
                    "outbox",
                    "SELECT status, COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox GROUP BY status ORDER BY status",
                ),
                (
                    "inbox",
                    "SELECT status, COUNT(*) AS n, MIN(received_at) AS oldest FROM inbox GROUP BY status ORDER BY status",
                ),
            ] {
                for row in sqlx::query(sql).fetch_all(pool).await.map_err(q())? {
                    snap.queues.push((
                        queue.to_owned(),
                        row.try_get("status").map_err(q())?,
                        row.try_get("n").map_err(q())?,
                        row.try_get("oldest").map_err(q())?,
                    ));
                }
            }
            let pairs = |sql: &'static str| async move {
                let mut out = Vec::new();
                for row in sqlx::query(sql).fetch_all(pool).await.map_err(q())? {
                    out.push((
                        row.try_get::<String, _>("k").map_err(q())?,
                        row.try_get::<i64, _>("n").map_err(q())?,
                    ));
                }
                Ok::<_, StoreError>(out)
            };
            snap.dead_letters = pairs(
                "SELECT target_system AS k, COUNT(*) AS n FROM outbox WHERE status = 'dead' GROUP BY target_system ORDER BY target_system",
            )
            .await?;
            snap.open_conflicts = pairs(
                "SELECT entity AS k, COUNT(*) AS n FROM conflicts WHERE status = 'open' GROUP BY entity ORDER BY entity",
            )
            .await?;
            snap.open_quarantine = pairs(
                "SELECT system AS k, COUNT(*) AS n FROM quarantine WHERE status = 'open' GROUP BY system ORDER BY system",
            )
            .await?;
            for row in sqlx::query(
                "SELECT rule, severity, COUNT(*) AS n FROM alerts WHERE status = 'open' GROUP BY rule, severity ORDER BY rule, severity",
            )
            .fetch_all(pool)
            .await
            .map_err(q())?
            {
                snap.open_alerts.push((
                    row.try_get("rule").map_err(q())?,
                    row.try_get("severity").map_err(q())?,
                    row.try_get("n").map_err(q())?,
                ));
            }
            Ok(snap)
        })
    }
}
