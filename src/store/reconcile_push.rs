//! Payments for allocations: the canonical payment record a confirmed or
//! manual allocation becomes, its outbox entry to the ERP, and what became
//! of it — written in the same transaction as the allocation's change.
//!
//! `allocation_payments` keeps one row per payment record: the allocation
//! it stands for, the system it goes to, the idempotency key of its outbox
//! entry, and whether it still stands (`active`), was cancelled before it
//! reached the ERP (`cancelled`), or was reversed in the ERP by a person
//! (`reversed`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;

use super::dialect::Dialect;
use super::{
    AllocationChangeError, AllocationStatus, NewAllocation, OutboxWrite, Pool, Result, Store,
    StoreError, StoredAllocation, parse_id,
};
use crate::model::{CanonicalId, EntityKind, Money};

/// What became of a payment concord wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// It stands: queued for the ERP or delivered (see its delivery).
    Active,
    /// Voided before it reached the ERP; its outbox entry was cancelled.
    Cancelled,
    /// A person reversed it in the ERP, then undid the allocation.
    Reversed,
}

impl PaymentStatus {
    /// Name as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Active => "active",
            PaymentStatus::Cancelled => "cancelled",
            PaymentStatus::Reversed => "reversed",
        }
    }

    fn parse(s: &str) -> Option<PaymentStatus> {
        Some(match s {
            "active" => PaymentStatus::Active,
            "cancelled" => PaymentStatus::Cancelled,
            "reversed" => PaymentStatus::Reversed,
            _ => return None,
        })
    }
}

impl std::fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payment's outbox entry, as it stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PaymentDelivery {
    /// The outbox entry's id (what `replay dead-letters` takes).
    pub outbox_id: i64,
    /// pending, delivered, dead, superseded or cancelled.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The ERP's id of the payment, once it has one.
    pub external_id: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A payment concord wrote for an allocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AllocationPayment {
    /// Canonical id of the payment record.
    pub payment_id: CanonicalId,
    /// The allocation it stands for.
    pub allocation_id: i64,
    /// The `[systems]` instance it goes to.
    pub system: String,
    /// Whether it still stands.
    pub status: PaymentStatus,
    /// Who made it (confirmed or allocated).
    pub actor: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Who cancelled or reversed it, when and why.
    pub closed_by: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    pub close_note: Option<String>,
    /// Its outbox entry (absent only if the entry was removed).
    pub delivery: Option<PaymentDelivery>,
}

impl AllocationPayment {
    /// The ERP has (or may have) it: delivered, found by its key, or sent
    /// without a definite answer. Only a payment never sent, or refused by
    /// the ERP, or that could not be rendered, is known not to be there.
    pub fn may_be_at_erp(&self) -> bool {
        match &self.delivery {
            None => false,
            Some(d) => !cancellable(d),
        }
    }
}

/// The outbox entry of a payment can be cancelled without leaving the ERP
/// paid: never attempted, or given up on with an answer that says the ERP
/// does not have it (refused by it, or never rendered). Must agree with
/// [`CANCELLABLE_SQL`].
fn cancellable(d: &PaymentDelivery) -> bool {
    let answered_no = d.last_error.as_deref().is_some_and(|e| {
        e.starts_with("rejected by ")
            || e.starts_with("mapping ")
            || e.starts_with("the record no longer exists")
    });
    d.external_id.is_none()
        && match d.status.as_str() {
            "pending" => d.attempts == 0,
            "dead" => answered_no,
            _ => false,
        }
}

/// [`cancellable`] as a condition on an `outbox` row.
const CANCELLABLE_SQL: &str = "external_id IS NULL AND (
       (status = 'pending' AND attempts = 0)
    OR (status = 'dead' AND (last_error LIKE 'rejected by %' OR last_error LIKE 'mapping %'
                             OR last_error LIKE 'the record no longer exists%')))";

/// A payment record to write for an allocation.
#[derive(Debug, Clone)]
pub struct PaymentWrite {
    /// Its canonical id (derived from the allocation).
    pub id: CanonicalId,
    /// The canonical payment, as JSON.
    pub data: Value,
    /// Its amount, indexed like every record's principal amount.
    pub amount: Money,
    /// The `[systems]` instance to push it to.
    pub system: String,
}

