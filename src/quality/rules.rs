//! The rules: pure functions from loaded data to alerts.
//!
//! Each rule reads the [`Dataset`] once, through hash maps built once per
//! evaluation, so a run costs about one pass over the records. Every alert
//! carries a `cause` that is stable for as long as what it reports is true
//! (a record's id, the set of records involved, the level crossed), which
//! is how the store raises it once. See `src/quality/mod.rs` for what
//! happens when a cause goes away.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::{Hours, QualitySettings};
use crate::model::{
    BankTransaction, CanonicalId, Currency, Customer, EntityKind, Invoice, InvoiceStatus, Money,
    Order, Payment,
};
use crate::store::{NewAlert, QuarantinedRecord, Severity};

/// The `extra` key (RFC 3339 timestamp) of a payment or bank line that
/// says when, to the minute, it was booked. Without it only the date is
/// known, and only a booking on a non-working day counts as outside hours.
pub const TIMESTAMP_KEY: &str = "timestamp";
/// The `extra` key (boolean) of a bank line that marks it matched to an
/// invoice by someone or something besides concord's reconciliation.
pub const MATCHED_KEY: &str = "matched";
/// The `extra` key of a payment naming the bank line (canonical id) it
/// was booked from: that bank line counts as matched.
pub const BANK_TRANSACTION_KEY: &str = "bank_transaction";

/// Names of every rule, in evaluation order.
pub const RULES: &[&str] = &[
    "mapping_failure",
    "duplicate_record",
    "missing_in_linked_system",
    "field_mismatch",
    "consistency_rate",
    "receipt_unmatched",
    "overdue_receivable",
    "duplicate_payment",
    "overpayment",
    "payer_account_changed",
    "large_outside_hours",
    "split_order",
    "credit_limit_exceeded",
    "credit_usage",
];

/// A canonical record as loaded, with its id and version.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub id: CanonicalId,
    pub version: i64,
    /// The day concord first stored the record (UTC).
    pub stored_on: NaiveDate,
    pub record: T,
}

/// A stored record that no longer parses as its entity.
#[derive(Debug, Clone)]
pub struct InvalidRecord {
    pub entity: EntityKind,
    pub id: CanonicalId,
    pub version: i64,
    pub reason: String,
}

/// A link's last-synced view: what concord last read from, or delivered
/// to, one system.
#[derive(Debug, Clone)]
pub struct LinkView {
    pub entity: EntityKind,
    pub system: String,
    pub canonical_id: CanonicalId,
    pub synced_data: Option<Value>,
}

/// An outbox entry's state.
#[derive(Debug, Clone)]
pub struct OutboxState {
    pub entity: EntityKind,
    pub canonical_id: CanonicalId,
    pub target_system: String,
    pub status: String,
}

/// A sync job's path: records of `entity` read from `source` go to
/// `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub entity: EntityKind,
    pub source: String,
    pub target: String,
    pub job: String,
}

/// One version of a customer's bank accounts.
#[derive(Debug, Clone)]
pub struct AccountVersion {
    pub customer: CanonicalId,
    pub version: i64,
    pub at: DateTime<Utc>,
    pub accounts: BTreeSet<String>,
}

/// Everything the rules read.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub customers: Vec<Loaded<Customer>>,
    pub orders: Vec<Loaded<Order>>,
    pub invoices: Vec<Loaded<Invoice>>,
    pub payments: Vec<Loaded<Payment>>,
    pub bank_transactions: Vec<Loaded<BankTransaction>>,
    pub invalid: Vec<InvalidRecord>,
    /// Open quarantined records.
    pub quarantine: Vec<QuarantinedRecord>,
    pub links: Vec<LinkView>,
    /// Outbox entries not delivered.
    pub outbox: Vec<OutboxState>,
    pub routes: Vec<Route>,
    /// Customers' bank accounts per version, ordered by customer and version.
    pub account_history: Vec<AccountVersion>,
    /// Bank lines known to be matched (reconciliation allocations, payments
    /// naming them, or [`MATCHED_KEY`]).
    pub matched_receipts: HashSet<CanonicalId>,
}

/// How many linked records agree across systems.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Consistency {
    /// Records with a last-synced view in two or more systems.
    pub compared: usize,
    /// Of those, the ones whose views agree on every field they share.
    pub agreeing: usize,
}

impl Consistency {
    /// `agreeing / compared`, or `None` when nothing was compared.
    pub fn rate(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.agreeing as f64 / self.compared as f64)
    }
}

