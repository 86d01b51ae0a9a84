//! `concord connectors …`: validate system definitions and try instances.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Subcommand;

use crate::connector::{self, Definition};
use crate::located::LoadError;
use crate::settings::{Settings, SettingsError};

#[derive(Debug, Subcommand)]
pub enum ConnectorsCommand {
    /// Validate system definitions without connecting anywhere: every file
    /// in connectors.dir, or the files and folders given. Prints each
    /// problem with file, line and column; exits 1 on any.
    Check {
        /// Definition files or folders (default: connectors.dir).
        paths: Vec<PathBuf>,
    },
    /// List the drivers concord has.
    Drivers,
    /// Connect to configured systems (`[systems.NAME]`) and run their
    /// health check: reachable, and the credentials work.
    Ping {
        /// Instance names (default: every configured system).
        systems: Vec<String>,
    },
}

/// Several problems were already printed; this is the one-line verdict.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Reported(String);

pub async fn run(command: ConnectorsCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        ConnectorsCommand::Check { paths } => check(settings, paths),
        ConnectorsCommand::Drivers => {
            let mut out = String::new();
            for d in connector::DRIVERS {
                out += &format!("{:<8} {}\n", d.name, d.summary);
            }
            super::print(&out)
        }
        ConnectorsCommand::Ping { systems } => ping(settings, systems).await,
    }
}

/// Reads the definitions given (files or folders), reporting every problem.
pub fn load(paths: &[PathBuf]) -> (Vec<Definition>, Vec<LoadError>) {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.is_dir() {
            match connector::check_dir(path) {
                Ok((defs, errs)) => {
                    ok.extend(defs);
                    errors.extend(errs);
                }
                Err(e) => errors.push(e),
            }
        } else {
            match connector::check_file(path) {
                Ok(def) => ok.push(def),
                Err(errs) => errors.extend(errs),
            }
        }
    }
    (ok, errors)
}

fn check(settings: &Settings, paths: Vec<PathBuf>) -> anyhow::Result<()> {
    let paths = if paths.is_empty() {
        vec![settings.connectors.dir.clone()]
    } else {
        paths
    };
    let (defs, errors) = load(&paths);
    let mut out = String::new();
    for def in &defs {
        out += &format!(
            "ok    {:<16} {:<6} {}\n",
            def.name,
            def.driver.name,
            def.source.path.display()
        );
    }
    // Instances must name a definition that exists.
    let mut instance_errors = Vec::new();
    for (name, system) in &settings.systems {
        if !defs.iter().any(|d| d.name == system.connector) {
            instance_errors.push(format!(
                "systems.{name}: connector `{}` is not among the definitions checked",
                system.connector
            ));
        }
    }
    super::print(&out)?;
    let mut stderr = std::io::stderr().lock();
    for e in &errors {
        writeln!(stderr, "error: {e}")?;
    }
    for e in &instance_errors {
        writeln!(stderr, "error: {e}")?;
    }
    let problems = errors.len() + instance_errors.len();
    if problems == 0 {
        super::print(&format!("{} definition(s) valid\n", defs.len()))
    } else {
        Err(Reported(format!(
            "{problems} error(s) in connector definitions; {} valid",
            defs.len()
        ))
        .into())
    }
}

async fn ping(settings: &Settings, systems: Vec<String>) -> anyhow::Result<()> {
    let names: Vec<String> = if systems.is_empty() {
        settings.systems.keys().cloned().collect()
    } else {
        systems
    };
    if names.is_empty() {
        return Err(SettingsError::Value {
            key: "systems".to_owned(),
            reason: "no system is configured: add a [systems.NAME] section".to_owned(),
        }
        .into());
    }
    let (defs, errors) = load(std::slice::from_ref(&settings.connectors.dir));
    let mut failed = 0;
    let mut out = String::new();
    for name in &names {
        let Some(system) = settings.systems.get(name) else {
            return Err(SettingsError::Value {
                key: format!("systems.{name}"),
                reason: "no such system in the configuration".to_owned(),
            }
            .into());
        };
        let Some(def) = defs.iter().find(|d| d.name == system.connector) else {
            for e in &errors {
                eprintln!("error: {e}");
            }
            return Err(SettingsError::Value {
                key: format!("systems.{name}.connector"),
                reason: format!(
                    "no valid definition `{}` in {}",
                    system.connector,
                    settings.connectors.dir.display()
                ),
            }
            .into());
        };
        let started = Instant::now();
        let result = match (def.driver.open)(def, &system.instance(name)) {
            Ok(c) => c.healthcheck().await,
            Err(e) => Err(e),
        };
        let ms = started.elapsed().as_millis();
        match result {
            Ok(()) => out += &format!("ok    {name:<16} {ms} ms\n"),
            Err(e) => {
                failed += 1;
                out += &format!("FAIL  {name:<16} {ms} ms  {e}\n");
            }
        }
    }
    super::print(&out)?;
    if failed > 0 {
        return Err(Reported(format!("{failed} of {} system(s) failed", names.len())).into());
    }
    Ok(())
}
