//! `concord reconcile` in file mode, as a controller runs it: generated
//! exports, bad input, the real bank samples, result.json, the allocations
//! CSV and the HTML report.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use concord::reconcile::scenario::{self, Params};
use rust_decimal::Decimal;
use serde_json::Value;

fn concord(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("CONCORD_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run concord")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}"))
        .parse()
        .unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Checks the invariants every result keeps: allocations never exceed the
/// invoice's open amount or the receipt; every receipt is reported once.
fn check_invariants(result: &Value, receipts: usize, open: &HashMap<String, Decimal>) {
    let matches = result["matches"].as_array().unwrap();
    let unmatched = result["unmatched_transactions"].as_array().unwrap();
    assert_eq!(
        matches.len() + unmatched.len(),
        receipts,
        "every receipt reported"
    );
    let mut seen = std::collections::HashSet::new();
    for t in matches.iter().chain(unmatched) {
        assert!(
            seen.insert(t["transaction_id"].as_str().unwrap().to_owned()),
            "receipt reported twice: {t}"
        );
    }
    let mut used: HashMap<String, Decimal> = HashMap::new();
    for m in matches {
        let amount = dec(&m["amount"]);
        let mut sum = Decimal::ZERO;
        for a in m["allocations"].as_array().unwrap() {
            let x = dec(&a["amount"]);
            assert!(x > Decimal::ZERO, "{m}");
            sum += x;
            if m["status"] == "auto" {
                *used
                    .entry(a["invoice_number"].as_str().unwrap().to_owned())
                    .or_default() += x;
            }
        }
        assert!(sum <= amount, "allocations above the receipt: {m}");
        assert_eq!(sum + dec(&m["unallocated"]), amount, "{m}");
        assert!(!m["reasons"].as_array().unwrap().is_empty(), "{m}");
    }
    for (inv, x) in used {
        let o = open[&inv];
        assert!(x <= o, "invoice {inv}: {x} allocated, {o} open");
    }
}

struct Generated {
    dir: tempfile::TempDir,
    scenario: scenario::Scenario,
}

fn generated(seed: u64, receipts: usize, receivables: usize) -> Generated {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario::generate(Params {
        seed,
        receipts,
        receivables,
    });
    scenario::write_receivables_csv(
        &s.receivables,
        std::fs::File::create(dir.path().join("receivables.csv")).unwrap(),
    )
    .unwrap();
    scenario::write_statement_csv(
        &s.receipts,
        std::fs::File::create(dir.path().join("statement.csv")).unwrap(),
    )
    .unwrap();
    Generated { dir, scenario: s }
}

