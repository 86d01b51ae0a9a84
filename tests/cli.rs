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

/// How many migrations this build ships (each branch may add its own).
fn migrations() -> usize {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count()
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
    let n = migrations();
    assert!(
        table.contains(&format!(
            "sqlite://data/concord.db (sqlite), schema {n} of {n}"
        )),
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
    assert!(text(&out.stdout).contains(&format!("applied {} migration(s)", migrations())));
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

/// An MT940 statement whose closing balance is 1.00 off.
const MT940_OFF_BY_ONE: &str = ":20:STMT-1\r\n:25:DE89370400440532013000\r\n:28C:7/1\r\n:60F:C261127EUR1000,00\r\n:61:2611281128C250,00NTRFNONREF//B1\r\n:86:166?20RE INV-2026-0042?32ACME GMBH\r\n:61:2611281128D100,00NTRFNONREF//B2\r\n:86:177?20Rent\r\n:62F:C261128EUR1151,00\r\n-\r\n";

#[test]
fn bank_parse_and_import_are_idempotent_and_alert_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stmt.sta");
    std::fs::write(&file, MT940_OFF_BY_ONE).unwrap();
    let file = file.to_str().unwrap();

    let out = concord(dir.path(), &["bank", "parse", file, "-o", "json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = &parsed[0];
    assert_eq!(st["format"], "MT940");
    assert_eq!(st["transactions"].as_array().unwrap().len(), 2);
    assert_eq!(st["transactions"][0]["amount"], "250.00");
    assert_eq!(st["transactions"][1]["amount"], "-100.00");
    assert_eq!(st["balance_check"]["ok"], false);
    assert_eq!(st["balance_check"]["difference"], "1.00");

    let out = concord(dir.path(), &["bank", "import", file], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("2 transaction(s) imported, 0 already known, 1 balance alert(s)")
    );
    let out = concord(dir.path(), &["bank", "import", file], &[]);
    assert!(
        text(&out.stdout)
            .contains("0 transaction(s) imported, 2 already known, 0 balance alert(s)"),
        "{}",
        text(&out.stdout)
    );
    let out = concord(dir.path(), &["status", "-o", "json"], &[]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["records"][0]["entity"], "bank_transaction");
    assert_eq!(report["records"][0]["count"], 2);
    assert_eq!(report["open_alerts"], 1);
}

#[test]
fn bank_parse_errors_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.sta");
    std::fs::write(
        &file,
        MT940_OFF_BY_ONE.replace("2611281128C250,00", "2602301128C250,00"),
    )
    .unwrap();
    let out = concord(dir.path(), &["bank", "parse", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("line 5"), "{err}");
    assert!(!dir.path().join("data").exists(), "parse writes nothing");
}

#[test]
fn mapping_commands_report_and_exit_nonzero_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    std::fs::write(
        dir.path().join("mappings/m.toml"),
        "[mapping]\nname = \"erp-customer-in\"\nversion = 1\nsystem = \"erp\"\nentity = \"customer\"\ndirection = \"in\"\n[fields]\nname = { from = \"Name\", required = true }\nemail = { from = \"Mail\", pipe = [\"email\"] }\n",
    )
    .unwrap();
    let out = concord(dir.path(), &["mapping", "check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok    erp-customer-in@1"));

    std::fs::write(
        dir.path().join("in.ndjson"),
        "{\"Name\": \"Acme\", \"Mail\": \"AP@Acme.Example\"}\nnot json\n{\"Mail\": \"x@y\"}\n\n{\"Name\": \"Globex\"}\n",
    )
    .unwrap();
    let out = concord(
        dir.path(),
        &[
            "mapping",
            "apply",
            "erp-customer-in",
            "--input",
            "in.ndjson",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let mapped: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        mapped,
        vec![
            serde_json::json!({ "name": "Acme", "email": "ap@acme.example" }),
            serde_json::json!({ "name": "Globex" })
        ]
    );
    let err = text(&out.stderr);
    let failures: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(failures.len(), 2, "{err}");
    assert_eq!(failures[0]["record"], 2);
    assert_eq!(failures[0]["errors"][0]["rule"], "input");
    assert_eq!(failures[1]["record"], 3);
    let rules: Vec<&str> = failures[1]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, vec!["email", "required"]);
    assert!(err.contains("4 read, 2 mapped, 2 failed"), "{err}");

    std::fs::write(
        dir.path().join("in.csv"),
        "Name,Mail\nAcme,ap@acme.example\n",
    )
    .unwrap();
    let out = concord(
        dir.path(),
        &["mapping", "apply", "mappings/m.toml", "-i", "in.csv"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "{\"email\":\"ap@acme.example\",\"name\":\"Acme\"}"
    );

    std::fs::write(dir.path().join("mappings/m.toml"), "[mapping]\nname = 1\n").unwrap();
    let out = concord(dir.path(), &["mapping", "check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("mappings/m.toml:2:8"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn connectors_check_locates_problems_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("connectors");
    std::fs::create_dir(&defs).unwrap();
    std::fs::write(
        defs.join("acme.toml"),
        "name = \"acme\"\n# a driver concord does not have\ndriver = \"carrier-pigeon\"\n",
    )
    .unwrap();
    std::fs::write(
        defs.join("other.toml"),
        "name = \"wrong\"\ndriver = \"x\"\n",
    )
    .unwrap();
    std::fs::write(defs.join("broken.toml"), "name = \"broken\"\ndriver = [\n").unwrap();
    let out = concord(dir.path(), &["connectors", "check"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("acme.toml:3:10: unknown driver `carrier-pigeon`"),
        "{err}"
    );
    assert!(err.contains("broken.toml:2:"), "{err}");
    assert!(err.contains("other.toml:"), "{err}");
    assert!(err.contains("3 error(s) in connector definitions"), "{err}");
}

#[test]
fn config_shows_system_placeholders_and_masks_literal_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[systems.xero_main]\nconnector = \"xero\"\nclient_secret = \"${XERO_CLIENT_SECRET}\"\n",
    )
    .unwrap();
    let out = concord(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "config", "check"],
        &[(
            "CONCORD__SYSTEMS__XERO_MAIN__TENANT_ID",
            "tenant-literal-value",
        )],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("client_secret = \"${XERO_CLIENT_SECRET}\""),
        "{shown}"
    );
    assert!(!shown.contains("tenant-literal-value"), "{shown}");
    assert!(shown.contains("tenant_id = \"********\""), "{shown}");

    std::fs::write(&cfg, "[systems.Xero]\nconnector = \"xero\"\n").unwrap();
    let out = concord(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "config", "check"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("systems.Xero"),
        "{}",
        text(&out.stderr)
    );
}

/// Copies a folder tree (the demo's configuration) into a test directory.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A directory holding a copy of the demo's configuration and data.
fn demo_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_tree(
        &project.join("config/demo"),
        &dir.path().join("config/demo"),
    );
    std::fs::copy(
        project.join("config/demo.toml"),
        dir.path().join("config/demo.toml"),
    )
    .unwrap();
    dir
}

#[test]
fn the_quickstart_demo_syncs_quarantines_and_settles_after_a_decision() {
    let dir = demo_copy();

    let out = concord(dir.path(), &["demo"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("2 record(s) quarantined"), "{shown}");
    assert!(shown.contains("1 conflict(s) wait for you"), "{shown}");
    let erp = dir.path().join("data/demo/erp.db");
    assert!(erp.is_file());
    // Reconciliation: the bank statement against the ERP's invoices.
    assert!(
        shown.contains("7 new invoice(s) read from the ERP"),
        "{shown}"
    );
    assert!(shown.contains("8 transaction(s) imported"), "{shown}");
    assert!(
        shown.contains("7 receipt(s) against 7 open invoice(s)"),
        "{shown}"
    );
    assert!(
        shown.contains("reconcile_possible_duplicate_payment"),
        "{shown}"
    );
    assert!(shown.contains("Left open:"), "{shown}");
    assert!(shown.contains("reconcile confirm ID"), "{shown}");

    let c = ["--config", "config/demo.toml"];
    let out = concord(
        dir.path(),
        &[&c[..], &["conflicts", "list", "-o", "json"]].concat(),
        &[],
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["field_path"], "phone");
    let out = concord(
        dir.path(),
        &[
            &c[..],
            &[
                "conflicts",
                "resolve",
                "1",
                "--take",
                "theirs",
                "--actor",
                "ada",
            ],
        ]
        .concat(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("resolved by ada"),
        "{}",
        text(&out.stdout)
    );

    // Running again moves nothing: the pair of jobs has settled.
    for _ in 0..2 {
        let out = concord(
            dir.path(),
            &[&c[..], &["sync", "run", "--all", "-o", "json"]].concat(),
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for r in reports.as_array().unwrap() {
            assert_eq!(
                (
                    r["created"].as_u64(),
                    r["updated"].as_u64(),
                    r["delivered"].as_u64()
                ),
                (Some(0), Some(0), Some(0)),
                "{r}"
            );
        }
    }
    // A suggestion is confirmed; running reconciliation again keeps it and
    // changes nothing else.
    let out = concord(
        dir.path(),
        &[&c[..], &["reconcile", "list", "-o", "json"]].concat(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let suggested: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let suggested = suggested.as_array().unwrap();
    assert!(!suggested.is_empty());
    assert!(suggested.iter().all(|a| a["status"] == "suggested"));
    let id = suggested
        .iter()
        .find(|a| a["invoice_number"] == "RE-2026-000417")
        .map(|a| a["id"].to_string())
        .expect("the fee-reduced ACME payment is suggested");
    let out = concord(
        dir.path(),
        &[&c[..], &["reconcile", "confirm", &id, "--actor", "ada"]].concat(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("is now confirmed (by ada)"));
    let out = concord(
        dir.path(),
        &[&c[..], &["reconcile", "run", "-o", "json"]].concat(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["decided"], 1, "{run}");
    assert_eq!(
        (run["written"].as_u64(), run["retired"].as_u64()),
        (Some(0), Some(0)),
        "{run}"
    );
    assert_eq!(run["alerts_raised"], 0, "{run}");
    let out = concord(
        dir.path(),
        &[
            &c[..],
            &["reconcile", "list", "--status", "confirmed", "-o", "json"],
        ]
        .concat(),
        &[],
    );
    let confirmed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(confirmed[0]["actor"], "ada", "{confirmed}");
    // The demo run again: nothing new.
    let out = concord(dir.path(), &["demo"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let again = text(&out.stdout);
    assert!(again.contains("0 new invoice(s)"), "{again}");
    assert!(
        again.contains("0 transaction(s) imported, 8 already known"),
        "{again}"
    );

    let out = concord(
        dir.path(),
        &[&c[..], &["history", "customer", "crm_main:C-1001"]].concat(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let history = text(&out.stdout);
    assert!(history.contains("by operator ada"), "{history}");
    assert!(
        history.contains("phone: \"+49301234567\" → \"+49307654321\""),
        "{history}"
    );
}

/// Enough records for several threads and batches: every record comes out
/// once, in input order, and every failure names its line.
#[test]
fn mapping_apply_keeps_order_across_threads_and_batches() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    std::fs::write(
        dir.path().join("mappings/m.toml"),
        "[mapping]\nname = \"m\"\nversion = 1\nsystem = \"erp\"\nentity = \"customer\"\ndirection = \"in\"\n[fields]\nname = { from = \"Name\", required = true }\n\"extra.n\" = { from = \"N\" }\n",
    )
    .unwrap();
    let mut input = Vec::new();
    let mut expected_names = Vec::new();
    let mut expected_failures = Vec::new();
    for i in 1..=700u64 {
        let line: Vec<u8> = match i % 50 {
            7 => b"not json".to_vec(),
            13 => b"{\"N\": 1}".to_vec(),
            21 => b"{\"Name\": \"bad \xff\"}".to_vec(),
            29 => Vec::new(),
            33 => format!("  {{\"Name\": \"r{i}\", \"N\": {i}}}\r").into_bytes(),
            _ => format!("{{\"Name\": \"r{i}\", \"N\": {i}}}").into_bytes(),
        };
        match i % 50 {
            7 | 13 | 21 => expected_failures.push(i),
            29 => {}
            _ => expected_names.push(format!("r{i}")),
        }
        input.extend(line);
        input.push(b'\n');
    }
    std::fs::write(dir.path().join("in.ndjson"), &input).unwrap();
    for batch in ["7", "2000"] {
        let out = concord(
            dir.path(),
            &["mapping", "apply", "m", "-i", "in.ndjson", "--batch", batch],
            &[],
        );
        assert_eq!(out.status.code(), Some(1));
        let names: Vec<String> = text(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(
                    v["n"].as_u64(),
                    v["name"].as_str().unwrap()[1..].parse().ok()
                );
                v["name"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(names, expected_names, "batch {batch}");
        let err = text(&out.stderr);
        let failures: Vec<serde_json::Value> = err
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let lines: Vec<u64> = failures
            .iter()
            .map(|f| f["record"].as_u64().unwrap())
            .collect();
        assert_eq!(lines, expected_failures, "batch {batch}");
        assert_eq!(
            failures[2]["errors"][0]["message"],
            "cannot read line: stream did not contain valid UTF-8"
        );
        assert!(
            err.contains(&format!(
                "{} read, {} mapped, {} failed",
                expected_names.len() + expected_failures.len(),
                expected_names.len(),
                expected_failures.len()
            )),
            "{err}"
        );
    }
}

#[test]
fn replaying_dead_letters_checks_what_it_names_before_changing_anything() {
    let dir = demo_copy();
    let c = ["--config", "config/demo.toml", "replay", "dead-letters"];
    let store = dir.path().join("data/demo/concord.db");

    let out = concord(dir.path(), &[&c[..], &["--target", "nope"]].concat(), &[]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("--target \"nope\": no such system in the configuration (systems: "),
        "{err}"
    );
    let out = concord(
        dir.path(),
        &[&c[..], &["--since", "last week"]].concat(),
        &[],
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("--since"), "{err}");
    assert!(
        err.contains("neither an RFC 3339 time nor a YYYY-MM-DD date"),
        "{err}"
    );
    assert!(
        !store.exists(),
        "nothing opened for a command that cannot run"
    );

    let out = concord(dir.path(), &[&c[..], &["41", "42"]].concat(), &[]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("not dead letters: 41, 42 (nothing was put back in line)"),
        "{err}"
    );

    let out = concord(
        dir.path(),
        &[&c[..], &["--since", "2026-11-01"]].concat(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("0 dead letter(s) back in line"),
        "{}",
        text(&out.stdout)
    );
}