/// What one evaluation found.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// Every alert whose cause holds now (raised or not before).
    pub alerts: Vec<NewAlert>,
    /// The rules that ran: their alerts whose cause is not above may be
    /// resolved.
    pub rules: Vec<&'static str>,
    pub consistency: Consistency,
}

/// Runs every enabled rule over `data` as of `now`.
pub fn evaluate(data: &Dataset, settings: &QualitySettings, now: DateTime<Utc>) -> Evaluation {
    let r = &settings.rules;
    let hours = settings.hours().unwrap_or_else(|_| {
        // Validated with the settings; defaults if called with bad ones.
        QualitySettings::default()
            .hours()
            .expect("default hours are valid")
    });
    let today = now.with_timezone(&hours.tz).date_naive();
    let mut out = Evaluation::default();
    let mut run = |name: &'static str, enabled: bool, alerts: &mut dyn FnMut() -> Vec<NewAlert>| {
        if enabled {
            out.rules.push(name);
            out.alerts.extend(alerts());
        }
    };
    run("mapping_failure", r.mapping_failure.enabled, &mut || {
        mapping_failures(data, r.mapping_failure.severity)
    });
    run("duplicate_record", r.duplicate_record.enabled, &mut || {
        duplicates(data, &r.duplicate_record.keys, r.duplicate_record.severity)
    });
    run(
        "missing_in_linked_system",
        r.missing_in_linked_system.enabled,
        &mut || missing_links(data, r.missing_in_linked_system.severity),
    );
    let (mismatches, consistency) = field_mismatches(data, &r.field_mismatch.ignore_fields);
    run("field_mismatch", r.field_mismatch.enabled, &mut || {
        mismatches
            .iter()
            .cloned()
            .map(|mut a| {
                a.severity = r.field_mismatch.severity;
                a
            })
            .collect()
    });
    run("consistency_rate", r.consistency_rate.enabled, &mut || {
        consistency_alert(consistency, &r.consistency_rate)
            .into_iter()
            .collect()
    });
    out.consistency = consistency;
    run(
        "receipt_unmatched",
        r.receipt_unmatched.enabled,
        &mut || unmatched_receipts(data, today, &r.receipt_unmatched),
    );
    run(
        "overdue_receivable",
        r.overdue_receivable.enabled,
        &mut || overdue(data, today, &r.overdue_receivable),
    );
    run(
        "duplicate_payment",
        r.duplicate_payment.enabled,
        &mut || duplicate_payments(data, &r.duplicate_payment),
    );
    run("overpayment", r.overpayment.enabled, &mut || {
        overpayments(data, &r.overpayment)
    });
    run(
        "payer_account_changed",
        r.payer_account_changed.enabled,
        &mut || account_changes(data, &r.payer_account_changed),
    );
    run(
        "large_outside_hours",
        r.large_outside_hours.enabled,
        &mut || large_outside_hours(data, &hours, &r.large_outside_hours),
    );
    run("split_order", r.split_order.enabled, &mut || {
        split_orders(data, &r.split_order)
    });
    let credit = CreditIndex::new(data);
    run(
        "credit_limit_exceeded",
        r.credit_limit_exceeded.enabled,
        &mut || credit_limit(data, &credit, &r.credit_limit_exceeded),
    );
    run("credit_usage", r.credit_usage.enabled, &mut || {
        credit_usage(data, &credit, &r.credit_usage)
    });
    out
}

/// A short, stable digest of `parts` for causes that would otherwise be
/// long (lists of ids, field values).
fn digest<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0x1f]);
    }
    h.finalize()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn alert(
    rule: &str,
    severity: Severity,
    entity: Option<EntityKind>,
    record_ids: Vec<String>,
    reason: String,
    amount: Option<Money>,
    cause: String,
) -> NewAlert {
    NewAlert {
        rule: rule.to_owned(),
        severity,
        entity,
        record_ids,
        reason,
        amount,
        cause: Some(cause),
    }
}

/// The amount configured for `currency`. Codes match in any case:
/// environment overrides arrive lower-cased.
fn per_currency(map: &BTreeMap<String, Decimal>, currency: Currency) -> Option<Decimal> {
    map.iter()
        .find(|(code, _)| code.eq_ignore_ascii_case(currency.as_str()))
        .map(|(_, amount)| *amount)
}

fn money(amount: Decimal, currency: Currency) -> Option<Money> {
    Money::new(amount, currency).ok()
}

// ---------------------------------------------------------------------------

