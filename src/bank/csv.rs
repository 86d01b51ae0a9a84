//! Profile-driven CSV bank exports.
//!
//! A [`CsvProfile`] says how one bank's export is laid out: encoding,
//! delimiter, preamble and footer rows, which column holds what (by header
//! name or 0-based index), the decimal style and the date formats. Profiles
//! are plain serde structs so they live in concord's TOML configuration;
//! `config/bank-profiles/*.toml` ships two for documented layouts.
//!
//! CSV files are read whole (decoding GBK or UTF-16 needs the text), up to
//! [`MAX_WHOLE_FILE`](super::MAX_WHOLE_FILE).

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    Balance, BankError, ErrorKind, Format, Location, Statement, StatementEnd, StatementHeader,
    Warning, currency, money, new_transaction, opt, parse_unsigned, put, signed, snippet,
};
use crate::model::{BankTransaction, Currency};

/// A column, by header name (`"Buchungstag"`) or 0-based index (`3`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Column {
    /// 0-based position.
    Index(usize),
    /// Header text (compared after trimming).
    Name(String),
}

/// How amounts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DecimalStyle {
    /// `1,234.56` (also `1234.56`).
    #[default]
    #[serde(rename = "1,234.56")]
    DotDecimal,
    /// `1.234,56` (also `1234,56`).
    #[serde(rename = "1.234,56")]
    CommaDecimal,
    /// `1 234,56` (space or no-break space groups).
    #[serde(rename = "1 234,56")]
    SpaceComma,
    /// `1'234.56` (Swiss).
    #[serde(rename = "1'234.56")]
    ApostropheDot,
}

/// Row order of the export; needed to derive opening and closing balances
/// from a running balance column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowOrder {
    /// First row is the oldest.
    #[default]
    OldestFirst,
    /// First row is the newest (many Chinese bank exports).
    NewestFirst,
}

/// Which column holds which field.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvColumns {
    /// Booking date (required).
    pub booking_date: Option<Column>,
    /// Value date.
    #[serde(default)]
    pub value_date: Option<Column>,
    /// Signed amount. Either this or `debit`/`credit`.
    #[serde(default)]
    pub amount: Option<Column>,
    /// Money out (sign ignored: always a debit).
    #[serde(default)]
    pub debit: Option<Column>,
    /// Money in.
    #[serde(default)]
    pub credit: Option<Column>,
    /// Debit/credit marker column (e.g. German `Soll/Haben`); with it the
    /// amount's own sign is ignored and `debit_markers` decide.
    #[serde(default)]
    pub direction: Option<Column>,
    /// Currency code (or an alias from `currency_aliases`).
    #[serde(default)]
    pub currency: Option<Column>,
    /// Own account.
    #[serde(default)]
    pub account: Option<Column>,
    /// Other party's name.
    #[serde(default)]
    pub counterparty_name: Option<Column>,
    /// Other party's account / IBAN.
    #[serde(default)]
    pub counterparty_account: Option<Column>,
    /// Other party's BIC.
    #[serde(default)]
    pub counterparty_bic: Option<Column>,
    /// Remittance text; several columns are joined with a space.
    #[serde(default)]
    pub remittance: Vec<Column>,
    /// SEPA end-to-end reference.
    #[serde(default)]
    pub end_to_end_id: Option<Column>,
    /// SEPA mandate reference.
    #[serde(default)]
    pub mandate_id: Option<Column>,
    /// SEPA creditor id.
    #[serde(default)]
    pub creditor_id: Option<Column>,
    /// Bank's own reference.
    #[serde(default)]
    pub bank_reference: Option<Column>,
    /// Booking text / transaction type.
    #[serde(default)]
    pub bank_transaction_code: Option<Column>,
    /// Running balance after the row.
    #[serde(default)]
    pub balance: Option<Column>,
    /// Booking status (see `pending_values`).
    #[serde(default)]
    pub status: Option<Column>,
    /// More columns copied into `extra.csv_columns` by header name.
    #[serde(default)]
    pub keep: Vec<Column>,
}

