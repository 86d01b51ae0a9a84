//! Transforms: the steps of a field's pipeline, compiled once and applied to
//! every record without parsing anything again.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use regex::Regex;
use rust_decimal::Decimal;
use serde_json::{Number, Value};

use super::parse::{self, DateFormat, DecimalFormat, RoundingMode, Zone};
use crate::model::EntityKind;

/// A value moving through a pipeline. Richer than JSON so that a parsed
/// decimal or date keeps its type between steps. Text and whole objects
/// borrow from the record (or the mapping) until a step changes them, so a
/// value that passes through clean is copied once, into the output.
#[derive(Debug, Clone, PartialEq)]
pub enum V<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    Dec(Decimal),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
    List(Vec<V<'a>>),
    /// An object or array taken whole.
    Json(Cow<'a, Value>),
}

impl<'a> V<'a> {
    /// A view of `value`, borrowing its text.
    pub fn from_json(value: &'a Value) -> V<'a> {
        match value {
            Value::Null => V::Null,
            Value::Bool(b) => V::Bool(*b),
            Value::Number(n) => V::Num(n.clone()),
            Value::String(s) => V::Str(Cow::Borrowed(s)),
            other => V::Json(Cow::Borrowed(other)),
        }
    }

    /// Owned text.
    pub fn text(s: impl Into<String>) -> V<'a> {
        V::Str(Cow::Owned(s.into()))
    }

    /// Into JSON: decimals as exact strings, dates as ISO 8601.
    pub fn into_json(self) -> Value {
        match self {
            V::Null => Value::Null,
            V::Bool(b) => Value::Bool(b),
            V::Num(n) => Value::Number(n),
            V::Str(s) => Value::String(s.into_owned()),
            V::Dec(d) => Value::String(shown_as_text(&d)),
            V::Date(d) => Value::String(iso_date(d)),
            V::DateTime(t) => Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            V::List(items) => Value::Array(items.into_iter().map(V::into_json).collect()),
            V::Json(j) => j.into_owned(),
        }
    }

    /// Missing or blank: what `required`, `default` and coalescing skip.
    pub fn is_empty(&self) -> bool {
        match self {
            V::Null => true,
            V::Str(s) => is_blank(s),
            V::List(l) => l.is_empty(),
            _ => false,
        }
    }

    /// A short rendering of the value for error messages.
    pub fn shown(&self) -> String {
        let text = match self {
            V::Str(s) => format!("{s:?}"),
            other => other.clone().into_json().to_string(),
        };
        cut(&text, 80)
    }

    fn kind_name(&self) -> &'static str {
        match self {
            V::Null => "null",
            V::Bool(_) => "bool",
            V::Num(_) => "number",
            V::Str(_) => "text",
            V::Dec(_) => "decimal",
            V::Date(_) => "date",
            V::DateTime(_) => "timestamp",
            V::List(_) => "list",
            V::Json(j) if j.is_array() => "array",
            V::Json(_) => "object",
        }
    }
}

/// Whether `byte` starts or ends text that `str::trim` leaves alone: an
/// ASCII character that is not white space.
fn is_solid(byte: u8) -> bool {
    byte.is_ascii() && !matches!(byte, b' ' | b'\t'..=b'\r')
}

/// `str::trim`, answered without decoding characters when the text starts
/// and ends with visible ASCII, as most values do.
pub fn trim(text: &str) -> &str {
    match text.as_bytes() {
        [first, .., last] if is_solid(*first) && is_solid(*last) => text,
        [only] if is_solid(*only) => text,
        _ => text.trim(),
    }
}

/// Empty or only white space.
pub fn is_blank(text: &str) -> bool {
    match text.as_bytes().first() {
        Some(first) if is_solid(*first) => false,
        _ => text.trim().is_empty(),
    }
}

/// `x.to_string()` with room for the text from the start.
fn shown_as_text(x: &impl std::fmt::Display) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(32);
    let _ = write!(text, "{x}");
    text
}

/// `YYYY-MM-DD`, as chrono's `%Y-%m-%d` writes it.
pub fn iso_date(d: NaiveDate) -> String {
    use chrono::Datelike;
    let year = d.year();
    if !(0..=9999).contains(&year) {
        // chrono signs years outside four digits.
        return d.format("%Y-%m-%d").to_string();
    }
    let digit = |n: u32| b'0' + (n % 10) as u8;
    let (y, m, day) = (year as u32, d.month(), d.day());
    let text = [
        digit(y / 1000),
        digit(y / 100),
        digit(y / 10),
        digit(y),
        b'-',
        digit(m / 10),
        digit(m),
        b'-',
        digit(day / 10),
        digit(day),
    ];
    text.iter().map(|&b| char::from(b)).collect()
}

/// Cuts `text` to at most `max` characters, marking the cut.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Static kinds for load-time checks of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Any,
    Text,
    Number,
    Bool,
    Decimal,
    Date,
    DateTime,
    List,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Any => "any value",
            Kind::Text => "text",
            Kind::Number => "number",
            Kind::Bool => "bool",
            Kind::Decimal => "decimal",
            Kind::Date => "date",
            Kind::DateTime => "timestamp",
            Kind::List => "list",
        }
    }
}

