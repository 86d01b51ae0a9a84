//! `concord reconcile allocate|push|payments`: allocations made by hand, and
//! the payments of confirmed and manual allocations on their way to the ERP
//! (`[reconcile.push]`).

use anyhow::{Context, anyhow, bail};
use clap::Args;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use rust_decimal::Decimal;

use super::OutputFormat;
use crate::model::{CanonicalId, Entity, EntityKind};
use crate::reconcile::push::{self, ManualAllocation};
use crate::settings::{Settings, SettingsError};
use crate::store::{AllocationPayment, PaymentOutcome, PaymentStatus, Store};
use crate::sync::{Engine, JobReport};

#[derive(Debug, Args)]
pub struct AllocateArgs {
    /// The receipt: a bank transaction's canonical id, or
    /// SYSTEM:EXTERNAL_ID.
    transaction: String,
    /// The invoice: its canonical id, its number, or SYSTEM:EXTERNAL_ID.
    invoice: String,
    /// How much (default: as much as both the receipt and the invoice have
    /// left).
    #[arg(long, value_name = "AMOUNT")]
    amount: Option<Decimal>,
    /// Why, for the allocation's history.
    #[arg(long)]
    note: Option<String>,
    /// Who allocates, for the history (default: the OS user).
    #[arg(long)]
    actor: Option<String>,
    /// How to print the result.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// How to print the result.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PaymentsArgs {
    /// Also payments cancelled or reversed.
    #[arg(long)]
    all: bool,
    /// How to print them.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

/// A record named by canonical id or by `SYSTEM:EXTERNAL_ID`; invoices also
/// by their number.
async fn find(store: &Store, entity: EntityKind, name: &str) -> anyhow::Result<CanonicalId> {
    if let Some((system, external)) = name.split_once(':') {
        return Ok(store
            .find_link(entity, system, external)
            .await?
            .ok_or_else(|| anyhow!("no {entity} is linked to {system} {external}"))?
            .canonical_id);
    }
    if let Ok(id) = CanonicalId::parse(name)
        && store.get_record(entity, &id).await?.is_some()
    {
        return Ok(id);
    }
    if entity == EntityKind::Invoice {
        let mut found = Vec::new();
        for r in store.records_of(EntityKind::Invoice).await? {
            if let Ok(Entity::Invoice(i)) = Entity::from_value(EntityKind::Invoice, r.data)
                && i.number.trim() == name.trim()
            {
                found.push(r.id);
            }
        }
        match found.len() {
            1 => return Ok(found.remove(0)),
            0 => {}
            _ => bail!(
                "{} invoices are numbered {name:?} ({}): name one by its canonical id",
                found.len(),
                found
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        bail!("no invoice {name:?} (by canonical id, number or SYSTEM:EXTERNAL_ID)");
    }
    bail!("no {entity} {name:?} (by canonical id or SYSTEM:EXTERNAL_ID)")
}

/// What happened to payments, in words.
pub(super) fn payment_lines(outcomes: &[PaymentOutcome]) -> String {
    let mut out = String::new();
    for o in outcomes {
        if let Some(id) = &o.written {
            out +=
                &format!("payment {id} queued for the ERP: `concord reconcile push` delivers it\n");
        }
        if let Some((id, status)) = &o.voided {
            out += &match status {
                PaymentStatus::Cancelled => {
                    format!("payment {id} had not reached the ERP: its delivery is cancelled\n")
                }
                _ => format!("payment {id} is marked reversed in the ERP\n"),
            };
        }
    }
    out
}

pub async fn allocate(
    store: &Store,
    settings: &Settings,
    args: AllocateArgs,
) -> anyhow::Result<()> {
    let transaction_id = find(store, EntityKind::BankTransaction, &args.transaction).await?;
    let invoice_id = find(store, EntityKind::Invoice, &args.invoice).await?;
    let m = ManualAllocation {
        transaction_id,
        invoice_id,
        amount: args.amount,
        actor: args.actor.unwrap_or_else(super::reconcile_store::os_user),
        note: args.note,
    };
    let done = push::allocate(store, settings.reconcile.push.as_ref(), &m)
        .await
        .with_context(|| {
            format!(
                "transaction {} not allocated to invoice {}",
                args.transaction, args.invoice
            )
        })?;
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&done)? + "\n",
        OutputFormat::Table => {
            let a = &done.allocation;
            let al = &a.allocation;
            format!(
                "allocation {}: {} {} of transaction {} to invoice {} is {} (by {})\n{}",
                a.id,
                crate::reconcile::file::amount_text(al.amount, al.currency),
                al.currency,
                al.transaction_id,
                al.invoice_number,
                al.status,
                m.actor,
                payment_lines(&done.payments)
            )
        }
    };
    super::print(&text)
}

pub async fn push(store: Store, settings: &Settings, args: PushArgs) -> anyhow::Result<()> {
    let Some(target) = &settings.reconcile.push else {
        return Err(SettingsError::Value {
            key: "reconcile.push".into(),
            reason: "not configured: name the system, entity and mapping payments go to (see config/default.toml)".into(),
        }
        .into());
    };
    let engine = Engine::new(settings.clone(), store.clone())?;
    let mut report = JobReport {
        job: crate::sync::engine::PAYMENT_PUSH.into(),
        ..JobReport::default()
    };
    engine.deliver_payments(&mut report).await?;
    let payments = store.allocation_payments(&[]).await?;
    let waiting: Vec<&AllocationPayment> = payments
        .iter()
        .filter(|p| {
            p.status == PaymentStatus::Active
                && p.delivery.as_ref().is_some_and(|d| d.status != "delivered")
        })
        .collect();
    let text = match args.output {
        OutputFormat::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "report": report,
                "not_delivered": waiting,
            }))? + "\n"
        }
        OutputFormat::Table => {
            let mut out = format!(
                "payments to {}: {} delivered, {} already there, {} retrying later, {} dead-lettered\n",
                target.system,
                report.delivered,
                report.delivery_skipped,
                report.retry_later,
                report.dead_lettered
            );
            for p in &waiting {
                let d = p.delivery.as_ref().expect("filtered");
                out += &format!(
                    "  {} (allocation {}) {}: {}{}\n",
                    p.payment_id,
                    p.allocation_id,
                    d.status,
                    d.last_error.as_deref().unwrap_or("not sent yet"),
                    if d.status == "dead" {
                        format!(
                            " — after a fix: concord replay dead-letters --target {} {}",
                            p.system, d.outbox_id
                        )
                    } else {
                        String::new()
                    }
                );
            }
            out
        }
    };
    super::print(&text)
}

