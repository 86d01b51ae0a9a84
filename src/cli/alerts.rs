//! `concord alerts …`: list, acknowledge and check data-quality alerts.

use std::str::FromStr;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::json;

use super::OutputFormat;
use crate::settings::Settings;
use crate::store::{AlertFilter, AlertRecord, Severity};

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Alerts in the store, newest first.
    List(ListArgs),
    /// Acknowledge alerts: someone has seen them and takes care.
    Ack(AckArgs),
    /// Run the data-quality rules over the store now; print what was
    /// raised and resolved, and the consistency rate.
    Check(CheckArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StatusFilter {
    Open,
    Acked,
    Resolved,
    All,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this rule (e.g. overdue_receivable).
    #[arg(long)]
    rule: Option<String>,
    /// Only this severity: info, warning or critical.
    #[arg(long, value_parser = parse_severity)]
    severity: Option<Severity>,
    /// Which alerts by status.
    #[arg(long, value_enum, default_value_t = StatusFilter::Open)]
    status: StatusFilter,
    /// At most this many.
    #[arg(long, default_value_t = 200)]
    limit: u32,
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct AckArgs {
    /// Alert ids.
    #[arg(required = true)]
    ids: Vec<i64>,
    /// Why, or what is being done.
    #[arg(long)]
    note: Option<String>,
    /// Who acknowledges (default: the OS user).
    #[arg(long)]
    actor: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::from_str(s)
}

pub async fn run(command: AlertsCommand, settings: &Settings) -> anyhow::Result<()> {
    let store = super::open_store(settings).await?;
    let result = match command {
        AlertsCommand::List(args) => list(&store, args).await,
        AlertsCommand::Ack(args) => ack(&store, args).await,
        AlertsCommand::Check(args) => check(&store, settings, args).await,
    };
    store.close().await;
    result
}

fn table(alerts: &[AlertRecord]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(vec![
        "id", "severity", "rule", "status", "amount", "created", "reason",
    ]);
    for a in alerts {
        t.add_row(vec![
            a.id.to_string(),
            a.alert.severity.as_str().to_owned(),
            a.alert.rule.clone(),
            match &a.acked_by {
                Some(by) if a.status == "acked" => format!("acked by {by}"),
                _ => a.status.clone(),
            },
            a.alert.amount.map(|m| m.to_string()).unwrap_or_default(),
            a.created_at.format("%Y-%m-%d %H:%M").to_string(),
            crate::mapping::ops::cut(&a.alert.reason, 100),
        ]);
    }
    format!("{t}\n")
}

async fn list(store: &crate::store::Store, args: ListArgs) -> anyhow::Result<()> {
    let filter = AlertFilter {
        rule: args.rule,
        severity: args.severity,
        status: match args.status {
            StatusFilter::Open => Some("open".into()),
            StatusFilter::Acked => Some("acked".into()),
            StatusFilter::Resolved => Some("resolved".into()),
            StatusFilter::All => None,
        },
        limit: Some(args.limit),
    };
    let alerts = store.alerts(&filter).await?;
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&alerts)? + "\n",
        OutputFormat::Table if alerts.is_empty() => "no alerts\n".to_owned(),
        OutputFormat::Table => table(&alerts),
    };
    super::print(&text)
}

async fn ack(store: &crate::store::Store, args: AckArgs) -> anyhow::Result<()> {
    let actor = args.actor.unwrap_or_else(super::sync::os_user);
    let outcome = store
        .ack_alerts(&args.ids, &actor, args.note.as_deref())
        .await?;
    let mut out = String::new();
    if !outcome.acked.is_empty() {
        out += &format!(
            "acknowledged {} alert(s) as {actor}: {}\n",
            outcome.acked.len(),
            join(&outcome.acked)
        );
    }
    if !outcome.not_open.is_empty() {
        out += &format!(
            "not open (already acknowledged or resolved), left as they were: {}\n",
            join(&outcome.not_open)
        );
    }
    super::print(&out)?;
    if !outcome.unknown.is_empty() {
        bail!("no alert with id {}", join(&outcome.unknown));
    }
    Ok(())
}

fn join(ids: &[i64]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn check(
    store: &crate::store::Store,
    settings: &Settings,
    args: CheckArgs,
) -> anyhow::Result<()> {
    let report = crate::quality::evaluate(store, settings).await?;
    let text = match args.output {
        OutputFormat::Json => {
            serde_json::to_string_pretty(&json!({
                "rules": report.rules,
                "raised": report.raised,
                "holding": report.holding,
                "resolved": report.resolved,
                "consistency": {
                    "compared": report.consistency.compared,
                    "agreeing": report.consistency.agreeing,
                    "rate": report.consistency_rate,
                },
                "sinks": report.sinks,
            }))? + "\n"
        }
        OutputFormat::Table => {
            let mut out = String::new();
            if report.raised.is_empty() {
                out += "no new alerts\n";
            } else {
                out += &table(&report.raised);
            }
            out += &format!(
                "{} rule(s) ran: {} alert(s) raised now, {} cause(s) holding, {} resolved\n",
                report.rules.len(),
                report.raised.len(),
                report.holding,
                report.resolved
            );
            out += &match report.consistency_rate {
                Some(rate) => format!(
                    "consistency rate: {:.1}% ({} of {} records linked in two or more systems agree)\n",
                    rate * 100.0,
                    report.consistency.agreeing,
                    report.consistency.compared
                ),
                None => "consistency rate: n/a (no record is linked in two systems)\n".to_owned(),
            };
            for e in &report.sinks.errors {
                out += &format!("sink failed (alerts stay pending, retried next run): {e}\n");
            }
            out
        }
    };
    super::print(&text)
}
