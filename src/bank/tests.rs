//! Tests over the real fixture files plus hand-written cases per format.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::Value;

use super::*;

/// Where the shared bank fixtures live: `../shared/fixtures/bank` beside
/// the project. Returns `None` (after saying why) when they are absent, except under
/// `CI=true`, where a missing folder is a failure.
pub(crate) fn fixtures_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/bank");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("bank fixtures not found at {} (CI=true)", dir.display());
    }
    eprintln!("skipping: bank fixtures not found at {}", dir.display());
    None
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).expect("test decimal")
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn ex<'a>(t: &'a BankTransaction, key: &str) -> Option<&'a str> {
    t.extra.get(key).and_then(Value::as_str)
}

fn fixture(rel: &str, format: Format) -> Option<Vec<Statement>> {
    let dir = fixtures_dir()?;
    let bytes = std::fs::read(dir.join(rel)).expect("fixture readable");
    Some(parse(&bytes, format).unwrap_or_else(|e| panic!("{rel}: {e}")))
}

// ---------------------------------------------------------------------------
// 1. Walk over every fixture file

/// Files that must fail, with a fragment of the expected message. Most MT940
/// entries are one-tag snippets from parser test suites, not statements.
const EXPECTED_FAILURES: &[(&str, &str)] = &[
    ("camt/camt053.v2.wrong.xml", "holds no Stmt element"),
    ("mt940/betterplace/amount_formats.sta", "missing :25:"),
    ("mt940/betterplace/empty_86.sta", "no :20:"),
    ("mt940/betterplace/empty_entry_date.sta", "missing :25:"),
    ("mt940/betterplace/empty_line.sta", "missing :25:"),
    ("mt940/betterplace/missing_crlf_at_end.sta", "missing :25:"),
    (
        "mt940/betterplace/sepa_snippet_broken.sta",
        "account identification after the statement's lines",
    ),
    ("mt940/cmxl/account_balance_credit.sta", "missing :25:"),
    ("mt940/cmxl/account_balance_debit.sta", "missing :25:"),
    ("mt940/cmxl/available_balance.sta", "missing :25:"),
    ("mt940/cmxl/closing_balance.sta", "missing :25:"),
    ("mt940/cmxl/mt940.sta", "\"DEM\""),
    ("mt940/cmxl/reference.sta", "missing :25:"),
    ("mt940/cmxl/statement_details.sta", "missing :25:"),
    ("mt940/cmxl/statement_line.sta", "missing :25:"),
    ("mt940/cmxl/statement_number.sta", "missing :25:"),
    ("mt940/self-provided/empty_non_swift.sta", "no :20:"),
    (
        "mt940/self-provided/february_30.sta",
        "invalid value date \"160230\"",
    ),
    ("mt940/self-provided/invalid_statement.sta", "no :20:"),
    ("mt940/self-provided/multiline.sta", "missing :25:"),
    ("mt940/self-provided/raphaelm.sta", "\"DEM\""),
    ("mt940/self-provided/sparkassen.sta", "missing :25:"),
    (
        "mt940/self-provided/transaction_details_wrapped.sta",
        "160230",
    ),
    ("mt940/self-provided/wrapped_timestamp.sta", "160230"),
    ("bai2/errors/sample-parseError.txt", "invalid record code"),
    ("bai2/sample5-issue113.txt", "invalid record code \"88:EREF"),
    ("ofx/error_message.ofx", "status 2000"),
    ("ofx/signon_fail.ofx", "status 15500"),
    ("ofx/fail_nice/date_missing.ofx", "missing DTPOSTED"),
    ("ofx/fail_nice/decimal_error.ofx", "invalid TRNAMT \"$120\""),
];

/// Statements whose stated balances do not follow from their lines because
/// the fixture data was edited (anonymised or synthetic): (file, statement
/// index, reason).
const UNBALANCED: &[(&str, usize, &str)] = &[
    (
        "camt/camt053.v2.all-balance-types.xml",
        0,
        "synthetic: one sample of every balance type",
    ),
    (
        "camt/camt053.v2.five.decimals.xml",
        0,
        "18.150 + 8.850 ≠ 27.050",
    ),
    ("camt/camt053.v2.minimal.xml", 0, "opening EUR, closing SEK"),
    (
        "camt/camt053.v2.minimal.ultimate.xml",
        0,
        "opening EUR, closing SEK",
    ),
    (
        "camt/camt053.v2.with-party-ids.xml",
        0,
        "opening EUR, closing SEK",
    ),
    ("camt/camt053.v3.xml", 0, "opening EUR, closing SEK"),
    ("camt/camt053.v4.xml", 0, "opening EUR, closing SEK"),
    ("camt/camt053.v8.xml", 0, "opening EUR, closing SEK"),
    ("mt940/jejik/abnamro.sta", 0, "anonymised amounts"),
    ("mt940/jejik/abnamro.sta", 1, "anonymised amounts"),
    ("mt940/jejik/ing.sta", 0, "anonymised amounts"),
    (
        "mt940/jejik/knab.sta",
        1,
        "anonymised amounts (off by 4500)",
    ),
    (
        "mt940/jejik/postfinance.sta",
        1,
        "anonymised amounts (off by 0.2)",
    ),
    ("mt940/jejik/rabobank.sta", 0, "anonymised amounts"),
    ("mt940/jejik/rabobank.sta", 2, "anonymised amounts"),
    ("mt940/jejik/triodos.sta", 0, "anonymised amounts"),
    (
        "mt940/mBank/with_newline_in_tnr.sta",
        0,
        "lines cut from the statement",
    ),
    (
        "mt940/betterplace/sepa_snippet.sta",
        1,
        "snippet: off by 300.08",
    ),
    ("mt940/self-provided/details_60-63.sta", 0, "synthetic"),
    ("mt940/self-provided/malformed_details.sta", 0, "synthetic"),
    (
        "mt940/self-provided/overly_long_details.sta",
        0,
        "synthetic",
    ),
    ("mt940/self-provided/whitespace.sta", 0, "synthetic"),
    (
        "mt940/self-provided/raiffeisen-cmi.sta",
        0,
        "lines cut from the statement",
    ),
    (
        "bai2/sample4-continuations-newline-delimited.txt",
        2,
        "synthetic; control totals disagree too",
    ),
];

fn format_for(rel: &str) -> Option<Format> {
    let ext = Path::new(rel)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    if rel.starts_with("camt/") && ext == "xml" {
        Some(Format::Camt053)
    } else if rel.starts_with("mt940/") && (ext == "sta" || ext == "txt") {
        Some(Format::Mt940)
    } else if rel.starts_with("bai2/") && ext == "txt" {
        Some(Format::Bai2)
    } else if rel.starts_with("ofx/") && ext == "ofx" {
        Some(Format::Ofx)
    } else {
        None
    }
}

