//! The operator CLI: argument parsing, dispatch, and exit codes.
//!
//! Exit codes mean something: 0 success, 1 the operation failed, 2 the
//! command line or the configuration is wrong (nothing was attempted).

mod alerts;
mod bank;
mod config;
mod connectors;
mod db;
mod demo;
mod demo_reconcile;
mod mapping;
mod queue;
mod reconcile;
mod reconcile_push;
mod reconcile_store;
mod serve;
mod status;
mod sync;
mod tokens;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::logging;
use crate::settings::{LogFormat, Settings, SettingsError};

/// concord keeps CRM, ERP and finance systems in agreement.
#[derive(Debug, Parser)]
#[command(name = "concord", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file layered over config/default.toml.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "CONCORD_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,

    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,

    /// Log filter such as `debug` or `concord=debug,sqlx=warn` (overrides
    /// log.level; RUST_LOG wins over both).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Data-quality alerts: list, acknowledge, run the rules now.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// Read and import bank statements (camt.05x, MT940/942, BAI2, OFX, CSV).
    #[command(subcommand)]
    Bank(bank::BankCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Validate system definitions and check configured systems.
    #[command(subcommand)]
    Connectors(connectors::ConnectorsCommand),
    /// The quickstart: a CRM export and an ERP database kept in agreement,
    /// on the embedded store (uses config/demo.toml unless --config is given).
    Demo(demo::DemoArgs),
    /// Manage the store's schema.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Check, test and apply declarative mappings.
    #[command(subcommand)]
    Mapping(mapping::MappingCommand),
    /// Work waiting in the store: counts, dead letters, replaying them.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Run the daemon: scheduler, webhook receiver and workers.
    Serve(serve::ServeArgs),
    /// Match bank receipts to open invoices: from files, or in the store.
    Reconcile(reconcile::ReconcileArgs),
    /// Records per entity and system, cursors, queues, open conflicts and alerts.
    Status(status::StatusArgs),
    /// Run sync jobs.
    #[command(subcommand)]
    Sync(sync::SyncCommand),
    /// Fields two systems disagree on, waiting for a decision.
    #[command(subcommand)]
    Conflicts(sync::ConflictsCommand),
    /// Retry what failed: dead letters, quarantined records, a job from a time.
    #[command(subcommand)]
    Replay(sync::ReplayCommand),
    /// Every version of a record: what changed, when, from where, by whom.
    History(sync::RecordArgs),
    /// A canonical record and its links in every system.
    Show(sync::RecordArgs),
    /// Bearer tokens for the admin API.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables for people.
    #[default]
    Table,
    /// One JSON document for scripts.
    Json,
}

/// The configuration `concord demo` uses unless told otherwise.
const DEMO_CONFIG: &str = "config/demo.toml";

/// A failure classified for the exit code.
#[derive(Debug)]
enum Failure {
    /// Configuration or usage: exit 2.
    Usage(anyhow::Error),
    /// The operation failed: exit 1.
    Operation(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        if error.downcast_ref::<SettingsError>().is_some() {
            Failure::Usage(error)
        } else {
            Failure::Operation(error)
        }
    }
}

/// Parses the command line, runs the command, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout with exit 0, usage errors
            // to stderr with exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            report(&e);
            ExitCode::from(2)
        }
        Err(Failure::Operation(e)) => {
            if is_broken_pipe(&e) {
                // `concord status | head` is not an error.
                return ExitCode::SUCCESS;
            }
            report(&e);
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    // The demo brings its own configuration.
    let config = match (&cli.config, &cli.command) {
        (None, Command::Demo(_)) => Some(PathBuf::from(DEMO_CONFIG)),
        (c, _) => c.clone(),
    };
    let settings = Settings::load(config.as_deref()).map_err(|e| Failure::Usage(e.into()))?;
    let format = cli.log_format.unwrap_or(settings.log.format);
    let filter = cli.log_level.as_deref().unwrap_or(&settings.log.level);
    logging::init(format, filter).map_err(Failure::Usage)?;
    // TLS for PostgreSQL (and later HTTP and AMQP) uses ring; install it
    // once so no library picks a provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Failure::Operation(anyhow::Error::new(e).context("cannot start the runtime"))
        })?;
    runtime.block_on(async {
        match cli.command {
            Command::Alerts(cmd) => alerts::run(cmd, &settings).await,
            Command::Bank(cmd) => bank::run(cmd, &settings).await,
            Command::Config(cmd) => config::run(cmd, &settings),
            Command::Connectors(cmd) => connectors::run(cmd, &settings).await,
            Command::Demo(args) => demo::run(args, &settings).await,
            Command::Db(cmd) => db::run(cmd, &settings).await,
            Command::Mapping(cmd) => mapping::run(cmd, &settings).await,
            Command::Queue(cmd) => queue::run(cmd, &settings).await,
            Command::Serve(args) => serve::run(args, &settings).await,
            Command::Reconcile(args) => reconcile::run(args, &settings).await,
            Command::Status(args) => status::run(args, &settings).await,
            Command::Sync(cmd) => sync::run(cmd, &settings).await,
            Command::Conflicts(cmd) => sync::conflicts(cmd, &settings).await,
            Command::Replay(cmd) => sync::replay(cmd, &settings).await,
            Command::History(args) => sync::history(args, &settings).await,
            Command::Show(args) => sync::show(args, &settings).await,
            Command::Tokens(cmd) => tokens::run(cmd, &settings).await,
        }
    })?;
    Ok(())
}

/// Prints the error and its causes once, each on its own line.
fn report(error: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {error}");
    let mut previous = error.to_string();
    for cause in error.chain().skip(1) {
        // Some libraries repeat their source's message in their own; print
        // each piece of the chain once.
        let message = cause.to_string();
        if !previous.contains(&message) {
            let _ = writeln!(stderr, "  caused by: {message}");
        }
        previous = message;
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes `text` to stdout; a closed pipe surfaces as an io error that
/// [`main`] treats as success.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Opens the store from settings, with the target named on failure.
async fn open_store(settings: &Settings) -> anyhow::Result<crate::store::Store> {
    Ok(crate::store::Store::open(&settings.store).await?)
}
