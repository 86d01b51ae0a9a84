//! The sync engine: pull → map → validate → identity → merge → commit →
//! deliver.
//!
//! A job reads one entity of one source system, maps each record to the
//! canonical model, finds which canonical record it is (by link, else by
//! business keys), merges it field by field, and commits each page — the
//! canonical versions, history, links, identity keys, conflicts, quarantine,
//! outbox entries and the source cursor — in one transaction. The outbox is
//! then delivered to the job's targets with idempotency keys.

pub mod engine;
pub mod identity;
pub mod merge;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::settings::SystemSettings;

pub use engine::{Engine, JobReport, RunOptions};

/// One sync job: `[[jobs]]` in the config.
///
/// ```toml
/// [[jobs]]
/// name = "customers-crm-to-erp"
/// source = { system = "crm_main", entity = "company", mapping = "hubspot-company-in" }
/// targets = [{ system = "erp_main", entity = "Customer", mapping = "erpnext-customer-out" }]
/// identity = ["tax_id", "email"]
/// ```
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Unique; used on the command line and in logs.
    pub name: String,
    /// A cron expression (seconds first) for `concord serve`; jobs without
    /// one run only when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The time zone `schedule` is read in (an IANA name such as
    /// `Europe/Berlin`); default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Where records come from.
    pub source: Endpoint,
    /// Where changes go.
    #[serde(default)]
    pub targets: Vec<Endpoint>,
    /// Canonical fields that identify a record across systems (tax id,
    /// IBAN, email, invoice number …), tried in order when a record is not
    /// linked yet.
    #[serde(default)]
    pub identity: Vec<String>,
    /// Records per page pulled and committed together.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_batch_size() -> usize {
    500
}

/// A system instance's entity and the mapping between it and the
/// canonical model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// A `[systems.NAME]` instance.
    pub system: String,
    /// The entity as the system's definition names it.
    pub entity: String,
    /// The mapping's name (inbound for a source, outbound for a target).
    pub mapping: String,
}

impl JobSettings {
    /// Checks what can be checked without the definitions and mappings;
    /// returns the offending field and why.
    pub fn validate(
        &self,
        systems: &BTreeMap<String, SystemSettings>,
    ) -> Result<(), (String, String)> {
        if !crate::connector::valid_name(&self.name) {
            return Err((
                "name".into(),
                format!(
                    "{:?}: job names are 1-64 lowercase letters, digits, `_` or `-`",
                    self.name
                ),
            ));
        }
        let check = |field: String, e: &Endpoint| -> Result<(), (String, String)> {
            if !systems.contains_key(&e.system) {
                return Err((
                    format!("{field}.system"),
                    format!("no system {:?} in [systems]", e.system),
                ));
            }
            if e.entity.trim().is_empty() || e.mapping.trim().is_empty() {
                return Err((field, "entity and mapping must not be empty".into()));
            }
            Ok(())
        };
        check("source".into(), &self.source)?;
        for (i, t) in self.targets.iter().enumerate() {
            check(format!("targets[{i}]"), t)?;
            if t.system == self.source.system {
                return Err((
                    format!("targets[{i}].system"),
                    "a job cannot write back to its own source (use a second job for the other direction)".into(),
                ));
            }
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return Err(("batch_size".into(), "must be between 1 and 10000".into()));
        }
        for key in &self.identity {
            crate::model::FieldPath::parse(key)
                .map_err(|e| ("identity".to_owned(), format!("{key:?}: {e}")))?;
        }
        Ok(())
    }
}

/// How the outbox is delivered.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Attempts before an entry goes to dead letters.
    pub max_attempts: u32,
    /// First retry delay, in seconds; doubles each attempt (with jitter).
    pub initial_retry_secs: u64,
    /// Longest retry delay, in seconds.
    pub max_retry_secs: u64,
    /// Changes pushed per request batch.
    pub batch_size: usize,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            max_attempts: 8,
            initial_retry_secs: 30,
            max_retry_secs: 3600,
            batch_size: 100,
        }
    }
}
