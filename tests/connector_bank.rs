//! The `bank` driver over real temporary drop folders: the conformance kit,
//! idempotent keys across re-imports, unreadable files set aside, statement
//! balances reported, real bank files, and a large file in flat memory.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concord::bank::{self, Format};
use concord::connector::conformance::{self, Harness, Seed};
use concord::connector::{Connector, ErrorKind, Instance, Notice, Page, RawRecord, check_file};
use futures_util::StreamExt;

const ACCOUNT: &str = "DE89370400440532013000";

/// A connector over a fresh folder, opened from a definition file the way
/// concord opens one.
struct Folder {
    _dir: tempfile::TempDir,
    root: PathBuf,
    connector: Arc<dyn Connector>,
}

impl Folder {
    fn new(extra: &str) -> Folder {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("drop");
        std::fs::create_dir(&root).unwrap();
        let connector = open(dir.path(), &root, extra);
        Folder {
            _dir: dir,
            root,
            connector,
        }
    }

    fn write(&self, name: &str, text: &str, age_secs: u64) -> PathBuf {
        let path = self.root.join(name);
        std::fs::write(&path, text).unwrap();
        age(&path, age_secs);
        path
    }

    fn files(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join(sub))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Sets a file's modification time `secs` seconds in the past, so files
/// sort oldest first as the test means.
fn age(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

fn open(dir: &Path, folder: &Path, extra: &str) -> Arc<dyn Connector> {
    let defs = dir.join("connectors");
    std::fs::create_dir_all(&defs).unwrap();
    let file = defs.join("bank_test.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"bank_test\"\ndriver = \"bank\"\npath = \"${{drop_dir}}\"\n{}{extra}",
            if extra.contains("settle_ms") {
                ""
            } else {
                "settle_ms = 0\n"
            }
        ),
    )
    .unwrap();
    let def = check_file(&file).unwrap_or_else(|e| panic!("{e:?}"));
    let instance = Instance::bare("bank_test").with_var("drop_dir", folder.to_str().unwrap());
    (def.driver.open)(&def, &instance).unwrap()
}

fn cents(c: i64) -> (i64, i64) {
    (c / 100, c.abs() % 100)
}

/// An MT940 statement of one line per seed: the seed id is the bank
/// reference, its name the purpose, its day the booking date. Balances
/// add up unless `closing_off` moves the closing balance.
fn mt940(tag: &str, seeds: &[Seed], closing_off: i64) -> String {
    let day = |at: DateTime<Utc>| at.format("%y%m%d").to_string();
    let first = seeds
        .first()
        .map(|s| day(s.updated_at))
        .unwrap_or_else(|| "261101".into());
    let mut out =
        format!(":20:{tag}\r\n:25:{ACCOUNT}\r\n:28C:00001/001\r\n:60F:C{first}EUR100,00\r\n");
    let mut sum = 10_000;
    for (i, s) in seeds.iter().enumerate() {
        let c = 1_000 + i as i64 * 7;
        sum += c;
        let d = day(s.updated_at);
        let (u, f) = cents(c);
        out += &format!(
            ":61:{d}{}C{u},{f:02}NTRFNONREF//{}\r\n:86:{}\r\n",
            &d[2..],
            s.id,
            s.name
        );
    }
    let (u, f) = cents(sum + closing_off);
    let last = seeds
        .last()
        .map(|s| day(s.updated_at))
        .unwrap_or_else(|| first.clone());
    out += &format!(":62F:C{last}EUR{u},{f:02}\r\n-\r\n");
    out
}

/// A camt.053 statement of one entry per seed, bank reference = seed id.
fn camt053(id: &str, seeds: &[Seed]) -> String {
    let mut out = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt>
<GrpHdr><MsgId>MSG-{id}</MsgId><CreDtTm>2026-11-28T06:00:00</CreDtTm></GrpHdr>
<Stmt><Id>{id}</Id><ElctrncSeqNb>1</ElctrncSeqNb><CreDtTm>2026-11-28T06:00:00</CreDtTm>
<Acct><Id><IBAN>{ACCOUNT}</IBAN></Id><Ccy>EUR</Ccy></Acct>
<Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">0.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-10-31</Dt></Dt></Bal>
"#
    );
    let mut sum = 0;
    for (i, s) in seeds.iter().enumerate() {
        let c = 500 + i as i64 * 3;
        sum += c;
        let (u, f) = cents(c);
        out += &format!(
            "<Ntry><Amt Ccy=\"EUR\">{u}.{f:02}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts><BookgDt><Dt>{}</Dt></BookgDt><AcctSvcrRef>{}</AcctSvcrRef><NtryDtls><TxDtls><RmtInf><Ustrd>{}</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>\n",
            s.updated_at.format("%Y-%m-%d"),
            s.id,
            s.name
        );
    }
    let (u, f) = cents(sum);
    out += &format!(
        "<Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy=\"EUR\">{u}.{f:02}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-11-30</Dt></Dt></Bal>\n</Stmt></BkToCstmrStmt></Document>\n"
    );
    out
}

