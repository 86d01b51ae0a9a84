//! What `concord serve` keeps in the store: webhook events taken in by group
//! commit, inbox events claimed and settled by workers, and job schedules
//! (last occurrence fired, and a lease so that one instance fires each
//! occurrence and a job never overlaps itself).
//!
//! Times here are epoch milliseconds (BIGINT): compared in SQL the same way
//! on both backends.

use std::collections::HashMap;

use chrono::Utc;
use serde_json::Value;
use sqlx::Row;
use sqlx::types::Json;

use super::{Backend, InboxEvent, Pool, ROWS_PER_STATEMENT, Result, Store, StoreError};
use crate::model::EntityKind;

/// An inbox event claimed by a worker.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    pub id: i64,
    pub idempotency_key: String,
    pub system: String,
    pub entity: Option<EntityKind>,
    pub payload: Value,
    /// Attempts including this one.
    pub attempts: i64,
}

/// How an event that failed is settled.
#[derive(Debug, Clone, Copy)]
pub enum Retry {
    /// Try again from this time (epoch ms).
    At(i64),
    /// Give up: the event goes to `dead` with its reason.
    Dead,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Store {
    /// Stores inbound events in one transaction (group commit), each unless
    /// one with its key is already stored. Returns, per event and in order,
    /// its inbox id, or `None` for a duplicate (also of an earlier event in
    /// the same call). On SQLite, `sync_full` makes this commit wait until
    /// the database file is on disk (`synchronous = FULL` for this
    /// transaction), so an acknowledged event survives a power loss too.
    pub async fn inbox_push_many(
        &self,
        events: &[InboxEvent],
        sync_full: bool,
    ) -> Result<Vec<Option<i64>>> {
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(events.len());
        let mut unique: Vec<usize> = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            if !first.contains_key(e.idempotency_key.as_str()) {
                first.insert(&e.idempotency_key, i);
                unique.push(i);
            }
        }
        let mut ids: Vec<Option<i64>> = vec![None; events.len()];
        if unique.is_empty() {
            return Ok(ids);
        }
        let pragma = sync_full && self.backend() == Backend::Sqlite;
        let now = Utc::now();
        let stored: Vec<(String, i64)> = on_pool!(self, |pool, Db| {
            let mut conn = pool.acquire().await.map_err(StoreError::query("acquire"))?;
            if pragma {
                sqlx::query("PRAGMA synchronous = FULL")
                    .execute(&mut *conn)
                    .await
                    .map_err(StoreError::query("set synchronous"))?;
            }
            let result = async {
                use sqlx::Connection;
                let mut tx = conn.begin().await.map_err(StoreError::query("begin"))?;
                let mut stored = Vec::with_capacity(unique.len());
                for chunk in unique.chunks(ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<Db>::new(
                        "INSERT INTO inbox (idempotency_key, system, entity, payload, received_at) ",
                    );
                    q.push_values(chunk, |mut row, &i| {
                        let e = &events[i];
                        row.push_bind(e.idempotency_key.as_str())
                            .push_bind(e.system.as_str())
                            .push_bind(e.entity.map(EntityKind::as_str))
                            .push_bind(Json(&e.payload))
                            .push_bind(now);
                    });
                    q.push(" ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key, id");
                    let rows = q
                        .build()
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(StoreError::query("store inbox events"))?;
                    for row in rows {
                        let key: String = row
                            .try_get(0)
                            .map_err(StoreError::query("read inbox id"))?;
                        let id: i64 = row
                            .try_get(1)
                            .map_err(StoreError::query("read inbox id"))?;
                        stored.push((key, id));
                    }
                }
                tx.commit().await.map_err(StoreError::query("commit"))?;
                Ok::<_, StoreError>(stored)
            }
            .await;
            if pragma {
                // Back to the pool's setting, whatever happened above.
                let _ = sqlx::query("PRAGMA synchronous = NORMAL")
                    .execute(&mut *conn)
                    .await;
            }
            result
        })?;
        for (key, id) in stored {
            if let Some(&i) = first.get(key.as_str()) {
                ids[i] = Some(id);
            }
        }
        Ok(ids)
    }

