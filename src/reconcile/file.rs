//! File mode: receivables and statements read from exports, results written
//! as `result.json`, an allocations CSV and (see [`super::report`]) an HTML
//! report.
//!
//! Everything here works on bytes already read, so it is as pure as the
//! engine; the CLI does the file I/O. Bad rows never stop a run: each
//! becomes an [`Alert`] naming the file, the line and the problem, and the
//! rest is matched.
//!
//! # Receivables CSV
//! Header required, columns in any order, names case-insensitive:
//! `invoice_number, customer_id, customer_name, currency, amount_total,
//! amount_open` (required), `customer_account, issue_date, due_date,
//! reference, customer_aliases` (optional). `customer_account` and
//! `customer_aliases` may hold several values separated by `;`. Dates are
//! `YYYY-MM-DD`, amounts plain decimals (`1234.56`).
//!
//! # Statement CSV
//! `transaction_id, booking_date, amount, currency, counterparty_name,
//! counterparty_account, reference` (optional: `end_to_end_id`,
//! `creditor_reference`). Negative amounts are debits and are not matched.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use super::{Config, Decision, Receipt, Receivable, Reconciliation, Stage, Status, describe};
use crate::bank::Statement;
use crate::model::{Currency, Iban, Money};

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A row or a whole file could not be used.
    Error,
    /// Used, but something looks wrong.
    Warning,
    /// Worth knowing.
    Info,
}

impl Severity {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A problem met while reading the input, or raised by the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// Severity.
    pub severity: Severity,
    /// Stable identifier of the kind of problem (`unknown_currency`,
    /// `duplicate_invoice_number` …).
    pub rule: &'static str,
    /// File the problem is in, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Place inside the file other than a line (an XML path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// What is wrong and what was done about it.
    pub message: String,
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity.as_str())?;
        if let Some(file) = &self.file {
            f.write_str(file)?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            if let Some(place) = &self.place {
                write!(f, " ({place})")?;
            }
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

fn alert(
    severity: Severity,
    rule: &'static str,
    file: &str,
    line: Option<u64>,
    message: String,
) -> Alert {
    Alert {
        severity,
        rule,
        file: Some(file.to_owned()),
        line,
        place: None,
        message,
    }
}

/// Longest excerpt of a bad value quoted in a message.
const QUOTE_CHARS: usize = 40;

fn quote(s: &str) -> String {
    let mut q: String = s.chars().take(QUOTE_CHARS).collect();
    if s.chars().count() > QUOTE_CHARS {
        q.push('…');
    }
    format!("{q:?}")
}

/// Text of a CSV file: UTF-8 (a byte-order mark is dropped), else read as
/// Windows-1252 with a note.
fn decode<'a>(bytes: &'a [u8], file: &str, alerts: &mut Vec<Alert>) -> std::borrow::Cow<'a, str> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
            alerts.push(alert(
                Severity::Warning,
                "not_utf8",
                file,
                Some(line),
                "not UTF-8; read as Windows-1252 (export as UTF-8 to be sure names come through)"
                    .into(),
            ));
            let (text, _, _) = encoding_rs::WINDOWS_1252.decode(bytes);
            std::borrow::Cow::Owned(text.into_owned())
        }
    }
}

/// `;` when the header has semicolons and no commas, else `,`.
fn delimiter(text: &str) -> u8 {
    let header = text.lines().next().unwrap_or("");
    if header.contains(';') && !header.contains(',') {
        b';'
    } else if header.contains('\t') && !header.contains(',') {
        b'\t'
    } else {
        b','
    }
}

/// Column positions by name, checked against the required and known names.
struct Columns {
    index: HashMap<&'static str, usize>,
    width: usize,
    names: Vec<String>,
}

impl Columns {
    fn read(
        header: &csv::StringRecord,
        required: &[&'static str],
        optional: &[&'static str],
        file: &str,
        alerts: &mut Vec<Alert>,
    ) -> Option<Columns> {
        let names: Vec<String> = header
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let mut index = HashMap::new();
        let mut unknown = Vec::new();
        for (k, n) in names.iter().enumerate() {
            match required.iter().chain(optional).find(|c| **c == n) {
                Some(c) => {
                    if index.insert(*c, k).is_some() {
                        alerts.push(alert(
                            Severity::Error,
                            "duplicate_column",
                            file,
                            Some(1),
                            format!("column {n:?} appears twice; the file is not used"),
                        ));
                        return None;
                    }
                }
                None => unknown.push(n.clone()),
            }
        }
        let missing: Vec<&str> = required
            .iter()
            .filter(|c| !index.contains_key(*c))
            .copied()
            .collect();
        if !missing.is_empty() {
            alerts.push(alert(
                Severity::Error,
                "missing_columns",
                file,
                Some(1),
                format!(
                    "header lacks column(s) {}; expected {} (found {}); the file is not used",
                    missing.join(", "),
                    required.join(","),
                    if names.iter().all(String::is_empty) {
                        "nothing".to_owned()
                    } else {
                        names.join(",")
                    }
                ),
            ));
            return None;
        }
        if !unknown.is_empty() {
            alerts.push(alert(
                Severity::Info,
                "ignored_columns",
                file,
                Some(1),
                format!("column(s) {} are not used", unknown.join(", ")),
            ));
        }
        Some(Columns {
            index,
            width: names.len(),
            names,
        })
    }

    fn get<'r>(&self, row: &'r csv::StringRecord, name: &str) -> &'r str {
        self.index
            .get(name)
            .and_then(|&k| row.get(k))
            .map_or("", str::trim)
    }

    /// A row with the wrong number of fields is refused: with a field
    /// missing or extra, the rest would be read from the wrong columns.
    fn check_width(&self, row: &csv::StringRecord) -> Result<(), String> {
        let n = row.len();
        if n == self.width {
            return Ok(());
        }
        if n < self.width {
            Err(format!(
                "{n} field(s), expected {}: missing {}; row skipped",
                self.width,
                self.names[n..].join(", ")
            ))
        } else {
            Err(format!(
                "{n} fields, expected {} (an unquoted comma in a value?); row skipped",
                self.width
            ))
        }
    }
}

fn csv_rows(text: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter(text))
        .flexible(true)
        .has_headers(true)
        .from_reader(text.as_bytes())
}