fn mapping_failures(data: &Dataset, severity: Severity) -> Vec<NewAlert> {
    let mut out = Vec::new();
    for q in &data.quarantine {
        let item = &q.item;
        let field = item
            .field_path
            .as_deref()
            .map(|f| format!(" at `{f}`"))
            .unwrap_or_default();
        out.push(alert(
            "mapping_failure",
            severity,
            Some(item.entity),
            vec![format!("quarantine:{}", q.id)],
            format!(
                "{} {} {} was quarantined{field}: {}",
                item.system,
                item.entity,
                item.external_id.as_deref().unwrap_or("(no id)"),
                item.reason
            ),
            None,
            format!("quarantine:{}", q.id),
        ));
    }
    for r in &data.invalid {
        out.push(alert(
            "mapping_failure",
            severity,
            Some(r.entity),
            vec![r.id.to_string()],
            format!(
                "stored {} {} (version {}) is not a valid {}: {}",
                r.entity, r.id, r.version, r.entity, r.reason
            ),
            None,
            format!("record:{}:{}:v{}", r.entity, r.id, r.version),
        ));
    }
    out
}

/// Upper-case, without spaces, dots, dashes and slashes: how tax ids and
/// invoice numbers are written differently by different systems.
fn normalize_key(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '.' | '-' | '/' | '_'))
        .flat_map(char::to_uppercase)
        .collect()
}

fn duplicates(data: &Dataset, keys: &[String], severity: Severity) -> Vec<NewAlert> {
    // key name → normalised value → (entity, ids)
    let mut index: BTreeMap<(&str, EntityKind, String), BTreeSet<&CanonicalId>> = BTreeMap::new();
    let wants = |k: &str| keys.iter().any(|x| x == k);
    if wants("invoice_number") {
        for i in &data.invoices {
            let n = normalize_key(&i.record.number);
            if !n.is_empty() {
                index
                    .entry(("invoice_number", EntityKind::Invoice, n))
                    .or_default()
                    .insert(&i.id);
            }
        }
    }
    for c in &data.customers {
        if wants("tax_id")
            && let Some(t) = c.record.tax_id.as_deref().map(normalize_key)
            && !t.is_empty()
        {
            index
                .entry(("tax_id", EntityKind::Customer, t))
                .or_default()
                .insert(&c.id);
        }
        if wants("iban") {
            for iban in &c.record.bank_accounts {
                index
                    .entry(("iban", EntityKind::Customer, iban.as_str().to_owned()))
                    .or_default()
                    .insert(&c.id);
            }
        }
    }
    let mut out = Vec::new();
    for ((key, entity, value), ids) in index {
        if ids.len() < 2 {
            continue;
        }
        let ids: Vec<String> = ids.into_iter().map(ToString::to_string).collect();
        let shown = match key {
            // An IBAN is shown masked: alerts travel to webhooks and queues.
            "iban" => format!("{}…{}", &value[..4.min(value.len())], {
                let n = value.len();
                &value[n.saturating_sub(4)..]
            }),
            _ => value.clone(),
        };
        let cause = format!(
            "{key}:{}",
            digest(std::iter::once(value.as_str()).chain(ids.iter().map(String::as_str)))
        );
        out.push(alert(
            "duplicate_record",
            severity,
            Some(entity),
            ids.clone(),
            format!(
                "{} {entity} records share {key} {shown}: {}",
                ids.len(),
                ids.join(", ")
            ),
            None,
            cause,
        ));
    }
    out
}

fn missing_links(data: &Dataset, severity: Severity) -> Vec<NewAlert> {
    if data.routes.is_empty() {
        return Vec::new();
    }
    let mut linked: HashMap<(EntityKind, &CanonicalId), HashSet<&str>> = HashMap::new();
    for l in &data.links {
        linked
            .entry((l.entity, &l.canonical_id))
            .or_default()
            .insert(l.system.as_str());
    }
    let mut outbox: HashMap<(EntityKind, &CanonicalId, &str), Vec<&str>> = HashMap::new();
    for o in &data.outbox {
        outbox
            .entry((o.entity, &o.canonical_id, o.target_system.as_str()))
            .or_default()
            .push(o.status.as_str());
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for route in &data.routes {
        for ((entity, id), systems) in &linked {
            if *entity != route.entity
                || !systems.contains(route.source.as_str())
                || systems.contains(route.target.as_str())
            {
                continue;
            }
            let statuses = outbox
                .get(&(*entity, *id, route.target.as_str()))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if statuses.contains(&"pending") {
                continue; // still on its way
            }
            if !seen.insert((*entity, *id, route.target.as_str())) {
                continue; // two jobs with the same route
            }
            let why = if statuses.contains(&"dead") {
                "its delivery failed for good (dead letter)"
            } else {
                "it was never delivered"
            };
            out.push(alert(
                "missing_in_linked_system",
                severity,
                Some(*entity),
                vec![id.to_string()],
                format!(
                    "{entity} {id} is in {} but not in {} (job {}): {why}",
                    route.source, route.target, route.job
                ),
                None,
                format!("{entity}:{id}:{}", route.target),
            ));
        }
    }
    out.sort_by(|a, b| a.cause.cmp(&b.cause));
    out
}

/// Leaf values of a record by dotted path; arrays are compared whole.
fn flatten<'a>(
    value: &'a Value,
    prefix: &mut String,
    ignore: &[String],
    out: &mut BTreeMap<String, &'a Value>,
) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if prefix.is_empty() && (k == "id" || ignore.iter().any(|i| i == k)) {
                    continue;
                }
                let len = prefix.len();
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(k);
                flatten(v, prefix, ignore, out);
                prefix.truncate(len);
            }
        }
        Value::Null => {}
        other => {
            out.insert(prefix.clone(), other);
        }
    }
}

