//! `concord bank …`: read bank statement files, and import them.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::{Value, json};

use crate::bank::{self, BalanceCheck, CsvProfile, Format, Statement};
use crate::model::{CanonicalId, Entity, EntityKind, SystemName};
use crate::settings::Settings;
use crate::store::{Batch, LinkWrite, NewAlert, Provenance, RecordWrite, Severity};

#[derive(Debug, Subcommand)]
pub enum BankCommand {
    /// Parse a statement file and print its transactions and balance checks.
    Parse(ParseArgs),
    /// Parse a statement file and store its transactions as canonical bank
    /// transactions. Lines already imported (from this file or any other
    /// that carried them) are skipped; a statement whose balances do not add
    /// up is imported and raises an alert.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// The statement file.
    file: PathBuf,
    /// The format: auto (detected from the content), camt053, camt054,
    /// camt052, mt940, mt942, bai2, ofx, or csv:PROFILE.
    #[arg(long, short = 'f', default_value = "auto")]
    format: String,
    /// Folder of CSV profiles (*.toml).
    #[arg(long, default_value = "config/bank-profiles")]
    profiles: PathBuf,
}

#[derive(Debug, Args)]
pub struct ParseArgs {
    #[command(flatten)]
    file: FileArgs,
    /// How to print the result.
    #[arg(long, short = 'o', value_enum, default_value_t = ParseOutput::Table)]
    output: ParseOutput,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    file: FileArgs,
    /// The system the account belongs to, as links record it.
    #[arg(long, default_value = "bank")]
    system: String,
}

