//! ISO 20022 camt.052 / camt.053 / camt.054, any version, streamed.
//!
//! The reader keeps a small element tree of the part of the document it is
//! in: the group header and the current statement's header, plus the one
//! entry (`Ntry`) being read. Each entry is turned into transactions and
//! dropped as soon as it closes, so memory stays flat however many entries a
//! file has. Elements are matched by local name, so any namespace prefix or
//! version works.
//!
//! Safety: a `DOCTYPE` is rejected before anything else happens (no DTD, no
//! entity expansion, nothing fetched); only the five predefined entities and
//! character references are resolved; element depth, a single text node's
//! size and the number of elements held at once are capped.

use std::io::BufRead;

use chrono::{NaiveDate, NaiveDateTime};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use rust_decimal::Decimal;
use serde_json::Value;

use super::{
    Balance, BankError, ErrorKind, Format, Location, StatementEnd, StatementEvent, StatementHeader,
    StreamError, Warning, currency, money, new_transaction, parse_unsigned, put, signed, snippet,
};
use crate::model::{BankTransaction, Currency};

/// Deepest element nesting accepted (camt needs about 15).
pub(crate) const MAX_DEPTH: usize = 64;
/// Largest single text node (bytes); camt texts are at most a few hundred.
pub(crate) const MAX_TEXT: usize = 64 * 1024;
/// Most elements held at once (statement header plus one entry).
pub(crate) const MAX_NODES: usize = 500_000;

/// Known message versions (`camt.053.001.NN`) per message type.
fn known_versions(msg: u32) -> &'static [u32] {
    match msg {
        52 => &[1, 2, 3, 4, 5, 6, 7, 8],
        53 => &[2, 3, 4, 5, 6, 7, 8],
        54 => &[2, 3, 4, 5, 6, 7, 8],
        _ => &[],
    }
}

#[derive(Debug)]
struct Node {
    /// Range of the local name in the arena.
    name: (u32, u32),
    /// Range of the text in the arena (empty if none).
    text: (u32, u32),
    ccy: Option<Box<str>>,
    parent: usize,
    /// One past the last descendant (valid once closed).
    end: usize,
    /// 1-based index among same-named siblings, for Stmt/Ntry (0 = compute).
    ord: u32,
}

/// Document-order element tree; subtrees are suffixes, so dropping a closed
/// entry is a truncate.
#[derive(Default)]
struct Tree {
    nodes: Vec<Node>,
    arena: String,
}

const NONE: usize = usize::MAX;

impl Tree {
    fn name(&self, n: usize) -> &str {
        self.nodes
            .get(n)
            .and_then(|x| self.arena.get(x.name.0 as usize..x.name.1 as usize))
            .unwrap_or("")
    }

    fn text(&self, n: usize) -> &str {
        self.nodes
            .get(n)
            .and_then(|x| self.arena.get(x.text.0 as usize..x.text.1 as usize))
            .unwrap_or("")
            .trim()
    }

    fn end_of(&self, n: usize) -> usize {
        self.nodes.get(n).map_or(n, |x| x.end.max(n + 1))
    }

    /// Direct children named `name` (or all with `"*"`).
    fn children<'a>(&'a self, n: usize, name: &'a str) -> impl Iterator<Item = usize> + 'a {
        let end = self.end_of(n).min(self.nodes.len());
        let mut i = n + 1;
        let any = name == "*";
        let want = name.as_bytes();
        let arena = self.arena.as_bytes();
        std::iter::from_fn(move || {
            while i < end {
                let c = i;
                let node = self.nodes.get(c)?;
                i = node.end.max(c + 1);
                let (a, b) = (node.name.0 as usize, node.name.1 as usize);
                // Length first: most sibling names differ in length.
                if any || (b - a == want.len() && arena.get(a..b) == Some(want)) {
                    return Some(c);
                }
            }
            None
        })
    }

    fn child(&self, n: usize, name: &str) -> Option<usize> {
        self.children(n, name).next()
    }

    /// First node reached by following `path` (each step any matching child).
    fn find(&self, n: usize, path: &[&str]) -> Option<usize> {
        let Some((first, rest)) = path.split_first() else {
            return Some(n);
        };
        self.children(n, first).find_map(|c| self.find(c, rest))
    }

    /// Text at `path`, trimmed, if present and non-empty.
    fn get(&self, n: usize, path: &[&str]) -> Option<&str> {
        let mut out = None;
        self.walk(n, path, &mut |t, c| {
            let s = t.text(c);
            if !s.is_empty() {
                out = Some(s);
                return true;
            }
            false
        });
        out
    }

    /// All non-empty texts at `path`.
    fn all(&self, n: usize, path: &[&str]) -> Vec<&str> {
        let mut out = Vec::new();
        self.walk(n, path, &mut |t, c| {
            let s = t.text(c);
            if !s.is_empty() {
                out.push(s);
            }
            false
        });
        out
    }

