//! From a mapping file to a [`Mapping`]: every check that can be made
//! without a record is made here, and every problem found is reported with
//! its file, line and column — not just the first.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;
use toml::Spanned;

use super::expr::{self, CmpOp, Expr};
use super::ops::{Fallback, Kind, Op, Table};
use super::parse::{DateFormat, DecimalFormat, RoundingMode, Zone};
use super::schema::{self, FieldKind};
use super::spec::{
    Defaults, Direction, FieldSpec, MappingFile, OneOrMany, PipelineSpec, RuleSpec, SharedFile,
    TableSpec,
};
use super::{FieldPlan, LoadError, Mapping, RecordError, Source};
use crate::located::SourceFile;
use crate::model::{Currency, EntityKind, FieldPath, Iban, Segment};

/// Shared files (tables and pipelines for `include`) end in this.
pub const SHARED_SUFFIX: &str = ".shared.toml";
/// Sidecar test files end in this.
pub const TEST_SUFFIX: &str = ".test.toml";

/// Loads and compiles one mapping file, reporting every problem in it.
pub fn load_file(path: &Path) -> Result<Mapping, Vec<LoadError>> {
    let source = SourceFile::read(path).map_err(|e| vec![e])?;
    let file: MappingFile = source.parse().map_err(|e| vec![e])?;
    let mut c = Compiler::new(source, &file.defaults);
    let header = file.mapping.get_ref();

    let entity = match EntityKind::from_str(header.entity.get_ref()) {
        Ok(e) => Some(e),
        Err(e) => {
            c.error(&header.entity, e.to_string());
            None
        }
    };
    if header.name.get_ref().trim().is_empty() {
        c.error(&header.name, "the mapping needs a name");
    }
    if let Err(e) = crate::model::SystemName::parse(header.system.get_ref()) {
        c.error(&header.system, e.to_string());
    }

    // Shared tables and pipelines first, then the file's own (which win).
    let mut visiting = vec![path.canonicalize().unwrap_or_else(|_| path.to_owned())];
    for include in &header.include {
        c.include(include, &mut visiting);
    }
    c.add_tables(0, &file.tables);
    c.add_pipelines(0, &file.pipelines);

    let direction = header.direction;
    let entity_kind = entity.unwrap_or(EntityKind::Customer);
    let canonical = schema::fields(entity_kind);
    let ctx = FieldCtx {
        direction,
        system: header.system.get_ref().clone(),
        targets: (direction == Direction::In && entity.is_some()).then_some(canonical),
        sources: (direction == Direction::Out && entity.is_some()).then_some(canonical),
    };
    let fields = c.fields(&file.fields, &ctx);
    let rules = file
        .validate
        .iter()
        .filter_map(|r| c.rule(r, ctx.targets))
        .collect();
    if fields.is_empty() && c.errors.is_empty() {
        c.error(&file.mapping, "the mapping has no [fields]");
    }
    let has_lookups = c.has_lookups;
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    // What the output of a mapping without look-ups depends on, besides
    // the record: the texts it was compiled from (its file and each
    // included one) and the concord that compiled them.
    let fingerprint = (!has_lookups).then(|| {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(concat!("concord ", env!("CARGO_PKG_VERSION")).as_bytes());
        for source in &c.sources {
            h.update(source.text.len().to_le_bytes());
            h.update(source.text.as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    });
    Ok(Mapping {
        name: header.name.get_ref().clone(),
        version: header.version,
        system: header.system.get_ref().clone(),
        entity: entity_kind,
        direction,
        description: header.description.clone(),
        file: path.to_owned(),
        fields: super::Fields::new(fields),
        rules,
        has_lookups,
        fingerprint,
    })
}

/// Loads every mapping under `dir` (recursively, skipping shared and test
/// files). Returns what compiled and every error of what did not; two
/// mappings with the same name are an error too.
pub fn load_dir(dir: &Path) -> (Vec<Mapping>, Vec<LoadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    collect_files(dir, &mut files, &mut errors);
    files.retain(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.ends_with(".toml") && !name.ends_with(SHARED_SUFFIX) && !name.ends_with(TEST_SUFFIX)
    });
    files.sort();
    let mut mappings: Vec<Mapping> = Vec::new();
    for file in files {
        match load_file(&file) {
            Ok(m) => {
                if let Some(other) = mappings.iter().find(|o| o.name == m.name) {
                    errors.push(LoadError {
                        file: file.clone(),
                        line: 1,
                        column: 1,
                        message: format!(
                            "mapping name {:?} is also used by {}",
                            m.name,
                            other.file.display()
                        ),
                    });
                } else {
                    mappings.push(m);
                }
            }
            Err(e) => errors.extend(e),
        }
    }
    (mappings, errors)
}

/// Every file under `path` (or `path` itself).
pub fn collect_files(path: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<LoadError>) {
    if path.is_file() {
        out.push(path.to_owned());
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(LoadError {
                file: path.to_owned(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_files(&p, out, errors);
        } else {
            out.push(p);
        }
    }
}

struct FieldCtx {
    direction: Direction,
    system: String,
    /// Inbound: the canonical fields targets must name.
    targets: Option<&'static [(&'static str, FieldKind)]>,
    /// Outbound: the canonical fields sources must name.
    sources: Option<&'static [(&'static str, FieldKind)]>,
}

