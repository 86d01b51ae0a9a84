//! A small expression language for `when` conditions, computed fields and
//! cross-field validation rules.
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | cmp
//! cmp     := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum)?
//! sum     := product (("+" | "-") product)*
//! product := unary (("*" | "/") unary)*
//! unary   := "-" unary | atom
//! atom    := number | 'text' | "text" | true | false | null
//!          | name "(" [expr ("," expr)*] ")" | path | "(" expr ")"
//! path    := name ("." name | "[" digits "]" | "[*]")*
//! ```
//!
//! Numbers are exact decimals. Comparisons are numeric when both sides read
//! as decimals, by date when both read as ISO dates, otherwise textual. A
//! missing field makes a comparison or arithmetic *unknown* (null): a `when`
//! that is unknown does not apply, and a validation rule that is unknown
//! passes — "due_date >= issue_date" says nothing about a record without a
//! due date; `required` is the rule for that.
//!
//! Functions: `sum(path[*]…)`, `count(x)`, `exists(path)`, `empty(x)`,
//! `coalesce(a, b, …)`, `abs(x)`, `round(x, scale)`, `lower(x)`, `upper(x)`,
//! `len(x)`.

use std::cmp::Ordering;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

/// A compiled expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Lit),
    Path(Vec<Step>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Null,
    Bool(bool),
    Dec(Decimal),
    Str(String),
}

/// One step of a path inside an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Key(String),
    Index(usize),
    /// Every element of an array.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Sum,
    Count,
    Exists,
    Empty,
    Coalesce,
    Abs,
    Round,
    Lower,
    Upper,
    Len,
    If,
    Concat,
}

impl Func {
    fn by_name(name: &str) -> Option<(Func, usize, usize)> {
        // (function, min args, max args)
        Some(match name {
            "sum" => (Func::Sum, 1, usize::MAX),
            "count" => (Func::Count, 1, 1),
            "exists" => (Func::Exists, 1, 1),
            "empty" => (Func::Empty, 1, 1),
            "coalesce" => (Func::Coalesce, 1, usize::MAX),
            "abs" => (Func::Abs, 1, 1),
            "round" => (Func::Round, 2, 2),
            "lower" => (Func::Lower, 1, 1),
            "upper" => (Func::Upper, 1, 1),
            "len" => (Func::Len, 1, 1),
            "if" => (Func::If, 3, 3),
            "concat" => (Func::Concat, 1, usize::MAX),
            _ => return None,
        })
    }
}

/// Why an expression does not parse, with the character offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at character {offset}: {message}")]
pub struct ExprError {
    pub offset: usize,
    pub message: String,
}

/// Parses `source` into an expression.
pub fn parse(source: &str) -> Result<Expr, ExprError> {
    let tokens = lex(source)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let expr = p.or()?;
    if let Some((offset, tok)) = p.tokens.get(p.pos) {
        return Err(ExprError {
            offset: *offset,
            message: format!("unexpected {tok} after the end of the expression"),
        });
    }
    Ok(expr)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(Decimal),
    Str(String),
    Ident(String),
    Op(&'static str),
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Num(n) => write!(f, "number {n}"),
            Tok::Str(s) => write!(f, "text {s:?}"),
            Tok::Ident(s) => write!(f, "{s:?}"),
            Tok::Op(o) => write!(f, "{o:?}"),
        }
    }
}

const OPS: &[&str] = &[
    "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "(", ")", ",", ".", "[", "]",
];

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let mut out = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let text = &src[start..i];
            let n = Decimal::from_str(text).map_err(|_| ExprError {
                offset: start,
                message: format!("{text:?} is not a number"),
            })?;
            out.push((start, Tok::Num(n)));
        } else if c == b'\'' || c == b'"' {
            let start = i;
            i += 1;
            let mut s = String::new();
            loop {
                let Some(ch) = src[i..].chars().next() else {
                    return Err(ExprError {
                        offset: start,
                        message: "unterminated text".into(),
                    });
                };
                i += ch.len_utf8();
                if ch as u32 == u32::from(c) {
                    break;
                }
                if ch == '\\'
                    && let Some(next) = src[i..].chars().next()
                {
                    i += next.len_utf8();
                    s.push(next);
                    continue;
                }
                s.push(ch);
            }
            out.push((start, Tok::Str(s)));
        } else if src[i..]
            .chars()
            .next()
            .is_some_and(|ch| ch.is_alphabetic() || ch == '_')
        {
            let start = i;
            while i < bytes.len() {
                let ch = src[i..].chars().next().unwrap_or(' ');
                if ch.is_alphanumeric() || ch == '_' || ch == '$' || ch == '@' {
                    i += ch.len_utf8();
                } else {
                    break;
                }
            }
            out.push((start, Tok::Ident(src[start..i].to_owned())));
        } else if let Some(op) = OPS.iter().find(|op| src[i..].starts_with(**op)) {
            out.push((i, Tok::Op(op)));
            i += op.len();
        } else {
            let ch = src[i..].chars().next().unwrap_or('?');
            return Err(ExprError {
                offset: i,
                message: format!("unexpected character {ch:?}"),
            });
        }
    }
    Ok(out)
}

