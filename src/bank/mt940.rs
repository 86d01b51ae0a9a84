//! SWIFT MT940 / MT942, streamed line by line.
//!
//! Written here rather than taken from the `mt940` crate: that crate needs
//! the whole file as one string (no streaming), requires opening and closing
//! balances (so MT942 and intermediate pages fail), pulls in clap, pest,
//! serde_with, strum and deunicode as non-optional dependencies, and leaves
//! the German `?NN` and Dutch `/TAG/` `:86:` forms to the caller.
//!
//! Tolerated: SWIFT `{1:…}{2:…}{4:` envelopes and `-}` trailers, bank
//! preamble lines before `:20:`, CRLF or LF, a missing final newline,
//! trailing spaces, entry dates left blank, a `:61:` without `:86:`,
//! several `:86:` per line, and tag-like text inside `:86:` (only known tags
//! start a field).

use super::read_capped_line;
use std::collections::BTreeMap;
use std::io::BufRead;

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::{
    Balance, BankError, ErrorKind, Format, Location, StatementEnd, StatementEvent, StatementHeader,
    StreamError, Warning, currency, money, new_transaction, opt, parse_unsigned, put, signed,
    snippet, squash,
};
use crate::model::{BankTransaction, Currency};

/// Longest physical line accepted.
/// Longest field (all its lines) accepted.
const MAX_FIELD: usize = 256 * 1024;

/// Tags that start a field; anything else continues the previous field.
const KNOWN_TAGS: &[&str] = &[
    "20", "21", "13", "13D", "25", "25P", "28", "28C", "34F", "60F", "60M", "60", "61", "62F",
    "62M", "62", "64", "65", "86", "90D", "90C", "NS",
];

/// One field: tag, text (lines joined with `\n`) and first line number.
struct Field {
    tag: String,
    text: String,
    line: u64,
}

/// A `:61:` line waiting for its `:86:`.
struct Pending {
    tx: BankTransaction,
    info: Option<String>,
}

struct State<'s, E> {
    sink: &'s mut dyn FnMut(StatementEvent) -> Result<(), E>,
    format: Format,
    in_stmt: bool,
    start_line: u64,
    id: Option<String>,
    related: Option<String>,
    account: Option<String>,
    sequence: Option<String>,
    created_at: Option<NaiveDateTime>,
    ccy: Option<Currency>,
    ccy_from_25: Option<Currency>,
    balances: Vec<Balance>,
    warnings: Vec<Warning>,
    header_sent: bool,
    pending: Option<Pending>,
    count_debit: u64,
    count_credit: u64,
    sum_debit: Decimal,
    sum_credit: Decimal,
    stated_sums: Vec<(bool, u64, Decimal, u64)>,
    statements: u64,
}

