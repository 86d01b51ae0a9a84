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

use crate::model::{Entity, EntityKind, FieldPath};
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
    fields: Vec<FieldPlan>,
    rules: Vec<compile::Rule>,
    has_lookups: bool,
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
    Each(FieldPath, Vec<FieldPlan>),
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
        fn walk(fields: &[FieldPlan], prefix: &str, out: &mut Vec<String>) {
            let join = |p: &dyn std::fmt::Display| {
                if prefix.is_empty() {
                    p.to_string()
                } else {
                    format!("{prefix}.{p}")
                }
            };
            for f in fields {
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
        self.fields.iter().map(|f| f.target.clone()).collect()
    }

    /// Whether applying needs lookups resolved (see [`Mapping::lookup_keys`]).
    pub fn has_lookups(&self) -> bool {
        self.has_lookups
    }

    /// The keys `record` will look up, so a batch can resolve them in one
    /// query before applying.
    pub fn lookup_keys(&self, record: &Value) -> Vec<LookupKey> {
        if !self.has_lookups {
            return Vec::new();
        }
        let keys = std::cell::RefCell::new(Vec::new());
        let mut errors = Vec::new();
        let mut out = Value::Object(Map::new());
        apply_fields(
            &self.fields,
            record,
            &mut out,
            &mut errors,
            "",
            &LookupMode::Collect(&keys),
        );
        keys.into_inner()
    }

    /// Maps one record and validates the result. Returns the mapped record,
    /// or every error found in it.
    pub fn apply(&self, record: &Value, lookups: &dyn Resolver) -> Result<Value, Vec<RecordError>> {
        let mut out = Value::Object(Map::with_capacity(self.fields.len()));
        let mut errors = Vec::new();
        apply_fields(
            &self.fields,
            record,
            &mut out,
            &mut errors,
            "",
            &LookupMode::Resolve(lookups),
        );
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
        Entity::from_value(self.entity, out)
            .map(|e| e.to_value())
            .map_err(|e| {
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

fn apply_fields(
    fields: &[FieldPlan],
    record: &Value,
    out: &mut Value,
    errors: &mut Vec<RecordError>,
    prefix: &str,
    mode: &LookupMode<'_>,
) {
    for field in fields {
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
            Source::Path(p) => p.get(record).map_or(V::Null, V::from_json),
            Source::Coalesce(paths) => paths
                .iter()
                .filter_map(|p| p.get(record))
                .map(V::from_json)
                .find(|v| !v.is_empty())
                .unwrap_or(V::Null),
            Source::All(paths) => V::List(
                paths
                    .iter()
                    .map(|p| p.get(record).map_or(V::Null, V::from_json))
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
                            let mut obj = Value::Object(Map::with_capacity(sub.len()));
                            apply_fields(
                                sub,
                                item,
                                &mut obj,
                                errors,
                                &format!("{label}[{i}]"),
                                mode,
                            );
                            mapped.push(obj);
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
                if let Err(e) = field.target.set(out, Value::Array(items)) {
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
            match ops::apply(
                &Op::Decimal(parse::DecimalFormat::plain()),
                V::Num(n.clone()),
                mode,
            ) {
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
        let set = match (&mut *out, field.target.segments()) {
            // The common case, without walking a path.
            (Value::Object(map), [crate::model::Segment::Key(key)]) => {
                map.insert(key.clone(), json);
                Ok(())
            }
            (out, _) => field.target.set(out, json).map(|_| ()),
        };
        if let Err(e) = set {
            errors.push(field_error(prefix, field, "target", None, e.to_string()));
        }
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

fn from_expr(v: expr::Val) -> V {
    match v {
        expr::Val::Null => V::Null,
        expr::Val::Bool(b) => V::Bool(b),
        expr::Val::Dec(d) => V::Dec(d),
        expr::Val::Str(s) => V::Str(s),
        expr::Val::Many(items) => V::List(items.into_iter().map(from_expr).collect()),
        expr::Val::Json(j) => V::Json(j),
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
