//! The matching engine behind [`reconcile`]: indexes over the receivables,
//! the candidate stages per receipt, scoring, and the greedy allocation.
//!
//! # Scoring
//! A candidate's score comes from a table indexed by how the invoice was
//! identified and how the amount fits (see [`base`]): a structured reference
//! with the exact amount scores 0.99, an invoice number with six or more
//! significant digits 0.97, a known payer account with a unique exact amount
//! 0.93, a payer name 0.80–0.92 by similarity, the amount alone 0.60.
//! Shortfalls within tolerance, partial payments and overpayments score
//! lower; a partial or overpayment found by reference reaches the auto
//! threshold only when the payer agrees. A reference-based candidate gains
//! 0.03 when the payer agrees (known account or similar name), loses 0.25
//! when the payer's account is known for other customers only, and 0.10
//! when the payer's name matches other customers only; any candidate loses
//! 0.15 per invoice issued after the receipt was booked.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::index::KeyIndex;
use super::normalize::{self, KeyKind, NormName, NumberQuality, PairMemo, Vocabulary};
use super::par::par_map;
use super::subset::{self, Bounds};
use super::{
    Allocation, Alternative, Config, Decision, Excluded, NumberMatch, Reason, Receipt, Receivable,
    Reconciliation, ReferenceSource, Stage, Status,
};
use crate::model::Currency;

/// How an invoice was identified.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Id {
    Structured,
    Number(Strength),
    Account,
    /// Name similarity mapped to [0, 1] over the accepted range.
    Name(f64),
    Amount,
}

impl Id {
    /// Order of strength among the reference kinds.
    fn rank(self) -> u8 {
        match self {
            Id::Structured => 6,
            Id::Number(s) => 2 + s as u8,
            Id::Account => 1,
            Id::Name(_) | Id::Amount => 0,
        }
    }
}

/// Strength of an invoice number found in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Strength {
    Weak = 0,
    Medium = 1,
    Strong = 2,
    Full = 3,
}

fn strength(quality: NumberQuality, significant: usize) -> Strength {
    match quality {
        NumberQuality::Full if significant >= 4 => Strength::Full,
        NumberQuality::Digits if significant >= 6 => Strength::Strong,
        NumberQuality::Full | NumberQuality::Digits if significant >= 4 => Strength::Medium,
        NumberQuality::Joined if significant >= 6 => Strength::Medium,
        NumberQuality::Full if significant >= 1 => Strength::Medium,
        _ => Strength::Weak,
    }
}

/// How a receipt's amount relates to what is open.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fit {
    Exact,
    /// Short by this much, within tolerance.
    Short(Decimal),
    /// Short by more than the tolerance.
    Partial,
    /// More than open by this much.
    Over(Decimal),
}

fn fit(amount: Decimal, open: Decimal, allowance: Decimal) -> Fit {
    match amount.cmp(&open) {
        Ordering::Equal => Fit::Exact,
        Ordering::Greater => Fit::Over(amount - open),
        Ordering::Less => {
            let short = open - amount;
            if short <= allowance {
                Fit::Short(short)
            } else {
                Fit::Partial
            }
        }
    }
}

/// Payer names below this similarity are not evidence.
const NAME_MIN: f64 = 0.85;

fn name_level(similarity: f64) -> f64 {
    ((similarity - NAME_MIN) / (1.0 - NAME_MIN)).clamp(0.0, 1.0)
}

/// The score table: identification × amount fit.
fn base(id: Id, fit: Fit) -> f64 {
    let (exact, short, partial, over) = match id {
        // A partial or overpayment does not confirm the reference with its
        // amount: it reaches the auto threshold only when the payer agrees.
        Id::Structured => (0.99, 0.95, 0.89, 0.89),
        Id::Number(Strength::Full) => (0.98, 0.94, 0.88, 0.88),
        Id::Number(Strength::Strong) => (0.97, 0.93, 0.87, 0.87),
        Id::Number(Strength::Medium) => (0.88, 0.82, 0.70, 0.70),
        Id::Number(Strength::Weak) => (0.65, 0.55, 0.40, 0.40),
        // A known payer with exactly one open item within the fee
        // tolerance of the receipt is cleared with a write-off, as ERP
        // tolerance groups do for an identified customer.
        Id::Account => (0.93, 0.90, 0.45, 0.45),
        Id::Name(t) => (0.80 + 0.12 * t, 0.74 + 0.08 * t, 0.40, 0.40),
        Id::Amount => (0.60, 0.0, 0.0, 0.0),
    };
    match fit {
        Fit::Exact => exact,
        Fit::Short(_) => short,
        Fit::Partial => partial,
        Fit::Over(_) => over,
    }
}

/// Score of several invoices of one customer found by the payer alone.
fn payer_combined(id: Id, exact: bool) -> f64 {
    match (id, exact) {
        (Id::Account, true) => 0.91,
        (Id::Account, false) => 0.80,
        (Id::Name(t), true) => 0.78 + 0.12 * t,
        (Id::Name(t), false) => 0.70 + 0.08 * t,
        _ => 0.0,
    }
}

const AGREE_BONUS: f64 = 0.03;
const OTHER_PAYER_PENALTY: f64 = 0.25;
/// The payer's name matches other customers and not this one.
const OTHER_NAME_PENALTY: f64 = 0.10;
const BEFORE_ISSUE_PENALTY: f64 = 0.15;
/// Candidates kept per receipt.
const MAX_CANDIDATES: usize = 8;
/// Invoice hits from one receipt's text considered.
const MAX_HITS: usize = 50;
/// Invoices referenced together that form one combined candidate.
const MAX_REFERENCED_TOGETHER: usize = 20;
/// Customers one payer name is compared with.
const MAX_NAME_CANDIDATES: usize = 64;
/// Posting lists longer than this say nothing about a name.
const MAX_NAME_POSTING: usize = 256;

// ---------------------------------------------------------------------------
// Profile

/// Where [`reconcile`] spent its time and how much work the bounded stages
/// did, for benchmarks ([`reconcile_profiled`]). Phases are wall time; the
/// candidate stages are CPU time summed over the threads that search in
/// parallel, each exclusive of the others.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// Building the indexes over the receivables (wall).
    pub prepare: Duration,
    /// Finding and scoring every receipt's candidates (wall, parallel).
    pub candidates: Duration,
    /// Greedy allocation by confidence (wall).
    pub decide: Duration,
    /// Stage 1 and 2: references and invoice numbers in the text (CPU).
    pub references: Duration,
    /// Finding customers by payer-name keys (CPU).
    pub name_lookup: Duration,
    /// Comparing payer names with customers' names (CPU).
    pub name_similarity: Duration,
    /// Combined-payment subset searches (CPU).
    pub subsets: Duration,
    /// Everything else in the candidate search: accounts, amounts,
    /// scoring, ranking (CPU).
    pub other: Duration,
    /// Payer names looked up by key.
    pub name_searches: u64,
    /// Customers whose names were compared with a payer name.
    pub names_compared: u64,
    /// Subset searches run.
    pub subset_searches: u64,
    /// Steps those searches took.
    pub subset_steps: u64,
}

/// Per-thread counters behind [`Profile`]; off unless profiling.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    on: bool,
    total: u64,
    references: u64,
    name_lookup: u64,
    name_similarity: u64,
    subsets: u64,
    name_searches: u64,
    names_compared: u64,
    subset_searches: u64,
    subset_steps: u64,
}

impl Tally {
    fn start(&self) -> Option<Instant> {
        self.on.then(Instant::now)
    }

