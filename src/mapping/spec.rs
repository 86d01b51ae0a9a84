//! The mapping file format, as written in `mappings/**/*.toml`.
//!
//! ```toml
//! [mapping]
//! name = "xero-invoice-in"     # unique; how jobs and the CLI name it
//! version = 1                  # bump on every change: stored with each record version
//! system = "xero"
//! entity = "invoice"
//! direction = "in"             # in: system → canonical; out: canonical → system
//! include = ["../common.toml"] # optional: files with shared [tables] and [pipelines]
//!
//! [defaults]                   # optional, for the parsing steps
//! decimal = "en"               # number format of `decimal` without an argument
//! date = "iso"                 # format of `date` / `datetime` without an argument
//! zone = "UTC"                 # time zone for local times and dates of instants
//!
//! [fields]
//! number   = { from = "InvoiceNumber", required = true }
//! currency = { from = "CurrencyCode", pipe = ["trim", "upper"] }
//! total    = { from = "Total", pipe = ["decimal"] }
//! status   = { from = "Status", pipe = [{ table = "status" }] }
//! customer = { from = "Contact.ContactID", pipe = [{ lookup = "customer" }] }
//! name     = { from = ["Name", "LegalName"] }          # the first that is not blank
//! "billing.city" = { from = "Addresses[0].City" }
//! total_gross = { expr = "SubTotal + TotalTax" }       # exact decimal arithmetic
//! reference = { all = ["Prefix", "Number"], pipe = [{ join = "-" }] }
//! kind      = { value = "receivable" }                 # a constant
//! due_date  = { from = "DueDate", when = "Type == 'ACCREC'" }
//!
//! [fields.lines]               # one canonical line per element of LineItems
//! each = "LineItems"
//! fields = { quantity = { from = "Quantity", pipe = ["decimal"] } }
//!
//! [tables.status]
//! map = { AUTHORISED = "open", PAID = "paid" }
//! fallback = "error"           # "error" | "pass" | { default = "open" }
//! ignore_case = false
//!
//! [pipelines.amount]           # reusable: pipe = [{ use = "amount" }]
//! steps = ["trim", { decimal = "de" }, { round = 2 }]
//!
//! [[validate]]
//! rule = "due_date >= issue_date"
//! [[validate]]
//! field = "total"
//! min = "0"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A whole mapping file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    pub mapping: Spanned<Header>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub fields: BTreeMap<Spanned<String>, Spanned<FieldSpec>>,
    #[serde(default)]
    pub tables: BTreeMap<Spanned<String>, Spanned<TableSpec>>,
    #[serde(default)]
    pub pipelines: BTreeMap<Spanned<String>, Spanned<PipelineSpec>>,
    #[serde(default)]
    pub validate: Vec<Spanned<RuleSpec>>,
}

/// A file of shared tables and pipelines, named by `include`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedFile {
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    #[serde(default)]
    pub tables: BTreeMap<Spanned<String>, Spanned<TableSpec>>,
    #[serde(default)]
    pub pipelines: BTreeMap<Spanned<String>, Spanned<PipelineSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: Spanned<String>,
    pub version: u32,
    pub system: Spanned<String>,
    pub entity: Spanned<String>,
    pub direction: Direction,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
}

/// Which way a mapping moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// System → canonical.
    In,
    /// Canonical → system.
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub decimal: Option<Spanned<String>>,
    pub date: Option<Spanned<String>>,
    pub zone: Option<Spanned<String>>,
    pub phone_country: Option<Spanned<String>>,
}

/// One target field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// A source path, or several: the first that is not blank wins.
    pub from: Option<Spanned<OneOrMany>>,
    /// Several source paths, all kept as a list (for `join`).
    pub all: Option<Spanned<Vec<String>>>,
    /// A constant.
    pub value: Option<toml::Value>,
    /// An expression over the source record.
    pub expr: Option<Spanned<String>>,
    /// Map each element of this source array with `fields`.
    pub each: Option<Spanned<String>>,
    pub fields: Option<BTreeMap<Spanned<String>, Spanned<FieldSpec>>>,
    #[serde(default)]
    pub pipe: Vec<Spanned<toml::Value>>,
    /// Used when the result is blank.
    pub default: Option<toml::Value>,
    #[serde(default)]
    pub required: bool,
    /// Only map this field when the condition holds on the source record.
    pub when: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub map: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub fallback: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub ignore_case: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub steps: Vec<Spanned<toml::Value>>,
}

/// A validation rule on the mapped record.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The rule's name in reports; derived from the check when absent.
    pub name: Option<String>,
    /// What to say when it fails, instead of the generated message.
    pub message: Option<String>,
    /// The field checked, e.g. `email` or `lines[*].quantity`.
    pub field: Option<Spanned<String>>,
    #[serde(default)]
    pub required: bool,
    pub regex: Option<Spanned<String>>,
    pub min: Option<toml::Value>,
    pub max: Option<toml::Value>,
    #[serde(rename = "enum")]
    pub one_of: Option<Vec<toml::Value>>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    #[serde(default)]
    pub iban: bool,
    #[serde(default)]
    pub currency: bool,
    #[serde(default)]
    pub email: bool,
    /// A cross-field expression that must hold, e.g. `due_date >= issue_date`.
    pub rule: Option<Spanned<String>>,
}