/// Layout of one bank's CSV export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvProfile {
    /// Profile name (used in [`Format::Csv`] and error messages).
    pub name: String,
    /// Free text: which bank, which export, where documented.
    #[serde(default)]
    pub description: Option<String>,
    /// WHATWG encoding label: `utf-8`, `gbk`, `gb18030`, `utf-16le`,
    /// `utf-16be`, `windows-1252`, `iso-8859-1` … A byte order mark in the
    /// file overrides it.
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// Field delimiter.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Physical lines before the header row (titles, account info).
    #[serde(default)]
    pub skip_rows: usize,
    /// Whether a header row follows the skipped lines.
    #[serde(default = "default_true")]
    pub has_header: bool,
    /// Records at the end to ignore (totals). Blank records are always skipped.
    #[serde(default)]
    pub footer_rows: usize,
    /// Amount notation.
    #[serde(default)]
    pub decimal_style: DecimalStyle,
    /// chrono formats tried in order, e.g. `%d.%m.%y`; a date-time format
    /// (`%Y-%m-%d %H:%M:%S`) also works and keeps the date.
    pub date_formats: Vec<String>,
    /// Fixed own account, when the file has no account column.
    #[serde(default)]
    pub account: Option<String>,
    /// Fixed currency, when the file has no currency column.
    #[serde(default)]
    pub currency: Option<String>,
    /// Non-ISO currency spellings: `人民币 = "CNY"`.
    #[serde(default)]
    pub currency_aliases: BTreeMap<String, String>,
    /// Cell values meaning "empty" besides the empty string (e.g. `-`).
    #[serde(default)]
    pub empty_values: Vec<String>,
    /// Values of the `direction` column that mean debit (`S`, `D`, `借`).
    #[serde(default)]
    pub debit_markers: Vec<String>,
    /// Values of the `status` column that mean not yet booked.
    #[serde(default)]
    pub pending_values: Vec<String>,
    /// Row order, for opening/closing balances from the balance column.
    #[serde(default)]
    pub row_order: RowOrder,
    /// Column mapping.
    pub columns: CsvColumns,
}

fn default_encoding() -> String {
    "utf-8".into()
}
fn default_delimiter() -> char {
    ','
}
fn default_true() -> bool {
    true
}

/// Characters trimmed from every cell (exports pad with spaces and tabs).
const TRIM: &[char] = &[' ', '\t', '\u{a0}', '\u{3000}', '\r', '\n'];

/// Picks the first profile whose mapped header names all occur in the
/// file's header row. Profiles mapping only by index never match.
pub fn detect_profile<'p>(head: &[u8], profiles: &'p [CsvProfile]) -> Option<&'p CsvProfile> {
    profiles.iter().find(|p| {
        let Ok(text) = decode(head, p, true) else {
            return false;
        };
        let names = p.header_names();
        if names.is_empty() || !p.has_header {
            return false;
        }
        let Some(header) = text.lines().nth(p.skip_rows) else {
            return false;
        };
        let cells: Vec<String> = header
            .split(p.delimiter)
            .map(|c| {
                c.trim_matches(TRIM)
                    .trim_matches('"')
                    .trim_matches(TRIM)
                    .to_owned()
            })
            .collect();
        names.iter().all(|n| cells.iter().any(|c| c == n))
    })
}

impl CsvProfile {
    fn header_names(&self) -> Vec<&str> {
        let c = &self.columns;
        let mut v: Vec<&Column> = [
            &c.booking_date,
            &c.value_date,
            &c.amount,
            &c.debit,
            &c.credit,
            &c.currency,
            &c.counterparty_name,
            &c.balance,
        ]
        .into_iter()
        .flatten()
        .collect();
        v.extend(c.remittance.iter());
        v.into_iter()
            .filter_map(|c| match c {
                Column::Name(n) => Some(n.as_str()),
                Column::Index(_) => None,
            })
            .collect()
    }
}

fn decode(bytes: &[u8], p: &CsvProfile, lossy: bool) -> Result<String, String> {
    let (enc, bom) = match encoding_rs::Encoding::for_bom(bytes) {
        Some((e, n)) => (e, n),
        None => (
            encoding_rs::Encoding::for_label(p.encoding.trim().as_bytes())
                .ok_or_else(|| format!("unknown encoding {:?}", snippet(&p.encoding)))?,
            0,
        ),
    };
    let body = bytes.get(bom..).unwrap_or(&[]);
    if lossy {
        return Ok(enc.decode_without_bom_handling(body).0.into_owned());
    }
    enc.decode_without_bom_handling_and_without_replacement(body)
        .map(|c| c.into_owned())
        .ok_or_else(|| format!("the file is not valid {}", enc.name()))
}

