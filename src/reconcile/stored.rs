//! Store mode: reconciles the bank transactions in the store against its
//! invoices and keeps the outcome as allocations.
//!
//! A run reads every credit bank transaction (booked on or after `since`),
//! every invoice with an open amount, the customers' names and accounts and
//! the payer aliases learnt from confirmed matches, and runs the engine.
//! Allocations a person decided (confirmed, manual, rejected, undone) are
//! never changed by a run: a transaction with a confirmed or manual
//! allocation is not matched again, their amounts count as paid on the
//! invoice, and a rejected or undone pair is never proposed again. An
//! automatic or suggested allocation from an earlier run stays as it is
//! when the run finds the same; otherwise it is replaced. A second run over
//! unchanged data therefore changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use super::{Config, Receipt, Receivable, Status, describe, reconcile};
use crate::model::{
    BankTransaction, CanonicalId, Customer, Entity, EntityKind, Invoice, InvoiceStatus, Money,
};
use crate::store::{
    AllocationChangeError, AllocationStatus, NewAlert, NewAllocation, Severity, Store,
    StoredAllocation,
};

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Only transactions booked on or after this day.
    pub since: Option<NaiveDate>,
    /// Who runs it (history).
    pub actor: String,
    /// Matching parameters.
    pub config: Config,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// Run id, recorded on the allocations it wrote.
    pub run_id: String,
    /// Credit transactions considered.
    pub receipts: usize,
    /// Transactions skipped because a person already decided them.
    pub decided: usize,
    /// Open invoices considered.
    pub invoices: usize,
    /// Transactions matched automatically.
    pub auto: usize,
    /// Transactions with a suggestion.
    pub suggested: usize,
    /// Transactions left open.
    pub open: usize,
    /// Allocations written by this run.
    pub written: usize,
    /// Allocations of earlier runs replaced.
    pub retired: usize,
    /// Allocations of earlier runs found again and kept.
    pub kept: usize,
    /// Proposals dropped because a person rejected them before.
    pub rejected_before: usize,
    /// Alerts raised (new causes only).
    pub alerts_raised: usize,
    /// Transactions left open, with why.
    pub open_items: Vec<OpenItem>,
    /// Records that could not be read, with the problem.
    pub problems: Vec<String>,
}

/// A transaction a run left open.
#[derive(Debug, Clone, Serialize)]
pub struct OpenItem {
    /// Canonical id of the bank transaction.
    pub transaction_id: String,
    /// Booking date.
    pub booking_date: NaiveDate,
    /// Amount received.
    pub amount: Decimal,
    /// Its currency.
    pub currency: crate::model::Currency,
    /// Payer name.
    pub payer: Option<String>,
    /// Why it stayed open.
    pub reasons: Vec<String>,
}

fn text_of(tx: &BankTransaction) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    parts.extend(tx.remittance_info.clone());
    for key in [
        "additional_remittance_info",
        "customer_reference",
        "referred_document_numbers",
    ] {
        match tx.extra.get(key) {
            Some(serde_json::Value::String(s)) => parts.push(s.clone()),
            Some(serde_json::Value::Array(xs)) => {
                parts.extend(xs.iter().filter_map(|x| x.as_str()).map(str::to_owned));
            }
            _ => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join(" ; "))
}

