//! BAI2 cash management balance reporting, streamed record by record.
//!
//! One [`Statement`](super::Statement) per account (03 … 49). Records may end
//! with `/` (several on one physical line) or with the line end; `88`
//! continues the previous record. Amounts are in the currency's minor unit
//! (cents for USD, none for JPY). The sign of a detail (16) comes from its
//! type code: 100–399 credit, 400–699 debit; other codes are rejected
//! rather than guessed. Control totals and record counts in 49/98/99 are
//! checked and reported as warnings.

use super::read_capped_line;
use std::io::BufRead;

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::{
    Balance, BankError, ErrorKind, Format, Location, StatementEnd, StatementEvent, StatementHeader,
    StreamError, Warning, currency, money, new_transaction, opt, put, snippet,
};
use crate::model::Currency;

const MAX_RECORD: usize = 256 * 1024;
const RECORD_CODES: &[&str] = &["01", "02", "03", "16", "49", "88", "98", "99"];

/// One logical record: code, text after `NN,`, continuation texts, line.
struct Record {
    code: String,
    body: String,
    conts: Vec<String>,
    line: u64,
}

#[derive(Default)]
struct Group {
    date: Option<NaiveDate>,
    currency: Option<Currency>,
    originator: Option<String>,
    sum: i128,
    records: u64,
    accounts: u64,
}

struct Account {
    number: String,
    ccy: Currency,
    balances: Vec<Balance>,
    warnings: Vec<Warning>,
    sum: i128,
    records: u64,
}

struct State<'s, E> {
    sink: &'s mut dyn FnMut(StatementEvent) -> Result<(), E>,
    file_id: Option<String>,
    created: Option<NaiveDateTime>,
    group: Option<Group>,
    account: Option<Account>,
    file_sum: i128,
    file_groups: u64,
    file_records: u64,
    statements: u64,
    pending_warnings: Vec<Warning>,
    /// Last account's end, held back so 98/99 trailer findings reach it.
    held: Option<StatementEnd>,
}

fn err(line: u64, kind: ErrorKind) -> BankError {
    BankError::new(Format::Bai2, Location::Line(line), kind)
}

fn invalid(line: u64, field: &str, value: &str, reason: impl Into<String>) -> BankError {
    err(
        line,
        ErrorKind::InvalidValue {
            field: field.to_owned(),
            value: snippet(value),
            reason: reason.into(),
        },
    )
}