/// Equal as concord compares fields across systems: decimal strings by
/// value (`"100.50"` = `"100.5"`), everything else exactly.
fn same_value(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            match (x.parse::<Decimal>(), y.parse::<Decimal>()) {
                (Ok(x), Ok(y)) => x == y,
                _ => false,
            }
        }
        _ => false,
    }
}

fn field_mismatches(data: &Dataset, ignore: &[String]) -> (Vec<NewAlert>, Consistency) {
    let mut views: BTreeMap<(EntityKind, &CanonicalId), Vec<(&str, &Value)>> = BTreeMap::new();
    for l in &data.links {
        if let Some(d) = &l.synced_data {
            views
                .entry((l.entity, &l.canonical_id))
                .or_default()
                .push((l.system.as_str(), d));
        }
    }
    let mut consistency = Consistency::default();
    let mut out = Vec::new();
    for ((entity, id), mut systems) in views {
        if systems.len() < 2 {
            continue;
        }
        systems.sort_by(|a, b| a.0.cmp(b.0));
        consistency.compared += 1;
        let flat: Vec<(&str, BTreeMap<String, &Value>)> = systems
            .iter()
            .map(|(s, v)| {
                let mut m = BTreeMap::new();
                flatten(v, &mut String::new(), ignore, &mut m);
                (*s, m)
            })
            .collect();
        // path → each system's value, for paths two or more systems carry.
        let mut by_path: BTreeMap<&str, Vec<(&str, &Value)>> = BTreeMap::new();
        for (system, fields) in &flat {
            for (path, v) in fields {
                by_path.entry(path.as_str()).or_default().push((system, v));
            }
        }
        let differing: Vec<(&str, Vec<(&str, &Value)>)> = by_path
            .into_iter()
            .filter(|(_, vals)| {
                vals.len() >= 2 && vals.iter().any(|(_, v)| !same_value(v, vals[0].1))
            })
            .collect();
        if differing.is_empty() {
            consistency.agreeing += 1;
            continue;
        }
        let mut parts = Vec::new();
        let mut shown = Vec::new();
        for (path, vals) in &differing {
            parts.push(path.to_string());
            let each: Vec<String> = vals
                .iter()
                .map(|(s, v)| {
                    parts.push(format!("{s}={v}"));
                    format!("{s}: {}", cut(&v.to_string(), 40))
                })
                .collect();
            shown.push(format!("{path} ({})", each.join(", ")));
        }
        out.push(alert(
            "field_mismatch",
            Severity::Warning,
            Some(entity),
            vec![id.to_string()],
            format!(
                "{entity} {id} differs across systems in {} field(s): {}",
                differing.len(),
                shown.join("; ")
            ),
            None,
            format!("{entity}:{id}:{}", digest(parts.iter().map(String::as_str))),
        ));
    }
    (out, consistency)
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    } else {
        s.to_owned()
    }
}

fn consistency_alert(c: Consistency, cfg: &super::config::ConsistencyRule) -> Option<NewAlert> {
    let rate = c.rate()?;
    if c.compared < cfg.min_records || rate >= cfg.min_rate {
        return None;
    }
    Some(alert(
        "consistency_rate",
        cfg.severity,
        None,
        Vec::new(),
        format!(
            "only {} of {} linked records ({:.1}%) agree across systems; the minimum is {:.1}%",
            c.agreeing,
            c.compared,
            rate * 100.0,
            cfg.min_rate * 100.0
        ),
        None,
        // One open alert while the rate is low; freed when it recovers.
        "below_minimum".to_owned(),
    ))
}

