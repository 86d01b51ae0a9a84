//! A record's canonical JSON without building the typed entity when the
//! record is in that form already.
//!
//! The canonical JSON of a record is what [`Entity::from_value`] followed by
//! [`Entity::to_value`] makes of it: typed fields checked and written in
//! their one form, `null` options and empty lists dropped, unknown fields
//! kept as they are. Records written by a mapping are nearly always in that
//! form, and checking so in place costs a fraction of the round trip, which
//! copies every value twice. [`Entity::canonical`] checks and, only when the
//! record is not canonical (or is invalid), takes the round trip.
//!
//! The check works from a table of each entity's known fields. The tables
//! must follow the structs in `entities.rs`: a test builds every struct with
//! all fields set and compares the keys it serializes with the table, and a
//! property test compares the check with the round trip on varied records.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::entities::Entity;
use super::money::amount_serde;
use super::{CanonicalId, Currency, EntityKind, Iban, InvoiceStatus, ModelError, Money};

/// How a known field may appear in a canonical record.
#[derive(Debug, Clone, Copy)]
enum Presence {
    /// A plain field: always there.
    Required,
    /// An `Option`, skipped when `None`: absent or set, never `null`.
    Optional,
    /// A `Vec`, skipped when empty: absent or a non-empty array.
    List,
}

