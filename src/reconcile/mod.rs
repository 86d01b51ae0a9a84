//! Reconciliation: matching bank receipts to open receivables.
//!
//! [`reconcile`] is a pure function over data. For every receipt (a credit
//! bank transaction) it collects candidate allocations in stages, cheapest
//! first, each scored with its reasons:
//!
//! 1. **reference** — the end-to-end id, the creditor reference, or an
//!    ISO 11649 `RF…` reference typed into the text equals an invoice's
//!    reference or number;
//! 2. **invoice number** in the remittance text, tolerant of case, spacing,
//!    separators, prefixes and dropped leading zeros (`INV-2026-000123`,
//!    `inv2026000123`, `Invoice 2026/123`, `RE 2026-000123`), several per
//!    text;
//! 3. **payer** — an account known for the customer, or a payer name similar
//!    to the customer's (legal forms, case, accents and spacing ignored) —
//!    plus the amount;
//! 4. **combined** — one receipt for several invoices of one customer and
//!    currency, by bounded subset-sum;
//! 5. **partial** and **overpayment** — less than the open amount (with a
//!    reference), or more (the open amount is allocated, the excess
//!    reported);
//! 6. **tolerance** — a shortfall within the fee/FX tolerance is matched
//!    with a write-off suggestion.
//!
//! The best candidate's score is the receipt's confidence. At or above
//! [`Config::auto_threshold`] it is matched automatically, between the
//! thresholds suggested, below it stays open. A second candidate within
//! [`Config::ambiguity_margin`] of the best (half of it when the best fits
//! the amount exactly and the other does not), or another receipt claiming
//! the same invoice with similar evidence, caps the confidence at the auto
//! threshold less the margin: ambiguity is never matched automatically.
//!
//! Receipts are settled greedily by confidence; every allocation reduces the
//! invoice's open amount for the receipts that follow, so an invoice is never
//! allocated beyond its open amount and a receipt never beyond its amount.
//! Candidates come from indexes (reference and invoice-number tokens, payer
//! account, payer name, amount and currency), so the cost grows with the
//! number of receipts and invoices, not their product. Money stays
//! [`Decimal`] in one currency throughout; an invoice in another currency is
//! never a candidate.

mod engine;
pub mod file;
mod index;
mod normalize;
mod par;
pub mod push;
pub mod report;
pub mod scenario;
pub mod stored;
mod subset;

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::model::Currency;

pub use engine::{Profile, reconcile, reconcile_profiled};

/// A credit bank transaction to be matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// Unique id of the transaction (the bank's reference).
    pub id: String,
    /// Booking date.
    pub booking_date: NaiveDate,
    /// Amount received; only positive amounts are matched.
    pub amount: Decimal,
    /// Currency of `amount`.
    pub currency: Currency,
    /// Name of the payer as the bank reports it.
    pub counterparty_name: Option<String>,
    /// Account (IBAN or other) of the payer.
    pub counterparty_account: Option<String>,
    /// Unstructured remittance text.
    pub remittance: Option<String>,
    /// End-to-end id set by the payer.
    pub end_to_end_id: Option<String>,
    /// Structured creditor reference (ISO 11649 `RF…` or national).
    pub creditor_reference: Option<String>,
}

/// An open receivable (invoice) and what is known about its customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Receivable {
    /// Business invoice number; unique among the receivables.
    pub invoice_number: String,
    /// Customer id; invoices with the same id belong to one customer, whose
    /// names and accounts are the union over them.
    pub customer_id: String,
    /// Customer name as invoiced.
    pub customer_name: String,
    /// Accounts the customer is known to pay from.
    pub payer_accounts: Vec<String>,
    /// Other names the customer pays under (aliases).
    pub payer_names: Vec<String>,
    /// Currency of the invoice.
    pub currency: Currency,
    /// Gross total.
    pub total: Decimal,
    /// Amount still open; zero or less means nothing to match.
    pub open_amount: Decimal,
    /// Issue date.
    pub issue_date: Option<NaiveDate>,
    /// Due date.
    pub due_date: Option<NaiveDate>,
    /// The invoice's own payment reference (ISO 11649 `RF…` or other).
    pub reference: Option<String>,
}

