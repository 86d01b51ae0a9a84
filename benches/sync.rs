//! The sync pipeline end to end: an NDJSON file → map → identity → merge →
//! store → an NDJSON file target, then the same run again on unchanged input.
//!
//! `cargo bench --bench sync` runs on a fresh SQLite store;
//! `CONCORD_BENCH_RECORDS` sets the count (default 200,000) and
//! `CONCORD_BENCH_DATABASE_URL=postgres://…` runs the store on PostgreSQL
//! (its tables are left in the database's default schema — use a scratch
//! database). Prints records/s for both runs and the peak RSS;
//! `CONCORD_BENCH_STAGES=1` also times the first run's take-in and delivery
//! apart, `CONCORD_BENCH_RERUNS=k` repeats the unchanged re-run k times
//! and prints each one's wall and CPU time, and
//! `CONCORD_BENCH_CHANGED_EVERY=m` changes every m-th record before each
//! re-run (an incremental sync: those are taken in and delivered).
//!
//! The run is the engine's (`concord sync run copy` without the
//! data-quality rules, which `[quality] run_after_sync` adds to the CLI).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use concord::settings::Settings;
use concord::store::Store;
use concord::sync::{Engine, RunOptions};

// The allocator of the concord binary, so that the figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The source file: `n` customers; with `changed = Some((every, run))`,
/// each `every`-th one moved to another city named after `run`.
fn write_input(dir: &Path, n: usize, changed: Option<(usize, usize)>) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("in.ndjson")).unwrap());
    for i in 0..n {
        let city = match changed {
            Some((every, run)) if i % every == 0 => format!("Berlin {run}"),
            _ => "Berlin".to_owned(),
        };
        writeln!(
            f,
            r#"{{"id":"C{i:08}","company":"Customer {i} GmbH","vat":"DE{:09}","email":"AP{i}@Example.test","phone":"+49 30 {:07}","city":"{city}","country":"de","updated":"2026-11-{:02}T08:00:00Z"}}"#,
            100_000_000 + i,
            i % 10_000_000,
            1 + i % 28
        )
        .unwrap();
    }
    f.flush().unwrap();
}

fn write_setup(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("connectors")).unwrap();
    std::fs::create_dir_all(dir.join("mappings")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    write_input(dir, n, None);
    let text = |p: &str, t: &str| std::fs::write(dir.join(p), t).unwrap();
    text(
        "connectors/src.toml",
        r#"name = "src"
driver = "file"
[entities.company]
path = "in.ndjson"
format = "ndjson"
id = "id"
page_size = 1000
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
[defaults]
phone_country = "DE"
[fields]
name = { from = "company", pipe = ["collapse"], required = true }
tax_id = { from = "vat", pipe = ["trim"] }
email = { from = "email", pipe = ["trim", "email"] }
phone = { from = "phone", pipe = ["trim", "phone"] }
"billing.city" = { from = "city", pipe = ["collapse"] }
"billing.country" = { from = "country", pipe = ["trim", "upper"] }
"extra.source_id" = { from = "id" }
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
email = { from = "email" }
phone = { from = "phone" }
city = { from = "billing.city" }
country = { from = "billing.country" }
"#,
    );
    text(
        "concord.toml",
        r#"[connectors]
dir = "connectors"
[mappings]
dir = "mappings"
[systems.source]
connector = "src"
[systems.target]
connector = "dst"
[[jobs]]
name = "copy"
source = { system = "source", entity = "company", mapping = "src-in" }
targets = [{ system = "target", entity = "company", mapping = "dst-out" }]
identity = ["tax_id"]
batch_size = 1000
[delivery]
batch_size = 1000
"#,
    );
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// User and system CPU time of this process, all threads, in seconds
/// (0 where /proc is not there).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // After the command name in parentheses: state is field 3,
            // utime and stime fields 14 and 15, in clock ticks of 1/100 s.
            let rest = &s[s.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("sync bench: run with `cargo bench --bench sync`");
        return;
    }
    let n: usize = std::env::var("CONCORD_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    write_setup(dir.path(), n);
    std::env::set_current_dir(dir.path()).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut settings = Settings::load(Some(Path::new("concord.toml"))).unwrap();
        let label = match std::env::var("CONCORD_BENCH_DATABASE_URL") {
            Ok(url) => {
                settings.store.url = url.as_str().into();
                "postgres"
            }
            Err(_) => {
                settings.store.url = "sqlite://state/concord.db".into();
                "sqlite"
            }
        };
        let store = Store::open(&settings.store).await.unwrap();
        let engine = Engine::new(settings, store).unwrap();
        let started = Instant::now();
        // CONCORD_BENCH_STAGES=1: take in first, then deliver, each timed.
        let first = if std::env::var_os("CONCORD_BENCH_STAGES").is_some() {
            let options = RunOptions { no_deliver: true, ..RunOptions::default() };
            let mut report = engine.run_job("copy", options).await.unwrap();
            let taken_in = started.elapsed().as_secs_f64();
            report.delivered = engine.deliver_all(None).await.unwrap().delivered;
            println!(
                "stages: take-in {taken_in:.1} s, delivery {:.1} s",
                started.elapsed().as_secs_f64() - taken_in
            );
            report
        } else {
            engine.run_job("copy", RunOptions::default()).await.unwrap()
        };
        let t1 = started.elapsed().as_secs_f64();
        if label == "sqlite" {
            let size = |f: &str| std::fs::metadata(f).map_or(0, |m| m.len());
            println!(
                "store after the first run: {:.0} MB (database and WAL)",
                (size("state/concord.db") + size("state/concord.db-wal")) as f64 / 1e6
            );
        }
        assert_eq!(first.created, n, "{first:?}");
        assert_eq!(first.delivered, n, "{first:?}");
        // CONCORD_BENCH_RERUNS=k: the unchanged re-run k times, each with
        // its wall time and the CPU time of all threads (CPU over wall is
        // how many of the cores the run kept busy).
        let reruns: usize = std::env::var("CONCORD_BENCH_RERUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
            .max(1);
        // CONCORD_BENCH_CHANGED_EVERY=m: before each re-run, every m-th
        // record changes (a new city), the rest arrive unchanged: an
        // incremental sync, each change taken in and delivered.
        let every: Option<usize> = std::env::var("CONCORD_BENCH_CHANGED_EVERY")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&m| m > 0);
        let mut t2 = 0.0;
        for k in 1..=reruns {
            let changed = every.map_or(0, |m| n.div_ceil(m));
            if let Some(m) = every {
                write_input(Path::new("."), n, Some((m, k)));
            }
            let cpu = cpu_seconds();
            let started = Instant::now();
            let again = engine
                .run_job("copy", RunOptions { full: true, ..RunOptions::default() })
                .await
                .unwrap();
            t2 = started.elapsed().as_secs_f64();
            assert_eq!(
                (again.unchanged, again.updated, again.delivered),
                (n - changed, changed, changed),
                "{again:?}"
            );
            if reruns > 1 || every.is_some() {
                println!(
                    "re-run {k}: {:.0} records/s ({t2:.2} s), CPU {:.2} s, {changed} changed",
                    n as f64 / t2,
                    cpu_seconds() - cpu
                );
            }
        }
        println!(
            "{label:<9} {n} records: first run {:>7.0} records/s ({t1:.1} s), {} re-run {:>7.0} records/s ({t2:.1} s), peak RSS {:.0} MB",
            n as f64 / t1,
            if every.is_some() { "changed" } else { "unchanged" },
            n as f64 / t2,
            peak_rss_mb()
        );
    });
}
