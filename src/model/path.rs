//! Field paths: the addressing unit for mapping, merge and conflicts.
//!
//! # Grammar
//!
//! ```text
//! path    := first rest*
//! first   := key | bracket
//! rest    := "." key | bracket
//! bracket := "[" ( index | quoted ) "]"
//! key     := bare+           bare: any char except . [ ] " \ whitespace and control
//! index   := "0" | [1-9][0-9]*          (no sign, no leading zeros)
//! quoted  := a JSON string literal, e.g. ["x.y"] or ["say \"hi\""]
//! ```
//!
//! Examples: `billing.address.city`, `lines[2].quantity`, `lines[0]`,
//! `a.b[1][0].c`, `extra["x.y"]`, `["has space"]`.
//!
//! `[n]` always means an array index and `["n"]` / `.n` an object key, so a
//! path is never ambiguous. [`FieldPath`]'s `Display` writes keys bare when
//! possible and quoted otherwise, and always re-parses to the same path.
//! A path has at least one segment; the document root has no path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ModelError, snippet};

/// Most `Null` padding elements [`FieldPath::set`] will add to an array.
///
/// Guards against hostile paths such as `lines[999999999]` allocating
/// gigabytes; such a `set` fails instead.
pub const MAX_ARRAY_GROWTH: usize = 10_000;

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// Object member name.
    Key(String),
    /// Array position.
    Index(usize),
}

/// A parsed, non-empty path into a JSON document (see the module grammar).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldPath(Vec<Segment>);

fn is_bare_char(c: char) -> bool {
    !matches!(c, '.' | '[' | ']' | '"' | '\\') && !c.is_whitespace() && !c.is_control()
}

fn is_bare_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(is_bare_char)
}