    /// Visits nodes at `path`; the visitor returns true to stop.
    fn walk<'a>(
        &'a self,
        n: usize,
        path: &[&str],
        f: &mut dyn FnMut(&'a Tree, usize) -> bool,
    ) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return f(self, n);
        };
        for c in self.children(n, first) {
            if self.walk(c, rest, f) {
                return true;
            }
        }
        false
    }

    /// Element path of `n`, e.g. `Document/BkToCstmrStmt/Stmt[2]/Ntry[5]/Amt`.
    fn path(&self, n: usize) -> String {
        let mut parts = Vec::new();
        let mut cur = n;
        let mut guard = 0;
        while guard < MAX_DEPTH + 2 {
            guard += 1;
            let Some(node) = self.nodes.get(cur) else {
                break;
            };
            let name = self.name(cur);
            let ord = if node.ord > 0 {
                node.ord as usize
            } else if node.parent != NONE {
                let same: Vec<usize> = self.children(node.parent, name).collect();
                if same.len() > 1 {
                    same.iter().position(|&c| c == cur).map_or(0, |p| p + 1)
                } else {
                    0
                }
            } else {
                0
            };
            if ord > 0 {
                parts.push(format!("{name}[{ord}]"));
            } else {
                parts.push(name.to_owned());
            }
            cur = node.parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// Drops node `n` and everything after it.
    fn truncate(&mut self, n: usize) {
        if let Some(node) = self.nodes.get(n) {
            let cut = node.name.0 as usize;
            self.nodes.truncate(n);
            self.arena.truncate(cut);
        }
    }
}

/// Which message the root element says this is.
fn message_of(root: &str) -> Option<(Format, &'static str)> {
    // Version 1 messages carry the version in the name: BkToCstmrAcctRptV01.
    let base = match root.rfind('V') {
        Some(p)
            if p > 0
                && root.len() - p == 3
                && root
                    .get(p + 1..)
                    .is_some_and(|v| v.bytes().all(|b| b.is_ascii_digit())) =>
        {
            root.get(..p).unwrap_or(root)
        }
        _ => root,
    };
    match base {
        "BkToCstmrStmt" => Some((Format::Camt053, "Stmt")),
        "BkToCstmrDbtCdtNtfctn" => Some((Format::Camt054, "Ntfctn")),
        "BkToCstmrAcctRpt" => Some((Format::Camt052, "Rpt")),
        _ => None,
    }
}

struct Parser<'s, E> {
    tree: Tree,
    sink: &'s mut dyn FnMut(StatementEvent) -> Result<(), E>,
    requested: Format,
    format: Option<Format>,
    stmt_tag: &'static str,
    /// Open element chain (indexes into the tree).
    stack: Vec<usize>,
    byte: u64,
    /// Current statement node and state.
    stmt: Option<usize>,
    stmt_count: u32,
    ntry_count: u32,
    header_sent: bool,
    header: Option<StatementHeader>,
    doc_warnings: Vec<Warning>,
    warnings: Vec<Warning>,
    statements: u32,
}

pub(crate) fn parse<R: BufRead, E>(
    reader: R,
    format: Format,
    sink: &mut dyn FnMut(StatementEvent) -> Result<(), E>,
) -> Result<(), StreamError<E>> {
    let mut r = Reader::from_reader(reader);
    let cfg = r.config_mut();
    cfg.check_end_names = true;
    cfg.expand_empty_elements = false;
    let mut p = Parser {
        tree: Tree::default(),
        sink,
        requested: format,
        format: None,
        stmt_tag: "Stmt",
        stack: Vec::new(),
        byte: 0,
        stmt: None,
        stmt_count: 0,
        ntry_count: 0,
        header_sent: false,
        header: None,
        doc_warnings: Vec::new(),
        warnings: Vec::new(),
        statements: 0,
    };
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        let ev = match r.read_event_into(&mut buf) {
            Ok(ev) => ev,
            Err(e) => {
                p.byte = r.error_position();
                return Err(p.err(ErrorKind::Syntax(e.to_string())).into());
            }
        };
        p.byte = r.buffer_position();
        match ev {
            Event::DocType(_) => return Err(p.err(ErrorKind::Doctype).into()),
            Event::Start(e) => p.start(&e)?,
            Event::Empty(e) => {
                p.start(&e)?;
                p.end()?;
            }
            Event::End(_) => p.end()?,
            Event::Text(t) => p.text(&t)?,
            Event::CData(t) => {
                let s = t.xml10_content();
                p.text(&s)?;
            }
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &*r {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => {
                            return Err(p
                                .err(ErrorKind::Syntax(format!(
                                    "undefined entity &{};",
                                    snippet(other)
                                )))
                                .into());
                        }
                    },
                    Err(e) => return Err(p.err(ErrorKind::Syntax(e.to_string())).into()),
                };
                let mut b = [0u8; 4];
                p.text(ch.encode_utf8(&mut b))?;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !p.stack.is_empty() {
        return Err(p
            .err(ErrorKind::Syntax(
                "unexpected end of file inside an element".into(),
            ))
            .into());
    }
    if p.format.is_none() {
        return Err(p
            .err(ErrorKind::NotAStatement(
                "no BkToCstmrStmt, BkToCstmrDbtCdtNtfctn or BkToCstmrAcctRpt element".into(),
            ))
            .into());
    }
    if p.statements == 0 {
        return Err(p
            .err(ErrorKind::NotAStatement(format!(
                "the message holds no {} element",
                p.stmt_tag
            )))
            .into());
    }
    Ok(())
}