pub(crate) fn parse<R: BufRead, E>(
    mut reader: R,
    format: Format,
    sink: &mut dyn FnMut(StatementEvent) -> Result<(), E>,
) -> Result<(), StreamError<E>> {
    let mut st = State {
        sink,
        format,
        in_stmt: false,
        start_line: 0,
        id: None,
        related: None,
        account: None,
        sequence: None,
        created_at: None,
        ccy: None,
        ccy_from_25: None,
        balances: Vec::new(),
        warnings: Vec::new(),
        header_sent: false,
        pending: None,
        count_debit: 0,
        count_credit: 0,
        sum_debit: Decimal::ZERO,
        sum_credit: Decimal::ZERO,
        stated_sums: Vec::new(),
        statements: 0,
    };
    let mut buf = Vec::with_capacity(256);
    let mut line_no: u64 = 0;
    let mut field: Option<Field> = None;
    loop {
        match read_capped_line(&mut reader, &mut buf) {
            Ok(true) => line_no += 1,
            Ok(false) => break,
            Err(kind) => return Err(st.err(line_no + 1, kind).into()),
        }
        let line = decode_line(&buf);
        let mut l = line.trim_end_matches(['\r', '\n', ' ', '\t', '\u{0}']);
        // SWIFT envelope: `{1:…}{2:…}{4:` opens the text block.
        if l.starts_with('{') {
            match l.find("{4:") {
                Some(p) => l = l.get(p + 3..).unwrap_or(""),
                None => continue,
            }
        }
        if l == "-" || l.starts_with("-}") {
            if let Some(f) = field.take() {
                st.field(f)?;
            }
            st.end_statement()?;
            continue;
        }
        if let Some((tag, rest)) = split_tag(l) {
            if let Some(f) = field.take() {
                st.field(f)?;
            }
            field = Some(Field {
                tag: tag.to_owned(),
                text: rest.to_owned(),
                line: line_no,
            });
            continue;
        }
        // Lines outside a field (bank preambles, `:940:`) are ignored.
        if let Some(f) = field.as_mut() {
            if f.text.len() + l.len() > MAX_FIELD {
                return Err(st
                    .err(
                        f.line,
                        ErrorKind::Limit(format!("field longer than {MAX_FIELD} bytes")),
                    )
                    .into());
            }
            f.text.push('\n');
            f.text.push_str(l);
        }
    }
    if let Some(f) = field.take() {
        st.field(f)?;
    }
    st.end_statement()?;
    if st.statements == 0 {
        return Err(st
            .err(
                line_no.max(1),
                ErrorKind::NotAStatement("no :20: … :25: statement found".into()),
            )
            .into());
    }
    Ok(())
}

/// UTF-8, else Windows-1252 (common in German bank exports).
fn decode_line(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => encoding_rs::WINDOWS_1252.decode_without_bom_handling(b).0,
    }
}

/// `:61:rest` → ("61", "rest") for known tags only.
fn split_tag(l: &str) -> Option<(&str, &str)> {
    let t = l.trim_start();
    let body = t.strip_prefix(':')?;
    let end = body.find(':')?;
    let tag = body.get(..end)?;
    if KNOWN_TAGS.contains(&tag) {
        Some((tag, body.get(end + 1..).unwrap_or("")))
    } else {
        None
    }
}