#[test]
fn every_fixture_parses_or_fails_with_a_located_error() {
    let Some(dir) = fixtures_dir() else { return };
    let mut all = Vec::new();
    files(&dir, &mut all);
    let mut parsed = 0;
    let mut failed = 0;
    let mut checked_balances = 0;
    for path in all {
        let rel = path
            .strip_prefix(&dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        let Some(format) = format_for(&rel) else {
            continue;
        };
        let bytes = std::fs::read(&path).expect("readable");
        // Detection agrees with the folder for every real statement file.
        let expected_failure = EXPECTED_FAILURES.iter().find(|(f, _)| *f == rel);
        let result = parse(&bytes, format.clone());
        match (result, expected_failure) {
            (Ok(statements), None) => {
                parsed += 1;
                for (i, st) in statements.iter().enumerate() {
                    if let Some(check) = balance_check(st) {
                        let known = UNBALANCED.iter().any(|(f, n, _)| *f == rel && *n == i);
                        assert_eq!(
                            check.is_ok(),
                            !known,
                            "{rel} statement {i}: balance check {check:?} (known unbalanced: {known})"
                        );
                        checked_balances += 1;
                    }
                    for t in &st.transactions {
                        assert_eq!(t.account, st.account, "{rel}: line account");
                        assert!(t.money().is_ok(), "{rel}: amount scale");
                    }
                    assert!(!statement_fingerprint(st).is_empty());
                }
            }
            (Err(e), Some((_, fragment))) => {
                failed += 1;
                let msg = e.to_string();
                assert!(
                    msg.contains(fragment),
                    "{rel}: error {msg:?} lacks {fragment:?}"
                );
                assert_ne!(
                    *e.location(),
                    Location::File,
                    "{rel}: error must be located: {msg}"
                );
            }
            (Ok(_), Some((_, fragment))) => {
                panic!("{rel}: expected failure containing {fragment:?}")
            }
            (Err(e), None) => panic!("{rel}: unexpected error {e}"),
        }
    }
    eprintln!(
        "fixtures: {parsed} parsed, {failed} failed as expected, {checked_balances} balance checks"
    );
    assert!(parsed >= 60, "too few fixtures parsed: {parsed}");
}

#[test]
fn detect_recognises_fixture_formats() {
    let Some(dir) = fixtures_dir() else { return };
    let cases = [
        ("camt/camt053.v2.minimal.xml", Format::Camt053),
        ("camt/camt054.v8.xml", Format::Camt054),
        ("camt/camt052.v6.xml", Format::Camt052),
        ("mt940/jejik/abnamro.sta", Format::Mt940),
        ("mt940/ASNB/mt940.txt", Format::Mt940),
        ("mt940/mBank/mt942.sta", Format::Mt942),
        ("bai2/sample1.txt", Format::Bai2),
        ("ofx/bank_medium.ofx", Format::Ofx),
        ("ofx/anzcc.ofx", Format::Ofx),
    ];
    for (rel, want) in cases {
        let bytes = std::fs::read(dir.join(rel)).expect("readable");
        let head = &bytes[..bytes.len().min(4096)];
        assert_eq!(detect(head), Some(want), "{rel}");
    }
    assert_eq!(detect(b"Buchungstag;Betrag\n"), None);
}

// ---------------------------------------------------------------------------
// 2. Field-by-field against the expectations shipped with the fixtures
//    (values transcribed from the JSON / YAML files beside them).

#[test]
fn camt053_v2_minimal_fields() {
    let Some(sts) = fixture("camt/camt053.v2.minimal.xml", Format::Camt053) else {
        return;
    };
    assert_eq!(sts.len(), 1);
    let s = &sts[0];
    assert_eq!(s.id.as_deref(), Some("253EURNL26VAYB8060476890"));
    assert_eq!(s.account, "NL26VAYB8060476890");
    assert_eq!(s.sequence.as_deref(), Some("12312"));
    assert_eq!(s.message_id.as_deref(), Some("CAMT053RIB000000000001"));
    assert_eq!(
        s.created_at.map(|c| c.to_string()).as_deref(),
        Some("2015-03-10 18:43:50")
    );
    let kinds: Vec<&str> = s.balances.iter().map(|b| b.kind.as_str()).collect();
    assert_eq!(kinds, ["OPBD", "CLBD", "OPAV", "CLAV"]);
    assert_eq!(s.balances[0].amount.amount(), d("18.15"));
    assert_eq!(s.balances[1].amount.amount(), d("-27.00"));
    assert_eq!(s.balances[1].amount.currency().as_str(), "SEK");
    assert_eq!(s.balances[3].amount.amount(), d("-2700"));
    assert_eq!(s.balances[0].date, date("2014-12-30"));
    let t = &s.transactions[0];
    assert_eq!(t.amount, d("8.85"));
    assert_eq!(t.currency.as_str(), "EUR");
    assert_eq!(t.booking_date, date("2014-12-31"));
    assert_eq!(t.value_date, Some(date("2015-01-02")));
    assert_eq!(t.bank_transaction_code.as_deref(), Some("544"));
    assert_eq!(
        t.counterparty_name.as_deref(),
        Some("NAME NAME"),
        "credit: the debtor"
    );
    assert_eq!(
        t.counterparty_account.as_deref(),
        Some("NL56AGDH9619008421")
    );
    assert_eq!(ex(t, "creditor_reference"), Some("4654654654654654"));
    assert_eq!(ex(t, "creditor_reference_type"), Some("SCOR"));
    assert_eq!(t.remittance_info.as_deref(), Some("4654654654654654"));
    assert_eq!(ex(t, "entry_status"), Some("BOOK"));
}

#[test]
fn camt053_v8_fields() {
    let Some(sts) = fixture("camt/camt053.v8.xml", Format::Camt053) else {
        return;
    };
    let t = &sts[0].transactions[0];
    assert_eq!(t.amount, d("8.85"));
    assert_eq!(t.booking_date, date("2014-12-31"));
    assert_eq!(t.bank_reference.as_deref(), Some("AAAASESS-FP-CN_98765/01"));
    assert_eq!(t.end_to_end_id.as_deref(), Some("MUELL/FINP/RA12345"));
    assert_eq!(t.bank_transaction_code.as_deref(), Some("PMNT-RCDT-BOOK"));
    assert_eq!(t.counterparty_name.as_deref(), Some("NAME NAME"));
    assert_eq!(ex(t, "creditor_name"), Some("Company Name"));
    assert_eq!(t.remittance_info.as_deref(), Some("4654654654654654"));
    assert_eq!(sts[0].servicer.as_deref(), Some("AAAA BANKEN"));
}

#[test]
fn camt053_multi_statement_fields() {
    let Some(sts) = fixture("camt/camt053.v2.multi.statement.xml", Format::Camt053) else {
        return;
    };
    assert_eq!(sts.len(), 2);
    assert_eq!(sts[1].id.as_deref(), Some("254EURNL26VAYB8060476890"));
    let t = &sts[1].transactions[0];
    assert_eq!(t.amount, d("-7.00"));
    assert_eq!(t.end_to_end_id.as_deref(), Some("000000002"));
    assert_eq!(
        t.remittance_info.as_deref(),
        Some("Transaction Description 2")
    );
    assert_eq!(
        t.counterparty_name.as_deref(),
        Some("Company Name 2"),
        "debit: the creditor"
    );
    assert_ne!(
        statement_fingerprint(&sts[0]),
        statement_fingerprint(&sts[1])
    );
    for s in &sts {
        assert!(balance_check(s).is_some_and(|c| c.is_ok()));
    }
}

#[test]
fn camt053_five_decimals_fields() {
    let Some(sts) = fixture("camt/camt053.v2.five.decimals.xml", Format::Camt053) else {
        return;
    };
    let s = &sts[0];
    assert_eq!(
        s.opening.as_ref().map(|b| b.amount.amount()),
        Some(d("18.150"))
    );
    assert_eq!(
        s.closing.as_ref().map(|b| b.amount.amount()),
        Some(d("27.050"))
    );
    let t = &s.transactions[0];
    assert_eq!(t.amount, d("8.850"));
    assert_eq!(t.amount.scale(), 3, "scale kept as written");
    assert_eq!(t.end_to_end_id.as_deref(), Some("000000001"));
    assert_eq!(
        t.remittance_info.as_deref(),
        Some("Transaction Description")
    );
}

#[test]
fn camt053_only_dttm_balance_fields() {
    let Some(sts) = fixture("camt/camt53.only-Dt-with-DtTm.xml", Format::Camt053) else {
        return;
    };
    let s = &sts[0];
    assert_eq!(s.account, "GB33BUKB20201555555555");
    let b = s.opening.as_ref().expect("opening");
    assert_eq!(b.date, date("2025-07-23"));
    assert_eq!(b.amount.amount(), d("5442.09000"));
    assert_eq!(b.amount.currency().as_str(), "RON");
    assert!(s.transactions.is_empty());
}

#[test]
fn camt054_v8_batch_fields() {
    let Some(sts) = fixture("camt/camt054.v8.xml", Format::Camt054) else {
        return;
    };
    let s = &sts[0];
    assert_eq!(s.format, Format::Camt054);
    assert_eq!(s.account, "CH2801234000123456789");
    // One Ntry with three TxDtls, each with its own amount → three lines.
    assert_eq!(s.transactions.len(), 3);
    let t = &s.transactions[0];
    assert_eq!(t.amount, d("3.1"));
    assert_eq!(t.currency.as_str(), "CHF");
    assert_eq!(
        t.end_to_end_id.as_deref(),
        Some("UXC06170000006PI00001EE00001")
    );
    assert_eq!(
        ex(t, "instruction_id"),
        Some("UXC06170000006PI00001II00001")
    );
    assert_eq!(
        t.remittance_info.as_deref(),
        Some("Unstructured Remittance Information V1")
    );
    assert_eq!(ex(t, "creditor_reference"), Some("ISR ref number V1"));
    assert_eq!(ex(t, "creditor_reference_type"), Some("ISR Reference"));
    assert_eq!(t.bank_reference.as_deref(), Some("ACSR160617103200001"));
    assert_eq!(t.bank_transaction_code.as_deref(), Some("PMNT-ICDT-DMCT"));
    assert_eq!(ex(t, "bank_transaction_code_proprietary"), Some("Z24"));
    // v8 nests names under Pty; CRDT detail → counterparty is the debtor.
    assert_eq!(t.counterparty_name.as_deref(), Some("UNIFITS GmbH"));
    assert_eq!(ex(t, "creditor_name"), Some("Example Creditor 3 - V1"));
    assert_eq!(ex(t, "entry_amount"), Some("-200000"));
    assert_eq!(s.transactions[1].amount, d("3.2"));
    assert_eq!(
        s.transactions[1].remittance_info.as_deref(),
        Some("Additional Remittance Information V2")
    );
    assert!(!s.warnings.is_empty(), "batch sum mismatch is reported");
}

#[test]
fn camt054_v2_unsplittable_batch_keeps_all_remittance() {
    let Some(sts) = fixture("camt/camt054.v2.xml", Format::Camt054) else {
        return;
    };
    let s = &sts[0];
    assert_eq!(s.transactions.len(), 1);
    let t = &s.transactions[0];
    assert_eq!(t.amount, d("-200000"));
    assert_eq!(t.currency.as_str(), "SEK");
    let rem = t.remittance_info.as_deref().unwrap_or("");
    assert!(
        rem.contains("V1") && rem.contains("V3 block 1") && rem.contains("V3 block 2"),
        "{rem}"
    );
    assert_eq!(t.end_to_end_id.as_deref(), Some("MUELL/FINP/RA12345"));
}

#[test]
fn camt052_v1_and_v6_fields() {
    let Some(sts) = fixture("camt/camt052.v1.xml", Format::Camt052) else {
        return;
    };
    assert_eq!(sts[0].format, Format::Camt052);
    assert_eq!(sts[0].account, "CH2801234000123456789");
    let Some(sts) = fixture("camt/camt052.v6.xml", Format::Camt052) else {
        return;
    };
    let t = &sts[0].transactions[0];
    assert_eq!(t.booking_date, date("2007-10-18"));
    assert_eq!(t.bank_reference.as_deref(), Some("ACSR160614165200001"));
    assert_eq!(
        t.end_to_end_id.as_deref(),
        Some("UXC06140000015PI00001EE00001")
    );
    assert_eq!(
        t.remittance_info.as_deref(),
        Some("Example Remittance - 6 - V1")
    );
}

#[test]
fn camt053_ultimate_parties() {
    let Some(sts) = fixture("camt/camt053.v2.minimal.ultimate.xml", Format::Camt053) else {
        return;
    };
    let t = &sts[0].transactions[0];
    assert!(
        ex(t, "ultimate_debtor").is_some() || ex(t, "ultimate_creditor").is_some(),
        "{:?}",
        t.extra
    );
}

#[test]
fn mt940_abnamro_fields() {
    let Some(sts) = fixture("mt940/jejik/abnamro.sta", Format::Mt940) else {
        return;
    };
    assert_eq!(sts.len(), 2);
    let s = &sts[0];
    assert_eq!(s.id.as_deref(), Some("ABN AMRO BANK NV"));
    assert_eq!(s.account, "517852257");
    assert_eq!(s.sequence.as_deref(), Some("19321/1"));
    assert_eq!(
        s.opening
            .as_ref()
            .map(|b| (b.kind.as_str(), b.amount.amount())),
        Some(("60F", d("3236.28")))
    );
    assert_eq!(
        s.closing
            .as_ref()
            .map(|b| (b.kind.as_str(), b.amount.amount())),
        Some(("62F", d("876.84")))
    );
    let t = &s.transactions[0];
    assert_eq!(t.amount, d("-9"));
    assert_eq!(t.value_date, Some(date("2011-05-24")));
    assert_eq!(t.booking_date, date("2011-05-24"));
    assert_eq!(ex(t, "mt940_transaction_type"), Some("N192"));
    assert!(
        t.remittance_info
            .as_deref()
            .unwrap_or("")
            .starts_with("GIRO 428428 KPN - DIGITENNE")
    );
    assert_eq!(
        sts[1].opening.as_ref().map(|b| b.kind.as_str()),
        Some("60M")
    );
    assert_eq!(
        sts[1].closing.as_ref().map(|b| b.kind.as_str()),
        Some("62M")
    );
}

#[test]
fn mt940_sepa_snippet_fields() {
    let Some(sts) = fixture("mt940/betterplace/sepa_snippet.sta", Format::Mt940) else {
        return;
    };
    let s = &sts[0];
    assert_eq!(s.account, "50880050/0194787400888");
    assert_eq!(s.sequence.as_deref(), Some("00004/00001"));
    let t = &s.transactions[0];
    assert_eq!(t.amount, d("50990.05"));
    assert_eq!(t.value_date, Some(date("2007-09-07")));
    assert_eq!(t.booking_date, date("2007-09-04"));
    assert_eq!(ex(t, "funds_code"), Some("R"));
    assert_eq!(t.bank_reference.as_deref(), Some("0724710333343453"));
    assert_eq!(ex(t, "gv_code"), Some("166"));
    assert_eq!(ex(t, "posting_text"), Some("GUTSCHRIFT"));
    assert_eq!(ex(t, "prima_nota"), Some("0399"));
    assert_eq!(
        t.end_to_end_id.as_deref(),
        Some("EndToEndId TFNR 22 004 00001")
    );
    assert_eq!(
        t.remittance_info.as_deref(),
        Some("Verw CTSc-01 BC-PPP TFNr 22 004")
    );
    assert_eq!(
        t.counterparty_account.as_deref(),
        Some("DE14508800500194785000")
    );
    assert_eq!(t.counterparty_name.as_deref(), Some("KARL KAUFMANN"));
    assert_eq!(ex(t, "counterparty_bank_code"), Some("DRESDEFF508"));
    let last = &s.transactions[3];
    assert_eq!(last.amount, d("-1500.00"));
    // The :86: KREF+ (SEPA customer reference) replaces the :61: stub "KREF+".
    assert!(
        ex(last, "customer_reference")
            .unwrap_or("")
            .starts_with("TFNr 01022 MSGID")
    );
    // Second statement opens with a debit balance.
    assert_eq!(
        sts[1].opening.as_ref().map(|b| b.amount.amount()),
        Some(d("-1970431.87"))
    );
}

#[test]
fn mt940_mt942_mbank_fields() {
    let Some(sts) = fixture("mt940/mBank/mt942.sta", Format::Mt942) else {
        return;
    };
    let s = &sts[0];
    assert_eq!(s.format, Format::Mt942);
    assert_eq!(s.id.as_deref(), Some("ST170119CYC/0001"));
    assert_eq!(s.account, "PL29114010810000267002001002");
    assert_eq!(s.currency.map(|c| c.to_string()).as_deref(), Some("PLN"));
    assert_eq!(
        s.created_at.map(|c| c.to_string()).as_deref(),
        Some("2017-01-19 18:15:00")
    );
    let t = &s.transactions[0];
    assert_eq!(t.amount, d("0.01"));
    assert_eq!(t.bank_reference.as_deref(), Some("MB170119012058"));
    assert_eq!(ex(t, "supplementary_details"), Some("911-TRANSAKCJA IPH"));
    assert_eq!(ex(t, "mt940_transaction_type"), Some("NTRF"));
    assert!(
        ex(t, "information")
            .unwrap_or("")
            .contains("XX000000000001")
    );
}

#[test]
fn mt940_sberbank_fields() {
    let Some(sts) = fixture("mt940/sberbank/171011_01234945.sta", Format::Mt940) else {
        return;
    };
    let s = &sts[0];
    assert_eq!(s.id.as_deref(), Some("STARTUMS"));
    assert_eq!(s.account, "1966315302010001");
    assert_eq!(s.currency.map(|c| c.to_string()).as_deref(), Some("HUF"));
    let t = &s.transactions[0];
    assert!(t.amount.is_sign_negative(), "status D");
    assert_eq!(ex(t, "customer_reference"), Some("X"));
}

#[test]
fn mt940_rabobank_multiple_86_and_dutch_tags() {
    let Some(sts) = fixture("mt940/jejik/rabobank.sta", Format::Mt940) else {
        return;
    };
    assert_eq!(sts.len(), 4);
    let t = &sts[0].transactions[0];
    assert_eq!(t.amount, d("-1213.28"));
    let info = ex(t, "information").unwrap_or("");
    assert!(
        info.contains("Terugboeking") && info.contains("20095731"),
        "all :86: kept: {info}"
    );
    let Some(sts) = fixture("mt940/jejik/rabobank-iban.sta", Format::Mt940) else {
        return;
    };
    let t = &sts[0].transactions[1];
    assert_eq!(t.counterparty_name.as_deref(), Some("JOHN DOE"));
    assert_eq!(t.remittance_info.as_deref(), Some("Reference 201301234"));
    let t = &sts[0].transactions[0];
    assert_eq!(
        t.end_to_end_id.as_deref(),
        Some("01-01-2013 12:00 0030000987654321")
    );
    assert_eq!(
        t.counterparty_name.as_deref(),
        Some("CONTRA ACCOUNT HOLDER")
    );
}

#[test]
fn mt940_asnb_swift_blocks_and_blank_entry_date() {
    let Some(sts) = fixture(
        "mt940/ASNB/mt940_with_spaces_for_entry_date.txt",
        Format::Mt940,
    ) else {
        return;
    };
    assert_eq!(sts.len(), 31);
    let s = &sts[0];
    assert_eq!(s.account, "NL81ASNB9999999999");
    let t = &s.transactions[0];
    assert_eq!(t.amount, d("-65.00"));
    assert_eq!(t.booking_date, date("2020-01-01"));
    assert_eq!(ex(t, "mt940_transaction_type"), Some("NOVB"));
}

#[test]
fn mt940_malformed_details_german_subfields() {
    let Some(sts) = fixture("mt940/self-provided/malformed_details.sta", Format::Mt940) else {
        return;
    };
    let t = &sts[0].transactions[0];
    assert_eq!(t.amount, d("-233.15"));
    assert_eq!(ex(t, "posting_text"), Some("Basislastschrift"));
    assert_eq!(ex(t, "prima_nota"), Some("931"));
    assert_eq!(
        t.counterparty_name.as_deref(),
        Some("Finanzamt Muenchen Abteilung Erhebung")
    );
    assert_eq!(
        t.counterparty_account.as_deref(),
        Some("DE99700500000000012345")
    );
    assert_eq!(ex(t, "text_key_extension"), Some("992"));
    assert_eq!(ex(t, "mandate_id"), Some("BYA12345678901"));
    assert_eq!(ex(t, "creditor_id"), Some("DE99ZZZ00000012345"));
    assert_eq!(
        t.end_to_end_id.as_deref(),
        Some("123/123/12345-----L1101234567890123")
    );
    let rem = t.remittance_info.as_deref().unwrap_or("");
    assert!(rem.starts_with("STEUERNR 123/123/12345"), "{rem}");
}

#[test]
fn bai2_sample2_fields() {
    let Some(sts) = fixture("bai2/sample2.txt", Format::Bai2) else {
        return;
    };
    assert_eq!(sts.len(), 5);
    let s = &sts[0];
    assert_eq!(s.account, "0123456789");
    assert_eq!(s.balances[0].kind, "010");
    assert_eq!(s.balances[0].amount.amount(), d("43500.00"));
    let t = &s.transactions[0];
    assert_eq!(t.amount, d("4500.00"));
    assert_eq!(ex(t, "bai_type_code"), Some("115"));
    assert_eq!(ex(t, "funds_type"), Some("S"));
    assert!(
        s.warnings.is_empty(),
        "control totals agree: {:?}",
        s.warnings
    );
    let t = &sts[1].transactions[0];
    assert_eq!(t.remittance_info.as_deref(), Some("LOCK BOX NO.68751"));
}

#[test]
fn ofx_bank_medium_fields() {
    let Some(sts) = fixture("ofx/bank_medium.ofx", Format::Ofx) else {
        return;
    };
    let s = &sts[0];
    assert_eq!(s.account, "12300 000012345678");
    assert_eq!(s.servicer.as_deref(), Some("160000100"));
    assert_eq!(
        s.closing.as_ref().map(|b| b.amount.amount()),
        Some(d("382.34"))
    );
    let t = &s.transactions[1];
    assert_eq!(t.amount, d("-316.67"));
    assert_eq!(t.booking_date, date("2009-04-02"));
    assert_eq!(ex(t, "fitid"), Some("0000123456782009040200004"));
    assert_eq!(ex(t, "cheque_number"), Some("0"));
    assert_eq!(
        t.counterparty_name.as_deref(),
        Some("Joe's Bald Hairstyles")
    );
}

// ---------------------------------------------------------------------------
// 3. Tricky cases

fn mt(text: &str) -> Result<Vec<Statement>, BankError> {
    parse(text.as_bytes(), Format::Mt940)
}

const MT_HEAD: &str =
    ":20:REF1\r\n:25:DE89370400440532013000\r\n:28C:00012/001\r\n:60F:C251230EUR1000,00\r\n";

#[test]
fn mt940_reversals_flip_the_sign() {
    let text = format!(
        "{MT_HEAD}:61:2512301230RC100,00NTRFNONREF\r\n:61:2512301230RD40,50NTRFNONREF\r\n:62F:C251230EUR940,50\r\n-"
    );
    let sts = mt(&text).expect("parses");
    let txs = &sts[0].transactions;
    assert_eq!(
        txs[0].amount,
        d("-100.00"),
        "RC (reversal of credit) is a debit"
    );
    assert_eq!(
        txs[1].amount,
        d("40.50"),
        "RD (reversal of debit) is a credit"
    );
    assert_eq!(txs[0].extra.get("reversal"), Some(&Value::Bool(true)));
    assert!(balance_check(&sts[0]).is_some_and(|c| c.is_ok()));
}

#[test]
fn mt940_entry_date_rolls_over_the_year() {
    let text = format!(
        "{MT_HEAD}:61:2512310102C5,00NTRFNONREF\r\n:61:2601021231D5,00NTRFNONREF\r\n:62F:C260102EUR1000,00\r\n"
    );
    let sts = mt(&text).expect("parses");
    let t = &sts[0].transactions;
    assert_eq!(t[0].value_date, Some(date("2025-12-31")));
    assert_eq!(t[0].booking_date, date("2026-01-02"));
    assert_eq!(t[1].value_date, Some(date("2026-01-02")));
    assert_eq!(t[1].booking_date, date("2025-12-31"));
}

#[test]
fn mt940_comma_decimals() {
    for (raw, want) in [
        ("1234,56", "1234.56"),
        ("1234,", "1234"),
        ("0,5", "0.5"),
        ("00012,30", "12.30"),
        ("7", "7"),
    ] {
        let text = format!("{MT_HEAD}:61:251230C{raw}NTRFNONREF\r\n:62F:C251230EUR0,\r\n");
        let sts = mt(&text).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(sts[0].transactions[0].amount, d(want), "{raw}");
    }
    let text = format!("{MT_HEAD}:61:251230C12,3,4NTRFNONREF\r\n");
    let e = mt(&text).expect_err("two commas");
    assert_eq!(*e.location(), Location::Line(5));
}

#[test]
fn mt940_86_german_subfields_with_sepa_keywords() {
    let text = format!(
        "{MT_HEAD}:61:251230C100,00N166NONREF//BANKREF1\r\n:86:166?00SEPA-GUTSCHRIFT?109310?20EREF+INV-2025-77?21KREF+K1 MREF+M-9?22CRED+DE98ZZZ09999999999?23SVWZ+Rechnung 2025-77 Dan?24ke?30COBADEFFXXX?31DE02120300000000202051?32Muster?33 GmbH?34000?60Zusatz\r\n:62F:C251230EUR1100,00\r\n"
    );
    let sts = mt(&text).expect("parses");
    let t = &sts[0].transactions[0];
    assert_eq!(t.end_to_end_id.as_deref(), Some("INV-2025-77"));
    assert_eq!(ex(t, "customer_reference"), Some("K1"));
    assert_eq!(ex(t, "mandate_id"), Some("M-9"));
    assert_eq!(ex(t, "creditor_id"), Some("DE98ZZZ09999999999"));
    assert_eq!(
        t.remittance_info.as_deref(),
        Some("Rechnung 2025-77 DankeZusatz")
    );
    assert_eq!(t.counterparty_name.as_deref(), Some("Muster GmbH"));
    assert_eq!(
        t.counterparty_account.as_deref(),
        Some("DE02120300000000202051")
    );
    assert_eq!(ex(t, "counterparty_bank_code"), Some("COBADEFFXXX"));
    assert_eq!(ex(t, "posting_text"), Some("SEPA-GUTSCHRIFT"));
    assert_eq!(t.bank_reference.as_deref(), Some("BANKREF1"));
}

#[test]
fn mt940_86_dutch_slash_tags() {
    let text = format!(
        "{MT_HEAD}:61:251230D25,00N102EREF//X1\r\n:86:/TRTP/SEPA INCASSO/CSID/NL98ZZZ999999990000/NAME/Energie BV/MARF/MND-1/REMI/USTD//Factuur 12\r\n34/IBAN/NL91ABNA0417164300/BIC/ABNANL2A/EREF/E2E-9\r\n:61:251230C10,00N100NONREF\r\n:86:/ORDP//NAME/Jan Jansen/ID/9/REMI/STRD/CUR/RF18539007547034/\r\n:62F:C251230EUR985,00\r\n"
    );
    let sts = mt(&text).expect("parses");
    let t = &sts[0].transactions[0];
    assert_eq!(t.counterparty_name.as_deref(), Some("Energie BV"));
    assert_eq!(
        t.counterparty_account.as_deref(),
        Some("NL91ABNA0417164300")
    );
    assert_eq!(ex(t, "counterparty_bic"), Some("ABNANL2A"));
    assert_eq!(ex(t, "creditor_id"), Some("NL98ZZZ999999990000"));
    assert_eq!(ex(t, "mandate_id"), Some("MND-1"));
    assert_eq!(t.end_to_end_id.as_deref(), Some("E2E-9"));
    assert_eq!(t.remittance_info.as_deref(), Some("Factuur 1234"));
    let t = &sts[0].transactions[1];
    assert_eq!(
        t.counterparty_name.as_deref(),
        Some("Jan Jansen"),
        "ORDP//NAME for a credit"
    );
    assert_eq!(ex(t, "creditor_reference"), Some("RF18539007547034"));
}

#[test]
fn mt940_missing_final_newline_lf_and_stray_spaces() {
    let text = ":20:REF1  \n:25:ACC1 \n:28C:1/1\n :60F:C251230EUR0,00  \n:61:251230C1,00NTRFNONREF\n:62F:C251230EUR1,00";
    let sts = mt(text).expect("parses");
    assert_eq!(sts[0].account, "ACC1");
    assert_eq!(sts[0].transactions.len(), 1);
    assert_eq!(
        sts[0].transactions[0].remittance_info, None,
        ":61: without :86:"
    );
    assert!(balance_check(&sts[0]).is_some_and(|c| c.is_ok()));
}

#[test]
fn mt940_swift_envelope_and_multi_statement() {
    let one = "{1:F01BANKDEFFXXXX0000000000}{2:O940BANKDEFFXXXXN}{4:\r\n:20:A\r\n:25:ACC\r\n:28C:1/1\r\n:60F:C251230EUR0,\r\n:62F:C251230EUR0,\r\n-}";
    let text = format!(
        "{one}\r\n{}",
        one.replace(":20:A", ":20:B").replace("1/1", "2/1")
    );
    let sts = mt(&text).expect("parses");
    assert_eq!(sts.len(), 2);
    assert_eq!(sts[1].id.as_deref(), Some("B"));
    assert_eq!(statement_fingerprint(&sts[1]), "ACC:B:2/1");
}

#[test]
fn mt940_invalid_date_is_located() {
    let text = format!("{MT_HEAD}:61:2602300230C1,00NTRFNONREF\r\n");
    let e = mt(&text).expect_err("30 Feb");
    assert_eq!(*e.location(), Location::Line(5));
    assert!(e.to_string().contains("260230"), "{e}");
}

fn camt(xml: &str) -> Result<Vec<Statement>, BankError> {
    parse(xml.as_bytes(), Format::Camt053)
}

fn camt_doc(ns_version: &str, entries: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.{ns_version}"><BkToCstmrStmt>
<GrpHdr><MsgId>M1</MsgId><CreDtTm>2026-01-28T10:00:00+01:00</CreDtTm></GrpHdr>
<Stmt><Id>S1</Id><ElctrncSeqNb>7</ElctrncSeqNb><Acct><Id><IBAN>DE89370400440532013000</IBAN></Id><Ccy>EUR</Ccy></Acct>
<Bal><Tp><CdOrPrtry><Cd>PRCD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">100.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-01-27</Dt></Dt></Bal>
{entries}
</Stmt></BkToCstmrStmt></Document>"#
    )
}