impl FieldPath {
    /// Parses a path string (see the module grammar).
    pub fn parse(s: &str) -> Result<FieldPath, ModelError> {
        let err = |reason: String| ModelError::InvalidFieldPath {
            path: snippet(s),
            reason,
        };
        if s.is_empty() {
            return Err(err("empty path".into()));
        }
        let bytes = s.as_bytes();
        let mut segs = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'[' => {
                    let (seg, next) = parse_bracket(s, i).map_err(err)?;
                    segs.push(seg);
                    i = next;
                }
                b'.' if segs.is_empty() => {
                    return Err(err("path must not start with '.'".into()));
                }
                b'.' => {
                    let start = i + 1;
                    let end = bare_end(s, start);
                    if end == start {
                        return Err(err(match bytes.get(start) {
                            None => "trailing '.'".into(),
                            Some(b'.') => "empty key between '..'".into(),
                            Some(_) => format!(
                                "expected a key after '.' at byte {i}; quote unusual keys as [\"...\"]"
                            ),
                        }));
                    }
                    segs.push(Segment::Key(s[start..end].to_owned()));
                    i = end;
                }
                _ if segs.is_empty() => {
                    let end = bare_end(s, 0);
                    if end == 0 {
                        return Err(err(
                            "unexpected character at start; quote unusual keys as [\"...\"]".into(),
                        ));
                    }
                    segs.push(Segment::Key(s[..end].to_owned()));
                    i = end;
                }
                _ => {
                    return Err(err(format!(
                        "unexpected character at byte {i}: expected '.' or '['"
                    )));
                }
            }
        }
        Ok(FieldPath(segs))
    }

    /// Builds a path from segments; `None` if `segments` is empty.
    pub fn from_segments(segments: Vec<Segment>) -> Option<FieldPath> {
        (!segments.is_empty()).then_some(FieldPath(segments))
    }

    /// A one-segment path naming an object member.
    pub fn key(key: impl Into<String>) -> FieldPath {
        FieldPath(vec![Segment::Key(key.into())])
    }

    /// A one-segment path naming an array element.
    pub fn index(index: usize) -> FieldPath {
        FieldPath(vec![Segment::Index(index)])
    }

    /// The segments, outermost first (never empty).
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Appends an object member step.
    pub fn push_key(&mut self, key: impl Into<String>) {
        self.0.push(Segment::Key(key.into()));
    }

    /// Appends an array element step.
    pub fn push_index(&mut self, index: usize) {
        self.0.push(Segment::Index(index));
    }

    /// The path without its last segment; `None` for one-segment paths
    /// (whose parent is the document root).
    pub fn parent(&self) -> Option<FieldPath> {
        let (_, init) = self.0.split_last()?;
        FieldPath::from_segments(init.to_vec())
    }

    /// True if `prefix`'s segments are a prefix of (or equal to) this path's.
    pub fn starts_with(&self, prefix: &FieldPath) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// The value at this path, if present.
    pub fn get<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(root, |cur, seg| match (cur, seg) {
            (Value::Object(m), Segment::Key(k)) => m.get(k),
            (Value::Array(a), Segment::Index(n)) => a.get(*n),
            _ => None,
        })
    }

    /// Mutable access to the value at this path, if present.
    pub fn get_mut<'a>(&self, root: &'a mut Value) -> Option<&'a mut Value> {
        self.0.iter().try_fold(root, |cur, seg| match (cur, seg) {
            (Value::Object(m), Segment::Key(k)) => m.get_mut(k),
            (Value::Array(a), Segment::Index(n)) => a.get_mut(*n),
            _ => None,
        })
    }

    /// Sets the value at this path and returns the previous value, if any.
    ///
    /// Missing (or `null`) intermediate steps are created: objects for keys,
    /// arrays padded with `null` for indices (at most [`MAX_ARRAY_GROWTH`]
    /// padding elements). Stepping into a scalar, a key into an array or an
    /// index into an object is a [`ModelError::FieldPathConflict`]. On any
    /// error the document is left unchanged.
    pub fn set(&self, root: &mut Value, value: Value) -> Result<Option<Value>, ModelError> {
        self.check_settable(root)?;
        let Some((last, init)) = self.0.split_last() else {
            return Ok(None);
        };
        let mut cur = root;
        for seg in init {
            cur = step_or_create(cur, seg).ok_or_else(|| self.conflict("unexpected shape"))?;
        }
        if cur.is_null() {
            *cur = empty_container(last);
        }
        match (cur, last) {
            (Value::Object(m), Segment::Key(k)) => Ok(m.insert(k.clone(), value)),
            (Value::Array(a), Segment::Index(n)) => {
                if *n < a.len() {
                    Ok(Some(std::mem::replace(&mut a[*n], value)))
                } else {
                    a.resize(*n, Value::Null);
                    a.push(value);
                    Ok(None)
                }
            }
            _ => Err(self.conflict("unexpected shape")),
        }
    }

    /// Read-only pre-flight for [`FieldPath::set`] so failures change nothing.
    fn check_settable(&self, root: &Value) -> Result<(), ModelError> {
        let mut cur = Some(root);
        for (depth, seg) in self.0.iter().enumerate() {
            let here = || {
                FieldPath::from_segments(self.0[..depth].to_vec()).map_or_else(
                    || "the document root".to_owned(),
                    |p| format!("{p:?}", p = p.to_string()),
                )
            };
            cur = match (cur, seg) {
                (None | Some(Value::Null), Segment::Key(_)) => None,
                (None | Some(Value::Null), Segment::Index(n)) => {
                    self.check_growth(0, *n)?;
                    None
                }
                (Some(Value::Object(m)), Segment::Key(k)) => m.get(k),
                (Some(Value::Array(a)), Segment::Index(n)) => match a.get(*n) {
                    Some(v) => Some(v),
                    None => {
                        self.check_growth(a.len(), *n)?;
                        None
                    }
                },
                (Some(Value::Object(_)), Segment::Index(n)) => {
                    return Err(
                        self.conflict(&format!("cannot index [{n}] into an object at {}", here()))
                    );
                }
                (Some(Value::Array(_)), Segment::Key(k)) => {
                    return Err(
                        self.conflict(&format!("cannot take key {k:?} of an array at {}", here()))
                    );
                }
                (Some(scalar), _) => {
                    return Err(self.conflict(&format!(
                        "cannot descend into {} at {}",
                        kind_name(scalar),
                        here()
                    )));
                }
            };
        }
        Ok(())
    }

    fn check_growth(&self, len: usize, index: usize) -> Result<(), ModelError> {
        if index - len.min(index) > MAX_ARRAY_GROWTH {
            Err(ModelError::InvalidFieldPath {
                path: snippet(&self.to_string()),
                reason: format!(
                    "index {index} would pad an array of length {len} by more than {MAX_ARRAY_GROWTH} elements"
                ),
            })
        } else {
            Ok(())
        }
    }

    fn conflict(&self, reason: &str) -> ModelError {
        ModelError::FieldPathConflict {
            path: snippet(&self.to_string()),
            reason: reason.to_owned(),
        }
    }

    /// Removes and returns the value at this path, if present.
    ///
    /// Removing an array element shifts later elements down (like
    /// `Vec::remove`), so `lines[1]` removes the second line.
    pub fn remove(&self, root: &mut Value) -> Option<Value> {
        let (last, init) = self.0.split_last()?;
        let parent = match FieldPath::from_segments(init.to_vec()) {
            Some(p) => p.get_mut(root)?,
            None => root,
        };
        match (parent, last) {
            (Value::Object(m), Segment::Key(k)) => m.remove(k),
            (Value::Array(a), Segment::Index(n)) if *n < a.len() => Some(a.remove(*n)),
            _ => None,
        }
    }
}