impl<E> State<'_, E> {
    fn err(&self, line: u64, kind: ErrorKind) -> BankError {
        BankError::new(self.format.clone(), Location::Line(line), kind)
    }

    fn invalid(&self, line: u64, field: &str, value: &str, reason: impl Into<String>) -> BankError {
        self.err(
            line,
            ErrorKind::InvalidValue {
                field: field.to_owned(),
                value: snippet(value),
                reason: reason.into(),
            },
        )
    }

    fn warn(&mut self, line: u64, message: impl Into<String>) {
        self.warnings.push(Warning {
            location: Location::Line(line),
            message: message.into(),
        });
    }

    fn begin(&mut self, line: u64) {
        self.in_stmt = true;
        self.start_line = line;
        self.id = None;
        self.related = None;
        self.account = None;
        self.sequence = None;
        self.created_at = None;
        self.ccy = None;
        self.ccy_from_25 = None;
        self.balances.clear();
        self.warnings.clear();
        self.header_sent = false;
        self.pending = None;
        self.count_debit = 0;
        self.count_credit = 0;
        self.sum_debit = Decimal::ZERO;
        self.sum_credit = Decimal::ZERO;
        self.stated_sums.clear();
    }

    fn field(&mut self, f: Field) -> Result<(), StreamError<E>> {
        let first = f.text.lines().next().unwrap_or("").trim().to_owned();
        match f.tag.as_str() {
            "20" => {
                if self.in_stmt {
                    self.end_statement()?;
                }
                self.begin(f.line);
                self.id = opt(&first);
            }
            "86" => {
                // Without a pending line it informs the account owner: not a line.
                if let Some(p) = self.pending.as_mut() {
                    let text = f.text.trim_end().to_owned();
                    p.info = Some(match p.info.take() {
                        Some(prev) => format!("{prev}\n{text}"),
                        None => text,
                    });
                }
                return Ok(());
            }
            "NS" => return Ok(()),
            _ => {}
        }
        if f.tag == "20" {
            return Ok(());
        }
        if !self.in_stmt {
            // A field before any :20: starts a statement without reference.
            self.begin(f.line);
            self.warn(f.line, "statement has no :20: transaction reference");
        }
        match f.tag.as_str() {
            "21" => self.related = opt(&first),
            "25" | "25P" => {
                if self.header_sent {
                    return Err(self
                        .invalid(
                            f.line,
                            ":25:",
                            &first,
                            "account identification after the statement's lines",
                        )
                        .into());
                }
                self.account = opt(&first);
                // Some banks append the currency: 51210600/9223382012EUR.
                let tail = first.get(first.len().saturating_sub(3)..).unwrap_or("");
                if tail.len() == 3 && tail.bytes().all(|b| b.is_ascii_uppercase()) {
                    self.ccy_from_25 = currency(tail).ok();
                }
            }
            "28" | "28C" => self.sequence = opt(&first),
            "13" | "13D" => self.created_at = parse_datetime_13d(&first),
            "34F" if self.ccy.is_none() => {
                self.ccy = first.get(..3).and_then(|c| currency(c).ok());
            }
            "60F" | "60M" | "60" | "62F" | "62M" | "62" | "64" | "65" => {
                self.flush_pending()?;
                let kind = if f.tag == "60" {
                    "60F".to_owned()
                } else if f.tag == "62" {
                    "62F".to_owned()
                } else {
                    f.tag.clone()
                };
                let b = self.balance(&kind, &first, f.line)?;
                if self.ccy.is_none() && kind.starts_with("60") {
                    self.ccy = Some(b.amount.currency());
                }
                self.balances.push(b);
            }
            "90D" | "90C" => {
                self.flush_pending()?;
                // Number of entries, currency, sum: 3EUR1234,56.
                let digits: String = first.chars().take_while(char::is_ascii_digit).collect();
                let rest = first.get(digits.len()..).unwrap_or("");
                let n = digits.parse::<u64>().unwrap_or(0);
                if self.ccy.is_none() {
                    self.ccy = rest.get(..3).and_then(|c| currency(c).ok());
                }
                let sum = rest.get(3..).and_then(|a| parse_unsigned(a, b',').ok());
                if let Some(sum) = sum {
                    self.stated_sums.push((f.tag == "90D", n, sum, f.line));
                }
            }
            "61" => {
                self.flush_pending()?;
                if !self.header_sent {
                    self.send_header(f.line)?;
                }
                let tx = self.statement_line(&f)?;
                self.pending = Some(Pending { tx, info: None });
            }
            _ => {}
        }
        Ok(())
    }

    fn statement_currency(&self) -> Option<Currency> {
        self.ccy.or(self.ccy_from_25)
    }

    fn send_header(&mut self, line: u64) -> Result<(), StreamError<E>> {
        let Some(account) = self.account.clone() else {
            return Err(self
                .err(
                    line,
                    ErrorKind::Missing(format!(
                        ":25: account identification in the statement starting at line {}",
                        self.start_line
                    )),
                )
                .into());
        };
        let fmt = if self.created_at.is_some()
            && self.format == Format::Mt940
            && !self.balances.iter().any(|b| b.kind.starts_with("60"))
        {
            Format::Mt942
        } else {
            self.format.clone()
        };
        self.header_sent = true;
        let h = StatementHeader {
            format: fmt,
            id: self.id.clone(),
            account,
            servicer: None,
            currency: self.statement_currency(),
            sequence: self.sequence.clone(),
            created_at: self.created_at,
            message_id: self.related.clone(),
        };
        (self.sink)(StatementEvent::Header(h)).map_err(StreamError::Sink)
    }

    fn end_statement(&mut self) -> Result<(), StreamError<E>> {
        if !self.in_stmt {
            return Ok(());
        }
        self.flush_pending()?;
        if !self.header_sent {
            self.send_header(self.start_line)?;
        }
        for (debit, n, sum, line) in std::mem::take(&mut self.stated_sums) {
            let (cn, cs) = if debit {
                (self.count_debit, self.sum_debit)
            } else {
                (self.count_credit, self.sum_credit)
            };
            if cn != n || cs != sum {
                self.warn(
                    line,
                    format!(
                        ":90{}: states {n} entries totalling {sum}, the lines give {cn} totalling {cs}",
                        if debit { "D" } else { "C" }
                    ),
                );
            }
        }
        self.in_stmt = false;
        self.statements += 1;
        let end = StatementEnd {
            balances: std::mem::take(&mut self.balances),
            warnings: std::mem::take(&mut self.warnings),
        };
        (self.sink)(StatementEvent::End(end)).map_err(StreamError::Sink)
    }

    fn flush_pending(&mut self) -> Result<(), StreamError<E>> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let mut tx = p.tx;
        if let Some(info) = p.info {
            apply_info(&mut tx, &info);
        }
        if tx.amount.is_sign_negative() {
            self.count_debit += 1;
            self.sum_debit = self
                .sum_debit
                .checked_add(tx.amount.abs())
                .unwrap_or(self.sum_debit);
        } else {
            self.count_credit += 1;
            self.sum_credit = self
                .sum_credit
                .checked_add(tx.amount)
                .unwrap_or(self.sum_credit);
        }
        (self.sink)(StatementEvent::Transaction(Box::new(tx))).map_err(StreamError::Sink)
    }

    /// `C110522EUR3236,28`
    fn balance(&self, kind: &str, s: &str, line: u64) -> Result<Balance, BankError> {
        let tag = format!(":{kind}:");
        let s: String = s.chars().filter(|c| *c != ' ').collect();
        let debit = match s.get(..1) {
            Some("C") => false,
            Some("D") => true,
            _ => return Err(self.invalid(line, &tag, &s, "expected C or D mark")),
        };
        let date_s = s.get(1..7).unwrap_or("");
        let date = yymmdd(date_s).ok_or_else(|| {
            self.invalid(line, &tag, &s, format!("invalid date {date_s:?} (YYMMDD)"))
        })?;
        let ccy_s = s.get(7..10).unwrap_or("");
        let ccy = currency(ccy_s)
            .map_err(|r| self.invalid(line, &tag, &s, format!("currency {ccy_s:?}: {r}")))?;
        let amt_s = s.get(10..).unwrap_or("");
        let amt = parse_unsigned(amt_s, b',')
            .map_err(|r| self.invalid(line, &tag, &s, format!("amount {amt_s:?}: {r}")))?;
        let amount = money(signed(amt, debit), ccy).map_err(|r| self.invalid(line, &tag, &s, r))?;
        Ok(Balance {
            kind: kind.to_owned(),
            date,
            amount,
        })
    }

    /// `:61:` value date, entry date, mark, funds code, amount, type,
    /// references, supplementary details.
    fn statement_line(&self, f: &Field) -> Result<BankTransaction, BankError> {
        let mut lines = f.text.lines();
        let mut l1 = lines.next().unwrap_or("").trim().to_owned();
        let mut l2 = lines.next().map(str::trim).unwrap_or("").to_owned();
        let line = f.line;
        let bad = |reason: String| self.invalid(line, ":61:", &f.text, reason);
        let vd = l1.get(..6).unwrap_or("");
        let value_date =
            yymmdd(vd).ok_or_else(|| bad(format!("invalid value date {vd:?} (YYMMDD)")))?;
        let mut pos = 6;
        let b = l1.as_bytes();
        let mut entry_date = None;
        // Entry date MMDD, or four blanks.
        if let Some(e) = l1.get(6..10) {
            if e.bytes().all(|c| c.is_ascii_digit()) {
                let m: u32 = e.get(..2).and_then(|x| x.parse().ok()).unwrap_or(0);
                let d: u32 = e.get(2..).and_then(|x| x.parse().ok()).unwrap_or(0);
                entry_date = Some(
                    entry_with_year(value_date, m, d)
                        .ok_or_else(|| bad(format!("invalid entry date {e:?} (MMDD)")))?,
                );
                pos = 10;
            } else if e == "    " {
                pos = 10;
            }
        }
        while b.get(pos) == Some(&b' ') {
            pos += 1;
        }
        let (reversal, debit) = match (b.get(pos), b.get(pos + 1)) {
            (Some(b'R'), Some(b'C')) => (true, true),
            (Some(b'R'), Some(b'D')) => (true, false),
            (Some(b'E'), Some(b'C')) => (false, false),
            (Some(b'E'), Some(b'D')) => (false, true),
            (Some(b'C'), _) => (false, false),
            (Some(b'D'), _) => (false, true),
            _ => return Err(bad("expected debit/credit mark C, D, RC or RD".into())),
        };
        pos += if reversal || matches!(b.get(pos), Some(b'E')) {
            2
        } else {
            1
        };
        let mut funds = None;
        if let Some(c) = b.get(pos)
            && c.is_ascii_alphabetic()
        {
            funds = Some(char::from(*c));
            pos += 1;
        }
        // Some banks break the line after the mark.
        if pos >= l1.len() && !l2.is_empty() {
            l1.push_str(&l2);
            l2 = lines.next().map(str::trim).unwrap_or("").to_owned();
        }
        let rest = l1.get(pos..).unwrap_or("").trim_start();
        let amt_len = rest
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b',')
            .count();
        let amt_s = rest.get(..amt_len).unwrap_or("");
        let amount =
            parse_unsigned(amt_s, b',').map_err(|r| bad(format!("amount {amt_s:?}: {r}")))?;
        let rest = rest.get(amt_len..).unwrap_or("");
        // Transaction type: N/F/S + 3 characters.
        let (ttype, rest) = match rest.get(..4) {
            Some(t)
                if t.as_bytes().first().is_some_and(u8::is_ascii_uppercase)
                    && t.bytes()
                        .skip(1)
                        .all(|c| c.is_ascii_alphanumeric() || c == b' ') =>
            {
                (Some(t.trim_end().to_owned()), rest.get(4..).unwrap_or(""))
            }
            _ => (None, rest),
        };
        let (cust, bank_ref) = match rest.find("//") {
            Some(p) => (rest.get(..p).unwrap_or(""), rest.get(p + 2..)),
            None => (rest, None),
        };
        let ccy = self.statement_currency().ok_or_else(|| {
            self.err(
                line,
                ErrorKind::Missing("statement currency: :61: before an opening balance (:60F:) or a currency in :25:".into()),
            )
        })?;
        // Reversals flip the sign: RC is a debit, RD a credit.
        let amt = signed(amount, debit);
        money(amt, ccy).map_err(bad)?;
        let booking = entry_date.unwrap_or(value_date);
        let account = self.account.clone().unwrap_or_default();
        let mut tx = new_transaction(&account, booking, amt, ccy);
        tx.value_date = Some(value_date);
        let x = &mut tx.extra;
        if reversal {
            x.insert("reversal".into(), Value::Bool(true));
        }
        if let Some(fc) = funds {
            x.insert("funds_code".into(), Value::String(fc.to_string()));
        }
        if let Some(t) = &ttype {
            put(x, "mt940_transaction_type", t);
            tx.bank_transaction_code = Some(t.clone());
        }
        let cust = cust.trim();
        if !cust.is_empty() && cust != "NONREF" {
            put(x, "customer_reference", cust);
        }
        tx.bank_reference = bank_ref.and_then(opt);
        if !l2.is_empty() {
            put(x, "supplementary_details", &l2);
            // /OCMT/EUR4,5/ original amount in supplementary details.
            if let Some(p) = l2.find("/OCMT/") {
                let v = l2.get(p + 6..).unwrap_or("");
                let v = v.split('/').next().unwrap_or("");
                if let (Some(c), Some(a)) = (v.get(..3), v.get(3..))
                    && let (Ok(c), Ok(a)) = (currency(c), parse_unsigned(a, b','))
                {
                    x.insert("instructed_amount".into(), Value::String(a.to_string()));
                    x.insert("instructed_currency".into(), Value::String(c.to_string()));
                }
            }
        }
        Ok(tx)
    }
}

