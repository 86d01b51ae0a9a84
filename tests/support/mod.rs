//! Shared support for the connector tests: where things are, when a test may
//! skip, and serving a mock API on a free local port.
//!
//! The mock servers themselves live beside this file (`hubspot.rs`,
//! `erpnext.rs`, `prism.rs`) and are included by the tests that use them with
//! `#[path = "support/<name>.rs"] mod <name>;`, so that each test binary
//! compiles only its own.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use concord::connector::{Connector, Definition, Instance};

/// The project root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` beside the project, where the real-world fixtures are.
pub fn shared() -> PathBuf {
    root().join("../shared")
}

/// Whether this run is CI, where a missing prerequisite fails the test
/// instead of skipping it.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips the calling test with `reason` printed, or panics under CI.
/// Returns `None` so a test can write `let Some(x) = … else { return };`.
pub fn skip<T>(reason: &str) -> Option<T> {
    if under_ci() {
        panic!("CI=true, so this test may not skip: {reason}");
    }
    eprintln!("skipped: {reason}");
    None
}

/// Serves `app` on 127.0.0.1 at a free port, on the calling test's runtime,
/// and returns its address. The server lives as long as the runtime.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("mock server");
    });
    addr
}

/// Reads and checks a shipped definition (`connectors/<name>.toml`),
/// reporting every problem if it does not pass.
pub fn definition(name: &str) -> Definition {
    let path = root().join("connectors").join(format!("{name}.toml"));
    concord::connector::check_file(&path).unwrap_or_else(|errors| {
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        panic!(
            "{} does not pass its check:\n{}",
            path.display(),
            text.join("\n")
        )
    })
}

/// A shipped definition with some lines changed (a test profile: shorter
/// timeouts and retries), checked from a temporary copy. Each `from` must
/// occur exactly once, so that the profile fails loudly when the shipped
/// file changes under it. Keep the returned folder while the definition is
/// used.
pub fn definition_variant(name: &str, edits: &[(&str, &str)]) -> (tempfile::TempDir, Definition) {
    let shipped = std::fs::read_to_string(root().join("connectors").join(format!("{name}.toml")))
        .expect("the shipped definition");
    let mut text = shipped.clone();
    for (from, to) in edits {
        assert_eq!(
            shipped.matches(from).count(),
            1,
            "connectors/{name}.toml no longer has `{from}` exactly once"
        );
        text = text.replace(from, to);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let def = concord::connector::check_file(&path).unwrap_or_else(|errors| {
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        panic!(
            "the {name} test profile does not pass its check:\n{}",
            text.join("\n")
        )
    });
    (dir, def)
}

/// Opens an instance of a checked definition.
pub fn open(def: &Definition, instance: &Instance) -> Arc<dyn Connector> {
    (def.driver.open)(def, instance).unwrap_or_else(|e| panic!("opening {} failed: {e}", def.name))
}

/// A short random-looking id for correlation ids and the like.
pub fn correlation_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}