fn parse_currency(s: &str) -> Result<Currency, String> {
    if s.is_empty() {
        return Err("currency is empty".into());
    }
    Currency::parse(&s.to_ascii_uppercase()).map_err(|_| format!("unknown currency {}", quote(s)))
}

fn parse_amount(s: &str, what: &str, currency: Currency) -> Result<Decimal, String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Money::parse(s, currency)
        .map(|m| m.amount())
        .map_err(|e| format!("{what} {}: {e}", quote(s)))
}

fn parse_date(s: &str, what: &str) -> Result<Option<NaiveDate>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| format!("{what} {} is not a date like 2026-03-31", quote(s)))
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(';').map(str::trim).filter(|x| !x.is_empty())
}

/// What a loader read: the records, the line each came from, and the
/// problems met.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// Usable records.
    pub records: Vec<T>,
    /// 1-based line (or position) of each record in its file.
    pub lines: Vec<u64>,
    /// Problems, in file order.
    pub alerts: Vec<Alert>,
    /// Rows or lines read but not meant for matching (settled invoices,
    /// debits, reversals, pending lines), by kind.
    pub skipped: BTreeMap<&'static str, usize>,
    /// True when the whole file could not be used.
    pub unusable: bool,
}

impl<T> Default for Loaded<T> {
    fn default() -> Self {
        Loaded {
            records: Vec::new(),
            lines: Vec::new(),
            alerts: Vec::new(),
            skipped: BTreeMap::new(),
            unusable: false,
        }
    }
}

const RECEIVABLE_REQUIRED: &[&str] = &[
    "invoice_number",
    "customer_id",
    "customer_name",
    "currency",
    "amount_total",
    "amount_open",
];
const RECEIVABLE_OPTIONAL: &[&str] = &[
    "customer_account",
    "issue_date",
    "due_date",
    "reference",
    "customer_aliases",
];

/// Reads a receivables CSV (see the [module](self) docs). Rows with an
/// unknown currency, a bad amount or date, a negative open amount or the
/// wrong number of fields are reported and left out; invoice numbers that
/// appear on several different rows are all left out (which one is right
/// cannot be told), exact repeats are kept once.
pub fn load_receivables(bytes: &[u8], file: &str) -> Loaded<Receivable> {
    let mut out = Loaded::default();
    let text = decode(bytes, file, &mut out.alerts);
    if text.trim().is_empty() {
        out.alerts.push(alert(
            Severity::Error,
            "empty_file",
            file,
            None,
            "the file is empty: no receivables to match".into(),
        ));
        out.unusable = true;
        return out;
    }
    let mut rdr = csv_rows(&text);
    let header = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            out.alerts.push(alert(
                Severity::Error,
                "unreadable_header",
                file,
                Some(1),
                format!("cannot read the header: {e}"),
            ));
            out.unusable = true;
            return out;
        }
    };
    let Some(cols) = Columns::read(
        &header,
        RECEIVABLE_REQUIRED,
        RECEIVABLE_OPTIONAL,
        file,
        &mut out.alerts,
    ) else {
        out.unusable = true;
        return out;
    };
    let mut row = csv::StringRecord::new();
    let mut not_open = 0usize;
    loop {
        let line = rdr.position().line();
        match rdr.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                out.alerts.push(alert(
                    Severity::Error,
                    "unreadable_row",
                    file,
                    Some(line),
                    format!("cannot read the row: {e}; the rest of the file is not read"),
                ));
                break;
            }
        }
        let line = row.position().map_or(line, |p| p.line());
        if row.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let bad = |rule: &'static str, message: String, out: &mut Loaded<Receivable>| {
            out.alerts
                .push(alert(Severity::Error, rule, file, Some(line), message));
        };
        if let Err(m) = cols.check_width(&row) {
            bad("missing_columns", m, &mut out);
            continue;
        }
        let number = cols.get(&row, "invoice_number");
        if number.is_empty() {
            bad(
                "missing_value",
                "invoice_number is empty; row skipped".into(),
                &mut out,
            );
            continue;
        }
        let customer_id = cols.get(&row, "customer_id");
        if customer_id.is_empty() {
            bad(
                "missing_value",
                format!("invoice {number}: customer_id is empty; row skipped"),
                &mut out,
            );
            continue;
        }
        let currency = match parse_currency(cols.get(&row, "currency")) {
            Ok(c) => c,
            Err(m) => {
                bad(
                    "unknown_currency",
                    format!("invoice {number}: {m}; row skipped"),
                    &mut out,
                );
                continue;
            }
        };
        let amounts = (
            parse_amount(cols.get(&row, "amount_total"), "amount_total", currency),
            parse_amount(cols.get(&row, "amount_open"), "amount_open", currency),
        );
        let (total, open) = match amounts {
            (Ok(t), Ok(o)) => (t, o),
            (Err(m), _) | (_, Err(m)) => {
                bad(
                    "invalid_amount",
                    format!("invoice {number}: {m}; row skipped"),
                    &mut out,
                );
                continue;
            }
        };
        if open < Decimal::ZERO {
            bad(
                "negative_open_amount",
                format!(
                    "invoice {number}: amount_open is negative ({open} {currency}); a credit note is not a receivable; row skipped"
                ),
                &mut out,
            );
            continue;
        }
        let dates = (
            parse_date(cols.get(&row, "issue_date"), "issue_date"),
            parse_date(cols.get(&row, "due_date"), "due_date"),
        );
        let (issue_date, due_date) = match dates {
            (Ok(i), Ok(d)) => (i, d),
            (Err(m), _) | (_, Err(m)) => {
                bad(
                    "invalid_date",
                    format!("invoice {number}: {m}; row skipped"),
                    &mut out,
                );
                continue;
            }
        };
        if open.is_zero() {
            not_open += 1;
            continue;
        }
        if open > total {
            out.alerts.push(alert(
                Severity::Warning,
                "open_above_total",
                file,
                Some(line),
                format!(
                    "invoice {number}: amount_open {open} is more than amount_total {total} {currency}; matched on amount_open"
                ),
            ));
        }
        let mut accounts = Vec::new();
        for a in split_list(cols.get(&row, "customer_account")) {
            let looks_like_iban = a.len() >= 4
                && a.as_bytes()[..2].iter().all(u8::is_ascii_alphabetic)
                && a.as_bytes()[2..4].iter().all(u8::is_ascii_digit);
            if looks_like_iban && let Err(e) = Iban::parse(a) {
                out.alerts.push(alert(
                    Severity::Warning,
                    "invalid_iban",
                    file,
                    Some(line),
                    format!(
                        "invoice {number}: customer_account {}: {e}; kept as written",
                        quote(a)
                    ),
                ));
            }
            accounts.push(a.to_owned());
        }
        let name = cols.get(&row, "customer_name");
        out.records.push(Receivable {
            invoice_number: number.to_owned(),
            customer_id: customer_id.to_owned(),
            customer_name: if name.is_empty() {
                customer_id.to_owned()
            } else {
                name.to_owned()
            },
            payer_accounts: accounts,
            payer_names: split_list(cols.get(&row, "customer_aliases"))
                .map(str::to_owned)
                .collect(),
            currency,
            total,
            open_amount: open,
            issue_date,
            due_date,
            reference: Some(cols.get(&row, "reference"))
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        });
        out.lines.push(line);
    }
    if not_open > 0 {
        out.skipped.insert("invoices_not_open", not_open);
    }
    drop_duplicate_invoices(&mut out, file);
    if out.records.is_empty() && !out.alerts.iter().any(|a| a.severity == Severity::Error) {
        out.alerts.push(alert(
            Severity::Warning,
            "nothing_open",
            file,
            None,
            "no open receivable in the file".into(),
        ));
    }
    out
}

