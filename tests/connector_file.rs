//! The `file` driver over real folders: the conformance kit for drop
//! folders (CSV) and single files (NDJSON), encodings, header mapping,
//! malformed and truncated input, done/failed moves and atomic pushes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use concord::connector::conformance::{self, Harness, Seed};
use concord::connector::{Change, Connector, Instance, Page, PushOutcome, check_dir, check_file};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Writes a definition into `dir/connectors/` and opens it; `${root}` is
/// the temp folder.
fn open(dir: &Path, name: &str, body: &str) -> Arc<dyn Connector> {
    let defs = dir.join("connectors");
    std::fs::create_dir_all(&defs).unwrap();
    let path = defs.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("name = \"{name}\"\ndriver = \"file\"\n{body}"),
    )
    .unwrap();
    let def = check_file(&path).unwrap_or_else(|e| panic!("{e:#?}"));
    let instance = Instance::bare(name).with_var("root", dir.to_str().unwrap());
    (def.driver.open)(&def, &instance).unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn drain(c: &dyn Connector, entity: &str) -> Vec<Page> {
    let mut out = Vec::new();
    let mut s = c.pull(entity, None);
    while let Some(p) = s.next().await {
        out.push(p.unwrap());
    }
    out
}

/// A drop folder of CSV files.
struct Folder {
    root: tempfile::TempDir,
    n: AtomicUsize,
}

impl Folder {
    fn new() -> Folder {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("in")).unwrap();
        Folder {
            root,
            n: AtomicUsize::new(0),
        }
    }
    fn dir(&self) -> PathBuf {
        self.root.path().join("in")
    }
    fn write(&self, text: &str) {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        std::fs::write(self.dir().join(format!("drop-{n:04}.csv")), text).unwrap();
    }
    fn csv(records: &[Seed]) -> String {
        let mut s = "id,updated,name\n".to_owned();
        for r in records {
            s.push_str(&format!(
                "{},{},\"{}\"\n",
                r.id,
                r.updated_at.to_rfc3339(),
                r.name
            ));
        }
        s
    }
}

#[async_trait]
impl Harness for Folder {
    fn connector(&self) -> Arc<dyn Connector> {
        open(
            self.root.path(),
            "drop",
            "[entities.contact]\nfolder = \"${root}/in\"\npattern = \"*.csv\"\nmin_age_secs = 0\npage_size = 4\nid = \"id\"\nupdated_at = { field = \"updated\" }\n",
        )
    }
    fn entity(&self) -> &str {
        "contact"
    }
    fn page_size(&self) -> usize {
        4
    }
    async fn seed(&self, records: &[Seed]) -> anyhow::Result<()> {
        std::fs::remove_dir_all(self.dir())?;
        std::fs::create_dir_all(self.dir())?;
        // Two files, so pages and acks cross a file boundary.
        let half = records.len() / 2;
        self.write(&Folder::csv(&records[..half]));
        self.write(&Folder::csv(&records[half..]));
        Ok(())
    }
    async fn upsert(&self, records: &[Seed]) -> anyhow::Result<()> {
        self.write(&Folder::csv(records));
        Ok(())
    }
    async fn seed_malformed(&self, records: &[Seed], malformed: usize) -> anyhow::Result<bool> {
        self.seed(&[]).await?;
        let mut text = Folder::csv(records);
        for i in 0..malformed {
            text.push_str(&format!("BAD{i},only two fields\n"));
        }
        self.write(&text);
        Ok(true)
    }
}

#[tokio::test]
async fn drop_folders_pass_the_kit() {
    let h = Folder::new();
    conformance::pull_pages(&h).await.unwrap();
    conformance::resume_from_cursor(&h).await.unwrap();
    conformance::redeliver_unacked(&h).await.unwrap();
    assert!(conformance::quarantine_malformed(&h).await.unwrap());
    // Everything acknowledged went to done/, nothing is left behind.
    assert!(
        files(&h.dir()).iter().all(|n| n == "done"),
        "{:?}",
        files(&h.dir())
    );
}

/// One NDJSON file, read again when it changes.
struct Single {
    root: tempfile::TempDir,
}

impl Single {
    fn path(&self) -> PathBuf {
        self.root.path().join("export.ndjson")
    }
    fn write(&self, records: &[Seed], bad: usize) {
        let mut s = String::new();
        for (i, r) in records.iter().enumerate() {
            s.push_str(
                &json!({ "id": r.id, "name": r.name, "at": r.updated_at.to_rfc3339() }).to_string(),
            );
            s.push('\n');
            if i < bad {
                s.push_str("{\"id\": \"broken\", \n");
            }
        }
        std::fs::write(self.path(), s).unwrap();
    }
}

