//! What operators see of the work waiting in the store (`concord queue`):
//! counts per queue, dead letters with their reasons, and putting dead
//! letters back in line.
//!
//! Two kinds of queue live in the store: the webhook inbox (named
//! [`INBOX_QUEUE`]; the daemon's queue with `[queue] kind = "store"`, dead
//! events are rows with status `dead`), and the named work queues of
//! `work_queue`/`work_dead`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::types::Json;

use super::{LOOKUP_CHUNK, Pool, Result, Store, StoreError, push_list};

/// The name `concord queue` gives the webhook inbox.
pub const INBOX_QUEUE: &str = "inbox";

/// One queue's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    /// [`INBOX_QUEUE`] or a work queue's name.
    pub queue: String,
    /// Waiting and due: a worker takes them next.
    pub ready: i64,
    /// Waiting for a retry later.
    pub delayed: i64,
    /// Taken by a worker (claimed, leased).
    pub leased: i64,
    /// Given up on, with a reason: `concord queue dead`.
    pub dead: i64,
    /// Processed and kept (the inbox keeps its events; acknowledged work
    /// leaves its queue, so `None` there).
    pub processed: Option<i64>,
    /// When the oldest item still waiting or leased arrived.
    pub oldest_at: Option<DateTime<Utc>>,
}

/// The done-markers that make redelivered work a no-op (`work_done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DoneMarkers {
    pub count: i64,
    pub oldest_at: Option<DateTime<Utc>>,
}

/// A dead letter, from the inbox or a work queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadItem {
    /// [`INBOX_QUEUE`] or a work queue's name.
    pub queue: String,
    /// What `concord queue replay` takes (unique within its queue).
    pub id: i64,
    /// The work id; for inbox events the idempotency key (`system:event`).
    pub work_id: String,
    /// `webhook` for inbox events.
    pub kind: String,
    pub attempts: i64,
    /// Why it was given up on.
    pub reason: String,
    /// When it arrived (received or enqueued).
    pub received_at: Option<DateTime<Utc>>,
    /// When it went to dead letters (work queues record it; the inbox
    /// does not).
    pub dead_at: Option<DateTime<Utc>>,
    pub payload: Value,
}

