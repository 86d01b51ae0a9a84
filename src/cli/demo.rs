//! `concord demo`: the quickstart. Prepares a CRM export and an ERP
//! database under `data/demo/` from `config/demo/seed/`, then runs every job
//! of `config/demo.toml` — on the embedded SQLite store, no servers.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use sqlx::Connection;

use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Start over: delete data/demo/ and prepare it again.
    #[arg(long)]
    reset: bool,
    /// Where the seed data is.
    #[arg(long, default_value = "config/demo/seed", value_name = "DIR")]
    seed: PathBuf,
    /// Where the demo's systems and store live.
    #[arg(long, default_value = "data/demo", value_name = "DIR")]
    data: PathBuf,
}

pub async fn run(args: DemoArgs, settings: &Settings) -> anyhow::Result<()> {
    if args.reset && args.data.exists() {
        std::fs::remove_dir_all(&args.data)
            .with_context(|| format!("cannot remove {}", args.data.display()))?;
    }
    let fresh = !args.data.join("erp.db").exists();
    if fresh {
        prepare(&args.seed, &args.data).await?;
        super::print(&format!(
            "Prepared the demo systems in {}: a CRM export (crm/companies.json) and an ERP database (erp.db).\n\n",
            args.data.display()
        ))?;
    }
    super::sync::run(
        super::sync::SyncCommand::Run(super::sync::RunArgs::all()),
        settings,
    )
    .await?;
    super::demo_reconcile::run(&args.seed, &args.data, settings).await?;
    let c = "concord --config config/demo.toml";
    super::print(&format!(
        "\nNext:
  {c} conflicts list            what waits for a decision
  {c} conflicts show 1          both sides of it
  {c} conflicts resolve 1 --take theirs --note \"the ERP has the new number\"
  {c} sync run --all            run again: the decision reaches both systems, then nothing moves
  {c} status                    records, links, queues, quarantine
  {c} show customer crm_main:C-1001    one customer and its links
  {c} history customer crm_main:C-1001 every version, who and why
  {c} reconcile list            suggested matches of bank receipts to invoices
  {c} reconcile list --status all   every allocation, with its reasons
  {c} reconcile confirm ID      accept a suggestion (the payer is learnt for next time)
  {c} reconcile reject ID       refuse it; it is not proposed again
  {c} reconcile run             match again: decisions stay, nothing else moves
The CRM's import folder is {data}/crm/import/; the ERP is {data}/erp.db (sqlite3 {data}/erp.db 'select * from customer').
`concord demo --reset` starts over.\n",
        data = args.data.display()
    ))
}

/// Copies the CRM export and builds the ERP database from its SQL script.
async fn prepare(seed: &Path, data: &Path) -> anyhow::Result<()> {
    let crm = data.join("crm");
    std::fs::create_dir_all(crm.join("import"))
        .with_context(|| format!("cannot create {}", crm.display()))?;
    let export = seed.join("crm-companies.json");
    std::fs::copy(&export, crm.join("companies.json"))
        .with_context(|| format!("cannot copy {}", export.display()))?;
    let script_path = seed.join("erp.sql");
    let script = std::fs::read_to_string(&script_path)
        .with_context(|| format!("cannot read {}", script_path.display()))?;
    let db = data.join("erp.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("cannot create {}", db.display()))?;
    // The demo's own seed script, shipped with concord: no outside input.
    sqlx::raw_sql(sqlx::AssertSqlSafe(script.as_str()))
        .execute(&mut conn)
        .await
        .with_context(|| format!("cannot run {}", script_path.display()))?;
    conn.close().await.ok();
    Ok(())
}
