//! Declarative mappings: how a system's records become canonical records
//! (inbound) and canonical records become a system's records (outbound).
//!
//! A mapping is a TOML file in `mappings/` (format in [`spec`]), compiled
//! once by [`load_file`] into a [`Mapping`] — paths pre-split, regexes
//! compiled, tables hashed, types checked — and then applied to millions of
//! records by [`Mapping::apply`] without parsing anything again. Load errors
//! name the file, line and column; record errors name the field, the rule
//! and the offending value, and every failure of a record is reported, not
//! just the first.

mod compile;
pub mod expr;
pub mod ops;
pub mod parse;
pub mod schema;
pub mod sidecar;
pub mod spec;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::{Entity, EntityKind, FieldPath, Segment};
pub use compile::{load_dir, load_file};
use expr::Expr;
pub use ops::{LookupKey, Lookups, Resolver};
use ops::{LookupMode, Op, V};
pub use spec::Direction;

pub use crate::located::LoadError;

/// Why one record could not be mapped or failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordError {
    /// The target field (inbound: the canonical field path).
    pub field: String,
    /// The transform or rule that failed (`required`, `decimal`, `regex` …).
    pub rule: String,
    /// The offending value, shortened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub message: String,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.field, self.message, self.rule)
    }
}

/// A compiled mapping, ready to apply.
#[derive(Debug)]
pub struct Mapping {
    pub name: String,
    pub version: u32,
    pub system: String,
    pub entity: EntityKind,
    pub direction: Direction,
    pub description: Option<String>,
    /// The file it was compiled from.
    pub file: PathBuf,
    fields: Fields,
    rules: Vec<compile::Rule>,
    has_lookups: bool,
    /// See [`Mapping::fingerprint`].
    fingerprint: Option<String>,
}

/// Sibling fields: a mapping's, or those of an `each`.
#[derive(Debug)]
struct Fields {
    plans: Vec<FieldPlan>,
    /// Where each field's value goes, as a tree in key order, when no
    /// target lies inside another: the output is then built in one go
    /// instead of a path walk and a map insert per field.
    layout: Option<Vec<(String, Fill)>>,
    /// The top-level keys the fields read, sorted, so one pass over the
    /// record finds them all (at most [`MAX_READS`]; none if more).
    reads: Vec<String>,
    /// For each plan, for each path of its source: the index in `reads` of
    /// the path's first key.
    read_at: Vec<Vec<Option<usize>>>,
}

/// Most keys [`Fields::reads`] holds.
const MAX_READS: usize = 32;

/// The paths a source reads from the record, apart from expressions.
fn source_paths(source: &Source) -> &[FieldPath] {
    match source {
        Source::Path(p) => std::slice::from_ref(p),
        Source::Coalesce(paths) | Source::All(paths) => paths,
        Source::Const(_) | Source::Expr(_) | Source::Each(..) => &[],
    }
}

fn first_key(path: &FieldPath) -> Option<&String> {
    match path.segments().first() {
        Some(Segment::Key(key)) => Some(key),
        _ => None,
    }
}

