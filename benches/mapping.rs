//! Applying a compiled mapping plan: the hot path of every sync.
//!
//! `cargo bench --bench mapping` maps a realistic 25-field customer record
//! (3 code tables, a date and a decimal parse) on one core, JSON parsing
//! excluded, and prints records/s for the plan alone and for the plan plus
//! the canonical model's typing (what the store receives).

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use concord::mapping::{self, Lookups};
use serde_json::{Value, json};

pub fn record(i: u64) -> Value {
    let status = ["A", "I", "P"][(i % 3) as usize];
    let segment = ["1", "2", "3"][(i % 3) as usize];
    json!({
        "id": 100_000 + i,
        "company_name": format!("  Muster   Handels GmbH {i} "),
        "legal_name": "Muster Handels GmbH",
        "vat_id": "de 123 456 789",
        "email": " Buchhaltung@Muster-Handel.DE ",
        "phone": "+49 30 1234567",
        "currency": "eur",
        "status": status,
        "address": { "street": "Hauptstraße 1 ", "city": " Berlin", "zip": "10115", "country": "Deutschland" },
        "shipping": { "city": "Hamburg", "country": "germany" },
        "segment": segment,
        "created": "28.11.2019",
        "revenue": "1.234.567,89",
        "owner": { "email": "J.Doe@Example.com" },
        "website": "WWW.MUSTER-HANDEL.DE",
        "industry": "Wholesale",
        "employees": 120,
        "language": null,
        "newsletter": "ja",
        "notes": "Prefers  invoices\nby e-mail."
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/crm-customer.in.toml");
    let m = mapping::load_file(&path).unwrap_or_else(|e| panic!("{e:#?}"));
    let lookups = Lookups::default();
    // `--count plan|canonical N`: map N records once and stop, for counting
    // instructions (`valgrind --tool=callgrind`), which other work on the
    // machine does not disturb as it does wall time. Run it for two values
    // of N: the difference divided by the difference in N is the cost of
    // one record, setup excluded.
    if let Some(at) = args.iter().position(|a| a == "--count") {
        let canonical = args.get(at + 1).is_some_and(|a| a == "canonical");
        let n: usize = args
            .get(at + 2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000);
        let records: Vec<Value> = (0..64).map(record).collect();
        for i in 0..n {
            let r = &records[i % records.len()];
            if canonical {
                black_box(m.apply_canonical(black_box(r), &lookups).ok());
            } else {
                black_box(m.apply(black_box(r), &lookups).ok());
            }
        }
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("mapping bench: run with `cargo bench --bench mapping`");
        return;
    }
    let records: Vec<Value> = (0..10_000).map(record).collect();
    assert!(
        m.apply_canonical(&records[0], &lookups).is_ok(),
        "{:?}",
        m.apply_canonical(&records[0], &lookups)
    );

    // "hot": 64 distinct records cycling, as in the pipeline where a record
    // is mapped right after it was parsed and is still in cache. "cold":
    // 10,000 distinct records (~20 MB), more than this machine's caches.
    for (set, working) in [("hot", 64usize), ("cold", records.len())] {
        for (label, canonical) in [("plan", false), ("plan + canonical typing", true)] {
            let mut best = f64::MAX;
            let rounds = 60_000 / working.max(1);
            for _ in 0..5 {
                let started = Instant::now();
                for _ in 0..rounds {
                    for r in &records[..working] {
                        if canonical {
                            black_box(m.apply_canonical(black_box(r), &lookups).ok());
                        } else {
                            black_box(m.apply(black_box(r), &lookups).ok());
                        }
                    }
                }
                best = best.min(started.elapsed().as_secs_f64() / (rounds * working) as f64);
            }
            println!(
                "mapping {set:<4} {label:<24} {:>9.0} records/s ({:.2} µs/record, best of 5, one core)",
                1.0 / best,
                best * 1e6
            );
        }
    }
}