/// Fee and FX tolerance: a shortfall is accepted when it is at most the
/// absolute tolerance of the currency **and** at most `relative` × the open
/// amount. A currency without an absolute tolerance accepts no shortfall.
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerance {
    /// Share of the open amount, e.g. 0.02 for 2 %.
    pub relative: Decimal,
    /// Largest shortfall per currency, in the currency's units.
    pub absolute: BTreeMap<Currency, Decimal>,
}

impl Tolerance {
    /// The shortfall accepted on an open amount of `open` in `currency`.
    pub fn allowance(&self, currency: Currency, open: Decimal) -> Decimal {
        let abs = self
            .absolute
            .get(&currency)
            .copied()
            .unwrap_or(Decimal::ZERO);
        let rel = open.abs().checked_mul(self.relative).unwrap_or(abs);
        abs.min(rel).max(Decimal::ZERO)
    }
}

impl Default for Tolerance {
    /// 2 %, capped at typical international transfer charges: 25 in EUR,
    /// USD, GBP, CHF, CAD, SGD; 40 AUD; 200 CNY, HKD, DKK; 250 SEK, NOK;
    /// 100 PLN; 600 CZK; 10,000 HUF; 4,000 JPY.
    fn default() -> Self {
        let mut absolute = BTreeMap::new();
        for (code, amount) in [
            ("EUR", 25),
            ("USD", 25),
            ("GBP", 25),
            ("CHF", 25),
            ("CAD", 25),
            ("SGD", 25),
            ("AUD", 40),
            ("CNY", 200),
            ("HKD", 200),
            ("DKK", 200),
            ("SEK", 250),
            ("NOK", 250),
            ("PLN", 100),
            ("CZK", 600),
            ("HUF", 10_000),
            ("JPY", 4_000),
        ] {
            if let Ok(c) = Currency::parse(code) {
                absolute.insert(c, Decimal::from(amount));
            }
        }
        Tolerance {
            relative: Decimal::new(2, 2),
            absolute,
        }
    }
}

/// Bounds of the combined-payment search per receipt and customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubsetLimits {
    /// Open items of the customer considered (the oldest by due date).
    pub max_items: usize,
    /// Most invoices one receipt is taken to pay.
    pub max_parts: usize,
    /// Search steps (about 5 ns each) before giving up.
    pub max_steps: u64,
}

impl Default for SubsetLimits {
    fn default() -> Self {
        SubsetLimits {
            max_items: 24,
            max_parts: 6,
            max_steps: 200_000,
        }
    }
}

/// Matching parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Confidence at or above which a match is made without review.
    pub auto_threshold: f64,
    /// Confidence at or above which a match is suggested.
    pub suggest_threshold: f64,
    /// A second candidate (or a competing receipt) scoring within this much
    /// of the best makes the match ambiguous: never automatic.
    pub ambiguity_margin: f64,
    /// Fee and FX tolerance.
    pub tolerance: Tolerance,
    /// Combined-payment search bounds.
    pub subset: SubsetLimits,
    /// Most invoices one amount, or customers one name key, may point to
    /// before the look-up is considered uninformative.
    pub max_fanout: usize,
}

impl Config {
    /// What is wrong with the thresholds, if anything: each in [0, 1], and
    /// suggesting no stricter than matching.
    pub fn problem(&self) -> Option<String> {
        let ok = |x: f64| (0.0..=1.0).contains(&x);
        if !ok(self.auto_threshold) || !ok(self.suggest_threshold) || !ok(self.ambiguity_margin) {
            return Some(format!(
                "must lie in [0, 1]: auto {}, suggest {}, ambiguity margin {}",
                self.auto_threshold, self.suggest_threshold, self.ambiguity_margin
            ));
        }
        (self.suggest_threshold > self.auto_threshold).then(|| {
            format!(
                "the suggestion threshold {} is above the auto threshold {}",
                self.suggest_threshold, self.auto_threshold
            )
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            auto_threshold: 0.90,
            suggest_threshold: 0.50,
            ambiguity_margin: 0.05,
            tolerance: Tolerance::default(),
            subset: SubsetLimits::default(),
            max_fanout: 8,
        }
    }
}

/// What became of a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Matched without review.
    Auto,
    /// A match to be confirmed.
    Suggested,
    /// No candidate good enough.
    Open,
}

