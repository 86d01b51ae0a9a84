//! The store's side of the durable work queue: the `work_queue`,
//! `work_dead` and `work_done` tables (migration 20261128170000).
//! [`crate::queue::StoreQueue`] builds the [`Queue`](crate::queue::Queue)
//! behaviour on these methods; the model is described there.
//!
//! Why not the `inbox` table: the inbox records inbound events as they
//! arrived (one row per event, kept, with a status for `concord status`),
//! while a queue row is a lease-able unit of work that is deleted when it is
//! acknowledged, so the claim index stays small however long concord runs.
//! Work also comes from elsewhere (job runs, deliveries), and several named
//! queues share the tables. A webhook receiver that keeps its events in the
//! inbox enqueues the work naming the event, under the event's id.

use super::*;

/// A work item to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWork {
    /// Unique per queue; a second item with the same id is a duplicate and
    /// is not stored. Producers namespace it (`webhook:stripe:evt_1`).
    pub work_id: String,
    /// What kind of work (`webhook`, `job`, `delivery`): the worker's switch.
    pub kind: String,
    pub payload: Value,
}

/// A work item claimed with a lease.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedWork {
    pub row_id: i64,
    /// Proves the lease: acknowledging or retrying needs it, and a claim by
    /// someone else (after the lease ran out) replaces it.
    pub lease_token: i64,
    pub work_id: String,
    pub kind: String,
    pub payload: Value,
    /// 1 on the first delivery.
    pub attempt: u32,
    pub enqueued_at_ms: i64,
    /// Why the previous attempt failed, if it did.
    pub last_error: Option<String>,
}

/// What one claim did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claim {
    /// Leased now, oldest first.
    pub items: Vec<ClaimedWork>,
    /// Work ids moved to dead letters instead: their lease ran out on the
    /// last allowed attempt.
    pub dead_lettered: Vec<String>,
    /// Items dropped because `work_done` has their id (their effects were
    /// committed but the acknowledgement was lost).
    pub already_done: usize,
}

/// A dead-lettered work item.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadWork {
    pub id: i64,
    pub queue: String,
    pub work_id: String,
    pub kind: String,
    pub payload: Value,
    pub attempts: i64,
    pub reason: String,
    pub enqueued_at_ms: i64,
    pub dead_at_ms: i64,
}

/// Counts for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkStats {
    /// Items waiting or leased.
    pub depth: i64,
    pub oldest_enqueued_at_ms: Option<i64>,
    pub dead: i64,
}

/// Moves the leased row `$row` to dead letters through a transaction,
/// counting `$adjust` more attempts than it shows. `Ok(false)` if the
/// lease was lost.
macro_rules! move_to_dead {
    ($tx:expr, $row:expr, $token:expr, $reason:expr, $now:expr, $adjust:expr) => {{
        let moved = sqlx::query(
            "INSERT INTO work_dead (queue, work_id, kind, payload, attempts, reason, enqueued_at_ms, dead_at_ms)
             SELECT queue, work_id, kind, payload, attempts + $3, $4, enqueued_at_ms, $5
             FROM work_queue WHERE id = $1 AND lease_token = $2",
        )
        .bind($row)
        .bind($token)
        .bind(i64::from($adjust))
        .bind($reason)
        .bind($now)
        .execute($tx)
        .await
        .map_err(StoreError::query("dead-letter work"))?
        .rows_affected();
        if moved == 1 {
            sqlx::query("DELETE FROM work_queue WHERE id = $1")
                .bind($row)
                .execute($tx)
                .await
                .map_err(StoreError::query("dead-letter work"))?;
        }
        Ok::<bool, StoreError>(moved == 1)
    }};
}

/// Rows per multi-row enqueue statement (5 binds each).
const ENQUEUE_ROWS: usize = 400;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn random_token() -> i64 {
    // The low half of a v7 UUID is random (but for the variant bits).
    uuid::Uuid::now_v7().as_u64_pair().1 as i64
}

