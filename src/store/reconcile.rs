//! Reconciliation state: allocations of bank transactions to invoices,
//! their history, and payer aliases learnt from confirmed matches.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::types::Json;

use super::dialect::Dialect;
use super::{Pool, Result, Store, StoreError, StoredRecord, decode_money, parse_id};
use crate::model::{Currency, EntityKind};

/// Where an allocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationStatus {
    /// Matched without review by a run.
    Auto,
    /// Proposed by a run; waits for a person.
    Suggested,
    /// Accepted by a person.
    Confirmed,
    /// Refused by a person: never proposed again for this transaction.
    Rejected,
    /// Made by a person.
    Manual,
    /// An automatic match a person took back: never made again.
    Undone,
}

impl AllocationStatus {
    /// Name as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            AllocationStatus::Auto => "auto",
            AllocationStatus::Suggested => "suggested",
            AllocationStatus::Confirmed => "confirmed",
            AllocationStatus::Rejected => "rejected",
            AllocationStatus::Manual => "manual",
            AllocationStatus::Undone => "undone",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<AllocationStatus> {
        Some(match s {
            "auto" => AllocationStatus::Auto,
            "suggested" => AllocationStatus::Suggested,
            "confirmed" => AllocationStatus::Confirmed,
            "rejected" => AllocationStatus::Rejected,
            "manual" => AllocationStatus::Manual,
            "undone" => AllocationStatus::Undone,
            _ => return None,
        })
    }

    /// Decided by a person: a run never changes it.
    pub const fn is_locked(self) -> bool {
        matches!(
            self,
            AllocationStatus::Confirmed
                | AllocationStatus::Manual
                | AllocationStatus::Rejected
                | AllocationStatus::Undone
        )
    }

    /// Counts against the invoice's open amount.
    pub const fn is_applied(self) -> bool {
        matches!(
            self,
            AllocationStatus::Auto | AllocationStatus::Confirmed | AllocationStatus::Manual
        )
    }
}

impl std::fmt::Display for AllocationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An allocation to write.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewAllocation {
    /// Canonical id of the bank transaction.
    pub transaction_id: String,
    /// Canonical id of the invoice.
    pub invoice_id: String,
    /// Its business number.
    pub invoice_number: String,
    /// Canonical id of the invoice's customer.
    pub customer_id: Option<String>,
    /// Amount applied.
    pub amount: Decimal,
    /// Currency of the amount.
    pub currency: Currency,
    /// Shortfall suggested for write-off on this invoice.
    pub write_off: Option<Decimal>,
    /// Auto, suggested or manual.
    pub status: AllocationStatus,
    /// Confidence in [0, 1] (1 for manual).
    pub confidence: f64,
    /// Stage of the match.
    pub stage: Option<String>,
    /// Why, in words.
    pub reasons: Vec<String>,
}

/// A stored allocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredAllocation {
    /// Its id (what `reconcile confirm ID` takes).
    pub id: i64,
    /// What was written.
    #[serde(flatten)]
    pub allocation: NewAllocation,
    /// The run that made it, if any.
    pub run_id: Option<String>,
    /// Who last changed it.
    pub actor: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One change of an allocation's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AllocationChange {
    /// Status before (none when made).
    pub from_status: Option<String>,
    /// Status after.
    pub to_status: String,
    /// Who.
    pub actor: String,
    /// Why.
    pub note: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// An account or name a customer was seen paying under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayerAlias {
    /// Canonical id of the customer.
    pub customer_id: String,
    /// `account` or `name`.
    pub kind: String,
    /// The account or name.
    pub value: String,
}

/// Why a status change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AllocationChangeError {
    /// No such allocation.
    #[error("no allocation {0}")]
    NotFound(i64),
    /// The change does not apply to the current status.
    #[error("allocation {id} is {status}; {action} applies to {allowed}")]
    WrongStatus {
        id: i64,
        status: AllocationStatus,
        action: &'static str,
        allowed: &'static str,
    },
    /// The allocation's payment is, or may be, at the ERP: undoing the
    /// allocation alone would leave the ERP showing the invoice paid.
    #[error(
        "allocation {id} was pushed to {system} as payment {payment}: {detail}. Undoing it here would leave {system} showing the invoice paid: reverse the payment in {system} first (or make sure it is not there), then run `concord reconcile undo {id} --payment-reversed`"
    )]
    PaymentAtErp {
        id: i64,
        payment: String,
        system: String,
        detail: String,
    },
    /// What the change was checked against changed meanwhile.
    #[error(
        "{what} changed meanwhile: look again (`concord reconcile list --status all`) and retry"
    )]
    Changed { what: String },
    /// A check refused the change; the message says why.
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

macro_rules! allocation_columns {
    () => {
        "id, transaction_id, invoice_id, invoice_number, customer_id, amount, currency, write_off, status, confidence, stage, reasons, run_id, actor, created_at, updated_at"
    };
}