    fn add(&mut self, slot: fn(&mut Tally) -> &mut u64, since: Option<Instant>) -> u64 {
        match since {
            Some(t) => {
                let ns = t.elapsed().as_nanos() as u64;
                *slot(self) += ns;
                ns
            }
            None => 0,
        }
    }

    fn merge(&mut self, o: &Tally) {
        self.total += o.total;
        self.references += o.references;
        self.name_lookup += o.name_lookup;
        self.name_similarity += o.name_similarity;
        self.subsets += o.subsets;
        self.name_searches += o.name_searches;
        self.names_compared += o.names_compared;
        self.subset_searches += o.subset_searches;
        self.subset_steps += o.subset_steps;
    }
}

// ---------------------------------------------------------------------------
// Preparation

struct Customer {
    /// Names as given, for comparison with names a bank cut short.
    raw_names: Vec<Box<str>>,
    /// The names cut at each of [`NAME_FIELD_LENGTHS`], normalised when
    /// first needed.
    cut: [OnceLock<Box<[NormName]>>; NAME_FIELD_LENGTHS.len()],
    /// Valid invoices, by currency, due date, issue date, number.
    items: Vec<u32>,
}

impl Customer {
    /// The customer's names as a bank field of `NAME_FIELD_LENGTHS[field]`
    /// characters keeps them, normalised. Computed once for all receipts
    /// (whichever thread asks first; the value is the same).
    fn cut_names(&self, field: usize) -> &[NormName] {
        self.cut[field].get_or_init(|| {
            let len = NAME_FIELD_LENGTHS[field];
            self.raw_names
                .iter()
                .map(|raw| normalize::normalize_name(&normalize::truncate_folded(raw, len)))
                .collect()
        })
    }
}

struct Prepared<'a> {
    inv: &'a [Receivable],
    valid: Vec<bool>,
    customer_of: Vec<u32>,
    /// Significant digits of the invoice number and of its reference.
    significant: Vec<[u8; 2]>,
    customers: Vec<Customer>,
    /// The words of the customers' names.
    vocabulary: Vocabulary,
    /// Each customer's names as words ([`normalize::word_names`]): those
    /// of customer `c` are `name_data[name_at[c]..name_at[c + 1]]`, so the
    /// names of the customers a payer name is compared with are read from
    /// one array.
    name_at: Vec<u32>,
    name_data: Vec<u32>,
    /// Number keys → invoice << 1 | (1 if from the invoice's reference).
    numbers: KeyIndex,
    /// Structured reference keys → invoice.
    references: KeyIndex,
    /// Account keys → customer.
    accounts: KeyIndex,
    /// Name keys → customer.
    names: KeyIndex,
    /// (currency, open amount) → invoice.
    amounts: KeyIndex,
    max_groups: usize,
    /// The fields the candidate search reads most, side by side.
    open: Vec<Decimal>,
    currency: Vec<Currency>,
    issued: Vec<Option<NaiveDate>>,
}

impl Prepared<'_> {
    /// Invoice `i` was issued by the receipt's booking date (or has no
    /// issue date).
    fn issued_by(&self, i: u32, r: &Receipt) -> bool {
        self.issued[i as usize].is_none_or(|d| d <= r.booking_date)
    }
}

fn amount_key(currency: Currency, amount: Decimal) -> u64 {
    let n = amount.normalize();
    let mut bytes = [0u8; 3 + 16 + 1];
    bytes[..3].copy_from_slice(currency.as_str().as_bytes());
    bytes[3..19].copy_from_slice(&n.mantissa().to_le_bytes());
    bytes[19] = n.scale() as u8;
    normalize::key(KeyKind::Amount, &bytes)
}

fn cmp_due(a: &Receivable, b: &Receivable) -> Ordering {
    // Missing dates sort last.
    let d = |x: Option<chrono::NaiveDate>| (x.is_none(), x);
    d(a.due_date)
        .cmp(&d(b.due_date))
        .then_with(|| d(a.issue_date).cmp(&d(b.issue_date)))
        .then_with(|| a.invoice_number.cmp(&b.invoice_number))
}

fn prepare(inv: &[Receivable]) -> (Prepared<'_>, Vec<Excluded>) {
    let n = inv.len();
    let mut excluded = Vec::new();
    let mut valid: Vec<bool> = inv.iter().map(|r| r.open_amount > Decimal::ZERO).collect();
    for (i, r) in inv.iter().enumerate() {
        if r.open_amount < Decimal::ZERO {
            excluded.push(Excluded {
                invoice: i,
                problem: format!(
                    "invoice {} has a negative open amount ({} {})",
                    r.invoice_number, r.open_amount, r.currency
                ),
            });
        }
    }
    // Duplicate numbers: which copy is right cannot be told, so none is used.
    let mut copies: HashMap<&str, u32> = HashMap::with_capacity(n);
    for r in inv {
        *copies.entry(r.invoice_number.as_str()).or_default() += 1;
    }
    for (i, r) in inv.iter().enumerate() {
        let k = copies[r.invoice_number.as_str()];
        if k > 1 {
            valid[i] = false;
            excluded.push(Excluded {
                invoice: i,
                problem: format!(
                    "invoice number {} appears {k} times; none of them is matched",
                    r.invoice_number
                ),
            });
        }
    }
    drop(copies);
    excluded.sort_by_key(|e| e.invoice);

    // Customers, numbered in id order so that input order does not matter;
    // each customer's invoices in input order.
    let mut first: HashMap<&str, u32> = HashMap::new();
    let mut ids: Vec<&str> = Vec::new();
    let group: Vec<u32> = inv
        .iter()
        .map(|r| {
            *first.entry(r.customer_id.as_str()).or_insert_with(|| {
                ids.push(&r.customer_id);
                ids.len() as u32 - 1
            })
        })
        .collect();
    drop(first);
    let mut by_id: Vec<u32> = (0..ids.len() as u32).collect();
    by_id.sort_unstable_by_key(|&g| ids[g as usize]);
    let mut number_of = vec![0u32; ids.len()];
    for (c, &g) in by_id.iter().enumerate() {
        number_of[g as usize] = c as u32;
    }
    let customer_of: Vec<u32> = group.iter().map(|&g| number_of[g as usize]).collect();
    drop((group, number_of, by_id));
    let n_customers = ids.len();
    let mut member_at = vec![0u32; n_customers + 1];
    for &c in &customer_of {
        member_at[c as usize + 1] += 1;
    }
    for c in 0..n_customers {
        member_at[c + 1] += member_at[c];
    }
    let mut members = vec![0u32; n];
    let mut fill = member_at.clone();
    for (i, &c) in customer_of.iter().enumerate() {
        members[fill[c as usize] as usize] = i as u32;
        fill[c as usize] += 1;
    }
    drop(fill);

    // What each customer is known by, on every core.
    let numbers: Vec<u32> = (0..n_customers as u32).collect();
    let (known, _) = par_map(
        &numbers,
        || (),
        |&c, ()| {
            let group =
                &members[member_at[c as usize] as usize..member_at[c as usize + 1] as usize];
            customer_known(inv, &valid, group)
        },
    );
    drop(numbers);
    let mut customers = Vec::with_capacity(n_customers);
    let mut account_pairs = Vec::new();
    let mut name_pairs = Vec::new();
    let mut vocabulary = Vocabulary::default();
    let mut name_at = Vec::with_capacity(n_customers + 1);
    name_at.push(0u32);
    let mut name_data = Vec::new();
    for (c, k) in known.into_iter().enumerate() {
        let c = c as u32;
        name_pairs.extend(k.name_keys.iter().map(|&key| (key, c)));
        account_pairs.extend(k.account_keys.iter().map(|&key| (key, c)));
        for name in &k.names {
            vocabulary.intern(name, &mut name_data);
        }
        name_at.push(name_data.len() as u32);
        customers.push(Customer {
            raw_names: k.raw_names,
            cut: Default::default(),
            items: k.items,
        });
    }
    vocabulary.freeze();

    // Keys of every invoice, on every core.
    let rows: Vec<u32> = (0..n as u32).collect();
    let (keys, _) = par_map(
        &rows,
        || (),
        |&i, ()| valid[i as usize].then(|| invoice_keys(&inv[i as usize])),
    );
    drop(rows);
    let mut number_pairs = Vec::with_capacity(3 * n);
    let mut reference_pairs = Vec::new();
    let mut amount_pairs = Vec::with_capacity(n);
    let mut significant = vec![[0u8; 2]; n];
    let mut max_groups = 1;
    for (i, k) in keys.iter().enumerate() {
        let Some(k) = k else { continue };
        let i32_ = i as u32;
        for (slot, nk) in k.numbers.iter().enumerate() {
            let Some(nk) = nk else { continue };
            let v = i32_ << 1 | slot as u32;
            number_pairs.push((nk.full, v));
            number_pairs.extend(nk.separated.map(|s| (s, v)));
            number_pairs.extend(nk.concatenated.map(|s| (s, v)));
            significant[i][slot] = nk.significant.min(255) as u8;
            max_groups = max_groups.max(nk.groups.min(6));
        }
        reference_pairs.extend(k.references.iter().flatten().map(|&r| (r, i32_)));
        amount_pairs.push((k.amount, i32_));
    }
    drop(keys);
    // The number index is the largest: build it beside the others.
    let (numbers, (references, accounts, names, amounts)) = std::thread::scope(|s| {
        let numbers = s.spawn(|| KeyIndex::build(number_pairs));
        let rest = (
            KeyIndex::build(reference_pairs),
            KeyIndex::build(account_pairs),
            KeyIndex::build(name_pairs),
            KeyIndex::build(amount_pairs),
        );
        match numbers.join() {
            Ok(numbers) => (numbers, rest),
            Err(e) => std::panic::resume_unwind(e),
        }
    });
    let prepared = Prepared {
        inv,
        valid,
        customer_of,
        significant,
        customers,
        vocabulary,
        name_at,
        name_data,
        numbers,
        references,
        accounts,
        names,
        amounts,
        max_groups,
        open: inv.iter().map(|r| r.open_amount).collect(),
        currency: inv.iter().map(|r| r.currency).collect(),
        issued: inv.iter().map(|r| r.issue_date).collect(),
    };
    (prepared, excluded)
}