/// What a code table does with a value it does not list.
#[derive(Debug, Clone, PartialEq)]
pub enum Fallback {
    /// The record fails (the default: an unknown status is a question).
    Error,
    /// The value passes through unchanged.
    Pass,
    /// The value becomes this one.
    Default(Value),
}

/// A compiled code table.
#[derive(Debug)]
pub struct Table {
    pub name: String,
    pub entries: HashMap<String, Value>,
    pub ignore_case: bool,
    pub fallback: Fallback,
}

/// One compiled pipeline step.
#[derive(Debug, Clone)]
pub enum Op {
    Trim,
    Upper,
    Lower,
    Collapse,
    NullIfEmpty,
    /// Pattern, replacement, and the pattern as a character class when it
    /// is one (and the replacement refers to no group).
    Replace(Regex, String, Option<Box<CharClass>>),
    Extract(Regex),
    Split(String),
    Join(String),
    Prefix(String),
    Suffix(String),
    ToText,
    ToNumber,
    ToInt,
    ToBool,
    Decimal(DecimalFormat),
    MinorUnits(u32),
    Round(u32, RoundingMode),
    Neg,
    Abs,
    Date(DateFormat, Zone),
    DateTime(DateFormat, Zone),
    FormatDate(DateFormat, Zone),
    FormatDecimal(DecimalFormat),
    Email,
    Phone(Option<String>),
    Table(Arc<Table>),
    Lookup {
        entity: EntityKind,
        system: String,
    },
}

impl Op {
    /// The transform's name as written in mappings.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Trim => "trim",
            Op::Upper => "upper",
            Op::Lower => "lower",
            Op::Collapse => "collapse",
            Op::NullIfEmpty => "null_if_empty",
            Op::Replace(..) => "replace",
            Op::Extract(_) => "extract",
            Op::Split(_) => "split",
            Op::Join(_) => "join",
            Op::Prefix(_) => "prefix",
            Op::Suffix(_) => "suffix",
            Op::ToText => "text",
            Op::ToNumber => "number",
            Op::ToInt => "int",
            Op::ToBool => "bool",
            Op::Decimal(_) => "decimal",
            Op::MinorUnits(_) => "minor_units",
            Op::Round(..) => "round",
            Op::Neg => "neg",
            Op::Abs => "abs",
            Op::Date(..) => "date",
            Op::DateTime(..) => "datetime",
            Op::FormatDate(..) => "format_date",
            Op::FormatDecimal(_) => "format_decimal",
            Op::Email => "email",
            Op::Phone(_) => "phone",
            Op::Table(_) => "table",
            Op::Lookup { .. } => "lookup",
        }
    }

    /// The kinds this step accepts and the kind it produces, for load-time
    /// checks. `Any` input means the step checks at run time.
    pub fn signature(&self) -> (&'static [Kind], Kind) {
        use Kind::*;
        const TEXT: &[Kind] = &[Any, Text];
        const DEC: &[Kind] = &[Any, Text, Number, Decimal];
        const DATE: &[Kind] = &[Any, Text, Number];
        const DATED: &[Kind] = &[Any, Text, Date, DateTime];
        const ANY: &[Kind] = &[Any, Text, Number, Bool, Decimal, Date, DateTime, List];
        const SCALAR: &[Kind] = &[Any, Text, Number, Bool, Decimal, Date, DateTime];
        match self {
            Op::Trim | Op::Upper | Op::Lower | Op::Collapse | Op::Email | Op::Phone(_) => {
                (TEXT, Text)
            }
            Op::Replace(..) | Op::Extract(_) | Op::Prefix(_) | Op::Suffix(_) => (TEXT, Text),
            Op::NullIfEmpty => (ANY, Any),
            Op::Split(_) => (TEXT, List),
            Op::Join(_) => (&[Any, List], Text),
            Op::ToText => (SCALAR, Text),
            Op::ToNumber | Op::ToInt => (DEC, Number),
            Op::ToBool => (&[Any, Text, Number, Bool], Bool),
            Op::Decimal(_) | Op::MinorUnits(_) => (DEC, Decimal),
            Op::Round(..) | Op::Neg | Op::Abs => (DEC, Decimal),
            Op::Date(..) => (DATE, Date),
            Op::DateTime(..) => (DATE, DateTime),
            Op::FormatDate(..) => (DATED, Text),
            Op::FormatDecimal(_) => (DEC, Text),
            Op::Table(_) => (SCALAR, Any),
            Op::Lookup { .. } => (&[Any, Text, Number], Text),
        }
    }
}

/// A `replace` pattern that is one character class, alone (`[^A-Z0-9]`)
/// or repeated greedily (`\s+`), with a replacement that refers to no
/// group: the regex's `replace_all` is then a walk over the characters,
/// without a search per match.
#[derive(Debug, Clone)]
pub struct CharClass {
    /// Membership of the ASCII characters.
    ascii: [bool; 128],
    /// The class, as sorted, disjoint ranges.
    ranges: Vec<(char, char)>,
    /// A maximal run of members is one match (`C+`), not each member.
    runs: bool,
}

