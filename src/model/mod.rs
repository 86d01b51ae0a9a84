//! Canonical data model for concord.
//!
//! Every connector maps its system's records into these types (or into the
//! equivalent `serde_json::Value` shape), and mapping, merge, conflict
//! detection and storage all work on them. The guiding rules:
//!
//! * **Money is exact.** Amounts are [`rust_decimal::Decimal`] paired with an
//!   ISO 4217 [`Currency`]; `f64` never appears. Amounts travel through JSON
//!   as strings (`"12.30"`) so that scale survives round trips.
//! * **Parse at the edge.** Newtypes ([`Currency`], [`Iban`], [`CanonicalId`],
//!   [`SystemName`], [`ExternalId`], [`FieldPath`]) can only be built through
//!   validating constructors, and their serde implementations validate too,
//!   so a value of the type is always well formed.
//! * **Unknown data survives.** Every entity keeps fields it does not know in
//!   a flattened `extra` map, so records round-trip untouched.
//! * **Nothing panics on input.** All fallible operations return
//!   [`ModelError`], whose messages name the offending value and the problem.

mod canonical;
mod entities;
mod hash;
mod ids;
mod money;
mod path;

pub use entities::{
    Address, Allocation, BankTransaction, Customer, Entity, Invoice, InvoiceStatus, Order,
    OrderLine, Payment,
};
pub use hash::{canonical_json, content_hash, source_hash, text_hash};
pub use ids::{CanonicalId, EntityKind, ExternalId, SystemName};
pub use money::{Currency, Iban, MAX_SCALE, Money};
pub use path::{FieldPath, MAX_ARRAY_GROWTH, Segment, leaves};

/// Errors produced while parsing or manipulating model values.
///
/// Every variant carries the offending value (truncated to a readable length
/// when it comes from untrusted input) so log lines are actionable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Not a known, active ISO 4217 code.
    #[error("invalid currency code {code:?}: expected three upper-case ISO 4217 letters")]
    InvalidCurrency {
        /// The rejected input.
        code: String,
    },
    /// IBAN failed normalisation, country, length or checksum validation.
    #[error("invalid iban {value:?}: {reason}")]
    InvalidIban {
        /// The rejected input.
        value: String,
        /// What was wrong.
        reason: String,
    },
    /// Arithmetic between two different currencies.
    #[error("currency mismatch: {left} vs {right}")]
    CurrencyMismatch {
        /// Currency of the left operand.
        left: Currency,
        /// Currency of the right operand.
        right: Currency,
    },
    /// Amount carries more decimal places than [`MAX_SCALE`].
    #[error("amount {value:?} has too many decimal places: at most {max} allowed")]
    TooManyDecimals {
        /// The rejected amount.
        value: String,
        /// The maximum scale.
        max: u32,
    },
    /// Amount string is not a plain decimal, or does not fit.
    #[error("invalid amount {value:?}: {reason}")]
    InvalidAmount {
        /// The rejected input.
        value: String,
        /// What was wrong.
        reason: String,
    },
    /// Arithmetic result does not fit in a `Decimal`.
    #[error("arithmetic overflow: {left} {op} {right} does not fit in a decimal")]
    Overflow {
        /// Operation symbol, e.g. `+`.
        op: &'static str,
        /// Left operand.
        left: String,
        /// Right operand.
        right: String,
    },
    /// Entity name is not one of [`EntityKind::ALL`].
    #[error(
        "unknown entity {name:?}: expected one of customer, order, invoice, payment, bank_transaction"
    )]
    UnknownEntity {
        /// The rejected input.
        name: String,
    },
    /// Canonical id failed validation.
    #[error("invalid canonical id {value:?}: {reason}")]
    InvalidCanonicalId {
        /// The rejected input.
        value: String,
        /// What was wrong.
        reason: String,
    },
    /// System name failed validation.
    #[error("invalid system name {value:?}: {reason}")]
    InvalidSystemName {
        /// The rejected input.
        value: String,
        /// What was wrong.
        reason: String,
    },
    /// External id failed validation.
    #[error("invalid external id {value:?}: {reason}")]
    InvalidExternalId {
        /// The rejected input.
        value: String,
        /// What was wrong.
        reason: String,
    },
    /// Field path string does not follow the grammar, or is unusable.
    #[error("invalid field path {path:?}: {reason}")]
    InvalidFieldPath {
        /// The rejected path.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// Field path cannot be applied to a document (e.g. descending into a number).
    #[error("field path conflict at {path:?}: {reason}")]
    FieldPathConflict {
        /// The path being applied.
        path: String,
        /// What was in the way.
        reason: String,
    },
    /// JSON document does not deserialize into the entity type.
    #[error("invalid {entity} record: {reason}")]
    InvalidRecord {
        /// Entity kind being parsed.
        entity: EntityKind,
        /// Serde's message, prefixed with the offending field where known.
        reason: String,
    },
}

/// Longest excerpt of untrusted input copied into an error message.
const SNIPPET_MAX_CHARS: usize = 80;

/// Copies `s` for an error message, truncating hostile-length input.
pub(crate) fn snippet(s: &str) -> String {
    let mut chars = s.char_indices();
    match chars.nth(SNIPPET_MAX_CHARS) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_truncates_long_input() {
        assert_eq!(snippet("abc"), "abc");
        let long = "é".repeat(200);
        let s = snippet(&long);
        assert_eq!(s.chars().count(), SNIPPET_MAX_CHARS + 1);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn messages_are_lower_case_without_trailing_period() {
        let e = ModelError::InvalidCurrency {
            code: "EURO".into(),
        };
        assert_eq!(
            e.to_string(),
            r#"invalid currency code "EURO": expected three upper-case ISO 4217 letters"#
        );
        let e = ModelError::UnknownEntity { name: "foo".into() };
        let msg = e.to_string();
        assert!(msg.starts_with("unknown entity \"foo\""));
        assert!(!msg.ends_with('.'));
    }
}
