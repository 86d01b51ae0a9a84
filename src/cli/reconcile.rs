//! `concord reconcile …`: match bank receipts to open invoices.
//!
//! File mode (`concord reconcile --receivables FILE --statement FILE --out
//! result.json`) reads exports and writes files; nothing touches the store.
//! Store mode (`concord reconcile run|list|confirm|reject|undo`) works on the
//! bank transactions and invoices in the store and keeps its allocations
//! there (see `src/store/reconcile.rs`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::json;

use super::OutputFormat;
use crate::bank::{self, Format};
use crate::reconcile::file::{self, Alert, FileResult, Loaded, Severity, Tally};
use crate::reconcile::{self as engine, Config, Receipt, report};

use crate::settings::Settings;

/// Matches receipts of a bank statement to open invoices.
///
/// File mode: `concord reconcile --receivables FILE --statement FILE --out
/// result.json [--report report.html] [--csv allocations.csv]`. Store mode:
/// the subcommands below.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReconcileArgs {
    #[command(subcommand)]
    command: Option<StoreCommand>,
    #[command(flatten)]
    file: FileModeArgs,
}

/// File mode.
#[derive(Debug, Args)]
pub struct FileModeArgs {
    /// Open receivables CSV: invoice_number, customer_id, customer_name,
    /// customer_account, currency, amount_total, amount_open, issue_date,
    /// due_date.
    #[arg(long, value_name = "FILE", required = true)]
    receivables: Option<PathBuf>,
    /// Bank statement: camt.05x, MT940/942, BAI2, OFX, a CSV with the
    /// columns transaction_id, booking_date, amount, currency,
    /// counterparty_name, counterparty_account, reference, or a bank CSV
    /// with a profile.
    #[arg(long, value_name = "FILE", required = true)]
    statement: Option<PathBuf>,
    /// Statement format: auto (from the content), camt053, camt054, camt052,
    /// mt940, mt942, bai2, ofx, csv (the columns above) or csv:PROFILE.
    #[arg(long, short = 'f', default_value = "auto")]
    format: String,
    /// Folder of bank CSV profiles (*.toml).
    #[arg(long, default_value = "config/bank-profiles", value_name = "DIR")]
    profiles: PathBuf,
    /// Where to write result.json.
    #[arg(long, value_name = "FILE", required = true)]
    out: Option<PathBuf>,
    /// Also write a printable HTML report.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Also write one CSV row per allocation.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Confidence at or above which a match is made without review.
    #[arg(long, value_name = "X")]
    auto_threshold: Option<f64>,
    /// Confidence at or above which a match is suggested.
    #[arg(long, value_name = "X")]
    suggest_threshold: Option<f64>,
    /// How to print the summary.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

pub use super::reconcile_store::StoreCommand;

pub async fn run(args: ReconcileArgs, settings: &Settings) -> anyhow::Result<()> {
    match args.command {
        Some(cmd) => super::reconcile_store::run(cmd, settings).await,
        None => file_mode(args.file, settings),
    }
}

/// The configuration of a run: defaults, then the flags.
fn config(args: &FileModeArgs, settings: &Settings) -> anyhow::Result<Config> {
    let mut cfg = settings.reconcile.config();
    if let Some(x) = args.auto_threshold {
        cfg.auto_threshold = x;
    }
    if let Some(x) = args.suggest_threshold {
        cfg.suggest_threshold = x;
    }
    check_thresholds(&cfg)?;
    Ok(cfg)
}

pub(super) fn check_thresholds(cfg: &Config) -> anyhow::Result<()> {
    match cfg.problem() {
        Some(reason) => Err(usage("thresholds", reason)),
        None => Ok(()),
    }
}

/// A command-line mistake: exit code 2.
pub(super) fn usage(key: &str, reason: String) -> anyhow::Error {
    crate::settings::SettingsError::Value {
        key: key.to_owned(),
        reason,
    }
    .into()
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
    if meta.len() > bank::MAX_WHOLE_FILE as u64 {
        anyhow::bail!(
            "{} is {} bytes; reconciliation reads files of up to {} bytes",
            path.display(),
            meta.len(),
            bank::MAX_WHOLE_FILE
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// True when the first line names the statement CSV's columns.
fn is_statement_csv(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(4096)];
    let text = String::from_utf8_lossy(head);
    let first = text
        .trim_start_matches('\u{feff}')
        .lines()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let cols: Vec<&str> = first
        .split([',', ';', '\t'])
        .map(|c| c.trim().trim_matches('"'))
        .collect();
    ["transaction_id", "booking_date", "amount", "currency"]
        .iter()
        .all(|c| cols.contains(c))
}

/// Reads the statement into receipts. A file that cannot be read as a
/// statement at all becomes an error alert (and no receipts), so the
/// result still says what happened.
pub(super) fn load_statement(
    bytes: &[u8],
    name: &str,
    format: &str,
    profiles_dir: &Path,
) -> anyhow::Result<Loaded<Receipt>> {
    let unusable = |message: String| {
        let mut out = Loaded::default();
        out.alerts.push(Alert {
            severity: Severity::Error,
            rule: "unreadable_statement",
            file: Some(name.to_owned()),
            line: None,
            place: None,
            message,
        });
        out.unusable = true;
        out
    };
    let format = match format {
        "csv" => None,
        "auto" => {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                None
            } else if let Some(f) = bank::detect(bytes) {
                Some(f)
            } else if is_statement_csv(bytes) {
                None
            } else {
                let profiles = super::bank::load_profiles(profiles_dir)?;
                match bank::csv::detect_profile(bytes, &profiles) {
                    Some(p) => Some(Format::Csv(p.name.clone())),
                    None => {
                        return Ok(unusable(format!(
                            "not a camt, MT940/942, BAI2 or OFX file, no statement CSV header (transaction_id, booking_date, amount, currency, …), and no CSV profile in {} matches; name the format with --format",
                            profiles_dir.display()
                        )));
                    }
                }
            }
        }
        other => {
            Some(super::bank::parse_format(other).map_err(|e| usage("--format", e.to_string()))?)
        }
    };
    let Some(format) = format else {
        return Ok(file::load_statement_csv(bytes, name));
    };
    let parsed = match &format {
        Format::Csv(profile) => {
            let profiles = super::bank::load_profiles(profiles_dir)?;
            let Some(p) = profiles.iter().find(|p| &p.name == profile) else {
                return Err(usage(
                    "--format",
                    format!("no CSV profile {profile:?} in {}", profiles_dir.display()),
                ));
            };
            bank::csv::parse_csv(bytes, p)
        }
        f => bank::parse(bytes, f.clone()),
    };
    match parsed {
        Ok(statements) => Ok(file::receipts_from_statements(&statements, name)),
        Err(e) => Ok(unusable(format!("cannot read it as {format}: {e}"))),
    }
}

fn file_mode(args: FileModeArgs, settings: &Settings) -> anyhow::Result<()> {
    let cfg = config(&args, settings)?;
    let (Some(receivables_path), Some(statement_path), Some(out_path)) =
        (&args.receivables, &args.statement, &args.out)
    else {
        return Err(usage(
            "reconcile",
            "file mode needs --receivables, --statement and --out".into(),
        ));
    };
    let started = std::time::Instant::now();
    let rec_name = receivables_path.display().to_string();
    let st_name = statement_path.display().to_string();
    // Both files at once.
    let (receivables, receipts) = std::thread::scope(|s| {
        let receivables = s.spawn(|| -> anyhow::Result<_> {
            Ok(file::load_receivables(&read(receivables_path)?, &rec_name))
        });
        let receipts = read(statement_path)
            .and_then(|bytes| load_statement(&bytes, &st_name, &args.format, &args.profiles));
        let receivables = receivables
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        anyhow::Ok((receivables?, receipts?))
    })?;
    let read_time = started.elapsed();
    let rec = engine::reconcile(&receipts.records, &receivables.records, &cfg);
    let match_time = started.elapsed() - read_time;
    let mut alerts = receivables.alerts;
    alerts.extend(receipts.alerts);
    let mut skipped = receivables.skipped;
    for (k, v) in receipts.skipped {
        *skipped.entry(k).or_default() += v;
    }
    let result = file::result(
        &receipts.records,
        &receivables.records,
        &rec,
        alerts,
        skipped,
        &cfg,
    );
    write_result(&result, out_path)?;
    if let Some(path) = &args.csv {
        let f = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file::write_allocations_csv(&result, std::io::BufWriter::new(f))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.report {
        let html = report::html(
            &result,
            &report::Meta {
                receivables: &rec_name,
                statement: &st_name,
            },
        );
        std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))?;
    }
    tracing::info!(
        receipts = receipts.records.len(),
        receivables = receivables.records.len(),
        read_ms = read_time.as_millis() as u64,
        match_ms = match_time.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "reconciled"
    );
    let written: Vec<String> = [Some(out_path), args.report.as_ref(), args.csv.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
    let text = match args.output {
        OutputFormat::Json => {
            serde_json::to_string_pretty(&json!({
                "summary": result.summary,
                "alerts": result.alerts,
                "written": written,
            }))? + "\n"
        }
        OutputFormat::Table => summary_table(&result, &written),
    };
    super::print(&text)?;
    if receivables.unusable || receipts.unusable {
        anyhow::bail!(
            "an input file could not be used (see the error alerts above); {} written with what could be read",
            out_path.display()
        );
    }
    Ok(())
}

fn write_result(result: &FileResult, path: &Path) -> anyhow::Result<()> {
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    serde_json::to_writer_pretty(&mut w, result)
        .with_context(|| format!("cannot write {}", path.display()))?;
    use std::io::Write;
    w.write_all(b"\n")?;
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Amounts of a tally as `1,234.50 EUR; 99.00 USD`.
pub(super) fn amounts(t: &Tally) -> String {
    if t.amount.is_empty() {
        return "-".into();
    }
    t.amount
        .iter()
        .map(|(c, a)| format!("{} {c}", report::group(a)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Alerts printed in the table before "… and N more".
const ALERTS_SHOWN: usize = 20;

fn summary_table(result: &FileResult, written: &[String]) -> String {
    let s = &result.summary;
    let mut out = String::new();
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_header(vec!["receipts", "count", "amount"]);
    t.add_row(vec![
        "read".into(),
        s.receipts.count.to_string(),
        amounts(&s.receipts),
    ]);
    t.add_row(vec![
        "matched automatically".into(),
        s.auto.count.to_string(),
        amounts(&s.auto),
    ]);
    t.add_row(vec![
        "suggested for review".into(),
        s.suggested.count.to_string(),
        amounts(&s.suggested),
    ]);
    t.add_row(vec![
        "left open".into(),
        s.open.count.to_string(),
        amounts(&s.open),
    ]);
    t.add_row(vec![
        "open invoices before".into(),
        s.invoices.count.to_string(),
        amounts(&s.invoices),
    ]);
    t.add_row(vec![
        "open invoices after".into(),
        s.invoices_remaining.count.to_string(),
        amounts(&s.invoices_remaining),
    ]);
    if s.write_offs.count > 0 {
        t.add_row(vec![
            "write-offs suggested".into(),
            s.write_offs.count.to_string(),
            amounts(&s.write_offs),
        ]);
    }
    if s.unallocated.count > 0 {
        t.add_row(vec![
            "overpaid (unallocated)".into(),
            s.unallocated.count.to_string(),
            amounts(&s.unallocated),
        ]);
    }
    out += &format!("{t}\n");
    out += &format!("auto-match rate {:.1} % of receipts", s.auto_rate * 100.0);
    if let Some(d) = s.as_of {
        out += &format!(", as of {d}");
    }
    out.push('\n');
    let stages: Vec<_> = s
        .by_stage
        .iter()
        .filter(|(_, st)| st.auto + st.suggested > 0)
        .collect();
    if !stages.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY)
            .set_header(vec!["stage", "auto", "suggested"]);
        for (name, st) in stages {
            t.add_row(vec![
                (*name).to_owned(),
                st.auto.to_string(),
                st.suggested.to_string(),
            ]);
        }
        out += &format!("{t}\n");
    }
    if !result.alerts.is_empty() {
        out += &format!("{} alert(s):\n", result.alerts.len());
        for a in result.alerts.iter().take(ALERTS_SHOWN) {
            out += &format!("  {a}\n");
        }
        if result.alerts.len() > ALERTS_SHOWN {
            out += &format!(
                "  … and {} more in {}\n",
                result.alerts.len() - ALERTS_SHOWN,
                written.first().map_or("result.json", String::as_str)
            );
        }
    }
    out += &format!("written: {}\n", written.join(", "));
    out
}