#[async_trait]
impl Harness for Single {
    fn connector(&self) -> Arc<dyn Connector> {
        open(
            self.root.path(),
            "export",
            "[entities.contact]\npath = \"${root}/export.ndjson\"\npage_size = 3\nid = \"id\"\nupdated_at = { field = \"at\" }\n",
        )
    }
    fn entity(&self) -> &str {
        "contact"
    }
    fn page_size(&self) -> usize {
        3
    }
    async fn seed(&self, records: &[Seed]) -> anyhow::Result<()> {
        self.write(records, 0);
        Ok(())
    }
    async fn upsert(&self, records: &[Seed]) -> anyhow::Result<()> {
        // An export is rewritten whole: keep what is there, change the rest.
        let text = std::fs::read_to_string(self.path())?;
        let mut by_id: BTreeMap<String, String> = BTreeMap::new();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)?;
            by_id.insert(v["id"].as_str().unwrap().to_owned(), line.to_owned());
        }
        for r in records {
            by_id.insert(
                r.id.clone(),
                json!({ "id": r.id, "name": r.name, "at": r.updated_at.to_rfc3339() }).to_string(),
            );
        }
        std::fs::write(
            self.path(),
            by_id.into_values().collect::<Vec<_>>().join("\n") + "\n",
        )?;
        Ok(())
    }
    async fn seed_malformed(&self, records: &[Seed], malformed: usize) -> anyhow::Result<bool> {
        self.write(records, malformed);
        Ok(true)
    }
}

#[tokio::test]
async fn single_files_pass_the_kit() {
    let h = Single {
        root: tempfile::tempdir().unwrap(),
    };
    conformance::pull_pages(&h).await.unwrap();
    conformance::resume_from_cursor(&h).await.unwrap();
    assert!(conformance::quarantine_malformed(&h).await.unwrap());
    // An unchanged file is not read again from its final cursor.
    h.seed(&conformance::seeds(5)).await.unwrap();
    let c = h.connector();
    let pages = drain(c.as_ref(), "contact").await;
    let last = pages.last().unwrap().cursor.clone();
    assert!(c.pull("contact", Some(last)).next().await.is_none());
    // A missing file is a retryable failure.
    std::fs::remove_file(h.path()).unwrap();
    let e = c.pull("contact", None).next().await.unwrap().unwrap_err();
    assert!(e.is_retryable(), "{e}");
}

#[tokio::test]
async fn encodings_boms_and_header_mapping() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let text = "客户编号;名称;金额\nC1;上海贸易有限公司;1234.50\nC2;\"北京; 科技\";0.10\n";
    let (gbk, _, _) = encoding_rs::GBK.encode(text);
    std::fs::write(dir.join("1-gbk.csv"), &gbk).unwrap();
    let utf16le: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    std::fs::write(dir.join("2-utf16le.csv"), utf16le).unwrap();
    let utf16be: Vec<u8> = [0xFE, 0xFF]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
        .collect();
    std::fs::write(dir.join("3-utf16be.csv"), utf16be).unwrap();
    std::fs::write(
        dir.join("4-utf8bom.csv"),
        [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat(),
    )
    .unwrap();
    let c = open(
        root.path(),
        "gbk",
        "[entities.customer]\nfolder = \"${root}/in\"\npattern = \"*.csv\"\nmin_age_secs = 0\nencoding = \"gbk\"\nid = \"no\"\ncsv = { delimiter = \";\", rename = { \"客户编号\" = \"no\", \"金额\" = \"amount\" } }\n",
    );
    let pages = drain(c.as_ref(), "customer").await;
    let records: Vec<_> = pages.iter().flat_map(|p| p.records.iter()).collect();
    assert_eq!(records.len(), 8);
    for pair in records.chunks(2) {
        assert_eq!(pair[0].external_id.as_str(), "C1");
        assert_eq!(
            pair[0].data,
            json!({ "no": "C1", "名称": "上海贸易有限公司", "amount": "1234.50" })
        );
        assert_eq!(pair[1].data["名称"], json!("北京; 科技"));
        assert_eq!(pair[1].data["amount"], json!("0.10"));
    }
    assert!(pages.iter().all(|p| p.rejects.is_empty()));
}

