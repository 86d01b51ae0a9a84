//! Sidecar tests: `NAME.test.toml` beside `NAME.toml` holds input records
//! and what the mapping must make of them. `cargo test` and `concord
//! mapping test` both run them.
//!
//! ```toml
//! [[case]]
//! name = "authorised invoice"
//! input = { InvoiceNumber = "INV-1", Total = 100.5 }   # or input_json = '''{…}'''
//! lookups = [{ entity = "customer", system = "xero", value = "c-1", id = "0192…" }]
//! expect = { number = "INV-1", total = "100.5" }       # or expect_json = '''{…}'''
//!
//! [[case]]
//! name = "missing number"
//! input = { Total = 1 }
//! errors = [{ field = "number", rule = "required" }]   # each must be reported
//! ```
//!
//! Inbound cases check the canonical record (typed by the model, as the
//! store would receive it); outbound cases check the system's record.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

use super::compile::{TEST_SUFFIX, toml_to_json};
use super::{Lookups, Mapping, RecordError};
use crate::model::{EntityKind, leaves};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The mapping file, relative to this one; default: the sibling file.
    mapping: Option<String>,
    #[serde(rename = "case", default)]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    input: Option<toml::Table>,
    input_json: Option<String>,
    #[serde(default)]
    lookups: Vec<LookupSpec>,
    expect: Option<toml::Table>,
    expect_json: Option<String>,
    errors: Option<Vec<ExpectedError>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupSpec {
    entity: String,
    system: String,
    value: String,
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedError {
    field: String,
    rule: Option<String>,
}

/// The outcome of one case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub file: PathBuf,
    pub case: String,
    pub passed: bool,
    /// What differed, one line per difference.
    pub diff: Vec<String>,
}

/// Runs the sidecar tests in `test_file`. An unreadable test file or a
/// mapping that does not compile is one failed case that says why.
pub fn run_file(test_file: &Path) -> Vec<CaseResult> {
    let fail = |case: &str, diff: Vec<String>| {
        vec![CaseResult {
            file: test_file.to_owned(),
            case: case.to_owned(),
            passed: false,
            diff,
        }]
    };
    let text = match std::fs::read_to_string(test_file) {
        Ok(t) => t,
        Err(e) => return fail("(file)", vec![format!("cannot read: {e}")]),
    };
    let tests: TestFile = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => return fail("(file)", vec![e.to_string()]),
    };
    let mapping_path = match &tests.mapping {
        Some(m) => test_file.parent().unwrap_or(Path::new(".")).join(m),
        None => sibling(test_file),
    };
    let mapping = match super::load_file(&mapping_path) {
        Ok(m) => m,
        Err(errors) => {
            return fail(
                "(mapping)",
                errors.iter().map(ToString::to_string).collect(),
            );
        }
    };
    if tests.cases.is_empty() {
        return fail("(file)", vec!["no [[case]] in this file".into()]);
    }
    tests
        .cases
        .iter()
        .map(|case| CaseResult {
            file: test_file.to_owned(),
            case: case.name.clone(),
            diff: run_case(&mapping, case).err().unwrap_or_default(),
            passed: false,
        })
        .map(|mut r| {
            r.passed = r.diff.is_empty();
            r
        })
        .collect()
}

fn sibling(test_file: &Path) -> PathBuf {
    let name = test_file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let base = name.strip_suffix(TEST_SUFFIX).unwrap_or(name);
    test_file.with_file_name(format!("{base}.toml"))
}

fn json_or_table(
    json: &Option<String>,
    table: &Option<toml::Table>,
    what: &str,
) -> Result<Option<Value>, Vec<String>> {
    match (json, table) {
        (Some(_), Some(_)) => Err(vec![format!("give {what} or {what}_json, not both")]),
        (Some(j), None) => serde_json::from_str(j)
            .map(Some)
            .map_err(|e| vec![format!("{what}_json is not JSON: {e}")]),
        (None, Some(t)) => Ok(Some(toml_to_json(&toml::Value::Table(t.clone())))),
        (None, None) => Ok(None),
    }
}

fn run_case(mapping: &Mapping, case: &Case) -> Result<(), Vec<String>> {
    let input = json_or_table(&case.input_json, &case.input, "input")?
        .ok_or_else(|| vec!["the case has no input".to_owned()])?;
    let expect = json_or_table(&case.expect_json, &case.expect, "expect")?;
    let mut lookups = Lookups::default();
    for l in &case.lookups {
        let entity = EntityKind::from_str(&l.entity).map_err(|e| vec![e.to_string()])?;
        lookups.insert(entity, &l.system, &l.value, &l.id);
    }
    let result = mapping.apply_canonical(&input, &lookups);
    match (expect, &case.errors, result) {
        (Some(_), Some(_), _) => Err(vec!["give expect or errors, not both".into()]),
        (None, None, _) => Err(vec![
            "the case expects nothing: add expect or errors".into(),
        ]),
        (Some(expected), None, Ok(actual)) => {
            let diff = diff(&expected, &actual);
            if diff.is_empty() { Ok(()) } else { Err(diff) }
        }
        (Some(_), None, Err(errors)) => Err(errors
            .iter()
            .map(|e| format!("unexpected error: {e}"))
            .collect()),
        (None, Some(_), Ok(actual)) => Err(vec![format!(
            "expected errors, but the record mapped to {actual}"
        )]),
        (None, Some(expected), Err(actual)) => {
            let missing: Vec<String> = expected
                .iter()
                .filter(|want| {
                    !actual.iter().any(|got: &RecordError| {
                        got.field == want.field && want.rule.as_ref().is_none_or(|r| *r == got.rule)
                    })
                })
                .map(|want| {
                    format!(
                        "expected an error on {} ({}); got: {}",
                        want.field,
                        want.rule.as_deref().unwrap_or("any rule"),
                        actual
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(missing)
            }
        }
    }
}

/// Differences between two records, one line per field path.
pub fn diff(expected: &Value, actual: &Value) -> Vec<String> {
    let want = leaves(expected);
    let got = leaves(actual);
    let mut out = Vec::new();
    for (path, value) in &want {
        match got.iter().find(|(p, _)| p == path) {
            Some((_, v)) if v == value => {}
            Some((_, v)) => out.push(format!("{path}: expected {value}, got {v}")),
            None => out.push(format!("{path}: expected {value}, got nothing")),
        }
    }
    for (path, value) in &got {
        if !want.iter().any(|(p, _)| p == path) {
            out.push(format!("{path}: not expected, got {value}"));
        }
    }
    if out.is_empty() && expected != actual {
        out.push(format!("expected {expected}, got {actual}"));
    }
    out
}

/// Every sidecar test file under `paths` (files or folders).
pub fn find_tests(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<super::LoadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        super::compile::collect_files(p, &mut files, &mut errors);
    }
    files.retain(|f| f.to_str().is_some_and(|s| s.ends_with(TEST_SUFFIX)));
    files.sort();
    (files, errors)
}