/// Finds the values of `keys` (sorted) in `record` in one pass over it,
/// into `found`. `false` when the record has so many more keys that
/// searching for each is cheaper; `found` is then left as it is.
fn find_keys<'a>(keys: &[String], record: &'a Value, found: &mut [Option<&'a Value>]) -> bool {
    let Value::Object(map) = record else {
        // Nothing to find: no key path reads anything from it.
        return true;
    };
    if map.len() > 4 * keys.len() + 8 {
        return false;
    }
    let mut wanted = 0;
    for (key, value) in map {
        while let Some(want) = keys.get(wanted) {
            match want.as_str().cmp(key) {
                std::cmp::Ordering::Less => wanted += 1,
                std::cmp::Ordering::Equal => {
                    found[wanted] = Some(value);
                    wanted += 1;
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        if wanted == keys.len() {
            break;
        }
    }
    true
}

/// The value at `segments` under `from`, as [`FieldPath::get`] walks.
fn walk<'a>(segments: &[Segment], from: &'a Value) -> Option<&'a Value> {
    segments.iter().try_fold(from, |cur, seg| match (cur, seg) {
        (Value::Object(m), Segment::Key(k)) => m.get(k),
        (Value::Array(a), Segment::Index(n)) => a.get(*n),
        _ => None,
    })
}

/// What goes at one place of the output [`Fields::layout`] builds.
#[derive(Debug)]
enum Fill {
    /// The value of the field at this index of [`Fields::plans`].
    Field(usize),
    /// An object, present when any field under it has a value.
    Object(Vec<(String, Fill)>),
    /// An array, present when any field under it has a value, as long as
    /// its highest index with a value, `null` elsewhere.
    Array(Vec<(usize, Fill)>),
}

impl Fields {
    fn new(plans: Vec<FieldPlan>) -> Fields {
        let layout = Fields::layout(&plans);
        let mut reads: Vec<String> = plans
            .iter()
            .flat_map(|p| source_paths(&p.source))
            .filter_map(first_key)
            .cloned()
            .collect();
        reads.sort();
        reads.dedup();
        if reads.len() > MAX_READS {
            reads.clear();
        }
        let read_at = plans
            .iter()
            .map(|p| {
                source_paths(&p.source)
                    .iter()
                    .map(|path| first_key(path).and_then(|k| reads.binary_search(k).ok()))
                    .collect()
            })
            .collect();
        Fields {
            plans,
            layout,
            reads,
            read_at,
        }
    }

    /// The layout of `plans`' targets, or `None` when setting them path by
    /// path could meet a value already there or fail.
    fn layout(plans: &[FieldPlan]) -> Option<Vec<(String, Fill)>> {
        let mut root = Fill::Object(Vec::new());
        for (index, plan) in plans.iter().enumerate() {
            let segments = plan.target.segments();
            let mut place = &mut root;
            for (depth, segment) in segments.iter().enumerate() {
                // What a place added here holds: the field's value at the
                // end of the path, else what the next segment steps into.
                let new = || match segments.get(depth + 1) {
                    None => Fill::Field(index),
                    Some(Segment::Key(_)) => Fill::Object(Vec::new()),
                    Some(Segment::Index(_)) => Fill::Array(Vec::new()),
                };
                let last = depth + 1 == segments.len();
                // A key into an array, an index into an object or a step
                // into a field's value has no layout; neither has a target
                // that holds other targets (targets are distinct, so a
                // place already there at the end of a path holds others).
                place = match (place, segment) {
                    (Fill::Object(children), Segment::Key(key)) => {
                        match children.iter().position(|(k, _)| k == key) {
                            Some(_) if last => return None,
                            Some(at) => &mut children[at].1,
                            None => {
                                children.push((key.clone(), new()));
                                &mut children.last_mut()?.1
                            }
                        }
                    }
                    (Fill::Array(children), Segment::Index(i))
                        if *i <= crate::model::MAX_ARRAY_GROWTH =>
                    {
                        match children.iter().position(|(k, _)| k == i) {
                            Some(_) if last => return None,
                            Some(at) => &mut children[at].1,
                            None => {
                                children.push((*i, new()));
                                &mut children.last_mut()?.1
                            }
                        }
                    }
                    _ => return None,
                };
            }
        }
        fn settle(fill: &mut Fill) {
            match fill {
                Fill::Field(_) => {}
                Fill::Object(children) => {
                    children.sort_by(|a, b| a.0.cmp(&b.0));
                    children.iter_mut().for_each(|(_, c)| settle(c));
                }
                Fill::Array(children) => {
                    children.sort_by_key(|c| c.0);
                    children.iter_mut().for_each(|(_, c)| settle(c));
                }
            }
        }
        settle(&mut root);
        match root {
            Fill::Object(children) => Some(children),
            _ => None,
        }
    }
}

/// Builds what `fill` describes from the fields' values, taking them;
/// `None` when no field under it has a value.
fn assemble(fill: &Fill, values: &mut [Option<Value>]) -> Option<Value> {
    match fill {
        Fill::Field(i) => values[*i].take(),
        Fill::Object(children) => {
            let object = assemble_object(children, values);
            (!object.is_empty()).then_some(Value::Object(object))
        }
        Fill::Array(children) => {
            let mut array = Vec::new();
            for (i, child) in children {
                if let Some(value) = assemble(child, values) {
                    array.resize(*i, Value::Null);
                    array.push(value);
                }
            }
            (!array.is_empty()).then_some(Value::Array(array))
        }
    }
}

/// The object of `children`, in key order, so the map is built without
/// searching.
fn assemble_object(
    children: &[(String, Fill)],
    values: &mut [Option<Value>],
) -> Map<String, Value> {
    // The map is built in one go from its first 17 entries (sorted, so
    // without searching); any more are inserted. A longer temporary list
    // (over 1 KiB) would make glibc's malloc consolidate its free lists on
    // every record, which slows every allocation after it.
    const FIRST: usize = 17;
    let mut entries = Vec::with_capacity(children.len().min(FIRST));
    let mut rest = children.iter();
    for (key, child) in rest.by_ref() {
        if let Some(value) = assemble(child, values) {
            entries.push((key.clone(), value));
            if entries.len() == FIRST {
                break;
            }
        }
    }
    let mut object: Map<String, Value> = entries.into_iter().collect();
    for (key, child) in rest {
        if let Some(value) = assemble(child, values) {
            object.insert(key.clone(), value);
        }
    }
    object
}

#[derive(Debug)]
struct FieldPlan {
    /// Where the value goes in the output.
    target: FieldPath,
    /// The target as written, for messages.
    label: String,
    source: Source,
    pipe: Vec<Op>,
    default: Option<Value>,
    required: bool,
    when: Option<Expr>,
    /// An inbound canonical decimal: JSON numbers are turned into exact
    /// decimal text, as the model requires.
    decimal_target: bool,
}

#[derive(Debug)]
enum Source {
    Path(FieldPath),
    Coalesce(Vec<FieldPath>),
    All(Vec<FieldPath>),
    Const(Value),
    Expr(Expr),
    Each(FieldPath, Fields),
}

impl Mapping {
    /// `name@version`, as recorded with every canonical version it writes.
    pub fn version_tag(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Every source path the mapping reads, as text (`lines[0].qty` for
    /// the fields of an `each`): for tests that build records shaped like
    /// the mapping's input.
    pub fn source_paths(&self) -> Vec<String> {
        fn walk(fields: &Fields, prefix: &str, out: &mut Vec<String>) {
            let join = |p: &dyn std::fmt::Display| {
                if prefix.is_empty() {
                    p.to_string()
                } else {
                    format!("{prefix}.{p}")
                }
            };
            for f in &fields.plans {
                match &f.source {
                    Source::Path(p) => out.push(join(p)),
                    Source::Coalesce(ps) | Source::All(ps) => {
                        ps.iter().for_each(|p| out.push(join(p)))
                    }
                    Source::Each(p, sub) => walk(sub, &format!("{}[0]", join(p)), out),
                    Source::Const(_) | Source::Expr(_) => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.fields, "", &mut out);
        out
    }

    /// The fields this mapping writes (inbound: canonical paths). The
    /// merge only considers these: a field the mapping never produces is
    /// not "deleted" by a record that lacks it.
    pub fn target_paths(&self) -> Vec<FieldPath> {
        self.fields.plans.iter().map(|f| f.target.clone()).collect()
    }

    /// Whether applying needs lookups resolved (see [`Mapping::lookup_keys`]).
    pub fn has_lookups(&self) -> bool {
        self.has_lookups
    }

    /// What the mapping's output depends on besides the record, as a hash:
    /// its source texts (its file and those it includes) and the concord
    /// version that compiled them. Two records equal as JSON map to equal
    /// results under one fingerprint. `None` for a mapping with look-ups,
    /// whose output also depends on the store.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// The keys `record` will look up, so a batch can resolve them in one
    /// query before applying.
    pub fn lookup_keys(&self, record: &Value) -> Vec<LookupKey> {
        if !self.has_lookups {
            return Vec::new();
        }
        let keys = std::cell::RefCell::new(Vec::new());
        let mut errors = Vec::new();
        apply_fields(
            &self.fields,
            record,
            &mut errors,
            "",
            &LookupMode::Collect(&keys),
        );
        keys.into_inner()
    }

    /// Maps one record and validates the result. Returns the mapped record,
    /// or every error found in it.
    pub fn apply(&self, record: &Value, lookups: &dyn Resolver) -> Result<Value, Vec<RecordError>> {
        let mut errors = Vec::new();
        let out = Value::Object(apply_fields(
            &self.fields,
            record,
            &mut errors,
            "",
            &LookupMode::Resolve(lookups),
        ));
        compile::check_rules(&self.rules, &out, &mut errors);
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// [`Mapping::apply`], then, inbound, the canonical typing of the
    /// entity (currency codes, IBANs, exact amounts …): the result is a
    /// record the store accepts.
    pub fn apply_canonical(
        &self,
        record: &Value,
        lookups: &dyn Resolver,
    ) -> Result<Value, Vec<RecordError>> {
        let out = self.apply(record, lookups)?;
        if self.direction == Direction::Out {
            return Ok(out);
        }
        Entity::canonical(self.entity, out).map_err(|e| {
            let message = e.to_string();
            // The model names the top-level field in its message.
            let field = message
                .split('`')
                .nth(1)
                .unwrap_or(self.entity.as_str())
                .to_owned();
            vec![RecordError {
                field,
                rule: "canonical".into(),
                value: None,
                message,
            }]
        })
    }
}

fn child_label(prefix: &str, label: &str) -> String {
    if prefix.is_empty() {
        label.to_owned()
    } else {
        format!("{prefix}.{label}")
    }
}

/// Maps `record` with `fields` into a new object.
fn apply_fields(
    fields: &Fields,
    record: &Value,
    errors: &mut Vec<RecordError>,
    prefix: &str,
    mode: &LookupMode<'_>,
) -> Map<String, Value> {
    // With a layout, values are kept by field and placed at the end;
    // otherwise each is set at its path as it comes.
    let mut values: Vec<Option<Value>> = Vec::new();
    let mut out = Value::Object(Map::new());
    if fields.layout.is_some() {
        values.resize_with(fields.plans.len(), || None);
    }
    // The top-level values the sources read, found in one pass.
    let mut found: [Option<&Value>; MAX_READS] = [None; MAX_READS];
    let merged = find_keys(&fields.reads, record, &mut found);
    for (index, field) in fields.plans.iter().enumerate() {
        let read_at = &fields.read_at[index];
        let get = |i: usize, path: &FieldPath| match read_at[i] {
            Some(at) if merged => found[at].and_then(|v| walk(&path.segments()[1..], v)),
            _ => path.get(record),
        };
        if let Some(when) = &field.when {
            match when.eval(record) {
                Ok(v) if v.is_true() => {}
                Ok(_) => continue,
                Err(e) => {
                    errors.push(field_error(prefix, field, "when", None, e.to_string()));
                    continue;
                }
            }
        }
        let value = match &field.source {
            Source::Path(p) => get(0, p).map_or(V::Null, V::from_json),
            Source::Coalesce(paths) => paths
                .iter()
                .enumerate()
                .filter_map(|(i, p)| get(i, p))
                .map(V::from_json)
                .find(|v| !v.is_empty())
                .unwrap_or(V::Null),
            Source::All(paths) => V::List(
                paths
                    .iter()
                    .enumerate()
                    .map(|(i, p)| get(i, p).map_or(V::Null, V::from_json))
                    .collect(),
            ),
            Source::Const(v) => V::from_json(v),
            Source::Expr(e) => match e.eval(record) {
                Ok(v) => from_expr(v),
                Err(e) => {
                    errors.push(field_error(prefix, field, "expr", None, e.to_string()));
                    continue;
                }
            },
            Source::Each(path, sub) => {
                let label = child_label(prefix, &field.label);
                let items = match path.get(record) {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(items)) => {
                        let mut mapped = Vec::with_capacity(items.len());
                        for (i, item) in items.iter().enumerate() {
                            mapped.push(Value::Object(apply_fields(
                                sub,
                                item,
                                errors,
                                &format!("{label}[{i}]"),
                                mode,
                            )));
                        }
                        mapped
                    }
                    Some(other) => {
                        errors.push(RecordError {
                            field: label,
                            rule: "each".into(),
                            value: Some(V::from_json(other).shown()),
                            message: format!("{path} is not a list"),
                        });
                        continue;
                    }
                };
                if items.is_empty() {
                    if field.required {
                        errors.push(required_error(&label));
                    }
                    continue;
                }
                if fields.layout.is_some() {
                    values[index] = Some(Value::Array(items));
                } else if let Err(e) = field.target.set(&mut out, Value::Array(items)) {
                    errors.push(RecordError {
                        field: label,
                        rule: "target".into(),
                        value: None,
                        message: e.to_string(),
                    });
                }
                continue;
            }
        };
        let mut value = value;
        let mut failed = false;
        for op in &field.pipe {
            match ops::apply(op, value, mode) {
                Ok(v) => value = v,
                Err((message, input)) => {
                    errors.push(RecordError {
                        field: child_label(prefix, &field.label),
                        rule: op.name().into(),
                        value: (!matches!(input, V::Null)).then(|| input.shown()),
                        message,
                    });
                    failed = true;
                    value = V::Null;
                    break;
                }
            }
        }
        if failed {
            continue;
        }
        if value.is_empty()
            && let Some(default) = &field.default
        {
            value = V::from_json(default);
        }
        if value.is_empty() {
            if field.required {
                errors.push(required_error(&child_label(prefix, &field.label)));
            }
            continue;
        }
        if field.decimal_target
            && let V::Num(n) = &value
        {
            const PLAIN: Op = Op::Decimal(parse::DecimalFormat::plain());
            match ops::apply(&PLAIN, V::Num(n.clone()), mode) {
                Ok(v) => value = v,
                Err((message, input)) => {
                    errors.push(RecordError {
                        field: child_label(prefix, &field.label),
                        rule: "decimal".into(),
                        value: Some(input.shown()),
                        message,
                    });
                    continue;
                }
            }
        }
        let json = value.into_json();
        if fields.layout.is_some() {
            values[index] = Some(json);
            continue;
        }
        let set = match (&mut out, field.target.segments()) {
            // The common case, without walking a path.
            (Value::Object(map), [Segment::Key(key)]) => {
                map.insert(key.clone(), json);
                Ok(())
            }
            (out, _) => field.target.set(out, json).map(|_| ()),
        };
        if let Err(e) = set {
            errors.push(field_error(prefix, field, "target", None, e.to_string()));
        }
    }
    match (&fields.layout, out) {
        (Some(layout), _) => assemble_object(layout, &mut values),
        (None, Value::Object(map)) => map,
        // Setting paths into an object keeps it one.
        (None, _) => Map::new(),
    }
}

fn field_error(
    prefix: &str,
    field: &FieldPlan,
    rule: &str,
    value: Option<String>,
    message: String,
) -> RecordError {
    RecordError {
        field: child_label(prefix, &field.label),
        rule: rule.to_owned(),
        value,
        message,
    }
}

fn required_error(field: &str) -> RecordError {
    RecordError {
        field: field.to_owned(),
        rule: "required".into(),
        value: None,
        message: "is required but missing or blank".into(),
    }
}

fn from_expr(v: expr::Val) -> V<'static> {
    match v {
        expr::Val::Null => V::Null,
        expr::Val::Bool(b) => V::Bool(b),
        expr::Val::Dec(d) => V::Dec(d),
        expr::Val::Str(s) => V::text(s),
        expr::Val::Many(items) => V::List(items.into_iter().map(from_expr).collect()),
        expr::Val::Json(j) => V::Json(std::borrow::Cow::Owned(j)),
    }
}

/// Finds the mapping named `name` (or the file at that path) under `dir`.
pub fn find(dir: &Path, name_or_path: &str) -> Result<Mapping, Vec<LoadError>> {
    let as_path = Path::new(name_or_path);
    if as_path.is_file() {
        return load_file(as_path);
    }
    let (mappings, errors) = load_dir(dir);
    if let Some(m) = mappings.into_iter().find(|m| m.name == name_or_path) {
        return Ok(m);
    }
    let mut errors: Vec<LoadError> = errors;
    errors.push(LoadError {
        file: dir.to_owned(),
        line: 0,
        column: 0,
        message: format!("no mapping named {name_or_path:?} here, and no such file"),
    });
    Err(errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The same mappings twice: as compiled, and with the shortcuts
    /// removed, so each source path is searched for and each value set at
    /// its path.
    fn shipped_pairs() -> Vec<(Mapping, Mapping)> {
        fn strip(fields: &mut Fields) {
            fields.layout = None;
            fields.reads.clear();
            for at in &mut fields.read_at {
                at.iter_mut().for_each(|a| *a = None);
            }
            for plan in &mut fields.plans {
                if let Source::Each(_, sub) = &mut plan.source {
                    strip(sub);
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data");
        let mut pairs = Vec::new();
        for dir in [root, bench] {
            let (laid_out, errors) = load_dir(&dir);
            assert!(errors.is_empty(), "{errors:?}");
            let (mut by_path, _) = load_dir(&dir);
            by_path.iter_mut().for_each(|m| strip(&mut m.fields));
            pairs.extend(laid_out.into_iter().zip(by_path));
        }
        assert!(pairs.len() > 10);
        pairs
    }

    fn map(m: &Mapping, record: &Value) -> (Map<String, Value>, Vec<RecordError>) {
        let mut errors = Vec::new();
        let lookups = Lookups::default();
        let out = apply_fields(
            &m.fields,
            record,
            &mut errors,
            "",
            &LookupMode::Resolve(&lookups),
        );
        (out, errors)
    }

    #[test]
    fn shipped_mappings_have_layouts() {
        for (m, _) in shipped_pairs() {
            assert!(m.fields.layout.is_some(), "{}", m.name);
        }
    }

    #[test]
    fn layouts_are_trees_of_distinct_places() {
        let plan = |target: &str| FieldPlan {
            target: FieldPath::parse(target).unwrap(),
            label: target.to_owned(),
            source: Source::Const(Value::Null),
            pipe: Vec::new(),
            default: None,
            required: false,
            when: None,
            decimal_target: false,
        };
        let laid = |targets: &[&str]| Fields::new(targets.iter().map(|t| plan(t)).collect());
        let fields = laid(&["b.y", "a", "b.x", "c.d.e"]);
        let layout = fields.layout.as_ref().expect("a tree of keys");
        let keys: Vec<&str> = layout.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert!(
            laid(&["lines[0]", "lines[2].x", "lines[2].y"])
                .layout
                .is_some()
        );
        // A target inside another, a key into an array, too much padding.
        assert!(laid(&["a", "a.b"]).layout.is_none());
        assert!(laid(&["a.b", "a"]).layout.is_none());
        assert!(laid(&["a[0]", "a.b"]).layout.is_none());
        assert!(laid(&["a[0]", "a[0].b"]).layout.is_none());
        assert!(laid(&["a[10001]"]).layout.is_none());
    }

    /// Values for shaped records: mostly well-formed, some not.
    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            prop::sample::select(vec![
                "",
                " ",
                "a",
                " Muster  GmbH ",
                "EUR",
                "eur",
                "DE",
                "Deutschland",
                "A",
                "I",
                "1",
                "2",
                "ja",
                "no",
                "2024-01-31",
                "31.01.2024",
                "1.234,56",
                "12.50",
                "DE89370400440532013000",
                "x@Example.com",
                "+49 30 1234567",
                "open",
                "PAID",
                "AUTHORISED",
                "ACCREC",
                "/Date(1700000000000+0000)/",
                "ÄÖÜ straße",
            ])
            .prop_map(|s| Value::String(s.to_owned())),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(2, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Finding sources in one pass and building the output from a
        /// layout give what searching each path and setting each target in
        /// turn give, errors included.
        #[test]
        fn shortcuts_map_like_paths(
            values in prop::collection::vec(value(), 1..48),
            present in prop::collection::vec(prop::bool::weighted(0.8), 48),
            others in prop::collection::btree_map("[a-z]{1,8}", leaf(), 0..120),
        ) {
            for (laid_out, by_path) in shipped_pairs() {
                // Keys no field reads: few, or so many that searching wins.
                let mut record = Value::Object(others.clone().into_iter().collect());
                for (i, path) in laid_out.source_paths().iter().enumerate() {
                    if !present[i % present.len()] {
                        continue;
                    }
                    if let Ok(p) = FieldPath::parse(path) {
                        let _ = p.set(&mut record, values[i % values.len()].clone());
                    }
                }
                prop_assert_eq!(map(&laid_out, &record), map(&by_path, &record), "{}", laid_out.name);
            }
        }
    }
}