fn ntry(amt: &str, cdi: &str, book: &str, details: &str) -> String {
    format!(
        r#"<Ntry><Amt Ccy="EUR">{amt}</Amt><CdtDbtInd>{cdi}</CdtDbtInd><Sts>BOOK</Sts><BookgDt><Dt>{book}</Dt></BookgDt><ValDt><Dt>{book}</Dt></ValDt><AcctSvcrRef>R-{amt}</AcctSvcrRef><BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd><NtryDtls>{details}</NtryDtls></Ntry>"#
    )
}

#[test]
fn camt_batched_entry_splits_per_txdtls() {
    let details = r#"<Btch><NbOfTxs>2</NbOfTxs></Btch>
<TxDtls><Refs><EndToEndId>E1</EndToEndId><MndtId>MD1</MndtId></Refs><Amt Ccy="EUR">30.00</Amt><RltdPties><Dbtr><Nm>Alice</Nm></Dbtr><DbtrAcct><Id><IBAN>DE02120300000000202051</IBAN></Id></DbtrAcct></RltdPties><RmtInf><Ustrd>INV-1</Ustrd><Ustrd>part two</Ustrd></RmtInf></TxDtls>
<TxDtls><Refs><EndToEndId>NOTPROVIDED</EndToEndId></Refs><AmtDtls><TxAmt><Amt Ccy="EUR">20.00</Amt></TxAmt></AmtDtls><RltdPties><Dbtr><Nm>Bob</Nm></Dbtr></RltdPties><RmtInf><Strd><CdtrRefInf><Tp><CdOrPrtry><Cd>SCOR</Cd></CdOrPrtry></Tp><Ref>RF18539007547034</Ref></CdtrRefInf></Strd></RmtInf></TxDtls>"#;
    let xml = camt_doc("02", &ntry("50.00", "CRDT", "2026-01-28", details));
    let sts = camt(&xml).expect("parses");
    let s = &sts[0];
    assert_eq!(s.opening.as_ref().map(|b| b.kind.as_str()), Some("PRCD"));
    let t = &s.transactions;
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].amount, d("30.00"));
    assert_eq!(t[0].counterparty_name.as_deref(), Some("Alice"));
    assert_eq!(
        t[0].counterparty_account.as_deref(),
        Some("DE02120300000000202051")
    );
    assert_eq!(t[0].remittance_info.as_deref(), Some("INV-1 part two"));
    assert_eq!(t[0].end_to_end_id.as_deref(), Some("E1"));
    assert_eq!(ex(&t[0], "mandate_id"), Some("MD1"));
    assert_eq!(
        t[0].bank_transaction_code.as_deref(),
        Some("PMNT-RCDT-ESCT")
    );
    assert_eq!(t[1].amount, d("20.00"));
    assert_eq!(t[1].end_to_end_id, None, "NOTPROVIDED is dropped");
    assert_eq!(ex(&t[1], "creditor_reference"), Some("RF18539007547034"));
    assert_eq!(t[1].extra.get("batch_index"), Some(&Value::from(2)));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn camt_cdtdbtind_sign_and_counterparty_side() {
    let details = r#"<TxDtls><RltdPties><Dbtr><Nm>Us</Nm></Dbtr><Cdtr><Nm>Supplier</Nm></Cdtr><CdtrAcct><Id><Othr><Id>12345</Id></Othr></Id></CdtrAcct></RltdPties><RltdAgts><CdtrAgt><FinInstnId><BICFI>COBADEFFXXX</BICFI></FinInstnId></CdtrAgt></RltdAgts></TxDtls>"#;
    let xml = camt_doc("02", &ntry("12.34", "DBIT", "2026-01-28", details));
    let t = &camt(&xml).expect("parses")[0].transactions[0];
    assert_eq!(t.amount, d("-12.34"));
    assert_eq!(t.counterparty_name.as_deref(), Some("Supplier"));
    assert_eq!(t.counterparty_account.as_deref(), Some("12345"));
    assert_eq!(ex(t, "counterparty_bic"), Some("COBADEFFXXX"));
}