/// Exact repeats of a row are kept once; different rows with one invoice
/// number are all dropped.
fn drop_duplicate_invoices(out: &mut Loaded<Receivable>, file: &str) {
    let mut order: Vec<usize> = (0..out.records.len()).collect();
    order.sort_by(|&a, &b| {
        out.records[a]
            .invoice_number
            .cmp(&out.records[b].invoice_number)
            .then(a.cmp(&b))
    });
    let mut drop = vec![false; out.records.len()];
    for group in
        order.chunk_by(|&a, &b| out.records[a].invoice_number == out.records[b].invoice_number)
    {
        if group.len() < 2 {
            continue;
        }
        let lines: Vec<String> = group.iter().map(|&k| out.lines[k].to_string()).collect();
        let number = &out.records[group[0]].invoice_number;
        if group
            .iter()
            .all(|&k| out.records[k] == out.records[group[0]])
        {
            for &k in &group[1..] {
                drop[k] = true;
            }
            out.alerts.push(alert(
                Severity::Warning,
                "repeated_row",
                file,
                Some(out.lines[group[1]]),
                format!(
                    "invoice {number} is repeated unchanged on lines {}; used once",
                    lines.join(", ")
                ),
            ));
        } else {
            for &k in group {
                drop[k] = true;
            }
            out.alerts.push(alert(
                Severity::Error,
                "duplicate_invoice_number",
                file,
                Some(out.lines[group[0]]),
                format!(
                    "invoice number {number} appears on lines {} with different values; none of them is matched",
                    lines.join(", ")
                ),
            ));
        }
    }
    if drop.iter().any(|&d| d) {
        let mut k = 0;
        out.records.retain(|_| {
            k += 1;
            !drop[k - 1]
        });
        let mut k = 0;
        out.lines.retain(|_| {
            k += 1;
            !drop[k - 1]
        });
    }
}

const STATEMENT_REQUIRED: &[&str] = &[
    "transaction_id",
    "booking_date",
    "amount",
    "currency",
    "counterparty_name",
    "counterparty_account",
    "reference",
];
const STATEMENT_OPTIONAL: &[&str] = &["end_to_end_id", "creditor_reference"];

/// Reads a statement CSV (see the [module](self) docs). Debits and zero
/// amounts are counted and skipped; rows with a bad date, amount or
/// currency, or the wrong number of fields, are reported and skipped. A
/// missing transaction id is made up from the line; a repeated one gets a
/// `#n` suffix.
pub fn load_statement_csv(bytes: &[u8], file: &str) -> Loaded<Receipt> {
    let mut out = Loaded::default();
    let text = decode(bytes, file, &mut out.alerts);
    if text.trim().is_empty() {
        out.alerts.push(alert(
            Severity::Error,
            "empty_file",
            file,
            None,
            "the file is empty: no transactions to match".into(),
        ));
        out.unusable = true;
        return out;
    }
    let mut rdr = csv_rows(&text);
    let header = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            out.alerts.push(alert(
                Severity::Error,
                "unreadable_header",
                file,
                Some(1),
                format!("cannot read the header: {e}"),
            ));
            out.unusable = true;
            return out;
        }
    };
    let Some(cols) = Columns::read(
        &header,
        STATEMENT_REQUIRED,
        STATEMENT_OPTIONAL,
        file,
        &mut out.alerts,
    ) else {
        out.unusable = true;
        return out;
    };
    let mut row = csv::StringRecord::new();
    loop {
        let line = rdr.position().line();
        match rdr.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                out.alerts.push(alert(
                    Severity::Error,
                    "unreadable_row",
                    file,
                    Some(line),
                    format!("cannot read the row: {e}; the rest of the file is not read"),
                ));
                break;
            }
        }
        let line = row.position().map_or(line, |p| p.line());
        if row.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let bad = |rule: &'static str, message: String, out: &mut Loaded<Receipt>| {
            out.alerts
                .push(alert(Severity::Error, rule, file, Some(line), message));
        };
        if let Err(m) = cols.check_width(&row) {
            bad("missing_columns", m, &mut out);
            continue;
        }
        let id = cols.get(&row, "transaction_id");
        let label = if id.is_empty() {
            format!("line {line}")
        } else {
            format!("transaction {id}")
        };
        let date = match parse_date(cols.get(&row, "booking_date"), "booking_date") {
            Ok(Some(d)) => d,
            Ok(None) => {
                bad(
                    "missing_value",
                    format!("{label}: booking_date is empty; row skipped"),
                    &mut out,
                );
                continue;
            }
            Err(m) => {
                bad(
                    "invalid_date",
                    format!("{label}: {m}; row skipped"),
                    &mut out,
                );
                continue;
            }
        };
        let currency = match parse_currency(cols.get(&row, "currency")) {
            Ok(c) => c,
            Err(m) => {
                bad(
                    "unknown_currency",
                    format!("{label}: {m}; row skipped"),
                    &mut out,
                );
                continue;
            }
        };
        let amount = match parse_amount(cols.get(&row, "amount"), "amount", currency) {
            Ok(a) => a,
            Err(m) => {
                bad(
                    "invalid_amount",
                    format!("{label}: {m}; row skipped"),
                    &mut out,
                );
                continue;
            }
        };
        if amount <= Decimal::ZERO {
            *out.skipped.entry("debits").or_default() += 1;
            continue;
        }
        let opt = |s: &str| Some(s).filter(|s| !s.is_empty()).map(str::to_owned);
        let id = if id.is_empty() {
            out.alerts.push(alert(
                Severity::Warning,
                "missing_transaction_id",
                file,
                Some(line),
                format!("transaction_id is empty; called \"line-{line}\""),
            ));
            format!("line-{line}")
        } else {
            id.to_owned()
        };
        out.records.push(Receipt {
            id,
            booking_date: date,
            amount,
            currency,
            counterparty_name: opt(cols.get(&row, "counterparty_name")),
            counterparty_account: opt(cols.get(&row, "counterparty_account")),
            remittance: opt(cols.get(&row, "reference")),
            end_to_end_id: opt(cols.get(&row, "end_to_end_id")),
            creditor_reference: opt(cols.get(&row, "creditor_reference")),
        });
        out.lines.push(line);
    }
    unique_ids(&mut out, file);
    out
}