pub(crate) fn parse<R: BufRead, E>(
    mut reader: R,
    sink: &mut dyn FnMut(StatementEvent) -> Result<(), E>,
) -> Result<(), StreamError<E>> {
    let mut st = State {
        sink,
        file_id: None,
        created: None,
        group: None,
        account: None,
        file_sum: 0,
        file_groups: 0,
        file_records: 0,
        statements: 0,
        pending_warnings: Vec::new(),
        held: None,
    };
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut pending: Option<Record> = None;
    let mut seen_any = false;
    let mut ended = false;
    // The previous physical line ended inside a record (no `/`).
    let mut open = false;
    loop {
        match read_capped_line(&mut reader, &mut buf) {
            Ok(true) => line_no += 1,
            Ok(false) => break,
            Err(kind) => return Err(err(line_no + 1, kind).into()),
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text
            .trim_end_matches(['\r', '\n', ' ', '\t'])
            .trim_start_matches('\u{feff}');
        if line.trim().is_empty() {
            continue;
        }
        let terminated = line.ends_with('/');
        for raw in split_records(line) {
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            let code = raw.get(..2).unwrap_or("");
            let valid =
                RECORD_CODES.contains(&code) && raw.as_bytes().get(2).is_none_or(|c| *c == b',');
            // A slash-terminated record wrapped onto the next physical line.
            let b = raw.as_bytes();
            let looks_like_code = b.len() >= 3
                && b.iter().take(2).all(u8::is_ascii_digit)
                && !b.get(2).is_some_and(u8::is_ascii_digit);
            if !valid
                && open
                && !looks_like_code
                && let Some(p) = pending.as_mut()
            {
                if p.body.len() + raw.len() > MAX_RECORD {
                    return Err(err(p.line, ErrorKind::Limit("record too long".into())).into());
                }
                match p.conts.last_mut() {
                    Some(c) => c.push_str(raw),
                    None => p.body.push_str(raw),
                }
                continue;
            }
            if !valid {
                return Err(invalid(
                    line_no,
                    "record code",
                    raw,
                    "expected a BAI2 record (01, 02, 03, 16, 49, 88, 98, 99)",
                )
                .into());
            }
            if ended {
                return Err(
                    invalid(line_no, "record", raw, "data after the 99 file trailer").into(),
                );
            }
            let body = raw.get(3..).unwrap_or("").to_owned();
            if code == "88" {
                match pending.as_mut() {
                    Some(p) => {
                        if p.body.len() + body.len() > MAX_RECORD {
                            return Err(
                                err(p.line, ErrorKind::Limit("record too long".into())).into()
                            );
                        }
                        p.conts.push(body);
                        st.count();
                        open = false;
                    }
                    None => {
                        return Err(invalid(
                            line_no,
                            "88",
                            raw,
                            "continuation without a record to continue",
                        )
                        .into());
                    }
                }
                continue;
            }
            if !seen_any && code != "01" {
                return Err(invalid(
                    line_no,
                    "record",
                    raw,
                    "file must start with a 01 file header",
                )
                .into());
            }
            seen_any = true;
            if let Some(p) = pending.take() {
                st.record(p)?;
            }
            if code == "99" {
                ended = true;
            }
            open = false;
            st.count();
            pending = Some(Record {
                code: code.to_owned(),
                body,
                conts: Vec::new(),
                line: line_no,
            });
        }
        open = !terminated && pending.is_some();
    }
    if let Some(p) = pending.take() {
        st.record(p)?;
    }
    if !seen_any {
        return Err(err(1, ErrorKind::NotAStatement("empty BAI2 file".into())).into());
    }
    if st.account.is_some() {
        return Err(err(
            line_no,
            ErrorKind::Missing("49 account trailer before end of file".into()),
        )
        .into());
    }
    if !ended {
        return Err(err(line_no, ErrorKind::Missing("99 file trailer".into())).into());
    }
    st.release()?;
    Ok(())
}

/// Splits a physical line into records at `/` followed by the next
/// record's code (`…PPD/ 16,142,…`); a `/` inside text stays.
fn split_records(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b.get(i) == Some(&b'/') {
            let mut j = i + 1;
            while b.get(j) == Some(&b' ') {
                j += 1;
            }
            let next = line.get(j..).unwrap_or("");
            let is_next = j >= b.len()
                || RECORD_CODES
                    .iter()
                    .any(|c| next.starts_with(c) && next.as_bytes().get(2) == Some(&b','));
            if is_next {
                out.push(line.get(start..i).unwrap_or(""));
                start = j;
                i = j;
                continue;
            }
        }
        i += 1;
    }
    if start < line.len() {
        out.push(line.get(start..).unwrap_or(""));
    }
    out
}

/// Comma-separated fields with a cursor (text fields take the rest).
struct Fields<'a> {
    rest: Option<&'a str>,
}

impl<'a> Fields<'a> {
    fn new(s: &'a str) -> Self {
        Fields { rest: Some(s) }
    }
    fn next(&mut self) -> &'a str {
        match self.rest {
            None => "",
            Some(r) => match r.find(',') {
                Some(p) => {
                    self.rest = r.get(p + 1..);
                    r.get(..p).unwrap_or("").trim()
                }
                None => {
                    self.rest = None;
                    r.trim()
                }
            },
        }
    }
    fn rest(&mut self) -> &'a str {
        self.rest.take().unwrap_or("")
    }
    fn done(&self) -> bool {
        self.rest.is_none()
    }
}

fn yymmdd(s: &str) -> Option<NaiveDate> {
    if s.len() != 6 {
        return None;
    }
    let yy: i32 = s.get(..2)?.parse().ok()?;
    let m: u32 = s.get(2..4)?.parse().ok()?;
    let d: u32 = s.get(4..)?.parse().ok()?;
    NaiveDate::from_ymd_opt(if yy >= 70 { 1900 + yy } else { 2000 + yy }, m, d)
}

/// Signed integer amount in minor units.
fn minor(s: &str, line: u64, field: &str) -> Result<i128, BankError> {
    let t = s.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            line,
            field,
            s,
            "expected an integer amount in minor units",
        ));
    }
    let v: i128 = digits
        .parse()
        .map_err(|_| invalid(line, field, s, "amount too large"))?;
    Ok(if neg { -v } else { v })
}

fn to_decimal(v: i128, ccy: Currency) -> Option<Decimal> {
    let m = i64::try_from(v).ok()?;
    Decimal::try_new(m, ccy.minor_units()).ok()
}