#[test]
fn camt_v08_pty_nesting() {
    let details = r#"<TxDtls><RltdPties><Dbtr><Pty><Nm>Nested Debtor</Nm></Pty></Dbtr><UltmtDbtr><Pty><Nm>Ultimate</Nm></Pty></UltmtDbtr></RltdPties></TxDtls>"#;
    let xml = camt_doc("08", &ntry("1.00", "CRDT", "2026-01-28", details));
    let t = &camt(&xml).expect("parses")[0].transactions[0];
    assert_eq!(t.counterparty_name.as_deref(), Some("Nested Debtor"));
    assert_eq!(ex(t, "ultimate_debtor"), Some("Ultimate"));
}

#[test]
fn camt_doctype_is_rejected_at_once() {
    let xml = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Document><BkToCstmrStmt><Stmt><Id>&lol2;</Id></Stmt></BkToCstmrStmt></Document>"#;
    let e = camt(xml).expect_err("DOCTYPE");
    assert_eq!(*e.kind(), ErrorKind::Doctype);
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><Document>&x;</Document>"#;
    assert_eq!(*camt(xxe).expect_err("XXE").kind(), ErrorKind::Doctype);
    // An undefined entity without a DTD is an error, not an expansion.
    let undefined = camt_doc("02", "").replace("<Id>S1</Id>", "<Id>&x;</Id>");
    assert!(matches!(
        camt(&undefined).expect_err("entity").kind(),
        ErrorKind::Syntax(_)
    ));
}

