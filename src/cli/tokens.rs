//! `concord tokens`: bearer tokens for the admin API.

use std::str::FromStr;

use anyhow::{anyhow, bail};
use clap::Subcommand;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use super::OutputFormat;
use crate::api::{generate_token, hash_token, valid_token_name};
use crate::settings::Settings;
use crate::store::Role;

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it — once: only its hash is stored.
    Create {
        /// A name for the token (who or what uses it); audit entries and
        /// record history show it as `api:NAME`.
        name: String,
        /// viewer reads (sensitive fields masked); operator also runs jobs,
        /// resolves conflicts and replays; admin also manages tokens.
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long, short = 'o', value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Revoke the active token of this name: it stops working at once.
    Revoke { name: String },
}

pub async fn run(command: TokensCommand, settings: &Settings) -> anyhow::Result<()> {
    let store = super::open_store(settings).await?;
    let result = async {
        match command {
            TokensCommand::Create { name, role } => {
                if !valid_token_name(&name) {
                    bail!("{name:?}: token names are 1-64 letters, digits, `.`, `_` or `-`");
                }
                let role = Role::from_str(&role).map_err(|e| anyhow!(e))?;
                let token = generate_token()
                    .map_err(|e| anyhow!("cannot read random bytes from the system: {e}"))?;
                store
                    .create_api_token(&name, role, &hash_token(&token))
                    .await?
                    .ok_or_else(|| {
                        anyhow!(
                            "an active token is named {name:?}: `concord tokens revoke {name}` first, or pick another name"
                        )
                    })?;
                // The secret goes to stdout alone, so `$(concord tokens
                // create …)` captures it; the note goes to stderr.
                eprintln!(
                    "Created {role} token {name:?}. It is shown this once; store it now (only its hash is kept)."
                );
                super::print(&format!("{token}\n"))
            }
            TokensCommand::List { output } => {
                let tokens = store.api_tokens().await?;
                if output == OutputFormat::Json {
                    return super::print(&(serde_json::to_string_pretty(&tokens)? + "\n"));
                }
                if tokens.is_empty() {
                    return super::print(
                        "No tokens. Create one: concord tokens create NAME --role viewer|operator|admin\n",
                    );
                }
                let mut t = Table::new();
                t.load_preset(UTF8_BORDERS_ONLY).set_header(vec![
                    "name",
                    "role",
                    "created",
                    "last used",
                    "revoked",
                ]);
                let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "-".into())
                };
                for token in &tokens {
                    t.add_row(vec![
                        token.name.clone(),
                        token.role.to_string(),
                        token.created_at.format("%Y-%m-%d %H:%M").to_string(),
                        when(token.last_used_at),
                        when(token.revoked_at),
                    ]);
                }
                super::print(&format!("{t}\n"))
            }
            TokensCommand::Revoke { name } => {
                if !store.revoke_api_token(&name).await? {
                    bail!("no active token is named {name:?} (see `concord tokens list`)");
                }
                super::print(&format!("Revoked token {name:?}.\n"))
            }
        }
    }
    .await;
    store.close().await;
    result
}