fn unmatched_receipts(
    data: &Dataset,
    today: NaiveDate,
    cfg: &super::config::UnmatchedReceiptRule,
) -> Vec<NewAlert> {
    let mut out = Vec::new();
    for t in &data.bank_transactions {
        let tx = &t.record;
        if !tx.is_credit()
            || data.matched_receipts.contains(&t.id)
            || tx.extra.get(MATCHED_KEY) == Some(&Value::Bool(true))
        {
            continue;
        }
        // Counted from booking, or from the import when the statement came
        // in late: reconciliation gets `days` to match what it was given.
        let age = (today - tx.booking_date).num_days();
        let known = (today - t.stored_on).num_days();
        if age.min(known) < i64::from(cfg.days) {
            continue;
        }
        out.push(alert(
            "receipt_unmatched",
            cfg.severity,
            Some(EntityKind::BankTransaction),
            vec![t.id.to_string()],
            format!(
                "receipt of {} {} from {} booked {} is unmatched after {age} days",
                tx.amount,
                tx.currency,
                tx.counterparty_name.as_deref().unwrap_or("(unknown payer)"),
                tx.booking_date
            ),
            money(tx.amount, tx.currency),
            t.id.to_string(),
        ));
    }
    out
}

fn is_open(i: &Invoice) -> bool {
    matches!(i.status, InvoiceStatus::Open | InvoiceStatus::PartiallyPaid)
        && i.open_amount > Decimal::ZERO
}

fn overdue(data: &Dataset, today: NaiveDate, cfg: &super::config::OverdueRule) -> Vec<NewAlert> {
    let mut out = Vec::new();
    for i in &data.invoices {
        let inv = &i.record;
        let Some(due) = inv.due_date else { continue };
        let late = (today - due).num_days();
        if !is_open(inv) || late < i64::from(cfg.days) {
            continue;
        }
        out.push(alert(
            "overdue_receivable",
            cfg.severity,
            Some(EntityKind::Invoice),
            vec![i.id.to_string()],
            format!(
                "invoice {} has {} {} open, {late} days past its due date {due}",
                inv.number, inv.open_amount, inv.currency
            ),
            money(inv.open_amount, inv.currency),
            format!("{}:{due}", i.id),
        ));
    }
    out
}

fn duplicate_payments(data: &Dataset, cfg: &super::config::DuplicatePaymentRule) -> Vec<NewAlert> {
    // (entity, payer, amount, currency, reference) → (date, id)
    type Key = (EntityKind, String, Decimal, Currency, String);
    let mut groups: HashMap<Key, Vec<(NaiveDate, &CanonicalId)>> = HashMap::new();
    // Payments booked from one bank line (one receipt paying several
    // invoices of equal amounts, a payment voided and written again) are
    // one payment here; the bank line itself is checked below.
    let mut from_bank_line: HashSet<(Key, &str)> = HashSet::new();
    for p in &data.payments {
        let pay = &p.record;
        let (Some(customer), Some(reference)) = (&pay.customer, pay.reference.as_deref()) else {
            continue;
        };
        let reference = normalize_key(reference);
        if reference.is_empty() {
            continue;
        }
        let key = (
            EntityKind::Payment,
            customer.to_string(),
            pay.amount.amount().normalize(),
            pay.amount.currency(),
            reference,
        );
        if let Some(line) = pay.extra.get(BANK_TRANSACTION_KEY).and_then(|v| v.as_str())
            && !from_bank_line.insert((key.clone(), line))
        {
            continue;
        }
        groups.entry(key).or_default().push((pay.date, &p.id));
    }
    for t in &data.bank_transactions {
        let tx = &t.record;
        if !tx.is_credit() {
            continue;
        }
        let payer = tx
            .counterparty_account
            .as_deref()
            .or(tx.counterparty_name.as_deref())
            .map(normalize_key)
            .unwrap_or_default();
        let reference = tx
            .end_to_end_id
            .as_deref()
            .filter(|r| !r.eq_ignore_ascii_case("NOTPROVIDED"))
            .or(tx.remittance_info.as_deref())
            .map(normalize_key)
            .unwrap_or_default();
        if payer.is_empty() || reference.is_empty() {
            continue;
        }
        groups
            .entry((
                EntityKind::BankTransaction,
                payer,
                tx.amount.normalize(),
                tx.currency,
                reference,
            ))
            .or_default()
            .push((tx.booking_date, &t.id));
    }
    let mut out = Vec::new();
    for ((entity, _, amount, currency, reference), mut items) in groups {
        if items.len() < 2 {
            continue;
        }
        items.sort();
        // Clusters of payments each within the window of the first.
        let mut start = 0;
        while start < items.len() {
            let mut end = start;
            while end + 1 < items.len()
                && (items[end + 1].0 - items[start].0).num_days() <= i64::from(cfg.window_days)
            {
                end += 1;
            }
            if end > start {
                let group = &items[start..=end];
                let ids: Vec<String> = group.iter().map(|(_, id)| id.to_string()).collect();
                let dates: Vec<String> = group.iter().map(|(d, _)| d.to_string()).collect();
                out.push(alert(
                    "duplicate_payment",
                    cfg.severity,
                    Some(entity),
                    ids.clone(),
                    format!(
                        "{} {entity} records from the same payer of {amount} {currency} with reference {reference} ({})",
                        group.len(),
                        dates.join(", ")
                    ),
                    money(amount, currency),
                    format!("{entity}:{}", digest(ids.iter().map(String::as_str))),
                ));
            }
            start = end + 1;
        }
    }
    out.sort_by(|a, b| a.cause.cmp(&b.cause));
    out
}

