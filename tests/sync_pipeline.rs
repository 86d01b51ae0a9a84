//! The sync run reads the next page while the previous one commits. A page
//! that touches what the committing page writes (the same record again, an
//! identity key it creates) must come out exactly as if the pages ran one
//! after the other: no duplicate records, later versions win, identity
//! conflicts still found.

use std::path::Path;

use concord::model::EntityKind;
use concord::settings::Settings;
use concord::store::Store;
use concord::sync::{Engine, RunOptions};
use serde_json::Value;

fn write_setup(dir: &Path, lines: &[&str]) {
    std::fs::create_dir_all(dir.join("connectors")).unwrap();
    std::fs::create_dir_all(dir.join("mappings")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("in.ndjson"), lines.join("\n") + "\n").unwrap();
    let text = |p: &str, t: &str| std::fs::write(dir.join(p), t).unwrap();
    text(
        "connectors/src.toml",
        r#"name = "src"
driver = "file"
[entities.company]
path = "in.ndjson"
format = "ndjson"
id = "id"
page_size = 2
"#,
    );
    text(
        "connectors/dst.toml",
        r#"name = "dst"
driver = "file"
[entities.company]
folder = "out"
pattern = "*.ndjson"
push = { folder = "out", format = "ndjson", prefix = "customers" }
"#,
    );
    text(
        "mappings/in.toml",
        r#"[mapping]
name = "src-in"
version = 1
system = "src"
entity = "customer"
direction = "in"
[fields]
name = { from = "company", pipe = ["collapse"], required = true }
tax_id = { from = "vat", pipe = ["trim"] }
"#,
    );
    text(
        "mappings/out.toml",
        r#"[mapping]
name = "dst-out"
version = 1
system = "dst"
entity = "customer"
direction = "out"
[fields]
name = { from = "name" }
vat = { from = "tax_id" }
"#,
    );
    text(
        "concord.toml",
        &format!(
            r#"[connectors]
dir = "{0}/connectors"
[mappings]
dir = "{0}/mappings"
[store]
url = "sqlite://{0}/state/concord.db"
[quality]
run_after_sync = false
[systems.source]
connector = "src"
[systems.target]
connector = "dst"
[[jobs]]
name = "copy"
source = {{ system = "source", entity = "company", mapping = "src-in" }}
targets = [{{ system = "target", entity = "company", mapping = "dst-out" }}]
identity = ["tax_id"]
batch_size = 2
"#,
            dir.display()
        ),
    );
}

#[tokio::test]
async fn pages_read_during_a_commit_see_what_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    // Pages of two records.
    write_setup(
        dir.path(),
        &[
            // 1: two new customers.
            r#"{"id":"A","company":"Alpha GmbH","vat":"DE1"}"#,
            r#"{"id":"B","company":"Beta AG","vat":"DE2"}"#,
            // 2: A again (renamed), and C with B's tax id (a duplicate in
            // the source: a conflict, not a second record for B).
            r#"{"id":"A","company":"Alpha Holding GmbH","vat":"DE1"}"#,
            r#"{"id":"C","company":"Beta AG (copy)","vat":"DE2"}"#,
            // 3: a new customer.
            r#"{"id":"D","company":"Delta KG","vat":"DE4"}"#,
            r#"{"id":"E","company":"Epsilon SE","vat":"DE5"}"#,
            // 4: F with E's tax id, read while page 3 commits.
            r#"{"id":"F","company":"Epsilon Europe SE","vat":"DE5"}"#,
        ],
    );
    // The file connector resolves its paths against the working directory.
    std::env::set_current_dir(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let settings = Settings::load(Some(&dir.path().join("concord.toml"))).unwrap();
    let store = Store::open(&settings.store).await.unwrap();
    let engine = Engine::new(settings, store.clone()).unwrap();

    let report = engine.run_job("copy", RunOptions::default()).await.unwrap();
    assert_eq!(report.pulled, 7, "{report:?}");
    assert_eq!(
        (report.created, report.updated, report.conflicts),
        (4, 1, 2),
        "A, B, D, E created; A updated; C and F wait for the operator: {report:?}"
    );

    let status = store.status().await.unwrap();
    let customers = status
        .records
        .iter()
        .find(|c| c.entity == "customer")
        .map_or(0, |c| c.count);
    assert_eq!(customers, 4, "no record twice: {status:?}");
    assert_eq!(status.open_conflicts, 2);

    let a = store
        .find_link(EntityKind::Customer, "source", "A")
        .await
        .unwrap()
        .expect("A is linked");
    let head = store
        .get_record(EntityKind::Customer, &a.canonical_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.version, 2);
    assert_eq!(head.data["name"], "Alpha Holding GmbH");

    // The target holds each record once, at its latest version.
    let mut written: Vec<Value> = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("out")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        written.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    let mut names: Vec<&str> = written
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["Alpha Holding GmbH", "Beta AG", "Delta KG", "Epsilon SE"]
    );

    // Run again: nothing new, nothing pushed.
    let again = engine.run_job("copy", RunOptions::default()).await.unwrap();
    assert_eq!(
        (again.created, again.updated, again.delivered),
        (0, 0, 0),
        "{again:?}"
    );
}