/// YYMMDD; years 70–99 are 19xx.
fn yymmdd(s: &str) -> Option<NaiveDate> {
    if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let yy: i32 = s.get(..2)?.parse().ok()?;
    let m: u32 = s.get(2..4)?.parse().ok()?;
    let d: u32 = s.get(4..6)?.parse().ok()?;
    let y = if yy >= 70 { 1900 + yy } else { 2000 + yy };
    NaiveDate::from_ymd_opt(y, m, d)
}

/// The entry date's year: that of the value date, moved by one where the
/// months are more than six apart (value 31 Dec, entry 02 Jan → next year).
fn entry_with_year(value: NaiveDate, m: u32, d: u32) -> Option<NaiveDate> {
    let vm = value.month() as i32;
    let mut y = value.year();
    if vm - m as i32 > 6 {
        y += 1;
    } else if m as i32 - vm > 6 {
        y -= 1;
    }
    NaiveDate::from_ymd_opt(y, m, d)
}

/// `:13D:1701191815+0100` (YYMMDDhhmm, offset dropped).
fn parse_datetime_13d(s: &str) -> Option<NaiveDateTime> {
    let d = yymmdd(s.get(..6)?)?;
    let h: u32 = s.get(6..8)?.parse().ok()?;
    let m: u32 = s.get(8..10)?.parse().ok()?;
    d.and_hms_opt(h, m, 0)
}

