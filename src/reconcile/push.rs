//! Confirmed and manual allocations as payments in the ERP.
//!
//! With `[reconcile.push]` configured, confirming an allocation (or making
//! one by hand) writes a canonical payment record — one per allocation: the
//! invoice and the amount applied to it, the receipt's booking date, payer
//! and reference, the ERP's bank account the money arrived in — and queues
//! it in the outbox for the ERP, in the same transaction as the
//! allocation's change. Delivery is the sync engine's: the payment is
//! rendered with the configured outbound mapping (the invoice's id in the
//! ERP comes from its link) and pushed with an idempotency key, retried,
//! dead-lettered and replayed like any other delivery.
//!
//! Undoing an allocation whose payment has not reached the ERP cancels the
//! delivery with the undo. One that has reached it — or may have: sent
//! without a definite answer — is not undone: concord does not reverse
//! payments in the ERP, so the operator reverses it there and then undoes
//! the allocation with `--payment-reversed`. Either way the payment record
//! gets a last version that pays nothing. A delivery that was already on
//! its way when the undo cancelled it is caught after the next push and
//! raised as a critical alert (`reconcile_payment_after_undo`).
//!
//! What counts against an invoice's open amount: the allocations people
//! decided (confirmed, manual) and automatic matches, with their
//! write-offs — except the amount of a payment the ERP has taken in, once
//! the invoice was read from that ERP after the payment was delivered (the
//! ERP's open amount then already shows it).

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::model::{
    BankTransaction, CanonicalId, Entity, EntityKind, Invoice, InvoiceStatus, Money,
};
use crate::store::{
    AllocationChangeError, AllocationDecision, AllocationPayment, AllocationStatus,
    AppliedSnapshot, NewAlert, NewAllocation, PaymentEffect, PaymentOutcome, PaymentStatus,
    PaymentWrite, Severity, Store, StoredAllocation, StoredRecord,
};
use crate::sync::Endpoint;

/// `[reconcile.push]`: where confirmed and manual allocations go as
/// payments.
///
/// ```toml
/// [reconcile.push]
/// system = "xero_main"              # a [systems] instance
/// entity = "payment"                # its definition's entity that creates payments
/// mapping = "xero-payment-out"      # canonical payment → the ERP's body
/// bank_account = "090"              # the ERP's account receipts are booked to
/// bank_accounts = { "DE89370400440532013000" = "091" }  # per own bank account
/// ```
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentPushSettings {
    /// The `[systems]` instance payments are pushed to.
    pub system: String,
    /// The entity of its definition that creates payments (`payment` for
    /// Xero, `payment_entry` for ERPNext).
    pub entity: String,
    /// The outbound mapping from canonical payments to that entity.
    pub mapping: String,
    /// The ERP's account for money received (Xero: a bank account's code;
    /// ERPNext: the account's name, `Bank - ACME`), when the statement's
    /// own account is not listed in `bank_accounts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_account: Option<String>,
    /// The ERP's account per own bank account (IBAN or account id, as
    /// the statements name it; spaces and case do not matter).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bank_accounts: BTreeMap<String, String>,
}

fn account_key(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect()
}

impl PaymentPushSettings {
    /// The target the payments are delivered to.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            system: self.system.clone(),
            entity: self.entity.clone(),
            mapping: self.mapping.clone(),
        }
    }

    /// The ERP's account for money received on `own_account`.
    pub fn deposit_account(&self, own_account: &str) -> Option<&str> {
        let key = account_key(own_account);
        self.bank_accounts
            .iter()
            .find(|(k, _)| account_key(k) == key)
            .map(|(_, v)| v.as_str())
            .or(self.bank_account.as_deref())
            .filter(|s| !s.trim().is_empty())
    }

    /// Checks what can be checked without the definitions and mappings;
    /// returns the offending field and why.
    pub fn validate(
        &self,
        systems: &BTreeMap<String, crate::settings::SystemSettings>,
    ) -> Result<(), (String, String)> {
        if !systems.contains_key(&self.system) {
            return Err((
                "system".into(),
                format!("no system {:?} in [systems]", self.system),
            ));
        }
        if self.entity.trim().is_empty() || self.mapping.trim().is_empty() {
            return Err((String::new(), "entity and mapping must not be empty".into()));
        }
        if self.bank_account.is_none() && self.bank_accounts.is_empty() {
            return Err((
                "bank_account".into(),
                "name the ERP's account receipts are booked to (bank_account, or bank_accounts per own account)".into(),
            ));
        }
        Ok(())
    }
}