impl<E> Parser<'_, E> {
    fn fmt(&self) -> Format {
        self.format
            .clone()
            .unwrap_or_else(|| self.requested.clone())
    }

    fn loc(&self, node: usize) -> Location {
        Location::Xml {
            path: self.tree.path(node),
            byte: self.byte,
        }
    }

    fn err(&self, kind: ErrorKind) -> BankError {
        let node = self.stack.last().copied().unwrap_or(NONE);
        let loc = if node == NONE {
            // Outside any element: point at the message element, if seen.
            let root = if self.tree.nodes.len() > 1 { 1 } else { 0 };
            Location::Xml {
                path: if self.tree.nodes.is_empty() {
                    "Document".into()
                } else {
                    self.tree.path(root)
                },
                byte: self.byte,
            }
        } else {
            self.loc(node)
        };
        BankError::new(self.fmt(), loc, kind)
    }

    fn err_at(&self, node: usize, kind: ErrorKind) -> BankError {
        BankError::new(self.fmt(), self.loc(node), kind)
    }

    fn invalid(
        &self,
        node: usize,
        field: &str,
        value: &str,
        reason: impl Into<String>,
    ) -> BankError {
        self.err_at(
            node,
            ErrorKind::InvalidValue {
                field: field.to_owned(),
                value: snippet(value),
                reason: reason.into(),
            },
        )
    }

    fn start(&mut self, e: &BytesStart<'_>) -> Result<(), StreamError<E>> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self
                .err(ErrorKind::Limit(format!(
                    "elements nested deeper than {MAX_DEPTH}"
                )))
                .into());
        }
        if self.tree.nodes.len() >= MAX_NODES {
            return Err(self
                .err(ErrorKind::Limit(format!(
                    "more than {MAX_NODES} elements in one statement header or entry"
                )))
                .into());
        }
        let local = e.local_name();
        let name: &str = local.as_ref();
        let parent = self.stack.last().copied().unwrap_or(NONE);
        let depth = self.stack.len();
        // Root: remember the declared version.
        if depth == 0 {
            self.check_namespace(e);
        }
        let mut ccy = None;
        if name == "Amt" || name == "TtlAmt" || name == "InstdAmt" {
            for a in e.attributes().flatten() {
                if a.key.local_name().as_ref() == "Ccy" {
                    ccy = Some(a.value.trim().into());
                }
            }
        }
        let mut ord = 0;
        if depth == 1
            && self.format.is_none()
            && let Some((f, tag)) = message_of(name)
        {
            self.format = Some(f);
            self.stmt_tag = tag;
        }
        let is_stmt = depth == 2 && self.format.is_some() && name == self.stmt_tag;
        let is_ntry = self.stmt.is_some() && depth == 3 && name == "Ntry";
        if is_stmt {
            self.stmt_count += 1;
            ord = self.stmt_count;
        }
        if is_ntry {
            self.ntry_count += 1;
            ord = self.ntry_count;
            if !self.header_sent {
                self.send_header()?;
            }
        }
        let start = self.tree.arena.len();
        self.tree.arena.push_str(name);
        let end = self.tree.arena.len();
        let idx = self.tree.nodes.len();
        self.tree.nodes.push(Node {
            name: (start as u32, end as u32),
            text: (end as u32, end as u32),
            ccy,
            parent,
            end: NONE,
            ord,
        });
        self.stack.push(idx);
        if is_stmt {
            self.stmt = Some(idx);
            self.ntry_count = 0;
            self.header_sent = false;
            self.header = None;
            self.warnings = self.doc_warnings.clone();
        }
        Ok(())
    }

    fn check_namespace(&mut self, e: &BytesStart<'_>) {
        for a in e.attributes().flatten() {
            let key: &str = a.key.as_ref();
            if !(key == "xmlns" || key.starts_with("xmlns:")) {
                continue;
            }
            let v = a.value.as_ref();
            let Some(pos) = v.find("camt.05") else {
                continue;
            };
            let tail = v.get(pos + 5..).unwrap_or("");
            let mut it = tail.split('.');
            let msg = it.next().and_then(|s| s.parse::<u32>().ok());
            let _variant = it.next();
            let ver = it
                .next()
                .map(|s| s.trim_end_matches(|c: char| !c.is_ascii_digit()))
                .and_then(|s| s.parse::<u32>().ok());
            if let (Some(msg), Some(ver)) = (msg, ver) {
                let known = known_versions(msg);
                if !known.is_empty() && !known.contains(&ver) {
                    let closest = known
                        .iter()
                        .min_by_key(|k| k.abs_diff(ver))
                        .copied()
                        .unwrap_or(8);
                    self.doc_warnings.push(Warning {
                        location: Location::Xml {
                            path: "Document".into(),
                            byte: self.byte,
                        },
                        message: format!(
                            "unknown version camt.{msg:03}.001.{ver:02} in namespace {}; parsed as camt.{msg:03}.001.{closest:02}",
                            snippet(v)
                        ),
                    });
                }
            }
        }
    }

    fn text(&mut self, s: &str) -> Result<(), StreamError<E>> {
        let Some(&n) = self.stack.last() else {
            return Ok(());
        };
        let arena_len = self.tree.arena.len() as u32;
        let last = self.tree.nodes.len();
        let Some(node) = self.tree.nodes.get(n) else {
            return Ok(());
        };
        // Text is kept only while it is contiguous (leaf elements); the
        // whitespace between child elements is dropped.
        if node.text.1 != arena_len || n + 1 != last {
            return Ok(());
        }
        if (node.text.1 - node.text.0) as usize + s.len() > MAX_TEXT {
            return Err(self
                .err(ErrorKind::Limit(format!(
                    "text node longer than {MAX_TEXT} bytes"
                )))
                .into());
        }
        self.tree.arena.push_str(s);
        if let Some(node) = self.tree.nodes.get_mut(n) {
            node.text.1 = self.tree.arena.len() as u32;
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), StreamError<E>> {
        let Some(n) = self.stack.pop() else {
            return Err(self
                .err(ErrorKind::Syntax("unmatched end tag".into()))
                .into());
        };
        let len = self.tree.nodes.len();
        if let Some(node) = self.tree.nodes.get_mut(n) {
            node.end = len;
        }
        if Some(n) == self.stmt {
            self.finish_statement(n)?;
            self.tree.truncate(n);
            self.stmt = None;
        } else if self.stmt.is_some() && self.stack.len() == 3 && self.tree.name(n) == "Ntry" {
            self.entry(n)?;
            self.tree.truncate(n);
        }
        Ok(())
    }

    // -- statement ---------------------------------------------------------

    fn send_header(&mut self) -> Result<(), StreamError<E>> {
        let Some(st) = self.stmt else { return Ok(()) };
        let h = self.build_header(st)?;
        self.header = Some(h.clone());
        self.header_sent = true;
        (self.sink)(StatementEvent::Header(h)).map_err(StreamError::Sink)
    }

    fn build_header(&mut self, st: usize) -> Result<StatementHeader, BankError> {
        let t = &self.tree;
        let acct = t.child(st, "Acct");
        let account = acct
            .and_then(|a| {
                t.get(a, &["Id", "IBAN"])
                    .or_else(|| t.get(a, &["Id", "Othr", "Id"]))
                    .or_else(|| t.get(a, &["Id", "PrtryAcct", "Id"]))
            })
            .unwrap_or("")
            .to_owned();
        if account.is_empty() {
            self.warnings.push(Warning {
                location: self.loc(st),
                message: "statement has no account id (Acct/Id)".into(),
            });
        }
        let ccy_text = acct.and_then(|a| t.get(a, &["Ccy"]));
        let ccy = match ccy_text {
            Some(c) => match currency(c) {
                Ok(c) => Some(c),
                Err(reason) => {
                    let node = acct.and_then(|a| t.child(a, "Ccy")).unwrap_or(st);
                    return Err(self.invalid(node, "Acct/Ccy", c, reason));
                }
            },
            // Else the first balance's currency, when valid.
            None => t
                .find(st, &["Bal", "Amt"])
                .and_then(|a| t.nodes.get(a))
                .and_then(|n| n.ccy.as_deref())
                .and_then(|c| currency(c).ok()),
        };
        let servicer = acct.and_then(|a| {
            t.get(a, &["Svcr", "FinInstnId", "BIC"])
                .or_else(|| t.get(a, &["Svcr", "FinInstnId", "BICFI"]))
                .or_else(|| t.get(a, &["Svcr", "FinInstnId", "Nm"]))
                .map(str::to_owned)
        });
        let root_msg = t
            .nodes
            .first()
            .map(|_| 0usize)
            .and_then(|d| t.child(d, "*"));
        let grp = root_msg.and_then(|m| t.child(m, "GrpHdr"));
        let created = t
            .get(st, &["CreDtTm"])
            .or_else(|| grp.and_then(|g| t.get(g, &["CreDtTm"])));
        let created_at = created.and_then(parse_datetime);
        Ok(StatementHeader {
            format: self.fmt(),
            id: t.get(st, &["Id"]).map(str::to_owned),
            account,
            servicer,
            currency: ccy,
            sequence: t
                .get(st, &["ElctrncSeqNb"])
                .or_else(|| t.get(st, &["LglSeqNb"]))
                .map(str::to_owned),
            created_at,
            message_id: grp.and_then(|g| t.get(g, &["MsgId"])).map(str::to_owned),
        })
    }

    fn finish_statement(&mut self, st: usize) -> Result<(), StreamError<E>> {
        self.statements += 1;
        if !self.header_sent {
            self.send_header()?;
        }
        let mut balances = Vec::new();
        let bals: Vec<usize> = self.tree.children(st, "Bal").collect();
        for b in bals {
            balances.push(self.balance(b)?);
        }
        // Fill a missing header currency from the first balance.
        let warnings = std::mem::take(&mut self.warnings);
        (self.sink)(StatementEvent::End(StatementEnd { balances, warnings }))
            .map_err(StreamError::Sink)
    }

    fn balance(&self, b: usize) -> Result<Balance, BankError> {
        let t = &self.tree;
        let kind = t
            .get(b, &["Tp", "CdOrPrtry", "Cd"])
            .or_else(|| t.get(b, &["Tp", "CdOrPrtry", "Prtry"]))
            .ok_or_else(|| self.err_at(b, ErrorKind::Missing("Tp/CdOrPrtry/Cd".into())))?
            .to_owned();
        let (amount, ccy) = self.amount(b, "Amt")?;
        let debit = self
            .cdt_dbt(b)?
            .ok_or_else(|| self.err_at(b, ErrorKind::Missing("CdtDbtInd".into())))?;
        let date = self
            .date_in(b, "Dt")?
            .ok_or_else(|| self.err_at(b, ErrorKind::Missing("Dt/Dt or Dt/DtTm".into())))?;
        let amt = signed(amount, debit);
        let m = money(amt, ccy).map_err(|r| self.invalid(b, "Amt", &amt.to_string(), r))?;
        Ok(Balance {
            kind,
            date,
            amount: m,
        })
    }

    // -- field helpers -------------------------------------------------------

    /// Required `<name Ccy="…">` child of `n`: unsigned amount and currency.
    fn amount(&self, n: usize, name: &str) -> Result<(Decimal, Currency), BankError> {
        let a = self
            .tree
            .child(n, name)
            .ok_or_else(|| self.err_at(n, ErrorKind::Missing(name.into())))?;
        self.amount_node(a)
    }

    fn amount_node(&self, a: usize) -> Result<(Decimal, Currency), BankError> {
        let t = &self.tree;
        let text = t.text(a);
        let (neg, digits) = match text.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, text),
        };
        let v = parse_unsigned(digits, b'.').map_err(|r| self.invalid(a, "amount", text, r))?;
        if neg && !v.is_zero() {
            return Err(self.invalid(
                a,
                "amount",
                text,
                "amounts are unsigned in camt; the sign comes from CdtDbtInd",
            ));
        }
        let ccy_text = t.nodes.get(a).and_then(|x| x.ccy.as_deref()).unwrap_or("");
        if ccy_text.is_empty() {
            return Err(self.err_at(a, ErrorKind::Missing("Ccy attribute".into())));
        }
        let ccy = currency(ccy_text).map_err(|r| self.invalid(a, "Ccy", ccy_text, r))?;
        Ok((v, ccy))
    }

    /// `CdtDbtInd` child: Some(true) for DBIT.
    fn cdt_dbt(&self, n: usize) -> Result<Option<bool>, BankError> {
        let Some(c) = self.tree.child(n, "CdtDbtInd") else {
            return Ok(None);
        };
        match self.tree.text(c) {
            "DBIT" => Ok(Some(true)),
            "CRDT" => Ok(Some(false)),
            other => Err(self.invalid(c, "CdtDbtInd", other, "expected CRDT or DBIT")),
        }
    }

    /// Date from `<name><Dt>` or `<name><DtTm>`.
    fn date_in(&self, n: usize, name: &str) -> Result<Option<NaiveDate>, BankError> {
        let t = &self.tree;
        let Some(w) = t.child(n, name) else {
            return Ok(None);
        };
        for tag in ["Dt", "DtTm"] {
            if let Some(d) = t.child(w, tag) {
                let s = t.text(d);
                return parse_date(s).map(Some).ok_or_else(|| {
                    self.invalid(d, tag, s, "not a valid calendar date (YYYY-MM-DD)")
                });
            }
        }
        Ok(None)
    }

    // -- entries -------------------------------------------------------------

    fn entry(&mut self, ntry: usize) -> Result<(), StreamError<E>> {
        let txs = self.entry_transactions(ntry)?;
        for t in txs {
            (self.sink)(StatementEvent::Transaction(Box::new(t))).map_err(StreamError::Sink)?;
        }
        Ok(())
    }

    fn entry_transactions(&mut self, ntry: usize) -> Result<Vec<BankTransaction>, BankError> {
        let t = &self.tree;
        let account = self
            .header
            .as_ref()
            .map(|h| h.account.clone())
            .unwrap_or_default();
        let (entry_amt, entry_ccy) = self.amount(ntry, "Amt")?;
        let entry_debit = self
            .cdt_dbt(ntry)?
            .ok_or_else(|| self.err_at(ntry, ErrorKind::Missing("CdtDbtInd".into())))?;
        let booking = self.date_in(ntry, "BookgDt")?;
        let value = self.date_in(ntry, "ValDt")?;
        let created = self
            .header
            .as_ref()
            .and_then(|h| h.created_at)
            .map(|d| d.date());
        let booking_date = match booking.or(value) {
            Some(d) => d,
            None => {
                // Notifications (camt.054) and pending report entries may
                // carry neither date; the message creation date stands in.
                let d = created.ok_or_else(|| {
                    self.err_at(
                        ntry,
                        ErrorKind::Missing("BookgDt (or ValDt or CreDtTm)".into()),
                    )
                })?;
                self.warnings.push(Warning {
                    location: self.loc(ntry),
                    message: format!("entry has no BookgDt or ValDt; booking date taken from the creation date {d}"),
                });
                d
            }
        };
        let status = t
            .get(ntry, &["Sts", "Cd"])
            .or_else(|| t.get(ntry, &["Sts", "Prtry"]))
            .or_else(|| t.get(ntry, &["Sts"]));
        let reversal = t
            .get(ntry, &["RvslInd"])
            .is_some_and(|v| v == "true" || v == "1");
        let entry_signed = signed(entry_amt, entry_debit);

        let details: Vec<usize> = t
            .children(ntry, "NtryDtls")
            .flat_map(|d| t.children(d, "TxDtls").collect::<Vec<_>>())
            .collect();
        let batch = t.find(ntry, &["NtryDtls", "Btch"]);

        // Per-detail amounts apply only when the entry is a batch of several
        // details that all state an amount; a single detail takes the booked
        // entry amount, which is what moved the balance (charges and FX
        // conversions make the detail's own amount differ).
        let mut amounts: Vec<Option<(Decimal, Currency, bool)>> = Vec::new();
        if details.len() > 1 {
            for &d in &details {
                amounts.push(self.detail_amount(d, entry_debit)?);
            }
        }
        let split = details.len() > 1 && amounts.iter().all(Option::is_some);
        let mut warnings = Vec::new();
        if details.len() > 1 && !split {
            warnings.push(Warning {
                location: self.loc(ntry),
                message: format!(
                    "batched entry has {} TxDtls but not all state an amount; kept as one transaction with the entry amount",
                    details.len()
                ),
            });
        }
        if split {
            let mut sum = Decimal::ZERO;
            let mut same_ccy = true;
            for (a, c, d) in amounts.iter().flatten() {
                same_ccy &= *c == entry_ccy;
                sum = sum.checked_add(signed(*a, *d)).unwrap_or(sum);
            }
            if !same_ccy || sum != entry_signed {
                warnings.push(Warning {
                    location: self.loc(ntry),
                    message: format!(
                        "TxDtls amounts ({sum}{}) do not add up to the entry amount {entry_signed} {entry_ccy}",
                        if same_ccy { "" } else { ", mixed currencies" }
                    ),
                });
            }
        }

        let mut out = Vec::new();
        let groups: Vec<Option<usize>> = if split {
            details.iter().copied().map(Some).collect()
        } else if details.is_empty() {
            vec![None]
        } else {
            // One transaction; with several unsplittable details the first
            // supplies parties and the remittance lines of all are joined.
            vec![details.first().copied()]
        };
        let batch_size = groups.len();
        for (i, d) in groups.into_iter().enumerate() {
            let (amount, ccy) = if split {
                match amounts.get(i).copied().flatten() {
                    Some((a, c, debit)) => (signed(a, debit), c),
                    None => (entry_signed, entry_ccy),
                }
            } else {
                (entry_signed, entry_ccy)
            };
            let mut tx = new_transaction(&account, booking_date, amount, ccy);
            tx.value_date = value;
            let x = &mut tx.extra;
            if let Some(s) = status {
                put(x, "entry_status", s);
            }
            if reversal {
                x.insert("reversal".into(), Value::Bool(true));
            }
            if let Some(s) = t.get(ntry, &["NtryRef"]) {
                put(x, "entry_reference", s);
            }
            let addtl = t.all(ntry, &["AddtlNtryInf"]).join(" ");
            put(x, "additional_entry_info", &addtl);
            tx.bank_reference = t.get(ntry, &["AcctSvcrRef"]).map(str::to_owned);
            let (code, prop) = bank_tx_code(t, ntry);
            tx.bank_transaction_code = code;
            if let Some(p) = prop {
                put(x, "bank_transaction_code_proprietary", &p);
            }
            if let Some(b) = batch
                && let Some(s) = t.get(b, &["PmtInfId"])
            {
                put(x, "payment_information_id", s);
            }
            if split {
                x.insert(
                    "entry_amount".into(),
                    Value::String(entry_signed.to_string()),
                );
                x.insert(
                    "entry_currency".into(),
                    Value::String(entry_ccy.to_string()),
                );
                x.insert("batch_index".into(), Value::from(i + 1));
                x.insert("batch_size".into(), Value::from(batch_size));
            }
            if let Some(d) = d {
                let debit = amount.is_sign_negative() || (amount.is_zero() && entry_debit);
                self.fill_details(&mut tx, d, debit, split)?;
                if !split && details.len() > 1 {
                    let mut rem: Vec<String> = Vec::new();
                    for &o in &details {
                        let u = t.all(o, &["RmtInf", "Ustrd"]).join(" ");
                        if !u.is_empty() {
                            rem.push(u);
                        }
                    }
                    if !rem.is_empty() {
                        tx.remittance_info = Some(rem.join(" "));
                    }
                    let e2e: Vec<Value> = details
                        .iter()
                        .filter_map(|&o| t.get(o, &["Refs", "EndToEndId"]))
                        .filter(|e| !e.eq_ignore_ascii_case("NOTPROVIDED"))
                        .map(|e| Value::String(e.to_owned()))
                        .collect();
                    if !e2e.is_empty() {
                        tx.extra
                            .insert("batch_end_to_end_ids".into(), Value::Array(e2e));
                    }
                }
            }
            if tx.remittance_info.is_none() && !addtl.is_empty() && d.is_none() {
                tx.remittance_info = Some(addtl.clone());
            }
            out.push(tx);
        }
        self.warnings.extend(warnings);
        Ok(out)
    }

    /// Amount of one TxDtls: `Amt`, else `AmtDtls/TxAmt/Amt`, with its own
    /// `CdtDbtInd` when given.
    fn detail_amount(
        &self,
        d: usize,
        entry_debit: bool,
    ) -> Result<Option<(Decimal, Currency, bool)>, BankError> {
        let t = &self.tree;
        let node = t
            .child(d, "Amt")
            .or_else(|| t.find(d, &["AmtDtls", "TxAmt", "Amt"]));
        let Some(a) = node else { return Ok(None) };
        let (v, c) = self.amount_node(a)?;
        let debit = self.cdt_dbt(d)?.unwrap_or(entry_debit);
        Ok(Some((v, c, debit)))
    }

    fn fill_details(
        &self,
        tx: &mut BankTransaction,
        d: usize,
        debit: bool,
        split: bool,
    ) -> Result<(), BankError> {
        let t = &self.tree;
        let x = &mut tx.extra;
        // References.
        if let Some(refs) = t.child(d, "Refs") {
            if let Some(e) = t.get(refs, &["EndToEndId"])
                && !e.eq_ignore_ascii_case("NOTPROVIDED")
            {
                tx.end_to_end_id = Some(e.to_owned());
            }
            if let Some(s) = t.get(refs, &["AcctSvcrRef"]) {
                tx.bank_reference = Some(s.to_owned());
            }
            for (tag, key) in [
                ("MndtId", "mandate_id"),
                ("InstrId", "instruction_id"),
                ("TxId", "transaction_id"),
                ("PmtInfId", "payment_information_id"),
                ("UETR", "uetr"),
                ("ClrSysRef", "clearing_system_reference"),
                ("ChqNb", "cheque_number"),
            ] {
                if let Some(s) = t.get(refs, &[tag])
                    && !s.eq_ignore_ascii_case("NOTPROVIDED")
                {
                    put(x, key, s);
                }
            }
        }
        // Amount details.
        if let Some(ad) = t.child(d, "AmtDtls") {
            if let Some(a) = t.find(ad, &["InstdAmt", "Amt"]) {
                let (v, c) = self.amount_node(a)?;
                x.insert("instructed_amount".into(), Value::String(v.to_string()));
                x.insert("instructed_currency".into(), Value::String(c.to_string()));
            }
            if let Some(r) = t
                .get(ad, &["InstdAmt", "CcyXchg", "XchgRate"])
                .or_else(|| t.get(ad, &["TxAmt", "CcyXchg", "XchgRate"]))
            {
                put(x, "exchange_rate", r);
            }
        }
        if !split {
            let own = t
                .child(d, "Amt")
                .or_else(|| t.find(d, &["AmtDtls", "TxAmt", "Amt"]));
            if let Some(a) = own {
                let (v, c) = self.amount_node(a)?;
                if v != tx.amount.abs() || c != tx.currency {
                    x.insert("transaction_amount".into(), Value::String(v.to_string()));
                    x.insert("transaction_currency".into(), Value::String(c.to_string()));
                }
            }
        }
        let (code, prop) = bank_tx_code(t, d);
        if code.is_some() {
            tx.bank_transaction_code = code;
        }
        if let Some(p) = prop {
            put(x, "bank_transaction_code_proprietary", &p);
        }
        // Parties: v8+ nests the party under Pty.
        if let Some(rp) = t.child(d, "RltdPties") {
            let name = |role: &str| {
                t.get(rp, &[role, "Nm"])
                    .or_else(|| t.get(rp, &[role, "Pty", "Nm"]))
                    .map(str::to_owned)
            };
            let acct = |role: &str| {
                t.get(rp, &[role, "Id", "IBAN"])
                    .or_else(|| t.get(rp, &[role, "Id", "Othr", "Id"]))
                    .or_else(|| t.get(rp, &[role, "Id", "PrtryAcct", "Id"]))
                    .map(str::to_owned)
            };
            let dbtr = name("Dbtr");
            let cdtr = name("Cdtr");
            let dbtr_acct = acct("DbtrAcct");
            let cdtr_acct = acct("CdtrAcct");
            for (k, v) in [
                ("debtor_name", &dbtr),
                ("debtor_account", &dbtr_acct),
                ("creditor_name", &cdtr),
                ("creditor_account", &cdtr_acct),
                ("ultimate_debtor", &name("UltmtDbtr")),
                ("ultimate_creditor", &name("UltmtCdtr")),
            ] {
                if let Some(v) = v {
                    put(x, k, v);
                }
            }
            if let Some(c) = t
                .get(rp, &["Cdtr", "Id", "PrvtId", "Othr", "Id"])
                .filter(|_| {
                    t.get(rp, &["Cdtr", "Id", "PrvtId", "Othr", "SchmeNm", "Prtry"]) == Some("SEPA")
                })
            {
                put(x, "creditor_id", c);
            }
            if debit {
                tx.counterparty_name = cdtr;
                tx.counterparty_account = cdtr_acct;
            } else {
                tx.counterparty_name = dbtr;
                tx.counterparty_account = dbtr_acct;
            }
        }
        if let Some(agts) = t.child(d, "RltdAgts") {
            let role = if debit { "CdtrAgt" } else { "DbtrAgt" };
            if let Some(b) = t
                .get(agts, &[role, "FinInstnId", "BICFI"])
                .or_else(|| t.get(agts, &[role, "FinInstnId", "BIC"]))
            {
                put(x, "counterparty_bic", b);
            }
        }
        if let Some(p) = t.get(d, &["Purp", "Cd"]) {
            put(x, "purpose_code", p);
        }
        // Remittance.
        if let Some(rmt) = t.child(d, "RmtInf") {
            let ustrd = t.all(rmt, &["Ustrd"]).join(" ");
            let refs = t.all(rmt, &["Strd", "CdtrRefInf", "Ref"]);
            if let Some(r) = refs.first() {
                put(x, "creditor_reference", r);
            }
            let tp = t
                .get(rmt, &["Strd", "CdtrRefInf", "Tp", "CdOrPrtry", "Cd"])
                .or_else(|| t.get(rmt, &["Strd", "CdtrRefInf", "Tp", "CdOrPrtry", "Prtry"]));
            if let Some(tp) = tp {
                put(x, "creditor_reference_type", tp);
            }
            let docs = t.all(rmt, &["Strd", "RfrdDocInf", "Nb"]);
            if !docs.is_empty() {
                x.insert(
                    "referred_document_numbers".into(),
                    Value::Array(
                        docs.iter()
                            .map(|s| Value::String((*s).to_owned()))
                            .collect(),
                    ),
                );
            }
            let addl = t.all(rmt, &["Strd", "AddtlRmtInf"]).join(" ");
            put(x, "additional_remittance_info", &addl);
            tx.remittance_info = if !ustrd.is_empty() {
                Some(ustrd)
            } else if !addl.is_empty() {
                Some(addl)
            } else {
                refs.first().map(|s| (*s).to_owned())
            };
        }
        let addtl_tx = t.all(d, &["AddtlTxInf"]).join(" ");
        put(x, "additional_transaction_info", &addtl_tx);
        Ok(())
    }
}