/// Runs the engine over the store and records the outcome.
pub async fn run(store: &Store, opts: &RunOptions) -> anyhow::Result<RunReport> {
    let mut report = RunReport {
        run_id: format!("run-{}", CanonicalId::new()),
        ..RunReport::default()
    };
    // Customers: names and known accounts.
    let mut customers: HashMap<String, Customer> = HashMap::new();
    for r in store.records_of(EntityKind::Customer).await? {
        match Entity::from_value(EntityKind::Customer, r.data) {
            Ok(Entity::Customer(c)) => {
                customers.insert(r.id.to_string(), c);
            }
            Ok(_) => {}
            Err(e) => report.problems.push(format!("customer {}: {e}", r.id)),
        }
    }
    let mut alias_accounts: HashMap<String, Vec<String>> = HashMap::new();
    let mut alias_names: HashMap<String, Vec<String>> = HashMap::new();
    for a in store.payer_aliases().await? {
        let target = if a.kind == "account" {
            &mut alias_accounts
        } else {
            &mut alias_names
        };
        target.entry(a.customer_id).or_default().push(a.value);
    }

    let existing = store.allocations(&[]).await?;
    let payments = store.allocation_payments(&[]).await?;
    let mut decided_tx: HashSet<&str> = HashSet::new();
    let mut refused: HashSet<(&str, &str)> = HashSet::new();
    let mut paid_elsewhere: HashMap<&str, Vec<&StoredAllocation>> = HashMap::new();
    let mut previous: HashMap<&str, Vec<&StoredAllocation>> = HashMap::new();
    for a in &existing {
        let al = &a.allocation;
        match al.status {
            AllocationStatus::Confirmed | AllocationStatus::Manual => {
                decided_tx.insert(&al.transaction_id);
                paid_elsewhere.entry(&al.invoice_id).or_default().push(a);
            }
            AllocationStatus::Rejected | AllocationStatus::Undone => {
                refused.insert((&al.transaction_id, &al.invoice_id));
            }
            AllocationStatus::Auto | AllocationStatus::Suggested => {
                previous.entry(&al.transaction_id).or_default().push(a);
            }
        }
    }

    // Invoices still open, less what people allocated in concord and the
    // ERP does not show yet (a payment pushed to the ERP shows there once
    // the invoice was read from it after the delivery).
    let mut receivables: Vec<Receivable> = Vec::new();
    let mut invoice_ids: Vec<String> = Vec::new();
    for r in store.records_of(EntityKind::Invoice).await? {
        let inv: Invoice = match Entity::from_value(EntityKind::Invoice, r.data.clone()) {
            Ok(Entity::Invoice(i)) => i,
            Ok(_) => continue,
            Err(e) => {
                report.problems.push(format!("invoice {}: {e}", r.id));
                continue;
            }
        };
        if matches!(
            inv.status,
            InvoiceStatus::Draft | InvoiceStatus::Paid | InvoiceStatus::Void
        ) {
            continue;
        }
        let id = r.id.to_string();
        let decided: Decimal = paid_elsewhere
            .get(id.as_str())
            .map(|all| {
                all.iter()
                    .map(|a| {
                        let mine: Vec<_> = payments
                            .iter()
                            .filter(|p| p.allocation_id == a.id)
                            .collect();
                        super::push::still_open_against(a, &mine, &r)
                    })
                    .sum()
            })
            .unwrap_or_default();
        let open = inv.open_amount - decided;
        if open <= Decimal::ZERO {
            continue;
        }
        let customer_id = inv
            .customer
            .as_ref()
            .map_or_else(|| format!("invoice:{id}"), ToString::to_string);
        let customer = customers.get(&customer_id);
        let mut payer_accounts: Vec<String> = customer
            .map(|c| c.bank_accounts.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        payer_accounts.extend(
            alias_accounts
                .get(&customer_id)
                .cloned()
                .unwrap_or_default(),
        );
        let mut payer_names: Vec<String> = customer
            .and_then(|c| c.legal_name.clone())
            .into_iter()
            .collect();
        payer_names.extend(alias_names.get(&customer_id).cloned().unwrap_or_default());
        receivables.push(Receivable {
            invoice_number: inv.number.clone(),
            customer_name: customer.map_or_else(String::new, |c| c.name.clone()),
            customer_id,
            payer_accounts,
            payer_names,
            currency: inv.currency,
            total: inv.total,
            open_amount: open,
            issue_date: inv.issue_date,
            due_date: inv.due_date,
            reference: inv.reference.clone(),
        });
        invoice_ids.push(id);
    }
    report.invoices = receivables.len();

    let mut receipts: Vec<Receipt> = Vec::new();
    for r in store.records_of(EntityKind::BankTransaction).await? {
        let tx: BankTransaction = match Entity::from_value(EntityKind::BankTransaction, r.data) {
            Ok(Entity::BankTransaction(t)) => t,
            Ok(_) => continue,
            Err(e) => {
                report
                    .problems
                    .push(format!("bank transaction {}: {e}", r.id));
                continue;
            }
        };
        if tx.amount <= Decimal::ZERO || opts.since.is_some_and(|s| tx.booking_date < s) {
            continue;
        }
        let id = r.id.to_string();
        if decided_tx.contains(id.as_str()) {
            report.decided += 1;
            continue;
        }
        receipts.push(Receipt {
            id,
            booking_date: tx.booking_date,
            amount: tx.amount,
            currency: tx.currency,
            counterparty_name: tx.counterparty_name.clone(),
            counterparty_account: tx.counterparty_account.clone(),
            remittance: text_of(&tx),
            end_to_end_id: tx.end_to_end_id.clone(),
            creditor_reference: tx
                .extra
                .get("creditor_reference")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        });
    }
    report.receipts = receipts.len();

    let rec = reconcile(&receipts, &receivables, &opts.config);
    let mut retire: Vec<i64> = Vec::new();
    let mut add: Vec<NewAllocation> = Vec::new();
    let mut alerts: Vec<NewAlert> = Vec::new();
    for d in &rec.decisions {
        let r = &receipts[d.receipt];
        let mut wanted: Vec<NewAllocation> = Vec::new();
        let status = match d.status {
            Status::Auto => Some(AllocationStatus::Auto),
            Status::Suggested => Some(AllocationStatus::Suggested),
            Status::Open => None,
        };
        if let Some(status) = status {
            let reasons: Vec<String> = d
                .reasons
                .iter()
                .map(|x| describe(x, d.receipt, &receipts, &receivables))
                .collect();
            let refused_here = d
                .allocations
                .iter()
                .any(|a| refused.contains(&(r.id.as_str(), invoice_ids[a.invoice].as_str())));
            if refused_here {
                report.rejected_before += 1;
            } else {
                for a in &d.allocations {
                    let inv = &receivables[a.invoice];
                    wanted.push(NewAllocation {
                        transaction_id: r.id.clone(),
                        invoice_id: invoice_ids[a.invoice].clone(),
                        invoice_number: inv.invoice_number.clone(),
                        customer_id: (!inv.customer_id.starts_with("invoice:"))
                            .then(|| inv.customer_id.clone()),
                        amount: a.amount,
                        currency: r.currency,
                        write_off: d
                            .write_off
                            .as_ref()
                            .filter(|w| w.invoice == a.invoice)
                            .map(|w| w.amount),
                        status,
                        confidence: (d.confidence * 1000.0).round() / 1000.0,
                        stage: d.stage.map(|s| s.as_str().to_owned()),
                        reasons: reasons.clone(),
                    });
                }
            }
            if status == AllocationStatus::Auto && d.unallocated > Decimal::ZERO {
                alerts.push(NewAlert {
                    rule: "reconcile_overpayment".into(),
                    severity: Severity::Warning,
                    entity: Some(EntityKind::BankTransaction),
                    record_ids: vec![r.id.clone()],
                    reason: format!(
                        "bank transaction {} ({} {} from {}) pays {} {} more than its invoices are open for",
                        r.id,
                        r.amount,
                        r.currency,
                        r.counterparty_name.as_deref().unwrap_or("unknown payer"),
                        d.unallocated,
                        r.currency
                    ),
                    amount: Money::new(d.unallocated, r.currency).ok(),
                    cause: Some(format!("overpayment:{}", r.id)),
                });
            }
        }
        if let Some(super::Reason::Contested { receipt }) = d
            .reasons
            .iter()
            .find(|x| matches!(x, super::Reason::Contested { .. }))
        {
            let other = &receipts[*receipt];
            let mut pair = [r.id.clone(), other.id.clone()];
            pair.sort();
            alerts.push(NewAlert {
                rule: "reconcile_possible_duplicate_payment".into(),
                severity: Severity::Warning,
                entity: Some(EntityKind::BankTransaction),
                record_ids: pair.to_vec(),
                reason: format!(
                    "bank transactions {} and {} claim the same invoice with similar evidence: possibly paid twice",
                    pair[0], pair[1]
                ),
                amount: Money::new(r.amount, r.currency).ok(),
                cause: Some(format!("duplicate:{}:{}", pair[0], pair[1])),
            });
        }
        match d.status {
            Status::Auto => report.auto += 1,
            Status::Suggested => report.suggested += 1,
            Status::Open => {
                report.open += 1;
                report.open_items.push(OpenItem {
                    transaction_id: r.id.clone(),
                    booking_date: r.booking_date,
                    amount: r.amount,
                    currency: r.currency,
                    payer: r.counterparty_name.clone(),
                    reasons: d
                        .reasons
                        .iter()
                        .map(|x| describe(x, d.receipt, &receipts, &receivables))
                        .collect(),
                });
            }
        }
        // Keep what an earlier run already wrote when it is the same.
        let before = previous.remove(r.id.as_str()).unwrap_or_default();
        let key = |a: &NewAllocation| {
            (
                a.invoice_id.clone(),
                a.amount.normalize(),
                a.status,
                a.write_off.map(|w| w.normalize()),
            )
        };
        let mut old: Vec<_> = before.iter().map(|a| key(&a.allocation)).collect();
        let mut new: Vec<_> = wanted.iter().map(key).collect();
        old.sort();
        new.sort();
        if old == new {
            report.kept += before.len();
        } else {
            retire.extend(before.iter().map(|a| a.id));
            add.extend(wanted);
        }
    }
    // Allocations of transactions this run did not look at (outside
    // --since) stay as they are.
    let mut currencies_invoiced: HashSet<_> = HashSet::new();
    for r in &receivables {
        currencies_invoiced.insert(r.currency);
    }
    let mut foreign: BTreeMap<String, usize> = BTreeMap::new();
    for r in &receipts {
        if !currencies_invoiced.contains(&r.currency) {
            *foreign.entry(r.currency.to_string()).or_default() += 1;
        }
    }
    for (c, n) in foreign {
        alerts.push(NewAlert {
            rule: "reconcile_currency_without_invoices".into(),
            severity: Severity::Warning,
            entity: Some(EntityKind::BankTransaction),
            record_ids: vec![],
            reason: format!("{n} receipt(s) in {c}, but no open invoice is in {c}"),
            amount: None,
            cause: Some(format!("currency:{c}:{n}")),
        });
    }
    for e in &rec.excluded {
        alerts.push(NewAlert {
            rule: "reconcile_invoice_excluded".into(),
            severity: Severity::Warning,
            entity: Some(EntityKind::Invoice),
            record_ids: vec![invoice_ids[e.invoice].clone()],
            reason: e.problem.clone(),
            amount: None,
            cause: Some(format!("excluded:{}", invoice_ids[e.invoice])),
        });
    }

    report.retired = retire.len();
    report.written = add.len();
    if !retire.is_empty() || !add.is_empty() {
        store
            .apply_reconciliation(&report.run_id, &opts.actor, &retire, &add)
            .await?;
    }
    for a in &alerts {
        if store.raise_alert(a).await?.is_some() {
            report.alerts_raised += 1;
        }
    }
    Ok(report)
}

/// Confirms a suggested (or automatic) allocation, and the other
/// allocations of the same receipt from the same run. The payer's account
/// and name become aliases of the invoice's customer for later runs.
/// Nothing is pushed to an ERP ([`super::push::confirm`] does that too).
pub async fn confirm(
    store: &Store,
    id: i64,
    actor: &str,
    note: Option<&str>,
) -> Result<StoredAllocation, AllocationChangeError> {
    Ok(super::push::confirm(store, None, id, actor, note)
        .await?
        .allocation)
}

/// A receipt paying several invoices has one allocation per invoice, made
/// by the same run: a decision on one is a decision on all of them.
async fn siblings(
    store: &Store,
    done: &StoredAllocation,
    to: AllocationStatus,
    actor: &str,
    note: Option<&str>,
) -> Result<(), AllocationChangeError> {
    let others = store
        .allocations(&[AllocationStatus::Suggested, AllocationStatus::Auto])
        .await?;
    for o in others.iter().filter(|o| {
        o.id != done.id
            && o.allocation.transaction_id == done.allocation.transaction_id
            && o.run_id == done.run_id
    }) {
        store
            .change_allocation(
                o.id,
                "decide",
                &[AllocationStatus::Suggested, AllocationStatus::Auto],
                "suggested or auto allocations",
                to,
                actor,
                Some(note.unwrap_or("decided with the other invoices this receipt pays")),
                &[],
            )
            .await?;
    }
    Ok(())
}

/// Rejects a suggested or automatic allocation (with the other allocations
/// of the same receipt from the same run): the pair is never proposed
/// again.
pub async fn reject(
    store: &Store,
    id: i64,
    actor: &str,
    note: Option<&str>,
) -> Result<StoredAllocation, AllocationChangeError> {
    let done = store
        .change_allocation(
            id,
            "reject",
            &[AllocationStatus::Suggested, AllocationStatus::Auto],
            "suggested or auto allocations",
            AllocationStatus::Rejected,
            actor,
            note,
            &[],
        )
        .await?;
    siblings(store, &done, AllocationStatus::Rejected, actor, note).await?;
    Ok(done)
}

/// Takes a decision back: a confirmation or rejection returns to
/// suggested (a confirmation forgets the aliases it taught); an automatic
/// match or a manual allocation is undone and never made again. A payment
/// pushed for it to an ERP makes the undo refused
/// ([`super::push::undo`] says more).
pub async fn undo(
    store: &Store,
    id: i64,
    actor: &str,
    note: Option<&str>,
) -> Result<StoredAllocation, AllocationChangeError> {
    Ok(super::push::undo(store, id, actor, note, false)
        .await?
        .allocation)
}