/// The id of an allocation's payment: derived from the allocation, its
/// receipt and invoice, and the payment's generation (1, then 2 after the
/// first was voided …), so the same decision always names the same
/// payment and the same idempotency key at the ERP, and payments of
/// different stores never share one.
pub fn payment_id(
    allocation_id: i64,
    transaction_id: &str,
    invoice_id: &str,
    generation: i64,
) -> CanonicalId {
    let digest = Sha256::digest(
        format!("{allocation_id}:{transaction_id}:{invoice_id}:{generation}").as_bytes(),
    );
    CanonicalId::parse(&format!("pay-{}", &hex::encode(digest)[..32])).expect("a valid id")
}

/// The reference a payment carries: what the payer wrote, else the
/// end-to-end id, else the bank's reference.
fn reference_of(tx: &BankTransaction) -> Option<String> {
    [
        tx.remittance_info.as_deref(),
        tx.end_to_end_id
            .as_deref()
            .filter(|r| !r.eq_ignore_ascii_case("NOTPROVIDED")),
        tx.bank_reference.as_deref(),
    ]
    .into_iter()
    .flatten()
    .map(str::trim)
    .find(|s| !s.is_empty())
    .map(|s| s.chars().take(255).collect())
}

/// The canonical payment of an allocation.
fn payment_of(
    id: &CanonicalId,
    allocation_id: i64,
    a: &NewAllocation,
    tx: &BankTransaction,
    deposit_account: &str,
) -> Result<(Value, Money), String> {
    // As the currency writes it (SQLite keeps amounts normalised: 100).
    let mut value = a.amount;
    if value.scale() < a.currency.minor_units() {
        value.rescale(a.currency.minor_units());
    }
    let amount = Money::new(value, a.currency).map_err(|e| e.to_string())?;
    let mut p = json!({
        "id": id.as_str(),
        "amount": amount,
        "date": tx.booking_date,
        "allocations": [{
            "invoice": a.invoice_id,
            "amount": value.to_string(),
            "invoice_number": a.invoice_number,
        }],
        "bank_transaction": a.transaction_id,
        "allocation": allocation_id,
        "deposit_account": deposit_account,
        "own_account": tx.account,
    });
    if let Some(c) = &a.customer_id {
        p["customer"] = json!(c);
    }
    if let Some(r) = reference_of(tx) {
        p["reference"] = json!(r);
    }
    if let Some(n) = tx
        .counterparty_name
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        p["payer"] = json!(n.trim());
    }
    if let Some(r) = tx
        .bank_reference
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        p["bank_reference"] = json!(r.trim());
    }
    // Checked against the model, so a record the rest of concord cannot
    // read is never written.
    Entity::from_value(EntityKind::Payment, p.clone()).map_err(|e| e.to_string())?;
    Ok((p, amount))
}

async fn bank_transaction(
    store: &Store,
    id: &str,
) -> Result<(CanonicalId, BankTransaction), AllocationChangeError> {
    let cid = CanonicalId::parse(id)
        .map_err(|e| AllocationChangeError::Refused(format!("bank transaction {id:?}: {e}")))?;
    let rec = store
        .get_record(EntityKind::BankTransaction, &cid)
        .await?
        .ok_or_else(|| AllocationChangeError::Refused(format!("no bank transaction {id}")))?;
    match Entity::from_value(EntityKind::BankTransaction, rec.data) {
        Ok(Entity::BankTransaction(t)) => Ok((cid, t)),
        Ok(_) => unreachable!("a bank transaction read as one"),
        Err(e) => Err(AllocationChangeError::Refused(format!(
            "bank transaction {id} cannot be read: {e}"
        ))),
    }
}

