//! `concord serve`

use clap::Args;

use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

pub async fn run(args: ServeArgs, settings: &Settings) -> anyhow::Result<()> {
    let mut settings = settings.clone();
    if let Some(listen) = args.listen {
        settings.server.listen = listen;
    }
    crate::serve::run(settings).await
}