/// Resolved column indexes.
struct Cols {
    idx: BTreeMap<&'static str, usize>,
    remittance: Vec<usize>,
    keep: Vec<(String, usize)>,
}

/// Parses a CSV export with its profile. One statement per own account
/// (the profile's fixed account, or each distinct value of the account
/// column, in order of appearance).
pub fn parse_csv(bytes: &[u8], p: &CsvProfile) -> Result<Vec<Statement>, BankError> {
    let fmt = Format::Csv(p.name.clone());
    let err = |loc: Location, kind: ErrorKind| BankError::new(fmt.clone(), loc, kind);
    if bytes.len() > super::MAX_WHOLE_FILE {
        return Err(err(
            Location::File,
            ErrorKind::Limit("CSV file too large".into()),
        ));
    }
    if p.date_formats.is_empty() {
        return Err(err(
            Location::File,
            ErrorKind::Missing("profile date_formats".into()),
        ));
    }
    let text = decode(bytes, p, false).map_err(|r| err(Location::File, ErrorKind::Syntax(r)))?;
    // Skip the preamble by physical lines.
    let mut offset = 0usize;
    for _ in 0..p.skip_rows {
        match text.get(offset..).and_then(|r| r.find('\n')) {
            Some(n) => offset += n + 1,
            None => offset = text.len(),
        }
    }
    let body = text.get(offset..).unwrap_or("");
    let line_base = p.skip_rows as u64;
    let delim = u8::try_from(u32::from(p.delimiter)).map_err(|_| {
        err(
            Location::File,
            ErrorKind::Unsupported("delimiter must be a single-byte character".into()),
        )
    })?;
    let mut rdr = ::csv::ReaderBuilder::new()
        .delimiter(delim)
        .has_headers(false)
        .flexible(true)
        .from_reader(body.as_bytes());
    let mut records: Vec<(u64, Vec<String>)> = Vec::new();
    // Physical line of each record's first character, counted here: the
    // csv crate's own line numbers lag by one after CRLF endings.
    let mut counted = (0usize, 1u64);
    let mut line_of = |byte: usize| -> u64 {
        let bb = body.as_bytes();
        let mut start = byte.min(bb.len());
        while matches!(bb.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        if start >= counted.0 {
            let seg = bb.get(counted.0..start).unwrap_or(&[]);
            counted = (
                start,
                counted.1 + seg.iter().filter(|b| **b == b'\n').count() as u64,
            );
        }
        counted.1 + line_base
    };
    for r in rdr.records() {
        let rec = r.map_err(|e| {
            let line = e.position().map_or(0, |pos| pos.line()) + line_base;
            err(Location::Row(line), ErrorKind::Syntax(e.to_string()))
        })?;
        let line = line_of(rec.position().map_or(0, |pos| pos.byte() as usize));
        let cells: Vec<String> = rec
            .iter()
            .map(|c| c.trim_matches(TRIM).to_owned())
            .collect();
        if cells.iter().all(|c| c.is_empty()) {
            continue;
        }
        records.push((line, cells));
    }
    let header = if p.has_header {
        if records.is_empty() {
            return Err(err(
                Location::Row(line_base + 1),
                ErrorKind::Missing("header row".into()),
            ));
        }
        Some(records.remove(0))
    } else {
        None
    };
    let keep = records.len().saturating_sub(p.footer_rows);
    records.truncate(keep);
    let cols = resolve(p, header.as_ref(), &err)?;
    let c = &p.columns;
    if c.amount.is_none() && c.debit.is_none() && c.credit.is_none() {
        return Err(err(
            Location::File,
            ErrorKind::Missing("profile column amount (or debit/credit)".into()),
        ));
    }
    let fixed_ccy = match &p.currency {
        Some(code) => Some(ccy_of(p, code).map_err(|r| {
            err(
                Location::File,
                ErrorKind::InvalidValue {
                    field: "profile currency".into(),
                    value: snippet(code),
                    reason: r,
                },
            )
        })?),
        None => None,
    };
    if fixed_ccy.is_none() && c.currency.is_none() {
        return Err(err(
            Location::File,
            ErrorKind::Missing("profile currency (fixed or column)".into()),
        ));
    }

    struct Group {
        account: String,
        txs: Vec<BankTransaction>,
        balances: Vec<(NaiveDate, Decimal, Decimal, Currency)>,
        warnings: Vec<Warning>,
    }
    let mut groups: Vec<Group> = Vec::new();
    for (line, cells) in &records {
        let line = *line;
        let cell = |key: &str| -> &str {
            cols.idx
                .get(key)
                .and_then(|&i| cells.get(i))
                .map(String::as_str)
                .filter(|v| !v.is_empty() && !p.empty_values.iter().any(|e| e == v))
                .unwrap_or("")
        };
        let bad = |field: &str, value: &str, reason: String| {
            err(
                Location::Row(line),
                ErrorKind::InvalidValue {
                    field: field.into(),
                    value: snippet(value),
                    reason,
                },
            )
        };
        let date_s = cell("booking_date");
        let booking = parse_date(date_s, &p.date_formats).ok_or_else(|| {
            bad(
                "booking_date",
                date_s,
                format!("no date format of {:?} matches", p.date_formats),
            )
        })?;
        let value_date = match cell("value_date") {
            "" => None,
            v => Some(parse_date(v, &p.date_formats).ok_or_else(|| {
                bad(
                    "value_date",
                    v,
                    "not a date in the profile's formats".into(),
                )
            })?),
        };
        let amount = {
            let a = cell("amount");
            let d = cell("debit");
            let cr = cell("credit");
            if !a.is_empty() {
                let v = parse_amount(a, p.decimal_style).map_err(|r| bad("amount", a, r))?;
                match cols.idx.get("direction") {
                    Some(_) => {
                        let dir = cell("direction");
                        signed(v.abs(), p.debit_markers.iter().any(|m| m == dir))
                    }
                    None => v,
                }
            } else if !d.is_empty()
                && parse_amount(d, p.decimal_style)
                    .map(|v| !v.is_zero())
                    .unwrap_or(true)
            {
                let v = parse_amount(d, p.decimal_style).map_err(|r| bad("debit", d, r))?;
                signed(v.abs(), true)
            } else if !cr.is_empty() {
                parse_amount(cr, p.decimal_style)
                    .map_err(|r| bad("credit", cr, r))?
                    .abs()
            } else if !d.is_empty() {
                Decimal::ZERO
            } else {
                return Err(err(
                    Location::Row(line),
                    ErrorKind::Missing("amount".into()),
                ));
            }
        };
        let ccy = match fixed_ccy {
            Some(c) if !cols.idx.contains_key("currency") || cell("currency").is_empty() => c,
            _ => {
                let code = cell("currency");
                ccy_of(p, code).map_err(|r| bad("currency", code, r))?
            }
        };
        money(amount, ccy).map_err(|r| bad("amount", &amount.to_string(), r))?;
        let account = match cell("account") {
            "" => p.account.clone().unwrap_or_default(),
            a => a.to_owned(),
        };
        if account.is_empty() {
            return Err(err(
                Location::Row(line),
                ErrorKind::Missing("own account (profile account or account column)".into()),
            ));
        }
        let mut tx = new_transaction(&account, booking, amount, ccy);
        tx.value_date = value_date;
        tx.counterparty_name = opt(cell("counterparty_name"));
        tx.counterparty_account = opt(cell("counterparty_account"));
        tx.bank_reference = opt(cell("bank_reference"));
        tx.bank_transaction_code = opt(cell("bank_transaction_code"));
        tx.end_to_end_id =
            opt(cell("end_to_end_id")).filter(|e| !e.eq_ignore_ascii_case("NOTPROVIDED"));
        let rem: Vec<&str> = cols
            .remittance
            .iter()
            .filter_map(|&i| cells.get(i))
            .map(String::as_str)
            .filter(|v| !v.is_empty() && !p.empty_values.iter().any(|e| e == v))
            .collect();
        tx.remittance_info = opt(&rem.join(" "));
        let x = &mut tx.extra;
        put(x, "mandate_id", cell("mandate_id"));
        put(x, "creditor_id", cell("creditor_id"));
        put(x, "counterparty_bic", cell("counterparty_bic"));
        x.insert("row".into(), Value::from(line));
        let status = cell("status");
        if !status.is_empty() {
            let pending = p.pending_values.iter().any(|v| v == status);
            x.insert(
                "entry_status".into(),
                Value::String(if pending { "PDNG" } else { "BOOK" }.into()),
            );
        }
        if !cols.keep.is_empty() {
            let mut m = Map::new();
            for (name, i) in &cols.keep {
                if let Some(v) = cells.get(*i).filter(|v| !v.is_empty()) {
                    m.insert(name.clone(), Value::String(v.clone()));
                }
            }
            x.insert("csv_columns".into(), Value::Object(m));
        }
        let bal = match cell("balance") {
            "" => None,
            b => Some(parse_amount(b, p.decimal_style).map_err(|r| bad("balance", b, r))?),
        };
        if let Some(b) = bal {
            x.insert("balance_after".into(), Value::String(b.to_string()));
        }
        let gi = match groups.iter().position(|g| g.account == account) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    account: account.clone(),
                    txs: Vec::new(),
                    balances: Vec::new(),
                    warnings: Vec::new(),
                });
                groups.len() - 1
            }
        };
        if let Some(g) = groups.get_mut(gi) {
            if let Some(b) = bal {
                g.balances.push((booking, b, amount, ccy));
            }
            g.txs.push(tx);
        }
    }
    let mut out = Vec::new();
    for mut g in groups {
        if p.row_order == RowOrder::NewestFirst {
            g.txs.reverse();
            g.balances.reverse();
        }
        let mut balances = Vec::new();
        if let (Some(first), Some(last)) = (g.balances.first(), g.balances.last()) {
            let (d0, b0, a0, c0) = *first;
            let (d1, b1, _, c1) = *last;
            // Opening = first running balance minus the first line.
            if let (Some(open), Ok(cm)) = (b0.checked_sub(a0), money(b1, c1)) {
                if let Ok(o) = money(open, c0) {
                    balances.push(Balance {
                        kind: "CSV_OPENING".into(),
                        date: d0,
                        amount: o,
                    });
                }
                balances.push(Balance {
                    kind: "CSV_CLOSING".into(),
                    date: d1,
                    amount: cm,
                });
            }
            // Running balance must follow the lines; a break usually means
            // a wrong row_order in the profile.
            for w in g.balances.windows(2) {
                if let [(_, prev, _, _), (_, cur, amt, _)] = w
                    && prev.checked_add(*amt) != Some(*cur)
                {
                    g.warnings.push(Warning {
                            location: Location::File,
                            message: format!(
                                "running balance {cur} does not follow {prev} + {amt}; check the profile's row_order"
                            ),
                        });
                    break;
                }
            }
        }
        let ccy = g.txs.first().map(|t| t.currency);
        let header = StatementHeader {
            format: fmt.clone(),
            id: None,
            account: g.account,
            servicer: None,
            currency: ccy,
            sequence: None,
            created_at: None,
            message_id: None,
        };
        out.push(Statement::from_parts(
            header,
            g.txs,
            StatementEnd {
                balances,
                warnings: g.warnings,
            },
        ));
    }
    Ok(out)
}