async fn invoice(
    store: &Store,
    id: &str,
) -> Result<(StoredRecord, Invoice), AllocationChangeError> {
    let cid = CanonicalId::parse(id)
        .map_err(|e| AllocationChangeError::Refused(format!("invoice {id:?}: {e}")))?;
    let rec = store
        .get_record(EntityKind::Invoice, &cid)
        .await?
        .ok_or_else(|| AllocationChangeError::Refused(format!("no invoice {id}")))?;
    match Entity::from_value(EntityKind::Invoice, rec.data.clone()) {
        Ok(Entity::Invoice(i)) => Ok((rec, i)),
        Ok(_) => unreachable!("an invoice read as one"),
        Err(e) => Err(AllocationChangeError::Refused(format!(
            "invoice {id} cannot be read: {e}"
        ))),
    }
}

/// The payment builder for allocations of `tx` under `push`: checks now
/// what can be checked (the ERP account), builds inside the transaction.
fn builder<'a>(
    push: &'a PaymentPushSettings,
    tx: &'a BankTransaction,
    allocation: &'a NewAllocation,
) -> Result<
    impl Fn(i64, i64) -> Result<PaymentWrite, String> + Send + Sync + 'a,
    AllocationChangeError,
> {
    let deposit = push.deposit_account(&tx.account).ok_or_else(|| {
        AllocationChangeError::Refused(format!(
            "no {} account is configured for money received on {}: set reconcile.push.bank_accounts.\"{}\" (or reconcile.push.bank_account)",
            push.system, tx.account, tx.account
        ))
    })?;
    Ok(move |allocation_id: i64, generation: i64| {
        let id = payment_id(
            allocation_id,
            &allocation.transaction_id,
            &allocation.invoice_id,
            generation,
        );
        let (data, amount) = payment_of(&id, allocation_id, allocation, tx, deposit)?;
        Ok(PaymentWrite {
            id,
            data,
            amount,
            system: push.system.clone(),
        })
    })
}

/// Whether the ERP's open amount of `invoice` already shows allocation
/// `a`'s payment: it was delivered to the ERP the invoice's current version
/// came from, before that version was read.
fn reflected(
    a: &StoredAllocation,
    payments: &[&AllocationPayment],
    invoice: &StoredRecord,
) -> bool {
    payments.iter().any(|p| {
        p.allocation_id == a.id
            && p.status == PaymentStatus::Active
            && invoice.source_system.as_deref() == Some(p.system.as_str())
            && p.delivery
                .as_ref()
                .and_then(|d| d.delivered_at)
                .is_some_and(|at| invoice.updated_at > at)
    })
}

/// What of allocation `a` (applied to an invoice) is still to come off the
/// invoice's open amount as the store has it: the amount and write-off,
/// less the amount when the ERP's open amount already shows its payment.
pub fn still_open_against(
    a: &StoredAllocation,
    payments: &[&AllocationPayment],
    invoice: &StoredRecord,
) -> Decimal {
    let write_off = a.allocation.write_off.unwrap_or_default();
    if reflected(a, payments, invoice) {
        write_off
    } else {
        a.allocation.amount + write_off
    }
}

/// The applied allocations of a receipt and some invoices, and what is
/// left of each.
struct Ledger {
    snapshot: AppliedSnapshot,
    /// Applied on the receipt.
    on_receipt: Decimal,
    /// Per invoice: applied, as it counts against the stored open amount.
    on_invoice: HashMap<String, Decimal>,
    /// Per invoice: the applied allocations, for messages.
    ids_on_invoice: HashMap<String, Vec<i64>>,
}