pub async fn payments(store: &Store, args: PaymentsArgs) -> anyhow::Result<()> {
    let all: Vec<AllocationPayment> = store
        .allocation_payments(&[])
        .await?
        .into_iter()
        .filter(|p| args.all || p.status == PaymentStatus::Active)
        .collect();
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&all)? + "\n",
        OutputFormat::Table if all.is_empty() => "no payments\n".to_owned(),
        OutputFormat::Table => {
            let mut t = Table::new();
            t.load_preset(UTF8_BORDERS_ONLY).set_header(vec![
                "payment",
                "allocation",
                "system",
                "status",
                "delivery",
                "erp id",
                "last error",
            ]);
            for p in &all {
                let d = p.delivery.as_ref();
                t.add_row(vec![
                    p.payment_id.to_string(),
                    p.allocation_id.to_string(),
                    p.system.clone(),
                    p.status.to_string(),
                    d.map(|d| format!("{} ({} attempt(s))", d.status, d.attempts))
                        .unwrap_or_default(),
                    d.and_then(|d| d.external_id.clone()).unwrap_or_default(),
                    crate::mapping::ops::cut(
                        d.and_then(|d| d.last_error.as_deref()).unwrap_or_default(),
                        60,
                    ),
                ]);
            }
            format!("{t}\n")
        }
    };
    super::print(&text)
}