fn resolve<F>(
    p: &CsvProfile,
    header: Option<&(u64, Vec<String>)>,
    err: &F,
) -> Result<Cols, BankError>
where
    F: Fn(Location, ErrorKind) -> BankError,
{
    let find = |c: &Column| -> Result<usize, BankError> {
        match c {
            Column::Index(i) => Ok(*i),
            Column::Name(n) => {
                let Some((line, cells)) = header else {
                    return Err(err(
                        Location::File,
                        ErrorKind::Unsupported(format!(
                            "column {n:?} by name needs has_header = true"
                        )),
                    ));
                };
                cells
                    .iter()
                    .position(|h| h.trim_matches(TRIM) == n.trim())
                    .ok_or_else(|| {
                        err(
                            Location::Row(*line),
                            ErrorKind::Missing(format!("column {n:?} in the header row")),
                        )
                    })
            }
        }
    };
    let c = &p.columns;
    let mut idx = BTreeMap::new();
    let Some(bd) = &c.booking_date else {
        return Err(err(
            Location::File,
            ErrorKind::Missing("profile column booking_date".into()),
        ));
    };
    idx.insert("booking_date", find(bd)?);
    for (k, col) in [
        ("value_date", &c.value_date),
        ("amount", &c.amount),
        ("debit", &c.debit),
        ("credit", &c.credit),
        ("direction", &c.direction),
        ("currency", &c.currency),
        ("account", &c.account),
        ("counterparty_name", &c.counterparty_name),
        ("counterparty_account", &c.counterparty_account),
        ("counterparty_bic", &c.counterparty_bic),
        ("end_to_end_id", &c.end_to_end_id),
        ("mandate_id", &c.mandate_id),
        ("creditor_id", &c.creditor_id),
        ("bank_reference", &c.bank_reference),
        ("bank_transaction_code", &c.bank_transaction_code),
        ("balance", &c.balance),
        ("status", &c.status),
    ] {
        if let Some(col) = col {
            idx.insert(k, find(col)?);
        }
    }
    let remittance = c
        .remittance
        .iter()
        .map(&find)
        .collect::<Result<Vec<_>, _>>()?;
    let mut keep = Vec::new();
    for col in &c.keep {
        let i = find(col)?;
        let name = match col {
            Column::Name(n) => n.clone(),
            Column::Index(i) => format!("column_{i}"),
        };
        keep.push((name, i));
    }
    Ok(Cols {
        idx,
        remittance,
        keep,
    })
}