impl Ledger {
    async fn of(
        store: &Store,
        transaction_id: &str,
        invoices: &[(&str, &StoredRecord)],
    ) -> Result<Ledger, AllocationChangeError> {
        let all = store
            .allocations(&[
                AllocationStatus::Auto,
                AllocationStatus::Confirmed,
                AllocationStatus::Manual,
            ])
            .await?;
        let ids: Vec<i64> = all.iter().map(|a| a.id).collect();
        let payments = store.allocation_payments(&ids).await?;
        let mut ledger = Ledger {
            snapshot: AppliedSnapshot {
                transaction_id: transaction_id.to_owned(),
                invoice_ids: invoices.iter().map(|(i, _)| (*i).to_owned()).collect(),
                applied: Vec::new(),
            },
            on_receipt: Decimal::ZERO,
            on_invoice: HashMap::new(),
            ids_on_invoice: HashMap::new(),
        };
        for a in &all {
            let al = &a.allocation;
            let on_tx = al.transaction_id == transaction_id;
            let inv = invoices.iter().find(|(i, _)| *i == al.invoice_id);
            if on_tx {
                ledger.on_receipt += al.amount;
            }
            if let Some((i, rec)) = inv {
                let mine: Vec<&AllocationPayment> = payments
                    .iter()
                    .filter(|p| p.allocation_id == a.id)
                    .collect();
                *ledger.on_invoice.entry((*i).to_owned()).or_default() +=
                    still_open_against(a, &mine, rec);
                ledger
                    .ids_on_invoice
                    .entry((*i).to_owned())
                    .or_default()
                    .push(a.id);
            }
            if on_tx || inv.is_some() {
                ledger.snapshot.applied.push(a.id);
            }
        }
        ledger.snapshot.applied.sort_unstable();
        Ok(ledger)
    }
}

/// An amount as people write it in `currency` (`70.00`, not `70`).
fn t(amount: Decimal, currency: crate::model::Currency) -> String {
    super::file::amount_text(amount, currency)
}