/// What a customer is known by, from its invoices `group` (in input
/// order).
struct Known {
    raw_names: Vec<Box<str>>,
    names: Vec<NormName>,
    name_keys: Vec<u64>,
    account_keys: Vec<u64>,
    /// Valid invoices, by currency, due date, issue date, number.
    items: Vec<u32>,
}

fn customer_known(inv: &[Receivable], valid: &[bool], group: &[u32]) -> Known {
    let mut raw_names: Vec<&str> = Vec::new();
    let mut accounts: Vec<String> = Vec::new();
    let mut items = Vec::new();
    for &i in group {
        let r = &inv[i as usize];
        raw_names.push(&r.customer_name);
        raw_names.extend(r.payer_names.iter().map(String::as_str));
        accounts.extend(
            r.payer_accounts
                .iter()
                .filter_map(|a| normalize::account(a)),
        );
        if valid[i as usize] {
            items.push(i);
        }
    }
    raw_names.sort_unstable();
    raw_names.dedup();
    let mut names: Vec<NormName> = raw_names
        .iter()
        .map(|s| normalize::normalize_name(s))
        .filter(|n| !n.is_empty())
        .collect();
    names.dedup();
    let mut name_keys = Vec::new();
    for name in &names {
        normalize::name_keys(name, &mut name_keys);
    }
    accounts.sort_unstable();
    accounts.dedup();
    let account_keys = accounts
        .iter()
        .map(|a| normalize::key(KeyKind::Account, a.as_bytes()))
        .collect();
    items.sort_by(|&a, &b| {
        let (x, y) = (&inv[a as usize], &inv[b as usize]);
        x.currency.cmp(&y.currency).then_with(|| cmp_due(x, y))
    });
    Known {
        raw_names: raw_names.iter().map(|s| Box::<str>::from(*s)).collect(),
        names,
        name_keys,
        account_keys,
        items,
    }
}

/// The index keys of one invoice: its number and its reference as
/// numbers, as structured references, and its open amount.
struct InvoiceKeys {
    numbers: [Option<normalize::NumberKeys>; 2],
    references: [Option<u64>; 2],
    amount: u64,
}

fn invoice_keys(r: &Receivable) -> InvoiceKeys {
    let texts = [Some(&r.invoice_number), r.reference.as_ref()];
    InvoiceKeys {
        numbers: texts.map(|t| t.and_then(|t| normalize::number_keys(t))),
        references: texts.map(|t| t.and_then(|t| normalize::reference_key(t))),
        amount: amount_key(r.currency, r.open_amount),
    }
}

// ---------------------------------------------------------------------------
// Candidates

#[derive(Debug, Clone)]
struct Candidate {
    /// Ascending by invoice.
    allocs: Vec<(u32, Decimal)>,
    write_off: Option<(u32, Decimal)>,
    unallocated: Decimal,
    score: f64,
    stage: Stage,
    reasons: Vec<Reason>,
}

impl Candidate {
    /// The receipt equals the open amount, or the sum of them, exactly.
    fn is_exact(&self) -> bool {
        self.reasons.iter().any(|r| {
            matches!(
                r,
                Reason::AmountExact | Reason::AmountSum { .. } | Reason::AmountOnly { .. }
            )
        })
    }

    /// What the candidate takes from invoice `i`: allocation plus write-off.
    fn need(&self, i: u32) -> Decimal {
        let a = self
            .allocs
            .iter()
            .find(|(x, _)| *x == i)
            .map_or(Decimal::ZERO, |(_, a)| *a);
        match self.write_off {
            Some((x, w)) if x == i => a + w,
            _ => a,
        }
    }

    fn needs(&self) -> impl Iterator<Item = (u32, Decimal)> + '_ {
        self.allocs.iter().map(|&(i, _)| (i, self.need(i)))
    }
}

struct Found {
    list: Vec<Candidate>,
    notes: Vec<Reason>,
}

/// Evidence that a receipt refers to one invoice.
#[derive(Debug, Clone)]
struct Hit {
    invoice: u32,
    id: Id,
    reason: Reason,
}

struct Ctx<'p, 'a> {
    p: &'p Prepared<'a>,
    cfg: &'p Config,
    r: &'p Receipt,
    owners: Vec<u32>,
    name: Option<NormName>,
    /// The bank name field (index into [`NAME_FIELD_LENGTHS`]) the payer
    /// name exactly fills.
    cut: Option<usize>,
    /// Similarity of the payer name per customer, computed on demand.
    sims: Vec<(u32, f64)>,
    /// Customers the payer's name identifies, computed on demand.
    named: Option<Vec<(u32, f64)>>,
    tally: &'p mut Tally,
    memo: &'p mut PairMemo,
}