/// What a known field (or each element of a list field) holds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A `String`: any JSON string.
    Text,
    /// A struct of known fields with a flattened `extra` map.
    Record(&'static [Field]),
    /// Any other type: canonical when the JSON is what the type writes.
    /// The name picks the tests' sample values.
    Typed(#[allow(dead_code)] &'static str, fn(&Value) -> bool),
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    presence: Presence,
    kind: Kind,
}

const fn field(name: &'static str, presence: Presence, kind: Kind) -> Field {
    Field {
        name,
        presence,
        kind,
    }
}

use Kind::{Record, Text, Typed};
use Presence::{List, Optional, Required};

/// Whether `value` deserializes as `T` and serializes back to itself.
fn writes_back<T: DeserializeOwned + Serialize>(value: &Value) -> bool {
    T::deserialize(value)
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .is_some_and(|back| back == *value)
}

/// An amount as the entities hold it (`#[serde(with = "amount_serde")]`;
/// the `Option` form reads and writes a present value the same way).
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct Amount(#[serde(with = "amount_serde")] Decimal);

const ID: Kind = Typed("id", writes_back::<CanonicalId>);
const CURRENCY: Kind = Typed("currency", |v| match v {
    // What `writes_back::<Currency>` answers, without copying the text.
    Value::String(code) => Currency::parse(code).is_ok_and(|c| c.as_str() == code),
    _ => false,
});
const DATE: Kind = Typed("date", writes_back::<NaiveDate>);
const AMOUNT: Kind = Typed("amount", writes_back::<Amount>);
const MONEY: Kind = Typed("money", writes_back::<Money>);
const IBAN: Kind = Typed("iban", writes_back::<Iban>);
const INVOICE_STATUS: Kind = Typed("invoice status", writes_back::<InvoiceStatus>);

const ADDRESS: &[Field] = &[
    field("city", Optional, Text),
    field("country", Optional, Text),
    field("line1", Optional, Text),
    field("line2", Optional, Text),
    field("postal_code", Optional, Text),
    field("region", Optional, Text),
];

const CUSTOMER: &[Field] = &[
    field("bank_accounts", List, IBAN),
    field("billing", Optional, Record(ADDRESS)),
    field("credit_limit", Optional, MONEY),
    field("currency", Optional, CURRENCY),
    field("email", Optional, Text),
    field("id", Optional, ID),
    field("legal_name", Optional, Text),
    field("name", Required, Text),
    field("phone", Optional, Text),
    field("shipping", Optional, Record(ADDRESS)),
    field("status", Optional, Text),
    field("tax_id", Optional, Text),
];

const ORDER_LINE: &[Field] = &[
    field("description", Optional, Text),
    field("quantity", Required, AMOUNT),
    field("sku", Optional, Text),
    field("tax_rate", Optional, AMOUNT),
    field("total", Optional, AMOUNT),
    field("unit_price", Required, AMOUNT),
];

const ORDER: &[Field] = &[
    field("currency", Required, CURRENCY),
    field("customer", Optional, ID),
    field("id", Optional, ID),
    field("lines", List, Record(ORDER_LINE)),
    field("number", Required, Text),
    field("order_date", Optional, DATE),
    field("status", Optional, Text),
    field("total", Optional, AMOUNT),
];

const INVOICE: &[Field] = &[
    field("currency", Required, CURRENCY),
    field("customer", Optional, ID),
    field("due_date", Optional, DATE),
    field("id", Optional, ID),
    field("issue_date", Optional, DATE),
    field("number", Required, Text),
    field("open_amount", Required, AMOUNT),
    field("reference", Optional, Text),
    field("status", Required, INVOICE_STATUS),
    field("total", Required, AMOUNT),
];

const ALLOCATION: &[Field] = &[
    field("amount", Required, AMOUNT),
    field("invoice", Required, ID),
];

const PAYMENT: &[Field] = &[
    field("allocations", List, Record(ALLOCATION)),
    field("amount", Required, MONEY),
    field("customer", Optional, ID),
    field("date", Required, DATE),
    field("id", Optional, ID),
    field("method", Optional, Text),
    field("reference", Optional, Text),
];

const BANK_TRANSACTION: &[Field] = &[
    field("account", Required, Text),
    field("amount", Required, AMOUNT),
    field("bank_reference", Optional, Text),
    field("bank_transaction_code", Optional, Text),
    field("booking_date", Required, DATE),
    field("counterparty_account", Optional, Text),
    field("counterparty_name", Optional, Text),
    field("currency", Required, CURRENCY),
    field("end_to_end_id", Optional, Text),
    field("id", Optional, ID),
    field("remittance_info", Optional, Text),
    field("value_date", Optional, DATE),
];

fn fields(kind: EntityKind) -> &'static [Field] {
    match kind {
        EntityKind::Customer => CUSTOMER,
        EntityKind::Order => ORDER,
        EntityKind::Invoice => INVOICE,
        EntityKind::Payment => PAYMENT,
        EntityKind::BankTransaction => BANK_TRANSACTION,
    }
}

/// Whether the round trip through the struct of `fields` (sorted by name)
/// would give `map` back unchanged (and succeed). `false` also when unsure.
/// The fields are found in one pass over the map's sorted keys.
fn is_canonical(fields: &[Field], map: &Map<String, Value>) -> bool {
    let mut entries = map.iter().peekable();
    fields.iter().all(|f| {
        let mut value = None;
        while let Some((key, v)) = entries.peek() {
            match key.as_str().cmp(f.name) {
                std::cmp::Ordering::Less => {
                    entries.next();
                }
                std::cmp::Ordering::Equal => {
                    value = Some(*v);
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        match value {
            None => !matches!(f.presence, Required),
            // Dropped from options; no field type here reads it as a value.
            Some(Value::Null) => false,
            Some(Value::Array(items)) if matches!(f.presence, List) => {
                !items.is_empty() && items.iter().all(|item| holds(f.kind, item))
            }
            Some(_) if matches!(f.presence, List) => false,
            Some(value) => holds(f.kind, value),
        }
    })
}

fn holds(kind: Kind, value: &Value) -> bool {
    match (kind, value) {
        (Text, value) => value.is_string(),
        (Record(fields), Value::Object(map)) => is_canonical(fields, map),
        (Record(_), _) => false,
        (Typed(_, check), value) => check(value),
    }
}

impl Entity {
    /// The canonical JSON of `value` as a `kind` record: exactly
    /// `Entity::from_value(kind, value)?.to_value()`, without the round
    /// trip when `value` is canonical already.
    pub fn canonical(kind: EntityKind, value: Value) -> Result<Value, ModelError> {
        match &value {
            Value::Object(map) if is_canonical(fields(kind), map) => Ok(value),
            _ => Entity::from_value(kind, value).map(|e| e.to_value()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Address, Allocation, BankTransaction, Customer, Invoice};
    use crate::model::{Order, OrderLine, Payment};
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use serde_json::json;
    use std::str::FromStr;

    fn round_trip(kind: EntityKind, value: Value) -> Result<Value, ModelError> {
        Entity::from_value(kind, value).map(|e| e.to_value())
    }

    fn keys(value: impl Serialize) -> Vec<String> {
        match serde_json::to_value(value).unwrap() {
            Value::Object(map) => map.keys().cloned().collect(),
            other => panic!("{other}"),
        }
    }

    /// The table's names, which must be sorted (and so the keys a map
    /// holds them under).
    fn names(fields: &[Field]) -> Vec<String> {
        let names: Vec<String> = fields.iter().map(|f| f.name.to_owned()).collect();
        assert!(names.is_sorted(), "{names:?}");
        names
    }

    /// Every struct with every field set (a new field fails to compile
    /// here): the keys it writes are the table's.
    #[test]
    fn tables_name_every_field() {
        let eur = Currency::parse("EUR").unwrap();
        let id = || Some(CanonicalId::new());
        let text = || Some("x".to_owned());
        let dec = Decimal::from_str("1.50").unwrap();
        let date = NaiveDate::from_ymd_opt(2024, 1, 31).unwrap();
        let address = Address {
            line1: text(),
            line2: text(),
            city: text(),
            postal_code: text(),
            region: text(),
            country: text(),
            extra: Map::new(),
        };
        assert_eq!(keys(&address), names(ADDRESS));
        let customer = Customer {
            id: id(),
            name: "x".into(),
            legal_name: text(),
            tax_id: text(),
            email: text(),
            phone: text(),
            billing: Some(address.clone()),
            shipping: Some(address),
            bank_accounts: vec![Iban::parse("DE89370400440532013000").unwrap()],
            currency: Some(eur),
            credit_limit: Some(Money::new(dec, eur).unwrap()),
            status: text(),
            extra: Map::new(),
        };
        assert_eq!(keys(&customer), names(CUSTOMER));
        let line = OrderLine {
            sku: text(),
            description: text(),
            quantity: dec,
            unit_price: dec,
            tax_rate: Some(dec),
            total: Some(dec),
            extra: Map::new(),
        };
        assert_eq!(keys(&line), names(ORDER_LINE));
        let order = Order {
            id: id(),
            number: "x".into(),
            customer: id(),
            currency: eur,
            order_date: Some(date),
            status: text(),
            lines: vec![line],
            total: Some(dec),
            extra: Map::new(),
        };
        assert_eq!(keys(&order), names(ORDER));
        let invoice = Invoice {
            id: id(),
            number: "x".into(),
            customer: id(),
            currency: eur,
            total: dec,
            open_amount: dec,
            issue_date: Some(date),
            due_date: Some(date),
            status: InvoiceStatus::Open,
            reference: text(),
            extra: Map::new(),
        };
        assert_eq!(keys(&invoice), names(INVOICE));
        let allocation = Allocation {
            invoice: CanonicalId::new(),
            amount: dec,
            extra: Map::new(),
        };
        assert_eq!(keys(&allocation), names(ALLOCATION));
        let payment = Payment {
            id: id(),
            customer: id(),
            amount: Money::new(dec, eur).unwrap(),
            date,
            method: text(),
            reference: text(),
            allocations: vec![allocation],
            extra: Map::new(),
        };
        assert_eq!(keys(&payment), names(PAYMENT));
        let bank = BankTransaction {
            id: id(),
            account: "x".into(),
            booking_date: date,
            value_date: Some(date),
            amount: dec,
            currency: eur,
            counterparty_name: text(),
            counterparty_account: text(),
            remittance_info: text(),
            end_to_end_id: text(),
            bank_reference: text(),
            bank_transaction_code: text(),
            extra: Map::new(),
        };
        assert_eq!(keys(&bank), names(BANK_TRANSACTION));
    }

    #[test]
    fn canonical_records_come_back_as_they_are() {
        let customer = json!({
            "name": "Muster GmbH",
            "currency": "EUR",
            "billing": { "city": "Berlin", "floor": 3 },
            "bank_accounts": ["DE89370400440532013000"],
            "credit_limit": { "amount": "100.50", "currency": "EUR" },
            "segment": null,
        });
        let map = customer.as_object().unwrap();
        assert!(is_canonical(CUSTOMER, map));
        assert_eq!(
            Entity::canonical(EntityKind::Customer, customer.clone()),
            Ok(customer)
        );
        for not in [
            json!({ "name": "x", "email": null }),
            json!({ "name": "x", "bank_accounts": [] }),
            json!({ "name": "x", "currency": "eur" }),
            json!({ "name": "x", "billing": "Berlin" }),
            json!({ "legal_name": "x" }),
        ] {
            assert!(!is_canonical(CUSTOMER, not.as_object().unwrap()), "{not}");
            assert_eq!(
                Entity::canonical(EntityKind::Customer, not.clone()),
                round_trip(EntityKind::Customer, not)
            );
        }
    }

    /// Values of every shape, canonical or not, valid or not.
    fn any_value() -> impl Strategy<Value = Value> {
        prop::sample::select(vec![
            json!(null),
            json!(true),
            json!(12),
            json!(1.5),
            json!(""),
            json!("x"),
            json!("EUR"),
            json!("eur"),
            json!("XXX"),
            json!("100.50"),
            json!("1e3"),
            json!("+1.5"),
            json!(" 1.5"),
            json!("0.123456789012345"),
            json!("2024-01-31"),
            json!("2024-1-31"),
            json!("2024-02-30"),
            json!("DE89370400440532013000"),
            json!("DE89 3704 0044 0532 0130 00"),
            json!("de89370400440532013000"),
            json!("a b"),
            json!("open"),
            json!("Open"),
            json!("partially_paid"),
            json!([]),
            json!(["x"]),
            json!({}),
            json!({ "amount": "12.30", "currency": "EUR" }),
            json!({ "amount": "12.30", "currency": "EUR", "x": 1 }),
            json!({ "amount": 12.3, "currency": "EUR" }),
            json!(["12.30", "EUR"]),
        ])
    }

    /// Canonical values of a kind.
    fn canonical_value(kind: Kind) -> BoxedStrategy<Value> {
        let pick = |values: Vec<Value>| prop::sample::select(values).boxed();
        match kind {
            Text => pick(vec![json!(""), json!("x"), json!(" Muster  GmbH ")]),
            Record(fields) => record(fields).boxed(),
            Typed("id", _) => pick(vec![
                json!("cust-1"),
                json!("0190f5a2-7c1e-7d3a-9f00-000000000001"),
            ]),
            Typed("currency", _) => pick(vec![json!("EUR"), json!("JPY")]),
            Typed("date", _) => pick(vec![json!("2024-01-31"), json!("0001-01-01")]),
            Typed("amount", _) => pick(vec![json!("100.50"), json!("-1"), json!("0.000001")]),
            Typed("money", _) => pick(vec![
                json!({ "amount": "12.30", "currency": "EUR" }),
                json!({ "amount": "-5", "currency": "JPY" }),
            ]),
            Typed("iban", _) => pick(vec![json!("DE89370400440532013000")]),
            Typed("invoice status", _) => pick(vec![json!("open"), json!("partially_paid")]),
            Typed(name, _) => panic!("no samples for {name}"),
        }
    }

    /// A value for a field: mostly canonical for its kind (a list of such
    /// for a list), sometimes anything.
    fn field_value(f: &'static Field) -> BoxedStrategy<Value> {
        let canonical = match f.presence {
            List => prop::collection::vec(canonical_value(f.kind), 0..3)
                .prop_map(Value::Array)
                .boxed(),
            _ => canonical_value(f.kind),
        };
        prop_oneof![6 => canonical, 1 => any_value()].boxed()
    }

    /// Records of the struct of `fields`: each field absent or set, plus
    /// fields the struct does not know.
    fn record(fields: &'static [Field]) -> impl Strategy<Value = Value> {
        let known: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
            .iter()
            .map(|f| {
                // Required fields are there most of the time.
                let weight = if matches!(f.presence, Required) {
                    12
                } else {
                    1
                };
                prop_oneof![
                    1 => Just(None),
                    weight => field_value(f).prop_map(move |v| Some((f.name.to_owned(), v))),
                ]
                .boxed()
            })
            .collect();
        let unknown = prop::collection::btree_map("[a-z]{1,3}", any_value(), 0..3);
        (known, unknown).prop_map(|(known, unknown)| {
            let mut map: Map<String, Value> = unknown.into_iter().collect();
            map.extend(known.into_iter().flatten());
            Value::Object(map)
        })
    }

    const KINDS: [EntityKind; 5] = [
        EntityKind::Customer,
        EntityKind::Order,
        EntityKind::Invoice,
        EntityKind::Payment,
        EntityKind::BankTransaction,
    ];

    fn case() -> impl Strategy<Value = (EntityKind, Value)> {
        prop::sample::select(KINDS.to_vec())
            .prop_flat_map(|kind| (Just(kind), record(fields(kind))))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn check_agrees_with_the_round_trip((kind, value) in case()) {
            let expected = round_trip(kind, value.clone());
            if let Value::Object(map) = &value
                && is_canonical(fields(kind), map)
            {
                prop_assert_eq!(Ok(value.clone()), expected.clone(), "{}", value);
            }
            prop_assert_eq!(Entity::canonical(kind, value), expected);
        }
    }

    /// The property above is only worth something if the check says yes
    /// often enough, for every entity.
    #[test]
    fn the_check_says_yes_for_every_entity() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for kind in KINDS {
            let strategy = record(fields(kind));
            let yes = (0..500)
                .filter(|_| {
                    let value = strategy.new_tree(&mut runner).unwrap().current();
                    is_canonical(fields(kind), value.as_object().unwrap())
                })
                .count();
            assert!(yes >= 50, "{kind}: {yes} of 500");
        }
    }
}