#[tokio::test]
async fn a_truncated_json_array_keeps_its_records_and_goes_to_failed() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.json"),
        "[\n{\"id\": 1},\n{\"id\": 2},\n{\"id\": 3, \"na",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.json"),
        "[{\"id\": 4}, {\"id\": tru}, {\"id\": 5}]",
    )
    .unwrap();
    let c = open(
        root.path(),
        "arrays",
        "[entities.x]\nfolder = \"${root}/in\"\npattern = \"*.json\"\nmin_age_secs = 0\nid = \"id\"\n",
    );
    let mut s = c.pull("x", None);
    let mut ids = Vec::new();
    let mut rejects = Vec::new();
    while let Some(p) = s.next().await {
        let p = p.unwrap();
        ids.extend(p.records.iter().map(|r| r.external_id.as_str().to_owned()));
        rejects.extend(
            p.rejects
                .iter()
                .map(|r| format!("{} {}", r.position, r.reason)),
        );
        p.ack.unwrap().ack().await.unwrap();
    }
    assert_eq!(ids, ["1", "2", "4", "5"]);
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert!(
        rejects[0].starts_with("a.json:4 ") && rejects[0].contains("truncated"),
        "{rejects:?}"
    );
    assert!(
        rejects[1].starts_with("b.json:1 ") && rejects[1].contains("not JSON"),
        "{rejects:?}"
    );
    // A file whose reading stopped early is set aside with its reason; one
    // with a bad record only is done (the record is quarantined).
    assert_eq!(files(&dir.join("failed")), ["a.json", "a.json.reason.txt"]);
    let reason = std::fs::read_to_string(dir.join("failed/a.json.reason.txt")).unwrap();
    assert!(
        reason.contains("a.json:4") && reason.contains("truncated"),
        "{reason}"
    );
    assert_eq!(files(&dir.join("done")), ["b.json"]);
}

#[tokio::test]
async fn files_move_only_when_every_page_is_acknowledged() {
    let h = Folder::new();
    let dir = h.dir();
    h.write(&Folder::csv(&conformance::seeds(10))); // drop-0000: 3 pages of 4
    let c = h.connector();
    let mut s = c.pull("contact", None);
    let first = s.next().await.unwrap().unwrap();
    // A file appears while the first is read: the same pull reads it.
    h.write(&Folder::csv(&[Seed {
        id: "NEW".into(),
        updated_at: chrono::Utc::now(),
        name: "new".into(),
    }]));
    let second = s.next().await.unwrap().unwrap();
    let third = s.next().await.unwrap().unwrap();
    let fourth = s.next().await.unwrap().unwrap();
    assert!(s.next().await.is_none());
    drop(s);
    assert_eq!(fourth.records[0].external_id.as_str(), "NEW");
    // Acknowledged out of order; done/ only once all three pages are.
    third.ack.unwrap().ack().await.unwrap();
    first.ack.unwrap().ack().await.unwrap();
    assert_eq!(files(&dir), ["drop-0000.csv", "drop-0001.csv"]);
    // The second file is set aside by the engine.
    fourth
        .ack
        .unwrap()
        .nack(false, "mapping failed: no name")
        .await
        .unwrap();
    assert_eq!(
        files(&dir.join("failed")),
        ["drop-0001.csv", "drop-0001.csv.reason.txt"]
    );
    assert!(
        std::fs::read_to_string(dir.join("failed/drop-0001.csv.reason.txt"))
            .unwrap()
            .contains("no name")
    );
    second.ack.unwrap().ack().await.unwrap();
    assert_eq!(files(&dir), ["done", "failed"]);
    assert_eq!(files(&dir.join("done")), ["drop-0000.csv"]);
    // A second file of the same name does not replace the first in done/.
    std::fs::write(dir.join("drop-0000.csv"), "id,updated,name\nX,,x\n").unwrap();
    for p in drain(c.as_ref(), "contact").await {
        p.ack.unwrap().ack().await.unwrap();
    }
    assert_eq!(
        files(&dir.join("done")),
        ["drop-0000.1.csv", "drop-0000.csv"]
    );
}