fn overpayments(data: &Dataset, cfg: &super::config::OverpaymentRule) -> Vec<NewAlert> {
    let mut paid: HashMap<&CanonicalId, (Decimal, Currency, Vec<&CanonicalId>)> = HashMap::new();
    for p in &data.payments {
        for a in &p.record.allocations {
            let e = paid.entry(&a.invoice).or_insert((
                Decimal::ZERO,
                p.record.amount.currency(),
                Vec::new(),
            ));
            if e.1 == p.record.amount.currency() {
                e.0 += a.amount;
                e.2.push(&p.id);
            }
        }
    }
    let mut out = Vec::new();
    for i in &data.invoices {
        let inv = &i.record;
        if inv.status == InvoiceStatus::Void {
            continue;
        }
        let by_open = -inv.open_amount;
        let (allocated, payments) = match paid.get(&i.id) {
            Some((sum, ccy, ids)) if *ccy == inv.currency => (*sum, ids.clone()),
            _ => (Decimal::ZERO, Vec::new()),
        };
        let by_allocations = allocated - inv.total;
        let excess = by_open.max(by_allocations);
        if excess <= cfg.tolerance {
            continue;
        }
        let mut ids = vec![i.id.to_string()];
        ids.extend(payments.iter().map(ToString::to_string));
        let how = if by_allocations >= by_open {
            format!(
                "{} payment(s) allocate {allocated} {} to it",
                payments.len(),
                inv.currency
            )
        } else {
            format!("its open amount is {}", inv.open_amount)
        };
        out.push(alert(
            "overpayment",
            cfg.severity,
            Some(EntityKind::Invoice),
            ids,
            format!(
                "invoice {} (total {} {}) is overpaid by {excess} {}: {how}",
                inv.number, inv.total, inv.currency, inv.currency
            ),
            money(excess, inv.currency),
            i.id.to_string(),
        ));
    }
    out
}

fn account_changes(data: &Dataset, cfg: &super::config::AccountChangeRule) -> Vec<NewAlert> {
    let mut out = Vec::new();
    let window = chrono::Duration::days(i64::from(cfg.window_days));
    for versions in data
        .account_history
        .chunk_by(|a, b| a.customer == b.customer)
    {
        let mut changes: Vec<DateTime<Utc>> = Vec::new();
        for pair in versions.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            // Adding the first account is not a change of account.
            if before.accounts.is_empty() || before.accounts == after.accounts {
                continue;
            }
            changes.push(after.at);
            let recent = changes.iter().filter(|t| after.at - **t <= window).count();
            let mask = |set: &BTreeSet<String>| {
                set.iter()
                    .map(|i| format!("…{}", &i[i.len().saturating_sub(4)..]))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let (severity, repeat) = if recent > 1 {
                (
                    cfg.repeat_severity,
                    format!("; changed {recent} times within {} days", cfg.window_days),
                )
            } else {
                (cfg.severity, String::new())
            };
            out.push(alert(
                "payer_account_changed",
                severity,
                Some(EntityKind::Customer),
                vec![after.customer.to_string()],
                format!(
                    "customer {} bank accounts changed at {} (version {}): [{}] → [{}]{repeat}",
                    after.customer,
                    after.at.format("%Y-%m-%d %H:%M UTC"),
                    after.version,
                    mask(&before.accounts),
                    mask(&after.accounts)
                ),
                None,
                format!("{}:v{}", after.customer, after.version),
            ));
        }
    }
    out
}

