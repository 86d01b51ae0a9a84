//! `concord config …`

use clap::Subcommand;

use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load every layer, validate, and print the effective configuration
    /// with secrets masked. Exits 2 when the configuration is invalid.
    Check,
}

pub fn run(command: ConfigCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check => {
            super::print(&settings.to_redacted_toml())?;
            tracing::info!(message = "Configuration is valid.");
            Ok(())
        }
    }
}