fn time_of_ms(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

impl Store {
    /// Counts of the inbox (always listed first) and of every work queue
    /// with items waiting or dead, by name.
    pub async fn queue_counts(&self) -> Result<Vec<QueueCounts>> {
        let now = super::now_ms();
        let q = || StoreError::query("count queued work");
        let (inbox, work, dead) = on_pool!(self, |pool, _Db| {
            let inbox = sqlx::query(
                "SELECT
                   COUNT(*) FILTER (WHERE status = 'pending' AND next_attempt_ms <= $1) AS ready,
                   COUNT(*) FILTER (WHERE status = 'pending' AND next_attempt_ms > $1) AS delayed,
                   COUNT(*) FILTER (WHERE status = 'processing') AS leased,
                   COUNT(*) FILTER (WHERE status = 'dead') AS dead,
                   COUNT(*) FILTER (WHERE status = 'processed') AS processed,
                   MIN(received_at) FILTER (WHERE status IN ('pending', 'processing')) AS oldest
                 FROM inbox",
            )
            .bind(now)
            .fetch_one(pool)
            .await
            .map_err(q())?;
            let inbox = QueueCounts {
                queue: INBOX_QUEUE.to_owned(),
                ready: inbox.try_get("ready").map_err(q())?,
                delayed: inbox.try_get("delayed").map_err(q())?,
                leased: inbox.try_get("leased").map_err(q())?,
                dead: inbox.try_get("dead").map_err(q())?,
                processed: Some(inbox.try_get("processed").map_err(q())?),
                oldest_at: inbox.try_get("oldest").map_err(q())?,
            };
            let work = sqlx::query(
                "SELECT queue,
                   COUNT(*) FILTER (WHERE visible_at_ms <= $1) AS ready,
                   COUNT(*) FILTER (WHERE visible_at_ms > $1 AND lease_token IS NULL) AS delayed,
                   COUNT(*) FILTER (WHERE visible_at_ms > $1 AND lease_token IS NOT NULL) AS leased,
                   MIN(enqueued_at_ms) AS oldest
                 FROM work_queue GROUP BY queue",
            )
            .bind(now)
            .fetch_all(pool)
            .await
            .map_err(q())?;
            let dead = sqlx::query("SELECT queue, COUNT(*) AS n FROM work_dead GROUP BY queue")
                .fetch_all(pool)
                .await
                .map_err(q())?;
            let work = work
                .iter()
                .map(|r| {
                    Ok(QueueCounts {
                        queue: r.try_get("queue").map_err(q())?,
                        ready: r.try_get("ready").map_err(q())?,
                        delayed: r.try_get("delayed").map_err(q())?,
                        leased: r.try_get("leased").map_err(q())?,
                        dead: 0,
                        processed: None,
                        oldest_at: time_of_ms(r.try_get("oldest").map_err(q())?),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let dead = dead
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get("queue").map_err(q())?,
                        r.try_get("n").map_err(q())?,
                    ))
                })
                .collect::<Result<Vec<(String, i64)>>>()?;
            (inbox, work, dead)
        });
        let mut named: BTreeMap<String, QueueCounts> =
            work.into_iter().map(|c| (c.queue.clone(), c)).collect();
        for (queue, n) in dead {
            named
                .entry(queue.clone())
                .or_insert_with(|| QueueCounts {
                    queue,
                    ready: 0,
                    delayed: 0,
                    leased: 0,
                    dead: 0,
                    processed: None,
                    oldest_at: None,
                })
                .dead = n;
        }
        let mut all = vec![inbox];
        all.extend(named.into_values());
        Ok(all)
    }

    /// How many done-markers there are, and the oldest.
    pub async fn work_done_markers(&self) -> Result<DoneMarkers> {
        let q = || StoreError::query("count done work");
        on_pool!(self, |pool, _Db| {
            let row = sqlx::query("SELECT COUNT(*) AS n, MIN(done_at_ms) AS oldest FROM work_done")
                .fetch_one(pool)
                .await
                .map_err(q())?;
            Ok(DoneMarkers {
                count: row.try_get("n").map_err(q())?,
                oldest_at: time_of_ms(row.try_get("oldest").map_err(q())?),
            })
        })
    }

    /// Deletes up to `limit` done-markers older than `before_ms`; returns
    /// how many. In bounded steps, so a large prune never holds SQLite's
    /// write lock long enough to keep webhook intake waiting.
    pub async fn work_done_prune_some(&self, before_ms: i64, limit: u32) -> Result<u64> {
        on_pool!(self, |pool, _Db| {
            Ok(sqlx::query(
                "DELETE FROM work_done WHERE work_id IN
                   (SELECT work_id FROM work_done WHERE done_at_ms < $1 LIMIT $2)",
            )
            .bind(before_ms)
            .bind(i64::from(limit))
            .execute(pool)
            .await
            .map_err(StoreError::query("prune done work"))?
            .rows_affected())
        })
    }

    /// Deletes up to `limit` webhook events processed before `before`.
    /// Dead and unfinished events stay (an operator may still replay
    /// them). The rows are what de-duplicates a sender's retries of one
    /// event id, so the horizon (`queue.keep_done_days`) must outlast the
    /// senders' retry schedules (a day or two for Standard Webhooks
    /// senders). Returns how many went.
    pub async fn inbox_prune_some(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        on_pool!(self, |pool, _Db| {
            Ok(sqlx::query(
                "DELETE FROM inbox WHERE id IN
                   (SELECT id FROM inbox WHERE status = 'processed' AND processed_at < $1
                    ORDER BY id LIMIT $2)",
            )
            .bind(before)
            .bind(i64::from(limit))
            .execute(pool)
            .await
            .map_err(StoreError::query("prune processed webhook events"))?
            .rows_affected())
        })
    }

    /// Dead letters, oldest first: of one queue, or of the inbox and then
    /// every work queue. At most `limit` per queue kind.
    pub async fn dead_items(&self, queue: Option<&str>, limit: u32) -> Result<Vec<DeadItem>> {
        let q = || StoreError::query("read dead letters");
        let limit = i64::from(limit);
        let mut items = Vec::new();
        if queue.is_none_or(|name| name == INBOX_QUEUE) {
            on_pool!(self, |pool, _Db| {
                let rows = sqlx::query(
                    "SELECT id, idempotency_key, attempts, last_error, received_at, payload
                     FROM inbox WHERE status = 'dead' ORDER BY id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(q())?;
                for r in rows {
                    let Json(payload): Json<Value> = r.try_get("payload").map_err(q())?;
                    let reason: Option<String> = r.try_get("last_error").map_err(q())?;
                    items.push(DeadItem {
                        queue: INBOX_QUEUE.to_owned(),
                        id: r.try_get("id").map_err(q())?,
                        work_id: r.try_get("idempotency_key").map_err(q())?,
                        kind: "webhook".to_owned(),
                        attempts: r.try_get("attempts").map_err(q())?,
                        reason: reason.unwrap_or_default(),
                        received_at: r.try_get("received_at").map_err(q())?,
                        dead_at: None,
                        payload,
                    });
                }
            });
        }
        if queue != Some(INBOX_QUEUE) {
            on_pool!(self, |pool, Db| {
                let mut sql = sqlx::QueryBuilder::<Db>::new(
                    "SELECT id, queue, work_id, kind, attempts, reason, enqueued_at_ms, dead_at_ms, payload
                     FROM work_dead",
                );
                if let Some(name) = queue {
                    sql.push(" WHERE queue = ").push_bind(name);
                }
                sql.push(" ORDER BY queue, id LIMIT ").push_bind(limit);
                let rows = sql.build().fetch_all(pool).await.map_err(q())?;
                for r in rows {
                    let Json(payload): Json<Value> = r.try_get("payload").map_err(q())?;
                    items.push(DeadItem {
                        queue: r.try_get("queue").map_err(q())?,
                        id: r.try_get("id").map_err(q())?,
                        work_id: r.try_get("work_id").map_err(q())?,
                        kind: r.try_get("kind").map_err(q())?,
                        attempts: r.try_get("attempts").map_err(q())?,
                        reason: r.try_get("reason").map_err(q())?,
                        received_at: time_of_ms(r.try_get("enqueued_at_ms").map_err(q())?),
                        dead_at: time_of_ms(r.try_get("dead_at_ms").map_err(q())?),
                        payload,
                    });
                }
            });
        }
        Ok(items)
    }

    /// Puts dead letters of `queue` back in line with fresh attempts: the
    /// ids given, or all of them with `None`. Returns the ids requeued;
    /// ids that are not dead letters of `queue` are left out.
    pub async fn requeue_dead(&self, queue: &str, ids: Option<&[i64]>) -> Result<Vec<i64>> {
        if queue == INBOX_QUEUE {
            return self.inbox_requeue_dead(ids).await;
        }
        // Which of them are there, then the store queue's own requeue.
        let q = || StoreError::query("read dead letters");
        let mut found = Vec::new();
        let chunks: Vec<Option<&[i64]>> = match ids {
            None => vec![None],
            Some(ids) => ids.chunks(LOOKUP_CHUNK).map(Some).collect(),
        };
        for chunk in chunks {
            on_pool!(self, |pool, Db| {
                let mut sql =
                    sqlx::QueryBuilder::<Db>::new("SELECT id FROM work_dead WHERE queue = ");
                sql.push_bind(queue);
                if let Some(chunk) = chunk {
                    sql.push(" AND id IN ");
                    push_list(&mut sql, chunk.iter().copied());
                }
                let ids: Vec<i64> = sql
                    .build_query_scalar()
                    .fetch_all(pool)
                    .await
                    .map_err(q())?;
                found.extend(ids);
            });
        }
        if found.is_empty() {
            return Ok(found);
        }
        self.work_requeue_dead(queue, &found).await?;
        found.sort_unstable();
        Ok(found)
    }

    /// Dead inbox events back to pending, due now, with fresh attempts.
    async fn inbox_requeue_dead(&self, ids: Option<&[i64]>) -> Result<Vec<i64>> {
        let q = || StoreError::query("requeue dead inbox events");
        let chunks: Vec<Option<&[i64]>> = match ids {
            None => vec![None],
            Some(ids) => ids.chunks(LOOKUP_CHUNK).map(Some).collect(),
        };
        let mut requeued = Vec::new();
        for chunk in chunks {
            on_pool!(self, |pool, Db| {
                let mut sql = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE inbox SET status = 'pending', attempts = 0, next_attempt_ms = 0,
                       last_error = NULL, claimed_by = NULL, claimed_until_ms = 0
                     WHERE status = 'dead'",
                );
                if let Some(chunk) = chunk {
                    sql.push(" AND id IN ");
                    push_list(&mut sql, chunk.iter().copied());
                }
                sql.push(" RETURNING id");
                let ids: Vec<i64> = sql
                    .build_query_scalar()
                    .fetch_all(pool)
                    .await
                    .map_err(q())?;
                requeued.extend(ids);
            });
        }
        requeued.sort_unstable();
        Ok(requeued)
    }
}