impl Ctx<'_, '_> {
    fn similarity(&mut self, c: u32) -> f64 {
        if let Some(&(_, s)) = self.sims.iter().find(|(x, _)| *x == c) {
            return s;
        }
        let t = self.tally.start();
        self.tally.names_compared += 1;
        // Below NAME_MIN a similarity is no evidence, whatever its value.
        let s = match &self.name {
            Some(n) => {
                let p = self.p;
                let names = &p.name_data
                    [p.name_at[c as usize] as usize..p.name_at[c as usize + 1] as usize];
                let whole = normalize::word_names(names)
                    .map(|m| {
                        normalize::word_similarity_from(
                            n,
                            m,
                            &p.vocabulary,
                            &mut *self.memo,
                            NAME_MIN,
                        )
                    })
                    .fold(0.0, f64::max);
                // A name exactly as long as a bank's name field was
                // probably cut there: compare with the customer's names
                // cut at the same place.
                let cut_sim = self.cut.map_or(0.0, |field| {
                    p.customers[c as usize]
                        .cut_names(field)
                        .iter()
                        .map(|m| normalize::name_similarity_from(n, m, NAME_MIN))
                        .fold(0.0, f64::max)
                });
                whole.max(cut_sim)
            }
            None => 0.0,
        };
        self.sims.push((c, s));
        self.tally.add(|t| &mut t.name_similarity, t);
        s
    }

    fn allowance(&self, open: Decimal) -> Decimal {
        self.cfg.tolerance.allowance(self.r.currency, open)
    }

    /// Bonus or penalty for what the payer says about customer `c`, with
    /// the reason.
    fn payer_adjustment(&mut self, c: u32, invoice: u32) -> (f64, Option<Reason>) {
        if self.owners.contains(&c) {
            return (
                AGREE_BONUS,
                Some(Reason::PayerAccount {
                    invoice: invoice as usize,
                }),
            );
        }
        let s = self.similarity(c);
        if s >= NAME_MIN {
            return (
                AGREE_BONUS,
                Some(Reason::PayerName {
                    invoice: invoice as usize,
                    similarity: s,
                }),
            );
        }
        if !self.owners.is_empty() {
            return (
                -OTHER_PAYER_PENALTY,
                Some(Reason::PayerAccountOfOthers {
                    invoice: invoice as usize,
                }),
            );
        }
        if self.name.is_some() && !self.named_customers().is_empty() {
            return (
                -OTHER_NAME_PENALTY,
                Some(Reason::PayerNameOfOthers {
                    invoice: invoice as usize,
                }),
            );
        }
        (0.0, None)
    }

    /// Customers whose names are similar to the payer's, best first.
    fn named_customers(&mut self) -> Vec<(u32, f64)> {
        if let Some(n) = &self.named {
            return n.clone();
        }
        let found = name_search(self);
        self.named = Some(found.clone());
        found
    }

    /// Open items of customer `c` in the receipt's currency, oldest first.
    fn items_in_currency(&self, c: u32) -> &[u32] {
        let items = &self.p.customers[c as usize].items;
        let ccy = self.r.currency;
        let currency = &self.p.currency;
        let lo = items.partition_point(|&i| currency[i as usize] < ccy);
        let hi = lo + items[lo..].partition_point(|&i| currency[i as usize] == ccy);
        &items[lo..hi]
    }
}

fn stage_of(id: Id, fit: Fit) -> Stage {
    match fit {
        Fit::Short(_) => Stage::Tolerance,
        Fit::Partial => Stage::Partial,
        Fit::Over(_) => Stage::Overpayment,
        Fit::Exact => match id {
            Id::Structured => Stage::Reference,
            Id::Number(_) => Stage::InvoiceNumber,
            Id::Account | Id::Name(_) => Stage::Payer,
            Id::Amount => Stage::Amount,
        },
    }
}

/// Allocations (invoice, amount), an excess to report, a write-off, and why.
type Split = (Vec<(u32, Decimal)>, Option<(u32, Decimal)>, Decimal, Reason);

/// One invoice paid by the receipt.
fn single(i: u32, open: Decimal, amount: Decimal, f: Fit) -> Split {
    match f {
        Fit::Exact => (vec![(i, amount)], None, Decimal::ZERO, Reason::AmountExact),
        Fit::Short(d) => (
            vec![(i, amount)],
            Some((i, d)),
            Decimal::ZERO,
            Reason::Shortfall { amount: d },
        ),
        Fit::Partial => (
            vec![(i, amount)],
            None,
            Decimal::ZERO,
            Reason::Partial { open },
        ),
        Fit::Over(x) => (vec![(i, open)], None, x, Reason::Overpayment { excess: x }),
    }
}

/// Several invoices (`items`, oldest first, with their open amounts) paid by
/// `amount`, given how the sum fits.
fn several(items: &[(u32, Decimal)], amount: Decimal, f: Fit) -> Split {
    let mut allocs: Vec<(u32, Decimal)> = Vec::with_capacity(items.len());
    let mut write_off = None;
    let mut unallocated = Decimal::ZERO;
    let reason = match f {
        Fit::Exact => {
            allocs.extend_from_slice(items);
            Reason::AmountSum {
                invoices: items.len(),
            }
        }
        Fit::Short(d) => {
            // The largest invoice absorbs the shortfall.
            let target = items
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.1.cmp(&b.1.1).then(a.0.cmp(&b.0)))
                .map_or(0, |(k, _)| k);
            for (k, &(i, open)) in items.iter().enumerate() {
                if k == target {
                    allocs.push((i, open - d));
                    write_off = Some((i, d));
                } else {
                    allocs.push((i, open));
                }
            }
            Reason::Shortfall { amount: d }
        }
        Fit::Partial => {
            let mut rest = amount;
            let open: Decimal = items.iter().map(|(_, o)| *o).sum();
            for &(i, o) in items {
                if rest <= Decimal::ZERO {
                    break;
                }
                let a = o.min(rest);
                allocs.push((i, a));
                rest -= a;
            }
            Reason::Partial { open }
        }
        Fit::Over(x) => {
            allocs.extend_from_slice(items);
            unallocated = x;
            Reason::Overpayment { excess: x }
        }
    };
    allocs.retain(|(_, a)| *a > Decimal::ZERO);
    allocs.sort_by_key(|(i, _)| *i);
    (allocs, write_off, unallocated, reason)
}

/// What one thread keeps from receipt to receipt.
#[derive(Default)]
struct Scratch {
    tally: Tally,
    memo: PairMemo,
}

fn find(p: &Prepared<'_>, r: &Receipt, cfg: &Config, scratch: &mut Scratch) -> Found {
    let t = scratch.tally.start();
    let found = find_untimed(p, r, cfg, scratch);
    scratch.tally.add(|t| &mut t.total, t);
    found
}