impl CharClass {
    /// The class of `pattern` (parsed as `Regex::new` parses it), if it is
    /// one and `with` has no `$`.
    pub fn of(pattern: &str, with: &str) -> Option<CharClass> {
        use regex_syntax::hir::{Class, HirKind};
        if with.contains('$') {
            return None;
        }
        let hir = regex_syntax::parse(pattern).ok()?;
        let (class, runs) = match hir.kind() {
            HirKind::Class(Class::Unicode(class)) => (class, false),
            HirKind::Repetition(r) if r.min == 1 && r.max.is_none() && r.greedy => {
                match r.sub.kind() {
                    HirKind::Class(Class::Unicode(class)) => (class, true),
                    _ => return None,
                }
            }
            _ => return None,
        };
        let ranges: Vec<(char, char)> = class
            .ranges()
            .iter()
            .map(|r| (r.start(), r.end()))
            .collect();
        let mut ascii = [false; 128];
        for (byte, member) in (0u8..).zip(ascii.iter_mut()) {
            let c = char::from(byte);
            *member = ranges.iter().any(|&(from, to)| from <= c && c <= to);
        }
        Some(CharClass {
            ascii,
            ranges,
            runs,
        })
    }

    fn contains(&self, c: char) -> bool {
        match self.ascii.get(c as usize) {
            Some(member) => *member,
            None => self
                .ranges
                .binary_search_by(|&(from, to)| {
                    if to < c {
                        std::cmp::Ordering::Less
                    } else if from > c {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Equal
                    }
                })
                .is_ok(),
        }
    }

    /// What the regex's `replace_all(text, with)` gives, or `None` when
    /// nothing matches.
    pub fn replace_all(&self, text: &str, with: &str) -> Option<String> {
        let mut out: Option<String> = None;
        // Text up to here is in `out` or replaced.
        let mut done = 0;
        let mut in_run = false;
        for (at, c) in text.char_indices() {
            if self.contains(c) {
                if !(self.runs && in_run) {
                    let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                    out.push_str(&text[done..at]);
                    out.push_str(with);
                }
                done = at + c.len_utf8();
                in_run = true;
            } else {
                in_run = false;
            }
        }
        let mut out = out?;
        out.push_str(&text[done..]);
        Some(out)
    }
}

/// How lookups are answered while applying a mapping.
pub trait Resolver {
    /// The id linked to `value` of `system` for `entity`: inbound, the
    /// canonical id of an external id; outbound, the external id of a
    /// canonical id. `None` when no link exists.
    fn resolve(&self, entity: EntityKind, system: &str, value: &str) -> Option<String>;
}

/// Lookups answered from a prepared map (batched from the store, or given
/// by a sidecar test).
#[derive(Debug, Default, Clone)]
pub struct Lookups {
    known: HashMap<(EntityKind, String, String), String>,
}

impl Lookups {
    pub fn insert(&mut self, entity: EntityKind, system: &str, value: &str, id: &str) {
        self.known
            .insert((entity, system.to_owned(), value.to_owned()), id.to_owned());
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

impl Resolver for Lookups {
    fn resolve(&self, entity: EntityKind, system: &str, value: &str) -> Option<String> {
        // Allocation-free probing would need a borrowed key type; lookups
        // are a small share of fields, so an owned key is fine here.
        self.known
            .get(&(entity, system.to_owned(), value.to_owned()))
            .cloned()
    }
}

/// A key a mapping needs resolved, collected before the batch look-up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LookupKey {
    pub entity: EntityKind,
    pub system: String,
    pub value: String,
}

/// Where lookups go during one application.
pub enum LookupMode<'a> {
    Resolve(&'a dyn Resolver),
    /// Record what would be looked up; the value passes through.
    Collect(&'a std::cell::RefCell<Vec<LookupKey>>),
}

/// Why a step failed on a value: the message names value and problem.
pub type StepError = String;

fn text_of<'v>(v: &'v V<'_>) -> Option<Cow<'v, str>> {
    match v {
        V::Str(s) => Some(Cow::Borrowed(s)),
        V::Num(n) => Some(Cow::Owned(shown_as_text(n))),
        V::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        V::Dec(d) => Some(Cow::Owned(shown_as_text(d))),
        V::Date(d) => Some(Cow::Owned(iso_date(*d))),
        V::DateTime(t) => Some(Cow::Owned(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))),
        _ => None,
    }
}

fn wrong_kind(op: &Op, v: &V<'_>) -> StepError {
    format!("{} cannot take {} {}", op.name(), v.kind_name(), v.shown())
}

fn number_decimal(n: &Number) -> Result<Decimal, StepError> {
    let text = n.to_string();
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| format!("{text} is not a decimal amount"))
}