fn ids_text(ids: Option<&Vec<i64>>) -> String {
    match ids {
        Some(ids) if !ids.is_empty() => format!(
            " (allocation(s) {})",
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    }
}

/// A decision and what it did to payments.
#[derive(Debug, Clone, Serialize)]
pub struct Decided {
    /// The allocation decided (the one named).
    pub allocation: StoredAllocation,
    /// Others decided with it (the same receipt's allocations of one run).
    pub with: Vec<StoredAllocation>,
    /// Payments written or voided.
    pub payments: Vec<PaymentOutcome>,
}

/// Confirms a suggested (or automatic) allocation and the other
/// allocations of the same receipt from the same run. The payer's account
/// and name become aliases of the invoice's customer; with `push`, each
/// allocation confirmed becomes a payment queued for the ERP. Refused when
/// the suggestions no longer fit: more than the receipt, or more than an
/// invoice is still open for.
pub async fn confirm(
    store: &Store,
    push: Option<&PaymentPushSettings>,
    id: i64,
    actor: &str,
    note: Option<&str>,
) -> Result<Decided, AllocationChangeError> {
    let first = store
        .allocation(id)
        .await?
        .ok_or(AllocationChangeError::NotFound(id))?;
    let open = [AllocationStatus::Suggested, AllocationStatus::Auto];
    if !open.contains(&first.allocation.status) {
        return Err(AllocationChangeError::WrongStatus {
            id,
            status: first.allocation.status,
            action: "confirm",
            allowed: "suggested or auto allocations",
        });
    }
    let (_, tx) = bank_transaction(store, &first.allocation.transaction_id).await?;
    let mut learn: Vec<(String, String)> = Vec::new();
    if let Some(acc) = tx
        .counterparty_account
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        learn.push(("account".into(), acc.trim().to_owned()));
    }
    if let Some(name) = tx
        .counterparty_name
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        learn.push(("name".into(), name.trim().to_owned()));
    }
    // A receipt paying several invoices has one allocation per invoice,
    // made by the same run: a decision on one is a decision on all.
    let mut group = vec![first.clone()];
    group.extend(store.allocations(&open).await?.into_iter().filter(|o| {
        o.id != id
            && o.allocation.transaction_id == first.allocation.transaction_id
            && o.run_id == first.run_id
    }));
    let mut records = Vec::new();
    for a in &group {
        records.push((
            a.allocation.invoice_id.clone(),
            invoice(store, &a.allocation.invoice_id).await?.0,
        ));
    }
    let refs: Vec<(&str, &StoredRecord)> = records.iter().map(|(i, r)| (i.as_str(), r)).collect();
    let mut ledger = Ledger::of(store, &first.allocation.transaction_id, &refs).await?;
    // Suggestions become applied: they must still fit.
    let mut on_receipt = ledger.on_receipt;
    let mut on_invoice = ledger.on_invoice.clone();
    for a in group
        .iter()
        .filter(|a| a.allocation.status == AllocationStatus::Suggested)
    {
        let al = &a.allocation;
        on_receipt += al.amount;
        *on_invoice.entry(al.invoice_id.clone()).or_default() +=
            al.amount + al.write_off.unwrap_or_default();
    }
    if on_receipt > tx.amount {
        return Err(AllocationChangeError::Refused(format!(
            "confirming allocation {id} would allocate {} {} of bank transaction {}, which received {} {}{}: undo or reject what no longer applies first",
            t(on_receipt, tx.currency),
            tx.currency,
            first.allocation.transaction_id,
            t(tx.amount, tx.currency),
            tx.currency,
            ids_text(Some(&ledger.snapshot.applied))
        )));
    }
    for (inv_id, rec) in &refs {
        let Ok(Entity::Invoice(inv)) = Entity::from_value(EntityKind::Invoice, rec.data.clone())
        else {
            continue;
        };
        let applied = on_invoice.get(*inv_id).copied().unwrap_or_default();
        if applied > inv.open_amount {
            return Err(AllocationChangeError::Refused(format!(
                "confirming allocation {id} would allocate {} {} of invoice {}, which is open for {} {}{}: undo or reject what no longer applies first",
                t(applied, inv.currency),
                inv.currency,
                inv.number,
                t(inv.open_amount, inv.currency),
                inv.currency,
                ids_text(ledger.ids_on_invoice.get(*inv_id))
            )));
        }
    }
    let mut decided = Vec::new();
    let mut payments = Vec::new();
    for (n, a) in group.iter().enumerate() {
        let build = push.map(|p| builder(p, &tx, &a.allocation)).transpose()?;
        let payment = match &build {
            Some(b) => PaymentEffect::Write(b),
            None => PaymentEffect::None,
        };
        let sibling_note =
            Some(note.unwrap_or("decided with the other invoices this receipt pays"));
        let (done, outcome) = store
            .decide_allocation(&AllocationDecision {
                id: a.id,
                action: if n == 0 { "confirm" } else { "decide" },
                from: &open,
                allowed: "suggested or auto allocations",
                to: AllocationStatus::Confirmed,
                actor,
                note: if n == 0 { note } else { sibling_note },
                learn: if n == 0 { &learn } else { &[] },
                payment,
                expect: Some(&ledger.snapshot),
            })
            .await?;
        // What this step applied is part of what the next checks against.
        if a.allocation.status == AllocationStatus::Suggested {
            ledger.snapshot.applied.push(a.id);
            ledger.snapshot.applied.sort_unstable();
        }
        decided.push(done);
        if outcome != PaymentOutcome::default() {
            payments.push(outcome);
        }
    }
    let mut decided = decided.into_iter();
    Ok(Decided {
        allocation: decided.next().expect("the allocation named"),
        with: decided.collect(),
        payments,
    })
}