/// Whether `at` (or, without a time, `date`) falls outside business hours.
fn outside_hours(hours: &Hours, date: NaiveDate, at: Option<DateTime<Utc>>) -> Option<String> {
    match at {
        Some(at) => {
            let local = at.with_timezone(&hours.tz);
            let time = local.time();
            let working_day = hours.days.contains(&local.weekday());
            if working_day && time >= hours.start && time < hours.end {
                None
            } else {
                Some(format!(
                    "at {} ({})",
                    local.format("%a %Y-%m-%d %H:%M"),
                    hours.tz
                ))
            }
        }
        None => (!hours.days.contains(&date.weekday()))
            .then(|| format!("on {}, a non-working day", date.format("%a %Y-%m-%d"))),
    }
}

fn timestamp(extra: &serde_json::Map<String, Value>) -> Option<DateTime<Utc>> {
    extra
        .get(TIMESTAMP_KEY)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn large_outside_hours(
    data: &Dataset,
    hours: &Hours,
    cfg: &super::config::LargeOutsideHoursRule,
) -> Vec<NewAlert> {
    if cfg.thresholds.is_empty() {
        return Vec::new();
    }
    let threshold = |c: Currency| per_currency(&cfg.thresholds, c);
    let mut out = Vec::new();
    let mut check = |entity: EntityKind,
                     id: &CanonicalId,
                     amount: Decimal,
                     currency: Currency,
                     date: NaiveDate,
                     at: Option<DateTime<Utc>>,
                     what: &str| {
        let Some(limit) = threshold(currency) else {
            return;
        };
        if amount.abs() < limit {
            return;
        }
        if let Some(when) = outside_hours(hours, date, at) {
            out.push(alert(
                "large_outside_hours",
                cfg.severity,
                Some(entity),
                vec![id.to_string()],
                format!(
                    "{what} of {amount} {currency} (threshold {limit}) booked outside business hours {when}"
                ),
                money(amount, currency),
                format!("{entity}:{id}"),
            ));
        }
    };
    for p in &data.payments {
        let pay = &p.record;
        check(
            EntityKind::Payment,
            &p.id,
            pay.amount.amount(),
            pay.amount.currency(),
            pay.date,
            timestamp(&pay.extra),
            "payment",
        );
    }
    for t in &data.bank_transactions {
        let tx = &t.record;
        check(
            EntityKind::BankTransaction,
            &t.id,
            tx.amount,
            tx.currency,
            tx.booking_date,
            timestamp(&tx.extra),
            if tx.is_credit() { "receipt" } else { "payment" },
        );
    }
    out
}

fn split_orders(data: &Dataset, cfg: &super::config::SplitOrderRule) -> Vec<NewAlert> {
    if cfg.approval_limits.is_empty() {
        return Vec::new();
    }
    type Dated<'a> = (NaiveDate, &'a CanonicalId, &'a Order);
    let mut groups: BTreeMap<(&CanonicalId, Currency), Vec<Dated>> = BTreeMap::new();
    for o in &data.orders {
        let ord = &o.record;
        let (Some(customer), Some(total), Some(date)) = (&ord.customer, ord.total, ord.order_date)
        else {
            continue;
        };
        let Some(limit) = per_currency(&cfg.approval_limits, ord.currency) else {
            continue;
        };
        let floor = limit * (Decimal::ONE - cfg.margin);
        if total >= floor && total < limit {
            groups
                .entry((customer, ord.currency))
                .or_default()
                .push((date, &o.id, ord));
        }
    }
    let mut out = Vec::new();
    for ((customer, currency), mut orders) in groups {
        let Some(limit) = per_currency(&cfg.approval_limits, currency) else {
            continue;
        };
        orders.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let mut start = 0;
        while start < orders.len() {
            let mut end = start;
            while end + 1 < orders.len()
                && (orders[end + 1].0 - orders[start].0).num_days() <= i64::from(cfg.window_days)
            {
                end += 1;
            }
            let group = &orders[start..=end];
            let sum: Decimal = group.iter().filter_map(|(_, _, o)| o.total).sum();
            if group.len() >= 2 && sum > limit {
                let ids: Vec<String> = group.iter().map(|(_, id, _)| id.to_string()).collect();
                let numbers: Vec<String> = group
                    .iter()
                    .map(|(d, _, o)| format!("{} {} on {d}", o.number, o.total.unwrap_or_default()))
                    .collect();
                out.push(alert(
                    "split_order",
                    cfg.severity,
                    Some(EntityKind::Order),
                    ids.clone(),
                    format!(
                        "customer {customer} placed {} orders just under the approval limit of {limit} {currency} within {} days, {sum} {currency} together: {}",
                        group.len(),
                        cfg.window_days,
                        numbers.join(", ")
                    ),
                    money(sum, currency),
                    digest(ids.iter().map(String::as_str)),
                ));
                start = end + 1;
            } else {
                start += 1;
            }
        }
    }
    out
}

/// Credit limits and open receivables per customer, in the limit's
/// currency (receivables in other currencies are counted apart).
struct CreditIndex<'a> {
    customers: HashMap<&'a CanonicalId, (&'a Customer, Money)>,
    open: HashMap<&'a CanonicalId, Decimal>,
    other_currency: HashMap<&'a CanonicalId, usize>,
}

