//! Identifiers: entity kinds, canonical ids, system names and external ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ModelError, snippet};

/// The kinds of canonical entity concord keeps in agreement.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A customer / debtor / account.
    Customer,
    /// A sales order.
    Order,
    /// An invoice (accounts receivable).
    Invoice,
    /// An incoming or outgoing payment.
    Payment,
    /// A line on a bank statement.
    BankTransaction,
}

impl EntityKind {
    /// Every kind, in a stable order.
    pub const ALL: &'static [EntityKind] = &[
        EntityKind::Customer,
        EntityKind::Order,
        EntityKind::Invoice,
        EntityKind::Payment,
        EntityKind::BankTransaction,
    ];

    /// The snake-case name used in configs, storage and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntityKind::Customer => "customer",
            EntityKind::Order => "order",
            EntityKind::Invoice => "invoice",
            EntityKind::Payment => "payment",
            EntityKind::BankTransaction => "bank_transaction",
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntityKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntityKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ModelError::UnknownEntity { name: snippet(s) })
    }
}

/// Maximum length of a [`CanonicalId`].
const CANONICAL_ID_MAX: usize = 128;

/// concord's own identifier for an entity, independent of any system.
///
/// Fresh ids are UUIDv7 strings (time-ordered, so stores index them well);
/// ids imported from elsewhere may be any printable ASCII token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CanonicalId(String);

impl CanonicalId {
    /// A new time-ordered UUIDv7 id.
    #[allow(clippy::new_without_default)]
    pub fn new() -> CanonicalId {
        CanonicalId(uuid::Uuid::now_v7().to_string())
    }

