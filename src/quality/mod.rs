//! Data-quality alerts: rules over the store's canonical records that
//! raise alerts with a severity, the records involved and a reason.
//!
//! * **Rules** ([`rules`]) are pure functions over a loaded [`Dataset`],
//!   configured by `[quality]` ([`QualitySettings`]).
//! * **Once per cause.** Every alert carries a stable cause (the record's
//!   id, the set of records, the credit level crossed …); the store's
//!   unique index on (rule, cause) raises it once, however often the rules
//!   run.
//! * **Auto-resolve.** After each evaluation, the open or acknowledged
//!   alerts of the rules that ran whose cause no longer holds (the invoice
//!   was paid, the duplicate merged, usage fell below the level) are
//!   marked `resolved`. Their cause gets a `#resolved-<id>` suffix, so if
//!   the same cause comes back it is raised anew. Alerts of other raisers
//!   (the sync engine's `ambiguous_identity`, bank import's
//!   `statement_balance_mismatch`) are never touched.
//! * **Sinks** ([`sinks`]): the store always; the log and, when
//!   configured, a signed webhook and an AMQP exchange get each alert once
//!   (at least once), tracked per alert in the store.
//!
//! [`evaluate`] is the one entry point: sync runs, bank imports and
//! reconciliation call it (or [`evaluate_with`] to add what they know, such
//! as matched receipts) after they commit.

pub mod config;
pub mod rules;
pub mod sinks;

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

pub use config::QualitySettings;
pub use rules::{Consistency, Dataset, Evaluation};

use crate::model::{CanonicalId, Entity, EntityKind};
use crate::settings::Settings;
use crate::store::{AlertRecord, Store, StoreError};
use rules::{AccountVersion, InvalidRecord, LinkView, Loaded, OutboxState, Route};

/// What an evaluation did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The rules that ran.
    pub rules: Vec<&'static str>,
    /// Alerts raised now: their cause is new.
    pub raised: Vec<AlertRecord>,
    /// Alerts whose cause holds (new or raised before).
    pub holding: usize,
    /// Alerts resolved because their cause went away.
    pub resolved: u64,
    pub consistency: Consistency,
    /// `consistency.agreeing / consistency.compared`, when anything was
    /// compared.
    pub consistency_rate: Option<f64>,
    pub sinks: sinks::DispatchReport,
}

/// Loads the store, runs the rules, stores the alerts and sends the new
/// ones to the sinks.
pub async fn evaluate(store: &Store, settings: &Settings) -> Result<Report, StoreError> {
    let data = load(store, settings).await?;
    evaluate_with(store, settings, &data, Utc::now()).await
}

/// [`evaluate`] over data the caller loaded (and perhaps completed, e.g.
/// with reconciliation's matched receipts), as of `now`.
pub async fn evaluate_with(
    store: &Store,
    settings: &Settings,
    data: &Dataset,
    now: DateTime<Utc>,
) -> Result<Report, StoreError> {
    let q = &settings.quality;
    let evaluation = rules::evaluate(data, q, now);
    let settled = store
        .settle_quality_alerts(&evaluation.rules, &evaluation.alerts)
        .await?;
    let raised = store.alerts_by_id(&settled.raised).await?;
    if q.sinks.log {
        sinks::log(&raised);
    }
    let dispatch = sinks::dispatch(store, &q.sinks).await?;
    Ok(Report {
        rules: evaluation.rules,
        holding: evaluation.alerts.len(),
        raised,
        resolved: settled.resolved,
        consistency_rate: evaluation.consistency.rate(),
        consistency: evaluation.consistency,
        sinks: dispatch,
    })
}

/// Runs [`evaluate`] after `what` (a sync run, a bank import) when
/// `quality.run_after_sync` is on. Failures are logged, never returned:
/// the step before has committed and must not look failed.
pub async fn run_after(store: &Store, settings: &Settings, what: &str) -> Option<Report> {
    if !settings.quality.run_after_sync {
        return None;
    }
    match evaluate(store, settings).await {
        Ok(report) => {
            tracing::info!(
                target: "concord::quality",
                message = "Data-quality rules ran.",
                after = what,
                raised = report.raised.len(),
                resolved = report.resolved,
                holding = report.holding,
            );
            Some(report)
        }
        Err(error) => {
            tracing::warn!(
                target: "concord::quality",
                message = "Data-quality rules could not run; run `concord alerts check` later.",
                after = what,
                error = %error,
            );
            None
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    kind: EntityKind,
    rows: Vec<crate::store::CurrentRecord>,
    invalid: &mut Vec<InvalidRecord>,
    unwrap: impl Fn(Entity) -> Option<T>,
) -> Vec<Loaded<T>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        match Entity::from_value(kind, r.data).map(&unwrap) {
            Ok(Some(record)) => out.push(Loaded {
                id: r.id,
                version: r.version,
                stored_on: r.created_at.date_naive(),
                record,
            }),
            Ok(None) => {}
            Err(e) => invalid.push(InvalidRecord {
                entity: kind,
                id: r.id,
                version: r.version,
                reason: e.to_string(),
            }),
        }
    }
    out
}