fn as_decimal(op: &Op, v: &V<'_>) -> Result<Decimal, StepError> {
    match v {
        V::Dec(d) => Ok(*d),
        V::Num(n) => number_decimal(n),
        V::Str(s) => parse::parse_decimal(s, &DecimalFormat::plain()).map_err(|e| e.to_string()),
        other => Err(wrong_kind(op, other)),
    }
}

/// Applies one step. `Null` passes through every step but a `table` with a
/// default — a missing field is `required`'s business.
/// On failure the input comes back with the reason, so callers can show the
/// offending value without copying every value in advance.
pub fn apply<'a>(
    op: &'a Op,
    v: V<'a>,
    lookups: &LookupMode<'_>,
) -> Result<V<'a>, (StepError, V<'a>)> {
    if matches!(v, V::Null) {
        // Only a table with a default maps a missing value; otherwise a
        // missing value stays missing and `required` decides.
        return match op {
            Op::Table(t) => match &t.fallback {
                Fallback::Default(d) => Ok(V::from_json(d)),
                _ => Ok(V::Null),
            },
            _ => Ok(V::Null),
        };
    }
    // Lists from `split` or `all` flow element-wise through scalar steps.
    if let V::List(items) = v {
        if matches!(op, Op::Join(_) | Op::NullIfEmpty) {
            return apply_list(op, items).map_err(|e| (e, V::Null));
        }
        return items
            .into_iter()
            .map(|item| apply(op, item, lookups))
            .collect::<Result<Vec<_>, _>>()
            .map(V::List);
    }
    match step(op, &v, lookups) {
        Ok(Some(out)) => Ok(out),
        Ok(None) => Ok(v),
        Err(e) => Err((e, v)),
    }
}