impl Status {
    /// The snake-case name used in files.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Auto => "auto",
            Status::Suggested => "suggested",
            Status::Open => "open",
        }
    }
}

/// The stage whose evidence decided a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// A structured reference equals the invoice's.
    Reference,
    /// The invoice number is in the remittance text.
    InvoiceNumber,
    /// Known payer account or similar payer name, and the amount.
    Payer,
    /// Several invoices of one customer paid at once.
    Combined,
    /// Less than the open amount, with a reference.
    Partial,
    /// More than the open amount.
    Overpayment,
    /// A shortfall within the fee/FX tolerance.
    Tolerance,
    /// Only the amount fits.
    Amount,
}

impl Stage {
    /// Every stage, in the order of the documentation.
    pub const ALL: [Stage; 8] = [
        Stage::Reference,
        Stage::InvoiceNumber,
        Stage::Payer,
        Stage::Combined,
        Stage::Partial,
        Stage::Overpayment,
        Stage::Tolerance,
        Stage::Amount,
    ];

    /// The snake-case name used in files.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Reference => "reference",
            Stage::InvoiceNumber => "invoice_number",
            Stage::Payer => "payer",
            Stage::Combined => "combined",
            Stage::Partial => "partial",
            Stage::Overpayment => "overpayment",
            Stage::Tolerance => "tolerance",
            Stage::Amount => "amount",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Part of a receipt applied to one receivable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Index into the receivables.
    pub invoice: usize,
    /// Amount applied, in the common currency.
    pub amount: Decimal,
}

/// Where a matching reference was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceSource {
    /// The end-to-end id.
    EndToEndId,
    /// The structured creditor reference.
    CreditorReference,
    /// An ISO 11649 reference typed into the remittance text.
    RemittanceText,
}

/// How closely the text matched an invoice number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NumberMatch {
    /// Digits run together or split differently from the invoice.
    Joined,
    /// The same digit groups; prefix, separators or zeros differ.
    Digits,
    /// Letters and digits as on the invoice.
    Full,
}

/// One piece of evidence for or against a candidate, or a note on the
/// receipt. Invoice fields index the receivables; [`describe`] renders it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// A structured reference equals the invoice's reference or number.
    Reference {
        invoice: usize,
        source: ReferenceSource,
    },
    /// The invoice number appears in the remittance text.
    InvoiceNumber {
        invoice: usize,
        quality: NumberMatch,
        significant_digits: usize,
    },
    /// The payer's account is known for this invoice's customer.
    PayerAccount { invoice: usize },
    /// The payer's name is similar to this invoice's customer.
    PayerName { invoice: usize, similarity: f64 },
    /// The payer's account is known, but for other customers only.
    PayerAccountOfOthers { invoice: usize },
    /// The payer's name is similar to other customers, not this one.
    PayerNameOfOthers { invoice: usize },
    /// The payer was identified, but none of the customer's open items
    /// fits the amount.
    PayerWithoutFit { invoice: usize, items: usize },
    /// The receipt equals the open amount.
    AmountExact,
    /// The receipt equals the sum of the open amounts of several invoices.
    AmountSum { invoices: usize },
    /// The receipt falls short by this much, within tolerance: write it off.
    Shortfall { amount: Decimal },
    /// The receipt pays only part of the open amount.
    Partial { open: Decimal },
    /// The receipt exceeds what it pays by this much.
    Overpayment { excess: Decimal },
    /// Nothing but the amount links the receipt to the invoice.
    AmountOnly { invoices: usize },
    /// The combined-payment search did not finish within its bounds.
    SearchIncomplete,
    /// The receipt was booked before the invoice was issued.
    BeforeIssue { invoice: usize },
    /// Other candidates score within the ambiguity margin.
    Ambiguous { alternatives: usize, runner_up: f64 },
    /// Another receipt claims the same invoice with similar evidence.
    Contested { receipt: usize },
    /// The invoice was found but is in another currency.
    OtherCurrency { invoice: usize },
    /// Only the amount points at more invoices than are worth suggesting.
    ManyWithAmount { invoices: usize },
    /// The receipt is not a credit.
    NotACredit,
    /// No candidate at all.
    NoCandidate,
    /// The best candidate scores below the suggestion threshold.
    BelowThreshold { score: f64 },
    /// The invoice was settled by another receipt of this run.
    Settled { invoice: usize },
}