// ---------------------------------------------------------------------------
// :86: information to account owner

/// SEPA keywords inside German purpose text, in the order they may appear.
const SEPA_KEYWORDS: &[&str] = &[
    "EREF", "KREF", "MREF", "CRED", "DEBT", "COAM", "OAMT", "SVWZ", "ABWA", "ABWE", "IBAN", "BIC",
];

/// Tags of the Dutch / SEPA `/TAG/value/` form.
const SLASH_TAGS: &[&str] = &[
    "TRTP", "IBAN", "BIC", "NAME", "REMI", "EREF", "MARF", "CSID", "ORDP", "BENM", "ULTD", "ULTC",
    "ULTB", "PURP", "RTRN", "ACCW", "OCMT", "CHGS", "ISDT", "PREF", "SVCL", "ADDR", "EXCH", "CNTP",
    "ID", "RTYP", "BUSP",
];

pub(crate) fn apply_info(tx: &mut BankTransaction, info: &str) {
    put(&mut tx.extra, "information", info);
    let flat: String = info.replace(['\r', '\n'], "");
    if is_german(&flat) {
        german(tx, &flat);
    } else if let Some(tags) = slash_tags(&flat) {
        dutch(tx, &tags);
        if tx.remittance_info.is_none() {
            // No /REMI/: keep the whole text so nothing is lost for matching.
            tx.remittance_info = opt(&flat);
        }
    } else {
        let text = squash(info);
        if !text.is_empty() {
            tx.remittance_info = Some(text);
        }
    }
}