/// One step on a scalar; `None` means the value passes unchanged.
fn step<'a>(op: &'a Op, v: &V<'a>, lookups: &LookupMode<'_>) -> Result<Option<V<'a>>, StepError> {
    Ok(Some(match op {
        // Text steps leave clean text alone instead of copying it: most
        // values are already trimmed, cased and single-spaced.
        Op::Trim => {
            let text = need_text(op, v)?;
            let trimmed = trim(&text);
            if trimmed.len() == text.len() && matches!(v, V::Str(_)) {
                return Ok(None);
            }
            if let V::Str(Cow::Borrowed(s)) = v {
                return Ok(Some(V::Str(Cow::Borrowed(trim(s)))));
            }
            V::text(trimmed)
        }
        Op::Upper => {
            let text = need_text(op, v)?;
            if matches!(v, V::Str(_)) && is_uppercase(&text) {
                return Ok(None);
            }
            V::text(text.to_uppercase())
        }
        Op::Lower => {
            let text = need_text(op, v)?;
            if matches!(v, V::Str(_)) && is_lowercase(&text) {
                return Ok(None);
            }
            V::text(text.to_lowercase())
        }
        Op::Collapse => {
            let text = need_text(op, v)?;
            // Already single-spaced: ASCII whose only white space is
            // single spaces between words (vertical tab included, which
            // `u8::is_ascii_whitespace` leaves out but `split_whitespace`
            // splits on).
            let bytes = text.as_bytes();
            let clean = text.is_ascii()
                && !bytes.iter().any(|b| matches!(b, b'\t'..=b'\r'))
                && !bytes.windows(2).any(|w| w == b"  ")
                && bytes.first() != Some(&b' ')
                && bytes.last() != Some(&b' ');
            if clean && matches!(v, V::Str(_)) {
                return Ok(None);
            }
            let mut collapsed = String::with_capacity(text.len());
            for word in text.split_whitespace() {
                if !collapsed.is_empty() {
                    collapsed.push(' ');
                }
                collapsed.push_str(word);
            }
            V::text(collapsed)
        }
        Op::NullIfEmpty => {
            if v.is_empty() {
                V::Null
            } else {
                return Ok(None);
            }
        }
        Op::Replace(re, with, class) => {
            let text = need_text(op, v)?;
            let replaced = match class {
                Some(class) => class.replace_all(&text, with),
                None => match re.replace_all(&text, with.as_str()) {
                    Cow::Borrowed(_) => None,
                    Cow::Owned(replaced) => Some(replaced),
                },
            };
            match replaced {
                None if matches!(v, V::Str(_)) => return Ok(None),
                None => V::text(text.into_owned()),
                Some(replaced) => V::text(replaced),
            }
        }
        Op::Extract(re) => {
            let text = need_text(op, v)?;
            match re.captures(&text) {
                Some(c) => V::text(c.get(1).or_else(|| c.get(0)).map_or("", |m| m.as_str())),
                None => V::Null,
            }
        }
        Op::Split(sep) => V::List(need_text(op, v)?.split(sep.as_str()).map(V::text).collect()),
        Op::Join(_) => return Ok(None),
        Op::Prefix(p) => V::text(format!("{p}{}", need_text(op, v)?)),
        Op::Suffix(s) => V::text(format!("{}{s}", need_text(op, v)?)),
        // Text stays as it is.
        Op::ToText if matches!(v, V::Str(_)) => return Ok(None),
        Op::ToText => V::text(text_of(v).ok_or_else(|| wrong_kind(op, v))?.into_owned()),
        Op::ToNumber => {
            let d = as_decimal(op, v)?;
            V::Num(exact_number(d)?)
        }
        Op::ToInt => {
            let d = as_decimal(op, v)?;
            if d.fract() != Decimal::ZERO {
                return Err(format!("{d} is not a whole number"));
            }
            let i = i64::try_from(d.trunc())
                .map_err(|_| format!("{d} is out of range for a whole number"))?;
            V::Num(Number::from(i))
        }
        Op::ToBool => match v {
            V::Bool(b) => V::Bool(*b),
            V::Num(n) => V::Bool(n.as_f64() != Some(0.0)),
            V::Str(s) => V::Bool(parse::parse_bool(s).map_err(|e| e.to_string())?),
            other => return Err(wrong_kind(op, other)),
        },
        Op::Decimal(fmt) => match v {
            V::Dec(d) => V::Dec(*d),
            V::Num(n) => V::Dec(number_decimal(n)?),
            V::Str(s) => V::Dec(parse::parse_decimal(s, fmt).map_err(|e| e.to_string())?),
            other => return Err(wrong_kind(op, other)),
        },
        Op::MinorUnits(scale) => match v {
            V::Str(s) => V::Dec(parse::parse_minor_units(s, *scale).map_err(|e| e.to_string())?),
            V::Num(n) => match n.as_i64() {
                Some(units) => V::Dec(parse::from_minor_units(units, *scale)),
                None => return Err(format!("{n} is not a whole number of minor units")),
            },
            other => return Err(wrong_kind(op, other)),
        },
        Op::Round(scale, mode) => V::Dec(parse::round(as_decimal(op, v)?, *scale, *mode)),
        Op::Neg => V::Dec(-as_decimal(op, v)?),
        Op::Abs => V::Dec(as_decimal(op, v)?.abs()),
        Op::Date(fmt, zone) => match v {
            V::Date(d) => V::Date(*d),
            V::DateTime(t) => V::Date(zone.date_of(*t)),
            _ => {
                let text = text_of(v).ok_or_else(|| wrong_kind(op, v))?;
                V::Date(parse::parse_date(&text, fmt, zone).map_err(|e| e.to_string())?)
            }
        },
        Op::DateTime(fmt, zone) => match v {
            V::DateTime(t) => V::DateTime(*t),
            _ => {
                let text = text_of(v).ok_or_else(|| wrong_kind(op, v))?;
                V::DateTime(parse::parse_datetime(&text, fmt, zone).map_err(|e| e.to_string())?)
            }
        },
        Op::FormatDate(fmt, zone) => match v {
            V::Date(d) => V::text(parse::format_date(*d, fmt)),
            V::DateTime(t) => V::text(parse::format_datetime(*t, fmt, zone)),
            V::Str(s) => {
                // Canonical dates are ISO text; read them back first.
                if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                    V::text(parse::format_date(d, fmt))
                } else {
                    let t = parse::parse_datetime(s, &DateFormat::Iso, zone)
                        .map_err(|e| e.to_string())?;
                    V::text(parse::format_datetime(t, fmt, zone))
                }
            }
            other => return Err(wrong_kind(op, other)),
        },
        Op::FormatDecimal(fmt) => V::text(parse::format_decimal(as_decimal(op, v)?, fmt)),
        Op::Email => {
            V::text(parse::normalize_email(&need_text(op, v)?).map_err(|e| e.to_string())?)
        }
        Op::Phone(country) => V::text(
            parse::normalize_phone(&need_text(op, v)?, country.as_deref())
                .map_err(|e| e.to_string())?,
        ),
        Op::Table(table) => return table_lookup(table, v),
        Op::Lookup { entity, system } => {
            let key = text_of(v).ok_or_else(|| wrong_kind(op, v))?;
            match lookups {
                LookupMode::Collect(keys) => {
                    keys.borrow_mut().push(LookupKey {
                        entity: *entity,
                        system: system.clone(),
                        value: key.into_owned(),
                    });
                    return Ok(None);
                }
                LookupMode::Resolve(resolver) => match resolver.resolve(*entity, system, &key) {
                    Some(id) => V::text(id),
                    None => {
                        return Err(format!(
                            "no {entity} of {system} is linked to {:?}",
                            cut(&key, 80)
                        ));
                    }
                },
            }
        }
    }))
}

fn apply_list<'a>(op: &Op, items: Vec<V<'a>>) -> Result<V<'a>, StepError> {
    match op {
        Op::Join(sep) => {
            let parts: Vec<String> = items
                .iter()
                .filter(|v| !v.is_empty())
                .filter_map(|v| text_of(v).map(|t| t.trim().to_owned()))
                .collect();
            Ok(if parts.is_empty() {
                V::Null
            } else {
                V::text(parts.join(sep))
            })
        }
        _ => {
            let list = V::List(items);
            Ok(if list.is_empty() { V::Null } else { list })
        }
    }
}