impl Store {
    /// `BEGIN IMMEDIATE` on SQLite, so a transaction that reads before it
    /// writes takes the write lock first and waits (busy timeout) instead
    /// of failing on upgrade; plain `BEGIN` on PostgreSQL.
    fn begin_write(&self) -> &'static str {
        match self.backend() {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// Stores `items` in `queue` in one transaction. Returns, per item,
    /// whether it was stored (`false`: an item with its work id is queued
    /// already, or appears earlier in `items`). On SQLite with `full_sync`
    /// the commit is synced to disk (`synchronous = FULL`) before this
    /// returns, so it survives a power cut, not only a crash of concord.
    pub async fn work_enqueue(
        &self,
        queue: &str,
        items: &[NewWork],
        full_sync: bool,
    ) -> Result<Vec<bool>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let sqlite = self.backend() == Backend::Sqlite;
        let mut stored = std::collections::HashSet::new();
        on_pool!(self, |pool, Db| {
            let mut conn = pool.acquire().await.map_err(StoreError::query("acquire"))?;
            if sqlite && full_sync {
                sqlx::query("PRAGMA synchronous = FULL")
                    .execute(&mut *conn)
                    .await
                    .map_err(StoreError::query("enqueue work"))?;
            }
            let result: Result<()> = async {
                let mut tx = sqlx::Connection::begin_with(&mut *conn, self.begin_write())
                    .await
                    .map_err(StoreError::query("begin"))?;
                for chunk in items.chunks(ENQUEUE_ROWS) {
                    let mut q = sqlx::QueryBuilder::<Db>::new(
                        "INSERT INTO work_queue (queue, work_id, kind, payload, visible_at_ms, enqueued_at_ms) ",
                    );
                    q.push_values(chunk, |mut row, item| {
                        row.push_bind(queue)
                            .push_bind(item.work_id.as_str())
                            .push_bind(item.kind.as_str())
                            .push_bind(Json(&item.payload))
                            .push_bind(now)
                            .push_bind(now);
                    });
                    q.push(" ON CONFLICT (queue, work_id) DO NOTHING RETURNING work_id");
                    let ids: Vec<String> = q
                        .build_query_scalar()
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(StoreError::query("enqueue work"))?;
                    stored.extend(ids);
                }
                tx.commit().await.map_err(StoreError::query("commit"))
            }
            .await;
            if sqlite && full_sync {
                // Back to the store's setting for whoever uses it next.
                let _ = sqlx::query("PRAGMA synchronous = NORMAL")
                    .execute(&mut *conn)
                    .await;
            }
            result?;
        });
        Ok(items
            .iter()
            .map(|item| stored.remove(&item.work_id))
            .collect())
    }