/// Descends one step for `set`, turning `null` into the right container.
fn step_or_create<'a>(cur: &'a mut Value, seg: &Segment) -> Option<&'a mut Value> {
    if cur.is_null() {
        *cur = empty_container(seg);
    }
    match (cur, seg) {
        (Value::Object(m), Segment::Key(k)) => Some(m.entry(k.clone()).or_insert(Value::Null)),
        (Value::Array(a), Segment::Index(n)) => {
            if *n >= a.len() {
                a.resize(*n + 1, Value::Null);
            }
            a.get_mut(*n)
        }
        _ => None,
    }
}

fn empty_container(seg: &Segment) -> Value {
    match seg {
        Segment::Key(_) => Value::Object(Map::new()),
        Segment::Index(_) => Value::Array(Vec::new()),
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Returns the byte offset where a run of bare key characters starting at `start` ends.
fn bare_end(s: &str, start: usize) -> usize {
    s[start..]
        .char_indices()
        .find(|(_, c)| !is_bare_char(*c))
        .map_or(s.len(), |(i, _)| start + i)
}

/// Parses `[...]` starting at byte `open` (which is `[`); returns the segment
/// and the byte offset just past `]`.
fn parse_bracket(s: &str, open: usize) -> Result<(Segment, usize), String> {
    let bytes = s.as_bytes();
    let start = open + 1;
    match bytes.get(start) {
        None => Err("unclosed '['".into()),
        Some(b'"') => {
            let mut j = start + 1;
            loop {
                match bytes.get(j) {
                    None => return Err("unterminated quoted key".into()),
                    Some(b'\\') => j += 2,
                    Some(b'"') => break,
                    Some(_) => j += 1,
                }
            }
            // `j` indexes the closing quote, an ASCII byte, so both slice
            // bounds are char boundaries.
            let key: String = serde_json::from_str(&s[start..=j])
                .map_err(|e| format!("invalid quoted key: {e}"))?;
            match bytes.get(j + 1) {
                Some(b']') => Ok((Segment::Key(key), j + 2)),
                None => Err("unclosed '['".into()),
                Some(_) => Err("expected ']' after quoted key".into()),
            }
        }
        Some(_) => {
            let close = s[start..]
                .find(']')
                .map(|k| start + k)
                .ok_or_else(|| "unclosed '['".to_owned())?;
            let digits = &s[start..close];
            if digits.is_empty() {
                return Err("empty index '[]'".into());
            }
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "index {:?} is not a non-negative integer; quote keys as [\"...\"]",
                    snippet(digits)
                ));
            }
            if digits.len() > 1 && digits.starts_with('0') {
                return Err(format!("index {digits:?} has leading zeros"));
            }
            let n = digits
                .parse::<usize>()
                .map_err(|_| format!("index {:?} is too large", snippet(digits)))?;
            Ok((Segment::Index(n), close + 1))
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if is_bare_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => {
                    let quoted = serde_json::to_string(k).map_err(|_| fmt::Error)?;
                    write!(f, "[{quoted}]")?;
                }
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl FromStr for FieldPath {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldPath::parse(s)
    }
}

impl TryFrom<String> for FieldPath {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        FieldPath::parse(&s)
    }
}

impl From<FieldPath> for String {
    fn from(p: FieldPath) -> String {
        p.to_string()
    }
}

