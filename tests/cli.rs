//! The `concord` binary as an operator meets it: exit codes, messages, and
//! that bad input changes nothing.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn concord(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("CONCORD_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run concord")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let out = concord(dir.path(), &["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("concord {}", env!("CARGO_PKG_VERSION"))
    );
    let out = concord(dir.path(), &["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for command in ["config", "db", "status"] {
        assert!(help.contains(command), "{help}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = concord(dir.path(), &["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = concord(dir.path(), &["status", "--output", "yaml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("yaml"));
}

#[test]
fn status_creates_a_fresh_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = concord(dir.path(), &["status"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dir.path().join("data/concord.db").is_file());
    let table = text(&out.stdout);
    assert!(
        table.contains("sqlite://data/concord.db (sqlite), schema 1 of 1"),
        "{table}"
    );

    let out = concord(dir.path(), &["status", "--output", "json"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backend"], "sqlite");
    assert_eq!(report["open_conflicts"], 0);
    assert_eq!(report["records"], serde_json::json!([]));
}

#[test]
fn db_migrate_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CONCORD__STORE__URL", "sqlite://state/c.db")];
    let out = concord(dir.path(), &["db", "migrate"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("applied 1 migration(s)"));
    let out = concord(dir.path(), &["db", "migrate"], &env);
    assert!(text(&out.stdout).contains("applied 0 migration(s)"));
}

#[test]
fn corrupt_sqlite_file_fails_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let out = concord(
        dir.path(),
        &["status"],
        &[("CONCORD__STORE__URL", "sqlite://broken.db")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("sqlite://broken.db"), "{err}");
    assert!(err.contains("not a database"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
    assert!(!dir.path().join("broken.db-wal").exists());
}

#[test]
fn unreachable_postgres_names_the_target_and_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = concord(
        dir.path(),
        &["status"],
        &[
            (
                "CONCORD__STORE__URL",
                "postgres://app:s3cret@127.0.0.1:1/concord",
            ),
            ("CONCORD__STORE__CONNECT_TIMEOUT_SECS", "2"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("postgres://app:********@127.0.0.1:1/concord"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    assert!(err.contains("refused"), "the cause is named: {err}");
}

#[test]
fn bad_config_exits_2_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "[store]\nurl = \"sqlite://x.db\"\nmax_conections = 4\n",
    )
    .unwrap();
    let out = concord(dir.path(), &["--config", "c.toml", "status"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("max_conections") && err.contains("c.toml"),
        "{err}"
    );
    assert!(!dir.path().join("x.db").exists(), "nothing may be created");

    let out = concord(
        dir.path(),
        &["status"],
        &[("CONCORD__STORE__BUSY_TIMEOUT_MS", "soon")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("store.busy_timeout_ms"));

    let out = concord(
        dir.path(),
        &["--config", "missing.toml", "config", "check"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.toml"));
}

#[test]
fn config_check_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let out = concord(
        dir.path(),
        &["config", "check"],
        &[
            (
                "CONCORD__STORE__URL",
                "postgres://app:s3cret@db.internal/concord",
            ),
            ("CONCORD__STORE__PASSWORD", "hunter2"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(!all.contains("s3cret") && !all.contains("hunter2"), "{all}");
    assert!(all.contains("password = \"********\""), "{all}");
}

#[test]
fn json_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = concord(
        dir.path(),
        &["--log-format", "json", "config", "check"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    let line = text(&out.stderr);
    let first = line.lines().next().expect("a log line");
    let event: serde_json::Value = serde_json::from_str(first).unwrap();
    assert_eq!(event["level"], "INFO");
}

#[test]
fn status_against_postgres() {
    let Ok(url) = std::env::var(common::PG_URL_VAR) else {
        if std::env::var_os("CI").is_some() {
            panic!("{} must be set in CI", common::PG_URL_VAR);
        }
        eprintln!("skipped: {} is not set", common::PG_URL_VAR);
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("concord_cli_{}", uuid::Uuid::now_v7().simple());
    let env = [
        ("CONCORD__STORE__URL", url.as_str()),
        ("CONCORD__STORE__SCHEMA", schema.as_str()),
    ];
    let out = concord(dir.path(), &["status", "-o", "json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backend"], "postgres");
    assert_eq!(report["schema_applied"], report["schema_known"]);
    let out = concord(dir.path(), &["db", "migrate"], &env);
    assert!(text(&out.stdout).contains("applied 0 migration(s)"));
    common::drop_schema(&url, &schema);
}
