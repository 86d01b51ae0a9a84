//! `concord db …`

use clap::Subcommand;

use crate::settings::Settings;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create or upgrade the store's schema (safe to run again).
    Migrate,
}

pub async fn run(command: DbCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        DbCommand::Migrate => {
            let store = Store::connect(&settings.store).await?;
            let applied = store.migrate().await?;
            let (_, known) = store.schema_state().await?;
            store.close().await;
            super::print(&format!(
                "{} store at {}: applied {applied} migration(s); schema is at {known} of {known}\n",
                store.backend(),
                store.target(),
            ))
        }
    }
}