/// Makes transaction ids unique: an exact repeat of a line is dropped (a
/// file exported twice), another line with a used id gets `#2`, `#3` ….
fn unique_ids(out: &mut Loaded<Receipt>, file: &str) {
    let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
    let mut drop = vec![false; out.records.len()];
    #[allow(clippy::needless_range_loop)] // k indexes records and drop alike
    for k in 0..out.records.len() {
        let id = out.records[k].id.clone();
        let earlier = seen.entry(id.clone()).or_default();
        if let Some(&first) = earlier.iter().find(|&&e| out.records[e] == out.records[k]) {
            drop[k] = true;
            out.alerts.push(alert(
                Severity::Warning,
                "repeated_transaction",
                file,
                Some(out.lines[k]),
                format!(
                    "transaction {id} repeats line {} exactly; used once",
                    out.lines[first]
                ),
            ));
            continue;
        }
        if !earlier.is_empty() {
            let new_id = format!("{id}#{}", earlier.len() + 1);
            out.alerts.push(alert(
                Severity::Warning,
                "duplicate_transaction_id",
                file,
                Some(out.lines[k]),
                format!(
                    "transaction id {id} was used on line {} for another transaction; this one is called {new_id}",
                    out.lines[earlier[0]]
                ),
            ));
            out.records[k].id = new_id;
        }
        earlier.push(k);
    }
    if drop.iter().any(|&d| d) {
        let mut k = 0;
        out.records.retain(|_| {
            k += 1;
            !drop[k - 1]
        });
        let mut k = 0;
        out.lines.retain(|_| {
            k += 1;
            !drop[k - 1]
        });
    }
}

fn extra_str<'a>(tx: &'a crate::model::BankTransaction, key: &str) -> Option<&'a str> {
    tx.extra
        .get(key)
        .and_then(|v| v.as_str())
        .filter(|s| !s.trim().is_empty())
}

/// Receipts from parsed bank statements (camt.05x, MT940/942, BAI2, OFX,
/// profile CSV). The transaction id is the bank's reference (camt
/// `AcctSvcrRef`, MT940 `:61:` bank reference, OFX `FITID`), else the
/// transaction or entry reference, else the end-to-end id, else the
/// position in the file. Debits, reversals and pending or informational
/// lines are counted and skipped. The text searched for invoice numbers
/// joins the remittance information, referred document numbers, additional
/// remittance information and the MT940 customer reference.
pub fn receipts_from_statements(statements: &[Statement], file: &str) -> Loaded<Receipt> {
    let mut out = Loaded::default();
    for (s, st) in statements.iter().enumerate() {
        for w in &st.warnings {
            out.alerts.push(Alert {
                severity: Severity::Warning,
                rule: "statement_warning",
                file: Some(file.to_owned()),
                line: match w.location {
                    crate::bank::Location::Line(n) | crate::bank::Location::Row(n) => Some(n),
                    _ => None,
                },
                place: match &w.location {
                    crate::bank::Location::Xml { path, .. } => Some(path.clone()),
                    _ => None,
                },
                message: w.message.clone(),
            });
        }
        for (n, tx) in st.transactions.iter().enumerate() {
            let position = (s * 1_000_000 + n + 1) as u64;
            if tx.amount <= Decimal::ZERO {
                *out.skipped.entry("debits").or_default() += 1;
                continue;
            }
            if tx.extra.get("reversal").and_then(|v| v.as_bool()) == Some(true) {
                *out.skipped.entry("reversals").or_default() += 1;
                continue;
            }
            if matches!(extra_str(tx, "entry_status"), Some("PDNG" | "INFO")) {
                *out.skipped.entry("pending").or_default() += 1;
                continue;
            }
            let id = tx
                .bank_reference
                .as_deref()
                .filter(|s| !s.trim().is_empty() && *s != "NONREF")
                .or_else(|| extra_str(tx, "transaction_id"))
                .or_else(|| extra_str(tx, "entry_reference"))
                .or(tx.end_to_end_id.as_deref())
                .map_or_else(
                    || format!("{}:{}", st.id.as_deref().unwrap_or("statement"), n + 1),
                    |s| match tx.extra.get("batch_index").and_then(|v| v.as_u64()) {
                        Some(b) => format!("{}/{b}", s.trim()),
                        None => s.trim().to_owned(),
                    },
                );
            let mut text: Vec<String> = Vec::new();
            text.extend(tx.remittance_info.clone());
            if let Some(docs) = tx
                .extra
                .get("referred_document_numbers")
                .and_then(|v| v.as_array())
            {
                text.extend(docs.iter().filter_map(|d| d.as_str()).map(str::to_owned));
            }
            for key in ["additional_remittance_info", "customer_reference"] {
                if let Some(v) = extra_str(tx, key) {
                    text.push(v.to_owned());
                }
            }
            out.records.push(Receipt {
                id,
                booking_date: tx.booking_date,
                amount: tx.amount,
                currency: tx.currency,
                counterparty_name: tx.counterparty_name.clone(),
                counterparty_account: tx.counterparty_account.clone(),
                remittance: (!text.is_empty()).then(|| text.join(" ; ")),
                end_to_end_id: tx.end_to_end_id.clone(),
                creditor_reference: extra_str(tx, "creditor_reference").map(str::to_owned),
            });
            out.lines.push(position);
        }
    }
    if out.records.is_empty() {
        out.alerts.push(alert(
            Severity::Warning,
            "no_receipts",
            file,
            None,
            format!(
                "no credit transactions in {} statement(s): nothing to match",
                statements.len()
            ),
        ));
    }
    unique_ids(&mut out, file);
    out
}

