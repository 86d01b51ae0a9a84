//! File-mode reconciliation speed and memory.
//!
//! `cargo bench --bench reconcile [-- SIZES…]` generates, for each size N
//! (default 10000 100000), a scenario of N receipts and N open invoices with
//! the seeded generator, writes them as `receivables.csv` and
//! `statement.csv` under `target/reconcile-bench/N/` (kept for the binary),
//! then times what `concord reconcile` does in-process: read both CSVs,
//! match, build the result and write result.json. Prints the phases, where
//! matching spent its time (see `reconcile::Profile`), and
//! the process's peak resident memory (which includes the generator's own
//! data; measure the binary for the figure an operator sees):
//!
//! ```text
//! cd target/reconcile-bench/100000
//! /usr/bin/time -v ../../release/concord reconcile --receivables receivables.csv \
//!     --statement statement.csv --out result.json
//! ```

use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use concord::reconcile::scenario::{self, Params};
use concord::reconcile::{Config, Profile, file, reconcile_profiled};

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn print_profile(p: &Profile) {
    let s = |d: std::time::Duration| d.as_secs_f64();
    println!(
        "  match: prepare {:.3} s, candidates {:.3} s, decide {:.3} s (wall)",
        s(p.prepare),
        s(p.candidates),
        s(p.decide)
    );
    println!(
        "  candidates (CPU over threads): references {:.3} s, name look-up {:.3} s, name similarity {:.3} s, subsets {:.3} s, other {:.3} s",
        s(p.references),
        s(p.name_lookup),
        s(p.name_similarity),
        s(p.subsets),
        s(p.other)
    );
    println!(
        "  work: {} name look-ups, {} customer names compared, {} subset searches of {} steps",
        p.name_searches, p.names_compared, p.subset_searches, p.subset_steps
    );
}

fn main() -> std::io::Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/reconcile-bench");
    for n in sizes {
        let dir = root.join(n.to_string());
        std::fs::create_dir_all(&dir)?;
        let rec_path = dir.join("receivables.csv");
        let st_path = dir.join("statement.csv");
        if !rec_path.exists() || !st_path.exists() {
            let t = Instant::now();
            let s = scenario::generate(Params {
                seed: 2026,
                receipts: n,
                receivables: n,
            });
            scenario::write_receivables_csv(
                &s.receivables,
                BufWriter::new(std::fs::File::create(&rec_path)?),
            )?;
            scenario::write_statement_csv(
                &s.receipts,
                BufWriter::new(std::fs::File::create(&st_path)?),
            )?;
            println!(
                "{n}: generated {} receipts and {} receivables in {:.2} s into {}",
                s.receipts.len(),
                s.receivables.len(),
                t.elapsed().as_secs_f64(),
                dir.display()
            );
        }
        for run in 1..=2 {
            let t0 = Instant::now();
            let rb = std::fs::read(&rec_path)?;
            let sb = std::fs::read(&st_path)?;
            let receivables = file::load_receivables(&rb, "receivables.csv");
            let receipts = file::load_statement_csv(&sb, "statement.csv");
            drop((rb, sb));
            let t1 = Instant::now();
            let cfg = Config::default();
            let (rec, profile) = reconcile_profiled(&receipts.records, &receivables.records, &cfg);
            let t2 = Instant::now();
            let mut alerts = receivables.alerts;
            alerts.extend(receipts.alerts);
            let result = file::result(
                &receipts.records,
                &receivables.records,
                &rec,
                alerts,
                Default::default(),
                &cfg,
            );
            let t3 = Instant::now();
            let out = BufWriter::new(std::fs::File::create(dir.join("bench-result.json"))?);
            serde_json::to_writer(out, &result)?;
            let t4 = Instant::now();
            println!(
                "{n} receipts x {} invoices, run {run}: read {:.3} s, match {:.3} s, result {:.3} s, write {:.3} s, total {:.3} s; auto {} suggested {} open {}; peak RSS {:.0} MB",
                receivables.records.len(),
                (t1 - t0).as_secs_f64(),
                (t2 - t1).as_secs_f64(),
                (t3 - t2).as_secs_f64(),
                (t4 - t3).as_secs_f64(),
                (t4 - t0).as_secs_f64(),
                result.summary.auto.count,
                result.summary.suggested.count,
                result.summary.open.count,
                peak_rss_mb().unwrap_or(f64::NAN)
            );
            print_profile(&profile);
        }
    }
    Ok(())
}