fn find_untimed(p: &Prepared<'_>, r: &Receipt, cfg: &Config, scratch: &mut Scratch) -> Found {
    let mut notes = Vec::new();
    if r.amount <= Decimal::ZERO {
        notes.push(Reason::NotACredit);
        return Found {
            list: Vec::new(),
            notes,
        };
    }
    let owners: Vec<u32> = r
        .counterparty_account
        .as_deref()
        .and_then(normalize::account)
        .map(|a| {
            p.accounts
                .get(normalize::key(KeyKind::Account, a.as_bytes()))
                .to_vec()
        })
        .unwrap_or_default();
    // An account shared by many customers (a payment provider) identifies
    // nobody.
    let owners = if owners.len() > cfg.max_fanout {
        Vec::new()
    } else {
        owners
    };
    let name = r
        .counterparty_name
        .as_deref()
        .map(normalize::normalize_name)
        .filter(|n| !n.is_empty());
    if let Some(n) = &name {
        scratch.memo.start(n, &p.vocabulary);
    }
    let mut cx = Ctx {
        p,
        cfg,
        r,
        owners,
        name,
        cut: r.counterparty_name.as_deref().and_then(truncated_at),
        sims: Vec::new(),
        named: None,
        tally: &mut scratch.tally,
        memo: &mut scratch.memo,
    };
    let mut list: Vec<Candidate> = Vec::new();

    let t = cx.tally.start();
    let hits = reference_hits(p, r, &mut notes);
    cx.tally.add(|t| &mut t.references, t);
    for h in &hits {
        let i = h.invoice;
        let c = p.customer_of[i as usize];
        let open = p.open[i as usize];
        let f = fit(r.amount, open, cx.allowance(open));
        let (allocs, write_off, unallocated, amount_reason) = single(i, open, r.amount, f);
        let (adj, payer_reason) = cx.payer_adjustment(c, i);
        let mut reasons = vec![h.reason.clone(), amount_reason];
        reasons.extend(payer_reason);
        list.push(Candidate {
            allocs,
            write_off,
            unallocated,
            score: base(h.id, f) + adj,
            stage: stage_of(h.id, f),
            reasons,
        });
        // More than the referenced invoice: perhaps others of the customer
        // are paid with it.
        if let Fit::Over(excess) = f {
            let agrees = adj > 0.0;
            let others: Vec<u32> = cx
                .items_in_currency(c)
                .iter()
                .copied()
                .filter(|&j| j != i && p.issued_by(j, r))
                .collect();
            for (set, exact, complete) in subsets(&mut cx, &others, excess) {
                let mut items: Vec<(u32, Decimal)> =
                    set.iter().map(|&j| (j, p.open[j as usize])).collect();
                items.push((i, open));
                items.sort_by(|a, b| cmp_due(&p.inv[a.0 as usize], &p.inv[b.0 as usize]));
                let sum: Decimal = items.iter().map(|(_, o)| *o).sum();
                let f2 = fit(r.amount, sum, cx.allowance(sum));
                let (allocs, write_off, unallocated, amount_reason) = several(&items, r.amount, f2);
                // The referenced invoice anchors the set; the others rest on
                // the customer, so the set scores below a fully referenced one.
                let mut score = if exact {
                    base(h.id, Fit::Exact) - 0.04
                } else {
                    base(h.id, Fit::Short(Decimal::ZERO)) - 0.06
                };
                if !agrees {
                    score = score.min(if exact { 0.88 } else { 0.82 }) + adj.min(0.0);
                }
                let mut reasons = vec![h.reason.clone(), amount_reason];
                reasons.extend(payer_reason_for(&mut cx, c, i));
                if !complete {
                    score = score.min(cfg.auto_threshold - cfg.ambiguity_margin);
                    reasons.push(Reason::SearchIncomplete);
                }
                list.push(Candidate {
                    allocs,
                    write_off,
                    unallocated,
                    score,
                    stage: Stage::Combined,
                    reasons,
                });
            }
        }
    }
    // Several invoices of one customer referenced together.
    let mut by_customer: Vec<&Hit> = hits.iter().collect();
    by_customer.sort_by_key(|h| (p.customer_of[h.invoice as usize], h.invoice));
    for group in by_customer
        .chunk_by(|a, b| p.customer_of[a.invoice as usize] == p.customer_of[b.invoice as usize])
    {
        if group.len() < 2 || group.len() > MAX_REFERENCED_TOGETHER {
            continue;
        }
        let mut items: Vec<(u32, Decimal)> = group
            .iter()
            .map(|h| (h.invoice, p.open[h.invoice as usize]))
            .collect();
        items.sort_by(|a, b| cmp_due(&p.inv[a.0 as usize], &p.inv[b.0 as usize]));
        let sum: Decimal = items.iter().map(|(_, o)| *o).sum();
        let f = fit(r.amount, sum, cx.allowance(sum));
        let weakest = group.iter().map(|h| base(h.id, f)).fold(1.0, f64::min);
        let c = p.customer_of[group[0].invoice as usize];
        let (adj, payer_reason) = cx.payer_adjustment(c, group[0].invoice);
        let (allocs, write_off, unallocated, amount_reason) = several(&items, r.amount, f);
        let mut reasons: Vec<Reason> = group.iter().map(|h| h.reason.clone()).collect();
        reasons.push(amount_reason);
        reasons.extend(payer_reason);
        let partial_penalty = if f == Fit::Partial { 0.05 } else { 0.0 };
        list.push(Candidate {
            allocs,
            write_off,
            unallocated,
            score: weakest + adj - partial_penalty,
            stage: if f == Fit::Exact {
                Stage::Combined
            } else {
                stage_of(Id::Structured, f)
            },
            reasons,
        });
    }

    // Stage 3 and 4: the payer, and the amount.
    for (c, id, reason) in payers(&mut cx) {
        let items: Vec<u32> = cx.items_in_currency(c).to_vec();
        let before = list.len();
        let mut exact_or_short = false;
        for &i in &items {
            let open = p.open[i as usize];
            let f = fit(r.amount, open, cx.allowance(open));
            if matches!(f, Fit::Exact | Fit::Short(_)) {
                exact_or_short = true;
                let (allocs, write_off, unallocated, amount_reason) = single(i, open, r.amount, f);
                list.push(Candidate {
                    allocs,
                    write_off,
                    unallocated,
                    score: base(id, f),
                    stage: stage_of(id, f),
                    reasons: vec![with_invoice(&reason, i), amount_reason],
                });
            }
        }
        if !exact_or_short && items.len() == 1 {
            let i = items[0];
            let open = p.open[i as usize];
            let f = fit(r.amount, open, cx.allowance(open));
            let (allocs, write_off, unallocated, amount_reason) = single(i, open, r.amount, f);
            list.push(Candidate {
                allocs,
                write_off,
                unallocated,
                score: base(id, f),
                stage: stage_of(id, f),
                reasons: vec![with_invoice(&reason, i), amount_reason],
            });
        }
        if items.len() >= 2 {
            let usable: Vec<u32> = items
                .iter()
                .copied()
                .filter(|&j| p.issued_by(j, r))
                .collect();
            for (set, exact, complete) in subsets(&mut cx, &usable, r.amount) {
                let items: Vec<(u32, Decimal)> =
                    set.iter().map(|&j| (j, p.open[j as usize])).collect();
                let sum: Decimal = items.iter().map(|(_, o)| *o).sum();
                let f = fit(r.amount, sum, cx.allowance(sum));
                let (allocs, write_off, unallocated, amount_reason) = several(&items, r.amount, f);
                let mut score = payer_combined(id, exact);
                let mut reasons = vec![with_invoice(&reason, set[0]), amount_reason];
                if !complete {
                    score = score.min(cfg.auto_threshold - cfg.ambiguity_margin);
                    reasons.push(Reason::SearchIncomplete);
                }
                list.push(Candidate {
                    allocs,
                    write_off,
                    unallocated,
                    score,
                    stage: Stage::Combined,
                    reasons,
                });
            }
        }
        if list.len() == before && notes.len() < 4 {
            notes.push(Reason::PayerWithoutFit {
                invoice: items.first().map_or_else(
                    || {
                        p.customers[c as usize]
                            .items
                            .first()
                            .map_or(0, |&i| i as usize)
                    },
                    |&i| i as usize,
                ),
                items: items.len(),
            });
        }
    }
    let same_amount = p.amounts.get(amount_key(r.currency, r.amount));
    if same_amount.len() > cfg.max_fanout {
        notes.push(Reason::ManyWithAmount {
            invoices: same_amount.len(),
        });
    } else {
        for &i in same_amount {
            list.push(Candidate {
                allocs: vec![(i, r.amount)],
                write_off: None,
                unallocated: Decimal::ZERO,
                score: base(Id::Amount, Fit::Exact),
                stage: Stage::Amount,
                reasons: vec![Reason::AmountOnly {
                    invoices: same_amount.len(),
                }],
            });
        }
    }

    // Booked before the invoice existed.
    for cand in &mut list {
        for &(i, _) in &cand.allocs {
            if !p.issued_by(i, r) {
                cand.score -= BEFORE_ISSUE_PENALTY;
                cand.reasons.push(Reason::BeforeIssue {
                    invoice: i as usize,
                });
            }
        }
        cand.score = cand.score.clamp(0.0, 1.0);
    }
    Found {
        list: rank(p, list),
        notes,
    }
}

