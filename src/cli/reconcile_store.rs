//! `concord reconcile run|list|confirm|reject|undo`: reconciliation over the
//! store.

use clap::Subcommand;

use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {}

pub async fn run(command: StoreCommand, _settings: &Settings) -> anyhow::Result<()> {
    match command {}
}