    /// Leases up to `max` visible items of `queue` for `lease_ms`, oldest
    /// first. On PostgreSQL rows are taken `FOR UPDATE SKIP LOCKED`, so
    /// concurrent claimers never wait on or take the same row. Items whose
    /// lease ran out on attempt `max_attempts` go to dead letters instead;
    /// items already done (see [`Batch::processed_work`]) are deleted.
    pub async fn work_claim(
        &self,
        queue: &str,
        max: u32,
        lease_ms: i64,
        max_attempts: u32,
    ) -> Result<Claim> {
        let now = now_ms();
        let token = random_token();
        let sql = match self.backend() {
            Backend::Sqlite => {
                "UPDATE work_queue SET attempts = attempts + 1, lease_token = $1, visible_at_ms = $2
                 WHERE id IN (SELECT id FROM work_queue WHERE queue = $3 AND visible_at_ms <= $4
                              ORDER BY visible_at_ms, id LIMIT $5)
                 RETURNING id, work_id, kind, payload, attempts, enqueued_at_ms, last_error"
            }
            Backend::Postgres => {
                "UPDATE work_queue SET attempts = attempts + 1, lease_token = $1, visible_at_ms = $2
                 WHERE id IN (SELECT id FROM work_queue WHERE queue = $3 AND visible_at_ms <= $4
                              ORDER BY visible_at_ms, id LIMIT $5 FOR UPDATE SKIP LOCKED)
                 RETURNING id, work_id, kind, payload, attempts, enqueued_at_ms, last_error"
            }
        };
        on_pool!(self, |pool, Db| {
            let mut tx = pool
                .begin_with(self.begin_write())
                .await
                .map_err(StoreError::query("begin"))?;
            let rows = sqlx::query(sql)
                .bind(token)
                .bind(now.saturating_add(lease_ms))
                .bind(queue)
                .bind(now)
                .bind(i64::from(max))
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::query("claim work"))?;
            let q = || StoreError::query("read claimed work");
            let mut claim = Claim::default();
            for row in &rows {
                let attempts: i64 = row.try_get("attempts").map_err(q())?;
                let Json(payload): Json<Value> = row.try_get("payload").map_err(q())?;
                claim.items.push(ClaimedWork {
                    row_id: row.try_get("id").map_err(q())?,
                    lease_token: token,
                    work_id: row.try_get("work_id").map_err(q())?,
                    kind: row.try_get("kind").map_err(q())?,
                    payload,
                    attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
                    enqueued_at_ms: row.try_get("enqueued_at_ms").map_err(q())?,
                    last_error: row.try_get("last_error").map_err(q())?,
                });
            }
            claim.items.sort_by_key(|w| w.row_id);
            // Leases that ran out on the last attempt: no more attempts.
            let mut keep = Vec::with_capacity(claim.items.len());
            for item in std::mem::take(&mut claim.items) {
                if item.attempt <= max_attempts {
                    keep.push(item);
                    continue;
                }
                let tried = item.attempt - 1;
                let mut reason = format!(
                    "the lease ran out on attempt {tried} of {max_attempts}: the worker stopped, hung or took longer than the lease"
                );
                if let Some(e) = &item.last_error {
                    reason.push_str(&format!("; an earlier attempt failed: {e}"));
                }
                move_to_dead!(&mut *tx, item.row_id, token, reason.as_str(), now, -1_i32)?;
                claim.dead_lettered.push(item.work_id);
            }
            // Work done already: its acknowledgement was lost.
            if !keep.is_empty() {
                let mut done = std::collections::HashSet::new();
                for chunk in keep.chunks(LOOKUP_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<Db>::new(
                        "SELECT work_id FROM work_done WHERE work_id IN ",
                    );
                    push_list(&mut q, chunk.iter().map(|w| w.work_id.as_str()));
                    let ids: Vec<String> = q
                        .build_query_scalar()
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(StoreError::query("read done work"))?;
                    done.extend(ids);
                }
                if !done.is_empty() {
                    for item in keep.iter().filter(|w| done.contains(&w.work_id)) {
                        sqlx::query("DELETE FROM work_queue WHERE id = $1")
                            .bind(item.row_id)
                            .execute(&mut *tx)
                            .await
                            .map_err(StoreError::query("drop done work"))?;
                    }
                    claim.already_done = done.len();
                    keep.retain(|w| !done.contains(&w.work_id));
                }
            }
            claim.items = keep;
            tx.commit().await.map_err(StoreError::query("commit"))?;
            Ok(claim)
        })
    }

    /// Deletes acknowledged items, each `(row_id, lease_token)`, in one
    /// transaction. Returns how many still held their lease (the others
    /// were claimed again after their lease ran out, or are gone).
    pub async fn work_ack(&self, leases: &[(i64, i64)]) -> Result<usize> {
        if leases.is_empty() {
            return Ok(0);
        }
        let mut by_token: HashMap<i64, Vec<i64>> = HashMap::new();
        for &(row, token) in leases {
            by_token.entry(token).or_default().push(row);
        }
        on_pool!(self, |pool, Db| {
            let mut tx = pool
                .begin_with(self.begin_write())
                .await
                .map_err(StoreError::query("begin"))?;
            let mut held = 0;
            for (token, rows) in &by_token {
                for chunk in rows.chunks(LOOKUP_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<Db>::new(
                        "DELETE FROM work_queue WHERE lease_token = ",
                    );
                    q.push_bind(*token).push(" AND id IN ");
                    push_list(&mut q, chunk.iter().copied());
                    held += q
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::query("acknowledge work"))?
                        .rows_affected() as usize;
                }
            }
            tx.commit().await.map_err(StoreError::query("commit"))?;
            Ok(held)
        })
    }

    /// Hands a leased item back, visible again at `visible_at_ms`, with the
    /// error of this attempt. `false` if the lease was lost.
    pub async fn work_retry(
        &self,
        row_id: i64,
        lease_token: i64,
        visible_at_ms: i64,
        error: &str,
    ) -> Result<bool> {
        on_pool!(self, |pool, _Db| {
            let changed = sqlx::query(
                "UPDATE work_queue SET visible_at_ms = $3, lease_token = NULL, last_error = $4
                 WHERE id = $1 AND lease_token = $2",
            )
            .bind(row_id)
            .bind(lease_token)
            .bind(visible_at_ms)
            .bind(error)
            .execute(pool)
            .await
            .map_err(StoreError::query("retry work"))?
            .rows_affected();
            Ok(changed == 1)
        })
    }

    /// Keeps a lease for `lease_ms` more from now (long work). `false` if
    /// the lease was lost.
    pub async fn work_extend(&self, row_id: i64, lease_token: i64, lease_ms: i64) -> Result<bool> {
        on_pool!(self, |pool, _Db| {
            let changed = sqlx::query(
                "UPDATE work_queue SET visible_at_ms = $3 WHERE id = $1 AND lease_token = $2",
            )
            .bind(row_id)
            .bind(lease_token)
            .bind(now_ms().saturating_add(lease_ms))
            .execute(pool)
            .await
            .map_err(StoreError::query("extend lease"))?
            .rows_affected();
            Ok(changed == 1)
        })
    }

    /// Moves a leased item to dead letters with `reason`. `false` if the
    /// lease was lost (nothing moved).
    pub async fn work_dead_letter(
        &self,
        row_id: i64,
        lease_token: i64,
        reason: &str,
    ) -> Result<bool> {
        on_pool!(self, |pool, _Db| {
            let mut tx = pool
                .begin_with(self.begin_write())
                .await
                .map_err(StoreError::query("begin"))?;
            let moved = move_to_dead!(&mut *tx, row_id, lease_token, reason, now_ms(), 0_i32)?;
            tx.commit().await.map_err(StoreError::query("commit"))?;
            Ok(moved)
        })
    }

    /// Depth, age of the oldest item and dead letters of `queue`.
    pub async fn work_stats(&self, queue: &str) -> Result<WorkStats> {
        on_pool!(self, |pool, _Db| {
            let q = || StoreError::query("read queue stats");
            let row = sqlx::query(
                "SELECT COUNT(*) AS n, MIN(enqueued_at_ms) AS oldest FROM work_queue WHERE queue = $1",
            )
            .bind(queue)
            .fetch_one(pool)
            .await
            .map_err(q())?;
            let dead: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM work_dead WHERE queue = $1")
                .bind(queue)
                .fetch_one(pool)
                .await
                .map_err(q())?;
            Ok(WorkStats {
                depth: row.try_get("n").map_err(q())?,
                oldest_enqueued_at_ms: row.try_get("oldest").map_err(q())?,
                dead,
            })
        })
    }

    /// Dead letters of `queue`, oldest first.
    pub async fn work_dead_letters(&self, queue: &str, limit: u32) -> Result<Vec<DeadWork>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(
                "SELECT id, queue, work_id, kind, payload, attempts, reason, enqueued_at_ms, dead_at_ms
                 FROM work_dead WHERE queue = $1 ORDER BY id LIMIT $2",
            )
            .bind(queue)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read dead work"))?;
            let q = || StoreError::query("read dead work");
            rows.iter()
                .map(|row| {
                    let Json(payload): Json<Value> = row.try_get("payload").map_err(q())?;
                    Ok(DeadWork {
                        id: row.try_get("id").map_err(q())?,
                        queue: row.try_get("queue").map_err(q())?,
                        work_id: row.try_get("work_id").map_err(q())?,
                        kind: row.try_get("kind").map_err(q())?,
                        payload,
                        attempts: row.try_get("attempts").map_err(q())?,
                        reason: row.try_get("reason").map_err(q())?,
                        enqueued_at_ms: row.try_get("enqueued_at_ms").map_err(q())?,
                        dead_at_ms: row.try_get("dead_at_ms").map_err(q())?,
                    })
                })
                .collect()
        })
    }

    /// Puts dead letters of `queue` back in line with fresh attempts (the
    /// ids given, or all when none are). Returns how many.
    pub async fn work_requeue_dead(&self, queue: &str, ids: &[i64]) -> Result<u64> {
        let now = now_ms();
        on_pool!(self, |pool, Db| {
            let mut tx = pool
                .begin_with(self.begin_write())
                .await
                .map_err(StoreError::query("begin"))?;
            let filter = |q: &mut sqlx::QueryBuilder<Db>, chunk: &[i64]| {
                if !chunk.is_empty() {
                    q.push(" AND id IN ");
                    push_list(q, chunk.iter().copied());
                }
            };
            let chunks: Vec<&[i64]> = if ids.is_empty() {
                vec![&[]]
            } else {
                ids.chunks(LOOKUP_CHUNK).collect()
            };
            let mut total = 0;
            for chunk in chunks {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO work_queue (queue, work_id, kind, payload, attempts, visible_at_ms, enqueued_at_ms)
                     SELECT queue, work_id, kind, payload, 0, ",
                );
                q.push_bind(now)
                    .push(", enqueued_at_ms FROM work_dead WHERE queue = ")
                    .push_bind(queue);
                filter(&mut q, chunk);
                q.push(" ON CONFLICT (queue, work_id) DO NOTHING");
                q.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("requeue dead work"))?;
                let mut q = sqlx::QueryBuilder::<Db>::new("DELETE FROM work_dead WHERE queue = ");
                q.push_bind(queue);
                filter(&mut q, chunk);
                total += q
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("requeue dead work"))?
                    .rows_affected();
            }
            tx.commit().await.map_err(StoreError::query("commit"))?;
            Ok(total)
        })
    }

    /// Which of `work_ids` are done (their effects committed).
    pub async fn work_done_among(&self, work_ids: &[&str]) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for chunk in work_ids.chunks(LOOKUP_CHUNK) {
            on_pool!(self, |pool, Db| {
                let mut q = sqlx::QueryBuilder::<Db>::new(
                    "SELECT work_id FROM work_done WHERE work_id IN ",
                );
                push_list(&mut q, chunk.iter().copied());
                let ids: Vec<String> = q
                    .build_query_scalar()
                    .fetch_all(pool)
                    .await
                    .map_err(StoreError::query("read done work"))?;
                done.extend(ids);
            });
        }
        Ok(done)
    }

    /// Marks work done on its own, for work whose effects are outside the
    /// store and idempotent there (work with effects in the store marks it
    /// in the same [`Batch`] instead). Returns how many were not done yet.
    pub async fn work_mark_done(&self, work_ids: &[&str]) -> Result<usize> {
        if work_ids.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        on_pool!(self, |pool, Db| {
            let mut tx = pool
                .begin_with(self.begin_write())
                .await
                .map_err(StoreError::query("begin"))?;
            let mut fresh = 0;
            for chunk in work_ids.chunks(ROWS_PER_STATEMENT) {
                let mut q =
                    sqlx::QueryBuilder::<Db>::new("INSERT INTO work_done (work_id, done_at_ms) ");
                q.push_values(chunk, |mut row, id| {
                    row.push_bind(*id).push_bind(now);
                });
                q.push(" ON CONFLICT (work_id) DO NOTHING");
                fresh += q
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("mark work done"))?
                    .rows_affected() as usize;
            }
            tx.commit().await.map_err(StoreError::query("commit"))?;
            Ok(fresh)
        })
    }

    /// Forgets done-markers older than `before_ms`. Redeliveries of work
    /// older than that are no longer recognised, so keep them longer than
    /// any item can wait in a queue (retries and dead letters included).
    pub async fn work_done_prune(&self, before_ms: i64) -> Result<u64> {
        on_pool!(self, |pool, _Db| {
            Ok(sqlx::query("DELETE FROM work_done WHERE done_at_ms < $1")
                .bind(before_ms)
                .execute(pool)
                .await
                .map_err(StoreError::query("prune done work"))?
                .rows_affected())
        })
    }
}
