//! `concord sync`, `conflicts`, `replay`, `history` and `show`: running
//! jobs and the operator's work on what they leave behind.

use std::io::IsTerminal;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::Value;

use super::OutputFormat;
use crate::model::{CanonicalId, EntityKind};
use crate::settings::Settings;
use crate::store::Store;
use crate::sync::engine::Choice;
use crate::sync::{Engine, JobReport, RunOptions};

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Run jobs once: read what is new at each source, merge it, deliver
    /// the changes to the targets.
    Run(RunArgs),
    /// List the configured jobs.
    Jobs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Jobs to run, in order.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    jobs: Vec<String>,
    /// Run every configured job, in configuration order.
    #[arg(long)]
    all: bool,
    /// Read each source from the beginning instead of its saved cursor.
    #[arg(long)]
    full: bool,
    /// Show what would change, per record and field; write nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: OutputFormat,
}

impl RunArgs {
    /// Every job, once, printed as a table.
    pub fn all() -> RunArgs {
        RunArgs {
            jobs: Vec::new(),
            all: true,
            full: false,
            dry_run: false,
            output: OutputFormat::Table,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConflictsCommand {
    /// Open conflicts (all with --all).
    List {
        #[arg(long)]
        entity: Option<EntityKind>,
        #[arg(long)]
        all: bool,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// One conflict: base, ours and theirs side by side.
    Show {
        id: i64,
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Decide a conflict. The decision becomes a new version by you, and
    /// goes to every system that receives the entity.
    Resolve {
        id: i64,
        /// `theirs` (the incoming system's value; for identity conflicts a
        /// new record), `ours` (keep the canonical value), the name of the
        /// system whose value to take, or, for identity conflicts, the
        /// canonical id of the candidate the record is.
        #[arg(long, conflicts_with = "value", required_unless_present = "value")]
        take: Option<String>,
        /// The value to set, as JSON (`--value '"ap@acme.example"'`).
        #[arg(long)]
        value: Option<String>,
        /// Why, kept with the decision.
        #[arg(long)]
        note: Option<String>,
        /// Who decides (default: the OS user).
        #[arg(long, env = "CONCORD_ACTOR")]
        actor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReplayCommand {
    /// Put dead-lettered deliveries back in line and deliver them now.
    DeadLetters {
        /// Only deliveries to this system.
        #[arg(long)]
        target: Option<String>,
        /// Only those that became dead letters at or after this RFC 3339
        /// time (`2026-11-01T09:00:00Z`) or date (`2026-11-01`).
        #[arg(long)]
        since: Option<String>,
        /// Only these outbox ids.
        ids: Vec<i64>,
    },
    /// Map quarantined records again with the current mappings (after a
    /// fix) and take in those that pass.
    Quarantine {
        /// Only these quarantine ids (default: every open one).
        ids: Vec<i64>,
    },
    /// Re-read a job's source from a point in time and run the job.
    Job {
        job: String,
        /// RFC 3339 time (`2026-11-01T00:00:00Z`) or date (`2026-11-01`).
        #[arg(long)]
        since: String,
    },
}

pub async fn run(command: SyncCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        SyncCommand::Jobs => {
            let mut t = table(&["job", "source", "targets", "schedule"]);
            for j in &settings.jobs {
                t.add_row(vec![
                    j.name.clone(),
                    format!(
                        "{} {} ({})",
                        j.source.system, j.source.entity, j.source.mapping
                    ),
                    j.targets
                        .iter()
                        .map(|t| format!("{} {}", t.system, t.entity))
                        .collect::<Vec<_>>()
                        .join(", "),
                    j.schedule.clone().unwrap_or_else(|| "on demand".into()),
                ]);
            }
            super::print(&format!("{t}\n"))
        }
        SyncCommand::Run(args) => {
            let engine = engine(settings).await?;
            let names: Vec<String> = if args.all {
                engine.jobs().iter().map(|j| j.name.clone()).collect()
            } else {
                args.jobs.clone()
            };
            if names.is_empty() && !(args.all && settings.reconcile.push.is_some()) {
                bail!("no jobs are configured: add [[jobs]] to the configuration");
            }
            let options = RunOptions {
                full: args.full,
                dry_run: args.dry_run,
                ..RunOptions::default()
            };
            let spinner = progress(names.len());
            let mut reports = Vec::new();
            for name in &names {
                if let Some(s) = &spinner {
                    s.set_message(format!("running {name}"));
                }
                let show = |r: &JobReport| {
                    if let Some(s) = &spinner {
                        s.set_message(format!(
                            "{name}: {} pulled, {} created, {} updated, {} quarantined, {} conflicts, {} pushed",
                            r.pulled, r.created, r.updated, r.quarantined, r.conflicts, r.delivered
                        ));
                    }
                };
                let report = engine.run_job_observed(name, options, &show).await;
                if let Some(s) = &spinner {
                    s.inc(1);
                }
                reports.push(report?);
            }
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            // Payments of decided allocations go with every other delivery.
            if args.all && !args.dry_run && settings.reconcile.push.is_some() {
                let mut report = JobReport {
                    job: crate::sync::engine::PAYMENT_PUSH.into(),
                    ..JobReport::default()
                };
                engine.deliver_payments(&mut report).await?;
                reports.push(report);
            }
            if !args.dry_run {
                crate::quality::run_after(engine.store(), settings, "sync run").await;
            }
            engine.store().close().await;
            print_reports(&reports, args.output, args.dry_run)
        }
    }
}

fn progress(jobs: usize) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(jobs as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} jobs  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(bar)
}

async fn engine(settings: &Settings) -> anyhow::Result<Engine> {
    let store = super::open_store(settings).await?;
    Engine::new(settings.clone(), store)
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    t
}

fn print_reports(reports: &[JobReport], output: OutputFormat, dry_run: bool) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        return super::print(&(serde_json::to_string_pretty(reports)? + "\n"));
    }
    let mut out = String::new();
    if dry_run {
        out += "Dry run: nothing was written.\n\n";
        for r in reports {
            for c in &r.changes {
                out += &format!(
                    "{:<10} {} {}{}\n",
                    c.action,
                    r.job,
                    c.external_id,
                    c.reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
                for f in &c.fields {
                    out += &format!(
                        "             {}: {} → {}\n",
                        f.field,
                        shown(&f.from),
                        shown(&f.to)
                    );
                }
            }
        }
        out += "\n";
    }
    let mut t = table(&[
        "job",
        "pulled",
        "created",
        "updated",
        "unchanged",
        "quarantined",
        "conflicts",
        "delivered",
        "retrying",
        "dead",
        "held",
    ]);
    for r in reports {
        t.add_row(vec![
            r.job.clone(),
            r.pulled.to_string(),
            r.created.to_string(),
            r.updated.to_string(),
            r.unchanged.to_string(),
            r.quarantined.to_string(),
            r.conflicts.to_string(),
            r.delivered.to_string(),
            r.retry_later.to_string(),
            r.dead_lettered.to_string(),
            r.held.to_string(),
        ]);
    }
    out += &format!("{t}\n");
    let quarantined: usize = reports.iter().map(|r| r.quarantined).sum();
    let conflicts: usize = reports.iter().map(|r| r.conflicts).sum();
    let dead: usize = reports.iter().map(|r| r.dead_lettered).sum();
    if !dry_run {
        if quarantined > 0 {
            out += &format!(
                "{quarantined} record(s) quarantined: see `concord status`; after fixing a mapping, `concord replay quarantine`.\n"
            );
        }
        if conflicts > 0 {
            out += &format!(
                "{conflicts} conflict(s) wait for you: `concord conflicts list`, then `concord conflicts resolve ID --take theirs|ours|SYSTEM`.\n"
            );
        }
        if dead > 0 {
            out += &format!(
                "{dead} delivery(ies) dead-lettered: after fixing the target, `concord replay dead-letters`.\n"
            );
        }
    }
    super::print(&out)
}

fn shown(v: &Option<Value>) -> String {
    match v {
        None => "∅".into(),
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
    }
}

pub async fn conflicts(command: ConflictsCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        ConflictsCommand::List {
            entity,
            all,
            output,
        } => {
            let store = super::open_store(settings).await?;
            let list = store.conflicts(entity, all, 10_000).await?;
            store.close().await;
            if output == OutputFormat::Json {
                return super::print(&(serde_json::to_string_pretty(&list)? + "\n"));
            }
            if list.is_empty() {
                return super::print(if all {
                    "No conflicts.\n"
                } else {
                    "No open conflicts.\n"
                });
            }
            let mut t = table(&[
                "id", "entity", "record", "field", "ours", "theirs", "from", "status", "since",
            ]);
            for c in &list {
                t.add_row(vec![
                    c.id.to_string(),
                    c.entity.to_string(),
                    c.canonical_id.to_string(),
                    c.field_path.clone(),
                    cut(&shown(&c.ours)),
                    cut(&shown(&c.theirs)),
                    c.source_system.clone(),
                    c.status.clone(),
                    c.created_at.format("%Y-%m-%d %H:%M").to_string(),
                ]);
            }
            super::print(&format!("{t}\n"))
        }
        ConflictsCommand::Show { id, output } => {
            let store = super::open_store(settings).await?;
            let c = store
                .conflict(id)
                .await?
                .ok_or_else(|| anyhow!("no conflict {id}"))?;
            let links = store.links_of(c.entity, &c.canonical_id).await?;
            store.close().await;
            if output == OutputFormat::Json {
                return super::print(&(serde_json::to_string_pretty(&c)? + "\n"));
            }
            let mut out = format!(
                "conflict {}  {} {}  field {}  ({}, raised {} by {})\n",
                c.id,
                c.entity,
                c.canonical_id,
                c.field_path,
                c.status,
                c.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                c.source_system
            );
            if c.field_path == crate::sync::engine::IDENTITY_FIELD {
                out += &format!(
                    "\nwhich record is it? {}\n",
                    c.base
                        .as_ref()
                        .and_then(|b| b["reason"].as_str())
                        .unwrap_or("")
                );
                out += &format!("  candidates: {}\n", shown(&c.ours));
                out += &format!("  incoming:   {}\n", shown(&c.theirs));
                out += &format!(
                    "\nresolve: concord conflicts resolve {} --take CANDIDATE_ID   (or --take theirs for a new record)\n",
                    c.id
                );
            } else {
                let mut t = table(&["", "value"]);
                t.add_row(vec!["base (last synced)".to_owned(), shown(&c.base)]);
                t.add_row(vec!["ours (canonical)".to_owned(), shown(&c.ours)]);
                t.add_row(vec![
                    format!("theirs ({})", c.source_system),
                    shown(&c.theirs),
                ]);
                out += &format!("{t}\n");
                if !links.is_empty() {
                    out += &format!(
                        "linked in: {}\n",
                        links
                            .iter()
                            .map(|l| format!("{} {}", l.system, l.external_id))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                out += &format!(
                    "\nresolve: concord conflicts resolve {} --take theirs|ours   or   --value JSON\n",
                    c.id
                );
            }
            if let Some(r) = &c.resolution {
                out += &format!(
                    "resolution: {r} (by {})\n",
                    c.resolved_by.as_deref().unwrap_or("?")
                );
            }
            super::print(&out)
        }
        ConflictsCommand::Resolve {
            id,
            take,
            value,
            note,
            actor,
        } => {
            let engine = engine(settings).await?;
            let conflict = engine
                .store()
                .conflict(id)
                .await?
                .ok_or_else(|| anyhow!("no conflict {id}"))?;
            let choice = match (take.as_deref(), value) {
                (_, Some(v)) => Choice::Value(serde_json::from_str(&v).with_context(|| {
                    format!("--value {v:?} is not JSON (quote strings: '\"text\"')")
                })?),
                (Some("theirs"), None) => Choice::Theirs,
                (Some("ours"), None) => Choice::Ours,
                // The value that system holds (the one that raised the
                // conflict: theirs).
                (Some(s), None)
                    if s == conflict.source_system || settings.systems.contains_key(s) =>
                {
                    Choice::System(s.to_owned())
                }
                (Some(s), None) if conflict.field_path == crate::sync::engine::IDENTITY_FIELD => {
                    Choice::Link(CanonicalId::parse(s).with_context(|| format!("--take {s:?}"))?)
                }
                (Some(s), None) => bail!(
                    "--take {s:?}: expected theirs, ours or a system name ({} raised this conflict)",
                    conflict.source_system
                ),
                (None, None) => bail!("say what to take: --take or --value"),
            };
            let actor = actor.unwrap_or_else(os_user);
            let version = engine
                .resolve_conflict(id, choice, &actor, note.as_deref())
                .await?;
            let report = engine.deliver_all(None).await?;
            engine.store().close().await;
            super::print(&format!(
                "conflict {id} resolved by {actor}: {} {} is at version {version}; {} delivery(ies) made\n",
                conflict.entity, conflict.canonical_id, report.delivered
            ))
        }
    }
}

pub async fn replay(command: ReplayCommand, settings: &Settings) -> anyhow::Result<()> {
    // What the command names is checked before anything changes.
    if let ReplayCommand::DeadLetters {
        target: Some(target),
        ..
    } = &command
        && !settings.systems.contains_key(target)
    {
        bail!(
            "--target {target:?}: no such system in the configuration (systems: {})",
            settings
                .systems
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let since = match &command {
        ReplayCommand::DeadLetters {
            since: Some(since), ..
        } => Some(parse_time(since).context("--since")?),
        _ => None,
    };
    let engine = engine(settings).await?;
    let text = match command {
        ReplayCommand::DeadLetters { target, ids, .. } => {
            if !ids.is_empty() {
                let dead = engine.store().outbox_dead_among(&ids).await?;
                let not_dead: Vec<String> = ids
                    .iter()
                    .filter(|id| !dead.contains(id))
                    .map(ToString::to_string)
                    .collect();
                if !not_dead.is_empty() {
                    bail!(
                        "not dead letters: {} (nothing was put back in line)",
                        not_dead.join(", ")
                    );
                }
            }
            let requeued = engine
                .store()
                .outbox_requeue_since(target.as_deref(), since, &ids)
                .await?;
            let report = engine.deliver_all(target.as_deref()).await?;
            format!(
                "{requeued} dead letter(s) back in line; {} delivered, {} retrying, {} dead again\n",
                report.delivered, report.retry_later, report.dead_lettered
            )
        }
        ReplayCommand::Quarantine { ids } => {
            let report = engine.replay_quarantine(&ids).await?;
            let delivered = engine.deliver_all(None).await?;
            format!(
                "{} record(s) replayed: {} created, {} updated, {} unchanged, {} still quarantined, {} conflict(s); {} delivered\n",
                report.pulled,
                report.created,
                report.updated,
                report.unchanged,
                report.quarantined,
                report.conflicts,
                delivered.delivered
            )
        }
        ReplayCommand::Job { job, since } => {
            let since = parse_time(&since)?;
            let report = engine
                .run_job(
                    &job,
                    RunOptions {
                        since: Some(since),
                        ..RunOptions::default()
                    },
                )
                .await?;
            engine.store().close().await;
            return print_reports(&[report], OutputFormat::Table, false);
        }
    };
    engine.store().close().await;
    super::print(&text)
}

fn parse_time(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| anyhow!("{text:?} is neither an RFC 3339 time nor a YYYY-MM-DD date"))?;
    Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
}

pub(super) fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "operator".into())
}

fn cut(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(39).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// A record named by canonical id or by `SYSTEM:EXTERNAL_ID`.
async fn find_record(store: &Store, entity: EntityKind, id: &str) -> anyhow::Result<CanonicalId> {
    // Canonical ids never hold a colon; SYSTEM:EXTERNAL_ID always does.
    let Some((system, external)) = id.split_once(':') else {
        return CanonicalId::parse(id)
            .map_err(|e| anyhow!("{id:?} is neither a canonical id nor SYSTEM:EXTERNAL_ID: {e}"));
    };
    Ok(store
        .find_link(entity, system, external)
        .await?
        .ok_or_else(|| anyhow!("no {entity} is linked to {system} {external}"))?
        .canonical_id)
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    entity: EntityKind,
    /// Canonical id, or SYSTEM:EXTERNAL_ID.
    id: String,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    output: OutputFormat,
}

/// `concord history ENTITY ID`
pub async fn history(args: RecordArgs, settings: &Settings) -> anyhow::Result<()> {
    let store = super::open_store(settings).await?;
    let id = find_record(&store, args.entity, &args.id).await?;
    let versions = store.history(args.entity, &id).await?;
    store.close().await;
    if versions.is_empty() {
        bail!("no {} {id}", args.entity);
    }
    if args.output == OutputFormat::Json {
        return super::print(&(serde_json::to_string_pretty(&versions)? + "\n"));
    }
    let mut out = format!("{} {id}\n", args.entity);
    let mut previous: Option<&Value> = None;
    for v in &versions {
        let p = &v.provenance;
        let who = match (&p.source_system, &p.actor) {
            (_, Some(actor)) => format!("operator {actor}"),
            (Some(s), None) => s.clone(),
            (None, None) => "?".into(),
        };
        out += &format!(
            "\nversion {}  {}  {} by {}{}{}\n",
            v.version,
            v.at.format("%Y-%m-%d %H:%M:%S UTC"),
            p.cause.as_str(),
            who,
            p.mapping_version
                .as_ref()
                .map(|m| format!(", mapping {m}"))
                .unwrap_or_default(),
            p.event_id
                .as_ref()
                .map(|e| format!(", {e}"))
                .unwrap_or_default(),
        );
        let before = crate::model::leaves(previous.unwrap_or(&Value::Null));
        let after = crate::model::leaves(&v.data);
        let b: std::collections::BTreeMap<String, &Value> = before
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let a: std::collections::BTreeMap<String, &Value> =
            after.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        for key in a
            .keys()
            .chain(b.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            if a.get(key) != b.get(key) {
                out += &format!(
                    "  {key}: {} → {}\n",
                    shown(&b.get(key).map(|v| (*v).clone())),
                    shown(&a.get(key).map(|v| (*v).clone()))
                );
            }
        }
        previous = Some(&v.data);
    }
    super::print(&out)
}

/// `concord show ENTITY ID`
pub async fn show(args: RecordArgs, settings: &Settings) -> anyhow::Result<()> {
    let store = super::open_store(settings).await?;
    let id = find_record(&store, args.entity, &args.id).await?;
    let record = store
        .get_record(args.entity, &id)
        .await?
        .ok_or_else(|| anyhow!("no {} {id}", args.entity))?;
    let links = store.links_of(args.entity, &id).await?;
    store.close().await;
    if args.output == OutputFormat::Json {
        let doc = serde_json::json!({ "record": record, "links": links });
        return super::print(&(serde_json::to_string_pretty(&doc)? + "\n"));
    }
    let mut out = format!(
        "{} {id}  version {}  updated {}\n\n{}\n",
        args.entity,
        record.version,
        record.updated_at.format("%Y-%m-%d %H:%M:%S UTC"),
        serde_json::to_string_pretty(&record.data)?
    );
    let mut t = table(&["system", "external id", "synced version", "remote updated"]);
    for l in &links {
        t.add_row(vec![
            l.system.clone(),
            l.external_id.clone(),
            l.synced_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            l.remote_updated_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    out += &format!("\n{t}\n");
    super::print(&out)
}