/// Builds the payment of an allocation once its id and the payment's
/// generation (1 for its first payment, 2 after one was voided …) are known
/// inside the transaction.
pub type PaymentBuilder<'a> =
    &'a (dyn Fn(i64, i64) -> std::result::Result<PaymentWrite, String> + Send + Sync);

/// What an allocation's change does to its payment.
#[derive(Clone, Copy, Default)]
pub enum PaymentEffect<'a> {
    /// Nothing.
    #[default]
    None,
    /// Write a payment record and queue it for the ERP.
    Write(PaymentBuilder<'a>),
    /// Void the payment that stands for the allocation, if there is one: a
    /// new version of the record without allocations, and its outbox entry
    /// cancelled. Refused when the ERP has or may have the payment, unless
    /// `reversed` (a person reversed it there).
    Void { reversed: bool },
}

/// A change of an allocation's status, with what it does to its payment.
pub struct AllocationDecision<'a> {
    pub id: i64,
    /// In words, for refusals (`confirm`).
    pub action: &'static str,
    /// The statuses the change applies to.
    pub from: &'a [AllocationStatus],
    /// `from` in words.
    pub allowed: &'static str,
    pub to: AllocationStatus,
    pub actor: &'a str,
    pub note: Option<&'a str>,
    /// Payer aliases to learn for the invoice's customer.
    pub learn: &'a [(String, String)],
    pub payment: PaymentEffect<'a>,
    /// When set, the applied (auto, confirmed, manual) allocations of this
    /// receipt and these invoices must be exactly `applied`, as the caller
    /// saw them when it checked the amounts; otherwise the change is
    /// refused as [`AllocationChangeError::Changed`].
    pub expect: Option<&'a AppliedSnapshot>,
}

/// The applied allocations a caller's amount checks were based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedSnapshot {
    pub transaction_id: String,
    pub invoice_ids: Vec<String>,
    /// Ids of the applied allocations of the transaction or the invoices,
    /// ascending.
    pub applied: Vec<i64>,
}

/// What a decision did to payments.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PaymentOutcome {
    /// The payment written and queued.
    pub written: Option<CanonicalId>,
    /// The payment voided, and whether its outbox entry was cancelled (it
    /// had not reached the ERP) or it was reversed there.
    pub voided: Option<(CanonicalId, PaymentStatus)>,
}

macro_rules! payment_columns {
    () => {
        "p.payment_id, p.allocation_id, p.system, p.status AS payment_status, p.actor, p.created_at,
         p.closed_by, p.closed_at, p.close_note,
         o.id AS outbox_id, o.status AS outbox_status, o.attempts, o.last_error, o.external_id, o.delivered_at"
    };
}

fn payment_from_row<R: sqlx::Row>(row: &R) -> Result<AllocationPayment>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> DateTime<Utc>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<DateTime<Utc>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let q = || StoreError::query("read allocation payments");
    let id: String = row.try_get("payment_id").map_err(q())?;
    let status: String = row.try_get("payment_status").map_err(q())?;
    let outbox_id: Option<i64> = row.try_get("outbox_id").map_err(q())?;
    let delivery = match outbox_id {
        None => None,
        Some(outbox_id) => Some(PaymentDelivery {
            outbox_id,
            status: row.try_get("outbox_status").map_err(q())?,
            attempts: row.try_get("attempts").map_err(q())?,
            last_error: row.try_get("last_error").map_err(q())?,
            external_id: row.try_get("external_id").map_err(q())?,
            delivered_at: row.try_get("delivered_at").map_err(q())?,
        }),
    };
    Ok(AllocationPayment {
        payment_id: parse_id("allocation_payments", &id)?,
        allocation_id: row.try_get("allocation_id").map_err(q())?,
        system: row.try_get("system").map_err(q())?,
        status: PaymentStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
            table: "allocation_payments",
            column: "status",
            reason: format!("unknown status {status:?}"),
        })?,
        actor: row.try_get("actor").map_err(q())?,
        created_at: row.try_get("created_at").map_err(q())?,
        closed_by: row.try_get("closed_by").map_err(q())?,
        closed_at: row.try_get("closed_at").map_err(q())?,
        close_note: row.try_get("close_note").map_err(q())?,
        delivery,
    })
}