macro_rules! allocation_from_row {
    ($db:ty, $row:expr) => {{
        let row = $row;
        let q = || StoreError::query("read allocation");
        let status: String = row.try_get("status").map_err(q())?;
        let amount = decode_money::<$db>(
            "allocations",
            Some(row.try_get("amount").map_err(q())?),
            Some(row.try_get("currency").map_err(q())?),
        )?
        .ok_or_else(|| StoreError::Corrupt {
            table: "allocations",
            column: "amount",
            reason: "allocation without amount".into(),
        })?;
        let write_off: Option<<$db as Dialect>::Amount> = row.try_get("write_off").map_err(q())?;
        let write_off = match write_off {
            None => None,
            Some(w) => Some(
                <$db>::decode_amount(w).map_err(|reason| StoreError::Corrupt {
                    table: "allocations",
                    column: "write_off",
                    reason,
                })?,
            ),
        };
        let Json(reasons): Json<Vec<String>> = row.try_get("reasons").map_err(q())?;
        Ok::<_, StoreError>(StoredAllocation {
            id: row.try_get("id").map_err(q())?,
            allocation: NewAllocation {
                transaction_id: row.try_get("transaction_id").map_err(q())?,
                invoice_id: row.try_get("invoice_id").map_err(q())?,
                invoice_number: row.try_get("invoice_number").map_err(q())?,
                customer_id: row.try_get("customer_id").map_err(q())?,
                amount: amount.amount(),
                currency: amount.currency(),
                write_off,
                status: AllocationStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
                    table: "allocations",
                    column: "status",
                    reason: format!("unknown status {status:?}"),
                })?,
                confidence: row.try_get("confidence").map_err(q())?,
                stage: row.try_get("stage").map_err(q())?,
                reasons,
            },
            run_id: row.try_get("run_id").map_err(q())?,
            actor: row.try_get("actor").map_err(q())?,
            created_at: row.try_get("created_at").map_err(q())?,
            updated_at: row.try_get("updated_at").map_err(q())?,
        })
    }};
}

