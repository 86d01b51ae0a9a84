//! `concord queue …`: the work waiting in the store, its dead letters, and
//! putting them back in line.
//!
//! Queues: `inbox` (webhook events; the daemon's queue with `[queue] kind =
//! "store"`) and the named work queues of the store's `work_queue` tables.
//! With `kind = "amqp"` the daemon's events wait in the broker instead, and
//! its dead letters are in the broker queue `NAME.dead`.

use anyhow::bail;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::json;

use super::OutputFormat;
use crate::queue::QueueKind;
use crate::settings::Settings;
use crate::store::{DeadItem, Store};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Each queue in the store: ready, delayed, leased, dead; and the
    /// done-markers kept.
    List(ListArgs),
    /// Dead letters, oldest first, with why they were given up on.
    Dead(DeadArgs),
    /// Put dead letters back in line, with fresh attempts; the daemon's
    /// workers take them up.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DeadArgs {
    /// Only this queue: `inbox` or a work queue's name.
    #[arg(long, short = 'q')]
    queue: Option<String>,
    /// At most this many per kind of queue.
    #[arg(long, default_value_t = 200)]
    limit: u32,
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["ids", "all"]))]
pub struct ReplayArgs {
    /// The queue: `inbox` or a work queue's name (as `concord queue dead`
    /// shows).
    #[arg(long, short = 'q', required = true)]
    queue: String,
    /// Dead letter ids (as `concord queue dead` shows).
    ids: Vec<i64>,
    /// Every dead letter of the queue.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
}

pub async fn run(command: QueueCommand, settings: &Settings) -> anyhow::Result<()> {
    let store = super::open_store(settings).await?;
    let result = match command {
        QueueCommand::List(args) => list(&store, settings, args).await,
        QueueCommand::Dead(args) => dead(&store, settings, args).await,
        QueueCommand::Replay(args) => replay(&store, args).await,
    };
    store.close().await;
    result
}

/// Where the daemon's events are when they are not in the store.
fn broker_note(settings: &Settings) -> Option<String> {
    (settings.queue.kind == QueueKind::Amqp).then(|| {
        format!(
            "queue.kind = \"amqp\": the daemon's webhook events wait in the broker queue `{0}` and its dead letters are in `{0}.dead` (not shown here)\n",
            settings.queue.name
        )
    })
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

async fn list(store: &Store, settings: &Settings, args: ListArgs) -> anyhow::Result<()> {
    let queues = store.queue_counts().await?;
    let done = store.work_done_markers().await?;
    let keep = settings.queue.keep_done_days;
    let text = match args.output {
        OutputFormat::Json => {
            serde_json::to_string_pretty(&json!({
                "queues": queues,
                "done_markers": {
                    "count": done.count,
                    "oldest_at": done.oldest_at,
                    "keep_days": keep,
                },
                "kind": settings.queue.kind,
            }))? + "\n"
        }
        OutputFormat::Table => {
            let mut t = Table::new();
            t.load_preset(UTF8_BORDERS_ONLY).set_header(vec![
                "queue",
                "ready",
                "delayed",
                "leased",
                "dead",
                "processed",
                "oldest waiting since",
            ]);
            for q in &queues {
                t.add_row(vec![
                    q.queue.clone(),
                    q.ready.to_string(),
                    q.delayed.to_string(),
                    q.leased.to_string(),
                    q.dead.to_string(),
                    q.processed.map(|n| n.to_string()).unwrap_or_default(),
                    when(q.oldest_at),
                ]);
            }
            let mut out = format!("{t}\n");
            out += &format!(
                "done-markers: {}{} ({})\n",
                done.count,
                done.oldest_at
                    .map(|t| format!(", oldest {}", when(Some(t))))
                    .unwrap_or_default(),
                if keep == 0 {
                    "kept forever: queue.keep_done_days = 0".to_owned()
                } else {
                    format!("the daemon deletes those older than {keep} day(s)")
                }
            );
            out += &broker_note(settings).unwrap_or_default();
            out
        }
    };
    super::print(&text)
}

fn dead_table(items: &[DeadItem]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(vec![
        "queue",
        "id",
        "work",
        "kind",
        "attempts",
        "received",
        "dead since",
        "reason",
    ]);
    for d in items {
        t.add_row(vec![
            d.queue.clone(),
            d.id.to_string(),
            crate::mapping::ops::cut(&d.work_id, 60),
            d.kind.clone(),
            d.attempts.to_string(),
            when(d.received_at),
            when(d.dead_at),
            crate::mapping::ops::cut(&d.reason, 100),
        ]);
    }
    format!("{t}\n")
}

async fn dead(store: &Store, settings: &Settings, args: DeadArgs) -> anyhow::Result<()> {
    let items = store.dead_items(args.queue.as_deref(), args.limit).await?;
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&items)? + "\n",
        OutputFormat::Table => {
            let mut out = if items.is_empty() {
                "no dead letters\n".to_owned()
            } else {
                dead_table(&items)
                    + "put them back in line: concord queue replay --queue QUEUE ID… (or --all)\n"
            };
            out += &broker_note(settings).unwrap_or_default();
            out
        }
    };
    super::print(&text)
}

async fn replay(store: &Store, args: ReplayArgs) -> anyhow::Result<()> {
    let wanted = (!args.all).then_some(args.ids.as_slice());
    let requeued = store.requeue_dead(&args.queue, wanted).await?;
    let mut out = format!(
        "{} dead letter(s) of {} back in line with fresh attempts",
        requeued.len(),
        args.queue
    );
    if !requeued.is_empty() && !args.all {
        out += &format!(": {}", join(&requeued));
    }
    out += "\n";
    super::print(&out)?;
    if let Some(ids) = wanted {
        let unknown: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !requeued.contains(id))
            .collect();
        if !unknown.is_empty() {
            bail!(
                "no dead letter with id {} in {}",
                join(&unknown),
                args.queue
            );
        }
    }
    Ok(())
}

fn join(ids: &[i64]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
