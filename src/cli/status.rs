//! `concord status`

use clap::Args;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use super::OutputFormat;
use crate::settings::Settings;
use crate::store::StatusReport;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How to print the report.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: OutputFormat,
}

pub async fn run(args: StatusArgs, settings: &Settings) -> anyhow::Result<()> {
    let store = super::open_store(settings).await?;
    let report = store.status().await?;
    store.close().await;
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        OutputFormat::Table => render(&report),
    };
    super::print(&text)
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(header.to_vec());
    table
}

/// The report as sections of aligned tables.
pub fn render(report: &StatusReport) -> String {
    let mut out = format!(
        "store    {} ({}), schema {} of {}\n",
        report.target, report.backend, report.schema_applied, report.schema_known
    );
    out += &format!(
        "open     {} conflict(s), {} alert(s), {} quarantined record(s)\n",
        report.open_conflicts, report.open_alerts, report.open_quarantine
    );

    out += "\nRecords\n";
    if report.records.is_empty() {
        out += "  none yet\n";
    } else {
        let mut t = table(&["entity", "records", "linked systems"]);
        for r in &report.records {
            let systems: Vec<String> = report
                .links
                .iter()
                .filter(|l| l.entity == r.entity)
                .map(|l| format!("{} {}", l.system, l.count))
                .collect();
            t.add_row(vec![
                r.entity.clone(),
                r.count.to_string(),
                systems.join(", "),
            ]);
        }
        out += &format!("{t}\n");
    }

    out += "\nCursors\n";
    if report.cursors.is_empty() {
        out += "  none yet\n";
    } else {
        let mut t = table(&["system", "entity", "cursor", "saved at"]);
        for c in &report.cursors {
            t.add_row(vec![
                c.system.clone(),
                c.entity.clone(),
                c.cursor.clone(),
                c.updated_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            ]);
        }
        out += &format!("{t}\n");
    }

    out += "\nQueues\n";
    let mut t = table(&["queue", "status", "entries"]);
    let mut any = false;
    for (name, counts) in [("outbox", &report.outbox), ("inbox", &report.inbox)] {
        for c in counts {
            any = true;
            t.add_row(vec![name.to_owned(), c.status.clone(), c.count.to_string()]);
        }
    }
    if any {
        out += &format!("{t}\n");
    } else {
        out += "  empty\n";
    }
    out
}