/// Nesting beyond this is refused rather than risking the stack.
const MAX_DEPTH: usize = 64;

struct Parser {
    tokens: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.tokens
            .get(self.pos)
            .or(self.tokens.last())
            .map_or(0, |(o, _)| *o)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(w)) if w == word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, ExprError> {
        Err(ExprError {
            offset: self.offset(),
            message: message.into(),
        })
    }

    fn expect_op(&mut self, op: &str) -> Result<(), ExprError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            match self.peek() {
                Some(t) => self.error(format!("expected {op:?}, found {t}")),
                None => self.error(format!("expected {op:?} at the end")),
            }
        }
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.error("expression nests too deeply");
        }
        let mut left = self.and()?;
        while self.eat_word("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.not()?;
        while self.eat_word("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.eat_word("not") {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return self.error("expression nests too deeply");
            }
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, ExprError> {
        let left = self.sum()?;
        let op = match self.peek() {
            Some(Tok::Op("==")) => CmpOp::Eq,
            Some(Tok::Op("!=")) => CmpOp::Ne,
            Some(Tok::Op("<")) => CmpOp::Lt,
            Some(Tok::Op("<=")) => CmpOp::Le,
            Some(Tok::Op(">")) => CmpOp::Gt,
            Some(Tok::Op(">=")) => CmpOp::Ge,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.sum()?;
        Ok(Expr::Cmp(op, Box::new(left), Box::new(right)))
    }

    fn sum(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.product()?;
        loop {
            let op = if self.eat_op("+") {
                ArithOp::Add
            } else if self.eat_op("-") {
                ArithOp::Sub
            } else {
                return Ok(left);
            };
            left = Expr::Arith(op, Box::new(left), Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat_op("*") {
                ArithOp::Mul
            } else if self.eat_op("/") {
                ArithOp::Div
            } else {
                return Ok(left);
            };
            left = Expr::Arith(op, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat_op("-") {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return self.error("expression nests too deeply");
            }
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Neg(Box::new(inner)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, ExprError> {
        let Some((_, tok)) = self.tokens.get(self.pos).cloned() else {
            return self.error("expression ends too early");
        };
        self.pos += 1;
        match tok {
            Tok::Num(n) => Ok(Expr::Lit(Lit::Dec(n))),
            Tok::Str(s) => Ok(Expr::Lit(Lit::Str(s))),
            Tok::Op("(") => {
                let inner = self.or()?;
                self.expect_op(")")?;
                Ok(inner)
            }
            Tok::Op(op) => {
                self.pos -= 1;
                self.error(format!("unexpected {op:?}"))
            }
            Tok::Ident(word) => match word.as_str() {
                "true" => Ok(Expr::Lit(Lit::Bool(true))),
                "false" => Ok(Expr::Lit(Lit::Bool(false))),
                "null" => Ok(Expr::Lit(Lit::Null)),
                _ if self.eat_op("(") => self.call(&word),
                _ => self.path(word),
            },
        }
    }

    fn call(&mut self, name: &str) -> Result<Expr, ExprError> {
        let Some((func, min, max)) = Func::by_name(name) else {
            // Point at the name, before its "(".
            self.pos = self.pos.saturating_sub(2);
            return self.error(format!(
                "unknown function {name:?}; known: sum, count, exists, empty, coalesce, abs, round, lower, upper, len, if, concat"
            ));
        };
        let mut args = Vec::new();
        if !self.eat_op(")") {
            loop {
                args.push(self.or()?);
                if self.eat_op(")") {
                    break;
                }
                self.expect_op(",")?;
            }
        }
        if args.len() < min || args.len() > max {
            return self.error(format!(
                "{name}() takes {}, not {}",
                if min == max {
                    format!("{min} argument(s)")
                } else {
                    format!("at least {min} argument(s)")
                },
                args.len()
            ));
        }
        Ok(Expr::Call(func, args))
    }

    fn path(&mut self, first: String) -> Result<Expr, ExprError> {
        let mut steps = vec![Step::Key(first)];
        loop {
            if self.eat_op(".") {
                match self.tokens.get(self.pos).cloned() {
                    Some((_, Tok::Ident(k))) => {
                        self.pos += 1;
                        steps.push(Step::Key(k));
                    }
                    _ => return self.error("expected a field name after \".\""),
                }
            } else if self.eat_op("[") {
                if self.eat_op("*") {
                    steps.push(Step::All);
                } else {
                    match self.tokens.get(self.pos).cloned() {
                        Some((_, Tok::Num(n))) if n.scale() == 0 && n >= Decimal::ZERO => {
                            self.pos += 1;
                            let index = usize::try_from(n.mantissa()).unwrap_or(usize::MAX);
                            steps.push(Step::Index(index));
                        }
                        _ => return self.error("expected an index or * inside [ ]"),
                    }
                }
                self.expect_op("]")?;
            } else {
                return Ok(Expr::Path(steps));
            }
        }
    }
}

/// The value of an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    Dec(Decimal),
    Str(String),
    /// Several values, from a `[*]` path.
    Many(Vec<Val>),
    /// An object or array taken whole.
    Json(Value),
}

impl Val {
    fn from_json(v: &Value) -> Val {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            // Numbers become exact decimals through their text.
            Value::Number(n) => Decimal::from_str(&n.to_string())
                .or_else(|_| Decimal::from_scientific(&n.to_string()))
                .map_or(Val::Null, Val::Dec),
            Value::String(s) => Val::Str(s.clone()),
            other => Val::Json(other.clone()),
        }
    }

    fn as_dec(&self) -> Option<Decimal> {
        match self {
            Val::Dec(d) => Some(*d),
            Val::Str(s) => Decimal::from_str(s.trim()).ok(),
            _ => None,
        }
    }

    fn as_date(&self) -> Option<NaiveDate> {
        match self {
            Val::Str(s) => NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok(),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Val::Null => true,
            Val::Str(s) => s.trim().is_empty(),
            Val::Many(v) => v.is_empty(),
            Val::Json(Value::Array(a)) => a.is_empty(),
            Val::Json(Value::Object(o)) => o.is_empty(),
            _ => false,
        }
    }

    /// Truthiness for `when`, `and`, `or` and rules: only `true` is true.
    pub fn is_true(&self) -> bool {
        matches!(self, Val::Bool(true))
    }

    /// The value as JSON (decimals as exact strings).
    pub fn into_json(self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(b),
            Val::Dec(d) => Value::String(d.to_string()),
            Val::Str(s) => Value::String(s),
            Val::Many(v) => Value::Array(v.into_iter().map(Val::into_json).collect()),
            Val::Json(j) => j,
        }
    }
}

/// Why evaluation failed (division by zero, overflow, a non-number in
/// arithmetic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

impl Expr {
    /// Evaluates against `record`.
    pub fn eval(&self, record: &Value) -> Result<Val, EvalError> {
        Ok(match self {
            Expr::Lit(Lit::Null) => Val::Null,
            Expr::Lit(Lit::Bool(b)) => Val::Bool(*b),
            Expr::Lit(Lit::Dec(d)) => Val::Dec(*d),
            Expr::Lit(Lit::Str(s)) => Val::Str(s.clone()),
            Expr::Path(steps) => resolve(steps, record),
            Expr::Not(e) => match e.eval(record)? {
                Val::Bool(b) => Val::Bool(!b),
                _ => Val::Null,
            },
            Expr::Neg(e) => match e.eval(record)? {
                Val::Null => Val::Null,
                v => Val::Dec(-v.as_dec().ok_or_else(|| not_a_number(&v))?),
            },
            Expr::And(a, b) => match a.eval(record)? {
                Val::Bool(false) => Val::Bool(false),
                Val::Bool(true) => match b.eval(record)? {
                    Val::Bool(x) => Val::Bool(x),
                    _ => Val::Null,
                },
                _ => match b.eval(record)? {
                    Val::Bool(false) => Val::Bool(false),
                    _ => Val::Null,
                },
            },
            Expr::Or(a, b) => match a.eval(record)? {
                Val::Bool(true) => Val::Bool(true),
                left => match b.eval(record)? {
                    Val::Bool(true) => Val::Bool(true),
                    Val::Bool(false) if left == Val::Bool(false) => Val::Bool(false),
                    _ => Val::Null,
                },
            },
            Expr::Cmp(op, a, b) => compare(*op, a.eval(record)?, b.eval(record)?),
            Expr::Arith(op, a, b) => arith(*op, a.eval(record)?, b.eval(record)?)?,
            Expr::Call(f, args) => call(*f, args, record)?,
        })
    }

    /// Drops `key` from the front of every path that starts with it and
    /// goes on (`extra.domain` → `domain`).
    pub fn strip_leading_key(&mut self, key: &str) {
        match self {
            Expr::Lit(_) => {}
            Expr::Path(steps) => {
                if steps.len() > 1 && matches!(&steps[0], Step::Key(k) if k == key) {
                    steps.remove(0);
                }
            }
            Expr::Not(e) | Expr::Neg(e) => e.strip_leading_key(key),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) | Expr::Arith(_, a, b) => {
                a.strip_leading_key(key);
                b.strip_leading_key(key);
            }
            Expr::Call(_, args) => args.iter_mut().for_each(|a| a.strip_leading_key(key)),
        }
    }

    /// Every path the expression reads, as written (for load-time checks).
    pub fn paths(&self) -> Vec<&[Step]> {
        let mut out = Vec::new();
        self.collect_paths(&mut out);
        out
    }

    fn collect_paths<'a>(&'a self, out: &mut Vec<&'a [Step]>) {
        match self {
            Expr::Lit(_) => {}
            Expr::Path(p) => out.push(p),
            Expr::Not(e) | Expr::Neg(e) => e.collect_paths(out),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) | Expr::Arith(_, a, b) => {
                a.collect_paths(out);
                b.collect_paths(out);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.collect_paths(out)),
        }
    }
}