    /// Claims up to `limit` inbox events for `owner` until `lease_ms` from
    /// now: pending ones that are due, and ones whose earlier claim expired
    /// (a worker that died). Oldest first. On PostgreSQL, concurrent
    /// claimers skip each other's rows (`FOR UPDATE SKIP LOCKED`).
    pub async fn inbox_claim(
        &self,
        owner: &str,
        limit: u32,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedEvent>> {
        let now = now_ms();
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE inbox SET status = 'processing', claimed_by = $1, claimed_until_ms = $2,
               attempts = attempts + 1
             WHERE id IN (SELECT id FROM inbox
                          WHERE (status = 'pending' AND next_attempt_ms <= $3)
                             OR (status = 'processing' AND claimed_until_ms < $3)
                          ORDER BY id LIMIT $4{lock})
             RETURNING id, idempotency_key, system, entity, payload, attempts"
        );
        let rows = on_pool!(self, |pool, _Db| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(owner)
                .bind(now + lease_ms)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(StoreError::query("claim inbox events"))?
                .into_iter()
                .map(|row| {
                    let q = || StoreError::query("read inbox event");
                    let entity: Option<String> = row.try_get("entity").map_err(q())?;
                    let entity =
                        match entity {
                            None => None,
                            Some(e) => Some(e.parse::<EntityKind>().map_err(|reason| {
                                StoreError::Corrupt {
                                    table: "inbox",
                                    column: "entity",
                                    reason: reason.to_string(),
                                }
                            })?),
                        };
                    let Json(payload): Json<Value> = row.try_get("payload").map_err(q())?;
                    Ok(ClaimedEvent {
                        id: row.try_get("id").map_err(q())?,
                        idempotency_key: row.try_get("idempotency_key").map_err(q())?,
                        system: row.try_get("system").map_err(q())?,
                        entity,
                        payload,
                        attempts: row.try_get("attempts").map_err(q())?,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let mut rows = rows;
        rows.sort_by_key(|e| e.id);
        Ok(rows)
    }

    /// Marks a claimed event processed. Returns false when `owner` no longer
    /// holds the claim (it expired and another worker took it).
    pub async fn inbox_done(&self, id: i64, owner: &str) -> Result<bool> {
        let done = on_pool!(self, |pool, _Db| {
            sqlx::query(
                "UPDATE inbox SET status = 'processed', processed_at = $3, last_error = NULL,
                   claimed_by = NULL, claimed_until_ms = 0
                 WHERE id = $1 AND claimed_by = $2 AND status = 'processing'",
            )
            .bind(id)
            .bind(owner)
            .bind(Utc::now())
            .execute(pool)
            .await
            .map_err(StoreError::query("settle inbox event"))?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Settles a claimed event that failed: back to pending (retried at the
    /// time given) or dead, with the reason kept.
    pub async fn inbox_fail(&self, id: i64, owner: &str, reason: &str, retry: Retry) -> Result<()> {
        let (status, at) = match retry {
            Retry::At(at) => ("pending", at),
            Retry::Dead => ("dead", 0),
        };
        on_pool!(self, |pool, _Db| {
            sqlx::query(
                "UPDATE inbox SET status = $3, next_attempt_ms = $4, last_error = $5,
                   claimed_by = NULL, claimed_until_ms = 0
                 WHERE id = $1 AND claimed_by = $2 AND status = 'processing'",
            )
            .bind(id)
            .bind(owner)
            .bind(status)
            .bind(at)
            .bind(reason)
            .execute(pool)
            .await
            .map_err(StoreError::query("settle inbox event"))
            .map(|_| ())
        })?;
        Ok(())
    }

    /// Gives back every claim `owner` holds (at shutdown, when work did not
    /// finish in time): the events are pending again, the attempt not
    /// counted. Returns how many.
    pub async fn inbox_release(&self, owner: &str) -> Result<u64> {
        Ok(on_pool!(self, |pool, _Db| {
            sqlx::query(
                "UPDATE inbox SET status = 'pending', claimed_by = NULL, claimed_until_ms = 0,
                   attempts = attempts - 1
                 WHERE claimed_by = $1 AND status = 'processing'",
            )
            .bind(owner)
            .execute(pool)
            .await
            .map_err(StoreError::query("release inbox claims"))?
            .rows_affected()
        }))
    }

    /// Inbox events per status (for readiness and tests).
    pub async fn inbox_counts(&self) -> Result<Vec<(String, i64)>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(
                "SELECT status, COUNT(*) AS n FROM inbox GROUP BY status ORDER BY status",
            )
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("count inbox events"))?;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.try_get("status")
                            .map_err(StoreError::query("count inbox events"))?,
                        r.try_get("n")
                            .map_err(StoreError::query("count inbox events"))?,
                    ))
                })
                .collect()
        })
    }

    /// Whether an event with this key is in the inbox, and its status.
    pub async fn inbox_status(
        &self,
        idempotency_key: &str,
    ) -> Result<Option<(String, Option<String>)>> {
        on_pool!(self, |pool, _Db| {
            let row =
                sqlx::query("SELECT status, last_error FROM inbox WHERE idempotency_key = $1")
                    .bind(idempotency_key)
                    .fetch_optional(pool)
                    .await
                    .map_err(StoreError::query("read inbox event"))?;
            match row {
                None => Ok(None),
                Some(r) => Ok(Some((
                    r.try_get("status")
                        .map_err(StoreError::query("read inbox event"))?,
                    r.try_get("last_error")
                        .map_err(StoreError::query("read inbox event"))?,
                ))),
            }
        })
    }

    /// The occurrence a scheduled job fired last (epoch ms); on first sight
    /// of the job, records `now_ms` as its start so that it first fires at
    /// its next occurrence, not for the whole past.
    pub async fn schedule_last_fire(&self, job: &str, now_ms: i64) -> Result<i64> {
        on_pool!(self, |pool, _Db| {
            sqlx::query(
                "INSERT INTO schedules (job, last_fire_ms) VALUES ($1, $2)
                 ON CONFLICT (job) DO NOTHING",
            )
            .bind(job)
            .bind(now_ms)
            .execute(pool)
            .await
            .map_err(StoreError::query("register schedule"))?;
            sqlx::query_scalar("SELECT last_fire_ms FROM schedules WHERE job = $1")
                .bind(job)
                .fetch_one(pool)
                .await
                .map_err(StoreError::query("read schedule"))
        })
    }

    /// Takes the job's lease until `until_ms` and records `due_ms` as the
    /// occurrence fired — only when that occurrence was not fired yet and no
    /// lease is held (the job is not running anywhere). One statement, so of
    /// several instances exactly one gets `true`.
    pub async fn schedule_claim(
        &self,
        job: &str,
        owner: &str,
        due_ms: i64,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
        let n = on_pool!(self, |pool, _Db| {
            sqlx::query(
                "UPDATE schedules SET last_fire_ms = $3, lease_owner = $2, lease_until_ms = $5
                 WHERE job = $1 AND last_fire_ms < $3 AND lease_until_ms < $4",
            )
            .bind(job)
            .bind(owner)
            .bind(due_ms)
            .bind(now_ms)
            .bind(until_ms)
            .execute(pool)
            .await
            .map_err(StoreError::query("claim schedule"))?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Extends the lease `owner` holds while the job runs. Returns false if
    /// the lease was lost (it expired and was taken).
    pub async fn schedule_renew(&self, job: &str, owner: &str, until_ms: i64) -> Result<bool> {
        let n = on_pool!(self, |pool, _Db| {
            sqlx::query(
                "UPDATE schedules SET lease_until_ms = $3 WHERE job = $1 AND lease_owner = $2",
            )
            .bind(job)
            .bind(owner)
            .bind(until_ms)
            .execute(pool)
            .await
            .map_err(StoreError::query("renew schedule lease"))?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Ends the lease when the run is over.
    pub async fn schedule_release(&self, job: &str, owner: &str) -> Result<()> {
        on_pool!(self, |pool, _Db| {
            sqlx::query(
                "UPDATE schedules SET lease_owner = NULL, lease_until_ms = 0
                 WHERE job = $1 AND lease_owner = $2",
            )
            .bind(job)
            .bind(owner)
            .execute(pool)
            .await
            .map_err(StoreError::query("release schedule lease"))
            .map(|_| ())
        })?;
        Ok(())
    }

    /// Sets a job's last fired occurrence (operators, tests).
    pub async fn schedule_set_last_fire(&self, job: &str, last_fire_ms: i64) -> Result<()> {
        on_pool!(self, |pool, _Db| {
            sqlx::query(
                "INSERT INTO schedules (job, last_fire_ms) VALUES ($1, $2)
                 ON CONFLICT (job) DO UPDATE SET last_fire_ms = excluded.last_fire_ms",
            )
            .bind(job)
            .bind(last_fire_ms)
            .execute(pool)
            .await
            .map_err(StoreError::query("set schedule"))
            .map(|_| ())
        })?;
        Ok(())
    }
}
