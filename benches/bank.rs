//! Bank statement parsing throughput and memory.
//!
//! `cargo bench --bench bank` writes a generated camt.053 and MT940 of
//! `CONCORD_BENCH_ENTRIES` entries (default 1,000,000) to temporary files,
//! streams each through the parser, and prints MB/s, entries/s and the
//! process's peak resident memory after each (which stays flat as files
//! grow, because entries are handed on as they are read).

use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use concord::bank::{self, Format, StatementEvent};

fn write_camt(path: &Path, entries: usize) -> std::io::Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        w,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt>
<GrpHdr><MsgId>BENCH-1</MsgId><CreDtTm>2026-11-28T06:00:00</CreDtTm></GrpHdr>
<Stmt><Id>BENCH-STMT</Id><ElctrncSeqNb>1</ElctrncSeqNb><CreDtTm>2026-11-28T06:00:00</CreDtTm>
<Acct><Id><IBAN>DE89370400440532013000</IBAN></Id><Ccy>EUR</Ccy></Acct>
<Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">0.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-11-27</Dt></Dt></Bal>"#
    )?;
    let mut sum: i64 = 0;
    for i in 0..entries {
        let cents = 1_000 + (i as i64 % 900_000);
        sum += cents;
        writeln!(
            w,
            r#"<Ntry><NtryRef>{i}</NtryRef><Amt Ccy="EUR">{}.{:02}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts><BookgDt><Dt>2026-11-28</Dt></BookgDt><ValDt><Dt>2026-11-28</Dt></ValDt><AcctSvcrRef>REF{i:010}</AcctSvcrRef><BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd><NtryDtls><TxDtls><Refs><EndToEndId>E2E-{i}</EndToEndId></Refs><RltdPties><Dbtr><Nm>Customer {i} GmbH</Nm></Dbtr><DbtrAcct><Id><IBAN>GB82WEST12345698765432</IBAN></Id></DbtrAcct></RltdPties><RmtInf><Ustrd>Invoice INV-2026-{i:06} thank you</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>"#,
            cents / 100,
            cents % 100
        )?;
    }
    writeln!(
        w,
        r#"<Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">{}.{:02}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-11-28</Dt></Dt></Bal>
</Stmt></BkToCstmrStmt></Document>"#,
        sum / 100,
        sum % 100
    )?;
    w.flush()
}

fn write_mt940(path: &Path, entries: usize) -> std::io::Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    write!(
        w,
        ":20:BENCH\r\n:25:DE89370400440532013000\r\n:28C:1/1\r\n:60F:C261127EUR0,00\r\n"
    )?;
    let mut sum: i64 = 0;
    for i in 0..entries {
        let cents = 1_000 + (i as i64 % 900_000);
        sum += cents;
        write!(
            w,
            ":61:2611281128C{},{:02}NTRFNONREF//B{i}\r\n:86:166?00SEPA-GUTSCHRIFT?20EREF+E2E-{i}?21SVWZ+RE INV-2026-{i:06}?32CUSTOMER {i} GMBH\r\n",
            cents / 100,
            cents % 100
        )?;
    }
    write!(w, ":62F:C261128EUR{},{:02}\r\n-\r\n", sum / 100, sum % 100)?;
    w.flush()
}

/// Peak resident memory of this process, from /proc (Linux).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn run(label: &str, path: &Path, format: Format, entries: usize) {
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) as f64;
    let file = std::fs::File::open(path).expect("open");
    let started = Instant::now();
    let mut count = 0usize;
    bank::parse_reader(BufReader::with_capacity(1 << 16, file), format, |event| {
        if let StatementEvent::Transaction(_) = event {
            count += 1;
        }
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|e| panic!("{label}: {e:?}"));
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(count, entries, "{label}: every entry read");
    println!(
        "{label:<9} {:>7.1} MB in {:.2} s: {:>6.1} MB/s, {:>8.0} entries/s; peak RSS so far {:.0} MB",
        bytes / 1e6,
        secs,
        bytes / 1e6 / secs,
        count as f64 / secs,
        peak_rss_mb().unwrap_or(f64::NAN)
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("bank bench: run with `cargo bench --bench bank`");
        return;
    }
    let entries: usize = std::env::var("CONCORD_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let camt = dir.path().join("bench.camt053.xml");
    let mt940 = dir.path().join("bench.sta");
    write_camt(&camt, entries).expect("write camt");
    write_mt940(&mt940, entries).expect("write mt940");
    println!(
        "{entries} entries per file; peak RSS before parsing {:.0} MB",
        peak_rss_mb().unwrap_or(f64::NAN)
    );
    run("camt.053", &camt, Format::Camt053, entries);
    run("MT940", &mt940, Format::Mt940, entries);
}