/// `166?00GUTSCHR…`: three digits then `?` and a two-digit sub-field code.
fn is_german(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 4
        && b.iter().take(3).all(u8::is_ascii_digit)
        && (b.get(3) == Some(&b'?') || b.len() == 3)
}

fn german(tx: &mut BankTransaction, s: &str) {
    let mut sub: BTreeMap<u32, String> = BTreeMap::new();
    let gv = s.get(..3).unwrap_or("");
    let body = s.get(3..).unwrap_or("");
    for part in body.split('?').skip(1) {
        let (code, val) = match (part.get(..2), part.get(2..)) {
            (Some(c), Some(v)) if c.bytes().all(|b| b.is_ascii_digit()) => (c, v),
            _ => continue,
        };
        let code: u32 = code.parse().unwrap_or(999);
        sub.entry(code).or_default().push_str(val);
    }
    let x = &mut tx.extra;
    put(x, "gv_code", gv);
    let get = |c: u32| sub.get(&c).map(String::as_str).unwrap_or("");
    put(x, "posting_text", get(0));
    put(x, "prima_nota", get(10));
    put(x, "counterparty_bank_code", get(30));
    put(x, "text_key_extension", get(34));
    let purpose: String = (20..=29).chain(60..=63).map(get).collect();
    let name = squash(&format!("{}{}", get(32), get(33)));
    if let Some(n) = opt(&name) {
        tx.counterparty_name = Some(n);
    }
    // ?38 carries the IBAN where ?31 has a domestic account number.
    if let Some(a) = opt(get(38)).or_else(|| opt(get(31))) {
        tx.counterparty_account = Some(a);
    }
    let kw = sepa_keywords(&purpose);
    if kw.is_empty() {
        if let Some(p) = opt(&purpose) {
            tx.remittance_info = Some(p);
        }
        return;
    }
    let get_kw = |k: &str| kw.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    if let Some(e) = get_kw("EREF").filter(|e| !e.eq_ignore_ascii_case("NOTPROVIDED")) {
        tx.end_to_end_id = Some(e.to_owned());
    }
    let x = &mut tx.extra;
    if let Some(v) = get_kw("KREF") {
        put(x, "customer_reference", v);
    }
    if let Some(v) = get_kw("MREF") {
        put(x, "mandate_id", v);
    }
    if let Some(v) = get_kw("CRED") {
        put(x, "creditor_id", v);
    }
    if let Some(v) = get_kw("ABWA") {
        put(x, "ultimate_debtor", v);
    }
    if let Some(v) = get_kw("ABWE") {
        put(x, "ultimate_creditor", v);
    }
    if let Some(v) = get_kw("BIC") {
        put(x, "counterparty_bic", v);
    }
    if tx.counterparty_account.is_none() {
        tx.counterparty_account = get_kw("IBAN").map(str::to_owned);
    }
    let mut map = Map::new();
    for (k, v) in &kw {
        map.insert((*k).to_owned(), Value::String(v.trim().to_owned()));
    }
    x.insert("sepa".into(), Value::Object(map));
    tx.remittance_info = get_kw("SVWZ").map(str::to_owned).or_else(|| opt(&purpose));
}

