//! Prism, serving Xero's official OpenAPI spec, as the Xero API for tests.
//!
//! Prism answers from the spec's examples and checks every request against
//! the spec: a missing `xero-tenant-id` header is a 422, a body that does not
//! fit the schema a 400. That check is why these tests exist, and it has a
//! trap: Xero's schemas are circular (Invoice → Payment → Invoice, Contact →
//! ContactGroup → Contact …) and Prism then *silently* accepts any request
//! body. [`cut_cycles`] removes the cycles from a copy of the spec before
//! Prism reads it, and the tests keep one known-bad body to prove that
//! validation is on.
//!
//! Finding Prism: the environment variable `CONCORD_PRISM` (the path of the
//! `prism` executable), else `.prism/node_modules/.bin/prism` under the
//! project root, where `.ci/install-prism` puts the pinned version.
//!
//! One Prism serves all tests of a test binary ([`shared`]). It runs under a
//! small shell that holds the read end of a pipe whose write end this process
//! keeps: when the test binary exits, however it exits, the pipe closes and
//! the shell stops Prism. Nothing is left running.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// The environment variable naming the `prism` executable.
pub const PRISM_VAR: &str = "CONCORD_PRISM";

/// Where Xero's spec is, relative to the project root.
pub const XERO_SPEC: &str = "../shared/fixtures/specs/xero/xero_accounting.yaml";

/// How long Prism may take to read the spec and listen (about 5 s here; CI
/// machines are shared).
const STARTUP: Duration = Duration::from_secs(120);

/// The `prism` executable, if there is one.
pub fn find_prism() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(PRISM_VAR) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{PRISM_VAR}={} is not a file", path.display()))
        };
    }
    let local = crate::support::root().join(".prism/node_modules/.bin/prism");
    if local.is_file() {
        Ok(local)
    } else {
        Err(format!(
            "Prism is not installed: run .ci/install-prism (or set {PRISM_VAR} to a prism executable)"
        ))
    }
}

/// A running Prism.
pub struct Prism {
    /// `http://127.0.0.1:PORT`, the Xero Accounting API's base URL.
    pub base_url: String,
    /// Prism's own log: every request, and why it was refused.
    pub log: PathBuf,
    // Kept open for as long as this process lives; see the module docs.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
    _dir: tempfile::TempDir,
}

impl Prism {
    /// The last `lines` lines of Prism's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The Prism of this test binary, started on first use. `None` (with the
/// reason printed) when the spec or Prism is missing outside CI; under CI
/// that is a failure.
pub fn shared() -> Option<&'static Prism> {
    static PRISM: OnceLock<Result<Prism, String>> = OnceLock::new();
    match PRISM.get_or_init(start_xero) {
        Ok(p) => Some(p),
        Err(reason) => crate::support::skip(reason),
    }
}

fn start_xero() -> Result<Prism, String> {
    let spec = crate::support::root().join(XERO_SPEC);
    if !spec.is_file() {
        return Err(format!(
            "{} is missing (the shared fixtures are not beside the project)",
            spec.display()
        ));
    }
    let prism = find_prism()?;
    // A broken spec or a Prism that will not start is a failure, not a skip.
    Ok(start(&prism, &spec).unwrap_or_else(|e| panic!("{e}")))
}

