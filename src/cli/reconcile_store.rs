//! `concord reconcile run|list|confirm|reject|undo`: reconciliation over the
//! bank transactions and invoices in the store.

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use super::OutputFormat;
use crate::reconcile::push;
use crate::reconcile::stored::{self, RunOptions};
use crate::settings::Settings;
use crate::store::{AllocationStatus, StoredAllocation};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Match the credit bank transactions in the store to its open invoices
    /// and keep the result as allocations. Decisions people made are kept;
    /// running again over the same data changes nothing.
    Run(RunArgs),
    /// Allocations, suggestions first.
    List(ListArgs),
    /// Accept an allocation; the payer's account and name are learnt for
    /// the invoice's customer.
    Confirm(DecideArgs),
    /// Refuse an allocation; it is never proposed again.
    Reject(DecideArgs),
    /// Take a decision back (confirmed or rejected → suggested), or undo an
    /// automatic match or a manual allocation. A payment already pushed
    /// to the ERP must be reversed there first (see --payment-reversed).
    Undo(UndoArgs),
    /// Allocate a receipt to an invoice by hand. Never more than the
    /// receipt has left nor more than the invoice is still open for; the
    /// currencies must be the same.
    Allocate(Box<super::reconcile_push::AllocateArgs>),
    /// Deliver the payments of confirmed and manual allocations to the ERP
    /// named in [reconcile.push].
    Push(super::reconcile_push::PushArgs),
    /// The payments written for allocations, and where their delivery
    /// stands.
    Payments(super::reconcile_push::PaymentsArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Only transactions booked on or after this day (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    since: Option<NaiveDate>,
    /// Who runs it, for the history (default: the OS user).
    #[arg(long)]
    actor: Option<String>,
    /// How to print the result.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Suggested,
    Auto,
    Confirmed,
    Rejected,
    Manual,
    Undone,
    All,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Which allocations.
    #[arg(long, value_enum, default_value_t = Which::Suggested)]
    status: Which,
    /// How to print them.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// Allocation id (from `concord reconcile list`).
    id: i64,
    /// Who decides, for the history (default: the OS user).
    #[arg(long)]
    actor: Option<String>,
    /// Why.
    #[arg(long)]
    note: Option<String>,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    #[command(flatten)]
    decide: DecideArgs,
    /// The allocation's payment reached the ERP (or may have), and you
    /// reversed it there (or made sure it is not there): undo the
    /// allocation anyway and mark its payment reversed.
    #[arg(long)]
    payment_reversed: bool,
}

/// The OS user, as the default actor.
pub(super) fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

pub async fn run(command: StoreCommand, settings: &Settings) -> anyhow::Result<()> {
    let store = super::open_store(settings).await?;
    let result = match command {
        StoreCommand::Run(args) => run_once(&store, args, settings).await,
        StoreCommand::List(args) => list(&store, args).await,
        StoreCommand::Confirm(args) => decide(&store, settings, args, "confirmed", false).await,
        StoreCommand::Reject(args) => decide(&store, settings, args, "rejected", false).await,
        StoreCommand::Undo(args) => {
            decide(
                &store,
                settings,
                args.decide,
                "undone",
                args.payment_reversed,
            )
            .await
        }
        StoreCommand::Allocate(args) => {
            super::reconcile_push::allocate(&store, settings, *args).await
        }
        StoreCommand::Push(args) => {
            super::reconcile_push::push(store.clone(), settings, args).await
        }
        StoreCommand::Payments(args) => super::reconcile_push::payments(&store, args).await,
    };
    store.close().await;
    result
}

async fn run_once(
    store: &crate::store::Store,
    args: RunArgs,
    settings: &Settings,
) -> anyhow::Result<()> {
    let config = settings.reconcile.config();
    super::reconcile::check_thresholds(&config)?;
    let opts = RunOptions {
        since: args.since,
        actor: args.actor.unwrap_or_else(os_user),
        config,
    };
    let report = stored::run(store, &opts).await?;
    // Unmatched-receipt and payment rules see this run's matches.
    crate::quality::run_after(store, settings, "reconcile run").await;
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        OutputFormat::Table => {
            let mut out = format!(
                "{} credit transaction(s) against {} open invoice(s): {} matched automatically, {} suggested, {} left open",
                report.receipts, report.invoices, report.auto, report.suggested, report.open
            );
            if report.decided > 0 {
                out += &format!("; {} already decided by people", report.decided);
            }
            out += &format!(
                "\nallocations: {} written, {} replaced, {} unchanged from earlier runs",
                report.written, report.retired, report.kept
            );
            if report.rejected_before > 0 {
                out += &format!(
                    "; {} proposal(s) dropped because they were rejected before",
                    report.rejected_before
                );
            }
            out += &format!("\n{} new alert(s) raised\n", report.alerts_raised);
            for p in &report.problems {
                out += &format!("problem: {p}\n");
            }
            out
        }
    };
    super::print(&text)
}