// ---------------------------------------------------------------------------
// Results

/// An amount as written in files: exact, with at least the currency's
/// decimals (`12.3 EUR` → `"12.30"`).
pub fn amount_text(amount: Decimal, currency: Currency) -> String {
    let dp = currency.minor_units();
    let mut a = amount;
    if a.scale() < dp {
        a.rescale(dp);
    }
    a.to_string()
}

/// Amounts per currency, written as decimal strings.
pub type Totals = BTreeMap<String, String>;

fn totals(map: &BTreeMap<Currency, Decimal>) -> Totals {
    map.iter()
        .map(|(c, a)| (c.to_string(), amount_text(*a, *c)))
        .collect()
}

/// One allocation in `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AllocationOut {
    /// Invoice paid.
    pub invoice_number: String,
    /// Its customer.
    pub customer_id: String,
    /// Amount applied.
    pub amount: String,
}

/// Another candidate, in `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateOut {
    /// Its score.
    pub confidence: f64,
    /// Stage that found it.
    pub stage: Stage,
    /// Invoices it would pay, with amounts.
    pub allocations: Vec<AllocationOut>,
}

/// A matched (automatic or suggested) receipt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchOut {
    /// The bank transaction.
    pub transaction_id: String,
    /// Booking date.
    pub booking_date: NaiveDate,
    /// Amount received.
    pub amount: String,
    /// Its currency (also of every allocation).
    pub currency: Currency,
    /// Payer name as the bank gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterparty_name: Option<String>,
    /// `auto` or `suggested`.
    pub status: Status,
    /// Confidence in [0, 1].
    pub confidence: f64,
    /// Stage of the match.
    pub stage: Stage,
    /// What the receipt pays.
    pub allocations: Vec<AllocationOut>,
    /// Shortfall within tolerance, suggested for write-off ("0.00" if none).
    pub difference: String,
    /// Invoice the write-off closes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_off_invoice: Option<String>,
    /// Part of the receipt not allocated (an overpayment).
    pub unallocated: String,
    /// Why, in words.
    pub reasons: Vec<String>,
    /// Other candidates that were possible.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<CandidateOut>,
}

/// A receipt left open.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnmatchedTransactionOut {
    /// The bank transaction.
    pub transaction_id: String,
    /// Booking date.
    pub booking_date: NaiveDate,
    /// Amount received.
    pub amount: String,
    /// Its currency.
    pub currency: Currency,
    /// Payer name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterparty_name: Option<String>,
    /// Payer account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterparty_account: Option<String>,
    /// Remittance text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Days between booking and the statement's last day.
    pub age_days: i64,
    /// Why it stayed open.
    pub reasons: Vec<String>,
    /// Candidates below the suggestion threshold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<CandidateOut>,
}

/// An invoice not fully settled by automatic matches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnmatchedInvoiceOut {
    /// Invoice number.
    pub invoice_number: String,
    /// Customer id.
    pub customer_id: String,
    /// Customer name.
    pub customer_name: String,
    /// Currency.
    pub currency: Currency,
    /// Open amount before this run.
    pub amount_open: String,
    /// Still open after automatic matches and write-offs.
    pub amount_remaining: String,
    /// Transactions suggested for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suggested_transactions: Vec<String>,
    /// Due date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_date: Option<NaiveDate>,
    /// Days past due on the statement's last day (negative: not yet due).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_overdue: Option<i64>,
}

/// Count and amounts per currency.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Tally {
    /// How many.
    pub count: usize,
    /// Sum per currency.
    pub amount: Totals,
}

/// Aging buckets by days.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Aging {
    /// Not yet due (invoices only).
    pub not_due: Tally,
    /// 0 to 30 days.
    pub d0_30: Tally,
    /// 31 to 60 days.
    pub d31_60: Tally,
    /// 61 to 90 days.
    pub d61_90: Tally,
    /// More than 90 days.
    pub over_90: Tally,
    /// Without a date.
    pub undated: Tally,
}

/// Totals of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The statement's last booking day: ages are counted to it.
    pub as_of: Option<NaiveDate>,
    /// Receipts read.
    pub receipts: Tally,
    /// Matched automatically.
    pub auto: Tally,
    /// Suggested.
    pub suggested: Tally,
    /// Left open.
    pub open: Tally,
    /// Share of receipts matched automatically.
    pub auto_rate: f64,
    /// Share of the receipts' amount allocated automatically, per currency.
    pub auto_amount_rate: BTreeMap<String, f64>,
    /// Automatic and suggested matches per stage.
    pub by_stage: BTreeMap<&'static str, StageTally>,
    /// Open receivables read.
    pub invoices: Tally,
    /// Open amount left after automatic matches.
    pub invoices_remaining: Tally,
    /// Suggested write-offs of automatic matches.
    pub write_offs: Tally,
    /// Unallocated parts of automatically matched receipts (overpayments).
    pub unallocated: Tally,
    /// Lines and rows not meant for matching.
    pub skipped: BTreeMap<&'static str, usize>,
    /// Alerts by severity.
    pub alerts: BTreeMap<&'static str, usize>,
    /// Aging of the receipts left open.
    pub aging_receipts: Aging,
    /// Aging (past due date) of the invoices not fully settled.
    pub aging_invoices: Aging,
    /// Parameters of the run.
    pub parameters: Parameters,
}