/// Another allocation the engine considered for a receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    /// Its allocations.
    pub allocations: Vec<Allocation>,
    /// Its score.
    pub score: f64,
    /// The stage that found it.
    pub stage: Stage,
}

/// The outcome for one receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Index into the receipts.
    pub receipt: usize,
    /// Auto, suggested or open.
    pub status: Status,
    /// Confidence in [0, 1] of the best candidate (after ambiguity caps);
    /// zero when there was none.
    pub confidence: f64,
    /// Stage of the chosen candidate.
    pub stage: Option<Stage>,
    /// Allocations (empty when open).
    pub allocations: Vec<Allocation>,
    /// Shortfall within tolerance suggested for write-off, and the invoice
    /// it closes.
    pub write_off: Option<Allocation>,
    /// Part of the receipt not allocated (an overpayment, or all of an open
    /// receipt).
    pub unallocated: Decimal,
    /// Evidence for the chosen candidate and notes on the receipt.
    pub reasons: Vec<Reason>,
    /// Other candidates still possible when the decision was made, best
    /// first (at most three).
    pub alternatives: Vec<Alternative>,
}

/// A receivable left out of matching, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    /// Index into the receivables.
    pub invoice: usize,
    /// What is wrong with it.
    pub problem: String,
}

/// The result of [`reconcile`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciliation {
    /// One decision per receipt, in input order.
    pub decisions: Vec<Decision>,
    /// Open amount of each receivable after automatic allocations and
    /// write-offs.
    pub open_after_auto: Vec<Decimal>,
    /// Open amount of each receivable after automatic and suggested
    /// allocations and write-offs.
    pub open_after_all: Vec<Decimal>,
    /// Receivables that took no part, with the problem.
    pub excluded: Vec<Excluded>,
}