/// Splits `EREF+x MREF+y SVWZ+text` into keyword → value.
fn sepa_keywords(s: &str) -> BTreeMap<&'static str, String> {
    let mut hits: Vec<(usize, &'static str)> = Vec::new();
    for kw in SEPA_KEYWORDS {
        let pat = format!("{kw}+");
        let mut from = 0;
        while let Some(p) = s.get(from..).and_then(|r| r.find(&pat)) {
            let at = from + p;
            // Keyword must start the text or follow a non-letter.
            let ok = at == 0
                || !s
                    .as_bytes()
                    .get(at - 1)
                    .is_some_and(u8::is_ascii_alphabetic);
            if ok {
                hits.push((at, kw));
                break;
            }
            from = at + pat.len();
        }
    }
    hits.sort_unstable();
    let mut out = BTreeMap::new();
    for (i, (at, kw)) in hits.iter().enumerate() {
        let start = at + kw.len() + 1;
        let end = hits.get(i + 1).map_or(s.len(), |h| h.0);
        if start <= end {
            out.insert(*kw, s.get(start..end).unwrap_or("").to_owned());
        }
    }
    out
}

/// `/TAG/value/…` pairs, with party sub-tags as `ORDP/NAME`.
fn slash_tags(s: &str) -> Option<Vec<(String, String)>> {
    let t = s.trim_start();
    if !t.starts_with('/') {
        return None;
    }
    let mut marks: Vec<(usize, usize, &str)> = Vec::new(); // (start, value start, tag)
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b.get(i) == Some(&b'/')
            && let Some(tag) = SLASH_TAGS.iter().find(|tag| {
                t.get(i + 1..).is_some_and(|r| {
                    r.starts_with(**tag) && r.as_bytes().get(tag.len()) == Some(&b'/')
                })
            })
        {
            marks.push((i, i + tag.len() + 2, tag));
            i += tag.len() + 1;
            continue;
        }
        i += 1;
    }
    if marks.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut party: Option<&str> = None;
    for (k, (_, vs, tag)) in marks.iter().enumerate() {
        let end = marks.get(k + 1).map_or(t.len(), |m| m.0);
        let val = t
            .get(*vs..end.max(*vs))
            .unwrap_or("")
            .trim_matches('/')
            .trim();
        let key = match party {
            Some(p) if matches!(*tag, "NAME" | "ID" | "ADDR" | "IBAN" | "BIC") => {
                format!("{p}/{tag}")
            }
            _ => (*tag).to_owned(),
        };
        party = if matches!(*tag, "ORDP" | "BENM" | "ULTD" | "ULTC" | "ULTB") && val.is_empty() {
            Some(tag)
        } else if matches!(*tag, "NAME" | "ID" | "ADDR" | "IBAN" | "BIC") {
            party
        } else {
            None
        };
        out.push((key, val.to_owned()));
    }
    Some(out)
}