#[test]
fn camt_unknown_version_warns() {
    let xml = camt_doc("13", &ntry("1.00", "CRDT", "2026-01-28", ""));
    let sts = camt(&xml).expect("parses");
    let w = &sts[0].warnings;
    assert!(w.iter().any(|w| w.message.contains("camt.053.001.13") && w.message.contains("camt.053.001.08")), "{w:?}");
    let known = camt(&camt_doc("04", "")).expect("parses");
    assert!(known[0].warnings.is_empty());
}

#[test]
fn camt_five_decimals_and_negative_zero() {
    let xml = camt_doc(
        "02",
        &format!(
            "{}{}",
            ntry("1.23456", "CRDT", "2026-01-28", ""),
            ntry("0.00", "DBIT", "2026-01-28", "")
        ),
    );
    let sts = camt(&xml).expect("parses");
    let t = &sts[0].transactions;
    assert_eq!(t[0].amount, d("1.23456"));
    assert_eq!(t[0].amount.scale(), 5);
    assert!(t[1].amount.is_zero());
    assert!(
        !t[1].amount.is_sign_negative(),
        "DBIT 0.00 is not negative zero"
    );
    assert_eq!(
        serde_json::to_value(&t[1]).expect("json")["amount"],
        Value::String("0.00".into())
    );
    let neg = camt_doc("02", &ntry("-0", "DBIT", "2026-01-28", ""));
    assert!(
        !camt(&neg).expect("-0 accepted")[0].transactions[0]
            .amount
            .is_sign_negative()
    );
    let bad = camt_doc("02", &ntry("-5.00", "DBIT", "2026-01-28", ""));
    assert!(camt(&bad).is_err(), "signed camt amount rejected");
    let too_precise = camt_doc("02", &ntry("1.12345678901", "DBIT", "2026-01-28", ""));
    assert!(camt(&too_precise).is_err(), "more than MAX_SCALE decimals");
}

#[test]
fn camt_impossible_date_is_located() {
    let xml = camt_doc(
        "02",
        &format!(
            "{}{}",
            ntry("1.00", "CRDT", "2026-01-28", ""),
            ntry("2.00", "CRDT", "2026-02-30", "")
        ),
    );
    let e = camt(&xml).expect_err("30 Feb");
    match e.location() {
        Location::Xml { path, .. } => {
            assert_eq!(path, "Document/BkToCstmrStmt/Stmt[1]/Ntry[2]/BookgDt/Dt")
        }
        other => panic!("expected an XML path, got {other:?}"),
    }
    assert!(e.to_string().contains("2026-02-30"), "{e}");
}

#[test]
fn camt_limits() {
    let deep = format!(
        "<Document>{}{}</Document>",
        "<a>".repeat(100),
        "</a>".repeat(100)
    );
    assert!(matches!(
        camt(&deep).expect_err("deep").kind(),
        ErrorKind::Limit(_)
    ));
    let big = camt_doc("02", "").replace(
        "<Id>S1</Id>",
        &format!("<Id>{}</Id>", "x".repeat(camt::MAX_TEXT + 1)),
    );
    assert!(matches!(
        camt(&big).expect_err("big text").kind(),
        ErrorKind::Limit(_)
    ));
    assert!(camt("<Document><BkToCstmrStmt><Stmt>").is_err());
    assert!(camt("").is_err());
}

#[test]
fn camt_namespace_prefixes_are_ignored() {
    let xml = camt_doc("02", &ntry("3.00", "CRDT", "2026-01-28", ""))
        .replace("<Document xmlns=", "<c:Document xmlns:c=")
        .replace("</Document>", "</c:Document>")
        .replace("<BkToCstmrStmt>", "<c:BkToCstmrStmt>")
        .replace("</BkToCstmrStmt>", "</c:BkToCstmrStmt>");
    let sts = camt(&xml).expect("parses");
    assert_eq!(sts[0].transactions[0].amount, d("3.00"));
}

fn bai(text: &str) -> Result<Vec<Statement>, BankError> {
    parse(text.as_bytes(), Format::Bai2)
}

