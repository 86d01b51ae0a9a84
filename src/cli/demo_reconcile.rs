//! The reconciliation part of `concord demo`: the ERP's open invoices and
//! the company's bank statement (camt.053) go into the store, and a store
//! mode run matches them. Every step is idempotent, so running the demo
//! again changes nothing.

use std::path::Path;

use anyhow::Context;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use rust_decimal::Decimal;
use sqlx::{Connection, Row};

use crate::model::{CanonicalId, Entity, EntityKind, Invoice, InvoiceStatus};
use crate::reconcile::stored::{self, RunOptions};
use crate::settings::Settings;
use crate::store::{AllocationStatus, Batch, LinkWrite, Provenance, RecordWrite, Store};

/// The ERP system's name in config/demo.toml.
const ERP: &str = "erp_main";
/// The demo's bank statement in the seed folder.
pub const STATEMENT: &str = "bank-statement.camt053.xml";

/// Loads the ERP's invoice table into the store as canonical invoices
/// linked to the ERP, each pointing at its synced customer. Invoices
/// already linked are left alone. Returns how many were new.
async fn load_invoices(store: &Store, erp_db: &Path) -> anyhow::Result<usize> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(erp_db)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("cannot open {}", erp_db.display()))?;
    let rows = sqlx::query(
        "SELECT invoice_no, customer_no, currency, total, open_amount, issue_date, due_date FROM invoice ORDER BY invoice_no",
    )
    .fetch_all(&mut conn)
    .await
    .with_context(|| {
        format!(
            "cannot read the invoice table of {} (prepared by an older concord? `concord demo --reset` starts over)",
            erp_db.display()
        )
    })?;
    conn.close().await.ok();
    let numbers: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String, _>("invoice_no"))
        .collect::<Result<_, _>>()?;
    let known: std::collections::HashSet<String> = store
        .find_links(EntityKind::Invoice, ERP, &numbers)
        .await?
        .into_iter()
        .map(|l| l.external_id)
        .collect();
    let customer_nos: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<i64, _>("customer_no").map(|n| n.to_string()))
        .collect::<Result<_, _>>()?;
    let customers: std::collections::HashMap<String, CanonicalId> = store
        .find_links(EntityKind::Customer, ERP, &customer_nos)
        .await?
        .into_iter()
        .map(|l| (l.external_id, l.canonical_id))
        .collect();
    let mut batch = Batch::default();
    for (row, customer_no) in rows.iter().zip(&customer_nos) {
        let number: String = row.try_get("invoice_no")?;
        if known.contains(&number) {
            continue;
        }
        let amount = |col: &str| -> anyhow::Result<Decimal> {
            let text: String = row.try_get(col)?;
            text.parse::<Decimal>()
                .with_context(|| format!("invoice {number}: {col} {text:?} is not an amount"))
        };
        let date = |col: &str| -> anyhow::Result<chrono::NaiveDate> {
            let text: String = row.try_get(col)?;
            chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                .with_context(|| format!("invoice {number}: {col} {text:?} is not a date"))
        };
        let currency: String = row.try_get("currency")?;
        let open = amount("open_amount")?;
        let total = amount("total")?;
        let invoice = Invoice {
            id: None,
            number: number.clone(),
            customer: customers.get(customer_no).cloned(),
            currency: crate::model::Currency::parse(&currency)?,
            total,
            open_amount: open,
            issue_date: Some(date("issue_date")?),
            due_date: Some(date("due_date")?),
            status: if open.is_zero() {
                InvoiceStatus::Paid
            } else if open < total {
                InvoiceStatus::PartiallyPaid
            } else {
                InvoiceStatus::Open
            },
            reference: None,
            extra: Default::default(),
        };
        let id = CanonicalId::new();
        let entity = Entity::Invoice(invoice);
        batch.records.push(RecordWrite::of(
            &entity,
            id.clone(),
            0,
            Provenance::pull(ERP),
        ));
        batch.links.push(LinkWrite {
            entity: EntityKind::Invoice,
            system: ERP.into(),
            external_id: number,
            canonical_id: id,
            synced_version: Some(1),
            synced_data: None,
            synced_hash: None,
            remote_updated_at: None,
            source_hash: None,
        });
    }
    let new = batch.records.len();
    if new > 0 {
        store.commit(&batch).await?;
    }
    Ok(new)
}

/// Runs the reconciliation part of the demo and prints what it found.
pub async fn run(seed: &Path, data: &Path, settings: &Settings) -> anyhow::Result<()> {
    let store = super::open_store(settings).await?;
    let result = walk(&store, seed, data, settings).await;
    store.close().await;
    result
}

async fn walk(store: &Store, seed: &Path, data: &Path, settings: &Settings) -> anyhow::Result<()> {
    super::print(
        "\nReconciliation: the ERP's open invoices against the November bank statement.\n",
    )?;
    let new = load_invoices(store, &data.join("erp.db")).await?;
    super::print(&format!(
        "{new} new invoice(s) read from the ERP's invoice table\n"
    ))?;
    super::bank::run(
        super::bank::BankCommand::Import(super::bank::ImportArgs::of(seed.join(STATEMENT), "bank")),
        settings,
    )
    .await?;
    let report = stored::run(
        store,
        &RunOptions {
            since: None,
            actor: "demo".into(),
            config: settings.reconcile.config(),
        },
    )
    .await?;
    let mut out = format!(
        "{} receipt(s) against {} open invoice(s): {} matched automatically, {} suggested, {} open; {} new alert(s)\n",
        report.receipts,
        report.invoices,
        report.auto,
        report.suggested,
        report.open,
        report.alerts_raised
    );
    let allocations = store
        .allocations(&[
            AllocationStatus::Auto,
            AllocationStatus::Suggested,
            AllocationStatus::Confirmed,
            AllocationStatus::Manual,
        ])
        .await?;
    if !allocations.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY).set_header(vec![
            "id",
            "status",
            "confidence",
            "invoice",
            "amount",
            "why",
        ]);
        for a in &allocations {
            let al = &a.allocation;
            t.add_row(vec![
                a.id.to_string(),
                al.status.to_string(),
                format!("{:.2}", al.confidence),
                al.invoice_number.clone(),
                crate::reconcile::file::amount_text(al.amount, al.currency)
                    + " "
                    + al.currency.as_str(),
                crate::mapping::ops::cut(&al.reasons.join("; "), 70),
            ]);
        }
        out += &format!("{t}\n");
    }
    if !report.open_items.is_empty() {
        out += "Left open:\n";
        for o in &report.open_items {
            out += &format!(
                "  {} {} {} from {}: {}\n",
                o.booking_date,
                o.amount,
                o.currency,
                o.payer.as_deref().unwrap_or("(unknown payer)"),
                o.reasons.first().map_or("", String::as_str)
            );
        }
    }
    let alerts: Vec<_> = store
        .open_alerts(50)
        .await?
        .into_iter()
        .filter(|a| {
            a.alert.rule.starts_with("reconcile_") || a.alert.rule.starts_with("statement_")
        })
        .collect();
    if !alerts.is_empty() {
        out += "Alerts:\n";
        for a in &alerts {
            out += &format!(
                "  [{}] {}: {}\n",
                a.alert.severity.as_str(),
                a.alert.rule,
                a.alert.reason
            );
        }
    }
    super::print(&out)
}