/// Locks the records an amount check was about (the first write of the
/// transaction: SQLite's write lock; row locks on PostgreSQL), so that
/// allocations of the same receipt or invoice decided at the same time
/// are checked one after the other.
macro_rules! lock_records {
    ($tx:expr, $snapshot:expr) => {{
        let s: &AppliedSnapshot = $snapshot;
        let targets = std::iter::once((EntityKind::BankTransaction, &s.transaction_id))
            .chain(s.invoice_ids.iter().map(|i| (EntityKind::Invoice, i)));
        for (entity, id) in targets {
            sqlx::query("UPDATE records SET version = version WHERE entity = $1 AND id = $2")
                .bind(entity.as_str())
                .bind(id.as_str())
                .execute(&mut *$tx)
                .await
                .map_err(StoreError::query("lock records"))?;
        }
    }};
}

/// Refuses when the applied allocations of the snapshot's receipt and
/// invoices are no longer the ones the caller checked against.
macro_rules! check_snapshot {
    ($db:ty, $tx:expr, $snapshot:expr) => {{
        let s: &AppliedSnapshot = $snapshot;
        let mut q = sqlx::QueryBuilder::<$db>::new(
            "SELECT id FROM allocations WHERE status IN ('auto', 'confirmed', 'manual') AND (transaction_id = ",
        );
        q.push_bind(s.transaction_id.as_str());
        if !s.invoice_ids.is_empty() {
            q.push(" OR invoice_id IN ");
            super::push_list(&mut q, s.invoice_ids.iter().map(String::as_str));
        }
        q.push(") ORDER BY id");
        let now: Vec<i64> = q
            .build_query_scalar()
            .fetch_all(&mut *$tx)
            .await
            .map_err(StoreError::query("read applied allocations"))?;
        if now != s.applied {
            return Err(AllocationChangeError::Changed {
                what: format!("receipt {} and its invoices", s.transaction_id),
            });
        }
    }};
}

/// Writes the payment of allocation `$allocation` and queues it, in `$tx`.
macro_rules! write_payment {
    ($db:ty, $tx:expr, $build:expr, $allocation:expr, $actor:expr, $now:expr) => {{
        let allocation: i64 = $allocation;
        let generation: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM allocation_payments WHERE allocation_id = $1",
        )
        .bind(allocation)
        .fetch_one(&mut *$tx)
        .await
        .map_err(StoreError::query("count allocation payments"))?;
        let p: PaymentWrite = ($build)(allocation, generation + 1)
            .map_err(AllocationChangeError::Refused)?;
        let hash = crate::model::content_hash(&p.data);
        let inserted = sqlx::query(
            "INSERT INTO records (entity, id, version, content_hash, amount, currency, created_at, updated_at)
             VALUES ($1, $2, 1, $3, $4, $5, $6, $6) ON CONFLICT (entity, id) DO NOTHING",
        )
        .bind(EntityKind::Payment.as_str())
        .bind(p.id.as_str())
        .bind(&hash)
        .bind(<$db>::encode_amount(p.amount.amount()))
        .bind(p.amount.currency().as_str())
        .bind($now)
        .execute(&mut *$tx)
        .await
        .map_err(StoreError::query("write payment"))?
        .rows_affected();
        if inserted != 1 {
            return Err(AllocationChangeError::Changed {
                what: format!("payment {} of allocation {allocation} (it exists already)", p.id),
            });
        }
        sqlx::query(
            "INSERT INTO record_versions (entity, id, version, data, content_hash, source_system, cause, actor, event_id, mapping_version, at)
             VALUES ($1, $2, 1, $3, $4, NULL, 'operator', $5, $6, NULL, $7)",
        )
        .bind(EntityKind::Payment.as_str())
        .bind(p.id.as_str())
        .bind(Json(&p.data))
        .bind(&hash)
        .bind($actor)
        .bind(format!("allocation:{allocation}"))
        .bind($now)
        .execute(&mut *$tx)
        .await
        .map_err(StoreError::query("write payment version"))?;
        let entry = OutboxWrite {
            entity: EntityKind::Payment,
            canonical_id: p.id.clone(),
            version: 1,
            target_system: p.system.clone(),
        };
        let key = entry.idempotency_key();
        sqlx::query(
            "INSERT INTO outbox (idempotency_key, entity, canonical_id, version, target_system, next_attempt_at, created_at, updated_at)
             VALUES ($1, $2, $3, 1, $4, $5, $5, $5) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&key)
        .bind(EntityKind::Payment.as_str())
        .bind(p.id.as_str())
        .bind(&p.system)
        .bind($now)
        .execute(&mut *$tx)
        .await
        .map_err(StoreError::query("queue payment"))?;
        sqlx::query(
            "INSERT INTO allocation_payments (payment_id, allocation_id, system, outbox_key, status, actor, created_at)
             VALUES ($1, $2, $3, $4, 'active', $5, $6)",
        )
        .bind(p.id.as_str())
        .bind(allocation)
        .bind(&p.system)
        .bind(&key)
        .bind($actor)
        .bind($now)
        .execute(&mut *$tx)
        .await
        .map_err(StoreError::query("record allocation payment"))?;
        p.id
    }};
}