/// Takes a decision back: a confirmation or rejection returns to suggested
/// (a confirmation forgets the aliases it taught); an automatic match or
/// a manual allocation is undone and never made again automatically. The
/// payment of a confirmed or manual allocation is voided: its delivery is
/// cancelled if it cannot have reached the ERP; if it has (or may have),
/// the undo is refused unless `payment_reversed` says a person reversed it
/// there.
pub async fn undo(
    store: &Store,
    id: i64,
    actor: &str,
    note: Option<&str>,
    payment_reversed: bool,
) -> Result<Decided, AllocationChangeError> {
    let Some(a) = store.allocation(id).await? else {
        return Err(AllocationChangeError::NotFound(id));
    };
    let to = match a.allocation.status {
        AllocationStatus::Auto | AllocationStatus::Manual => AllocationStatus::Undone,
        _ => AllocationStatus::Suggested,
    };
    let payment = match a.allocation.status {
        AllocationStatus::Confirmed | AllocationStatus::Manual => PaymentEffect::Void {
            reversed: payment_reversed,
        },
        _ => PaymentEffect::None,
    };
    let (done, outcome) = store
        .decide_allocation(&AllocationDecision {
            id,
            action: "undo",
            from: &[
                AllocationStatus::Confirmed,
                AllocationStatus::Rejected,
                AllocationStatus::Auto,
                AllocationStatus::Manual,
            ],
            allowed: "confirmed, rejected, manual or auto allocations",
            to,
            actor,
            note,
            learn: &[],
            payment,
            expect: None,
        })
        .await?;
    Ok(Decided {
        allocation: done,
        with: Vec::new(),
        payments: (outcome != PaymentOutcome::default())
            .then_some(outcome)
            .into_iter()
            .collect(),
    })
}

/// An allocation a person makes.
#[derive(Debug, Clone)]
pub struct ManualAllocation {
    /// Canonical id of the bank transaction (a receipt).
    pub transaction_id: CanonicalId,
    /// Canonical id of the invoice.
    pub invoice_id: CanonicalId,
    /// How much; default: as much as both the receipt and the invoice have
    /// left.
    pub amount: Option<Decimal>,
    pub actor: String,
    pub note: Option<String>,
}