#[test]
fn bai2_continuations_and_control_totals() {
    let good = "01,SENDER,RECV,260128,0800,F1,,,2/\n02,RECV,BANKID,1,260127,,USD,2/\n03,ACC1,USD,010,100000,,,015,90000,,/\n16,195,2500,0,REF1,CUST1,WIRE FROM/ACME INC\n88,INVOICE 42\n16,475,12500,V,260127,,REF2,,CHECK 1001/\n49,205000,5/\n98,205000,1,7/\n99,205000,1,9/\n";
    let sts = bai(good).expect("parses");
    let s = &sts[0];
    assert_eq!(
        s.opening.as_ref().map(|b| b.amount.amount()),
        Some(d("1000.00"))
    );
    assert_eq!(
        s.closing.as_ref().map(|b| b.amount.amount()),
        Some(d("900.00"))
    );
    let t = &s.transactions;
    assert_eq!(t[0].amount, d("25.00"));
    assert_eq!(
        t[0].remittance_info.as_deref(),
        Some("WIRE FROM/ACME INC INVOICE 42")
    );
    assert_eq!(t[0].bank_reference.as_deref(), Some("REF1"));
    assert_eq!(t[1].amount, d("-125.00"));
    assert_eq!(t[1].value_date, Some(date("2026-01-27")));
    assert!(balance_check(s).is_some_and(|c| c.is_ok()));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let bad_total = good.replace("49,205000,5/", "49,205001,5/");
    let sts = bai(&bad_total).expect("parses");
    assert!(
        sts[0]
            .warnings
            .iter()
            .any(|w| w.message.contains("control total")),
        "{:?}",
        sts[0].warnings
    );
    // Slash-terminated records on one line.
    let one_line = good
        .replace("/\n", "/ ")
        .replace("ACME INC\n88", "ACME INC/\n88")
        .replace("INVOICE 42\n", "INVOICE 42/ ");
    let sts = bai(&one_line).unwrap_or_else(|e| panic!("{e}\n{one_line}"));
    assert_eq!(sts[0].transactions.len(), 2);
    // JPY has no minor unit.
    let jpy = good.replace("USD", "JPY");
    assert_eq!(
        bai(&jpy).expect("parses")[0].transactions[0].amount,
        d("2500")
    );
}

#[test]
fn bai2_errors_are_located() {
    let e =
        bai("01,A,B,260128,0800,1,,,2/\n02,B,C,1,260127,,USD,2/\n03,ACC,USD/\n16,999,1,0,,,X/\n")
            .expect_err("code 999");
    assert_eq!(*e.location(), Location::Line(4));
    let e = bai("01,A,B,260128,0800,1,,,2/\n02,B,C,1,260127,,USD,2/\n").expect_err("no trailer");
    assert!(e.to_string().contains("99"), "{e}");
}

#[test]
fn ofx_sgml_and_xml() {
    let sgml = "OFXHEADER:100\r\nDATA:OFXSGML\r\nVERSION:102\r\n\r\n<OFX><BANKMSGSRSV1><STMTTRNRS><STMTRS><CURDEF>USD<BANKACCTFROM><BANKID>121000248<ACCTID>000123<ACCTTYPE>CHECKING</BANKACCTFROM><BANKTRANLIST><STMTTRN><TRNTYPE>CREDIT<DTPOSTED>20260128120000.000[-5:EST]<DTUSER>20260127<TRNAMT>1,250.00<FITID>F1<NAME>ACME &amp; SONS<MEMO>INV 42</STMTTRN></BANKTRANLIST><LEDGERBAL><BALAMT>5000.00<DTASOF>20260128</LEDGERBAL></STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>";
    let e = parse(sgml.as_bytes(), Format::Ofx).expect_err("grouped amount is not OFX");
    assert!(e.to_string().contains("TRNAMT"), "{e}");
    let sgml = sgml.replace("1,250.00", "1250.00");
    let sts = parse(sgml.as_bytes(), Format::Ofx).expect("parses");
    let t = &sts[0].transactions[0];
    assert_eq!(t.amount, d("1250.00"));
    assert_eq!(t.booking_date, date("2026-01-28"));
    assert_eq!(ex(t, "user_date"), Some("2026-01-27"));
    assert_eq!(t.counterparty_name.as_deref(), Some("ACME & SONS"));
    assert_eq!(t.remittance_info.as_deref(), Some("INV 42"));
    assert_eq!(
        sts[0].closing.as_ref().map(|b| b.kind.as_str()),
        Some("LEDGERBAL")
    );
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?><?OFX OFXHEADER="200" VERSION="220"?><OFX><CREDITCARDMSGSRSV1><CCSTMTTRNRS><CCSTMTRS><CURDEF>EUR</CURDEF><CCACCTFROM><ACCTID>4111</ACCTID></CCACCTFROM><BANKTRANLIST><STMTTRN><TRNTYPE>DEBIT</TRNTYPE><DTPOSTED>20260105</DTPOSTED><TRNAMT>-9.99</TRNAMT><FITID>X</FITID><PAYEE><NAME>Shop</NAME></PAYEE></STMTTRN></BANKTRANLIST></CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>"#;
    let sts = parse(xml.as_bytes(), Format::Ofx).expect("parses");
    assert_eq!(sts[0].account, "4111");
    assert_eq!(sts[0].transactions[0].amount, d("-9.99"));
    assert_eq!(
        sts[0].transactions[0].counterparty_name.as_deref(),
        Some("Shop")
    );
    let brokerage = "<OFX><INVSTMTMSGSRSV1></INVSTMTMSGSRSV1></OFX>";
    assert!(
        parse(brokerage.as_bytes(), Format::Ofx)
            .expect("parses")
            .is_empty()
    );
}

fn profile(name: &str) -> CsvProfile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/bank-profiles")
        .join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).expect("profile file");
    toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn sample(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/bank-profiles")
        .join(format!("{name}.sample.csv"));
    std::fs::read(path).expect("sample file")
}

#[test]
fn csv_sparkasse_profile_sample() {
    let p = profile("sparkasse-csv-camt");
    let bytes = sample("sparkasse-csv-camt");
    assert_eq!(
        csv::detect_profile(&bytes, std::slice::from_ref(&p)).map(|p| p.name.as_str()),
        Some("sparkasse-csv-camt")
    );
    let sts = csv::parse_csv(&bytes, &p).expect("parses");
    assert_eq!(sts.len(), 1);
    let s = &sts[0];
    assert_eq!(s.account, "DE89370400440532013000");
    let t = &s.transactions;
    assert_eq!(t.len(), 4);
    assert_eq!(t[0].amount, d("1190.00"));
    assert_eq!(t[0].booking_date, date("2026-01-27"));
    assert_eq!(
        t[0].counterparty_name.as_deref(),
        Some("Müller & Söhne GmbH"),
        "Windows-1252 decoded"
    );
    assert_eq!(t[0].end_to_end_id.as_deref(), Some("E2E-2026-0041"));
    assert_eq!(t[1].amount, d("-89.50"));
    assert_eq!(t[1].end_to_end_id, None);
    assert_eq!(ex(&t[1], "mandate_id"), Some("MANDAT-4711"));
    assert_eq!(ex(&t[1], "creditor_id"), Some("DE98ZZZ09999999999"));
    assert_eq!(t[2].amount, d("-2345.67"));
    assert_eq!(ex(&t[3], "entry_status"), Some("PDNG"));
    assert_eq!(
        t[0].bank_transaction_code.as_deref(),
        Some("GUTSCHR. UEBERWEISUNG")
    );
}