fn status_filter(w: Which) -> Vec<AllocationStatus> {
    match w {
        Which::Suggested => vec![AllocationStatus::Suggested],
        Which::Auto => vec![AllocationStatus::Auto],
        Which::Confirmed => vec![AllocationStatus::Confirmed],
        Which::Rejected => vec![AllocationStatus::Rejected],
        Which::Manual => vec![AllocationStatus::Manual],
        Which::Undone => vec![AllocationStatus::Undone],
        Which::All => vec![],
    }
}

fn table(allocations: &[StoredAllocation]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(vec![
        "id",
        "status",
        "confidence",
        "transaction",
        "invoice",
        "amount",
        "stage",
        "why",
    ]);
    for a in allocations {
        let al = &a.allocation;
        t.add_row(vec![
            a.id.to_string(),
            al.status.to_string(),
            format!("{:.2}", al.confidence),
            al.transaction_id.clone(),
            al.invoice_number.clone(),
            crate::reconcile::file::amount_text(al.amount, al.currency)
                + " "
                + al.currency.as_str(),
            al.stage.clone().unwrap_or_default(),
            crate::mapping::ops::cut(&al.reasons.join("; "), 80),
        ]);
    }
    format!("{t}\n")
}

async fn list(store: &crate::store::Store, args: ListArgs) -> anyhow::Result<()> {
    let all = store.allocations(&status_filter(args.status)).await?;
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&all)? + "\n",
        OutputFormat::Table if all.is_empty() => "no allocations\n".to_owned(),
        OutputFormat::Table => table(&all),
    };
    super::print(&text)
}

async fn decide(
    store: &crate::store::Store,
    settings: &Settings,
    args: DecideArgs,
    what: &str,
    payment_reversed: bool,
) -> anyhow::Result<()> {
    let actor = args.actor.unwrap_or_else(os_user);
    let note = args.note.as_deref();
    let push = settings.reconcile.push.as_ref();
    let done = match what {
        "confirmed" => push::confirm(store, push, args.id, &actor, note).await,
        "rejected" => stored::reject(store, args.id, &actor, note)
            .await
            .map(|allocation| push::Decided {
                allocation,
                with: Vec::new(),
                payments: Vec::new(),
            }),
        _ => push::undo(store, args.id, &actor, note, payment_reversed).await,
    }
    .with_context(|| format!("allocation {} not changed", args.id))?;
    let mut out = String::new();
    for d in std::iter::once(&done.allocation).chain(&done.with) {
        let al = &d.allocation;
        out += &format!(
            "allocation {}: {} {} of transaction {} to invoice {} is now {} (by {actor})\n",
            d.id,
            crate::reconcile::file::amount_text(al.amount, al.currency),
            al.currency,
            al.transaction_id,
            al.invoice_number,
            al.status
        );
    }
    out += &super::reconcile_push::payment_lines(&done.payments);
    super::print(&out)
}