/// Allocates a receipt to an invoice by hand (status manual), and with
/// `push` queues its payment for the ERP. Refused, saying why, when it
/// would allocate more than the receipt has left or more than the invoice
/// is still open for, when the currencies differ, when the transaction is
/// not a receipt, or the invoice is void or a draft.
pub async fn allocate(
    store: &Store,
    push: Option<&PaymentPushSettings>,
    m: &ManualAllocation,
) -> Result<Decided, AllocationChangeError> {
    let refuse = |s: String| Err(AllocationChangeError::Refused(s));
    let tx_id = m.transaction_id.to_string();
    let inv_id = m.invoice_id.to_string();
    let (_, tx) = bank_transaction(store, &tx_id).await?;
    let (rec, inv) = invoice(store, &inv_id).await?;
    if tx.amount <= Decimal::ZERO {
        return refuse(format!(
            "bank transaction {tx_id} is a debit of {} {}: only receipts pay invoices",
            t(tx.amount, tx.currency),
            tx.currency
        ));
    }
    if tx.currency != inv.currency {
        return refuse(format!(
            "bank transaction {tx_id} is in {}, invoice {} in {}: amounts in different currencies are never allocated to each other",
            tx.currency, inv.number, inv.currency
        ));
    }
    if matches!(inv.status, InvoiceStatus::Void | InvoiceStatus::Draft) {
        return refuse(format!(
            "invoice {} is {}: only issued invoices can be paid",
            inv.number, inv.status
        ));
    }
    let ledger = Ledger::of(store, &tx_id, &[(inv_id.as_str(), &rec)]).await?;
    let applied = store
        .allocations(&[
            AllocationStatus::Auto,
            AllocationStatus::Confirmed,
            AllocationStatus::Manual,
        ])
        .await?;
    if let Some(same) = applied
        .iter()
        .find(|a| a.allocation.transaction_id == tx_id && a.allocation.invoice_id == inv_id)
    {
        return refuse(format!(
            "bank transaction {tx_id} already pays invoice {} by allocation {} ({}, {} {}): undo it first to allocate a different amount",
            inv.number,
            same.id,
            same.allocation.status,
            t(same.allocation.amount, same.allocation.currency),
            same.allocation.currency
        ));
    }
    let receipt_left = tx.amount - ledger.on_receipt;
    let invoice_applied = ledger.on_invoice.get(&inv_id).copied().unwrap_or_default();
    let invoice_left = inv.open_amount - invoice_applied;
    let amount = match m.amount {
        Some(a) => a,
        None => receipt_left.min(invoice_left),
    };
    let currency = inv.currency;
    if amount <= Decimal::ZERO {
        return refuse(match m.amount {
            Some(a) => format!("the amount must be positive, not {a}"),
            None => format!(
                "nothing is left to allocate: bank transaction {tx_id} has {} {currency} left of {} {currency}, invoice {} {} {currency} of its open {} {currency}",
                t(receipt_left.max(Decimal::ZERO), currency),
                t(tx.amount, currency),
                inv.number,
                t(invoice_left.max(Decimal::ZERO), currency),
                t(inv.open_amount, currency)
            ),
        });
    }
    if amount.normalize().scale() > currency.minor_units() {
        return refuse(format!(
            "{amount} {currency} has more decimals than {currency} has ({})",
            currency.minor_units()
        ));
    }
    if amount > receipt_left {
        return refuse(format!(
            "{} {currency} would over-allocate bank transaction {tx_id}: it received {} {currency}, of which {} {currency} is already allocated{}; at most {} {currency} is left",
            t(amount, currency),
            t(tx.amount, currency),
            t(ledger.on_receipt, currency),
            ids_text(Some(
                &applied
                    .iter()
                    .filter(|a| a.allocation.transaction_id == tx_id)
                    .map(|a| a.id)
                    .collect()
            )),
            t(receipt_left.max(Decimal::ZERO), currency)
        ));
    }
    if amount > invoice_left {
        return refuse(format!(
            "{} {currency} would over-allocate invoice {}: it is open for {} {currency}, of which {} {currency} is already allocated{}; at most {} {currency} is left",
            t(amount, currency),
            inv.number,
            t(inv.open_amount, currency),
            t(invoice_applied, currency),
            ids_text(ledger.ids_on_invoice.get(&inv_id)),
            t(invoice_left.max(Decimal::ZERO), currency)
        ));
    }
    let mut reasons = vec![format!("allocated by hand by {}", m.actor)];
    reasons.extend(m.note.clone());
    let new = NewAllocation {
        transaction_id: tx_id,
        invoice_id: inv_id,
        invoice_number: inv.number.clone(),
        customer_id: inv.customer.as_ref().map(ToString::to_string),
        amount,
        currency,
        write_off: None,
        status: AllocationStatus::Manual,
        confidence: 1.0,
        stage: Some("manual".into()),
        reasons,
    };
    let build = push.map(|p| builder(p, &tx, &new)).transpose()?;
    let payment = match &build {
        Some(b) => PaymentEffect::Write(b),
        None => PaymentEffect::None,
    };
    let (done, outcome) = store
        .add_manual_allocation(&new, &m.actor, m.note.as_deref(), &ledger.snapshot, payment)
        .await?;
    Ok(Decided {
        allocation: done,
        with: Vec::new(),
        payments: (outcome != PaymentOutcome::default())
            .then_some(outcome)
            .into_iter()
            .collect(),
    })
}