/// Reads a whole pull, acknowledging each page.
async fn drain(c: &dyn Connector) -> Vec<Page> {
    let mut stream = c.pull("bank_transaction", None);
    let mut pages = Vec::new();
    while let Some(page) = stream.next().await {
        let mut page = page.unwrap_or_else(|e| panic!("page {}: {e}", pages.len() + 1));
        if let Some(ack) = page.ack.take() {
            ack.ack().await.unwrap();
        }
        pages.push(page);
    }
    pages
}

fn records(pages: &[Page]) -> Vec<&RawRecord> {
    pages.iter().flat_map(|p| &p.records).collect()
}

fn statements(pages: &[Page]) -> Vec<(&str, &bank::StatementSummary)> {
    pages
        .iter()
        .flat_map(|p| &p.notices)
        .filter_map(|n| match n {
            Notice::Statement { source, summary } => Some((source.as_str(), &**summary)),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The conformance kit

/// Seeds are split over a camt.053 file (first half) and an older-named
/// but newer MT940 file (second half), so pulls cross files and formats.
struct BankHarness {
    folder: Folder,
}

#[async_trait]
impl Harness for BankHarness {
    fn connector(&self) -> Arc<dyn Connector> {
        self.folder.connector.clone()
    }
    fn entity(&self) -> &str {
        "bank_transaction"
    }
    fn page_size(&self) -> usize {
        4
    }
    async fn seed(&self, records: &[Seed]) -> anyhow::Result<()> {
        std::fs::remove_dir_all(&self.folder.root)?;
        std::fs::create_dir(&self.folder.root)?;
        let (a, b) = records.split_at(records.len() / 2);
        self.folder
            .write("b-statement.xml", &camt053("SEED-A", a), 20);
        self.folder
            .write("a-statement.sta", &mt940("SEED-B", b, 0), 10);
        Ok(())
    }
    async fn upsert(&self, records: &[Seed]) -> anyhow::Result<()> {
        let n = std::fs::read_dir(&self.folder.root)?.count();
        self.folder
            .write(&format!("more-{n}.sta"), &mt940("MORE", records, 0), 0);
        Ok(())
    }
    fn seed_id(&self, record: &RawRecord) -> String {
        record.data["bank_reference"]
            .as_str()
            .unwrap_or("(no bank reference)")
            .to_owned()
    }
}

fn harness() -> BankHarness {
    BankHarness {
        folder: Folder::new("page_size = 4\n"),
    }
}

#[tokio::test]
async fn conformance_pull_pages() {
    conformance::pull_pages(&harness()).await.unwrap();
}

#[tokio::test]
async fn conformance_redeliver_unacked() {
    conformance::redeliver_unacked(&harness()).await.unwrap();
}

// ---------------------------------------------------------------------------
// Files, keys and statements

#[tokio::test]
async fn files_are_read_oldest_first_and_move_to_done_when_acknowledged() {
    let h = harness();
    let seeds = conformance::seeds(10);
    h.seed(&seeds).await.unwrap();
    let pages = drain(h.folder.connector.as_ref()).await;
    let got: Vec<String> = records(&pages).iter().map(|r| h.seed_id(r)).collect();
    let want: Vec<String> = seeds.iter().map(|s| s.id.clone()).collect();
    assert_eq!(got, want, "the older camt file first, lines in file order");
    // Pages never span two files: 5 + 5 lines in pages of 4.
    let sizes: Vec<usize> = pages.iter().map(|p| p.records.len()).collect();
    assert_eq!(sizes, [4, 1, 4, 1]);
    assert_eq!(h.folder.files(""), Vec::<String>::new());
    assert_eq!(
        h.folder.files("done"),
        ["a-statement.sta", "b-statement.xml"]
    );
    // Records are canonical bank transactions dated by their booking day.
    let first = records(&pages)[0];
    assert_eq!(first.data["account"], ACCOUNT);
    assert_eq!(first.data["amount"], "5.00");
    assert_eq!(first.data["currency"], "EUR");
    assert_eq!(first.data["booking_date"], "2026-11-01");
    assert_eq!(
        first.updated_at,
        Some("2026-11-01T00:00:00Z".parse().unwrap())
    );
    // The last page of each file reports its statement, balanced.
    let st = statements(&pages);
    assert_eq!(st.len(), 2);
    assert!(pages[0].notices.is_empty() && pages[2].notices.is_empty());
    assert_eq!(st[0].0, "b-statement.xml");
    assert_eq!(st[0].1.id.as_deref(), Some("SEED-A"));
    assert_eq!(st[0].1.lines, 5);
    assert!(
        st.iter()
            .all(|(_, s)| s.balance_check.as_ref().unwrap().is_ok())
    );
    // Nothing is read twice.
    assert!(drain(h.folder.connector.as_ref()).await.is_empty());
}

#[tokio::test]
async fn a_reimported_statement_gives_the_same_keys() {
    let f = Folder::new("");
    let text = mt940("REIMPORT", &conformance::seeds(6), 0);
    f.write("day.sta", &text, 5);
    let first: Vec<String> = records(&drain(f.connector.as_ref()).await)
        .iter()
        .map(|r| r.external_id.to_string())
        .collect();
    // The same statement again, under the same name and under another.
    f.write("day.sta", &text, 5);
    f.write("day-copy.txt", &text, 4);
    let pages = drain(f.connector.as_ref()).await;
    let again: Vec<String> = records(&pages)
        .iter()
        .map(|r| r.external_id.to_string())
        .collect();
    assert_eq!(first.len(), 6);
    assert_eq!(again, [first.clone(), first.clone()].concat());
    assert!(first[0].starts_with(&format!("{ACCOUNT}:")), "{first:?}");
    // The statement is known by the same fingerprint each time.
    let st = statements(&pages);
    assert_eq!(st[0].1.fingerprint, st[1].1.fingerprint);
    // The archive keeps every copy.
    assert_eq!(f.files("done"), ["day-1.sta", "day-copy.txt", "day.sta"]);
}

#[tokio::test]
async fn identical_lines_in_one_statement_stay_two_records() {
    let f = Folder::new("");
    let seed = conformance::seeds(1).remove(0);
    f.write("twice.sta", &mt940("TWICE", &[seed.clone(), seed], 0), 5);
    let pages = drain(f.connector.as_ref()).await;
    let ids: BTreeSet<String> = records(&pages)
        .iter()
        .map(|r| r.external_id.to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
}

#[tokio::test]
async fn an_unbalanced_statement_is_imported_and_reported() {
    let f = Folder::new("");
    f.write("off.sta", &mt940("OFF", &conformance::seeds(3), 150), 5);
    let pages = drain(f.connector.as_ref()).await;
    assert_eq!(records(&pages).len(), 3);
    let st = statements(&pages);
    let check = st[0].1.balance_check.as_ref().unwrap();
    assert!(!check.is_ok());
    assert_eq!(check.difference.to_string(), "1.50");
    assert_eq!(check.currency.as_str(), "EUR");
    assert_eq!(f.files("done"), ["off.sta"]);
}

#[tokio::test]
async fn an_unreadable_file_yields_nothing_and_moves_to_failed_with_its_reason() {
    let f = Folder::new("page_size = 2\n");
    // Broken at its end, after three good lines: none of them is imported.
    let good = mt940("GOOD", &conformance::seeds(3), 0);
    let broken = good.replace(":62F:C", ":62F:X");
    f.write("1-broken.sta", &broken, 30);
    f.write("2-unknown.txt", "just some notes\n", 20);
    f.write("3-good.sta", &good, 10);
    let pages = drain(f.connector.as_ref()).await;
    let set_aside: Vec<(&str, &str)> = pages
        .iter()
        .flat_map(|p| &p.notices)
        .filter_map(|n| match n {
            Notice::SetAside { item, reason, .. } => Some((item.as_str(), reason.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(set_aside.len(), 2, "{set_aside:?}");
    assert_eq!(set_aside[0].0, "1-broken.sta");
    assert!(
        set_aside[0].1.contains("MT940 line 11"),
        "{}",
        set_aside[0].1
    );
    assert!(set_aside[1].1.contains("not a camt"), "{}", set_aside[1].1);
    assert!(pages[0].records.is_empty() && pages[1].records.is_empty());
    // The good file after them is read in the same pull.
    assert_eq!(records(&pages).len(), 3);
    assert_eq!(
        f.files("failed"),
        [
            "1-broken.sta",
            "1-broken.sta.reason.txt",
            "2-unknown.txt",
            "2-unknown.txt.reason.txt"
        ]
    );
    let reason = std::fs::read_to_string(f.root.join("failed/1-broken.sta.reason.txt")).unwrap();
    assert!(reason.contains("MT940 line 11: invalid :62F:"), "{reason}");
    assert_eq!(f.files("done"), ["3-good.sta"]);
}

#[tokio::test]
async fn a_failed_file_stays_until_its_page_is_acknowledged() {
    let f = Folder::new("");
    f.write("broken.xml", "<Document><BkToCstmrStmt><Stmt>", 5);
    {
        let mut stream = f.connector.pull("bank_transaction", None);
        let page = stream.next().await.unwrap().unwrap();
        assert_eq!(page.notices.len(), 1);
        drop(page);
    }
    assert_eq!(f.files(""), ["broken.xml"]);
    let pages = drain(f.connector.as_ref()).await;
    assert_eq!(pages.len(), 1);
    assert_eq!(f.files("failed"), ["broken.xml", "broken.xml.reason.txt"]);
}

#[tokio::test]
async fn a_page_set_aside_moves_its_file_to_failed() {
    let f = Folder::new("page_size = 2\n");
    f.write("day.sta", &mt940("DAY", &conformance::seeds(5), 0), 5);
    let mut stream = f.connector.pull("bank_transaction", None);
    let mut n = 0;
    while let Some(page) = stream.next().await {
        let ack = page.unwrap().ack.unwrap();
        n += 1;
        if n == 2 {
            ack.nack(false, "mapping refused the page").await.unwrap();
        } else {
            ack.ack().await.unwrap();
        }
    }
    assert_eq!(n, 3);
    assert_eq!(f.files("done"), Vec::<String>::new());
    assert_eq!(f.files("failed"), ["day.sta", "day.sta.reason.txt"]);
    let reason = std::fs::read_to_string(f.root.join("failed/day.sta.reason.txt")).unwrap();
    assert!(reason.contains("mapping refused the page"), "{reason}");
}

#[tokio::test]
async fn the_last_page_acknowledged_first_waits_for_the_others() {
    let f = Folder::new("page_size = 2\n");
    f.write("day.sta", &mt940("DAY", &conformance::seeds(3), 0), 5);
    let mut stream = f.connector.pull("bank_transaction", None);
    let first = stream.next().await.unwrap().unwrap();
    let last = stream.next().await.unwrap().unwrap();
    assert!(stream.next().await.is_none());
    assert_eq!(last.notices.len(), 1, "the last page carries the statement");
    last.ack.unwrap().ack().await.unwrap();
    assert_eq!(
        f.files(""),
        ["day.sta"],
        "the first page is not committed yet"
    );
    first.ack.unwrap().ack().await.unwrap();
    assert_eq!(f.files("done"), ["day.sta"]);
}

#[tokio::test]
async fn fresh_hidden_and_unmatched_files_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("drop");
    std::fs::create_dir(&root).unwrap();
    let c = open(
        dir.path(),
        &root,
        "settle_ms = 60000\nglob = \"*.sta\"\nformat = \"mt940\"\n",
    );
    let text = mt940("S", &conformance::seeds(2), 0);
    for (name, secs) in [
        ("old.sta", 120),
        ("fresh.sta", 0),
        (".old.sta", 120),
        ("old.xml", 120),
    ] {
        let p = root.join(name);
        std::fs::write(&p, &text).unwrap();
        age(&p, secs);
    }
    let pages = drain(c.as_ref()).await;
    assert_eq!(records(&pages).len(), 2);
    let mut left: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".old.sta", "fresh.sta", "old.xml"]);
}

#[tokio::test]
async fn csv_exports_are_read_through_their_profile() {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/bank-profiles");
    let f = Folder::new(&format!(
        "profiles = \"{}\"\n",
        profiles.display().to_string().replace('\\', "/")
    ));
    let sample = std::fs::read(profiles.join("icbc-debit-detail.sample.csv")).unwrap();
    std::fs::write(f.root.join("export.csv"), &sample).unwrap();
    age(&f.root.join("export.csv"), 5);
    let pages = drain(f.connector.as_ref()).await;
    let p: bank::CsvProfile =
        toml::from_str(&std::fs::read_to_string(profiles.join("icbc-debit-detail.toml")).unwrap())
            .unwrap();
    let want = bank::csv::parse_csv(&sample, &p).unwrap();
    assert_eq!(records(&pages).len(), want[0].transactions.len());
    let st = statements(&pages);
    assert_eq!(
        st[0].1.balance_check,
        bank::balance_check(&want[0]),
        "balances as the parser checks them"
    );
}

#[tokio::test]
async fn configuration_problems_are_config_errors() {
    let f = Folder::new("");
    let mut stream = f.connector.pull("invoice", None);
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    drop(stream);

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let c = open(dir.path(), &missing, "");
    let err = c.healthcheck().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("nowhere"), "{err}");
    let mut stream = c.pull("bank_transaction", None);
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(stream.next().await.is_none(), "the failed pull ends");

    let c = open(
        dir.path(),
        dir.path(),
        "format = \"csv:nope\"\nprofiles = \"config/bank-profiles\"\n",
    );
    let err = c.healthcheck().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("no CSV profile `nope`"), "{err}");
}

// ---------------------------------------------------------------------------
// Real files

/// The shared bank fixtures, or `None` (with the reason printed) when
/// absent outside CI.
fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/bank");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("bank fixtures not found at {} (CI=true)", dir.display());
    }
    eprintln!(
        "skipped: bank fixtures not found at {}, so real files were not pulled",
        dir.display()
    );
    None
}

#[tokio::test]
async fn real_statement_files_flow_through_as_the_parser_reads_them() {
    let Some(fixtures) = fixtures() else { return };
    let cases = [
        ("camt/camt053.v2.multi.statement.xml", Format::Camt053),
        ("camt/camt054.v8.xml", Format::Camt054),
        ("mt940/jejik/abnamro.sta", Format::Mt940),
        ("mt940/jejik/ing.sta", Format::Mt940),
        ("bai2/sample1.txt", Format::Bai2),
        ("ofx/bank_medium.ofx", Format::Ofx),
    ];
    for (rel, format) in cases {
        let bytes = std::fs::read(fixtures.join(rel)).unwrap();
        let want = bank::parse(&bytes, format).unwrap();
        let f = Folder::new("page_size = 3\n");
        let name = rel.rsplit('/').next().unwrap();
        std::fs::write(f.root.join(name), &bytes).unwrap();
        age(&f.root.join(name), 5);
        let pages = drain(f.connector.as_ref()).await;

        let got: Vec<(String, serde_json::Value)> = records(&pages)
            .iter()
            .map(|r| (r.external_id.to_string(), r.data.clone()))
            .collect();
        let expected: Vec<(String, serde_json::Value)> = want
            .iter()
            .flat_map(|st| {
                bank::line_keys(st).into_iter().zip(
                    st.transactions
                        .iter()
                        .map(|t| serde_json::to_value(t).unwrap()),
                )
            })
            .collect();
        assert!(!expected.is_empty(), "{rel}: the fixture has lines");
        assert_eq!(got, expected, "{rel}: records");
        assert!(
            pages.iter().all(|p| p.records.len() <= 3),
            "{rel}: page size"
        );

        let st = statements(&pages);
        assert_eq!(st.len(), want.len(), "{rel}: one notice per statement");
        for ((source, s), w) in st.iter().zip(&want) {
            assert_eq!(*source, name);
            assert_eq!(s.balance_check, bank::balance_check(w), "{rel}");
            assert_eq!(s.fingerprint, bank::statement_fingerprint(w), "{rel}");
            assert_eq!(s.lines, w.transactions.len(), "{rel}");
        }
        assert_eq!(f.files("done"), [name], "{rel}");
    }
}

// ---------------------------------------------------------------------------
// A large statement

/// Peak resident memory of this process, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[tokio::test]
async fn a_large_statement_streams_in_pages_without_holding_the_file() {
    const LINES: usize = 200_000;
    const PAGE: usize = 1_000;
    let f = Folder::new(&format!("page_size = {PAGE}\n"));
    let path = f.root.join("big.sta");
    {
        let mut w = BufWriter::new(std::fs::File::create(&path).unwrap());
        write!(
            w,
            ":20:BIG\r\n:25:{ACCOUNT}\r\n:28C:1/1\r\n:60F:C261127EUR0,00\r\n"
        )
        .unwrap();
        let mut sum: i64 = 0;
        for i in 0..LINES {
            let c = 1_000 + (i as i64 % 90_000);
            sum += c;
            write!(
                w,
                ":61:2611281128C{},{:02}NTRFNONREF//B{i}\r\n:86:166?00SEPA-GUTSCHRIFT?20EREF+E2E-{i}?21SVWZ+RE INV-2026-{i:06}?32CUSTOMER {i} GMBH\r\n",
                c / 100,
                c % 100
            )
            .unwrap();
        }
        write!(w, ":62F:C261128EUR{},{:02}\r\n-\r\n", sum / 100, sum % 100).unwrap();
        w.flush().unwrap();
    }
    age(&path, 5);
    let file_bytes = std::fs::metadata(&path).unwrap().len();
    let before = peak_rss();

    // Consume the pull the way the sync engine does: one page at a time,
    // acknowledged and dropped before the next.
    let mut stream = f.connector.pull("bank_transaction", None);
    let mut lines = 0;
    let mut pages = 0;
    let mut keys = std::collections::HashSet::new();
    let mut notices = Vec::new();
    let mut json_bytes = 0u64;
    while let Some(page) = stream.next().await {
        let mut page = page.unwrap();
        assert!(page.records.len() <= PAGE);
        pages += 1;
        lines += page.records.len();
        for r in &page.records {
            json_bytes += serde_json::to_vec(&r.data).unwrap().len() as u64;
            // Only a hash of each key is kept, to stay small.
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(r.external_id.as_str(), &mut h);
            keys.insert(std::hash::Hasher::finish(&h));
        }
        notices.append(&mut page.notices);
        page.ack.take().unwrap().ack().await.unwrap();
    }
    let after = peak_rss();
    assert_eq!(lines, LINES);
    assert_eq!(pages, LINES / PAGE, "full pages only");
    assert_eq!(keys.len(), LINES, "every line has its own key");
    let Notice::Statement { summary, .. } = &notices[0] else {
        panic!("{notices:?}")
    };
    assert_eq!(summary.lines, LINES);
    assert!(summary.balance_check.as_ref().unwrap().is_ok());
    assert_eq!(f.files("done"), ["big.sta"]);

    // Held whole, the records would take more memory than their JSON text;
    // streamed, the peak grows by a few pages and the per-line key table.
    if let (Some(before), Some(after)) = (before, after) {
        let grown = after.saturating_sub(before);
        eprintln!(
            "file {} MB, records {} MB as JSON, peak resident memory grew by {} MB",
            file_bytes / 1_000_000,
            json_bytes / 1_000_000,
            grown / 1_000_000
        );
        assert!(
            grown < json_bytes / 2,
            "peak memory grew by {grown} bytes pulling records of {json_bytes} bytes of JSON"
        );
    }
}

// ---------------------------------------------------------------------------
// The example definition

#[test]
fn the_example_definitions_pass_the_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            check_file(&path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            checked += 1;
        }
    }
    assert!(checked >= 1, "no examples in {}", dir.display());
}