    /// Accepts 1..=128 characters of printable ASCII without whitespace.
    pub fn parse(s: &str) -> Result<CanonicalId, ModelError> {
        let err = |reason: &str| ModelError::InvalidCanonicalId {
            value: snippet(s),
            reason: reason.to_owned(),
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.len() > CANONICAL_ID_MAX {
            return Err(err("longer than 128 characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err("only printable ascii without whitespace is allowed"));
        }
        Ok(CanonicalId(s.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CanonicalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for CanonicalId {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CanonicalId::parse(s)
    }
}

impl TryFrom<String> for CanonicalId {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        CanonicalId::parse(&s)?;
        Ok(CanonicalId(s))
    }
}

impl From<CanonicalId> for String {
    fn from(id: CanonicalId) -> String {
        id.0
    }
}

/// Maximum length of a [`SystemName`].
const SYSTEM_NAME_MAX: usize = 64;

/// Name of a connected system as configured (`salesforce`, `sap-prod`, `bank_1`).
///
/// Restricted to a lower-case identifier alphabet so it is safe in file
/// names, metric labels and storage keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SystemName(String);

impl SystemName {
    /// Accepts 1..=64 chars of `a-z`, `0-9`, `_`, `-`, starting with a letter.
    pub fn parse(s: &str) -> Result<SystemName, ModelError> {
        let err = |reason: &str| ModelError::InvalidSystemName {
            value: snippet(s),
            reason: reason.to_owned(),
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.len() > SYSTEM_NAME_MAX {
            return Err(err("longer than 64 characters"));
        }
        if !s.as_bytes()[0].is_ascii_lowercase() {
            return Err(err("must start with a lower-case ascii letter"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(err(
                "only lower-case ascii letters, digits, '_' and '-' are allowed",
            ));
        }
        Ok(SystemName(s.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SystemName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SystemName {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SystemName::parse(s)
    }
}

impl TryFrom<String> for SystemName {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SystemName::parse(&s)
    }
}

impl From<SystemName> for String {
    fn from(n: SystemName) -> String {
        n.0
    }
}

/// Maximum length of an [`ExternalId`], in bytes.
const EXTERNAL_ID_MAX: usize = 512;

/// An entity's identifier inside one external system (opaque to concord).
///
/// Kept verbatim (no trimming or case folding): systems differ on what is
/// significant. Control characters are refused because they break logs and
/// protocols.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExternalId(String);

impl ExternalId {
    /// Accepts 1..=512 bytes without control characters.
    pub fn parse(s: &str) -> Result<ExternalId, ModelError> {
        let err = |reason: &str| ModelError::InvalidExternalId {
            value: snippet(s),
            reason: reason.to_owned(),
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.len() > EXTERNAL_ID_MAX {
            return Err(err("longer than 512 bytes"));
        }
        if s.chars().any(char::is_control) {
            return Err(err("control characters are not allowed"));
        }
        Ok(ExternalId(s.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ExternalId {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExternalId::parse(s)
    }
}

impl TryFrom<String> for ExternalId {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ExternalId::parse(&s)?;
        Ok(ExternalId(s))
    }
}

impl From<ExternalId> for String {
    fn from(id: ExternalId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_kind_names_round_trip() {
        for k in EntityKind::ALL {
            assert_eq!(k.as_str().parse::<EntityKind>().unwrap(), *k);
            assert_eq!(k.to_string(), k.as_str());
            assert_eq!(
                serde_json::to_string(k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
            let back: EntityKind = serde_json::from_str(&format!("\"{}\"", k.as_str())).unwrap();
            assert_eq!(back, *k);
        }
        assert_eq!(EntityKind::BankTransaction.as_str(), "bank_transaction");
    }

    #[test]
    fn unknown_entity_lists_valid_names() {
        let e = "Customer".parse::<EntityKind>().unwrap_err();
        assert_eq!(
            e,
            ModelError::UnknownEntity {
                name: "Customer".into()
            }
        );
        let msg = e.to_string();
        for k in EntityKind::ALL {
            assert!(msg.contains(k.as_str()), "{msg}");
        }
        assert!("".parse::<EntityKind>().is_err());
        assert!(serde_json::from_str::<EntityKind>("\"bankTransaction\"").is_err());
    }

    #[test]
    fn canonical_id_new_is_uuid_v7_and_ordered() {
        let a = CanonicalId::new();
        let b = CanonicalId::new();
        assert_ne!(a, b);
        let u = uuid::Uuid::parse_str(a.as_str()).unwrap();
        assert_eq!(u.get_version_num(), 7);
        assert!(CanonicalId::parse(a.as_str()).is_ok());
        assert!(a.to_string() <= b.to_string());
    }

    #[test]
    fn canonical_id_validation() {
        assert!(CanonicalId::parse("cust-42").is_ok());
        assert!(CanonicalId::parse(&"a".repeat(128)).is_ok());
        for bad in ["", " a", "a b", "a\tb", "é", "a\n"] {
            assert!(
                matches!(
                    CanonicalId::parse(bad),
                    Err(ModelError::InvalidCanonicalId { ref value, .. }) if value == bad
                ),
                "{bad:?}"
            );
        }
        assert!(CanonicalId::parse(&"a".repeat(129)).is_err());
        let id: CanonicalId = serde_json::from_str("\"x1\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"x1\"");
        assert!(serde_json::from_str::<CanonicalId>("\"\"").is_err());
        assert!(serde_json::from_str::<CanonicalId>("\"a b\"").is_err());
    }

    #[test]
    fn system_name_validation() {
        for ok in ["salesforce", "sap-prod", "bank_1", "a", &"a".repeat(64)] {
            assert_eq!(SystemName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "1bank", "_x", "-x", "SAP", "sap prod", "sap.prod", "é"] {
            let e = SystemName::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
        assert!(SystemName::parse(&"a".repeat(65)).is_err());
        assert!(serde_json::from_str::<SystemName>("\"Bad\"").is_err());
        assert_eq!(
            serde_json::from_str::<SystemName>("\"erp\"")
                .unwrap()
                .to_string(),
            "erp"
        );
    }

    #[test]
    fn external_id_validation() {
        for ok in ["42", " padded ", "a/b?c=d", "ünïcode", &"x".repeat(512)] {
            assert_eq!(ExternalId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "a\nb", "\u{0}", "tab\there", "\u{7f}"] {
            assert!(
                matches!(
                    ExternalId::parse(bad),
                    Err(ModelError::InvalidExternalId { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(ExternalId::parse(&"x".repeat(513)).is_err());
        assert!(serde_json::from_str::<ExternalId>("\"\"").is_err());
        assert_eq!(
            serde_json::to_string(&ExternalId::parse("A-1").unwrap()).unwrap(),
            "\"A-1\""
        );
    }
}