/// After payments were delivered: a payment whose delivery the undo of
/// its allocation cancelled, but which was on its way then and reached the
/// ERP, is raised as a critical alert (once). Returns the alerts raised.
pub async fn check_after_delivery(store: &Store) -> anyhow::Result<usize> {
    let mut raised = 0;
    for p in store.allocation_payments(&[]).await? {
        let Some(d) = &p.delivery else { continue };
        if p.status != PaymentStatus::Cancelled || d.external_id.is_none() {
            continue;
        }
        let alert = NewAlert {
            rule: "reconcile_payment_after_undo".into(),
            severity: Severity::Critical,
            entity: Some(EntityKind::Payment),
            record_ids: vec![p.payment_id.to_string()],
            reason: format!(
                "payment {} of allocation {} reached {} as {} after the allocation was undone ({}): reverse it in {}",
                p.payment_id,
                p.allocation_id,
                p.system,
                d.external_id.as_deref().unwrap_or_default(),
                p.close_note.as_deref().unwrap_or("no note"),
                p.system
            ),
            amount: None,
            cause: Some(format!("payment-after-undo:{}", p.payment_id)),
        };
        if store.raise_alert(&alert).await?.is_some() {
            raised += 1;
        }
    }
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push() -> PaymentPushSettings {
        PaymentPushSettings {
            system: "xero_main".into(),
            entity: "payment".into(),
            mapping: "xero-payment-out".into(),
            bank_account: Some("090".into()),
            bank_accounts: BTreeMap::from([(
                "DE89 3704 0044 0532 0130 00".to_owned(),
                "091".to_owned(),
            )]),
        }
    }

    #[test]
    fn deposit_accounts_by_own_account_then_the_default() {
        let p = push();
        assert_eq!(p.deposit_account("de89370400440532013000"), Some("091"));
        assert_eq!(p.deposit_account("DE02120300000000202051"), Some("090"));
        let none = PaymentPushSettings {
            bank_account: None,
            ..push()
        };
        assert_eq!(none.deposit_account("DE02120300000000202051"), None);
    }

    #[test]
    fn payment_ids_are_derived_from_the_allocation_and_its_generation() {
        let a = payment_id(7, "tx-1", "inv-1", 1);
        assert_eq!(a, payment_id(7, "tx-1", "inv-1", 1));
        assert_ne!(a, payment_id(7, "tx-1", "inv-1", 2));
        assert_ne!(a, payment_id(8, "tx-1", "inv-1", 1));
        assert_ne!(a, payment_id(7, "tx-2", "inv-1", 1));
        assert!(a.as_str().starts_with("pay-") && a.as_str().len() == 36);
    }

    #[test]
    fn a_payment_is_a_canonical_payment_of_one_invoice() {
        let tx: BankTransaction = serde_json::from_value(json!({
            "account": "DE89370400440532013000", "booking_date": "2026-11-05",
            "amount": "150.00", "currency": "EUR", "counterparty_name": " Muster GmbH ",
            "remittance_info": "RE-1 RE-2", "bank_reference": "BANKREF-9"
        }))
        .unwrap();
        let a = NewAllocation {
            transaction_id: "tx-1".into(),
            invoice_id: "inv-1".into(),
            invoice_number: "RE-1".into(),
            customer_id: Some("cust-1".into()),
            amount: "100.00".parse().unwrap(),
            currency: crate::model::Currency::parse("EUR").unwrap(),
            write_off: None,
            status: AllocationStatus::Confirmed,
            confidence: 0.9,
            stage: None,
            reasons: vec![],
        };
        let id = payment_id(3, "tx-1", "inv-1", 1);
        let (data, amount) = payment_of(&id, 3, &a, &tx, "091").unwrap();
        assert_eq!(
            amount.to_string(),
            Money::new("100.00".parse().unwrap(), a.currency)
                .unwrap()
                .to_string()
        );
        let Entity::Payment(p) = Entity::from_value(EntityKind::Payment, data.clone()).unwrap()
        else {
            panic!()
        };
        assert_eq!(p.allocations.len(), 1);
        assert_eq!(p.allocations[0].invoice.as_str(), "inv-1");
        assert_eq!(
            p.allocations[0].amount,
            "100.00".parse::<Decimal>().unwrap()
        );
        assert_eq!(p.date.to_string(), "2026-11-05");
        assert_eq!(p.reference.as_deref(), Some("RE-1 RE-2"));
        assert_eq!(p.customer.unwrap().as_str(), "cust-1");
        assert_eq!(data["bank_transaction"], "tx-1");
        assert_eq!(data["deposit_account"], "091");
        assert_eq!(data["payer"], "Muster GmbH");
        assert_eq!(data["allocations"][0]["invoice_number"], "RE-1");
    }
}