/// Reads what the rules need from the store: current records of every
/// entity, customers' bank-account history, links with their last-synced
/// views, undelivered outbox entries, open quarantine, and the jobs'
/// routes (the mappings name each job's canonical entity).
pub async fn load(store: &Store, settings: &Settings) -> Result<Dataset, StoreError> {
    let mut data = Dataset::default();
    let mut invalid = Vec::new();
    data.customers = parse(
        EntityKind::Customer,
        store.current_records(EntityKind::Customer).await?,
        &mut invalid,
        |e| match e {
            Entity::Customer(x) => Some(x),
            _ => None,
        },
    );
    data.orders = parse(
        EntityKind::Order,
        store.current_records(EntityKind::Order).await?,
        &mut invalid,
        |e| match e {
            Entity::Order(x) => Some(x),
            _ => None,
        },
    );
    data.invoices = parse(
        EntityKind::Invoice,
        store.current_records(EntityKind::Invoice).await?,
        &mut invalid,
        |e| match e {
            Entity::Invoice(x) => Some(x),
            _ => None,
        },
    );
    data.payments = parse(
        EntityKind::Payment,
        store.current_records(EntityKind::Payment).await?,
        &mut invalid,
        |e| match e {
            Entity::Payment(x) => Some(x),
            _ => None,
        },
    );
    data.bank_transactions = parse(
        EntityKind::BankTransaction,
        store.current_records(EntityKind::BankTransaction).await?,
        &mut invalid,
        |e| match e {
            Entity::BankTransaction(x) => Some(x),
            _ => None,
        },
    );
    data.invalid = invalid;
    if settings.quality.rules.payer_account_changed.enabled {
        data.account_history = store
            .all_versions(EntityKind::Customer)
            .await?
            .into_iter()
            .map(|v| AccountVersion {
                customer: v.id,
                version: v.version,
                at: v.at,
                accounts: accounts_of(&v.data),
            })
            .collect();
    }
    data.links = store
        .all_link_views()
        .await?
        .into_iter()
        .map(|(entity, system, canonical_id, synced_data)| LinkView {
            entity,
            system,
            canonical_id,
            synced_data,
        })
        .collect();
    data.outbox = store
        .undelivered_outbox()
        .await?
        .into_iter()
        .map(
            |(entity, canonical_id, target_system, status)| OutboxState {
                entity,
                canonical_id,
                target_system,
                status,
            },
        )
        .collect();
    data.quarantine = store.quarantined_open(&[], u32::MAX).await?;
    data.routes = routes(settings);
    for p in &data.payments {
        if let Some(id) = p
            .record
            .extra
            .get(rules::BANK_TRANSACTION_KEY)
            .and_then(Value::as_str)
            .and_then(|s| CanonicalId::parse(s).ok())
        {
            data.matched_receipts.insert(id);
        }
    }
    // Receipts reconciliation matched (automatically, or decided by people)
    // are not unmatched, whatever their payment records say.
    use crate::store::AllocationStatus as S;
    for a in store
        .allocations(&[S::Auto, S::Confirmed, S::Manual])
        .await?
    {
        if let Ok(id) = CanonicalId::parse(&a.allocation.transaction_id) {
            data.matched_receipts.insert(id);
        }
    }
    Ok(data)
}

/// The normalised IBANs (or other account ids) of a customer version.
fn accounts_of(data: &Value) -> BTreeSet<String> {
    data.get("bank_accounts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| s.split_whitespace().collect::<String>().to_uppercase())
                .collect()
        })
        .unwrap_or_default()
}

/// Each job's (entity, source, target), the entity read from the job's
/// source mapping. Jobs whose mapping does not load are skipped (the sync
/// engine reports them).
fn routes(settings: &Settings) -> Vec<Route> {
    if settings.jobs.is_empty() || !settings.quality.rules.missing_in_linked_system.enabled {
        return Vec::new();
    }
    let (mappings, _errors) = crate::mapping::load_dir(&settings.mappings.dir);
    let entity: HashMap<&str, EntityKind> = mappings
        .iter()
        .map(|m| (m.name.as_str(), m.entity))
        .collect();
    let mut out = Vec::new();
    for job in &settings.jobs {
        let Some(&kind) = entity.get(job.source.mapping.as_str()) else {
            continue;
        };
        for target in &job.targets {
            out.push(Route {
                entity: kind,
                source: job.source.system.clone(),
                target: target.system.clone(),
                job: job.name.clone(),
            });
        }
    }
    out
}