#[test]
fn file_mode_writes_result_csv_and_report_on_generated_exports() {
    let g = generated(7, 800, 1200);
    let out = concord(
        g.dir.path(),
        &[
            "reconcile",
            "--receivables",
            "receivables.csv",
            "--statement",
            "statement.csv",
            "--out",
            "result.json",
            "--report",
            "report.html",
            "--csv",
            "allocations.csv",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("matched automatically"), "{stdout}");
    assert!(
        stdout.contains("written: result.json, report.html, allocations.csv"),
        "{stdout}"
    );

    let result = read_json(&g.dir.path().join("result.json"));
    let s = &g.scenario;
    let open: HashMap<String, Decimal> = s
        .receivables
        .iter()
        .map(|r| (r.invoice_number.clone(), r.open_amount))
        .collect();
    check_invariants(&result, s.receipts.len(), &open);
    let summary = &result["summary"];
    assert_eq!(summary["receipts"]["count"], s.receipts.len());

    // Precision of the automatic matches against the labels (the CSV
    // round trip must not cost accuracy).
    let truth: HashMap<&str, &scenario::Label> = s
        .receipts
        .iter()
        .zip(&s.labels)
        .map(|(r, l)| (r.id.as_str(), l))
        .collect();
    let (mut auto, mut right, mut matchable, mut matchable_auto) = (0, 0, 0, 0);
    for l in &s.labels {
        if !l.truth.is_empty() && l.identifiable {
            matchable += 1;
        }
    }
    for m in result["matches"].as_array().unwrap() {
        if m["status"] != "auto" {
            continue;
        }
        auto += 1;
        let label = truth[m["transaction_id"].as_str().unwrap()];
        let mut got: Vec<(String, Decimal)> = m["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["invoice_number"].as_str().unwrap().to_owned(),
                    dec(&a["amount"]),
                )
            })
            .collect();
        got.sort();
        let want_invoices: Vec<&String> = label.truth.iter().map(|(i, _)| i).collect();
        let got_invoices: Vec<&String> = got.iter().map(|(i, _)| i).collect();
        if want_invoices == got_invoices {
            right += 1;
            if label.identifiable {
                matchable_auto += 1;
            }
        }
    }
    assert_eq!(summary["auto"]["count"], auto);
    let precision = right as f64 / auto as f64;
    let auto_rate = matchable_auto as f64 / matchable as f64;
    println!("file mode: {auto} auto, precision {precision:.4}, auto of matchable {auto_rate:.4}");
    assert!(precision >= 0.995, "precision {precision}");
    assert!(auto_rate >= 0.90, "auto rate {auto_rate}");

    // The allocations CSV: one row per allocation of every match.
    let mut rdr = csv::Reader::from_path(g.dir.path().join("allocations.csv")).unwrap();
    let rows = rdr.records().count();
    let allocations: usize = result["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["allocations"].as_array().unwrap().len())
        .sum();
    assert_eq!(rows, allocations);

    // The report: self-contained, with the key figures.
    let html = std::fs::read_to_string(g.dir.path().join("report.html")).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("<svg"), "the chart is inline SVG");
    let auto_count = summary["auto"]["count"].as_u64().unwrap();
    let suggested = summary["suggested"]["count"].as_u64().unwrap();
    assert!(html.contains(&format!(
        "<td>Matched automatically</td><td class=\"n\">{auto_count}</td>"
    )));
    assert!(html.contains(&format!(
        "<td>Receipts read</td><td class=\"n\">{}</td>",
        s.receipts.len()
    )));
    assert!(html.contains(&format!("Suggestions to review ({suggested})")));
    for (ccy, amount) in summary["receipts"]["amount"].as_object().unwrap() {
        let grouped = concord::reconcile::report::group(amount.as_str().unwrap());
        assert!(
            html.contains(&format!("{grouped}&nbsp;{ccy}")),
            "{grouped} {ccy}"
        );
    }
    for stage in summary["by_stage"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, t)| t["auto"].as_u64() > Some(0))
    {
        assert!(
            html.contains(&format!("<td>{}</td>", stage.0.replace('_', " "))),
            "{}",
            stage.0
        );
    }
    // A suggestion's reason is listed.
    if let Some(m) = result["matches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["status"] == "suggested")
    {
        let reason = concord::reconcile::report::escape(m["reasons"][0].as_str().unwrap());
        assert!(html.contains(&reason), "{reason}");
    }
}

fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(lower.starts_with("<!doctype html>"));
    for bad in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "<script",
        "<link",
        "@import",
        "url(",
    ] {
        assert!(!lower.contains(bad), "report refers outside itself: {bad}");
    }
    assert!(!lower.contains("http://") && !lower.contains("https://"));
}