/// Matches of one stage.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct StageTally {
    /// Matched automatically.
    pub auto: usize,
    /// Suggested.
    pub suggested: usize,
    /// Amount matched automatically per currency.
    pub auto_amount: Totals,
}

/// The parameters a run used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parameters {
    /// Auto threshold.
    pub auto_threshold: f64,
    /// Suggestion threshold.
    pub suggest_threshold: f64,
    /// Ambiguity margin.
    pub ambiguity_margin: f64,
    /// Relative fee tolerance.
    pub tolerance_relative: String,
    /// Absolute fee tolerance per currency.
    pub tolerance_absolute: Totals,
}

/// Everything `result.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileResult {
    /// Automatic and suggested matches, in statement order.
    pub matches: Vec<MatchOut>,
    /// Receipts left open.
    pub unmatched_transactions: Vec<UnmatchedTransactionOut>,
    /// Invoices not fully settled by automatic matches.
    pub unmatched_invoices: Vec<UnmatchedInvoiceOut>,
    /// Input problems and run notes.
    pub alerts: Vec<Alert>,
    /// Totals.
    pub summary: Summary,
}

fn add(map: &mut BTreeMap<Currency, Decimal>, c: Currency, a: Decimal) {
    *map.entry(c).or_default() += a;
}

#[derive(Default)]
struct Acc {
    count: usize,
    amount: BTreeMap<Currency, Decimal>,
}

impl Acc {
    fn add(&mut self, c: Currency, a: Decimal) {
        self.count += 1;
        add(&mut self.amount, c, a);
    }
    fn tally(&self) -> Tally {
        Tally {
            count: self.count,
            amount: totals(&self.amount),
        }
    }
}

#[derive(Default)]
struct AgingAcc {
    buckets: [Acc; 6],
}

impl AgingAcc {
    fn add(&mut self, days: Option<i64>, c: Currency, a: Decimal) {
        let k = match days {
            None => 5,
            Some(d) if d < 0 => 0,
            Some(d) if d <= 30 => 1,
            Some(d) if d <= 60 => 2,
            Some(d) if d <= 90 => 3,
            Some(_) => 4,
        };
        self.buckets[k].add(c, a);
    }
    fn aging(&self) -> Aging {
        let b = &self.buckets;
        Aging {
            not_due: b[0].tally(),
            d0_30: b[1].tally(),
            d31_60: b[2].tally(),
            d61_90: b[3].tally(),
            over_90: b[4].tally(),
            undated: b[5].tally(),
        }
    }
}

fn candidate_out(
    allocations: &[super::Allocation],
    confidence: f64,
    stage: Stage,
    receivables: &[Receivable],
    currency: Currency,
) -> CandidateOut {
    CandidateOut {
        confidence: round3(confidence),
        stage,
        allocations: allocations
            .iter()
            .map(|a| allocation_out(a, receivables, currency))
            .collect(),
    }
}

