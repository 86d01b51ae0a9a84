//! OFX / QFX: 1.x SGML (leaf tags left open, `OFXHEADER:100` header) and
//! 2.x XML, through one tolerant tag scanner.
//!
//! Bank (`STMTRS`) and credit card (`CCSTMTRS`) statements become
//! statements; investment statements are skipped, so a brokerage-only file
//! yields an empty list. A file whose sign-on or statement response carries
//! an ERROR status and no statement is an error naming that status.
//! Entities other than the five XML ones and character references are
//! left as written; nothing is ever fetched or expanded.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::{
    Balance, BankError, ErrorKind, Format, Location, StatementEnd, StatementEvent, StatementHeader,
    StreamError, Warning, currency, money, new_transaction, opt, parse_unsigned, put, signed,
    snippet,
};
use crate::model::Currency;

/// Deepest aggregate nesting accepted.
const MAX_DEPTH: usize = 64;

enum Tok<'a> {
    Open(&'a str),
    Close(&'a str),
    Text(&'a str),
}

/// Scans `<TAG>`, `</TAG>` and text; skips `<?…?>`, `<!…>` and comments.
struct Scanner<'a> {
    s: &'a str,
    pos: usize,
    line: u64,
    counted: usize,
}

impl<'a> Scanner<'a> {
    fn line_at(&mut self, pos: usize) -> u64 {
        if pos > self.counted {
            let seg = self.s.get(self.counted..pos).unwrap_or("");
            self.line += seg.bytes().filter(|b| *b == b'\n').count() as u64;
            self.counted = pos;
        }
        self.line
    }

    fn next(&mut self) -> Result<Option<(Tok<'a>, u64)>, (u64, String)> {
        loop {
            let rest = match self.s.get(self.pos..) {
                Some(r) if !r.is_empty() => r,
                _ => return Ok(None),
            };
            let start = self.pos;
            if let Some(after) = rest.strip_prefix('<') {
                let line = self.line_at(start);
                if after.starts_with("!--") {
                    let end = after
                        .find("-->")
                        .ok_or((line, "unterminated comment".to_owned()))?;
                    self.pos = start + 1 + end + 3;
                    continue;
                }
                if after.starts_with('?') || after.starts_with('!') {
                    let end = after
                        .find('>')
                        .ok_or((line, "unterminated declaration".to_owned()))?;
                    self.pos = start + 1 + end + 1;
                    continue;
                }
                let end = after
                    .find('>')
                    .ok_or((line, "unterminated tag".to_owned()))?;
                let inner = after.get(..end).unwrap_or("").trim();
                self.pos = start + 1 + end + 1;
                if let Some(name) = inner.strip_prefix('/') {
                    return Ok(Some((Tok::Close(name.trim()), line)));
                }
                let name = inner.split_whitespace().next().unwrap_or("");
                if name.is_empty()
                    || !name.bytes().all(|b| {
                        b.is_ascii_alphanumeric()
                            || b == b'.'
                            || b == b'_'
                            || b == b'-'
                            || b == b':'
                    })
                {
                    return Err((line, format!("invalid tag <{}>", snippet(inner))));
                }
                if inner.ends_with('/') {
                    // <TAG/>: empty leaf.
                    return Ok(Some((Tok::Close(name), line)));
                }
                return Ok(Some((Tok::Open(name), line)));
            }
            let end = rest.find('<').unwrap_or(rest.len());
            self.pos = start + end;
            let text = rest.get(..end).unwrap_or("");
            if text.trim().is_empty() {
                continue;
            }
            let line = self.line_at(start + (text.len() - text.trim_start().len()));
            return Ok(Some((Tok::Text(text.trim()), line)));
        }
    }
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

#[derive(Default)]
struct Stmt {
    line: u64,
    ccy: Option<Currency>,
    account: Option<String>,
    bank: Option<String>,
    txs: Vec<crate::model::BankTransaction>,
    balances: Vec<Balance>,
    warnings: Vec<Warning>,
}

#[derive(Default)]
struct Tx {
    line: u64,
    fields: Vec<(String, String, u64)>,
    payee: Option<String>,
    tx_ccy: Option<String>,
    orig_ccy: Option<String>,
}

pub(crate) fn parse<E>(
    bytes: &[u8],
    sink: &mut dyn FnMut(StatementEvent) -> Result<(), E>,
) -> Result<(), StreamError<E>> {
    let err = |line: u64, kind: ErrorKind| BankError::new(Format::Ofx, Location::Line(line), kind);
    let text: std::borrow::Cow<'_, str> = match std::str::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => {
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0
        }
    };
    let text = text.trim_start_matches('\u{feff}');
    let Some(ofx_at) = text.find("<OFX>").or_else(|| text.find("<OFX ")) else {
        return Err(err(1, ErrorKind::NotAStatement("no <OFX> element".into())).into());
    };
    let mut sc = Scanner {
        s: text,
        pos: ofx_at,
        line: 1,
        counted: 0,
    };
    let mut stack: Vec<String> = Vec::new();
    let mut stmt: Option<Stmt> = None;
    let mut tx: Option<Tx> = None;
    let mut bal: Option<BalState> = None;
    let mut statements = 0usize;
    let mut status_error: Option<String> = None;
    let mut status_code: Option<String> = None;
    let mut last_line = 1;
    // The leaf whose value we are reading (SGML leaves have no close tag).
    let mut pending_open: Option<(String, u64)> = None;
    loop {
        let next = sc.next().map_err(|(l, m)| err(l, ErrorKind::Syntax(m)))?;
        let Some((tok, line)) = next else { break };
        last_line = line;
        match tok {
            Tok::Open(name) => {
                // An open tag right after another open tag: the earlier one
                // is an aggregate.
                if let Some((p, _)) = pending_open.take() {
                    push(&mut stack, p, line, &mut stmt, &mut tx, &mut bal)
                        .map_err(|k| err(line, k))?;
                }
                pending_open = Some((name.to_ascii_uppercase(), line));
            }
            Tok::Text(t) => {
                let Some((leaf, lline)) = pending_open.take() else {
                    // Text after a closed leaf or aggregate: ignore.
                    continue;
                };
                let value = unescape(t);
                leaf_value(
                    &stack,
                    &leaf,
                    &value,
                    lline,
                    &mut stmt,
                    &mut tx,
                    &mut bal,
                    &mut status_code,
                    &mut status_error,
                )
                .map_err(|k| err(lline, k))?;
            }
            Tok::Close(name) => {
                let name = name.to_ascii_uppercase();
                if let Some((p, pl)) = pending_open.take() {
                    if p == name {
                        // <TAG></TAG>: empty leaf.
                        leaf_value(
                            &stack,
                            &p,
                            "",
                            pl,
                            &mut stmt,
                            &mut tx,
                            &mut bal,
                            &mut status_code,
                            &mut status_error,
                        )
                        .map_err(|k| err(pl, k))?;
                        continue;
                    }
                    push(&mut stack, p, pl, &mut stmt, &mut tx, &mut bal)
                        .map_err(|k| err(pl, k))?;
                }
                // XML closes of leaves already consumed: ignore those not open.
                if !stack.contains(&name) {
                    continue;
                }
                while let Some(top) = stack.pop() {
                    let done = top == name;
                    close(&top, &mut stmt, &mut tx, &mut bal, sink, &mut statements)?;
                    if done {
                        break;
                    }
                }
            }
        }
    }
    if let Some(s) = stack.last() {
        return Err(err(
            last_line,
            ErrorKind::Syntax(format!("unexpected end of file inside <{s}>")),
        )
        .into());
    }
    if statements == 0
        && let Some(e) = status_error
    {
        return Err(err(
            last_line,
            ErrorKind::NotAStatement(format!("the OFX server reported an error: {e}")),
        )
        .into());
    }
    Ok(())
}