impl Store {
    /// Payments written for allocations (all when `allocation_ids` is
    /// empty), with their deliveries, oldest first.
    pub async fn allocation_payments(
        &self,
        allocation_ids: &[i64],
    ) -> Result<Vec<AllocationPayment>> {
        on_pool!(self, |pool, Db| {
            let mut q = sqlx::QueryBuilder::<Db>::new(concat!(
                "SELECT ",
                payment_columns!(),
                " FROM allocation_payments p LEFT JOIN outbox o ON o.idempotency_key = p.outbox_key"
            ));
            if !allocation_ids.is_empty() {
                q.push(" WHERE p.allocation_id IN ");
                super::push_list(&mut q, allocation_ids.iter().copied());
            }
            q.push(" ORDER BY p.created_at, p.payment_id");
            let rows = q
                .build()
                .fetch_all(pool)
                .await
                .map_err(StoreError::query("read allocation payments"))?;
            rows.iter().map(payment_from_row).collect()
        })
    }

    /// Changes an allocation's status if it is one of `from`, with its
    /// history row, the payer aliases learnt or forgotten, and what the
    /// change does to its payment — all in one transaction.
    pub async fn decide_allocation(
        &self,
        d: &AllocationDecision<'_>,
    ) -> std::result::Result<(StoredAllocation, PaymentOutcome), AllocationChangeError> {
        let now = Utc::now();
        let current = self
            .allocation(d.id)
            .await?
            .ok_or(AllocationChangeError::NotFound(d.id))?;
        let status = current.allocation.status;
        let wrong = || AllocationChangeError::WrongStatus {
            id: d.id,
            status,
            action: d.action,
            allowed: d.allowed,
        };
        if !d.from.contains(&status) {
            return Err(wrong());
        }
        let mut outcome = PaymentOutcome::default();
        on_pool!(self, |pool, Db| {
            let mut tx = pool
                .begin()
                .await
                .map_err(StoreError::query("begin allocation change"))?;
            if let Some(s) = d.expect {
                lock_records!(tx, s);
                check_snapshot!(Db, tx, s);
            }
            let changed = sqlx::query(
                "UPDATE allocations SET status = $1, actor = $2, updated_at = $3 WHERE id = $4 AND status = $5",
            )
            .bind(d.to.as_str())
            .bind(d.actor)
            .bind(now)
            .bind(d.id)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query("change allocation"))?
            .rows_affected();
            if changed == 0 {
                // Someone else changed it meanwhile.
                return Err(wrong());
            }
            sqlx::query(
                "INSERT INTO allocation_history (allocation_id, from_status, to_status, actor, note, at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(d.id)
            .bind(status.as_str())
            .bind(d.to.as_str())
            .bind(d.actor)
            .bind(d.note)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query("write allocation history"))?;
            if status == AllocationStatus::Confirmed && d.to != AllocationStatus::Confirmed {
                sqlx::query("DELETE FROM payer_aliases WHERE allocation_id = $1")
                    .bind(d.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("forget payer aliases"))?;
            }
            if let Some(customer) = &current.allocation.customer_id {
                for (kind, value) in d.learn {
                    sqlx::query(
                        "INSERT INTO payer_aliases (customer_id, kind, value, allocation_id, actor, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (customer_id, kind, value) DO NOTHING",
                    )
                    .bind(customer)
                    .bind(kind)
                    .bind(value)
                    .bind(d.id)
                    .bind(d.actor)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("learn payer alias"))?;
                }
            }
            match d.payment {
                PaymentEffect::None => {}
                PaymentEffect::Write(build) => {
                    outcome.written = Some(write_payment!(Db, tx, build, d.id, d.actor, now));
                }
                PaymentEffect::Void { reversed } => {
                    let standing: Option<(String, String, String)> = sqlx::query_as(
                        "SELECT payment_id, system, outbox_key FROM allocation_payments
                         WHERE allocation_id = $1 AND status = 'active'",
                    )
                    .bind(d.id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::query("read allocation payment"))?;
                    if let Some((payment, system, key)) = standing {
                        // Cancelled only if it cannot have reached the ERP.
                        let cancelled = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "UPDATE outbox SET status = 'cancelled', updated_at = $2,
                               last_error = COALESCE(last_error || '; ', '') || $3
                             WHERE idempotency_key = $1 AND {CANCELLABLE_SQL}"
                        )))
                        .bind(&key)
                        .bind(now)
                        .bind(format!(
                            "cancelled: allocation {} undone by {}",
                            d.id, d.actor
                        ))
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::query("cancel payment delivery"))?
                        .rows_affected()
                            == 1;
                        let to = if cancelled {
                            PaymentStatus::Cancelled
                        } else if reversed {
                            PaymentStatus::Reversed
                        } else {
                            let row: Option<(String, i64, Option<String>, Option<String>)> =
                                sqlx::query_as(
                                    "SELECT status, attempts, last_error, external_id FROM outbox WHERE idempotency_key = $1",
                                )
                                .bind(&key)
                                .fetch_optional(&mut *tx)
                                .await
                                .map_err(StoreError::query("read payment delivery"))?;
                            let detail = match row {
                                Some((s, _, _, Some(ext))) if s == "delivered" => {
                                    format!("it was delivered as {ext}")
                                }
                                Some((_, _, _, Some(ext))) => format!("it is there as {ext}"),
                                Some((_, attempts, error, None)) => format!(
                                    "it was sent {attempts} time(s) without a definite answer{}",
                                    error.map(|e| format!(" (last: {e})")).unwrap_or_default()
                                ),
                                None => "its delivery cannot be found".to_owned(),
                            };
                            return Err(AllocationChangeError::PaymentAtErp {
                                id: d.id,
                                payment,
                                system,
                                detail,
                            });
                        };
                        // The record stops paying anything: a new version
                        // without allocations, by the operator.
                        let head: Option<(i64, Json<Value>)> = sqlx::query_as(
                            "SELECT r.version, v.data FROM records r JOIN record_versions v
                               ON v.entity = r.entity AND v.id = r.id AND v.version = r.version
                             WHERE r.entity = $1 AND r.id = $2",
                        )
                        .bind(EntityKind::Payment.as_str())
                        .bind(&payment)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(StoreError::query("read payment"))?;
                        if let Some((version, Json(mut data))) = head {
                            if let Value::Object(m) = &mut data {
                                m.insert("allocations".into(), Value::Array(Vec::new()));
                                m.insert("status".into(), Value::String(to.as_str().into()));
                            }
                            let hash = crate::model::content_hash(&data);
                            let voided = sqlx::query(
                                "UPDATE records SET version = $3, content_hash = $4, updated_at = $5
                                 WHERE entity = $1 AND id = $2 AND version = $6",
                            )
                            .bind(EntityKind::Payment.as_str())
                            .bind(&payment)
                            .bind(version + 1)
                            .bind(&hash)
                            .bind(now)
                            .bind(version)
                            .execute(&mut *tx)
                            .await
                            .map_err(StoreError::query("void payment"))?
                            .rows_affected();
                            if voided != 1 {
                                return Err(AllocationChangeError::Changed {
                                    what: format!("payment {payment}"),
                                });
                            }
                            sqlx::query(
                                "INSERT INTO record_versions (entity, id, version, data, content_hash, source_system, cause, actor, event_id, mapping_version, at)
                                 VALUES ($1, $2, $3, $4, $5, NULL, 'operator', $6, $7, NULL, $8)",
                            )
                            .bind(EntityKind::Payment.as_str())
                            .bind(&payment)
                            .bind(version + 1)
                            .bind(Json(&data))
                            .bind(&hash)
                            .bind(d.actor)
                            .bind(format!("allocation:{}", d.id))
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(StoreError::query("void payment version"))?;
                        }
                        sqlx::query(
                            "UPDATE allocation_payments SET status = $2, closed_by = $3, closed_at = $4, close_note = $5
                             WHERE payment_id = $1",
                        )
                        .bind(&payment)
                        .bind(to.as_str())
                        .bind(d.actor)
                        .bind(now)
                        .bind(d.note)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::query("close allocation payment"))?;
                        outcome.voided = Some((parse_id("allocation_payments", &payment)?, to));
                    }
                }
            }
            tx.commit()
                .await
                .map_err(StoreError::query("commit allocation change"))?;
            Ok::<_, AllocationChangeError>(())
        })?;
        let mut out = current;
        out.allocation.status = d.to;
        out.actor = Some(d.actor.to_owned());
        out.updated_at = now;
        Ok((out, outcome))
    }

    /// Writes an allocation a person made (status manual), with its history
    /// row and its payment, in one transaction, after checking that the
    /// applied allocations of its receipt and invoice are still `expect`.
    pub async fn add_manual_allocation(
        &self,
        allocation: &NewAllocation,
        actor: &str,
        note: Option<&str>,
        expect: &AppliedSnapshot,
        payment: PaymentEffect<'_>,
    ) -> std::result::Result<(StoredAllocation, PaymentOutcome), AllocationChangeError> {
        let now = Utc::now();
        let mut outcome = PaymentOutcome::default();
        let id = on_pool!(self, |pool, Db| {
            let mut tx = pool
                .begin()
                .await
                .map_err(StoreError::query("begin manual allocation"))?;
            lock_records!(tx, expect);
            check_snapshot!(Db, tx, expect);
            let a = allocation;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO allocations (transaction_id, invoice_id, invoice_number, customer_id, amount, currency, write_off, status, confidence, stage, reasons, run_id, actor, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12, $13, $13) RETURNING id",
            )
            .bind(&a.transaction_id)
            .bind(&a.invoice_id)
            .bind(&a.invoice_number)
            .bind(&a.customer_id)
            .bind(<Db>::encode_amount(a.amount))
            .bind(a.currency.as_str())
            .bind(a.write_off.map(<Db>::encode_amount))
            .bind(AllocationStatus::Manual.as_str())
            .bind(a.confidence)
            .bind(&a.stage)
            .bind(Json(&a.reasons))
            .bind(actor)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::query("write allocation"))?;
            sqlx::query(
                "INSERT INTO allocation_history (allocation_id, from_status, to_status, actor, note, at)
                 VALUES ($1, NULL, 'manual', $2, $3, $4)",
            )
            .bind(id)
            .bind(actor)
            .bind(note)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query("write allocation history"))?;
            if let PaymentEffect::Write(build) = payment {
                outcome.written = Some(write_payment!(Db, tx, build, id, actor, now));
            }
            tx.commit()
                .await
                .map_err(StoreError::query("commit manual allocation"))?;
            Ok::<_, AllocationChangeError>(id)
        })?;
        let stored = self
            .allocation(id)
            .await?
            .ok_or(AllocationChangeError::NotFound(id))?;
        Ok((stored, outcome))
    }
}