fn allocation_out(a: &super::Allocation, receivables: &[Receivable], c: Currency) -> AllocationOut {
    let inv = &receivables[a.invoice];
    AllocationOut {
        invoice_number: inv.invoice_number.clone(),
        customer_id: inv.customer_id.clone(),
        amount: amount_text(a.amount, c),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn reasons(d: &Decision, receipts: &[Receipt], receivables: &[Receivable]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(d.reasons.len());
    for r in &d.reasons {
        let s = describe(r, d.receipt, receipts, receivables);
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// A decision as `result.json` shows it.
enum DecisionOut {
    Matched(MatchOut, Stage),
    Open(UnmatchedTransactionOut),
}

fn decision_out(
    d: &Decision,
    receipts: &[Receipt],
    receivables: &[Receivable],
    as_of: Option<NaiveDate>,
) -> DecisionOut {
    let r = &receipts[d.receipt];
    let c = r.currency;
    match (d.status, d.stage) {
        (Status::Open, _) | (_, None) => {
            let age = as_of.map(|a| (a - r.booking_date).num_days());
            DecisionOut::Open(UnmatchedTransactionOut {
                transaction_id: r.id.clone(),
                booking_date: r.booking_date,
                amount: amount_text(r.amount, c),
                currency: c,
                counterparty_name: r.counterparty_name.clone(),
                counterparty_account: r.counterparty_account.clone(),
                reference: r.remittance.clone(),
                age_days: age.unwrap_or(0),
                reasons: reasons(d, receipts, receivables),
                candidates: d
                    .alternatives
                    .iter()
                    .map(|a| candidate_out(&a.allocations, a.score, a.stage, receivables, c))
                    .collect(),
            })
        }
        (status, Some(stage)) => DecisionOut::Matched(
            MatchOut {
                transaction_id: r.id.clone(),
                booking_date: r.booking_date,
                amount: amount_text(r.amount, c),
                currency: c,
                counterparty_name: r.counterparty_name.clone(),
                status,
                confidence: round3(d.confidence),
                stage,
                allocations: d
                    .allocations
                    .iter()
                    .map(|a| allocation_out(a, receivables, c))
                    .collect(),
                difference: amount_text(
                    d.write_off.as_ref().map_or(Decimal::ZERO, |w| w.amount),
                    c,
                ),
                write_off_invoice: d
                    .write_off
                    .as_ref()
                    .map(|w| receivables[w.invoice].invoice_number.clone()),
                unallocated: amount_text(d.unallocated, c),
                reasons: reasons(d, receipts, receivables),
                alternatives: d
                    .alternatives
                    .iter()
                    .map(|a| candidate_out(&a.allocations, a.score, a.stage, receivables, c))
                    .collect(),
            },
            stage,
        ),
    }
}

/// Builds the file-mode result from a reconciliation of `receipts` against
/// `receivables`. `alerts` are the loaders' problems; the run adds a warning
/// per statement currency no receivable uses.
pub fn result(
    receipts: &[Receipt],
    receivables: &[Receivable],
    rec: &Reconciliation,
    mut alerts: Vec<Alert>,
    skipped: BTreeMap<&'static str, usize>,
    cfg: &Config,
) -> FileResult {
    let as_of = receipts.iter().map(|r| r.booking_date).max();
    // Statement currencies nobody invoices in.
    let invoiced: std::collections::BTreeSet<Currency> =
        receivables.iter().map(|r| r.currency).collect();
    let mut foreign: BTreeMap<Currency, usize> = BTreeMap::new();
    for r in receipts {
        if !invoiced.contains(&r.currency) {
            *foreign.entry(r.currency).or_default() += 1;
        }
    }
    for (c, n) in &foreign {
        alerts.push(Alert {
            severity: Severity::Warning,
            rule: "currency_without_receivables",
            file: None,
            line: None,
            place: None,
            message: format!(
                "{n} receipt(s) in {c}, but no open receivable is in {c}: they cannot be matched"
            ),
        });
    }
    for e in &rec.excluded {
        alerts.push(Alert {
            severity: Severity::Error,
            rule: "receivable_excluded",
            file: None,
            line: None,
            place: None,
            message: e.problem.clone(),
        });
    }

    let mut received = Acc::default();
    let mut auto = Acc::default();
    let mut suggested = Acc::default();
    let mut open = Acc::default();
    let mut write_offs = Acc::default();
    let mut unallocated = Acc::default();
    let mut auto_allocated: BTreeMap<Currency, Decimal> = BTreeMap::new();
    let mut by_stage: BTreeMap<&'static str, StageTally> = Stage::ALL
        .iter()
        .map(|s| (s.as_str(), StageTally::default()))
        .collect();
    let mut stage_amounts: BTreeMap<&'static str, BTreeMap<Currency, Decimal>> = BTreeMap::new();
    let mut aging_receipts = AgingAcc::default();
    let mut suggested_for: HashMap<usize, Vec<String>> = HashMap::new();
    let mut matches = Vec::new();
    let mut unmatched_transactions = Vec::new();
    // The rows for people (reasons in words, amounts as text) on every
    // core; the totals below in statement order.
    let (rows, _) = super::par::par_map(
        &rec.decisions,
        || (),
        |d, ()| decision_out(d, receipts, receivables, as_of),
    );
    for (d, row) in rec.decisions.iter().zip(rows) {
        let r = &receipts[d.receipt];
        let c = r.currency;
        if r.amount > Decimal::ZERO {
            received.add(c, r.amount);
        }
        match row {
            DecisionOut::Open(out) => {
                open.add(c, r.amount);
                let age = as_of.map(|a| (a - r.booking_date).num_days());
                aging_receipts.add(age, c, r.amount);
                unmatched_transactions.push(out);
            }
            DecisionOut::Matched(out, stage) => {
                let allocated: Decimal = d.allocations.iter().map(|a| a.amount).sum();
                let st = by_stage.entry(stage.as_str()).or_default();
                if d.status == Status::Auto {
                    auto.add(c, r.amount);
                    st.auto += 1;
                    add(
                        stage_amounts.entry(stage.as_str()).or_default(),
                        c,
                        allocated,
                    );
                    add(&mut auto_allocated, c, allocated);
                    if let Some(w) = &d.write_off {
                        write_offs.add(c, w.amount);
                    }
                    if d.unallocated > Decimal::ZERO {
                        unallocated.add(c, d.unallocated);
                    }
                } else {
                    suggested.add(c, r.amount);
                    st.suggested += 1;
                    for a in &d.allocations {
                        suggested_for
                            .entry(a.invoice)
                            .or_default()
                            .push(r.id.clone());
                    }
                }
                matches.push(out);
            }
        }
    }
    for (name, amounts) in &stage_amounts {
        if let Some(st) = by_stage.get_mut(name) {
            st.auto_amount = totals(amounts);
        }
    }

    let excluded: std::collections::HashSet<usize> =
        rec.excluded.iter().map(|e| e.invoice).collect();
    let mut invoices = Acc::default();
    let mut remaining = Acc::default();
    let mut aging_invoices = AgingAcc::default();
    let mut unmatched_invoices = Vec::new();
    for (i, inv) in receivables.iter().enumerate() {
        if excluded.contains(&i) || inv.open_amount <= Decimal::ZERO {
            continue;
        }
        let c = inv.currency;
        invoices.add(c, inv.open_amount);
        let left = rec.open_after_auto[i];
        if left > Decimal::ZERO {
            remaining.add(c, left);
            let overdue = match (as_of, inv.due_date) {
                (Some(a), Some(due)) => Some((a - due).num_days()),
                _ => None,
            };
            aging_invoices.add(overdue, c, left);
            unmatched_invoices.push(UnmatchedInvoiceOut {
                invoice_number: inv.invoice_number.clone(),
                customer_id: inv.customer_id.clone(),
                customer_name: inv.customer_name.clone(),
                currency: c,
                amount_open: amount_text(inv.open_amount, c),
                amount_remaining: amount_text(left, c),
                suggested_transactions: suggested_for.remove(&i).unwrap_or_default(),
                due_date: inv.due_date,
                days_overdue: overdue,
            });
        }
    }
    let mut alert_counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for a in &alerts {
        *alert_counts.entry(a.severity.as_str()).or_default() += 1;
    }
    let auto_amount_rate = received
        .amount
        .iter()
        .map(|(c, total)| {
            let done = auto_allocated.get(c).copied().unwrap_or_default();
            let rate = if total.is_zero() {
                0.0
            } else {
                (done / total).try_into().unwrap_or(0.0)
            };
            (c.to_string(), round3(rate))
        })
        .collect();
    let n = received.count;
    let summary = Summary {
        as_of,
        receipts: received.tally(),
        auto: auto.tally(),
        suggested: suggested.tally(),
        open: open.tally(),
        auto_rate: if n == 0 {
            0.0
        } else {
            round3(auto.count as f64 / n as f64)
        },
        auto_amount_rate,
        by_stage,
        invoices: invoices.tally(),
        invoices_remaining: remaining.tally(),
        write_offs: write_offs.tally(),
        unallocated: unallocated.tally(),
        skipped,
        alerts: alert_counts,
        aging_receipts: aging_receipts.aging(),
        aging_invoices: aging_invoices.aging(),
        parameters: Parameters {
            auto_threshold: cfg.auto_threshold,
            suggest_threshold: cfg.suggest_threshold,
            ambiguity_margin: cfg.ambiguity_margin,
            tolerance_relative: cfg.tolerance.relative.to_string(),
            tolerance_absolute: totals(&cfg.tolerance.absolute),
        },
    };
    FileResult {
        matches,
        unmatched_transactions,
        unmatched_invoices,
        alerts,
        summary,
    }
}

/// A cell that a spreadsheet would run as a formula gets a leading `'`.
fn cell(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{s}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Writes one row per allocation of the automatic and suggested matches:
/// `transaction_id, booking_date, status, confidence, stage,
/// invoice_number, customer_id, currency, amount, write_off, unallocated`
/// (write-off and unallocated on the receipt's first row).
pub fn write_allocations_csv(result: &FileResult, w: impl std::io::Write) -> csv::Result<()> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record([
        "transaction_id",
        "booking_date",
        "status",
        "confidence",
        "stage",
        "invoice_number",
        "customer_id",
        "currency",
        "amount",
        "write_off",
        "unallocated",
    ])?;
    for m in &result.matches {
        for (k, a) in m.allocations.iter().enumerate() {
            let date = m.booking_date.to_string();
            let confidence = format!("{:.3}", m.confidence);
            let (write_off, unallocated) = if k == 0 {
                (m.difference.as_str(), m.unallocated.as_str())
            } else {
                ("", "")
            };
            out.write_record([
                cell(&m.transaction_id).as_ref(),
                &date,
                m.status.as_str(),
                &confidence,
                m.stage.as_str(),
                cell(&a.invoice_number).as_ref(),
                cell(&a.customer_id).as_ref(),
                m.currency.as_str(),
                &a.amount,
                write_off,
                unallocated,
            ])?;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(alerts: &[Alert]) -> Vec<(&'static str, Option<u64>)> {
        alerts.iter().map(|a| (a.rule, a.line)).collect()
    }

    #[test]
    fn receivables_with_bad_rows_report_each_and_keep_the_rest() {
        let csv = "\u{feff}invoice_number,customer_id,customer_name,customer_account,currency,amount_total,amount_open,issue_date,due_date\n\
INV-1,C1,Müller GmbH,DE89370400440532013000,EUR,100.00,100.00,2026-01-01,2026-01-31\n\
INV-2,C1,Müller GmbH,,EUX,100.00,100.00,2026-01-01,2026-01-31\n\
INV-3,C2,Acme Ltd,,EUR,50.00,-5.00,2026-01-01,2026-01-31\n\
INV-4,C2,Acme Ltd,,EUR,50.00\n\
INV-5,C2,Acme Ltd,,EUR,50.00,50.00,2026-13-01,2026-01-31\n\
INV-6,C2,Acme Ltd,,EUR,50.00,50.00,2026-01-01,2026-01-31\n\
INV-6,C2,Acme Ltd,,EUR,60.00,60.00,2026-01-01,2026-01-31\n\
INV-7,C3,Zero Ltd,,EUR,50.00,0.00,2026-01-01,2026-01-31\n\
INV-8,C3,Zero Ltd,DE00123,EUR,50.00,50.00,,\n\
INV-8,C3,Zero Ltd,DE00123,EUR,50.00,50.00,,\n";
        let l = load_receivables(csv.as_bytes(), "ar.csv");
        let numbers: Vec<&str> = l
            .records
            .iter()
            .map(|r| r.invoice_number.as_str())
            .collect();
        assert_eq!(numbers, ["INV-1", "INV-8"]);
        assert_eq!(l.lines, [2, 10]);
        assert_eq!(
            rules(&l.alerts),
            [
                ("unknown_currency", Some(3)),
                ("negative_open_amount", Some(4)),
                ("missing_columns", Some(5)),
                ("invalid_date", Some(6)),
                ("invalid_iban", Some(10)),
                ("invalid_iban", Some(11)),
                ("duplicate_invoice_number", Some(7)),
                ("repeated_row", Some(11)),
            ]
        );
        let text: Vec<String> = l.alerts.iter().map(ToString::to_string).collect();
        assert!(
            text[0].starts_with("error: ar.csv:3: invoice INV-2: unknown currency \"EUX\""),
            "{}",
            text[0]
        );
        assert!(
            text[2].contains("missing amount_open, issue_date, due_date"),
            "{}",
            text[2]
        );
        assert!(text[6].contains("lines 7, 8"), "{}", text[6]);
        assert_eq!(l.skipped.get("invoices_not_open"), Some(&1));
        assert!(!l.unusable);
    }

    #[test]
    fn empty_and_headerless_files_are_unusable_with_a_reason() {
        let l = load_receivables(b"", "ar.csv");
        assert!(l.unusable);
        assert_eq!(rules(&l.alerts), [("empty_file", None)]);
        let l = load_statement_csv(b"id,amount\n1,2\n", "st.csv");
        assert!(l.unusable);
        assert_eq!(l.alerts[0].rule, "missing_columns");
        assert!(l.alerts[0].message.contains("transaction_id"));
    }

    #[test]
    fn statement_csv_skips_debits_and_makes_ids_unique() {
        let csv = "transaction_id;booking_date;amount;currency;counterparty_name;counterparty_account;reference\n\
T1;2026-03-02;100.00;EUR;Müller;DE89370400440532013000;INV-1\n\
T2;2026-03-02;-40.00;EUR;Rent;;\n\
T1;2026-03-02;100.00;EUR;Müller;DE89370400440532013000;INV-1\n\
T1;2026-03-03;7.00;EUR;Other;;x\n\
;2026-03-03;8.00;eur;Other;;x\n\
T9;03/03/2026;8.00;EUR;Other;;x\n";
        let l = load_statement_csv(csv.as_bytes(), "st.csv");
        let ids: Vec<&str> = l.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["T1", "T1#2", "line-6"]);
        assert_eq!(l.skipped.get("debits"), Some(&1));
        assert_eq!(
            rules(&l.alerts),
            [
                ("missing_transaction_id", Some(6)),
                ("invalid_date", Some(7)),
                ("repeated_transaction", Some(4)),
                ("duplicate_transaction_id", Some(5)),
            ]
        );
    }

    #[test]
    fn amounts_keep_their_exact_value_with_currency_decimals() {
        let eur = Currency::parse("EUR").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(amount_text("12.3".parse().unwrap(), eur), "12.30");
        assert_eq!(amount_text("12.345".parse().unwrap(), eur), "12.345");
        assert_eq!(amount_text("1200".parse().unwrap(), jpy), "1200");
        assert_eq!(cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(cell("INV-1"), "INV-1");
    }
}