#[test]
fn csv_icbc_profile_sample() {
    let p = profile("icbc-debit-detail");
    let bytes = sample("icbc-debit-detail");
    let both = [profile("sparkasse-csv-camt"), p.clone()];
    assert_eq!(
        csv::detect_profile(&bytes, &both).map(|p| p.name.as_str()),
        Some("icbc-debit-detail")
    );
    let sts = csv::parse_csv(&bytes, &p).expect("parses");
    let s = &sts[0];
    let t = &s.transactions;
    assert_eq!(t.len(), 3, "totals footer dropped");
    // Newest-first file comes out oldest first.
    assert_eq!(t[0].booking_date, date("2026-01-15"));
    assert_eq!(t[0].amount, d("12000.00"));
    assert_eq!(t[0].currency.as_str(), "CNY");
    assert_eq!(t[0].counterparty_name.as_deref(), Some("ABC公司"));
    assert_eq!(t[2].amount, d("-1234.56"));
    assert_eq!(t[2].remittance_info.as_deref(), Some("跨行汇款 手机银行"));
    assert_eq!(
        s.opening.as_ref().map(|b| b.amount.amount()),
        Some(d("24.00"))
    );
    assert_eq!(
        s.closing.as_ref().map(|b| b.amount.amount()),
        Some(d("10765.44"))
    );
    assert!(
        balance_check(s).is_some_and(|c| c.is_ok()),
        "{:?}",
        balance_check(s)
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn csv_decimal_styles_encodings_and_errors() {
    use super::csv::DecimalStyle::*;
    for (s, style, want) in [
        ("1,234.56", DotDecimal, "1234.56"),
        ("1.234,56", CommaDecimal, "1234.56"),
        ("1 234,56", SpaceComma, "1234.56"),
        ("1\u{a0}234,56", SpaceComma, "1234.56"),
        ("1'234.56", ApostropheDot, "1234.56"),
        ("-12,50", CommaDecimal, "-12.50"),
        ("12,50-", CommaDecimal, "-12.50"),
        ("(7.00)", DotDecimal, "-7.00"),
    ] {
        assert_eq!(
            csv::parse_amount(s, style).map_err(|e| format!("{s}: {e}")),
            Ok(d(want)),
            "{s}"
        );
    }
    assert!(
        csv::parse_amount("1,23.4", DotDecimal).is_err(),
        "bad grouping"
    );
    assert!(csv::parse_amount("12.3.4", DotDecimal).is_err());
    let mut p = profile("sparkasse-csv-camt");
    p.encoding = "utf-16le".into();
    p.delimiter = ',';
    p.columns = csv::CsvColumns {
        booking_date: Some(csv::Column::Index(0)),
        amount: Some(csv::Column::Name("Betrag".into())),
        ..Default::default()
    };
    p.currency = Some("EUR".into());
    p.account = Some("ACC".into());
    p.pending_values.clear();
    let text = "Datum,Betrag\r\n01.02.26,\"1.000,00\"\r\n30.02.26,1\r\n";
    let mut bytes = vec![0xFF, 0xFE];
    for u in text.encode_utf16() {
        bytes.extend_from_slice(&u.to_le_bytes());
    }
    let e = csv::parse_csv(&bytes, &p).expect_err("30.02.");
    assert_eq!(*e.location(), Location::Row(3));
    let ok = text.replace("30.02.26", "28.02.26");
    let mut bytes = vec![0xFE, 0xFF];
    for u in ok.encode_utf16() {
        bytes.extend_from_slice(&u.to_be_bytes());
    }
    let sts = csv::parse_csv(&bytes, &p).expect("UTF-16BE with BOM");
    assert_eq!(sts[0].transactions[0].amount, d("1000.00"));
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend_from_slice(ok.as_bytes());
    assert_eq!(
        csv::parse_csv(&with_bom, &p).expect("UTF-8 BOM")[0]
            .transactions
            .len(),
        2
    );
    assert!(matches!(
        parse(b"a,b", Format::Csv("x".into()))
            .expect_err("needs profile")
            .kind(),
        ErrorKind::Unsupported(_)
    ));
}

#[test]
fn fingerprint_falls_back_to_content_hash() {
    let text = ":20:STARTUMSE\n:25:ACC\n:28C:00000/001\n:60F:C251230EUR0,\n:61:251230C1,NTRFNONREF\n:62F:C251230EUR1,\n";
    let a = mt(text).expect("parses");
    let b = mt(&text.replace("C1,NTRF", "C2,NTRF").replace("EUR1,", "EUR2,")).expect("parses");
    let fa = statement_fingerprint(&a[0]);
    assert!(fa.starts_with("ACC:sha256:"), "{fa}");
    assert_eq!(fa, statement_fingerprint(&mt(text).expect("parses")[0]));
    assert_ne!(fa, statement_fingerprint(&b[0]));
}

// ---------------------------------------------------------------------------
// 4. No panics on arbitrary or mutated input

mod fuzz {
    use proptest::prelude::*;

    use super::super::*;

    const CAMT: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt><GrpHdr><MsgId>M</MsgId><CreDtTm>2026-01-28T10:00:00</CreDtTm></GrpHdr><Stmt><Id>S</Id><Acct><Id><IBAN>DE89370400440532013000</IBAN></Id><Ccy>EUR</Ccy></Acct><Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">1.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-01-27</Dt></Dt></Bal><Ntry><Amt Ccy="EUR">5.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts><BookgDt><Dt>2026-01-28</Dt></BookgDt><NtryDtls><TxDtls><Refs><EndToEndId>E</EndToEndId></Refs><Amt Ccy="EUR">2.00</Amt><RltdPties><Cdtr><Pty><Nm>A &amp; B</Nm></Pty></Cdtr></RltdPties><RmtInf><Ustrd>X</Ustrd></RmtInf></TxDtls><TxDtls><Amt Ccy="EUR">3.00</Amt></TxDtls></NtryDtls></Ntry></Stmt></BkToCstmrStmt></Document>"#;
    const MT940: &str = "{1:F01X}{4:\r\n:20:R\r\n:25:DE89370400440532013000\r\n:28C:1/1\r\n:60F:C260127EUR1,00\r\n:61:2601270128RD5,00NTRFNONREF//B\r\nSUPP\r\n:86:166?00GUT?20EREF+E?21SVWZ+T?32N\r\n:61:260128C1,NMSC\r\n:86:/NAME/X/REMI/Y/\r\n:62F:C260128EUR7,00\r\n-}";
    const BAI2: &str = "01,S,R,260128,0800,1,,,2/\n02,R,B,1,260127,,USD,2/\n03,A,USD,010,100,,,015,90,,/\n16,195,25,S,1,2,3,R,C,T/X\n88,MORE\n16,475,35,V,260127,,R2,,T2/\n49,250,5/\n98,250,1,7/\n99,250,1,9/\n";
    const OFX: &str = "OFXHEADER:100\n\n<OFX><BANKMSGSRSV1><STMTTRNRS><STMTRS><CURDEF>USD<BANKACCTFROM><ACCTID>1</BANKACCTFROM><BANKTRANLIST><STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20260128<TRNAMT>-1.00<FITID>F<NAME>N</STMTTRN></BANKTRANLIST><LEDGERBAL><BALAMT>1<DTASOF>20260128</LEDGERBAL></STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>";

    fn all_formats(bytes: &[u8]) {
        for f in [Format::Camt053, Format::Mt940, Format::Bai2, Format::Ofx] {
            let _ = parse(bytes, f);
        }
        let _ = detect(bytes);
        let p = csv_profile();
        let _ = csv::parse_csv(bytes, &p);
    }

    fn csv_profile() -> CsvProfile {
        CsvProfile {
            name: "fuzz".into(),
            description: None,
            encoding: "gbk".into(),
            delimiter: ';',
            skip_rows: 1,
            has_header: true,
            footer_rows: 1,
            decimal_style: csv::DecimalStyle::CommaDecimal,
            date_formats: vec!["%d.%m.%Y".into()],
            account: Some("A".into()),
            currency: Some("EUR".into()),
            currency_aliases: Default::default(),
            empty_values: vec!["-".into()],
            debit_markers: vec!["S".into()],
            pending_values: vec![],
            row_order: csv::RowOrder::NewestFirst,
            columns: csv::CsvColumns {
                booking_date: Some(csv::Column::Index(0)),
                amount: Some(csv::Column::Index(1)),
                direction: Some(csv::Column::Index(2)),
                balance: Some(csv::Column::Index(3)),
                remittance: vec![csv::Column::Index(4), csv::Column::Index(9)],
                ..Default::default()
            },
        }
    }

    const CSV: &str =
        "title\nd;a;dir;bal;text\n28.01.2026;1.234,56;H;10,00;x\n27.01.2026;5,00;S;-;y\nsum;;;;\n";

    fn valid_inputs() -> Vec<&'static str> {
        vec![CAMT, MT940, BAI2, OFX, CSV]
    }

    #[test]
    fn valid_inputs_parse() {
        assert_eq!(
            parse(CAMT.as_bytes(), Format::Camt053).map(|s| s[0].transactions.len()),
            Ok(2)
        );
        assert_eq!(
            parse(MT940.as_bytes(), Format::Mt940).map(|s| s[0].transactions.len()),
            Ok(2)
        );
        assert_eq!(
            parse(BAI2.as_bytes(), Format::Bai2).map(|s| s[0].transactions.len()),
            Ok(2)
        );
        assert_eq!(
            parse(OFX.as_bytes(), Format::Ofx).map(|s| s[0].transactions.len()),
            Ok(1)
        );
        assert_eq!(
            csv::parse_csv(CSV.as_bytes(), &csv_profile()).map(|s| s[0].transactions.len()),
            Ok(2)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            ..ProptestConfig::default()
        })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            all_formats(&bytes);
        }

        #[test]
        fn truncations_never_panic(which in 0usize..5, cut in any::<prop::sample::Index>()) {
            let src = valid_inputs()[which].as_bytes();
            let n = cut.index(src.len() + 1);
            all_formats(&src[..n]);
        }

        #[test]
        fn byte_flips_never_panic(
            which in 0usize..5,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut v = valid_inputs()[which].as_bytes().to_vec();
            for (i, b) in flips {
                let at = i.index(v.len());
                v[at] = b;
            }
            all_formats(&v);
        }

        #[test]
        fn insertions_never_panic(
            which in 0usize..5,
            at in any::<prop::sample::Index>(),
            ins in proptest::collection::vec(any::<u8>(), 1..32),
        ) {
            let src = valid_inputs()[which].as_bytes();
            let i = at.index(src.len() + 1);
            let mut v = src[..i].to_vec();
            v.extend_from_slice(&ins);
            v.extend_from_slice(&src[i..]);
            all_formats(&v);
        }

        #[test]
        fn text_tokens_never_panic(s in "[:?/<>0-9A-Z,. \\n\\r&;#x{}-]{0,400}") {
            all_formats(s.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------
// 5. Streaming large files

mod streaming {
    use std::io::{BufReader, BufWriter, Write};

    use super::super::*;

    /// Writes a camt.053 with `n` entries alternating +1.01 / −0.01 and
    /// returns the expected closing balance (opening 100.00).
    pub(crate) fn write_camt(w: &mut impl Write, n: usize) -> std::io::Result<Decimal> {
        write!(
            w,
            r#"<?xml version="1.0" encoding="UTF-8"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt><GrpHdr><MsgId>BIG</MsgId><CreDtTm>2026-01-28T10:00:00</CreDtTm></GrpHdr><Stmt><Id>BIG-1</Id><ElctrncSeqNb>1</ElctrncSeqNb><Acct><Id><IBAN>DE89370400440532013000</IBAN></Id><Ccy>EUR</Ccy></Acct><Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">100.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-01-27</Dt></Dt></Bal>"#
        )?;
        let mut sum = Decimal::new(10000, 2);
        let mut closing = String::new();
        for i in 0..n {
            let (amt, cdi) = if i % 2 == 0 {
                ("1.01", "CRDT")
            } else {
                ("0.01", "DBIT")
            };
            sum += if i % 2 == 0 {
                Decimal::new(101, 2)
            } else {
                Decimal::new(-1, 2)
            };
            write!(
                w,
                "\n<Ntry><Amt Ccy=\"EUR\">{amt}</Amt><CdtDbtInd>{cdi}</CdtDbtInd><Sts>BOOK</Sts><BookgDt><Dt>2026-01-28</Dt></BookgDt><ValDt><Dt>2026-01-28</Dt></ValDt><AcctSvcrRef>REF{i}</AcctSvcrRef><BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd><NtryDtls><TxDtls><Refs><EndToEndId>E2E-{i}</EndToEndId></Refs><RltdPties><Dbtr><Nm>Customer {i}</Nm></Dbtr><DbtrAcct><Id><IBAN>DE02120300000000202051</IBAN></Id></DbtrAcct></RltdPties><RmtInf><Ustrd>Invoice INV-{i}</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>"
            )?;
        }
        closing.push_str(&sum.to_string());
        write!(
            w,
            r#"<Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">{closing}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-01-28</Dt></Dt></Bal></Stmt></BkToCstmrStmt></Document>"#
        )?;
        Ok(sum)
    }

    fn count_and_sum<R: std::io::BufRead>(r: R, f: Format) -> (usize, Decimal, Vec<Balance>) {
        let mut n = 0usize;
        let mut sum = Decimal::ZERO;
        let mut balances = Vec::new();
        parse_reader(r, f, |ev| -> Result<(), std::convert::Infallible> {
            match ev {
                StatementEvent::Transaction(t) => {
                    n += 1;
                    sum += t.amount;
                }
                StatementEvent::End(e) => balances = e.balances,
                StatementEvent::Header(_) => {}
            }
            Ok(())
        })
        .expect("parses");
        (n, sum, balances)
    }

    #[test]
    fn large_camt053_streams() {
        // 200,000 entries (~110 MB) take ~15 s unoptimised; debug runs use fewer.
        let n = if cfg!(debug_assertions) {
            50_000
        } else {
            200_000
        };
        let mut file = tempfile::tempfile().expect("tempfile");
        let closing = {
            let mut w = BufWriter::new(&mut file);
            let c = write_camt(&mut w, n).expect("write");
            w.flush().expect("flush");
            c
        };
        use std::io::Seek;
        file.rewind().expect("rewind");
        let start = std::time::Instant::now();
        let (count, sum, balances) = count_and_sum(BufReader::new(file), Format::Camt053);
        eprintln!("camt.053 {n} entries streamed in {:?}", start.elapsed());
        assert_eq!(count, n);
        assert_eq!(sum + Decimal::new(10000, 2), closing);
        assert_eq!(balances.len(), 2);
        assert_eq!(balances[1].amount.amount(), closing);
    }

    #[test]
    fn large_mt940_streams() {
        let n = if cfg!(debug_assertions) {
            100_000
        } else {
            200_000
        };
        let mut file = tempfile::tempfile().expect("tempfile");
        {
            let mut w = BufWriter::new(&mut file);
            write!(
                w,
                ":20:BIG\r\n:25:DE89370400440532013000\r\n:28C:1/1\r\n:60F:C260127EUR100,00\r\n"
            )
            .expect("write");
            for i in 0..n {
                let mark = if i % 2 == 0 { "C1,01" } else { "D0,01" };
                write!(w, ":61:2601280128{mark}NTRFNONREF//B{i}\r\n:86:166?00GUTSCHRIFT?20EREF+E2E-{i}?21SVWZ+Invoice INV-{i}?32Customer {i}\r\n").expect("write");
            }
            write!(w, ":62F:C260128EUR{},00\r\n-\r\n", 100 + n / 2).expect("write");
            w.flush().expect("flush");
        }
        use std::io::Seek;
        file.rewind().expect("rewind");
        let start = std::time::Instant::now();
        let (count, sum, balances) = count_and_sum(BufReader::new(file), Format::Mt940);
        eprintln!("MT940 {n} lines streamed in {:?}", start.elapsed());
        assert_eq!(count, n);
        assert_eq!(sum, Decimal::from(n / 2));
        assert_eq!(balances[1].amount.amount(), Decimal::from(100 + n / 2));
    }

    /// Release-mode throughput: `cargo test --release -- --ignored throughput --nocapture`.
    #[test]
    #[ignore]
    fn mt940_throughput() {
        let n = 400_000;
        let mut buf = Vec::new();
        buf.extend_from_slice(
            b":20:BIG\r\n:25:DE89370400440532013000\r\n:28C:1/1\r\n:60F:C260127EUR0,00\r\n",
        );
        for i in 0..n {
            buf.extend_from_slice(
                format!(":61:2601280128C1,01NTRFNONREF//B{i}\r\n:86:166?00GUTSCHRIFT?20EREF+E2E-{i}?21SVWZ+Invoice INV-{i}?32Customer {i}\r\n").as_bytes(),
            );
        }
        buf.extend_from_slice(b":62F:C260128EUR0,00\r\n-\r\n");
        let start = std::time::Instant::now();
        let (count, _, _) = count_and_sum(&buf[..], Format::Mt940);
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(count, n);
        eprintln!(
            "MT940: {:.1} MB in {secs:.3} s = {:.0} MB/s, {:.0} lines/s",
            buf.len() as f64 / 1e6,
            buf.len() as f64 / 1e6 / secs,
            n as f64 / secs
        );
    }

    /// Release-mode throughput: `cargo test --release -- --ignored throughput --nocapture`.
    #[test]
    #[ignore]
    fn camt_throughput() {
        let n = 400_000;
        let mut buf = Vec::new();
        write_camt(&mut buf, n).expect("write");
        for _ in 0..3 {
            let start = std::time::Instant::now();
            let (count, _, _) = count_and_sum(&buf[..], Format::Camt053);
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(count, n);
            eprintln!(
                "camt.053: {:.1} MB in {secs:.3} s = {:.0} MB/s, {:.0} entries/s",
                buf.len() as f64 / 1e6,
                buf.len() as f64 / 1e6 / secs,
                n as f64 / secs
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Streaming digest: the same keys, balance check and fingerprint as the
// whole-statement functions.

/// Streams `bytes` through a [`StatementDigest`] per statement.
fn digests(bytes: &[u8], format: Format) -> Vec<(Vec<String>, StatementSummary)> {
    let mut out = Vec::new();
    let mut cur: Option<(StatementDigest, Vec<String>)> = None;
    parse_reader(bytes, format, |ev| {
        match ev {
            StatementEvent::Header(h) => cur = Some((StatementDigest::new(h), Vec::new())),
            StatementEvent::Transaction(t) => {
                let (d, keys) = cur.as_mut().expect("header first");
                keys.push(d.line(&t));
            }
            StatementEvent::End(end) => {
                let (d, keys) = cur.take().expect("header first");
                out.push((keys, d.finish(end)));
            }
        }
        Ok::<(), std::convert::Infallible>(())
    })
    .expect("parses");
    out
}

fn assert_digest_matches(label: &str, bytes: &[u8], format: Format) {
    let whole = parse(bytes, format.clone()).expect("parses");
    let streamed = digests(bytes, format);
    assert_eq!(whole.len(), streamed.len(), "{label}: statements");
    for (i, (st, (keys, summary))) in whole.iter().zip(&streamed).enumerate() {
        assert_eq!(&line_keys(st), keys, "{label} statement {i}: keys");
        assert_eq!(
            balance_check(st),
            summary.balance_check,
            "{label} {i}: check"
        );
        assert_eq!(
            statement_fingerprint(st),
            summary.fingerprint,
            "{label} {i}: fingerprint"
        );
        assert_eq!(st.transactions.len(), summary.lines, "{label} {i}: lines");
        assert_eq!(st.balances, summary.balances, "{label} {i}: balances");
        assert_eq!(st.warnings, summary.warnings, "{label} {i}: warnings");
    }
}

#[test]
fn streaming_digest_matches_the_whole_statement_functions_on_every_fixture() {
    let Some(dir) = fixtures_dir() else { return };
    let mut all = Vec::new();
    files(&dir, &mut all);
    let mut compared = 0;
    for path in all {
        let rel = path
            .strip_prefix(&dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        let Some(format) = format_for(&rel) else {
            continue;
        };
        if EXPECTED_FAILURES.iter().any(|(f, _)| *f == rel) {
            continue;
        }
        let bytes = std::fs::read(&path).expect("readable");
        assert_digest_matches(&rel, &bytes, format);
        compared += 1;
    }
    assert!(compared >= 60, "too few fixtures compared: {compared}");
}

#[test]
fn balance_check_counts_only_booked_lines_in_the_opening_currency() {
    // Two EUR lines, one USD line, one repeated line; the opening is EUR.
    let text = format!(
        "{MT_HEAD}:61:2512301230C100,00NTRFNONREF//A\r\n:86:one\r\n\
         :61:2512301230D30,00NTRFNONREF//B\r\n:86:two\r\n\
         :61:2512301230D30,00NTRFNONREF//B\r\n:86:two\r\n\
         :62F:C251230EUR1040,00\r\n-\r\n"
    );
    let sts = mt(&text).expect("parses");
    let check = balance_check(&sts[0]).expect("has balances");
    assert_eq!(check.sum, d("40.00"));
    assert_eq!((check.counted, check.skipped), (3, 0));
    assert!(check.is_ok(), "{check:?}");
    let keys = line_keys(&sts[0]);
    assert!(
        keys[1].ends_with(":1") && keys[2].ends_with(":2"),
        "{keys:?}"
    );
    assert_eq!(
        keys[1].rsplit_once(':').map(|k| k.0),
        keys[2].rsplit_once(':').map(|k| k.0)
    );
    assert_digest_matches("hand-written", text.as_bytes(), Format::Mt940);

    let mut st = sts[0].clone();
    st.transactions[0].currency = Currency::parse("USD").unwrap();
    st.transactions[1]
        .extra
        .insert("entry_status".into(), Value::String("PDNG".into()));
    let check = balance_check(&st).expect("has balances");
    assert_eq!(check.sum, d("-30.00"));
    assert_eq!((check.counted, check.skipped), (1, 2));
    assert_eq!(check.difference, d("70.00"));
}