fn not_a_number(v: &Val) -> EvalError {
    let shown = match v {
        Val::Str(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    };
    EvalError(format!("{shown} is not a number"))
}

fn resolve(steps: &[Step], value: &Value) -> Val {
    let Some((step, rest)) = steps.split_first() else {
        return Val::from_json(value);
    };
    match step {
        Step::Key(k) => match value.get(k.as_str()) {
            Some(v) => resolve(rest, v),
            None => Val::Null,
        },
        Step::Index(i) => match value.get(*i) {
            Some(v) => resolve(rest, v),
            None => Val::Null,
        },
        Step::All => match value {
            Value::Array(items) => Val::Many(items.iter().map(|v| resolve(rest, v)).collect()),
            _ => Val::Null,
        },
    }
}

/// Compares two values as [`Expr`] does: numerically, by date, or as text;
/// unknown (null) when either side is missing, except for `==` and `!=`.
pub fn compare(op: CmpOp, a: Val, b: Val) -> Val {
    // `lines[*].quantity > 0` holds when it holds for every element.
    if let Val::Many(items) = a {
        return all_of(items.into_iter().map(|x| compare(op, x, b.clone())));
    }
    if let Val::Many(items) = b {
        return all_of(items.into_iter().map(|y| compare(op, a.clone(), y)));
    }
    let ordering = match (&a, &b) {
        (Val::Null, Val::Null) => Some(Ordering::Equal),
        (Val::Null, _) | (_, Val::Null) => {
            // Only equality says something about a missing value.
            return match op {
                CmpOp::Eq => Val::Bool(false),
                CmpOp::Ne => Val::Bool(true),
                _ => Val::Null,
            };
        }
        _ => {
            if let (Some(x), Some(y)) = (a.as_dec(), b.as_dec()) {
                Some(x.cmp(&y))
            } else if let (Some(x), Some(y)) = (a.as_date(), b.as_date()) {
                Some(x.cmp(&y))
            } else {
                match (&a, &b) {
                    (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
                    (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
                    _ => None,
                }
            }
        }
    };
    let Some(ord) = ordering else {
        return match op {
            CmpOp::Eq => Val::Bool(a == b),
            CmpOp::Ne => Val::Bool(a != b),
            _ => Val::Null,
        };
    };
    Val::Bool(match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    })
}

/// True when every result is true, false when any is false, else unknown.
fn all_of(results: impl Iterator<Item = Val>) -> Val {
    let mut unknown = false;
    for r in results {
        match r {
            Val::Bool(true) => {}
            Val::Bool(false) => return Val::Bool(false),
            _ => unknown = true,
        }
    }
    if unknown { Val::Null } else { Val::Bool(true) }
}

fn arith(op: ArithOp, a: Val, b: Val) -> Result<Val, EvalError> {
    if matches!(a, Val::Null) || matches!(b, Val::Null) {
        return Ok(Val::Null);
    }
    let x = a.as_dec().ok_or_else(|| not_a_number(&a))?;
    let y = b.as_dec().ok_or_else(|| not_a_number(&b))?;
    let result = match op {
        ArithOp::Add => x.checked_add(y),
        ArithOp::Sub => x.checked_sub(y),
        ArithOp::Mul => x.checked_mul(y),
        ArithOp::Div => {
            if y.is_zero() {
                return Err(EvalError(format!("division of {x} by zero")));
            }
            x.checked_div(y)
        }
    };
    result
        .map(Val::Dec)
        .ok_or_else(|| EvalError(format!("{x} and {y}: result out of range")))
}

fn flatten(v: Val, out: &mut Vec<Val>) {
    match v {
        Val::Many(items) => items.into_iter().for_each(|i| flatten(i, out)),
        Val::Json(Value::Array(items)) => items.iter().for_each(|i| out.push(Val::from_json(i))),
        other => out.push(other),
    }
}

fn call(f: Func, args: &[Expr], record: &Value) -> Result<Val, EvalError> {
    if f == Func::If {
        // Only the chosen branch is evaluated.
        return match args.first().map(|c| c.eval(record)).transpose()? {
            Some(Val::Bool(true)) => args.get(1).map_or(Ok(Val::Null), |a| a.eval(record)),
            _ => args.get(2).map_or(Ok(Val::Null), |a| a.eval(record)),
        };
    }
    let mut vals = Vec::with_capacity(args.len());
    for a in args {
        vals.push(a.eval(record)?);
    }
    Ok(match f {
        Func::Sum => {
            let mut items = Vec::new();
            vals.into_iter().for_each(|v| flatten(v, &mut items));
            let mut total = Decimal::ZERO;
            for item in items {
                if matches!(item, Val::Null) {
                    continue;
                }
                let d = item.as_dec().ok_or_else(|| not_a_number(&item))?;
                total = total
                    .checked_add(d)
                    .ok_or_else(|| EvalError("sum out of range".into()))?;
            }
            Val::Dec(total)
        }
        Func::Count | Func::Len => {
            let n = match vals.into_iter().next() {
                Some(Val::Many(v)) => v.len(),
                Some(Val::Json(Value::Array(a))) => a.len(),
                Some(Val::Str(s)) => s.chars().count(),
                Some(Val::Null) | None => 0,
                Some(_) => 1,
            };
            Val::Dec(Decimal::from(n))
        }
        Func::Exists => Val::Bool(!matches!(vals.first(), Some(Val::Null) | None)),
        Func::Empty => Val::Bool(vals.first().is_none_or(Val::is_empty)),
        Func::Coalesce => vals
            .into_iter()
            .find(|v| !v.is_empty())
            .unwrap_or(Val::Null),
        Func::Abs => match vals.into_iter().next() {
            Some(Val::Null) | None => Val::Null,
            Some(v) => Val::Dec(v.as_dec().ok_or_else(|| not_a_number(&v))?.abs()),
        },
        Func::Round => {
            let mut it = vals.into_iter();
            let (v, s) = (
                it.next().unwrap_or(Val::Null),
                it.next().unwrap_or(Val::Null),
            );
            if matches!(v, Val::Null) {
                Val::Null
            } else {
                let x = v.as_dec().ok_or_else(|| not_a_number(&v))?;
                let scale = s
                    .as_dec()
                    .and_then(|d| u32::try_from(d.mantissa()).ok())
                    .filter(|s| *s <= 28)
                    .ok_or_else(|| EvalError("round() needs a scale from 0 to 28".into()))?;
                Val::Dec(x.round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero))
            }
        }
        Func::If => Val::Null,
        Func::Concat => {
            let mut out = String::new();
            for v in vals {
                match v {
                    Val::Null => {}
                    Val::Str(s) => out.push_str(&s),
                    Val::Dec(d) => out.push_str(&d.to_string()),
                    Val::Bool(b) => out.push_str(if b { "true" } else { "false" }),
                    other => out.push_str(&other.into_json().to_string()),
                }
            }
            Val::Str(out)
        }
        Func::Lower | Func::Upper => match vals.into_iter().next() {
            Some(Val::Str(s)) if f == Func::Lower => Val::Str(s.to_lowercase()),
            Some(Val::Str(s)) => Val::Str(s.to_uppercase()),
            _ => Val::Null,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(src: &str, record: &Value) -> Val {
        parse(src).unwrap().eval(record).unwrap()
    }

    #[test]
    fn compares_numbers_dates_and_text() {
        let r = json!({
            "issue_date": "2026-11-01", "due_date": "2026-12-01",
            "total": "100.50", "Type": "ACCREC", "qty": 3
        });
        assert!(eval("due_date >= issue_date", &r).is_true());
        assert!(!eval("issue_date > due_date", &r).is_true());
        assert!(eval("total == 100.5", &r).is_true());
        assert!(eval("qty * 2 == 6", &r).is_true());
        assert!(eval("Type == 'ACCREC' and total > 0", &r).is_true());
        assert!(eval("not (Type != \"ACCREC\")", &r).is_true());
        assert!(eval("0.1 + 0.2 == 0.3", &r).is_true());
    }

    #[test]
    fn conditionals_concat_and_every_element() {
        let r =
            json!({ "Type": "SPEND", "Total": "12.50", "lines": [{ "q": "2" }, { "q": "-5" }] });
        assert_eq!(
            eval("if(Type == 'RECEIVE', Total, -Total)", &r),
            Val::Dec(Decimal::from_str("-12.50").unwrap())
        );
        assert_eq!(
            eval("concat('RF', 18, '-', Type)", &r),
            Val::Str("RF18-SPEND".into())
        );
        assert!(!eval("lines[*].q > 0", &r).is_true());
        assert_eq!(eval("lines[*].q > 0", &r), Val::Bool(false));
        assert!(eval("lines[*].q != 0", &r).is_true());
        assert_eq!(
            eval("if(missing > 1, 1, 2)", &r),
            Val::Dec(Decimal::from(2))
        );
    }

    #[test]
    fn missing_values_are_unknown() {
        let r = json!({ "issue_date": "2026-11-01" });
        assert_eq!(eval("due_date >= issue_date", &r), Val::Null);
        assert!(eval("due_date == null", &r).is_true());
        assert!(eval("not exists(due_date)", &r).is_true());
        assert!(eval("exists(due_date) or true", &r).is_true());
        assert_eq!(eval("due_date + 1", &r), Val::Null);
    }

    #[test]
    fn sums_over_lines() {
        let r = json!({ "total": "30.30", "lines": [{ "total": "10.10" }, { "total": "20.20" }] });
        assert!(eval("sum(lines[*].total) == total", &r).is_true());
        assert_eq!(eval("count(lines)", &r), Val::Dec(Decimal::from(2)));
        assert_eq!(eval("lines[1].total", &r), Val::Str("20.20".into()));
        assert_eq!(
            eval("round(10 / 3, 2)", &r),
            Val::Dec(Decimal::from_str("3.33").unwrap())
        );
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = parse("total >= ").unwrap_err();
        assert!(e.message.contains("ends too early"), "{e}");
        let e = parse("frob(x)").unwrap_err();
        assert!(e.message.contains("unknown function"), "{e}");
        assert_eq!(e.offset, 0);
        let e = parse("a == 'x").unwrap_err();
        assert!(e.message.contains("unterminated"), "{e}");
        let e = parse("a b").unwrap_err();
        assert_eq!(e.offset, 2);
        let deep = "(".repeat(200) + "1" + &")".repeat(200);
        assert!(parse(&deep).is_err());
        let e = parse("round(1)").unwrap_err();
        assert!(e.message.contains("2 argument"), "{e}");
    }

    #[test]
    fn arithmetic_errors_are_reported() {
        let r = json!({ "a": "x" });
        assert!(parse("a + 1").unwrap().eval(&r).is_err());
        assert!(parse("1 / 0").unwrap().eval(&r).is_err());
    }

    #[test]
    fn comparing_text_cut_inside_a_character_does_not_panic() {
        // Found by shipped_mappings_never_panic: a date probe sliced text
        // at byte 10, inside a four-byte character.
        let r = json!({ "a": "*'Ѩm<'\\'𑤄𝉄>", "b": "2026-01-01" });
        assert!(!eval("a >= b", &r).is_true());
    }

    #[test]
    fn non_letters_outside_ascii_are_rejected_not_looped_on() {
        // Found by parsing_never_panics: "€" used to lex as an empty name
        // forever.
        assert!(parse("total > 5€").is_err());
        assert!(parse("\u{a0}").is_err());
        assert!(parse("größe > 1").is_ok());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(src in "\\PC{0,40}") {
            let _ = parse(&src);
        }
    }
}