impl ImportArgs {
    /// Import of `file` (format detected) into `system`, as the demo does it.
    pub(super) fn of(file: PathBuf, system: &str) -> Self {
        ImportArgs {
            file: FileArgs {
                file,
                format: "auto".into(),
                profiles: PathBuf::from("config/bank-profiles"),
            },
            system: system.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ParseOutput {
    Table,
    Json,
    Ndjson,
}

pub async fn run(command: BankCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        BankCommand::Parse(args) => parse(args),
        BankCommand::Import(args) => import(args, settings).await,
    }
}

pub(super) fn load_profiles(dir: &Path) -> anyhow::Result<Vec<CsvProfile>> {
    let mut profiles = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(profiles);
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read CSV profile {}", path.display()))?;
        let profile: CsvProfile = toml::from_str(&text)
            .with_context(|| format!("invalid CSV profile {}", path.display()))?;
        profiles.push(profile);
    }
    Ok(profiles)
}

/// Reads and parses the file named in `args`.
fn read_statements(args: &FileArgs) -> anyhow::Result<Vec<Statement>> {
    let mut file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size > bank::MAX_WHOLE_FILE as u64 {
        bail!(
            "{} is {size} bytes; this command reads files of up to {} bytes whole (split the file, or wait for the streaming bank connector)",
            args.file.display(),
            bank::MAX_WHOLE_FILE
        );
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let profiles = load_profiles(&args.profiles)?;
    let format = match args.format.as_str() {
        "auto" => match bank::detect(&bytes) {
            Some(f) => f,
            None => match bank::csv::detect_profile(&bytes, &profiles) {
                Some(p) => Format::Csv(p.name.clone()),
                None => bail!(
                    "{}: not a camt, MT940/942, BAI2 or OFX file, and no CSV profile in {} matches its header; name the format with --format",
                    args.file.display(),
                    args.profiles.display()
                ),
            },
        },
        other => parse_format(other)?,
    };
    let result = match &format {
        Format::Csv(name) => {
            let Some(profile) = profiles.iter().find(|p| &p.name == name) else {
                let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
                bail!(
                    "no CSV profile {name:?} in {}; found: {names:?}",
                    args.profiles.display()
                );
            };
            bank::csv::parse_csv(&bytes, profile)
        }
        f => bank::parse(&bytes, f.clone()),
    };
    result.with_context(|| format!("cannot read {} as {format}", args.file.display()))
}

pub(super) fn parse_format(name: &str) -> anyhow::Result<Format> {
    Ok(match name {
        "camt053" => Format::Camt053,
        "camt054" => Format::Camt054,
        "camt052" => Format::Camt052,
        "mt940" => Format::Mt940,
        "mt942" => Format::Mt942,
        "bai2" => Format::Bai2,
        "ofx" => Format::Ofx,
        other => match other.strip_prefix("csv:") {
            Some(profile) if !profile.is_empty() => Format::Csv(profile.to_owned()),
            _ => bail!(
                "unknown format {other:?}: use auto, camt053, camt054, camt052, mt940, mt942, bai2, ofx or csv:PROFILE"
            ),
        },
    })
}

fn check_json(check: &Option<BalanceCheck>) -> Value {
    match check {
        None => Value::Null,
        Some(c) => json!({
            "ok": c.is_ok(),
            "currency": c.currency.as_str(),
            "opening": c.opening.to_string(),
            "sum": c.sum.to_string(),
            "expected_closing": c.expected_closing.to_string(),
            "actual_closing": c.actual_closing.to_string(),
            "difference": c.difference.to_string(),
            "lines_counted": c.counted,
            "lines_skipped": c.skipped,
            "note": c.note,
        }),
    }
}

fn statement_json(st: &Statement) -> Value {
    json!({
        "format": st.format.to_string(),
        "id": st.id,
        "account": st.account,
        "servicer": st.servicer,
        "currency": st.currency.map(|c| c.as_str().to_owned()),
        "sequence": st.sequence,
        "fingerprint": bank::statement_fingerprint(st),
        "balances": st.balances.iter().map(|b| json!({
            "kind": b.kind, "date": b.date.to_string(), "amount": b.amount,
        })).collect::<Vec<_>>(),
        "balance_check": check_json(&bank::balance_check(st)),
        "warnings": st.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "transactions": st.transactions.iter()
            .map(|t| Entity::from(t.clone()).to_value())
            .collect::<Vec<_>>(),
    })
}

fn parse(args: ParseArgs) -> anyhow::Result<()> {
    let statements = read_statements(&args.file)?;
    let text = match args.output {
        ParseOutput::Json => {
            let all: Vec<Value> = statements.iter().map(statement_json).collect();
            serde_json::to_string_pretty(&all)? + "\n"
        }
        ParseOutput::Ndjson => {
            let mut out = String::new();
            for st in &statements {
                for t in &st.transactions {
                    out += &Entity::from(t.clone()).to_value().to_string();
                    out.push('\n');
                }
            }
            out
        }
        ParseOutput::Table => {
            let mut out = String::new();
            for (i, st) in statements.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                out += &format!(
                    "{} statement {} of account {}{}: {} line(s)\n",
                    st.format,
                    st.id.as_deref().unwrap_or("(no id)"),
                    st.account,
                    st.sequence
                        .as_deref()
                        .map(|s| format!(", sequence {s}"))
                        .unwrap_or_default(),
                    st.transactions.len()
                );
                out += &bank::check_line(&bank::balance_check(st));
                out.push('\n');
                for w in &st.warnings {
                    out += &format!("warning: {w}\n");
                }
                if !st.transactions.is_empty() {
                    let mut t = Table::new();
                    t.load_preset(UTF8_BORDERS_ONLY).set_header(vec![
                        "booked",
                        "amount",
                        "ccy",
                        "counterparty",
                        "reference",
                        "remittance",
                    ]);
                    for tx in &st.transactions {
                        t.add_row(vec![
                            tx.booking_date.to_string(),
                            tx.amount.to_string(),
                            tx.currency.to_string(),
                            tx.counterparty_name.clone().unwrap_or_default(),
                            tx.end_to_end_id
                                .clone()
                                .or_else(|| tx.bank_reference.clone())
                                .unwrap_or_default(),
                            crate::mapping::ops::cut(
                                tx.remittance_info.as_deref().unwrap_or(""),
                                48,
                            ),
                        ]);
                    }
                    out += &format!("{t}\n");
                }
            }
            if statements.is_empty() {
                out += "no statements in the file\n";
            }
            out
        }
    };
    super::print(&text)
}

/// Lines stored per transaction.
const IMPORT_BATCH: usize = 1000;

async fn import(args: ImportArgs, settings: &Settings) -> anyhow::Result<()> {
    let system = SystemName::parse(&args.system)?;
    let statements = read_statements(&args.file)?;
    let store = super::open_store(settings).await?;
    let mut out = String::new();
    let (mut imported, mut known, mut alerts, mut empty) = (0usize, 0usize, 0usize, 0usize);
    for st in &statements {
        let keys = bank::line_keys(st);
        let mut existing = std::collections::HashSet::new();
        for link in store
            .find_links(EntityKind::BankTransaction, system.as_str(), &keys)
            .await?
        {
            existing.insert(link.external_id);
        }
        let fingerprint = bank::statement_fingerprint(st);
        let new: Vec<(&String, &crate::model::BankTransaction)> = keys
            .iter()
            .zip(&st.transactions)
            .filter(|(k, _)| !existing.contains(*k))
            .collect();
        known += st.transactions.len() - new.len();
        let check = bank::balance_check(st);
        let mut pending_alert = match &check {
            Some(c) if !c.is_ok() && !new.is_empty() => Some(NewAlert {
                rule: "statement_balance_mismatch".into(),
                severity: Severity::Warning,
                entity: Some(EntityKind::BankTransaction),
                record_ids: vec![fingerprint.clone()],
                reason: format!(
                    "{} statement {} of account {} from {}: {}",
                    st.format,
                    st.id.as_deref().unwrap_or("(no id)"),
                    st.account,
                    args.file.file.display(),
                    bank::check_line(&check)
                ),
                amount: crate::model::Money::new(c.difference, c.currency).ok(),
                cause: Some(fingerprint.clone()),
            }),
            _ => None,
        };
        for chunk in new.chunks(IMPORT_BATCH) {
            let mut batch = Batch::default();
            for (key, tx) in chunk {
                let id = CanonicalId::new();
                let entity = Entity::from((*tx).clone());
                let provenance = Provenance {
                    event_id: Some(fingerprint.clone()),
                    mapping_version: Some(format!("bank:{}", st.format)),
                    ..Provenance::pull(system.as_str())
                };
                batch
                    .records
                    .push(RecordWrite::of(&entity, id.clone(), 0, provenance));
                batch.links.push(LinkWrite {
                    entity: EntityKind::BankTransaction,
                    system: system.to_string(),
                    external_id: (*key).clone(),
                    canonical_id: id,
                    synced_version: Some(1),
                    synced_data: None,
                    synced_hash: None,
                    remote_updated_at: None,
                    source_hash: None,
                });
            }
            // The alert commits with the statement's first new lines.
            batch.alerts.extend(pending_alert.take());
            store.commit(&batch).await?;
            imported += chunk.len();
        }
        if st.transactions.is_empty() {
            empty += 1;
        } else if new.is_empty() {
            out += &format!(
                "statement {} of account {}: all {} line(s) were already imported\n",
                st.id.as_deref().unwrap_or("(no id)"),
                st.account,
                st.transactions.len()
            );
        } else {
            out += &format!(
                "statement {} of account {}: {} new line(s), {} already imported; {}\n",
                st.id.as_deref().unwrap_or("(no id)"),
                st.account,
                new.len(),
                st.transactions.len() - new.len(),
                bank::check_line(&check)
            );
            if check.as_ref().is_some_and(|c| !c.is_ok()) {
                alerts += 1;
            }
        }
    }
    if imported > 0
        && let Some(q) = crate::quality::run_after(&store, settings, "bank import").await
    {
        out += &format!(
            "data quality: {} new alert(s) (concord alerts list)\n",
            q.raised.len()
        );
    }
    store.close().await;
    if empty > 0 {
        out += &format!("{empty} statement(s) without lines\n");
    }
    out += &format!(
        "{}: {imported} transaction(s) imported, {known} already known, {alerts} balance alert(s) raised\n",
        args.file.file.display()
    );
    super::print(&out)?;
    Ok(())
}