/// Balance aggregate being read: kind, BALAMT, DTASOF (each with line), start line.
type BalState = (String, Option<(String, u64)>, Option<(String, u64)>, u64);

fn push(
    stack: &mut Vec<String>,
    name: String,
    line: u64,
    stmt: &mut Option<Stmt>,
    tx: &mut Option<Tx>,
    bal: &mut Option<BalState>,
) -> Result<(), ErrorKind> {
    if stack.len() >= MAX_DEPTH {
        return Err(ErrorKind::Limit(format!(
            "aggregates nested deeper than {MAX_DEPTH}"
        )));
    }
    match name.as_str() {
        "STMTRS" | "CCSTMTRS" => {
            *stmt = Some(Stmt {
                line,
                ..Stmt::default()
            })
        }
        "STMTTRN" if stmt.is_some() => {
            *tx = Some(Tx {
                line,
                ..Tx::default()
            })
        }
        "LEDGERBAL" | "AVAILBAL" if stmt.is_some() => *bal = Some((name.clone(), None, None, line)),
        _ => {}
    }
    stack.push(name);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn leaf_value(
    stack: &[String],
    leaf: &str,
    value: &str,
    line: u64,
    stmt: &mut Option<Stmt>,
    tx: &mut Option<Tx>,
    bal: &mut Option<BalState>,
    status_code: &mut Option<String>,
    status_error: &mut Option<String>,
) -> Result<(), ErrorKind> {
    let parent = stack.last().map(String::as_str).unwrap_or("");
    if parent == "STATUS" {
        match leaf {
            "CODE" => *status_code = Some(value.to_owned()),
            "SEVERITY" if value == "ERROR" => {
                *status_error = Some(format!("status {}", status_code.as_deref().unwrap_or("?")));
            }
            "MESSAGE" => {
                if let Some(e) = status_error.as_mut()
                    && !e.contains(':')
                {
                    e.push_str(": ");
                    e.push_str(value);
                }
            }
            _ => {}
        }
        return Ok(());
    }
    if let Some(t) = tx.as_mut() {
        match parent {
            "PAYEE" if leaf == "NAME" => t.payee = opt(value),
            "CURRENCY" if leaf == "CURSYM" => t.tx_ccy = opt(value),
            "ORIGCURRENCY" if leaf == "CURSYM" => t.orig_ccy = opt(value),
            "STMTTRN" => t.fields.push((leaf.to_owned(), value.to_owned(), line)),
            _ => {}
        }
        return Ok(());
    }
    if let Some(b) = bal.as_mut() {
        match leaf {
            "BALAMT" => b.1 = Some((value.to_owned(), line)),
            "DTASOF" => b.2 = Some((value.to_owned(), line)),
            _ => {}
        }
        return Ok(());
    }
    if let Some(s) = stmt.as_mut() {
        match (parent, leaf) {
            // Some exporters leave CURDEF empty and name the currency per line.
            (_, "CURDEF") if value.trim().is_empty() => {}
            (_, "CURDEF") => {
                s.ccy = Some(currency(value).map_err(|r| invalid("CURDEF", value, r))?);
            }
            ("BANKACCTFROM" | "CCACCTFROM", "ACCTID") => s.account = opt(value),
            ("BANKACCTFROM", "BANKID") => s.bank = opt(value),
            _ => {}
        }
    }
    Ok(())
}

fn invalid(field: &str, value: &str, reason: impl Into<String>) -> ErrorKind {
    ErrorKind::InvalidValue {
        field: field.to_owned(),
        value: snippet(value),
        reason: reason.into(),
    }
}

fn close<E>(
    name: &str,
    stmt: &mut Option<Stmt>,
    tx: &mut Option<Tx>,
    bal: &mut Option<BalState>,
    sink: &mut dyn FnMut(StatementEvent) -> Result<(), E>,
    statements: &mut usize,
) -> Result<(), StreamError<E>> {
    let err = |line: u64, kind: ErrorKind| BankError::new(Format::Ofx, Location::Line(line), kind);
    match name {
        "STMTTRN" => {
            let (Some(t), Some(s)) = (tx.take(), stmt.as_mut()) else {
                return Ok(());
            };
            let get = |k: &str| {
                t.fields
                    .iter()
                    .find(|(n, _, _)| n == k)
                    .map(|(_, v, l)| (v.as_str(), *l))
            };
            let (amt_s, al) = get("TRNAMT")
                .ok_or_else(|| err(t.line, ErrorKind::Missing("TRNAMT in STMTTRN".into())))?;
            let amount = parse_amount(amt_s).map_err(|r| err(al, invalid("TRNAMT", amt_s, r)))?;
            let (d_s, dl) = get("DTPOSTED")
                .ok_or_else(|| err(t.line, ErrorKind::Missing("DTPOSTED in STMTTRN".into())))?;
            let date = parse_date(d_s).ok_or_else(|| {
                err(
                    dl,
                    invalid("DTPOSTED", d_s, "expected YYYYMMDD[hhmmss[.xxx]][[±h:TZ]]"),
                )
            })?;
            let ccy = match &t.tx_ccy {
                Some(c) => {
                    currency(c).map_err(|r| err(t.line, invalid("CURRENCY/CURSYM", c, r)))?
                }
                None => s.ccy.ok_or_else(|| {
                    err(
                        s.line,
                        ErrorKind::Missing("CURDEF before the transactions".into()),
                    )
                })?,
            };
            money(amount, ccy).map_err(|r| err(al, invalid("TRNAMT", amt_s, r)))?;
            let mut x = new_transaction(s.account.as_deref().unwrap_or(""), date, amount, ccy);
            if let Some((u, ul)) = get("DTUSER") {
                let d = parse_date(u).ok_or_else(|| err(ul, invalid("DTUSER", u, "not a date")))?;
                put(&mut x.extra, "user_date", &d.to_string());
            }
            if let Some((a, _)) = get("DTAVAIL") {
                x.value_date = parse_date(a);
            }
            let fitid = get("FITID").map(|(v, _)| v).unwrap_or("");
            x.bank_reference = opt(fitid);
            let name = get("NAME")
                .map(|(v, _)| v)
                .and_then(opt)
                .or_else(|| t.payee.clone());
            x.counterparty_name = name;
            let memo = get("MEMO").map(|(v, _)| v).unwrap_or("");
            x.remittance_info = opt(memo);
            x.bank_transaction_code = get("TRNTYPE").and_then(|(v, _)| opt(v));
            let e = &mut x.extra;
            put(e, "fitid", fitid);
            put(
                e,
                "ofx_transaction_type",
                get("TRNTYPE").map(|(v, _)| v).unwrap_or(""),
            );
            put(e, "memo", memo);
            put(
                e,
                "cheque_number",
                get("CHECKNUM").map(|(v, _)| v).unwrap_or(""),
            );
            put(
                e,
                "customer_reference",
                get("REFNUM").map(|(v, _)| v).unwrap_or(""),
            );
            put(e, "sic", get("SIC").map(|(v, _)| v).unwrap_or(""));
            if let Some(p) = &t.payee {
                put(e, "payee", p);
            }
            if let Some(o) = &t.orig_ccy {
                put(e, "instructed_currency", o);
            }
            s.txs.push(x);
        }
        "LEDGERBAL" | "AVAILBAL" => {
            let (Some(b), Some(s)) = (bal.take(), stmt.as_mut()) else {
                return Ok(());
            };
            let (kind, amt, dt, bline) = b;
            let (amt_s, al) = amt.unwrap_or_else(|| (String::new(), bline));
            if amt_s.trim().is_empty() {
                // Exporters write empty balance aggregates; there is no
                // balance to keep, but say so.
                s.warnings.push(Warning {
                    location: Location::Line(al),
                    message: format!("{kind} has no BALAMT; balance ignored"),
                });
                return Ok(());
            }
            let v = parse_amount(&amt_s).map_err(|r| err(al, invalid("BALAMT", &amt_s, r)))?;
            let (d_s, dl) =
                dt.ok_or_else(|| err(bline, ErrorKind::Missing(format!("DTASOF in {kind}"))))?;
            let date =
                parse_date(&d_s).ok_or_else(|| err(dl, invalid("DTASOF", &d_s, "not a date")))?;
            let ccy = s
                .ccy
                .ok_or_else(|| err(s.line, ErrorKind::Missing("CURDEF".into())))?;
            let m = money(v, ccy).map_err(|r| err(al, invalid("BALAMT", &amt_s, r)))?;
            s.balances.push(Balance {
                kind,
                date,
                amount: m,
            });
        }
        "STMTRS" | "CCSTMTRS" => {
            let Some(s) = stmt.take() else { return Ok(()) };
            let account = s.account.ok_or_else(|| {
                err(
                    s.line,
                    ErrorKind::Missing("ACCTID in BANKACCTFROM/CCACCTFROM".into()),
                )
            })?;
            let h = StatementHeader {
                format: Format::Ofx,
                id: None,
                account,
                servicer: s.bank,
                currency: s.ccy,
                sequence: None,
                created_at: None,
                message_id: None,
            };
            sink(StatementEvent::Header(h)).map_err(StreamError::Sink)?;
            for t in s.txs {
                sink(StatementEvent::Transaction(Box::new(t))).map_err(StreamError::Sink)?;
            }
            sink(StatementEvent::End(StatementEnd {
                balances: s.balances,
                warnings: s.warnings,
            }))
            .map_err(StreamError::Sink)?;
            *statements += 1;
        }
        _ => {}
    }
    Ok(())
}

/// `-6.60`, `+12`, `1,50` (comma decimals appear in some exports).
fn parse_amount(s: &str) -> Result<Decimal, String> {
    let t = s.trim();
    let (neg, d) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let sep = if d.contains('.') || !d.contains(',') {
        b'.'
    } else {
        b','
    };
    parse_unsigned(d.trim(), sep).map(|v| signed(v, neg))
}

/// `YYYYMMDD[hhmmss[.xxx]][[gmt offset[:tz name]]]` → the date part.
fn parse_date(s: &str) -> Option<NaiveDate> {
    let t = s.trim();
    let d = t.get(..8)?;
    let rest = t.get(8..)?;
    if !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let time = rest.split('[').next().unwrap_or("");
    if !time.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let y: i32 = d.get(..4)?.parse().ok()?;
    let m: u32 = d.get(4..6)?.parse().ok()?;
    let dd: u32 = d.get(6..8)?.parse().ok()?;
    NaiveDate::from_ymd_opt(y, m, dd)
}
