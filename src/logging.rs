//! Log output: human-readable text by default, JSON lines for machines, both
//! on stderr so stdout stays for command output.

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `filter`.
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => EnvFilter::try_new(&env)
            .map_err(|e| anyhow::anyhow!("RUST_LOG={env:?} is not a log filter: {e}"))?,
        _ => EnvFilter::try_new(filter)
            .map_err(|e| anyhow::anyhow!("log filter {filter:?} is not valid: {e}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