/// The payer reason for the customer of a referenced invoice, if the payer
/// agrees.
fn payer_reason_for(cx: &mut Ctx<'_, '_>, c: u32, i: u32) -> Option<Reason> {
    match cx.payer_adjustment(c, i) {
        (adj, r) if adj > 0.0 => r,
        _ => None,
    }
}

/// A payer reason pointed at invoice `i` (so the rendering names its
/// customer).
fn with_invoice(reason: &Reason, i: u32) -> Reason {
    match reason {
        Reason::PayerAccount { .. } => Reason::PayerAccount {
            invoice: i as usize,
        },
        Reason::PayerName { similarity, .. } => Reason::PayerName {
            invoice: i as usize,
            similarity: *similarity,
        },
        other => other.clone(),
    }
}

/// Lengths of the name fields of common bank formats (DTAUS 27, SWIFT 35,
/// SEPA 70): a payer name of exactly this many characters was probably cut.
const NAME_FIELD_LENGTHS: [usize; 3] = [27, 35, 70];

fn truncated_at(name: &str) -> Option<usize> {
    let n = name.chars().count();
    NAME_FIELD_LENGTHS.iter().position(|&len| len == n)
}

/// Subsets of at least two of `items` whose open amounts add up to
/// `target` (exact) or exceed it by at most the tolerance. Returns (set,
/// exact, search complete); exact sets only when there are any.
fn subsets(cx: &mut Ctx<'_, '_>, items: &[u32], target: Decimal) -> Vec<(Vec<u32>, bool, bool)> {
    if items.len() < 2 {
        return Vec::new();
    }
    let limits = cx.cfg.subset;
    let truncated = items.len() > limits.max_items;
    let items = &items[..items.len().min(limits.max_items)];
    let amounts: Vec<Decimal> = items.iter().map(|&i| cx.p.open[i as usize]).collect();
    let slack = cx.allowance(target);
    let t = cx.tally.start();
    let found = subset::search(
        &amounts,
        target,
        slack,
        Bounds {
            min_parts: 2,
            max_parts: limits.max_parts.max(2),
            max_steps: limits.max_steps,
        },
    );
    cx.tally.add(|t| &mut t.subsets, t);
    cx.tally.subset_searches += 1;
    cx.tally.subset_steps += found.steps;
    let complete = found.complete && !truncated;
    let (sets, exact) = if found.exact.is_empty() {
        (found.near, false)
    } else {
        (found.exact, true)
    };
    sets.into_iter()
        .map(|s| (s.into_iter().map(|k| items[k]).collect(), exact, complete))
        .collect()
}

/// Stage 1 and 2: invoices the receipt refers to, strongest evidence per
/// invoice, in the receipt's currency.
fn reference_hits(p: &Prepared<'_>, r: &Receipt, notes: &mut Vec<Reason>) -> Vec<Hit> {
    let mut hits: Vec<Hit> = Vec::new();
    let structured = |text: &str, source: ReferenceSource, hits: &mut Vec<Hit>| {
        if let Some(k) = normalize::reference_key(text) {
            for &i in p.references.get(k) {
                hits.push(Hit {
                    invoice: i,
                    id: Id::Structured,
                    reason: Reason::Reference {
                        invoice: i as usize,
                        source,
                    },
                });
            }
        }
    };
    if let Some(e) = &r.end_to_end_id {
        structured(e, ReferenceSource::EndToEndId, &mut hits);
    }
    if let Some(c) = &r.creditor_reference {
        structured(c, ReferenceSource::CreditorReference, &mut hits);
    }
    let mut text = String::new();
    for part in [&r.remittance, &r.end_to_end_id, &r.creditor_reference]
        .into_iter()
        .flatten()
    {
        if !text.is_empty() {
            text.push_str(" ; ");
        }
        text.push_str(part);
    }
    if let Some(rem) = &r.remittance {
        for rf in normalize::rf_references(rem) {
            structured(&rf, ReferenceSource::RemittanceText, &mut hits);
        }
    }
    // The receipt's amount in minor units, so that it is not read as an
    // invoice number.
    let digits = {
        let dp = r.currency.minor_units();
        let mut a = r.amount.round_dp(dp.max(r.amount.scale()));
        if a.scale() < dp {
            a.rescale(dp);
        }
        let m = a.mantissa().abs().to_string();
        m.trim_start_matches('0').to_owned()
    };
    let mut keys = Vec::new();
    normalize::text_keys(&text, p.max_groups, Some(&digits), &mut keys);
    let mut found: Vec<(u32, bool, NumberQuality, (u32, u32))> = Vec::new();
    for tk in &keys {
        for &v in p.numbers.get(tk.key) {
            found.push((v >> 1, v & 1 == 1, tk.quality, tk.span));
            if found.len() >= 4 * MAX_HITS {
                break;
            }
        }
    }
    // A match inside a longer match is part of that number, not another.
    let longest: Vec<bool> = found
        .iter()
        .map(|a| {
            !found
                .iter()
                .any(|b| b.3.0 <= a.3.0 && a.3.1 <= b.3.1 && (b.3.1 - b.3.0) > (a.3.1 - a.3.0))
        })
        .collect();
    for (k, &(i, from_ref, quality, _)) in found.iter().enumerate() {
        if !longest[k] {
            continue;
        }
        let sig = p.significant[i as usize][usize::from(from_ref)] as usize;
        let s = strength(quality, sig);
        hits.push(Hit {
            invoice: i,
            id: Id::Number(s),
            reason: Reason::InvoiceNumber {
                invoice: i as usize,
                quality: match quality {
                    NumberQuality::Full => NumberMatch::Full,
                    NumberQuality::Digits => NumberMatch::Digits,
                    NumberQuality::Joined => NumberMatch::Joined,
                },
                significant_digits: sig,
            },
        });
    }
    // Strongest evidence per invoice.
    hits.sort_by(|a, b| {
        a.invoice
            .cmp(&b.invoice)
            .then(b.id.rank().cmp(&a.id.rank()))
    });
    hits.dedup_by_key(|h| h.invoice);
    let mut other_currency = 0;
    hits.retain(|h| {
        if !p.valid[h.invoice as usize] {
            return false;
        }
        if p.currency[h.invoice as usize] != r.currency {
            if other_currency < 3 {
                notes.push(Reason::OtherCurrency {
                    invoice: h.invoice as usize,
                });
            }
            other_currency += 1;
            return false;
        }
        true
    });
    if hits.len() > MAX_HITS {
        hits.sort_by(|a, b| {
            b.id.rank()
                .cmp(&a.id.rank())
                .then(a.invoice.cmp(&b.invoice))
        });
        hits.truncate(MAX_HITS);
        hits.sort_by_key(|h| h.invoice);
    }
    hits
}