fn dutch(tx: &mut BankTransaction, tags: &[(String, String)]) {
    let get = |k: &str| {
        tags.iter()
            .find(|(t, v)| t == k && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    let credit = !tx.amount.is_sign_negative();
    let party = if credit { "ORDP" } else { "BENM" };
    if let Some(n) = get("NAME").or_else(|| get(&format!("{party}/NAME"))) {
        tx.counterparty_name = Some(n.to_owned());
    }
    if let Some(a) = get("IBAN")
        .or_else(|| get(&format!("{party}/IBAN")))
        .or_else(|| get("CNTP").map(|c| c.split('/').next().unwrap_or(c)))
    {
        tx.counterparty_account = Some(a.to_owned());
    }
    if let Some(e) = get("EREF").filter(|e| !e.eq_ignore_ascii_case("NOTPROVIDED")) {
        tx.end_to_end_id = Some(e.to_owned());
    }
    let x = &mut tx.extra;
    if let Some(v) = get("BIC").or_else(|| get(&format!("{party}/BIC"))) {
        put(x, "counterparty_bic", v);
    }
    if let Some(v) = get("MARF") {
        put(x, "mandate_id", v);
    }
    if let Some(v) = get("CSID") {
        put(x, "creditor_id", v);
    }
    if let Some(v) = get("ULTD/NAME").or_else(|| get("ULTD")) {
        put(x, "ultimate_debtor", v);
    }
    if let Some(v) = get("ULTC/NAME")
        .or_else(|| get("ULTC"))
        .or_else(|| get("ULTB/NAME"))
    {
        put(x, "ultimate_creditor", v);
    }
    if let Some(v) = get("PURP") {
        put(x, "purpose_code", v);
    }
    let mut map = Map::new();
    for (k, v) in tags {
        if !v.is_empty() {
            map.entry(k.clone())
                .or_insert_with(|| Value::String(v.clone()));
        }
    }
    x.insert("mt940_tags".into(), Value::Object(map));
    if let Some(r) = get("REMI") {
        // REMI/USTD//text or REMI/STRD/CUR/reference.
        let r = r.trim_matches('/');
        if let Some(u) = r.strip_prefix("USTD") {
            tx.remittance_info = opt(u.trim_start_matches('/'));
        } else if let Some(s) = r.strip_prefix("STRD") {
            let rf = s.trim_start_matches('/');
            let rf = rf
                .strip_prefix("CUR")
                .map_or(rf, |x| x.trim_start_matches('/'));
            put(&mut tx.extra, "creditor_reference", rf);
            tx.remittance_info = opt(rf);
        } else {
            tx.remittance_info = opt(r);
        }
    }
}