struct Compiler {
    /// The file being compiled first, then included files.
    sources: Vec<SourceFile>,
    tables: HashMap<String, Arc<Table>>,
    pipelines: HashMap<String, (usize, Vec<Spanned<toml::Value>>)>,
    /// Pipelines being expanded, to catch cycles.
    expanding: Vec<String>,
    decimal: DecimalFormat,
    date: DateFormat,
    zone: Zone,
    phone_country: Option<String>,
    has_lookups: bool,
    errors: Vec<super::LoadError>,
    /// Which source file spans currently refer to.
    current: usize,
    system: String,
}

impl Compiler {
    fn new(source: SourceFile, defaults: &Defaults) -> Compiler {
        let mut c = Compiler {
            sources: vec![source],
            tables: HashMap::new(),
            pipelines: HashMap::new(),
            expanding: Vec::new(),
            decimal: DecimalFormat::plain(),
            date: DateFormat::Iso,
            zone: Zone::UTC,
            phone_country: None,
            has_lookups: false,
            errors: Vec::new(),
            current: 0,
            system: String::new(),
        };
        if let Some(d) = &defaults.decimal {
            match DecimalFormat::from_str(d.get_ref()) {
                Ok(f) => c.decimal = f,
                Err(e) => c.error(d, e.to_string()),
            }
        }
        if let Some(d) = &defaults.date {
            match DateFormat::from_str(d.get_ref()) {
                Ok(f) => c.date = f,
                Err(e) => c.error(d, e.to_string()),
            }
        }
        if let Some(z) = &defaults.zone {
            match Zone::from_str(z.get_ref()) {
                Ok(f) => c.zone = f,
                Err(e) => c.error(z, e.to_string()),
            }
        }
        c.phone_country = defaults.phone_country.as_ref().map(|p| p.get_ref().clone());
        c
    }

    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let e = self.sources[self.current].error(Some(at.span()), message);
        self.errors.push(e);
    }

    fn error_span(&mut self, span: Range<usize>, message: impl Into<String>) {
        let e = self.sources[self.current].error(Some(span), message);
        self.errors.push(e);
    }

    /// Reads an included shared file (relative to the including file),
    /// and the files it includes in turn.
    fn include(&mut self, include: &Spanned<String>, visiting: &mut Vec<PathBuf>) {
        let base = self.sources[self.current]
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = base.join(include.get_ref());
        let canonical = path.canonicalize().unwrap_or(path.clone());
        if visiting.contains(&canonical) {
            self.error(
                include,
                format!("{} is included in a cycle", path.display()),
            );
            return;
        }
        let source = match SourceFile::read(&path) {
            Ok(s) => s,
            Err(e) => {
                self.error(include, e.message);
                return;
            }
        };
        let shared: SharedFile = match source.parse() {
            Ok(s) => s,
            Err(e) => {
                self.errors.push(e);
                return;
            }
        };
        self.sources.push(source);
        let index = self.sources.len() - 1;
        let outer = self.current;
        self.current = index;
        visiting.push(canonical);
        for nested in &shared.include {
            self.include(nested, visiting);
        }
        visiting.pop();
        self.add_tables(index, &shared.tables);
        self.add_pipelines(index, &shared.pipelines);
        self.current = outer;
    }

    fn add_tables(&mut self, file: usize, tables: &BTreeMap<Spanned<String>, Spanned<TableSpec>>) {
        let outer = self.current;
        self.current = file;
        for (name, spec) in tables {
            let spec_ref = spec.get_ref();
            let fallback = match &spec_ref.fallback {
                None => Fallback::Error,
                Some(f) => match f.get_ref() {
                    toml::Value::String(s) if s == "error" => Fallback::Error,
                    toml::Value::String(s) if s == "pass" => Fallback::Pass,
                    toml::Value::Table(t) if t.len() == 1 && t.contains_key("default") => {
                        Fallback::Default(toml_to_json(&t["default"]))
                    }
                    _ => {
                        self.error(f, "fallback is \"error\", \"pass\" or { default = VALUE }");
                        Fallback::Error
                    }
                },
            };
            let entries = spec_ref
                .map
                .iter()
                .map(|(k, v)| {
                    let key = if spec_ref.ignore_case {
                        k.trim().to_lowercase()
                    } else {
                        k.trim().to_owned()
                    };
                    (key, toml_to_json(v))
                })
                .collect();
            self.tables.insert(
                name.get_ref().clone(),
                Arc::new(Table {
                    name: name.get_ref().clone(),
                    entries,
                    ignore_case: spec_ref.ignore_case,
                    fallback,
                }),
            );
        }
        self.current = outer;
    }

    fn add_pipelines(
        &mut self,
        file: usize,
        pipelines: &BTreeMap<Spanned<String>, Spanned<PipelineSpec>>,
    ) {
        for (name, spec) in pipelines {
            self.pipelines
                .insert(name.get_ref().clone(), (file, spec.get_ref().steps.clone()));
        }
    }

    fn fields(
        &mut self,
        specs: &BTreeMap<Spanned<String>, Spanned<FieldSpec>>,
        ctx: &FieldCtx,
    ) -> Vec<FieldPlan> {
        self.system = ctx.system.clone();
        self.field_list(specs, ctx, ctx.targets, ctx.sources)
    }

    /// Compiles sibling fields; two that write the same place are an error.
    fn field_list(
        &mut self,
        specs: &BTreeMap<Spanned<String>, Spanned<FieldSpec>>,
        ctx: &FieldCtx,
        targets: Option<&'static [(&'static str, FieldKind)]>,
        sources: Option<&'static [(&'static str, FieldKind)]>,
    ) -> Vec<FieldPlan> {
        let mut plans: Vec<FieldPlan> = Vec::with_capacity(specs.len());
        for (target, spec) in specs {
            let Some(plan) = self.field(target, spec, ctx, targets, sources) else {
                continue;
            };
            if let Some(other) = plans.iter().find(|p| p.target == plan.target) {
                let message = format!(
                    "field {:?} writes {} like field {:?}; one of them would be lost",
                    plan.label, plan.target, other.label
                );
                self.error(target, message);
                continue;
            }
            plans.push(plan);
        }
        plans
    }

    fn field(
        &mut self,
        target_name: &Spanned<String>,
        spec: &Spanned<FieldSpec>,
        ctx: &FieldCtx,
        targets: Option<&'static [(&'static str, FieldKind)]>,
        sources: Option<&'static [(&'static str, FieldKind)]>,
    ) -> Option<FieldPlan> {
        let s = spec.get_ref();
        let label = target_name.get_ref().clone();
        let mut target = match FieldPath::parse(&label) {
            Ok(p) => p,
            Err(e) => {
                self.error(target_name, e.to_string());
                return None;
            }
        };
        // Inbound `extra.NAME` is the canonical record's top-level NAME.
        let mut target_kind = None;
        if let Some(fields) = targets {
            let keys = keys_of(&target);
            match schema::lookup(fields, &keys) {
                Ok(Some(FieldKind::List(inner)))
                    if matches!(target.segments().last(), Some(Segment::Index(_))) =>
                {
                    target_kind = Some(*inner);
                }
                Ok(kind) => target_kind = kind,
                Err(e) => {
                    self.error(target_name, format!("target {label:?}: {e}"));
                    return None;
                }
            }
            if keys.first() == Some(&schema::EXTRA) {
                target = FieldPath::from_segments(target.segments()[1..].to_vec())?;
            }
        }

        let given = [
            s.from.is_some(),
            s.all.is_some(),
            s.value.is_some(),
            s.expr.is_some(),
            s.each.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            self.error(
                spec,
                format!("field {label:?} needs exactly one of from, all, value, expr or each"),
            );
            return None;
        }
        if s.fields.is_some() && s.each.is_none() {
            self.error(
                spec,
                format!("field {label:?}: nested fields need each = \"PATH\""),
            );
            return None;
        }
        let when = s.when.as_ref().and_then(|w| self.expr(w, sources));

        let mut start = Kind::Any;
        let source = if let Some(from) = &s.from {
            match from.get_ref().clone() {
                OneOrMany::One(p) => Source::Path(self.source_path(from, &p, sources)?),
                OneOrMany::Many(ps) => {
                    if ps.is_empty() {
                        self.error(from, "from = [] names no source");
                        return None;
                    }
                    let mut paths = Vec::new();
                    for p in ps {
                        paths.push(self.source_path(from, &p, sources)?);
                    }
                    Source::Coalesce(paths)
                }
            }
        } else if let Some(all) = &s.all {
            start = Kind::List;
            let mut paths = Vec::new();
            for p in all.get_ref() {
                paths.push(self.source_path(all, p, sources)?);
            }
            Source::All(paths)
        } else if let Some(value) = &s.value {
            Source::Const(toml_to_json(value))
        } else if let Some(e) = &s.expr {
            Source::Expr(self.expr(e, sources)?)
        } else if let Some(each) = &s.each {
            let path = self.source_path(each, each.get_ref(), sources)?;
            let Some(sub) = &s.fields else {
                self.error(
                    each,
                    format!("field {label:?}: each needs fields = {{ … }}"),
                );
                return None;
            };
            if !s.pipe.is_empty() {
                self.error(
                    spec,
                    format!("field {label:?}: each takes no pipe; put pipes on its fields"),
                );
            }
            // The element schemas: what each element maps into and from.
            let sub_targets = match (targets, target_kind) {
                (Some(_), Some(FieldKind::List(FieldKind::Object(o)))) => Some(*o),
                (Some(_), Some(other)) => {
                    self.error(
                        target_name,
                        format!(
                            "target {label:?} is a {} field, not a list of records",
                            other.name()
                        ),
                    );
                    return None;
                }
                _ => None,
            };
            let sub_sources = match sources {
                Some(fields) => match schema::lookup(fields, &keys_of(&path)) {
                    Ok(Some(FieldKind::List(FieldKind::Object(o)))) => Some(*o),
                    _ => None,
                },
                None => None,
            };
            let plans = self.field_list(sub, ctx, sub_targets, sub_sources);
            return Some(FieldPlan {
                target,
                label,
                source: Source::Each(path, super::Fields::new(plans)),
                pipe: Vec::new(),
                default: None,
                required: s.required,
                when,
                decimal_target: false,
            });
        } else {
            return None;
        };

        let mut pipe = Vec::new();
        self.expanding.clear();
        for step in &s.pipe {
            self.step(step, &mut pipe);
        }
        self.check_kinds(spec, &label, start, &pipe, target_kind);

        Some(FieldPlan {
            target,
            label,
            source,
            pipe,
            default: s.default.as_ref().map(toml_to_json),
            required: s.required,
            when,
            decimal_target: ctx.direction == Direction::In
                && matches!(target_kind, Some(FieldKind::Decimal)),
        })
    }

    fn source_path<T>(
        &mut self,
        at: &Spanned<T>,
        text: &str,
        sources: Option<&'static [(&'static str, FieldKind)]>,
    ) -> Option<FieldPath> {
        match FieldPath::parse(text) {
            Ok(p) => {
                if let Some(fields) = sources {
                    let keys = keys_of(&p);
                    if let Err(e) = schema::lookup(fields, &keys) {
                        self.error(at, format!("source {text:?}: {e}"));
                        return None;
                    }
                    // `extra.NAME` of a canonical record is its top-level NAME.
                    if keys.first() == Some(&schema::EXTRA) {
                        return FieldPath::from_segments(p.segments()[1..].to_vec());
                    }
                }
                Some(p)
            }
            Err(e) => {
                self.error(at, e.to_string());
                None
            }
        }
    }

    fn expr(
        &mut self,
        text: &Spanned<String>,
        fields: Option<&'static [(&'static str, FieldKind)]>,
    ) -> Option<Expr> {
        match expr::parse(text.get_ref()) {
            Ok(e) => {
                if let Some(fields) = fields {
                    for path in e.paths() {
                        let keys: Vec<&str> = path
                            .iter()
                            .filter_map(|s| match s {
                                expr::Step::Key(k) => Some(k.as_str()),
                                _ => None,
                            })
                            .collect();
                        if let Err(err) = schema::lookup(fields, &keys) {
                            self.error(text, format!("in {:?}: {err}", text.get_ref()));
                            return None;
                        }
                    }
                    // `extra.NAME` of a canonical record is its top-level NAME.
                    let mut e = e;
                    e.strip_leading_key(schema::EXTRA);
                    return Some(e);
                }
                Some(e)
            }
            Err(e) => {
                // Point at the character inside the quoted string.
                let span = text.span();
                let at = (span.start + 1 + e.offset).min(span.end);
                self.error_span(at..at, format!("in {:?}: {}", text.get_ref(), e));
                None
            }
        }
    }

    fn check_kinds(
        &mut self,
        spec: &Spanned<FieldSpec>,
        label: &str,
        start: Kind,
        pipe: &[Op],
        target: Option<FieldKind>,
    ) {
        let mut kind = start;
        let mut previous = "the source";
        for op in pipe {
            let (accepts, output) = op.signature();
            if kind == Kind::List && !matches!(op, Op::Join(_) | Op::NullIfEmpty) {
                // Element-wise over a list: the list stays a list.
                previous = op.name();
                continue;
            }
            if !accepts.contains(&kind) {
                self.error(
                    spec,
                    format!(
                        "field {label:?}: type mismatch: {} cannot take the {} that {previous} makes",
                        op.name(),
                        kind.name()
                    ),
                );
                return;
            }
            kind = output;
            previous = op.name();
        }
        let Some(target) = target else { return };
        let clash = match target {
            FieldKind::Decimal => {
                matches!(kind, Kind::Date | Kind::DateTime | Kind::Bool | Kind::List)
            }
            FieldKind::Date => {
                matches!(kind, Kind::Decimal | Kind::Number | Kind::Bool | Kind::List)
            }
            FieldKind::Text | FieldKind::Currency | FieldKind::Iban | FieldKind::Id => {
                matches!(kind, Kind::List)
            }
            FieldKind::List(_) => !matches!(kind, Kind::Any | Kind::List),
            FieldKind::Object(_) => !matches!(kind, Kind::Any),
        };
        if clash {
            self.error(
                spec,
                format!(
                    "field {label:?}: type mismatch: the canonical field is {}, but {previous} makes {}",
                    target.name(),
                    kind.name()
                ),
            );
        }
    }

    fn step(&mut self, step: &Spanned<toml::Value>, out: &mut Vec<Op>) {
        let (name, arg) = match step.get_ref() {
            toml::Value::String(name) => (name.as_str(), None),
            toml::Value::Table(t) if t.len() == 1 => {
                let (k, v) = t
                    .iter()
                    .next()
                    .map(|(k, v)| (k.as_str(), v))
                    .unwrap_or(("", v_none()));
                (k, Some(v))
            }
            _ => {
                self.error(
                    step,
                    "a step is a name (\"trim\") or a table with one key ({ decimal = \"de\" })",
                );
                return;
            }
        };
        let op = match self.op(name, arg, step, out) {
            Ok(Some(op)) => op,
            Ok(None) => return,
            Err(message) => {
                self.error(step, format!("{name}: {message}"));
                return;
            }
        };
        if matches!(op, Op::Lookup { .. }) {
            self.has_lookups = true;
        }
        out.push(op);
    }

    /// Compiles one step. `Ok(None)` when the step expanded into `out`
    /// itself (`use`).
    fn op(
        &mut self,
        name: &str,
        arg: Option<&toml::Value>,
        at: &Spanned<toml::Value>,
        out: &mut Vec<Op>,
    ) -> Result<Option<Op>, String> {
        let text = |what: &str| -> Result<String, String> {
            match arg {
                Some(toml::Value::String(s)) => Ok(s.clone()),
                _ => Err(format!("needs {what}, e.g. {{ {name} = \"…\" }}")),
            }
        };
        let none = |op: Op| -> Result<Option<Op>, String> {
            if arg.is_some() {
                Err("takes no argument".into())
            } else {
                Ok(Some(op))
            }
        };
        let regex = |pattern: &str| {
            Regex::new(pattern).map_err(|e| format!("invalid regex {pattern:?}: {e}"))
        };
        Ok(Some(match name {
            "trim" => return none(Op::Trim),
            "upper" => return none(Op::Upper),
            "lower" => return none(Op::Lower),
            "collapse" => return none(Op::Collapse),
            "null_if_empty" => return none(Op::NullIfEmpty),
            "text" => return none(Op::ToText),
            "number" => return none(Op::ToNumber),
            "int" => return none(Op::ToInt),
            "bool" => return none(Op::ToBool),
            "neg" => return none(Op::Neg),
            "abs" => return none(Op::Abs),
            "email" => return none(Op::Email),
            "replace" => {
                let Some(toml::Value::Table(t)) = arg else {
                    return Err("needs { pattern = \"…\", with = \"…\" }".into());
                };
                let pattern = t
                    .get("pattern")
                    .and_then(toml::Value::as_str)
                    .ok_or("needs pattern")?;
                let with = t.get("with").and_then(toml::Value::as_str).unwrap_or("");
                if let Some(extra) = t.keys().find(|k| *k != "pattern" && *k != "with") {
                    return Err(format!("unknown key {extra:?}; expected pattern and with"));
                }
                let class = super::ops::CharClass::of(pattern, with).map(Box::new);
                Op::Replace(regex(pattern)?, with.to_owned(), class)
            }
            "extract" => Op::Extract(regex(&text("a regex")?)?),
            "split" => Op::Split(text("a separator")?),
            "join" => Op::Join(text("a separator")?),
            "prefix" => Op::Prefix(text("text")?),
            "suffix" => Op::Suffix(text("text")?),
            "decimal" | "format_decimal" => {
                let fmt = match arg {
                    None => self.decimal,
                    Some(toml::Value::String(s)) => {
                        DecimalFormat::from_str(s).map_err(|e| e.to_string())?
                    }
                    Some(_) => return Err("takes a number format name such as \"de\"".into()),
                };
                if name == "decimal" {
                    Op::Decimal(fmt)
                } else {
                    Op::FormatDecimal(fmt)
                }
            }
            "minor_units" => Op::MinorUnits(
                small_int(arg, 0, 10).ok_or("takes the number of decimals, 0 to 10")?,
            ),
            "round" => match arg {
                Some(toml::Value::Table(t)) => {
                    let scale = small_int(t.get("scale"), 0, 28).ok_or("scale is 0 to 28")?;
                    let mode = match t.get("mode") {
                        None => RoundingMode::HalfUp,
                        Some(toml::Value::String(m)) => {
                            RoundingMode::from_str(m).map_err(|e| e.to_string())?
                        }
                        Some(_) => return Err("mode is a name such as \"half_even\"".into()),
                    };
                    Op::Round(scale, mode)
                }
                other => Op::Round(
                    small_int(other, 0, 28).ok_or("takes a scale 0 to 28 or { scale, mode }")?,
                    RoundingMode::HalfUp,
                ),
            },
            "date" | "datetime" | "format_date" => {
                let (fmt, zone) = match arg {
                    None => (self.date.clone(), self.zone),
                    Some(toml::Value::String(s)) => (
                        DateFormat::from_str(s).map_err(|e| e.to_string())?,
                        self.zone,
                    ),
                    Some(toml::Value::Table(t)) => {
                        let fmt = match t.get("format") {
                            None => self.date.clone(),
                            Some(toml::Value::String(s)) => {
                                DateFormat::from_str(s).map_err(|e| e.to_string())?
                            }
                            Some(_) => return Err("format is text".into()),
                        };
                        let zone = match t.get("zone") {
                            None => self.zone,
                            Some(toml::Value::String(s)) => {
                                Zone::from_str(s).map_err(|e| e.to_string())?
                            }
                            Some(_) => return Err("zone is text such as \"Europe/Berlin\"".into()),
                        };
                        if let Some(extra) = t.keys().find(|k| *k != "format" && *k != "zone") {
                            return Err(format!("unknown key {extra:?}; expected format and zone"));
                        }
                        (fmt, zone)
                    }
                    Some(_) => return Err("takes a format or { format, zone }".into()),
                };
                match name {
                    "date" => Op::Date(fmt, zone),
                    "datetime" => Op::DateTime(fmt, zone),
                    _ => Op::FormatDate(fmt, zone),
                }
            }
            "phone" => match arg {
                None => Op::Phone(self.phone_country.clone()),
                Some(toml::Value::String(c)) => Op::Phone(Some(c.clone())),
                Some(_) => return Err("takes a default country such as \"DE\"".into()),
            },
            "table" => {
                let table = text("a table name")?;
                match self.tables.get(&table) {
                    Some(t) => Op::Table(t.clone()),
                    None => {
                        let mut known: Vec<&String> = self.tables.keys().collect();
                        known.sort();
                        return Err(format!("no table {table:?}; defined: {known:?}"));
                    }
                }
            }
            "lookup" => {
                let (entity, system) = match arg {
                    Some(toml::Value::String(e)) => (e.clone(), self.system.clone()),
                    Some(toml::Value::Table(t)) => (
                        t.get("entity")
                            .and_then(toml::Value::as_str)
                            .ok_or("needs entity")?
                            .to_owned(),
                        t.get("system")
                            .and_then(toml::Value::as_str)
                            .map_or_else(|| self.system.clone(), str::to_owned),
                    ),
                    _ => return Err("takes an entity or { entity, system }".into()),
                };
                let entity = EntityKind::from_str(&entity).map_err(|e| e.to_string())?;
                Op::Lookup { entity, system }
            }
            "use" => {
                let pipeline = text("a pipeline name")?;
                if self.expanding.contains(&pipeline) {
                    let mut cycle = self.expanding.clone();
                    cycle.push(pipeline);
                    return Err(format!(
                        "pipelines use each other in a cycle: {}",
                        cycle.join(" → ")
                    ));
                }
                let Some((file, steps)) = self.pipelines.get(&pipeline).cloned() else {
                    let mut known: Vec<&String> = self.pipelines.keys().collect();
                    known.sort();
                    return Err(format!("no pipeline {pipeline:?}; defined: {known:?}"));
                };
                self.expanding.push(pipeline);
                let outer = self.current;
                self.current = file;
                for step in &steps {
                    self.step(step, out);
                }
                self.current = outer;
                self.expanding.pop();
                let _ = at;
                return Ok(None);
            }
            other => {
                return Err(format!(
                    "unknown transform {other:?}; known: trim, upper, lower, collapse, null_if_empty, replace, extract, \
                     split, join, prefix, suffix, text, number, int, bool, decimal, minor_units, round, neg, abs, \
                     date, datetime, format_date, format_decimal, email, phone, table, lookup, use"
                ));
            }
        }))
    }

    fn rule(
        &mut self,
        spec: &Spanned<RuleSpec>,
        canonical: Option<&'static [(&'static str, FieldKind)]>,
    ) -> Option<Rule> {
        let s = spec.get_ref();
        let mut checks = Vec::new();
        let field = match &s.field {
            Some(f) => {
                let e = self.expr(f, canonical)?;
                if !matches!(e, Expr::Path(_)) {
                    self.error(f, "field is a path such as email or lines[*].quantity");
                    return None;
                }
                Some((f.get_ref().clone(), e))
            }
            None => None,
        };
        if s.required {
            checks.push(Check::Required);
        }
        if let Some(r) = &s.regex {
            match Regex::new(r.get_ref()) {
                Ok(re) => checks.push(Check::Regex(re)),
                Err(e) => self.error(r, format!("invalid regex: {e}")),
            }
        }
        if let Some(min) = &s.min {
            checks.push(Check::Cmp(CmpOp::Ge, literal(min), "min"));
        }
        if let Some(max) = &s.max {
            checks.push(Check::Cmp(CmpOp::Le, literal(max), "max"));
        }
        if let Some(values) = &s.one_of {
            checks.push(Check::OneOf(values.iter().map(toml_to_json).collect()));
        }
        if s.min_length.is_some() || s.max_length.is_some() {
            checks.push(Check::Length(s.min_length, s.max_length));
        }
        if s.iban {
            checks.push(Check::Iban);
        }
        if s.currency {
            checks.push(Check::Currency);
        }
        if s.email {
            checks.push(Check::Email);
        }
        let rule = match &s.rule {
            Some(r) => Some((r.get_ref().clone(), self.expr(r, canonical)?)),
            None => None,
        };
        match (&field, &rule) {
            (None, None) => {
                self.error(
                    spec,
                    "a rule needs field = \"PATH\" with checks, or rule = \"EXPRESSION\"",
                );
                return None;
            }
            (Some(_), None) if checks.is_empty() => {
                self.error(spec, "this rule checks nothing: add required, regex, min, max, enum, min_length, max_length, iban, currency or email");
                return None;
            }
            (None, Some(_)) if !checks.is_empty() => {
                self.error(spec, "checks such as regex or min need field = \"PATH\"");
                return None;
            }
            _ => {}
        }
        Some(Rule {
            name: s.name.clone(),
            message: s.message.clone(),
            field,
            checks,
            rule,
        })
    }
}