/// Skips the funds-availability fields that follow a funds type.
fn skip_funds(f: &mut Fields<'_>, funds: &str, line: u64) -> Result<(), BankError> {
    match funds {
        "" | "0" | "1" | "2" | "Z" => {}
        "S" => {
            for _ in 0..3 {
                f.next();
            }
        }
        "V" => {
            f.next();
            f.next();
        }
        "D" => {
            let n_s = f.next();
            let n: usize = n_s
                .parse()
                .map_err(|_| invalid(line, "funds distribution count", n_s, "expected a number"))?;
            if n > 1000 {
                return Err(invalid(
                    line,
                    "funds distribution count",
                    n_s,
                    "too many distributions",
                ));
            }
            for _ in 0..n {
                f.next();
                f.next();
            }
        }
        other => {
            return Err(invalid(
                line,
                "funds type",
                other,
                "expected 0, 1, 2, S, V, D or Z",
            ));
        }
    }
    Ok(())
}

impl<E> State<'_, E> {
    fn count(&mut self) {
        self.file_records += 1;
        if let Some(g) = self.group.as_mut() {
            g.records += 1;
        }
        if let Some(a) = self.account.as_mut() {
            a.records += 1;
        }
    }

    fn warn(&mut self, line: u64, msg: String) {
        let w = Warning {
            location: Location::Line(line),
            message: msg,
        };
        if let Some(a) = self.account.as_mut() {
            a.warnings.push(w);
        } else if let Some(h) = self.held.as_mut() {
            h.warnings.push(w);
        } else {
            self.pending_warnings.push(w);
        }
    }

    fn release(&mut self) -> Result<(), StreamError<E>> {
        match self.held.take() {
            Some(end) => (self.sink)(StatementEvent::End(end)).map_err(StreamError::Sink),
            None => Ok(()),
        }
    }

    fn record(&mut self, r: Record) -> Result<(), StreamError<E>> {
        let line = r.line;
        match r.code.as_str() {
            "01" => {
                let mut f = Fields::new(&r.body);
                let _sender = f.next();
                let _receiver = f.next();
                let d = f.next();
                let t = f.next();
                self.file_id = opt(f.next());
                let date = yymmdd(d)
                    .ok_or_else(|| invalid(line, "01 creation date", d, "expected YYMMDD"))?;
                self.created = hhmm(t)
                    .and_then(|(h, m)| date.and_hms_opt(h, m, 0))
                    .or_else(|| date.and_hms_opt(0, 0, 0));
            }
            "02" => {
                if self.group.is_some() {
                    return Err(invalid(
                        line,
                        "02",
                        &r.body,
                        "group header inside an open group (missing 98)",
                    )
                    .into());
                }
                let mut f = Fields::new(&r.body);
                let _receiver = f.next();
                let originator = opt(f.next());
                let _status = f.next();
                let d = f.next();
                let _t = f.next();
                let c = f.next();
                let date = yymmdd(d)
                    .ok_or_else(|| invalid(line, "02 as-of date", d, "expected YYMMDD"))?;
                let ccy = match c {
                    "" => None,
                    c => Some(currency(c).map_err(|e| invalid(line, "02 currency", c, e))?),
                };
                self.group = Some(Group {
                    date: Some(date),
                    currency: ccy,
                    originator,
                    records: 1,
                    ..Group::default()
                });
            }
            "03" => self.account_header(&r)?,
            "16" => self.detail(&r)?,
            "49" => {
                let Some(a) = self.account.take() else {
                    return Err(
                        invalid(line, "49", &r.body, "account trailer without 03 account").into(),
                    );
                };
                let mut f = Fields::new(&r.body);
                let total = minor(f.next(), line, "49 control total")?;
                let n = f.next();
                let mut a = a;
                if total != a.sum {
                    a.warnings.push(Warning {
                        location: Location::Line(line),
                        message: format!(
                            "49 control total {total} differs from the account's amounts {}",
                            a.sum
                        ),
                    });
                }
                if let Ok(n) = n.parse::<u64>()
                    && n != a.records
                {
                    a.warnings.push(Warning {
                        location: Location::Line(line),
                        message: format!("49 states {n} records, the account has {}", a.records),
                    });
                }
                if let Some(g) = self.group.as_mut() {
                    g.sum += total;
                    g.accounts += 1;
                }
                self.statements += 1;
                self.release()?;
                self.held = Some(StatementEnd {
                    balances: a.balances,
                    warnings: a.warnings,
                });
            }
            "98" => {
                if self.account.is_some() {
                    return Err(err(
                        line,
                        ErrorKind::Missing("49 account trailer before the 98 group trailer".into()),
                    )
                    .into());
                }
                let Some(g) = self.group.take() else {
                    return Err(invalid(
                        line,
                        "98",
                        &r.body,
                        "group trailer without 02 group header",
                    )
                    .into());
                };
                let mut f = Fields::new(&r.body);
                let total = minor(f.next(), line, "98 control total")?;
                let accounts = f.next().parse::<u64>().ok();
                let records = f.next().parse::<u64>().ok();
                if total != g.sum {
                    self.warn(
                        line,
                        format!(
                            "98 group control total {total} differs from the accounts' totals {}",
                            g.sum
                        ),
                    );
                }
                if accounts.is_some_and(|n| n != g.accounts) {
                    self.warn(
                        line,
                        format!(
                            "98 states {} accounts, the group has {}",
                            accounts.unwrap_or(0),
                            g.accounts
                        ),
                    );
                }
                if records.is_some_and(|n| n != g.records) {
                    self.warn(
                        line,
                        format!(
                            "98 states {} records, the group has {}",
                            records.unwrap_or(0),
                            g.records
                        ),
                    );
                }
                self.file_sum += total;
                self.file_groups += 1;
            }
            "99" => {
                if self.group.is_some() {
                    return Err(err(
                        line,
                        ErrorKind::Missing("98 group trailer before the 99 file trailer".into()),
                    )
                    .into());
                }
                let mut f = Fields::new(&r.body);
                let total = minor(f.next(), line, "99 control total")?;
                let groups = f.next().parse::<u64>().ok();
                let records = f.next().parse::<u64>().ok();
                if total != self.file_sum {
                    self.warn(
                        line,
                        format!(
                            "99 file control total {total} differs from the groups' totals {}",
                            self.file_sum
                        ),
                    );
                }
                if groups.is_some_and(|n| n != self.file_groups) {
                    self.warn(
                        line,
                        format!(
                            "99 states {} groups, the file has {}",
                            groups.unwrap_or(0),
                            self.file_groups
                        ),
                    );
                }
                if records.is_some_and(|n| n != self.file_records) {
                    self.warn(
                        line,
                        format!(
                            "99 states {} records, the file has {}",
                            records.unwrap_or(0),
                            self.file_records
                        ),
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn account_header(&mut self, r: &Record) -> Result<(), StreamError<E>> {
        let line = r.line;
        if self.account.is_some() {
            return Err(invalid(
                line,
                "03",
                &r.body,
                "account header inside an open account (missing 49)",
            )
            .into());
        }
        let Some(g) = self.group.as_ref() else {
            return Err(invalid(line, "03", &r.body, "account header outside a 02 group").into());
        };
        let date = g.date;
        let servicer = g.originator.clone();
        let group_ccy = g.currency;
        // 03 fields plus continuation fields form one list.
        let mut all = r.body.trim_end_matches('/').to_owned();
        for c in &r.conts {
            all.push(',');
            all.push_str(c.trim_end_matches('/'));
        }
        let mut f = Fields::new(&all);
        let number = f.next().to_owned();
        if number.is_empty() {
            return Err(err(
                line,
                ErrorKind::Missing("03 customer account number".into()),
            )
            .into());
        }
        let c = f.next();
        let ccy = match c {
            // BAI2's default currency is USD.
            "" => match group_ccy {
                Some(c) => c,
                None => currency("USD").map_err(|e| invalid(line, "03 currency", "USD", e))?,
            },
            c => currency(c).map_err(|e| invalid(line, "03 currency", c, e))?,
        };
        let mut sum: i128 = 0;
        let mut balances = Vec::new();
        while !f.done() {
            let code = f.next();
            let amt = f.next();
            let _count = f.next();
            let funds = f.next();
            skip_funds(&mut f, funds, line)?;
            if amt.is_empty() {
                continue;
            }
            let v = minor(amt, line, "03 amount")?;
            sum += v;
            let Ok(code_n) = code.parse::<u32>() else {
                return Err(invalid(
                    line,
                    "03 type code",
                    code,
                    "expected a three-digit type code",
                )
                .into());
            };
            // Status (balance) codes are 001–099; the rest are summaries.
            if code_n < 100 {
                let Some(date) = date else { continue };
                let d = to_decimal(v, ccy)
                    .ok_or_else(|| invalid(line, "03 amount", amt, "does not fit"))?;
                let m = money(d, ccy).map_err(|e| invalid(line, "03 amount", amt, e))?;
                balances.push(Balance {
                    kind: format!("{code_n:03}"),
                    date,
                    amount: m,
                });
            }
        }
        self.release()?;
        let warnings = std::mem::take(&mut self.pending_warnings);
        self.account = Some(Account {
            number: number.clone(),
            ccy,
            balances,
            warnings,
            sum,
            records: 1 + r.conts.len() as u64,
        });
        let h = StatementHeader {
            format: Format::Bai2,
            id: self.file_id.as_ref().map(|f| format!("{f}/{number}")),
            account: number,
            servicer,
            currency: Some(ccy),
            sequence: None,
            created_at: self.created,
            message_id: self.file_id.clone(),
        };
        (self.sink)(StatementEvent::Header(h)).map_err(StreamError::Sink)
    }

    fn detail(&mut self, r: &Record) -> Result<(), StreamError<E>> {
        let line = r.line;
        let Some(a) = self.account.as_mut() else {
            return Err(invalid(
                line,
                "16",
                &r.body,
                "transaction detail outside a 03 account",
            )
            .into());
        };
        let date = self.group.as_ref().and_then(|g| g.date);
        let mut f = Fields::new(&r.body);
        let code = f.next();
        let amt = f.next();
        let funds = f.next();
        let code_n: u32 = code.parse().map_err(|_| {
            invalid(
                line,
                "16 type code",
                code,
                "expected a three-digit type code",
            )
        })?;
        let debit = match code_n {
            100..=399 => false,
            400..=699 => true,
            _ => {
                return Err(invalid(
                    line,
                    "16 type code",
                    code,
                    "not a credit (100–399) or debit (400–699) detail code; its direction is undefined",
                )
                .into());
            }
        };
        let v = minor(amt, line, "16 amount")?;
        if v < 0 {
            return Err(invalid(
                line,
                "16 amount",
                amt,
                "detail amounts are unsigned; the type code gives the sign",
            )
            .into());
        }
        a.sum += v;
        let mut value_date = None;
        if funds == "V" {
            let mut g = Fields::new(f.rest.unwrap_or(""));
            value_date = yymmdd(g.next());
        }
        skip_funds(&mut f, funds, line)?;
        let bank_ref = f.next();
        let cust_ref = f.next();
        let text = f.rest().trim_end_matches('/').trim();
        let ccy = a.ccy;
        let mag =
            to_decimal(v, ccy).ok_or_else(|| invalid(line, "16 amount", amt, "does not fit"))?;
        let amount = if debit { -mag } else { mag };
        let date = date.ok_or_else(|| err(line, ErrorKind::Missing("02 as-of date".into())))?;
        let mut tx = new_transaction(&a.number, date, amount, ccy);
        tx.value_date = value_date;
        tx.bank_transaction_code = Some(format!("{code_n:03}"));
        tx.bank_reference = opt(bank_ref);
        let x = &mut tx.extra;
        put(x, "bai_type_code", &format!("{code_n:03}"));
        put(x, "funds_type", funds);
        put(x, "customer_reference", cust_ref);
        let mut rem: Vec<String> = Vec::new();
        if !text.is_empty() {
            rem.push(text.to_owned());
        }
        let mut addenda = Map::new();
        for c in &r.conts {
            let c = c.trim_end_matches('/').trim();
            if c.is_empty() {
                continue;
            }
            // Keyed addenda (`EREF: …`, `DBNM: …`) used by several banks.
            if let Some((k, v)) = c
                .split_once(": ")
                .filter(|(k, _)| k.len() == 4 && k.bytes().all(|b| b.is_ascii_uppercase()))
            {
                addenda.insert(k.to_owned(), Value::String(v.trim().to_owned()));
            } else if let Some(k) = c.strip_suffix(':').filter(|k| k.len() == 4) {
                addenda.insert(k.to_owned(), Value::String(String::new()));
            }
            rem.push(c.to_owned());
        }
        let get = |k: &str| {
            addenda
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        tx.end_to_end_id = get("EREF");
        tx.counterparty_name = if debit { get("CRNM") } else { get("DBNM") };
        tx.counterparty_account = if debit { get("CACT") } else { get("DACT") };
        if !addenda.is_empty() {
            tx.extra
                .insert("bai_addenda".into(), Value::Object(addenda));
        }
        tx.remittance_info = opt(&rem.join(" "));
        (self.sink)(StatementEvent::Transaction(Box::new(tx))).map_err(StreamError::Sink)
    }
}

fn hhmm(t: &str) -> Option<(u32, u32)> {
    let h: u32 = t.get(..2)?.parse().ok()?;
    let m: u32 = t.get(2..4)?.parse().ok()?;
    // BAI2 writes end of day as 2400 (or 9999).
    if h == 24 || h == 99 {
        return Some((23, 59));
    }
    Some((h, m))
}