macro_rules! insert_history {
    ($executor:expr, $id:expr, $from:expr, $to:expr, $actor:expr, $note:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO allocation_history (allocation_id, from_status, to_status, actor, note, at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($id)
        .bind($from)
        .bind($to)
        .bind($actor)
        .bind($note)
        .bind($now)
        .execute($executor)
        .await
        .map_err(StoreError::query("write allocation history"))
    };
}

impl Store {
    /// The current version of every record of an entity, with its data.
    pub async fn records_of(&self, entity: EntityKind) -> Result<Vec<StoredRecord>> {
        on_pool!(self, |pool, Db| {
            let rows = sqlx::query(
                "SELECT r.id, r.version, r.content_hash, r.amount, r.currency, r.created_at, r.updated_at, v.data, v.source_system
                 FROM records r JOIN record_versions v
                   ON v.entity = r.entity AND v.id = r.id AND v.version = r.version
                 WHERE r.entity = $1 ORDER BY r.id",
            )
            .bind(entity.as_str())
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read records"))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let q = || StoreError::query("read records");
                let id: String = row.try_get("id").map_err(q())?;
                let Json(data): Json<Value> = row.try_get("data").map_err(q())?;
                out.push(StoredRecord {
                    entity,
                    id: parse_id("records", &id)?,
                    version: row.try_get("version").map_err(q())?,
                    content_hash: row.try_get("content_hash").map_err(q())?,
                    amount: decode_money::<Db>(
                        "records",
                        row.try_get("amount").map_err(q())?,
                        row.try_get("currency").map_err(q())?,
                    )?,
                    data,
                    source_system: row.try_get("source_system").map_err(q())?,
                    created_at: row.try_get("created_at").map_err(q())?,
                    updated_at: row.try_get("updated_at").map_err(q())?,
                });
            }
            Ok(out)
        })
    }

    /// Allocations with one of `statuses` (all when empty), oldest first.
    pub async fn allocations(
        &self,
        statuses: &[AllocationStatus],
    ) -> Result<Vec<StoredAllocation>> {
        on_pool!(self, |pool, Db| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                allocation_columns!(),
                " FROM allocations ORDER BY id"
            ))
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read allocations"))?;
            let mut out = Vec::new();
            for row in &rows {
                let a = allocation_from_row!(Db, row)?;
                if statuses.is_empty() || statuses.contains(&a.allocation.status) {
                    out.push(a);
                }
            }
            Ok(out)
        })
    }

    /// One allocation.
    pub async fn allocation(&self, id: i64) -> Result<Option<StoredAllocation>> {
        on_pool!(self, |pool, Db| {
            let row = sqlx::query(concat!(
                "SELECT ",
                allocation_columns!(),
                " FROM allocations WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::query("read allocation"))?;
            match row {
                None => Ok(None),
                Some(row) => Ok(Some(allocation_from_row!(Db, &row)?)),
            }
        })
    }

    /// The status changes of an allocation, oldest first.
    pub async fn allocation_history(&self, id: i64) -> Result<Vec<AllocationChange>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(
                "SELECT from_status, to_status, actor, note, at FROM allocation_history
                 WHERE allocation_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read allocation history"))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let q = || StoreError::query("read allocation history");
                out.push(AllocationChange {
                    from_status: row.try_get("from_status").map_err(q())?,
                    to_status: row.try_get("to_status").map_err(q())?,
                    actor: row.try_get("actor").map_err(q())?,
                    note: row.try_get("note").map_err(q())?,
                    at: row.try_get("at").map_err(q())?,
                });
            }
            Ok(out)
        })
    }

    /// Payer aliases learnt from confirmed matches.
    pub async fn payer_aliases(&self) -> Result<Vec<PayerAlias>> {
        on_pool!(self, |pool, _Db| {
            let rows = sqlx::query(
                "SELECT customer_id, kind, value FROM payer_aliases ORDER BY customer_id, kind, value",
            )
            .fetch_all(pool)
            .await
            .map_err(StoreError::query("read payer aliases"))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let q = || StoreError::query("read payer aliases");
                out.push(PayerAlias {
                    customer_id: row.try_get("customer_id").map_err(q())?,
                    kind: row.try_get("kind").map_err(q())?,
                    value: row.try_get("value").map_err(q())?,
                });
            }
            Ok(out)
        })
    }

    /// Applies a run's outcome in one transaction: the automatic and
    /// suggested allocations in `retire` are deleted (their history says
    /// why), `add` are written. Locked allocations are never touched: a row
    /// of `retire` that is no longer auto or suggested is left alone.
    /// Returns the ids written.
    pub async fn apply_reconciliation(
        &self,
        run_id: &str,
        actor: &str,
        retire: &[i64],
        add: &[NewAllocation],
    ) -> Result<Vec<i64>> {
        let now = Utc::now();
        on_pool!(self, |pool, Db| {
            let mut tx = pool
                .begin()
                .await
                .map_err(StoreError::query("begin reconciliation"))?;
            for id in retire {
                let gone = sqlx::query(
                    "DELETE FROM allocations WHERE id = $1 AND status IN ('auto', 'suggested') RETURNING status",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::query("retire allocation"))?;
                if let Some(row) = gone {
                    let from: String = row
                        .try_get("status")
                        .map_err(StoreError::query("retire allocation"))?;
                    insert_history!(
                        &mut *tx,
                        id,
                        Some(from),
                        "retired",
                        actor,
                        Some(format!("run {run_id} found a different match")),
                        now
                    )?;
                }
            }
            let mut ids = Vec::with_capacity(add.len());
            for a in add {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO allocations (transaction_id, invoice_id, invoice_number, customer_id, amount, currency, write_off, status, confidence, stage, reasons, run_id, actor, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) RETURNING id",
                )
                .bind(&a.transaction_id)
                .bind(&a.invoice_id)
                .bind(&a.invoice_number)
                .bind(&a.customer_id)
                .bind(<Db>::encode_amount(a.amount))
                .bind(a.currency.as_str())
                .bind(a.write_off.map(<Db>::encode_amount))
                .bind(a.status.as_str())
                .bind(a.confidence)
                .bind(&a.stage)
                .bind(Json(&a.reasons))
                .bind(run_id)
                .bind(actor)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::query("write allocation"))?;
                insert_history!(
                    &mut *tx,
                    id,
                    None::<String>,
                    a.status.as_str(),
                    actor,
                    Some(format!("run {run_id}")),
                    now
                )?;
                ids.push(id);
            }
            tx.commit()
                .await
                .map_err(StoreError::query("commit reconciliation"))?;
            Ok(ids)
        })
    }

    /// Changes an allocation's status if it is one of `from`, with the
    /// history row, in one transaction. Confirming records the payer's
    /// account and name as aliases of the invoice's customer (`learn`);
    /// taking a confirmation back forgets the aliases it taught.
    #[allow(clippy::too_many_arguments)]
    pub async fn change_allocation(
        &self,
        id: i64,
        action: &'static str,
        from: &[AllocationStatus],
        allowed: &'static str,
        to: AllocationStatus,
        actor: &str,
        note: Option<&str>,
        learn: &[(String, String)],
    ) -> std::result::Result<StoredAllocation, AllocationChangeError> {
        let (done, _) = self
            .decide_allocation(&super::AllocationDecision {
                id,
                action,
                from,
                allowed,
                to,
                actor,
                note,
                learn,
                payment: super::PaymentEffect::None,
                expect: None,
            })
            .await?;
        Ok(done)
    }
}