fn v_none() -> &'static toml::Value {
    static NONE: std::sync::OnceLock<toml::Value> = std::sync::OnceLock::new();
    NONE.get_or_init(|| toml::Value::Boolean(false))
}

fn small_int(v: Option<&toml::Value>, min: i64, max: i64) -> Option<u32> {
    match v {
        Some(toml::Value::Integer(i)) if (min..=max).contains(i) => u32::try_from(*i).ok(),
        _ => None,
    }
}

fn keys_of(path: &FieldPath) -> Vec<&str> {
    path.segments()
        .iter()
        .filter_map(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
        .collect()
}

/// TOML into JSON. Floats become JSON numbers through their shortest
/// decimal text, so `12.5` stays `12.5`.
pub fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

fn literal(v: &toml::Value) -> expr::Val {
    match v {
        toml::Value::Integer(i) => expr::Val::Dec((*i).into()),
        toml::Value::Float(f) => {
            rust_decimal::Decimal::from_str(&f.to_string()).map_or(expr::Val::Null, expr::Val::Dec)
        }
        toml::Value::String(s) => expr::Val::Str(s.clone()),
        toml::Value::Datetime(d) => expr::Val::Str(d.to_string()),
        toml::Value::Boolean(b) => expr::Val::Bool(*b),
        _ => expr::Val::Null,
    }
}

/// A compiled validation rule.
#[derive(Debug)]
pub struct Rule {
    name: Option<String>,
    message: Option<String>,
    field: Option<(String, Expr)>,
    checks: Vec<Check>,
    rule: Option<(String, Expr)>,
}

#[derive(Debug)]
enum Check {
    Required,
    Regex(Regex),
    Cmp(CmpOp, expr::Val, &'static str),
    OneOf(Vec<Value>),
    Length(Option<usize>, Option<usize>),
    Iban,
    Currency,
    Email,
}

impl Check {
    fn name(&self) -> &'static str {
        match self {
            Check::Required => "required",
            Check::Regex(_) => "regex",
            Check::Cmp(_, _, name) => name,
            Check::OneOf(_) => "enum",
            Check::Length(..) => "length",
            Check::Iban => "iban",
            Check::Currency => "currency",
            Check::Email => "email",
        }
    }

    /// `None` when `value` passes, else why not.
    fn fails(&self, value: &expr::Val) -> Option<String> {
        let text = match value {
            expr::Val::Str(s) => Some(s.clone()),
            expr::Val::Dec(d) => Some(d.to_string()),
            expr::Val::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        match self {
            Check::Required => {
                value_is_blank(value).then(|| "is required but missing or blank".into())
            }
            Check::Regex(re) => match &text {
                Some(t) if re.is_match(t) => None,
                _ => Some(format!("does not match {}", re.as_str())),
            },
            Check::Cmp(op, limit, _) => match expr::compare(*op, value.clone(), limit.clone()) {
                expr::Val::Bool(true) => None,
                _ => Some(format!(
                    "must be {} {}",
                    if *op == CmpOp::Ge {
                        "at least"
                    } else {
                        "at most"
                    },
                    shown_val(limit)
                )),
            },
            Check::OneOf(values) => {
                let json = value.clone().into_json();
                (!values.contains(&json)).then(|| {
                    let list: Vec<String> = values.iter().map(Value::to_string).collect();
                    format!("must be one of {}", list.join(", "))
                })
            }
            Check::Length(min, max) => {
                let n = text.as_ref().map_or(0, |t| t.chars().count());
                match (min, max) {
                    (Some(min), _) if n < *min => {
                        Some(format!("is {n} characters; at least {min} needed"))
                    }
                    (_, Some(max)) if n > *max => {
                        Some(format!("is {n} characters; at most {max} allowed"))
                    }
                    _ => None,
                }
            }
            Check::Iban => match &text {
                Some(t) => Iban::parse(t).err().map(|e| e.to_string()),
                None => Some("is not an IBAN".into()),
            },
            Check::Currency => match &text {
                Some(t) => Currency::parse(t).err().map(|e| e.to_string()),
                None => Some("is not a currency code".into()),
            },
            Check::Email => match &text {
                Some(t) => super::parse::normalize_email(t)
                    .err()
                    .map(|e| e.to_string()),
                None => Some("is not an email address".into()),
            },
        }
    }
}

fn value_is_blank(v: &expr::Val) -> bool {
    match v {
        expr::Val::Null => true,
        expr::Val::Str(s) => s.trim().is_empty(),
        _ => false,
    }
}

fn shown_val(v: &expr::Val) -> String {
    match v {
        expr::Val::Str(s) => format!("{s:?}"),
        other => other.clone().into_json().to_string(),
    }
}

/// Runs every rule on `record`, adding each failure to `errors`.
pub fn check_rules(rules: &[Rule], record: &Value, errors: &mut Vec<RecordError>) {
    for rule in rules {
        if let Some((label, path)) = &rule.field {
            let value = path.eval(record).unwrap_or(expr::Val::Null);
            let values: Vec<(String, expr::Val)> = match value {
                expr::Val::Many(items) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (label.replacen("[*]", &format!("[{i}]"), 1), v))
                    .collect(),
                other => vec![(label.clone(), other)],
            };
            for (field, value) in values {
                for check in &rule.checks {
                    // Missing values only fail `required`.
                    if !matches!(check, Check::Required) && value_is_blank(&value) {
                        continue;
                    }
                    if let Some(reason) = check.fails(&value) {
                        errors.push(RecordError {
                            field: field.clone(),
                            rule: rule.name.clone().unwrap_or_else(|| check.name().to_owned()),
                            value: (!value_is_blank(&value))
                                .then(|| super::ops::cut(&shown_val(&value), 80)),
                            message: rule.message.clone().unwrap_or(reason),
                        });
                    }
                }
            }
        }
        if let Some((text, e)) = &rule.rule {
            let failure = match e.eval(record) {
                Ok(expr::Val::Bool(false)) => Some(format!("{text} does not hold")),
                Ok(_) => None,
                Err(err) => Some(format!("{text}: {err}")),
            };
            if let Some(reason) = failure {
                errors.push(RecordError {
                    field: first_path(e).unwrap_or_else(|| text.clone()),
                    rule: rule.name.clone().unwrap_or_else(|| "rule".to_owned()),
                    value: None,
                    message: rule.message.clone().unwrap_or(reason),
                });
            }
        }
    }
}

fn first_path(e: &Expr) -> Option<String> {
    let path = e.paths().into_iter().next()?;
    let mut out = String::new();
    for step in path {
        match step {
            expr::Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            expr::Step::Index(i) => out.push_str(&format!("[{i}]")),
            expr::Step::All => out.push_str("[*]"),
        }
    }
    Some(out)
}