impl<'a> CreditIndex<'a> {
    fn new(data: &'a Dataset) -> Self {
        let customers: HashMap<_, _> = data
            .customers
            .iter()
            .filter_map(|c| {
                c.record
                    .credit_limit
                    .filter(|l| l.amount() > Decimal::ZERO)
                    .map(|l| (&c.id, (&c.record, l)))
            })
            .collect();
        let mut open: HashMap<&CanonicalId, Decimal> = HashMap::new();
        let mut other_currency: HashMap<&CanonicalId, usize> = HashMap::new();
        for i in &data.invoices {
            let inv = &i.record;
            let Some(customer) = &inv.customer else {
                continue;
            };
            let Some((_, limit)) = customers.get(customer) else {
                continue;
            };
            if !is_open(inv) {
                continue;
            }
            if inv.currency == limit.currency() {
                *open.entry(customer).or_default() += inv.open_amount;
            } else {
                *other_currency.entry(customer).or_default() += 1;
            }
        }
        CreditIndex {
            customers,
            open,
            other_currency,
        }
    }

    fn note(&self, customer: &CanonicalId) -> String {
        match self.other_currency.get(customer) {
            Some(n) => format!(" ({n} open invoice(s) in other currencies not counted)"),
            None => String::new(),
        }
    }
}

fn customer_name<'a>(c: &'a Customer, id: &'a CanonicalId) -> String {
    format!("{} ({id})", c.name)
}

fn credit_limit(
    data: &Dataset,
    credit: &CreditIndex,
    cfg: &super::config::CreditLimitRule,
) -> Vec<NewAlert> {
    let mut out = Vec::new();
    for o in &data.orders {
        let ord = &o.record;
        let (Some(customer), Some(total)) = (&ord.customer, ord.total) else {
            continue;
        };
        let Some((c, limit)) = credit.customers.get(customer) else {
            continue;
        };
        let closed = ord.status.as_deref().is_some_and(|s| {
            cfg.closed_statuses
                .iter()
                .any(|x| x.eq_ignore_ascii_case(s))
        });
        if closed || ord.currency != limit.currency() {
            continue;
        }
        let open = credit.open.get(customer).copied().unwrap_or_default();
        let exposure = open + total;
        if exposure <= limit.amount() {
            continue;
        }
        out.push(alert(
            "credit_limit_exceeded",
            cfg.severity,
            Some(EntityKind::Order),
            vec![o.id.to_string(), customer.to_string()],
            format!(
                "order {} of {total} {} takes customer {} over its credit limit of {}: open receivables {open} + order = {exposure}{}",
                ord.number,
                ord.currency,
                customer_name(c, customer),
                limit.amount(),
                credit.note(customer)
            ),
            money(exposure - limit.amount(), ord.currency),
            o.id.to_string(),
        ));
    }
    out
}

fn credit_usage(
    data: &Dataset,
    credit: &CreditIndex,
    cfg: &super::config::CreditUsageRule,
) -> Vec<NewAlert> {
    let mut out = Vec::new();
    for c in &data.customers {
        let Some((customer, limit)) = credit.customers.get(&c.id) else {
            continue;
        };
        let open = credit.open.get(&c.id).copied().unwrap_or_default();
        let usage = open * Decimal::ONE_HUNDRED / limit.amount();
        let Some(level) = cfg
            .levels
            .iter()
            .rev()
            .find(|l| usage >= Decimal::from(**l))
        else {
            continue;
        };
        let severity = match level {
            100.. => Severity::Critical,
            90..=99 => Severity::Warning,
            _ => cfg.severity,
        };
        out.push(alert(
            "credit_usage",
            severity,
            Some(EntityKind::Customer),
            vec![c.id.to_string()],
            format!(
                "customer {} uses {}% of its credit limit ({open} of {} {}): crossed {level}%{}",
                customer_name(customer, &c.id),
                usage.round_dp(1),
                limit.amount(),
                limit.currency(),
                credit.note(&c.id)
            ),
            money(open, limit.currency()),
            format!("{}:{level}", c.id),
        ));
    }
    out
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
