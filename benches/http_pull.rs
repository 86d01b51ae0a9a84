//! Pull throughput of the `http` driver.
//!
//! `cargo bench --bench http_pull` serves `CONCORD_BENCH_RECORDS` records
//! (default 200,000; about 330 bytes of JSON each) from a local axum server
//! and pulls them all through the driver, once with pages of 100 and once
//! with pages of 1,000. Pages are serialised before the clock starts, so the
//! server only copies bytes and the figures are the driver's: request,
//! capped read, JSON parse, id and timestamp extraction, cursor. Prints
//! records/s and the process's CPU time per record (user + system, from
//! /proc/self/stat, whose tick is the kernel's fixed USER_HZ of 100).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{TimeZone, Utc};
use futures_util::StreamExt;
use serde_json::json;

use concord::connector::http::HttpConnector;
use concord::connector::{Connector, Instance};
use concord::located::SourceFile;

/// Pre-serialised pages by `(page size, page number)`.
type Pages = Arc<HashMap<(usize, usize), Vec<u8>>>;

fn records(n: usize) -> Vec<serde_json::Value> {
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    (0..n)
        .map(|i| {
            json!({
                "id": format!("INV-{i:07}"),
                "updated_at": (base + chrono::Duration::seconds(i as i64)).to_rfc3339(),
                "number": format!("2026-{i:07}"),
                "customer": { "id": format!("C-{:05}", i % 5000), "name": format!("Customer {} GmbH", i % 5000) },
                "currency": "EUR",
                "total": format!("{}.{:02}", 100 + i % 9000, i % 100),
                "due_date": "2026-12-31",
                "status": if i % 3 == 0 { "paid" } else { "open" },
                "lines": [{ "item": "Consulting", "qty": "1", "price": "100.00" }]
            })
        })
        .collect()
}

fn paginate(all: &[serde_json::Value], sizes: &[usize]) -> Pages {
    let mut pages = HashMap::new();
    for &size in sizes {
        for (n, chunk) in all.chunks(size).enumerate() {
            let body = json!({ "items": chunk });
            pages.insert((size, n + 1), serde_json::to_vec(&body).unwrap());
        }
    }
    Arc::new(pages)
}

async fn page(
    State(pages): State<Pages>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let size: usize = q
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let n: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    let body = pages
        .get(&(size, n))
        .cloned()
        .unwrap_or_else(|| br#"{"items":[]}"#.to_vec());
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line: 11 and 12 here,
    // counting from 0 at the state field (field 3).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn definition(base: &str, size: usize) -> SourceFile {
    SourceFile {
        path: PathBuf::from("connectors/bench.toml"),
        text: format!(
            r#"name = "bench"
driver = "http"
base_url = "{base}"
[entities.invoice]
id = "/id"
updated_at = {{ pointer = "/updated_at", format = "rfc3339" }}
list = {{ path = "/items", records = "/items", ordered = true }}
pagination = {{ style = "page", param = "page", size_param = "per_page", size = {size} }}
"#
        ),
    }
}

fn main() {
    let n: usize = std::env::var("CONCORD_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let sizes = [100, 1000];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let all = records(n);
        let bytes: usize = serde_json::to_vec(&all).unwrap().len();
        let pages = paginate(&all, &sizes);
        drop(all);
        let app = Router::new().route("/items", get(page)).with_state(pages);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let base = format!("http://{addr}");
        println!(
            "http pull: {n} records, {:.1} MB of JSON, local axum server, 2 worker threads",
            bytes as f64 / 1e6
        );
        for size in sizes {
            let c = HttpConnector::open(&definition(&base, size), &Instance::bare(format!("bench_{size}")))
                .unwrap_or_else(|e| panic!("{e}"));
            let cpu = cpu_time();
            let start = Instant::now();
            let mut stream = c.pull("invoice", None);
            let mut count = 0usize;
            let mut pages = 0usize;
            while let Some(page) = stream.next().await {
                let page = page.unwrap_or_else(|e| panic!("{e}"));
                count += page.records.len();
                pages += 1;
            }
            let wall = start.elapsed();
            let cpu = cpu_time() - cpu;
            assert_eq!(count, n, "every record once");
            println!(
                "  pages of {size:>5}: {pages:>5} pages in {:>6.2} s = {:>9.0} records/s, CPU {:>5.2} µs/record (server included)",
                wall.as_secs_f64(),
                count as f64 / wall.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / count as f64,
            );
        }
    });
}