/// `Domn/Cd-Fmly/Cd-Fmly/SubFmlyCd` (e.g. `PMNT-RCDT-ESCT`) and the
/// proprietary code (`Prtry/Cd`, with `@Issr` when given).
fn bank_tx_code(t: &Tree, n: usize) -> (Option<String>, Option<String>) {
    let Some(b) = t.child(n, "BkTxCd") else {
        return (None, None);
    };
    let prop = t
        .get(b, &["Prtry", "Cd"])
        .map(|c| match t.get(b, &["Prtry", "Issr"]) {
            Some(i) => format!("{c}@{i}"),
            None => c.to_owned(),
        });
    let domain = t.get(b, &["Domn", "Cd"]).map(|d| {
        let fam = t.get(b, &["Domn", "Fmly", "Cd"]).unwrap_or("");
        let sub = t.get(b, &["Domn", "Fmly", "SubFmlyCd"]).unwrap_or("");
        let mut s = d.to_owned();
        for p in [fam, sub] {
            if !p.is_empty() {
                s.push('-');
                s.push_str(p);
            }
        }
        s
    });
    match domain {
        Some(d) => (Some(d), prop),
        None => (t.get(b, &["Prtry", "Cd"]).map(str::to_owned), None),
    }
}

/// `YYYY-MM-DD` with an optional time or offset after it.
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    let d = s.get(..10)?;
    let rest = s.get(10..)?;
    if !(rest.is_empty() || rest.starts_with(['T', '+', '-', 'Z', ' '])) {
        return None;
    }
    let b = d.as_bytes();
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            part.iter()
                .fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0')),
        )
    };
    let y = i32::try_from(num(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(y, num(5..7)?, num(8..10)?)
}

/// ISO date-time; any offset is dropped (the bank's local time is kept).
pub(crate) fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    let core = match s.get(19..) {
        Some(rest) => {
            let cut = rest.find(['+', '-', 'Z']).map_or(s.len(), |p| 19 + p);
            s.get(..cut)?
        }
        None => s,
    };
    NaiveDateTime::parse_from_str(core, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .or_else(|| parse_date(s).and_then(|d| d.and_hms_opt(0, 0, 0)))
}