/// Every leaf of `value` with its path, in document order (object keys sorted).
///
/// Leaves are scalars (`null`, booleans, numbers, strings) and *empty*
/// arrays and objects; non-empty arrays are descended element by element
/// (`tags[0]`, `tags[1]`), so arrays of scalars are diffed per position.
/// The root itself has no path: a scalar or empty root yields no leaves.
pub fn leaves(value: &Value) -> Vec<(FieldPath, &Value)> {
    fn walk<'a>(v: &'a Value, prefix: &mut Vec<Segment>, out: &mut Vec<(FieldPath, &'a Value)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    prefix.push(Segment::Key(k.clone()));
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for (i, child) in a.iter().enumerate() {
                    prefix.push(Segment::Index(i));
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if let Some(p) = FieldPath::from_segments(prefix.clone()) {
                    out.push((p, v));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn p(s: &str) -> FieldPath {
        FieldPath::parse(s).unwrap()
    }

    fn k(s: &str) -> Segment {
        Segment::Key(s.into())
    }

    #[test]
    fn parses_examples() {
        assert_eq!(
            p("billing.address.city").segments(),
            &[k("billing"), k("address"), k("city")]
        );
        assert_eq!(
            p("lines[2].quantity").segments(),
            &[k("lines"), Segment::Index(2), k("quantity")]
        );
        assert_eq!(p("lines[0]").segments(), &[k("lines"), Segment::Index(0)]);
        assert_eq!(
            p("a.b[1][0].c").segments(),
            &[k("a"), k("b"), Segment::Index(1), Segment::Index(0), k("c")]
        );
        assert_eq!(p(r#"extra["x.y"]"#).segments(), &[k("extra"), k("x.y")]);
        assert_eq!(p(r#"["a b"].c"#).segments(), &[k("a b"), k("c")]);
        assert_eq!(p("[3]").segments(), &[Segment::Index(3)]);
        assert_eq!(p(r#"[""]"#).segments(), &[k("")]);
        assert_eq!(p(r#"["q\"\\"]"#).segments(), &[k("q\"\\")]);
        assert_eq!(p("a.0").segments(), &[k("a"), k("0")]);
        assert_eq!(p("ünï.çødé").segments(), &[k("ünï"), k("çødé")]);
        assert_eq!(p(r#"a["]"]"#).segments(), &[k("a"), k("]")]);
    }

    #[test]
    fn rejects_malformed() {
        for (bad, why) in [
            ("", "empty path"),
            ("a..b", "'..'"),
            ("a.", "trailing '.'"),
            (".a", "start with '.'"),
            ("a[", "unclosed '['"),
            ("a[1", "unclosed '['"),
            (r#"a["x"#, "unterminated"),
            (r#"a["x""#, "unclosed '['"),
            (r#"a["x"x]"#, "expected ']'"),
            ("a[-1]", "not a non-negative integer"),
            ("a[x]", "not a non-negative integer"),
            ("a[1.5]", "not a non-negative integer"),
            ("a[]", "empty index"),
            ("a[01]", "leading zeros"),
            ("a[99999999999999999999999]", "too large"),
            ("a b", "unexpected character"),
            ("a]", "unexpected character"),
            ("a[0]b", "unexpected character"),
            ("a.[0]", "expected a key"),
            (r#"a."b""#, "expected a key"),
            (" a", "unexpected character at start"),
            (r#"["\x"]"#, "invalid quoted key"),
        ] {
            match FieldPath::parse(bad) {
                Err(ModelError::InvalidFieldPath { path, reason }) => {
                    assert_eq!(path, bad);
                    assert!(reason.contains(why), "{bad:?}: {reason}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn display_round_trips_and_quotes() {
        for s in [
            "billing.address.city",
            "lines[2].quantity",
            "a.b[1][0].c",
            r#"extra["x.y"]"#,
            r#"["a b"][0]["\"q\""]"#,
            "[0].a",
            r#"[""]"#,
        ] {
            assert_eq!(p(s).to_string(), s);
        }
        let mut path = FieldPath::key("tab\there");
        path.push_key("line\nbreak");
        path.push_index(7);
        assert_eq!(path.to_string(), r#"["tab\there"]["line\nbreak"][7]"#);
        assert_eq!(p(&path.to_string()), path);
    }

    #[test]
    fn builders_parent_and_prefix() {
        let mut path = FieldPath::key("lines");
        path.push_index(2);
        path.push_key("sku");
        assert_eq!(path, p("lines[2].sku"));
        assert_eq!(path.parent(), Some(p("lines[2]")));
        assert_eq!(FieldPath::index(1).parent(), None);
        assert!(path.starts_with(&p("lines")));
        assert!(path.starts_with(&p("lines[2]")));
        assert!(path.starts_with(&path));
        assert!(!path.starts_with(&p("lines[1]")));
        assert!(!p("line").starts_with(&p("lines")));
        assert_eq!(FieldPath::from_segments(vec![]), None);
        let json = serde_json::to_string(&path).unwrap();
        assert_eq!(json, r#""lines[2].sku""#);
        assert_eq!(serde_json::from_str::<FieldPath>(&json).unwrap(), path);
        assert!(serde_json::from_str::<FieldPath>(r#""a..b""#).is_err());
    }

    #[test]
    fn get_and_get_mut() {
        let mut doc = json!({"a": {"b": [1, {"c": "x"}]}, "n": 5});
        assert_eq!(p("a.b[1].c").get(&doc), Some(&json!("x")));
        assert_eq!(p("a.b[0]").get(&doc), Some(&json!(1)));
        assert_eq!(p("a.b[2]").get(&doc), None);
        assert_eq!(p("a.x").get(&doc), None);
        assert_eq!(p("n.x").get(&doc), None);
        assert_eq!(p("a[0]").get(&doc), None);
        assert_eq!(p("a.b.c").get(&doc), None);
        *p("a.b[0]").get_mut(&mut doc).unwrap() = json!(2);
        assert_eq!(doc["a"]["b"][0], json!(2));
        assert!(p("n.x").get_mut(&mut doc).is_none());
    }

    #[test]
    fn set_creates_and_replaces() {
        let mut doc = json!({});
        assert_eq!(
            p("billing.city").set(&mut doc, json!("Bern")).unwrap(),
            None
        );
        assert_eq!(p("lines[2].qty").set(&mut doc, json!("1")).unwrap(), None);
        assert_eq!(
            doc,
            json!({"billing": {"city": "Bern"}, "lines": [null, null, {"qty": "1"}]})
        );
        assert_eq!(
            p("billing.city").set(&mut doc, json!("Basel")).unwrap(),
            Some(json!("Bern"))
        );
        // Null intermediates become containers.
        assert_eq!(p("lines[0].qty").set(&mut doc, json!("2")).unwrap(), None);
        assert_eq!(doc["lines"][0], json!({"qty": "2"}));
        assert_eq!(
            p("lines[1]").set(&mut doc, json!(7)).unwrap(),
            Some(Value::Null)
        );
        let mut root = Value::Null;
        p("[1]").set(&mut root, json!(true)).unwrap();
        assert_eq!(root, json!([null, true]));
    }

    #[test]
    fn set_conflicts_change_nothing() {
        let original = json!({"a": 5, "arr": [1], "obj": {"x": 1}, "s": "str"});
        for (path, why) in [
            ("a.b", "cannot descend into a number at \"a\""),
            ("a[0]", "cannot descend into a number"),
            ("s.x.y", "cannot descend into a string"),
            ("arr.x", "cannot take key \"x\" of an array at \"arr\""),
            ("obj[0]", "cannot index [0] into an object at \"obj\""),
            ("arr[0].x", "cannot descend into a number at \"arr[0]\""),
            (
                "[0]",
                "cannot index [0] into an object at the document root",
            ),
            ("new.deep.a.b", ""),
        ] {
            let mut doc = original.clone();
            let r = p(path).set(&mut doc, json!("v"));
            if why.is_empty() {
                assert!(r.is_ok());
                continue;
            }
            match r {
                Err(ModelError::FieldPathConflict { path: got, reason }) => {
                    assert_eq!(got, path);
                    assert!(reason.contains(why), "{path}: {reason}");
                }
                other => panic!("{path}: {other:?}"),
            }
            assert_eq!(doc, original, "{path} changed the document");
        }
        let mut scalar = json!(3);
        assert!(p("a").set(&mut scalar, json!(1)).is_err());
        assert_eq!(scalar, json!(3));
    }

    #[test]
    fn set_caps_array_growth() {
        let mut doc = json!({});
        let e = p("new.lines[999999999].x")
            .set(&mut doc, json!(1))
            .unwrap_err();
        assert!(matches!(e, ModelError::InvalidFieldPath { .. }), "{e}");
        assert_eq!(doc, json!({}), "failed set must not create intermediates");
        let mut doc = json!({"a": [1, 2]});
        assert!(
            p(&format!("a[{}]", 2 + MAX_ARRAY_GROWTH + 1))
                .set(&mut doc, json!(1))
                .is_err()
        );
        assert!(
            p(&format!("a[{}]", usize::MAX))
                .set(&mut doc, json!(1))
                .is_err()
        );
        assert_eq!(doc, json!({"a": [1, 2]}));
        p(&format!("a[{}]", 2 + MAX_ARRAY_GROWTH))
            .set(&mut doc, json!(1))
            .unwrap();
        assert_eq!(doc["a"].as_array().unwrap().len(), 3 + MAX_ARRAY_GROWTH);
    }

    #[test]
    fn remove_values() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2, 3]});
        assert_eq!(p("a.b").remove(&mut doc), Some(json!(1)));
        assert_eq!(p("a.b").remove(&mut doc), None);
        assert_eq!(p("l[1]").remove(&mut doc), Some(json!(2)));
        assert_eq!(doc, json!({"a": {"c": 2}, "l": [1, 3]}));
        assert_eq!(p("l[5]").remove(&mut doc), None);
        assert_eq!(p("a.c.d").remove(&mut doc), None);
        assert_eq!(p("l.x").remove(&mut doc), None);
        assert_eq!(p("a").remove(&mut doc), Some(json!({"c": 2})));
    }

    #[test]
    fn leaves_lists_scalars_and_empty_containers() {
        let doc = json!({"a": {"b": [1, {"c": null}], "e": {}}, "t": [], "x.y": "s"});
        let got: Vec<(String, Value)> = leaves(&doc)
            .into_iter()
            .map(|(p, v)| (p.to_string(), v.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a.b[0]".to_string(), json!(1)),
                ("a.b[1].c".to_string(), json!(null)),
                ("a.e".to_string(), json!({})),
                ("t".to_string(), json!([])),
                (r#"["x.y"]"#.to_string(), json!("s")),
            ]
        );
        assert!(leaves(&json!(5)).is_empty());
        assert!(leaves(&json!({})).is_empty());
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_]{1,6}",
            "[a-z0-9.\\[\\]\"\\\\' ]{0,6}",
            any::<String>().prop_map(|s| s.chars().take(6).collect()),
        ]
    }

    fn json_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1.0e9f64..1.0e9).prop_map(Value::from),
            "[a-z .\"]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key_strategy(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn path_strategy() -> impl Strategy<Value = FieldPath> {
        prop::collection::vec(
            prop_oneof![
                key_strategy().prop_map(Segment::Key),
                any::<usize>().prop_map(Segment::Index),
            ],
            1..6,
        )
        .prop_map(|segs| FieldPath::from_segments(segs).unwrap())
    }

    proptest! {
        #[test]
        fn display_parse_is_identity(path in path_strategy()) {
            let s = path.to_string();
            prop_assert_eq!(FieldPath::parse(&s).unwrap(), path);
        }

        #[test]
        fn parse_never_panics(s in "[a-z0-9.\\[\\]\"\\\\ -]{0,16}") {
            if let Ok(path) = FieldPath::parse(&s) {
                prop_assert_eq!(FieldPath::parse(&path.to_string()).unwrap(), path);
            }
        }

        #[test]
        fn get_set_round_trip_on_leaves(doc in json_strategy()) {
            let before = leaves(&doc);
            for (path, leaf) in &before {
                prop_assert_eq!(path.get(&doc), Some(*leaf));
                let reparsed = FieldPath::parse(&path.to_string()).unwrap();
                prop_assert_eq!(&reparsed, path);

                let new = Value::String("\u{1}new".into());
                let mut changed = doc.clone();
                let old = path.set(&mut changed, new.clone()).unwrap();
                prop_assert_eq!(old.as_ref(), Some(*leaf));
                prop_assert_eq!(path.get(&changed), Some(&new));

                let others = |v: &Value| -> Vec<(FieldPath, Value)> {
                    leaves(v)
                        .into_iter()
                        .filter(|(q, _)| q != path)
                        .map(|(q, v)| (q, v.clone()))
                        .collect()
                };
                prop_assert_eq!(others(&changed), others(&doc));
            }
        }

        #[test]
        fn set_on_arbitrary_paths_never_panics(doc in json_strategy(), path in path_strategy()) {
            let mut d = doc.clone();
            match path.set(&mut d, Value::Bool(true)) {
                Ok(_) => prop_assert_eq!(path.get(&d), Some(&Value::Bool(true))),
                Err(_) => prop_assert_eq!(d, doc),
            }
        }
    }
}