#[test]
fn json_output_prints_the_summary() {
    let g = generated(11, 60, 90);
    let out = concord(
        g.dir.path(),
        &[
            "reconcile",
            "--receivables",
            "receivables.csv",
            "--statement",
            "statement.csv",
            "--out",
            "r.json",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = read_json(&g.dir.path().join("r.json"));
    assert_eq!(printed["summary"], file["summary"]);
    assert_eq!(printed["summary"]["receipts"]["count"], 60);
    assert_eq!(printed["written"], serde_json::json!(["r.json"]));
}

const BAD_RECEIVABLES: &str = "\
invoice_number,customer_id,customer_name,customer_account,currency,amount_total,amount_open,issue_date,due_date
INV-1001,C1,Muster GmbH,DE89370400440532013000,EUR,100.00,100.00,2026-02-01,2026-03-01
INV-1002,C2,<b>Evil</b> & Co,,XYZ,50.00,50.00,2026-02-01,2026-03-01
INV-1003,C3,Negative Ltd,,EUR,80.00,-80.00,2026-02-01,2026-03-01
INV-1004,C4,Dup AG,,EUR,70.00,70.00,2026-02-01,2026-03-01
INV-1004,C5,Other Dup AG,,EUR,75.00,75.00,2026-02-01,2026-03-01
INV-1005,C6,Short Row
INV-1006,C7,上海华联有限公司,,CNY,1000.00,1000.00,2026-02-01,2026-03-01
";

const BAD_STATEMENT: &str = "\
transaction_id,booking_date,amount,currency,counterparty_name,counterparty_account,reference
T1,2026-03-05,100.00,EUR,Muster GmbH,DE89370400440532013000,INV-1001
T2,2026-03-05,70.00,EUR,Dup AG,,INV-1004
T3,2026-03-06,12.00,GBP,Someone,,interest
T4,not-a-date,5.00,EUR,X,,y
T5,2026-03-07,1000.00,CNY,上海华联有限公司,,发票 INV-1006
";

#[test]
fn bad_rows_are_reported_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ar.csv"), BAD_RECEIVABLES).unwrap();
    std::fs::write(dir.path().join("st.csv"), BAD_STATEMENT).unwrap();
    let out = concord(
        dir.path(),
        &[
            "reconcile",
            "--receivables",
            "ar.csv",
            "--statement",
            "st.csv",
            "--format",
            "csv",
            "--out",
            "result.json",
            "--report",
            "report.html",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result = read_json(&dir.path().join("result.json"));
    let alerts: Vec<(String, Option<u64>)> = result["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["rule"].as_str().unwrap().to_owned(), a["line"].as_u64()))
        .collect();
    for (rule, line) in [
        ("unknown_currency", Some(3)),
        ("negative_open_amount", Some(4)),
        ("duplicate_invoice_number", Some(5)),
        ("invalid_date", Some(5)),
    ] {
        assert!(
            alerts
                .iter()
                .any(|(r, l)| r == rule && (*l == line || rule == "invalid_date")),
            "missing {rule} at {line:?}: {alerts:?}"
        );
    }
    assert!(
        alerts
            .iter()
            .any(|(r, _)| r == "currency_without_receivables"),
        "{alerts:?}"
    );
    assert!(
        alerts.iter().any(|(_, l)| *l == Some(7)),
        "the short row is reported: {alerts:?}"
    );
    // The good rows were matched: T1 to INV-1001 and T5 to INV-1006.
    let matched: BTreeMap<&str, &str> = result["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["transaction_id"].as_str().unwrap(),
                m["allocations"][0]["invoice_number"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(matched.get("T1"), Some(&"INV-1001"), "{result}");
    assert_eq!(matched.get("T5"), Some(&"INV-1006"), "{result}");
    // The duplicated invoice number is never matched.
    assert!(!matched.values().any(|i| *i == "INV-1004"));
    // Stdout names the problems with file and line.
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ar.csv:3"), "{stdout}");
    // Input text is escaped in the report.
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert_self_contained(&html);
    assert!(!html.contains("<b>Evil</b>"));
}

#[test]
fn an_unusable_file_is_reported_in_the_result_and_fails_the_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ar.csv"), BAD_RECEIVABLES).unwrap();
    std::fs::write(dir.path().join("empty.csv"), "").unwrap();
    std::fs::write(
        dir.path().join("nocols.csv"),
        "invoice_number,currency\nINV-1,EUR\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("st.csv"), BAD_STATEMENT).unwrap();

    let out = concord(
        dir.path(),
        &[
            "reconcile",
            "--receivables",
            "ar.csv",
            "--statement",
            "empty.csv",
            "--out",
            "r1.json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("could not be used"));
    let r1 = read_json(&dir.path().join("r1.json"));
    assert!(
        r1["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "empty_file" && a["file"] == "empty.csv")
    );
    assert_eq!(r1["summary"]["receipts"]["count"], 0);
    // The invoices are still reported as open.
    assert!(!r1["unmatched_invoices"].as_array().unwrap().is_empty());

    let out = concord(
        dir.path(),
        &[
            "reconcile",
            "--receivables",
            "nocols.csv",
            "--statement",
            "st.csv",
            "--out",
            "r2.json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let r2 = read_json(&dir.path().join("r2.json"));
    assert!(
        r2["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "missing_columns"),
        "{r2}"
    );
    // The statement was still read: its receipts are all reported open.
    // (T4 has a bad date and is reported instead.)
    assert_eq!(r2["unmatched_transactions"].as_array().unwrap().len(), 4);

    // A statement that is no statement.
    std::fs::write(dir.path().join("junk.txt"), "hello\nworld\n").unwrap();
    let out = concord(
        dir.path(),
        &[
            "reconcile",
            "--receivables",
            "ar.csv",
            "--statement",
            "junk.txt",
            "--out",
            "r3.json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let r3 = read_json(&dir.path().join("r3.json"));
    assert!(
        r3["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "unreadable_statement"),
        "{r3}"
    );
}

#[test]
fn usage_errors_exit_2_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ar.csv"), BAD_RECEIVABLES).unwrap();
    std::fs::write(dir.path().join("st.csv"), BAD_STATEMENT).unwrap();
    // --out missing.
    let out = concord(
        dir.path(),
        &[
            "reconcile",
            "--receivables",
            "ar.csv",
            "--statement",
            "st.csv",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--out"), "{}", text(&out.stderr));
    // Unknown format.
    let out = concord(
        dir.path(),
        &[
            "reconcile",
            "--receivables",
            "ar.csv",
            "--statement",
            "st.csv",
            "--format",
            "xls",
            "--out",
            "r.json",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // Thresholds the wrong way round.
    let out = concord(
        dir.path(),
        &[
            "reconcile",
            "--receivables",
            "ar.csv",
            "--statement",
            "st.csv",
            "--out",
            "r.json",
            "--auto-threshold",
            "0.4",
            "--suggest-threshold",
            "0.6",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("r.json").exists());
    // A missing file is an operation failure naming the file.
    let out = concord(
        dir.path(),
        &[
            "reconcile",
            "--receivables",
            "nope.csv",
            "--statement",
            "st.csv",
            "--out",
            "r.json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nope.csv"));
    assert!(!dir.path().join("r.json").exists());
}

fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/bank");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: no bank fixtures at {}", dir.display());
        None
    }
}

/// Receivables that the credits of a real statement pay: one invoice per
/// credit with its amount, currency and the payer's name, plus one that
/// nobody pays.
fn receivables_for(transactions: &[Value]) -> (String, usize) {
    let mut csv = String::from(
        "invoice_number,customer_id,customer_name,customer_account,currency,amount_total,amount_open,issue_date,due_date\n",
    );
    let mut credits = 0;
    for (k, t) in transactions.iter().enumerate() {
        let amount = dec(&t["amount"]);
        if amount <= Decimal::ZERO {
            continue;
        }
        credits += 1;
        let name = t["counterparty_name"]
            .as_str()
            .unwrap_or("Unknown payer")
            .replace(['"', ','], " ");
        let account = t["counterparty_account"].as_str().unwrap_or("");
        let ccy = t["currency"].as_str().unwrap();
        csv += &format!(
            "R-{k},C-{k},\"{name}\",{account},{ccy},{amount},{amount},2000-01-01,2000-01-31\n"
        );
    }
    csv += "R-NOBODY,C-X,Nobody Pays GmbH,,EUR,12345.67,12345.67,2000-01-01,2000-01-31\n";
    (csv, credits)
}

fn real_statement(file: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let parsed = concord(
        dir.path(),
        &["bank", "parse", file.to_str().unwrap(), "--output", "json"],
    );
    assert_eq!(parsed.status.code(), Some(0), "{}", text(&parsed.stderr));
    let statements: Value = serde_json::from_slice(&parsed.stdout).unwrap();
    let transactions: Vec<Value> = statements
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["transactions"].as_array().unwrap().clone())
        .collect();
    let (csv, credits) = receivables_for(&transactions);
    std::fs::write(dir.path().join("ar.csv"), csv).unwrap();
    let out = concord(
        dir.path(),
        &[
            "reconcile",
            "--receivables",
            "ar.csv",
            "--statement",
            file.to_str().unwrap(),
            "--out",
            "result.json",
            "--report",
            "report.html",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let result = read_json(&dir.path().join("result.json"));
    let reported = result["summary"]["receipts"]["count"].as_u64().unwrap() as usize;
    let skipped: u64 = result["summary"]["skipped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    // Every credit is either a receipt or counted as skipped (pending,
    // reversal).
    assert!(
        reported <= credits && reported as u64 + skipped >= credits as u64,
        "{reported} of {credits} credits, {skipped} skipped"
    );
    let open: HashMap<String, Decimal> = std::fs::read_to_string(dir.path().join("ar.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(l.as_bytes());
            let r = f.records().next()?.ok()?;
            Some((r[0].to_owned(), r[6].parse().ok()?))
        })
        .collect();
    check_invariants(&result, reported, &open);
    // The invoice nobody pays stays open.
    assert!(
        result["unmatched_invoices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["invoice_number"] == "R-NOBODY")
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert_self_contained(&html);
    println!(
        "{}: {reported} receipts, {} auto, {} suggested, {} open",
        file.display(),
        result["summary"]["auto"]["count"],
        result["summary"]["suggested"]["count"],
        result["summary"]["open"]["count"]
    );
}

#[test]
fn real_camt053_and_mt940_samples() {
    let Some(dir) = fixtures() else { return };
    let mut ran = 0;
    for f in [
        "camt/camt053.v2.multi.statement.xml",
        "camt/camt053.v8.xml",
        "mt940/betterplace/sepa_mt9401.sta",
        "mt940/ASNB/mt940.txt",
    ] {
        let path = dir.join(f);
        if path.is_file() {
            real_statement(&path);
            ran += 1;
        } else {
            println!("skipped {f}: not in the fixtures");
        }
    }
    println!("{ran} real statement(s) reconciled");
}