/// Renders a reason as a sentence for people.
///
/// `receipt` indexes `receipts` (the receipt the reason belongs to).
pub fn describe(
    reason: &Reason,
    receipt: usize,
    receipts: &[Receipt],
    receivables: &[Receivable],
) -> String {
    let this = &receipts[receipt.min(receipts.len().saturating_sub(1))];
    let inv = |i: &usize| -> &str {
        receivables
            .get(*i)
            .map_or("(unknown invoice)", |r| r.invoice_number.as_str())
    };
    let customer = |i: &usize| -> String {
        receivables.get(*i).map_or_else(String::new, |r| {
            format!("customer {} ({})", r.customer_id, r.customer_name)
        })
    };
    let receipt_id =
        |k: &usize| -> &str { receipts.get(*k).map_or("(unknown)", |r| r.id.as_str()) };
    let receipt = this;
    let ccy = receipt.currency;
    match reason {
        Reason::Reference { invoice, source } => {
            let what = match source {
                ReferenceSource::EndToEndId => "end-to-end id",
                ReferenceSource::CreditorReference => "creditor reference",
                ReferenceSource::RemittanceText => "RF reference in the remittance text",
            };
            format!("{what} matches invoice {}", inv(invoice))
        }
        Reason::InvoiceNumber {
            invoice,
            quality,
            significant_digits,
        } => {
            let how = match quality {
                NumberMatch::Full => "as written on the invoice",
                NumberMatch::Digits => "with other separators, prefix or zeros",
                NumberMatch::Joined => "with its digits joined or split differently",
            };
            format!(
                "invoice number {} found in the remittance text {how} ({significant_digits} significant digits)",
                inv(invoice)
            )
        }
        Reason::PayerAccount { invoice } => format!(
            "payer account {} is known for {}",
            receipt.counterparty_account.as_deref().unwrap_or(""),
            customer(invoice)
        ),
        Reason::PayerName {
            invoice,
            similarity,
        } => format!(
            "payer name {:?} is similar to {} (similarity {:.2})",
            receipt.counterparty_name.as_deref().unwrap_or(""),
            customer(invoice),
            similarity
        ),
        Reason::PayerAccountOfOthers { invoice } => format!(
            "payer account {} is known for other customers, not for {}",
            receipt.counterparty_account.as_deref().unwrap_or(""),
            customer(invoice)
        ),
        Reason::PayerNameOfOthers { invoice } => format!(
            "payer name {:?} is similar to other customers, not to {}",
            receipt.counterparty_name.as_deref().unwrap_or(""),
            customer(invoice)
        ),
        Reason::PayerWithoutFit { invoice, items } => {
            if *items == 0 {
                format!(
                    "payer identified as {}, who has no open item in {ccy}",
                    customer(invoice)
                )
            } else {
                format!(
                    "payer identified as {}, but none of their {items} open item(s) in {ccy} fits the amount",
                    customer(invoice)
                )
            }
        }
        Reason::AmountExact => format!("amount {} {ccy} equals the open amount", receipt.amount),
        Reason::AmountSum { invoices } => format!(
            "amount {} {ccy} equals the open amounts of {invoices} invoices together",
            receipt.amount
        ),
        Reason::Shortfall { amount } => format!(
            "short by {amount} {ccy}, within the fee/FX tolerance: write off {amount} {ccy}"
        ),
        Reason::Partial { open } => format!(
            "partial payment: {} {ccy} of {open} {ccy} open",
            receipt.amount
        ),
        Reason::Overpayment { excess } => {
            format!("overpayment: {excess} {ccy} more than the open amount stays unallocated")
        }
        Reason::AmountOnly { invoices } => {
            if *invoices == 1 {
                format!(
                    "only the amount fits: one open invoice of {} {ccy}",
                    receipt.amount
                )
            } else {
                format!(
                    "only the amount fits: {invoices} open invoices of {} {ccy}",
                    receipt.amount
                )
            }
        }
        Reason::SearchIncomplete => {
            "the search for invoices paid together stopped at its bounds; other combinations may exist".to_owned()
        }
        Reason::BeforeIssue { invoice } => format!(
            "booked {} before invoice {} was issued",
            receipt.booking_date,
            inv(invoice)
        ),
        Reason::Ambiguous {
            alternatives,
            runner_up,
        } => format!(
            "ambiguous: {alternatives} other candidate(s) score nearly as well (next best {runner_up:.2})"
        ),
        Reason::Contested { receipt } => format!(
            "receipt {} claims the same invoice with similar evidence (possible duplicate payment)",
            receipt_id(receipt)
        ),
        Reason::OtherCurrency { invoice } => format!(
            "invoice {} is referenced but is in {}, not {ccy}",
            inv(invoice),
            receivables
                .get(*invoice)
                .map_or("another currency".to_owned(), |r| r.currency.to_string())
        ),
        Reason::ManyWithAmount { invoices } => format!(
            "{invoices} open invoices have exactly this amount: too many to suggest one"
        ),
        Reason::NotACredit => "not a credit: only money received is matched".to_owned(),
        Reason::NoCandidate => "no open invoice fits by reference, payer or amount".to_owned(),
        Reason::BelowThreshold { score } => {
            format!("best candidate scores {score:.2}, below the suggestion threshold")
        }
        Reason::Settled { invoice } => format!(
            "invoice {} was already settled by another receipt in this run",
            inv(invoice)
        ),
    }
}