#[tokio::test]
async fn a_file_still_being_written_waits() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("fresh.ndjson"), "{\"a\":1}\n").unwrap();
    std::fs::write(dir.join(".hidden.ndjson"), "{\"a\":1}\n").unwrap();
    let c = open(
        root.path(),
        "slow",
        "[entities.x]\nfolder = \"${root}/in\"\npattern = \"*.ndjson\"\nmin_age_secs = 3600\n",
    );
    assert!(drain(c.as_ref(), "x").await.is_empty());
}

#[tokio::test]
async fn pushes_write_one_file_per_batch_atomically_and_once() {
    let root = tempfile::tempdir().unwrap();
    let c = open(
        root.path(),
        "out",
        "[entities.order]\npath = \"${root}/unused.csv\"\nid = \"no\"\npush = { folder = \"${root}/out\", format = \"csv\", columns = [\"no\", \"total\", \"note\"], idempotency_field = \"concord_key\", encoding = \"gbk\" }\n",
    );
    let change = |key: &str, data: Value| Change {
        idempotency_key: key.into(),
        external_id: None,
        data,
    };
    let batch = vec![
        change(
            "o:1:1:out",
            json!({ "no": "A1", "total": "10.50", "note": "第一, \"quoted\"" }),
        ),
        change("o:2:1:out", json!({ "total": 3, "note": null })),
        change(
            "o:3:1:out",
            json!({ "no": "A3", "note": "emoji 😀 has no GBK form" }),
        ),
        change("o:4:1:out", json!([1, 2])),
    ];
    let first = c.push("order", batch.clone()).await.unwrap();
    let out = root.path().join("out");
    let written = files(&out);
    assert_eq!(written.len(), 1, "{written:?}");
    let name = &written[0];
    assert!(
        name.starts_with("order-") && name.ends_with(".csv"),
        "{name}"
    );
    assert_eq!(
        first[0],
        PushOutcome::Created {
            external_id: "A1".parse().unwrap()
        }
    );
    // No id field: file:line (the header is line 1).
    assert_eq!(
        first[1],
        PushOutcome::Created {
            external_id: format!("{name}:3").parse().unwrap()
        }
    );
    assert!(
        matches!(&first[2], PushOutcome::Rejected { message } if message.contains("GBK")),
        "{:?}",
        first[2]
    );
    assert!(matches!(&first[3], PushOutcome::Rejected { .. }));
    let bytes = std::fs::read(out.join(name)).unwrap();
    let (text, _, bad) = encoding_rs::GBK.decode(&bytes);
    assert!(!bad);
    assert_eq!(
        text,
        "no,total,note,concord_key\nA1,10.50,\"第一, \"\"quoted\"\"\",o:1:1:out\n,3,,o:2:1:out\n"
    );
    // The same batch again: same answers, no second file.
    let again = c.push("order", batch).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(files(&out), written);
    // A different batch: a second file; no temporary file anywhere.
    c.push("order", vec![change("o:5:1:out", json!({ "no": "A5" }))])
        .await
        .unwrap();
    let now = files(&out);
    assert_eq!(now.len(), 2);
    assert!(now.iter().all(|n| !n.starts_with('.')), "{now:?}");
}

#[tokio::test]
async fn ndjson_pushes_carry_the_idempotency_key() {
    let root = tempfile::tempdir().unwrap();
    let c = open(
        root.path(),
        "out",
        "[entities.order]\npath = \"${root}/unused.ndjson\"\npush = { folder = \"${root}/out\", idempotency_field = \"_key\" }\n",
    );
    let out = c
        .push(
            "order",
            vec![Change {
                idempotency_key: "k".into(),
                external_id: Some("X-1".parse().unwrap()),
                data: json!({ "amount": "0.10" }),
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        [PushOutcome::Updated {
            external_id: "X-1".parse().unwrap()
        }]
    );
    let dir = root.path().join("out");
    let name = &files(&dir)[0];
    assert_eq!(
        std::fs::read_to_string(dir.join(name)).unwrap(),
        "{\"_key\":\"k\",\"amount\":\"0.10\"}\n"
    );
}

#[test]
fn the_examples_pass_their_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/examples");
    let (ok, errors) = check_dir(&dir).unwrap();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(ok.iter().any(|d| d.name == "example_file"));
}

#[test]
fn definition_errors_point_at_the_place() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\ndriver = \"file\"\n[entities.x]\nfolder = \"/in\"\npattern = \"*.csv\"\ncsv = { delimiter = \"::\" }\n",
    )
    .unwrap();
    let errors = check_file(&path).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!((errors[0].line, errors[0].column), (6, 21), "{}", errors[0]);
}