fn need_text<'v>(op: &Op, v: &'v V<'_>) -> Result<Cow<'v, str>, StepError> {
    match v {
        V::Str(s) => Ok(Cow::Borrowed(s)),
        V::Num(_) | V::Bool(_) | V::Dec(_) => Ok(text_of(v).unwrap_or_default()),
        other => Err(wrong_kind(op, other)),
    }
}

fn table_lookup<'a>(table: &'a Table, v: &V<'a>) -> Result<Option<V<'a>>, StepError> {
    let found = if matches!(v, V::Null) {
        None
    } else {
        text_of(v).and_then(|t| {
            let key = trim(&t);
            if !table.ignore_case || is_lowercase(key) {
                return table.entries.get(key);
            }
            // Short ASCII keys are lowered on the stack.
            let mut buf = [0u8; 64];
            match buf.get_mut(..key.len()) {
                Some(lowered) if key.is_ascii() => {
                    lowered.copy_from_slice(key.as_bytes());
                    lowered.make_ascii_lowercase();
                    std::str::from_utf8(lowered)
                        .ok()
                        .and_then(|k| table.entries.get(k))
                }
                _ => table.entries.get(&key.to_lowercase()),
            }
        })
    };
    if let Some(found) = found {
        return Ok(Some(V::from_json(found)));
    }
    match &table.fallback {
        Fallback::Pass => Ok(None),
        Fallback::Default(value) => Ok(Some(V::from_json(value))),
        Fallback::Error => Err(format!("{} is not in table {:?}", v.shown(), table.name)),
    }
}

/// Whether `str::to_uppercase` would leave `text` as it is. Not the same
/// as having no lowercase letter: title-case letters such as `ǅ` change too.
fn is_uppercase(text: &str) -> bool {
    if text.is_ascii() {
        return !text.bytes().any(|b| b.is_ascii_lowercase());
    }
    text.chars().all(|c| {
        let mut upper = c.to_uppercase();
        upper.next() == Some(c) && upper.next().is_none()
    })
}

/// Whether `str::to_lowercase` would leave `text` as it is, so `lower`
/// keeps it and a table is probed without a lowered copy. Not the same as
/// having no uppercase letter: title-case letters such as `ǅ` change too.
fn is_lowercase(text: &str) -> bool {
    if text.is_ascii() {
        return !text.bytes().any(|b| b.is_ascii_uppercase());
    }
    text.chars().all(|c| {
        let mut lower = c.to_lowercase();
        lower.next() == Some(c) && lower.next().is_none()
    })
}