fn ccy_of(p: &CsvProfile, code: &str) -> Result<Currency, String> {
    let code = code.trim();
    let mapped = p.currency_aliases.get(code).map_or(code, String::as_str);
    currency(mapped)
}

fn parse_date(s: &str, formats: &[String]) -> Option<NaiveDate> {
    let s = s.trim();
    formats.iter().find_map(|f| {
        NaiveDate::parse_from_str(s, f)
            .ok()
            .or_else(|| NaiveDateTime::parse_from_str(s, f).ok().map(|d| d.date()))
    })
}

/// Parses an amount in the given style. Accepts a leading `+`/`-`, a
/// trailing `-` (`12,50-`) and accounting parentheses `(12.50)`.
pub(crate) fn parse_amount(s: &str, style: DecimalStyle) -> Result<Decimal, String> {
    let mut t = s.trim_matches(TRIM);
    let mut neg = false;
    if let Some(inner) = t.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        neg = true;
        t = inner.trim();
    }
    if let Some(r) = t.strip_prefix('-') {
        neg = !neg;
        t = r.trim_start();
    } else if let Some(r) = t.strip_prefix('+') {
        t = r.trim_start();
    } else if let Some(r) = t.strip_suffix('-') {
        neg = !neg;
        t = r.trim_end();
    }
    let (group, dec): (&[char], u8) = match style {
        DecimalStyle::DotDecimal => (&[','], b'.'),
        DecimalStyle::CommaDecimal => (&['.'], b','),
        DecimalStyle::SpaceComma => (&[' ', '\u{a0}', '\u{202f}'], b','),
        DecimalStyle::ApostropheDot => (&['\'', '\u{2019}'], b'.'),
    };
    // Grouping separators must sit between digits in groups of three.
    let cleaned: String = t.chars().filter(|c| !group.contains(c)).collect();
    if cleaned.len() != t.len() {
        let int_part = t.split(char::from(dec)).next().unwrap_or("");
        let mut groups = int_part.split(|c| group.contains(&c));
        let first_ok = groups.next().is_some_and(|g| !g.is_empty() && g.len() <= 3);
        if !first_ok || !groups.all(|g| g.len() == 3) {
            return Err("misplaced digit grouping".into());
        }
    }
    let v = parse_unsigned(&cleaned, dec)?;
    Ok(signed(v, neg))
}
