//! The canonical fields a mapping may write (inbound) or read (outbound),
//! with their kinds, so a typo in a mapping fails at load time and not on
//! the millionth record.

use crate::model::EntityKind;

/// What a canonical field holds, as far as mappings care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    Decimal,
    Date,
    Currency,
    Iban,
    /// A canonical id (resolved by `lookup`).
    Id,
    Object(&'static [(&'static str, FieldKind)]),
    List(&'static FieldKind),
}

impl FieldKind {
    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Text => "text",
            FieldKind::Decimal => "decimal",
            FieldKind::Date => "date",
            FieldKind::Currency => "currency",
            FieldKind::Iban => "iban",
            FieldKind::Id => "id",
            FieldKind::Object(_) => "object",
            FieldKind::List(_) => "list",
        }
    }
}

use FieldKind::*;

const ADDRESS: &[(&str, FieldKind)] = &[
    ("line1", Text),
    ("line2", Text),
    ("city", Text),
    ("postal_code", Text),
    ("region", Text),
    ("country", Text),
];

const MONEY: &[(&str, FieldKind)] = &[("amount", Decimal), ("currency", Currency)];

const CUSTOMER: &[(&str, FieldKind)] = &[
    ("id", Id),
    ("name", Text),
    ("legal_name", Text),
    ("tax_id", Text),
    ("email", Text),
    ("phone", Text),
    ("billing", Object(ADDRESS)),
    ("shipping", Object(ADDRESS)),
    ("bank_accounts", List(&Iban)),
    ("currency", Currency),
    ("credit_limit", Object(MONEY)),
    ("status", Text),
];

const ORDER_LINE: &[(&str, FieldKind)] = &[
    ("sku", Text),
    ("description", Text),
    ("quantity", Decimal),
    ("unit_price", Decimal),
    ("tax_rate", Decimal),
    ("total", Decimal),
];

const ORDER: &[(&str, FieldKind)] = &[
    ("id", Id),
    ("number", Text),
    ("customer", Id),
    ("currency", Currency),
    ("order_date", Date),
    ("status", Text),
    ("lines", List(&Object(ORDER_LINE))),
    ("total", Decimal),
];

const INVOICE: &[(&str, FieldKind)] = &[
    ("id", Id),
    ("number", Text),
    ("customer", Id),
    ("currency", Currency),
    ("total", Decimal),
    ("open_amount", Decimal),
    ("issue_date", Date),
    ("due_date", Date),
    ("status", Text),
    ("reference", Text),
];

const ALLOCATION: &[(&str, FieldKind)] = &[("invoice", Id), ("amount", Decimal)];

const PAYMENT: &[(&str, FieldKind)] = &[
    ("id", Id),
    ("customer", Id),
    ("amount", Object(MONEY)),
    ("date", Date),
    ("method", Text),
    ("reference", Text),
    ("allocations", List(&Object(ALLOCATION))),
];

const BANK_TRANSACTION: &[(&str, FieldKind)] = &[
    ("id", Id),
    ("account", Text),
    ("booking_date", Date),
    ("value_date", Date),
    ("amount", Decimal),
    ("currency", Currency),
    ("counterparty_name", Text),
    ("counterparty_account", Text),
    ("remittance_info", Text),
    ("end_to_end_id", Text),
    ("bank_reference", Text),
    ("bank_transaction_code", Text),
];

/// The top-level fields of an entity.
pub fn fields(entity: EntityKind) -> &'static [(&'static str, FieldKind)] {
    match entity {
        EntityKind::Customer => CUSTOMER,
        EntityKind::Order => ORDER,
        EntityKind::Invoice => INVOICE,
        EntityKind::Payment => PAYMENT,
        EntityKind::BankTransaction => BANK_TRANSACTION,
    }
}

/// The name `extra` fields go under: `extra.KEY` in a mapping is the
/// top-level key `KEY` of the canonical record (the model flattens `extra`).
pub const EXTRA: &str = "extra";

/// Looks up the kind of a dotted path of keys (indices already stripped) in
/// `fields`; `Ok(None)` for `extra.…`, `Err` with the known names otherwise.
pub fn lookup(
    fields: &'static [(&'static str, FieldKind)],
    keys: &[&str],
) -> Result<Option<FieldKind>, String> {
    let Some((first, rest)) = keys.split_first() else {
        return Err("empty path".into());
    };
    if *first == EXTRA {
        return if rest.is_empty() {
            Err("name the extra field: extra.NAME".into())
        } else {
            Ok(None)
        };
    }
    let Some((_, kind)) = fields.iter().find(|(name, _)| name == first) else {
        let known: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "unknown field {first:?}; known: {}, or extra.NAME",
            known.join(", ")
        ));
    };
    let mut kind = *kind;
    if rest.is_empty() {
        // The whole field; a list stays a list (callers unwrap it when the
        // path goes on with an index).
        return Ok(Some(kind));
    }
    if let List(inner) = kind {
        kind = *inner;
    }
    match kind {
        Object(sub) => lookup(sub, rest),
        other => Err(format!(
            "{first:?} is a {} field and has no field {:?}",
            other.name(),
            rest[0]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_fields() {
        let f = fields(EntityKind::Order);
        assert_eq!(lookup(f, &["lines", "quantity"]), Ok(Some(Decimal)));
        assert_eq!(lookup(f, &["order_date"]), Ok(Some(Date)));
        assert!(matches!(lookup(f, &["lines"]), Ok(Some(List(_)))));
        assert_eq!(lookup(f, &["extra", "erp_region"]), Ok(None));
        let err = lookup(f, &["totl"]).unwrap_err();
        assert!(err.contains("unknown field \"totl\"") && err.contains("total"));
        assert!(lookup(f, &["total", "x"]).is_err());
        assert_eq!(
            lookup(fields(EntityKind::Customer), &["billing", "city"]),
            Ok(Some(Text))
        );
    }
}
