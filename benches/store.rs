//! Store write and re-read throughput, the figures the sync engine lives by.
//!
//! `cargo bench --bench store` runs on a fresh SQLite file; set
//! `CONCORD_BENCH_DATABASE_URL=postgres://…` to also run on PostgreSQL (in a
//! fresh schema, dropped afterwards). `CONCORD_BENCH_RECORDS` sets the count
//! (default 20000). Each record is about 700 bytes of JSON and is committed
//! with its history, link and outbox entry, 500 records per transaction.

use std::time::Instant;

use concord::model::{CanonicalId, Currency, EntityKind, Money};
use concord::settings::StoreSettings;
use concord::store::{Batch, LinkWrite, OutboxWrite, Provenance, RecordWrite, Store};
use rust_decimal::Decimal;
use serde_json::json;

const BATCH: usize = 500;

fn invoice(i: usize) -> serde_json::Value {
    json!({
        "number": format!("INV-2026-{i:06}"),
        "customer": "0192f0c4-7a51-7cc2-9f0e-3d1c5b7a9e10",
        "currency": "EUR",
        "total": format!("{}.{:02}", 100 + i % 9000, i % 100),
        "open_amount": format!("{}.{:02}", 100 + i % 9000, i % 100),
        "issue_date": "2026-11-01",
        "due_date": "2026-12-01",
        "status": "open",
        "reference": format!("RF18{i:021}"),
        "notes": "Net 30. Please quote the invoice number with your payment. Bank: DE89 3704 0044 0532 0130 00.",
        "billing": { "line1": "Hauptstraße 1", "city": "Berlin", "postal_code": "10115", "country": "DE" },
        "sales_rep": "j.doe@example.com",
        "project": "Rollout phase 2",
        "cost_center": "CC-4711",
        "tags": ["priority", "eu", "q4"]
    })
}

async fn run(label: &str, store: &Store, n: usize) {
    let eur = Currency::parse("EUR").expect("EUR");
    let ids: Vec<CanonicalId> = (0..n).map(|_| CanonicalId::new()).collect();
    let started = Instant::now();
    for (chunk_no, chunk) in ids.chunks(BATCH).enumerate() {
        let mut batch = Batch::default();
        for (j, id) in chunk.iter().enumerate() {
            let i = chunk_no * BATCH + j;
            let data = invoice(i);
            let amount = Money::new(Decimal::new(10_000 + i as i64, 2), eur).expect("amount");
            batch.records.push(RecordWrite {
                entity: EntityKind::Invoice,
                id: id.clone(),
                expected_version: 0,
                content_hash: None,
                data_json: None,
                data,
                amount: Some(amount),
                provenance: Provenance::pull("erp"),
            });
            batch.links.push(LinkWrite {
                entity: EntityKind::Invoice,
                system: "erp".into(),
                external_id: format!("E{i:08}"),
                canonical_id: id.clone(),
                synced_version: Some(1),
                synced_data: None,
                synced_hash: None,
                remote_updated_at: None,
                source_hash: None,
            });
            batch.outbox.push(OutboxWrite {
                entity: EntityKind::Invoice,
                canonical_id: id.clone(),
                version: 1,
                target_system: "finance".into(),
            });
        }
        store.commit(&batch).await.expect("commit");
    }
    let write = started.elapsed();

    let started = Instant::now();
    let mut seen = 0;
    for chunk in ids.chunks(BATCH) {
        seen += store
            .record_heads(EntityKind::Invoice, chunk)
            .await
            .expect("heads")
            .len();
    }
    let heads = started.elapsed();
    assert_eq!(seen, n);

    println!(
        "{label:<10} {n} records: commit {:>8.0} records/s ({:.2} s), unchanged re-sync look-up {:>8.0} records/s ({:.2} s)",
        n as f64 / write.as_secs_f64(),
        write.as_secs_f64(),
        n as f64 / heads.as_secs_f64(),
        heads.as_secs_f64(),
    );
}

fn main() {
    // `cargo test --benches` passes --bench-less flags; only run for real
    // under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("store bench: run with `cargo bench --bench store`");
        return;
    }
    let n: usize = std::env::var("CONCORD_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = StoreSettings {
            url: format!("sqlite://{}", dir.path().join("bench.db").display()).into(),
            ..StoreSettings::default()
        };
        let store = Store::open(&settings).await.expect("open sqlite");
        run("sqlite", &store, n).await;
        store.close().await;

        if let Ok(url) = std::env::var("CONCORD_BENCH_DATABASE_URL") {
            let schema = format!("concord_bench_{}", uuid::Uuid::now_v7().simple());
            let settings = StoreSettings {
                url: url.into(),
                schema: Some(schema.clone()),
                ..StoreSettings::default()
            };
            let store = Store::open(&settings).await.expect("open postgres");
            run("postgres", &store, n).await;
            store.close().await;
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(settings.url.as_str())
                .await
                .expect("connect");
            let sql = format!("DROP SCHEMA \"{schema}\" CASCADE");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("drop bench schema");
        }
    });
}