/// Customers the payer identifies: by known account, else by a similar
/// name. Each with its evidence and reason (pointing at the customer's first
/// invoice until a candidate names its own).
fn payers(cx: &mut Ctx<'_, '_>) -> Vec<(u32, Id, Reason)> {
    let p = cx.p;
    let rep = |c: u32| -> usize {
        p.customers[c as usize]
            .items
            .first()
            .map_or(0, |&i| i as usize)
    };
    if !cx.owners.is_empty() {
        return cx
            .owners
            .iter()
            .map(|&c| (c, Id::Account, Reason::PayerAccount { invoice: rep(c) }))
            .collect();
    }
    cx.named_customers()
        .into_iter()
        .map(|(c, s)| {
            (
                c,
                Id::Name(name_level(s)),
                Reason::PayerName {
                    invoice: rep(c),
                    similarity: s,
                },
            )
        })
        .collect()
}

/// Customers whose names are similar to the payer's (at least 0.85), best
/// first, at most `max_fanout`. Candidates come from the rarest name keys,
/// so a common word never fans out to thousands of customers.
fn name_search(cx: &mut Ctx<'_, '_>) -> Vec<(u32, f64)> {
    let p = cx.p;
    let Some(name) = &cx.name else {
        return Vec::new();
    };
    let t = cx.tally.start();
    let compared_before = cx.tally.name_similarity;
    cx.tally.name_searches += 1;
    let mut keys = Vec::new();
    normalize::name_keys(name, &mut keys);
    keys.sort_unstable();
    keys.dedup();
    let mut lists: Vec<&[u32]> = keys
        .iter()
        .map(|&k| p.names.get(k))
        .filter(|l| !l.is_empty() && l.len() <= MAX_NAME_POSTING)
        .collect();
    lists.sort_by_key(|l| l.len());
    let mut pool: Vec<u32> = Vec::new();
    for l in lists {
        if !pool.is_empty() && pool.len() + l.len() > MAX_NAME_CANDIDATES {
            break;
        }
        pool.extend_from_slice(l);
    }
    pool.sort_unstable();
    pool.dedup();
    pool.truncate(MAX_NAME_CANDIDATES);
    let mut scored: Vec<(u32, f64)> = pool
        .into_iter()
        .map(|c| (c, cx.similarity(c)))
        .filter(|&(_, s)| s >= NAME_MIN)
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(cx.cfg.max_fanout.max(1));
    let total = cx.tally.add(|t| &mut t.name_lookup, t);
    // Exclusive of the comparisons made meanwhile.
    let compared = cx.tally.name_similarity - compared_before;
    cx.tally.name_lookup -= compared.min(total);
    scored
}

/// One candidate per set of invoices (the best), best first; ties broken
/// by fewer invoices, then by the invoices' due dates and numbers, so the
/// order never depends on input order.
fn rank(p: &Prepared<'_>, mut list: Vec<Candidate>) -> Vec<Candidate> {
    let invoices = |c: &Candidate| -> Vec<u32> { c.allocs.iter().map(|a| a.0).collect() };
    list.retain(|c| !c.allocs.is_empty());
    list.sort_by(|a, b| {
        invoices(a)
            .cmp(&invoices(b))
            .then(b.score.total_cmp(&a.score))
    });
    list.dedup_by(|b, a| invoices(a) == invoices(b));
    list.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.allocs.len().cmp(&b.allocs.len()))
            .then_with(|| {
                let key = |c: &Candidate| -> Vec<(bool, Option<chrono::NaiveDate>, &str)> {
                    let mut k: Vec<_> = c
                        .allocs
                        .iter()
                        .map(|&(i, _)| {
                            let r = &p.inv[i as usize];
                            (r.due_date.is_none(), r.due_date, r.invoice_number.as_str())
                        })
                        .collect();
                    k.sort_unstable();
                    k
                };
                key(a).cmp(&key(b))
            })
    });
    list.truncate(MAX_CANDIDATES);
    list
}

// ---------------------------------------------------------------------------
// Decisions

/// A receipt waiting in the greedy queue.
struct Queued {
    key: f64,
    /// Rank of the receipt by id, then position.
    order: u32,
    receipt: usize,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// Highest confidence first; ties by receipt id, then position.
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .total_cmp(&other.key)
            .then_with(|| other.order.cmp(&self.order))
    }
}

/// Each receipt's rank by id, then position: the queue's tie-break, so
/// that many receipts of equal confidence never compare their ids again.
fn id_order(receipts: &[Receipt]) -> Vec<u32> {
    let mut by_id: Vec<u32> = (0..receipts.len() as u32).collect();
    by_id.sort_unstable_by(|&a, &b| {
        receipts[a as usize]
            .id
            .cmp(&receipts[b as usize].id)
            .then(a.cmp(&b))
    });
    let mut order = vec![0u32; receipts.len()];
    for (rank, &k) in by_id.iter().enumerate() {
        order[k as usize] = rank as u32;
    }
    order
}

/// The best still-feasible candidate of a receipt and its confidence.
struct Evaluation {
    /// Feasible candidates (indices into the list), best first.
    feasible: [u8; MAX_CANDIDATES],
    n_feasible: usize,
    confidence: f64,
    ambiguous: Option<(usize, f64)>,
}

impl Evaluation {
    fn feasible(&self) -> impl Iterator<Item = usize> + '_ {
        self.feasible[..self.n_feasible]
            .iter()
            .map(|&k| usize::from(k))
    }
}

fn evaluate(found: &Found, remaining: &[Decimal], cfg: &Config) -> Evaluation {
    let mut e = Evaluation {
        feasible: [0; MAX_CANDIDATES],
        n_feasible: 0,
        confidence: 0.0,
        ambiguous: None,
    };
    for (k, c) in found.list.iter().enumerate().take(MAX_CANDIDATES) {
        if c.needs().all(|(i, need)| need <= remaining[i as usize]) {
            e.feasible[e.n_feasible] = k as u8;
            e.n_feasible += 1;
        }
    }
    let Some(best) = e.feasible().next() else {
        return e;
    };
    let top = found.list[best].score;
    let exact = found.list[best].is_exact();
    // An exact amount outranks a near one: against an exact best, a
    // candidate that only fits within tolerance (or partly) must come within
    // half the margin to make it ambiguous.
    let mut close = 0;
    let mut runner_up = 0.0;
    for c in e.feasible().skip(1).map(|k| &found.list[k]) {
        let margin = if exact && !c.is_exact() {
            cfg.ambiguity_margin / 2.0
        } else {
            cfg.ambiguity_margin
        };
        if c.score >= top - margin - EPS {
            if close == 0 {
                runner_up = c.score;
            }
            close += 1;
        }
    }
    let ambiguous = (close > 0).then_some((close, runner_up));
    let confidence = if ambiguous.is_some() {
        top.min(cfg.auto_threshold - cfg.ambiguity_margin)
    } else {
        top
    };
    e.confidence = confidence;
    e.ambiguous = ambiguous;
    e
}

/// Scores are sums of table values; compare with a little slack so that
/// 0.87 + 0.03 counts as 0.90.
const EPS: f64 = 1e-9;

fn status(confidence: f64, cfg: &Config) -> Status {
    if confidence >= cfg.auto_threshold - EPS {
        Status::Auto
    } else if confidence >= cfg.suggest_threshold - EPS {
        Status::Suggested
    } else {
        Status::Open
    }
}

fn allocations(c: &Candidate) -> Vec<Allocation> {
    c.allocs
        .iter()
        .map(|&(i, a)| Allocation {
            invoice: i as usize,
            amount: a,
        })
        .collect()
}