/// A JSON number that reads back as exactly `d`, or an error: outbound
/// systems that want numbers get them only when no digit is lost.
fn exact_number(d: Decimal) -> Result<Number, StepError> {
    if d.fract().is_zero()
        && let Ok(i) = i64::try_from(d.trunc())
    {
        return Ok(Number::from(i));
    }
    let f: f64 = d
        .to_string()
        .parse()
        .map_err(|_| format!("{d} is not a number"))?;
    let back = Decimal::from_str(&f.to_string()).ok();
    match (Number::from_f64(f), back) {
        (Some(n), Some(b)) if b == d => Ok(n),
        _ => Err(format!(
            "{d} cannot be written as a JSON number without losing digits; send it as text"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(op: Op, v: V<'_>) -> Result<V<'static>, StepError> {
        apply(&op, v, &LookupMode::Resolve(&Lookups::default()))
            .map(owned)
            .map_err(|(e, _)| e)
    }

    /// The value with nothing borrowed, to outlive the step's op.
    fn owned(v: V<'_>) -> V<'static> {
        match v {
            V::Null => V::Null,
            V::Bool(b) => V::Bool(b),
            V::Num(n) => V::Num(n),
            V::Str(s) => V::text(s.into_owned()),
            V::Dec(d) => V::Dec(d),
            V::Date(d) => V::Date(d),
            V::DateTime(t) => V::DateTime(t),
            V::List(items) => V::List(items.into_iter().map(owned).collect()),
            V::Json(j) => V::Json(Cow::Owned(j.into_owned())),
        }
    }

    fn s(x: &str) -> V<'static> {
        V::text(x)
    }

    fn dec(x: &str) -> V<'static> {
        V::Dec(Decimal::from_str(x).unwrap())
    }

    #[test]
    fn text_steps() {
        assert_eq!(run(Op::Trim, s("  a b ")), Ok(s("a b")));
        assert_eq!(run(Op::Upper, s("eur")), Ok(s("EUR")));
        assert_eq!(run(Op::Lower, s("ÄB")), Ok(s("äb")));
        assert_eq!(run(Op::Collapse, s(" a \t b\n c ")), Ok(s("a b c")));
        // Title-case letters change both ways.
        assert_eq!(run(Op::Lower, s("ǅ")), Ok(s("ǆ")));
        assert_eq!(run(Op::Upper, s("ǅ")), Ok(s("Ǆ")));
        // A vertical tab is white space too.
        assert_eq!(run(Op::Collapse, s("a\u{b}b")), Ok(s("a b")));
        let re = Regex::new(r"[^0-9]").unwrap();
        assert_eq!(
            run(Op::Replace(re, String::new(), None), s("+49 (30) 1")),
            Ok(s("49301"))
        );
        let re = Regex::new(r"INV-(\d+)").unwrap();
        assert_eq!(
            run(Op::Extract(re.clone()), s("pay INV-0042 now")),
            Ok(s("0042"))
        );
        assert_eq!(run(Op::Extract(re), s("nothing")), Ok(V::Null));
        assert_eq!(
            run(Op::Split(",".into()), s("a,b")),
            Ok(V::List(vec![s("a"), s("b")]))
        );
        assert_eq!(
            run(
                Op::Join(" ".into()),
                V::List(vec![s("Ada"), V::Null, s(" Lovelace")])
            ),
            Ok(s("Ada Lovelace"))
        );
        assert_eq!(run(Op::Prefix("RF".into()), s("18")), Ok(s("RF18")));
        assert_eq!(run(Op::NullIfEmpty, s("  ")), Ok(V::Null));
        assert_eq!(run(Op::Trim, V::Null), Ok(V::Null));
        assert!(run(Op::Upper, V::Json(Cow::Owned(serde_json::json!({"a": 1})))).is_err());
    }

    #[test]
    fn coercions() {
        assert_eq!(run(Op::ToText, V::Num(Number::from(42))), Ok(s("42")));
        assert_eq!(run(Op::ToInt, s("42")), Ok(V::Num(Number::from(42))));
        assert!(run(Op::ToInt, s("4.2")).is_err());
        assert_eq!(run(Op::ToBool, s("ja")), Ok(V::Bool(true)));
        assert_eq!(
            run(Op::ToNumber, dec("100.50")).map(V::into_json),
            Ok(serde_json::json!(100.5))
        );
        assert!(run(Op::ToNumber, dec("12345678901234567.89")).is_err());
        assert_eq!(
            run(
                Op::Decimal(DecimalFormat::plain()),
                V::Num(Number::from_f64(0.1).unwrap())
            ),
            Ok(dec("0.1"))
        );
        assert_eq!(
            run(Op::MinorUnits(2), V::Num(Number::from(12345))),
            Ok(dec("123.45"))
        );
        assert_eq!(
            run(Op::Round(2, RoundingMode::HalfUp), dec("2.345")),
            Ok(dec("2.35"))
        );
        assert_eq!(
            run(Op::Round(2, RoundingMode::HalfEven), dec("2.345")),
            Ok(dec("2.34"))
        );
        assert_eq!(run(Op::Neg, dec("1.5")), Ok(dec("-1.5")));
        assert_eq!(
            run(
                Op::ToText,
                V::Date(NaiveDate::from_ymd_opt(2026, 11, 28).unwrap())
            ),
            Ok(s("2026-11-28"))
        );
    }

    #[test]
    fn tables_and_fallbacks() {
        let mut entries = HashMap::new();
        entries.insert("authorised".to_owned(), serde_json::json!("open"));
        let mut table = Table {
            name: "status".into(),
            entries,
            ignore_case: true,
            fallback: Fallback::Error,
        };
        assert_eq!(
            run(
                Op::Table(Arc::new(Table {
                    ..clone_table(&table)
                })),
                s("AUTHORISED")
            ),
            Ok(s("open"))
        );
        let err = run(Op::Table(Arc::new(clone_table(&table))), s("DELETED")).unwrap_err();
        assert!(
            err.contains("\"DELETED\" is not in table \"status\""),
            "{err}"
        );
        table.fallback = Fallback::Pass;
        assert_eq!(
            run(Op::Table(Arc::new(clone_table(&table))), s("X")),
            Ok(s("X"))
        );
        table.fallback = Fallback::Default(serde_json::json!("draft"));
        assert_eq!(
            run(Op::Table(Arc::new(clone_table(&table))), V::Null),
            Ok(s("draft"))
        );
    }

    fn clone_table(t: &Table) -> Table {
        Table {
            name: t.name.clone(),
            entries: t.entries.clone(),
            ignore_case: t.ignore_case,
            fallback: t.fallback.clone(),
        }
    }

    #[test]
    fn lookups_resolve_or_fail() {
        let mut lookups = Lookups::default();
        lookups.insert(EntityKind::Customer, "xero", "c-1", "id-1");
        let op = Op::Lookup {
            entity: EntityKind::Customer,
            system: "xero".into(),
        };
        let mode = LookupMode::Resolve(&lookups);
        assert_eq!(apply(&op, s("c-1"), &mode), Ok(s("id-1")));
        let (err, input) = apply(&op, s("c-2"), &mode).unwrap_err();
        assert_eq!(input, s("c-2"));
        assert!(
            err.contains("no customer of xero is linked to \"c-2\""),
            "{err}"
        );
        let keys = std::cell::RefCell::new(Vec::new());
        apply(&op, s("c-9"), &LookupMode::Collect(&keys)).unwrap();
        assert_eq!(keys.borrow()[0].value, "c-9");
    }

    mod shortcuts {
        //! The allocation-free shortcuts give exactly what the std and
        //! chrono functions they stand for give.
        use super::super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[ \t\n\x0B\x0C\rA-Za-z0-9]{0,8}",
                "\\PC{0,8}",
                "[ \u{85}\u{a0}\u{2003}\u{3000}aÄßǅǈΣσ\u{345}İ]{0,6}",
                "[a-zäöüA-Z0-9 ._-]{0,10}",
            ]
        }

        proptest! {
            #[test]
            fn trim_and_blank(s in text()) {
                prop_assert_eq!(trim(&s), s.trim());
                prop_assert_eq!(is_blank(&s), s.trim().is_empty());
            }

            #[test]
            fn case_checks(s in text()) {
                prop_assert_eq!(is_lowercase(&s), s.to_lowercase() == s);
                prop_assert_eq!(is_uppercase(&s), s.to_uppercase() == s);
            }

            #[test]
            fn upper_and_lower(s in text()) {
                for (op, want) in [(Op::Upper, s.to_uppercase()), (Op::Lower, s.to_lowercase())] {
                    let got = apply(&op, V::text(s.clone()), &LookupMode::Collect(&Default::default()));
                    prop_assert_eq!(got, Ok(V::text(want)));
                }
            }

            #[test]
            fn collapse(s in text()) {
                let expected = s.split_whitespace().collect::<Vec<_>>().join(" ");
                let got = step(&Op::Collapse, &V::text(s.clone()), &LookupMode::Collect(&Default::default()));
                match got {
                    Ok(Some(V::Str(c))) => prop_assert_eq!(c.as_ref(), expected.as_str()),
                    Ok(None) => prop_assert_eq!(s, expected),
                    other => prop_assert!(false, "{other:?}"),
                }
            }

            #[test]
            fn iso_dates(days in -3_000_000i32..3_000_000) {
                let d = NaiveDate::from_num_days_from_ce_opt(days).unwrap();
                prop_assert_eq!(iso_date(d), d.format("%Y-%m-%d").to_string());
            }
        }

        const PATTERNS: &[&str] = &[
            "[^A-Z0-9]",
            "\\s+",
            "\\s",
            "[aeiou]+",
            "(?i)[a-z]",
            "\\d+",
            "[^\\d]",
            ".",
            ".+",
            "\\W+",
            "[ä-ü]+",
            "\\p{L}",
            "[^\\p{L}\\s]+",
            "(?U)\\s+",
            "[a-z]*",
            "[a-z]{2}",
            "[a]",
            "a+",
            "(\\s)",
            "[\\x{85}\\x{3000}]+",
            "(?-u:[a-z])",
        ];

        #[test]
        fn char_classes_are_recognised() {
            let fast: Vec<&str> = PATTERNS
                .iter()
                .copied()
                .filter(|p| CharClass::of(p, "-").is_some())
                .collect();
            assert_eq!(
                fast,
                [
                    "[^A-Z0-9]",
                    "\\s+",
                    "\\s",
                    "[aeiou]+",
                    "(?i)[a-z]",
                    "\\d+",
                    "[^\\d]",
                    ".",
                    ".+",
                    "\\W+",
                    "[ä-ü]+",
                    "\\p{L}",
                    "[^\\p{L}\\s]+",
                    "[\\x{85}\\x{3000}]+",
                ]
            );
            assert!(CharClass::of("\\s+", "$0").is_none());
        }

        proptest! {
            #[test]
            fn char_classes_replace_like_the_regex(
                pattern in prop::sample::select(PATTERNS),
                with in prop::sample::select(vec!["", "-", "__", "ä"]),
                s in text(),
            ) {
                let re = Regex::new(pattern).unwrap();
                if let Some(class) = CharClass::of(pattern, with) {
                    let expected = match re.replace_all(&s, with) {
                        Cow::Borrowed(_) => None,
                        Cow::Owned(r) => Some(r),
                    };
                    prop_assert_eq!(class.replace_all(&s, with), expected);
                }
            }
        }

        #[test]
        fn tables_ignore_case_on_and_off_the_stack() {
            let mut entries = HashMap::new();
            entries.insert("deutschland".to_owned(), serde_json::json!("DE"));
            entries.insert("österreich".to_owned(), serde_json::json!("AT"));
            let long = "x".repeat(70);
            entries.insert(long.clone(), serde_json::json!("X"));
            let table = Table {
                name: "country".into(),
                entries,
                ignore_case: true,
                fallback: Fallback::Error,
            };
            for (input, want) in [
                (" Deutschland ", "DE"),
                ("deutschland", "DE"),
                ("ÖSTERREICH", "AT"),
                (long.to_uppercase().as_str(), "X"),
            ] {
                let got = table_lookup(&table, &V::text(input)).unwrap();
                prop_assert_eq_helper(got, want);
            }
            assert!(table_lookup(&table, &V::text("Germany")).is_err());
        }

        fn prop_assert_eq_helper(got: Option<V<'_>>, want: &str) {
            assert_eq!(got, Some(V::Str(Cow::Borrowed(want))));
        }
    }
}