/// Reads an OpenAPI spec (YAML or JSON), cuts its schema cycles and serves
/// it with Prism on a free port.
pub fn start(prism: &Path, spec: &Path) -> Result<Prism, String> {
    let text =
        std::fs::read_to_string(spec).map_err(|e| format!("reading {}: {e}", spec.display()))?;
    let mut doc = read_yaml(&text).map_err(|e| format!("{}: {e}", spec.display()))?;
    cut_cycles(&mut doc)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let served = dir.path().join("spec.json");
    std::fs::write(&served, serde_json::to_vec(&doc).unwrap()).map_err(|e| e.to_string())?;
    let log = dir.path().join("prism.log");
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    // sh runs Prism and exits with it; a watcher beside it stops Prism when
    // sh's stdin closes, that is when this process ends.
    let script = r#"exec 3<&0
"$0" mock -h 127.0.0.1 -p "$1" "$2" </dev/null >"$3" 2>&1 &
pid=$!
{ read -r _ <&3; kill "$pid" 2>/dev/null; } &
wait "$pid""#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(prism)
        .arg(port.to_string())
        .arg(&served)
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", prism.display()))?;
    let stdin = child.stdin.take().expect("piped stdin");

    let started = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "prism exited ({status}) before listening:\n{}",
                log_tail(&log, 20)
            ));
        }
        if started.elapsed() > STARTUP {
            let mut stdin = stdin;
            let _ = stdin.write_all(b"stop\n");
            let _ = child.wait();
            return Err(format!(
                "prism did not listen on {addr} within {} s:\n{}",
                STARTUP.as_secs(),
                log_tail(&log, 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "prism serving {} at http://{addr} after {:.1} s",
        spec.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(Prism {
        base_url: format!("http://{addr}"),
        log,
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
        _dir: dir,
    })
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Parses YAML into JSON values (OpenAPI documents are JSON-compatible).
pub fn read_yaml(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
}

const SCHEMA_REF: &str = "#/components/schemas/";
/// Appended to a schema's name for its copy one level down a cycle.
pub const CUT_SUFFIX: &str = "__concord_cut";

/// Removes every cycle among `components.schemas`, keeping validation as
/// deep as it can: within each strongly connected group of schemas, a
/// schema's references to its group point at a copy of the referenced
/// schema (`Name__concord_cut`) in which the references back into the
/// group accept anything. So `PUT /Invoices` still checks every field of
/// an invoice and of its payments, and only a payment's own invoice is
/// left unchecked. Returns the groups that were cut.
pub fn cut_cycles(doc: &mut Value) -> Result<Vec<Vec<String>>, String> {
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .ok_or("the spec has no components.schemas")?;
    let names: Vec<String> = schemas.keys().cloned().collect();
    if let Some(taken) = names.iter().find(|n| n.ends_with(CUT_SUFFIX)) {
        return Err(format!("the spec already has a schema named {taken}"));
    }
    let graph: BTreeMap<&str, BTreeSet<String>> = names
        .iter()
        .map(|n| {
            let mut refs = BTreeSet::new();
            collect_refs(&schemas[n.as_str()], &mut refs);
            refs.retain(|r| schemas.contains_key(r));
            (n.as_str(), refs)
        })
        .collect();
    let groups = cyclic_groups(&graph);

    let mut copies = Map::new();
    for group in &groups {
        let members: BTreeSet<&str> = group.iter().map(String::as_str).collect();
        for name in group {
            let original = schemas[name.as_str()].clone();
            copies.insert(
                format!("{name}{CUT_SUFFIX}"),
                rewrite(&original, &members, Rewrite::AcceptAnything),
            );
            schemas.insert(name.clone(), rewrite(&original, &members, Rewrite::ToCopy));
        }
    }
    schemas.extend(copies);
    Ok(groups)
}

/// The schema names a schema refers to (`#/components/schemas/Name`).
fn collect_refs(node: &Value, out: &mut BTreeSet<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref")
                && let Some(name) = r.strip_prefix(SCHEMA_REF)
            {
                out.insert(unescape_pointer(name));
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn unescape_pointer(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

#[derive(Clone, Copy)]
enum Rewrite {
    /// A reference into the group becomes a reference to the cut copy.
    ToCopy,
    /// A reference into the group becomes a schema that accepts anything.
    AcceptAnything,
}

fn rewrite(node: &Value, group: &BTreeSet<&str>, how: Rewrite) -> Value {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref")
                && let Some(name) = r.strip_prefix(SCHEMA_REF)
                && group.contains(unescape_pointer(name).as_str())
            {
                return match how {
                    Rewrite::ToCopy => {
                        let mut map = map.clone();
                        map.insert("$ref".into(), Value::String(format!("{r}{CUT_SUFFIX}")));
                        Value::Object(map)
                    }
                    Rewrite::AcceptAnything => serde_json::json!({
                        "description": "Not checked: the test harness cut a reference cycle here."
                    }),
                };
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), rewrite(v, group, how)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| rewrite(v, group, how)).collect()),
        other => other.clone(),
    }
}

/// The strongly connected groups of the graph that contain a cycle (more
/// than one schema, or one that refers to itself), each sorted, in name
/// order. Tarjan's algorithm, iterative.
pub fn cyclic_groups<'g>(graph: &'g BTreeMap<&'g str, BTreeSet<String>>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy)]
    struct Mark {
        index: usize,
        low: usize,
        on_stack: bool,
    }
    // Successors that are nodes of the graph, borrowed from its keys.
    let succ = |n: &str| -> Vec<&'g str> {
        graph[n]
            .iter()
            .filter_map(|t| graph.get_key_value(t.as_str()).map(|(k, _)| *k))
            .collect()
    };
    let mut marks: BTreeMap<&'g str, Mark> = BTreeMap::new();
    let mut stack: Vec<&'g str> = Vec::new();
    let mut groups = Vec::new();
    let mut next = 0;
    for &root in graph.keys() {
        if marks.contains_key(root) {
            continue;
        }
        // The depth-first path: (node, its successors, how many are done).
        let mut path: Vec<(&'g str, Vec<&'g str>, usize)> = Vec::new();
        let mut enter =
            |n: &'g str, marks: &mut BTreeMap<&'g str, Mark>, stack: &mut Vec<&'g str>| {
                marks.insert(
                    n,
                    Mark {
                        index: next,
                        low: next,
                        on_stack: true,
                    },
                );
                next += 1;
                stack.push(n);
            };
        enter(root, &mut marks, &mut stack);
        path.push((root, succ(root), 0));
        while let Some((node, succs, done)) = path.last_mut() {
            let node = *node;
            if *done < succs.len() {
                let s = succs[*done];
                *done += 1;
                match marks.get(s).copied() {
                    None => {
                        enter(s, &mut marks, &mut stack);
                        path.push((s, succ(s), 0));
                    }
                    Some(m) if m.on_stack => {
                        let mark = marks.get_mut(node).unwrap();
                        mark.low = mark.low.min(m.index);
                    }
                    Some(_) => {}
                }
                continue;
            }
            path.pop();
            let mark = marks[node];
            if let Some((parent, _, _)) = path.last() {
                let p = marks.get_mut(parent).unwrap();
                p.low = p.low.min(mark.low);
            }
            if mark.low == mark.index {
                let mut group = Vec::new();
                while let Some(top) = stack.pop() {
                    marks.get_mut(top).unwrap().on_stack = false;
                    group.push(top.to_owned());
                    if top == node {
                        break;
                    }
                }
                if group.len() > 1 || graph[node].contains(node) {
                    group.sort();
                    groups.push(group);
                }
            }
        }
    }
    groups.sort();
    groups
}

/// Whether the schemas of a spec still refer to themselves in a cycle.
pub fn schema_cycles(doc: &Value) -> Vec<Vec<String>> {
    let Some(schemas) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let graph: BTreeMap<&str, BTreeSet<String>> = schemas
        .iter()
        .map(|(n, s)| {
            let mut refs = BTreeSet::new();
            collect_refs(s, &mut refs);
            refs.retain(|r| schemas.contains_key(r));
            (n.as_str(), refs)
        })
        .collect();
    cyclic_groups(&graph)
}