/// Matches `receipts` to `receivables` (see the [module](super) docs).
///
/// Pure and deterministic: the result depends on the receipts and
/// receivables as sets (keyed by receipt id and invoice number), not on
/// their order. Receipt ids should be unique; receivables sharing an
/// invoice number are all left out and listed in
/// [`Reconciliation::excluded`].
pub fn reconcile(receipts: &[Receipt], receivables: &[Receivable], cfg: &Config) -> Reconciliation {
    run(receipts, receivables, cfg, false).0
}

/// [`reconcile`], and where it spent its time (which costs a few clock
/// reads per receipt).
pub fn reconcile_profiled(
    receipts: &[Receipt],
    receivables: &[Receivable],
    cfg: &Config,
) -> (Reconciliation, Profile) {
    run(receipts, receivables, cfg, true)
}

fn run(
    receipts: &[Receipt],
    receivables: &[Receivable],
    cfg: &Config,
    profile: bool,
) -> (Reconciliation, Profile) {
    let t0 = Instant::now();
    let (p, excluded) = prepare(receivables);
    let t1 = Instant::now();
    let init = || Scratch {
        tally: Tally {
            on: profile,
            ..Tally::default()
        },
        memo: PairMemo::default(),
    };
    let (found, scratches) = par_map(receipts, init, |r, scratch| find(&p, r, cfg, scratch));
    let mut tally = Tally::default();
    for s in &scratches {
        tally.merge(&s.tally);
    }
    drop(scratches);
    let t2 = Instant::now();

    let mut remaining: Vec<Decimal> = receivables
        .iter()
        .zip(&p.valid)
        .map(|(r, &ok)| if ok { r.open_amount } else { Decimal::ZERO })
        .collect();
    let mut open_after_auto = remaining.clone();

    // Each receipt's first choice, by invoice: who else wants it.
    let mut claims: Vec<(u32, u32)> = Vec::new();
    for (r, f) in found.iter().enumerate() {
        if let Some(c) = f.list.first() {
            claims.extend(c.allocs.iter().map(|&(i, _)| (i, r as u32)));
        }
    }
    claims.sort_unstable();
    let claimants = |i: u32| -> &[(u32, u32)] {
        let lo = claims.partition_point(|&(x, _)| x < i);
        let hi = lo + claims[lo..].partition_point(|&(x, _)| x == i);
        &claims[lo..hi]
    };

    let order = id_order(receipts);
    let mut heap: BinaryHeap<Queued> = (0..receipts.len())
        .map(|k| Queued {
            key: evaluate(&found[k], &remaining, cfg).confidence,
            order: order[k],
            receipt: k,
        })
        .collect();
    let mut decided = vec![false; receipts.len()];
    let mut decisions: Vec<Option<Decision>> = vec![None; receipts.len()];
    while let Some(q) = heap.pop() {
        let k = q.receipt;
        if decided[k] {
            continue;
        }
        let f = &found[k];
        let e = evaluate(f, &remaining, cfg);
        if e.confidence < q.key - 1e-12 {
            heap.push(Queued {
                key: e.confidence,
                ..q
            });
            continue;
        }
        decided[k] = true;
        let receipt = &receipts[k];
        let Some(best) = e.feasible().next() else {
            let mut reasons = f.notes.clone();
            let settled: Vec<usize> = f
                .list
                .iter()
                .flat_map(|c| c.allocs.iter().map(|a| a.0 as usize))
                .collect();
            if settled.is_empty() {
                if reasons.is_empty() {
                    reasons.push(Reason::NoCandidate);
                }
            } else {
                let mut settled = settled;
                settled.sort_unstable();
                settled.dedup();
                reasons.extend(
                    settled
                        .into_iter()
                        .take(3)
                        .map(|i| Reason::Settled { invoice: i }),
                );
            }
            decisions[k] = Some(Decision {
                receipt: k,
                status: Status::Open,
                confidence: 0.0,
                stage: None,
                allocations: Vec::new(),
                write_off: None,
                unallocated: receipt.amount.max(Decimal::ZERO),
                reasons,
                alternatives: Vec::new(),
            });
            continue;
        };
        let cand = &f.list[best];
        let mut confidence = e.confidence;
        let mut extra = Vec::new();
        if let Some((n, runner_up)) = e.ambiguous {
            extra.push(Reason::Ambiguous {
                alternatives: n,
                runner_up,
            });
        }
        // Another undecided receipt wants the same invoice about as much,
        // and the invoice cannot serve both.
        if status(confidence, cfg) == Status::Auto {
            'contest: for (i, need) in cand.needs() {
                for &(_, other) in claimants(i) {
                    let o = other as usize;
                    if o == k || decided[o] {
                        continue;
                    }
                    let Some(theirs) = found[o].list.first() else {
                        continue;
                    };
                    if theirs.score >= cand.score - cfg.ambiguity_margin
                        && need + theirs.need(i) > remaining[i as usize]
                    {
                        confidence = confidence.min(cfg.auto_threshold - cfg.ambiguity_margin);
                        extra.push(Reason::Contested { receipt: o });
                        break 'contest;
                    }
                }
            }
        }
        let st = status(confidence, cfg);
        let alternatives: Vec<Alternative> = e
            .feasible()
            .skip(usize::from(st != Status::Open))
            .take(3)
            .map(|a| Alternative {
                allocations: allocations(&f.list[a]),
                score: f.list[a].score,
                stage: f.list[a].stage,
            })
            .collect();
        if st == Status::Open {
            let mut reasons = f.notes.clone();
            reasons.push(Reason::BelowThreshold { score: confidence });
            reasons.extend(cand.reasons.iter().cloned());
            decisions[k] = Some(Decision {
                receipt: k,
                status: st,
                confidence,
                stage: None,
                allocations: Vec::new(),
                write_off: None,
                unallocated: receipt.amount,
                reasons,
                alternatives,
            });
            continue;
        }
        for (i, need) in cand.needs() {
            remaining[i as usize] -= need;
            if st == Status::Auto {
                open_after_auto[i as usize] -= need;
            }
        }
        let mut reasons = cand.reasons.clone();
        reasons.extend(extra);
        reasons.extend(f.notes.iter().cloned());
        decisions[k] = Some(Decision {
            receipt: k,
            status: st,
            confidence,
            stage: Some(cand.stage),
            allocations: allocations(cand),
            write_off: cand.write_off.map(|(i, a)| Allocation {
                invoice: i as usize,
                amount: a,
            }),
            unallocated: cand.unallocated,
            reasons,
            alternatives,
        });
    }
    let ns = Duration::from_nanos;
    let profile = Profile {
        prepare: t1 - t0,
        candidates: t2 - t1,
        decide: t2.elapsed(),
        references: ns(tally.references),
        name_lookup: ns(tally.name_lookup),
        name_similarity: ns(tally.name_similarity),
        subsets: ns(tally.subsets),
        other: ns(tally.total.saturating_sub(
            tally.references + tally.name_lookup + tally.name_similarity + tally.subsets,
        )),
        name_searches: tally.name_searches,
        names_compared: tally.names_compared,
        subset_searches: tally.subset_searches,
        subset_steps: tally.subset_steps,
    };
    let reconciliation = Reconciliation {
        decisions: decisions
            .into_iter()
            .enumerate()
            .map(|(k, d)| {
                d.unwrap_or_else(|| Decision {
                    receipt: k,
                    status: Status::Open,
                    confidence: 0.0,
                    stage: None,
                    allocations: Vec::new(),
                    write_off: None,
                    unallocated: receipts[k].amount.max(Decimal::ZERO),
                    reasons: vec![Reason::NoCandidate],
                    alternatives: Vec::new(),
                })
            })
            .collect(),
        open_after_auto,
        open_after_all: remaining,
        excluded,
    };
    (reconciliation, profile)
}
