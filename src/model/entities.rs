//! The canonical entities: customers, orders, invoices, payments and bank
//! statement lines.
//!
//! Conventions shared by every struct here:
//!
//! * `id` is concord's [`CanonicalId`], absent until the record is linked.
//! * Amounts inside a document are [`Decimal`]s written as JSON strings
//!   (`"100.50"`, scale preserved) in the document's single `currency`;
//!   typed accessors pair them into [`Money`]. JSON numbers are rejected for
//!   amounts because a float may already have lost precision. Amounts may
//!   carry at most [`MAX_SCALE`](super::MAX_SCALE) decimals.
//! * Dates are ISO `YYYY-MM-DD` ([`NaiveDate`]).
//! * Fields the model does not know are kept in `extra` (flattened), so a
//!   record round-trips untouched. `extra` must not hold keys that are also
//!   typed fields: on serialization both would be written.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::money::amount_serde;
use super::{CanonicalId, Currency, EntityKind, Iban, ModelError, Money};

/// A postal address. Every part is optional because systems disagree on
/// which parts they have.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Address {
    /// First street line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line1: Option<String>,
    /// Second street line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    /// City or locality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Postal code, kept as text (leading zeros, letters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// State, province or region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// ISO 3166-1 alpha-2 country code (not validated here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Fields the model does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A customer (debtor / account).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// Canonical id, absent until linked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<CanonicalId>,
    /// Display name (required).
    pub name: String,
    /// Registered legal name, when it differs from `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_name: Option<String>,
    /// VAT / tax identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_id: Option<String>,
    /// Primary e-mail address (not validated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Primary phone number (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Billing address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing: Option<Address>,
    /// Shipping address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping: Option<Address>,
    /// Known bank accounts; used to match incoming payments to the customer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bank_accounts: Vec<Iban>,
    /// Preferred invoicing currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    /// Credit limit, in its own currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_limit: Option<Money>,
    /// Source-defined status (e.g. `active`, `blocked`), kept as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Fields the model does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A sales order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Canonical id, absent until linked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<CanonicalId>,
    /// Business order number (required).
    pub number: String,
    /// Canonical id of the ordering customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CanonicalId>,
    /// Currency of every amount in the order.
    pub currency: Currency,
    /// Date the order was placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_date: Option<NaiveDate>,
    /// Source-defined status, kept as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Order lines, in source order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<OrderLine>,
    /// Order total as stated by the source (not recomputed from lines).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "amount_serde::option"
    )]
    pub total: Option<Decimal>,
    /// Fields the model does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One line of an [`Order`]; prices are in the order's currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    /// Article / stock keeping unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Quantity (decimal: weights, hours).
    #[serde(with = "amount_serde")]
    pub quantity: Decimal,
    /// Unit price, possibly with more decimals than the currency's minor unit.
    #[serde(with = "amount_serde")]
    pub unit_price: Decimal,
    /// Tax rate as a fraction or percentage, as the source states it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "amount_serde::option"
    )]
    pub tax_rate: Option<Decimal>,
    /// Line total as stated by the source.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "amount_serde::option"
    )]
    pub total: Option<Decimal>,
    /// Fields the model does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Lifecycle state of an [`Invoice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Not yet issued.
    Draft,
    /// Issued, nothing paid.
    Open,
    /// Issued, partly paid.
    PartiallyPaid,
    /// Fully paid.
    Paid,
    /// Cancelled.
    Void,
}

impl InvoiceStatus {
    /// The snake-case name used in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Draft => "draft",
            InvoiceStatus::Open => "open",
            InvoiceStatus::PartiallyPaid => "partially_paid",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Void => "void",
        }
    }
}

impl std::fmt::Display for InvoiceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An accounts-receivable invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    /// Canonical id, absent until linked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<CanonicalId>,
    /// Business invoice number (required).
    pub number: String,
    /// Canonical id of the invoiced customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CanonicalId>,
    /// Currency of every amount in the invoice.
    pub currency: Currency,
    /// Gross total.
    #[serde(with = "amount_serde")]
    pub total: Decimal,
    /// Amount still unpaid.
    #[serde(with = "amount_serde")]
    pub open_amount: Decimal,
    /// Issue date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_date: Option<NaiveDate>,
    /// Due date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_date: Option<NaiveDate>,
    /// Lifecycle state.
    pub status: InvoiceStatus,
    /// Structured creditor reference (e.g. ISO 11649 `RF18…`) used to match
    /// payments; not validated here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Fields the model does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Invoice {
    /// The gross total as [`Money`].
    pub fn total_money(&self) -> Result<Money, ModelError> {
        Money::new(self.total, self.currency)
    }

    /// The unpaid amount as [`Money`].
    pub fn open_money(&self) -> Result<Money, ModelError> {
        Money::new(self.open_amount, self.currency)
    }
}

impl Order {
    /// The stated total as [`Money`], if the source gave one.
    pub fn total_money(&self) -> Result<Option<Money>, ModelError> {
        self.total.map(|t| Money::new(t, self.currency)).transpose()
    }
}

/// Part of a payment applied to one invoice, in the payment's currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    /// Canonical id of the invoice paid.
    pub invoice: CanonicalId,
    /// Amount applied.
    #[serde(with = "amount_serde")]
    pub amount: Decimal,
    /// Fields the model does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A payment received from (or made to) a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    /// Canonical id, absent until linked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<CanonicalId>,
    /// Canonical id of the paying customer, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CanonicalId>,
    /// Amount paid; its currency is the currency of the allocations too.
    pub amount: Money,
    /// Payment (value) date.
    pub date: NaiveDate,
    /// Payment method (`sepa_credit_transfer`, `card`, …), kept as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Remittance reference as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// How the payment is applied to invoices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<Allocation>,
    /// Fields the model does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Payment {
    /// Sum of all allocations, in the payment's currency.
    pub fn allocated(&self) -> Result<Money, ModelError> {
        let currency = self.amount.currency();
        self.allocations
            .iter()
            .try_fold(Money::zero(currency), |sum, a| {
                sum.checked_add(&Money::new(a.amount, currency)?)
            })
    }

    /// Payment amount minus allocations (negative if over-allocated).
    pub fn unallocated(&self) -> Result<Money, ModelError> {
        self.amount.checked_sub(&self.allocated()?)
    }
}

/// One line of a bank statement (camt.053 / MT940 entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankTransaction {
    /// Canonical id, absent until linked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<CanonicalId>,
    /// Own account the line belongs to: an IBAN or another account id, so
    /// kept as text rather than [`Iban`].
    pub account: String,
    /// Booking date.
    pub booking_date: NaiveDate,
    /// Value date, if the bank states one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_date: Option<NaiveDate>,
    /// Signed amount: positive is a credit (money in), negative a debit.
    #[serde(with = "amount_serde")]
    pub amount: Decimal,
    /// Currency of `amount`.
    pub currency: Currency,
    /// Name of the other party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterparty_name: Option<String>,
    /// Account of the other party (IBAN or other), as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterparty_account: Option<String>,
    /// Unstructured or structured remittance information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remittance_info: Option<String>,
    /// End-to-end id set by the originator (SEPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_to_end_id: Option<String>,
    /// Bank's own reference for the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_reference: Option<String>,
    /// Bank transaction code (e.g. ISO 20022 domain/family or MT940 code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_transaction_code: Option<String>,
    /// Fields the model does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl BankTransaction {
    /// The signed amount as [`Money`].
    pub fn money(&self) -> Result<Money, ModelError> {
        Money::new(self.amount, self.currency)
    }

    /// True for money in (strictly positive amount).
    pub fn is_credit(&self) -> bool {
        self.amount > Decimal::ZERO
    }
}

/// Any canonical entity; the unit the store and sync engine move around.
///
/// Variants are not boxed: entities are built once per record and moved
/// rarely, and plain variants keep pattern matching simple for callers.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Entity {
    /// A customer.
    Customer(Customer),
    /// An order.
    Order(Order),
    /// An invoice.
    Invoice(Invoice),
    /// A payment.
    Payment(Payment),
    /// A bank statement line.
    BankTransaction(BankTransaction),
}

/// Objects with more keys than this skip culprit-field diagnosis (it costs
/// one re-parse per key).
const DIAGNOSE_MAX_KEYS: usize = 64;

/// Deserializes `value` as `T`, naming the offending top-level field in the
/// error where serde's message does not.
fn parse_record<T: DeserializeOwned>(kind: EntityKind, value: &Value) -> Result<T, ModelError> {
    let err = match T::deserialize(value) {
        Ok(t) => return Ok(t),
        Err(e) => e.to_string(),
    };
    let reason = match culprit_field::<T>(value, &err) {
        Some(field) => format!("field `{field}`: {err}"),
        None => err,
    };
    Err(ModelError::InvalidRecord {
        entity: kind,
        reason,
    })
}

/// serde_json's messages for bad values ("invalid type: …") do not say which
/// field held them. The first failing field is found by removing one key at
/// a time: removing the culprit makes the error change (or go away); removing
/// any other key leaves the same first error.
fn culprit_field<T: DeserializeOwned>(value: &Value, err: &str) -> Option<String> {
    if err.starts_with("missing field") || err.starts_with("unknown field") {
        return None;
    }
    let Value::Object(map) = value else {
        return None;
    };
    if map.len() > DIAGNOSE_MAX_KEYS {
        return None;
    }
    map.keys().find_map(|key| {
        let mut trimmed = map.clone();
        trimmed.remove(key);
        match T::deserialize(&Value::Object(trimmed)) {
            Err(e) if e.to_string() == err => None,
            _ => Some(key.clone()),
        }
    })
}

impl Entity {
    /// Which kind of entity this is.
    pub fn kind(&self) -> EntityKind {
        match self {
            Entity::Customer(_) => EntityKind::Customer,
            Entity::Order(_) => EntityKind::Order,
            Entity::Invoice(_) => EntityKind::Invoice,
            Entity::Payment(_) => EntityKind::Payment,
            Entity::BankTransaction(_) => EntityKind::BankTransaction,
        }
    }

    /// Parses a JSON record of the given kind.
    ///
    /// Errors are [`ModelError::InvalidRecord`] carrying serde's message,
    /// prefixed with the top-level field at fault when it can be determined.
    pub fn from_value(kind: EntityKind, value: Value) -> Result<Entity, ModelError> {
        Ok(match kind {
            EntityKind::Customer => Entity::Customer(parse_record(kind, &value)?),
            EntityKind::Order => Entity::Order(parse_record(kind, &value)?),
            EntityKind::Invoice => Entity::Invoice(parse_record(kind, &value)?),
            EntityKind::Payment => Entity::Payment(parse_record(kind, &value)?),
            EntityKind::BankTransaction => Entity::BankTransaction(parse_record(kind, &value)?),
        })
    }

    /// The record as JSON (the inverse of [`Entity::from_value`]).
    pub fn to_value(&self) -> Value {
        let result = match self {
            Entity::Customer(x) => serde_json::to_value(x),
            Entity::Order(x) => serde_json::to_value(x),
            Entity::Invoice(x) => serde_json::to_value(x),
            Entity::Payment(x) => serde_json::to_value(x),
            Entity::BankTransaction(x) => serde_json::to_value(x),
        };
        // Cannot fail: every field serializes to JSON with string keys.
        result.unwrap_or(Value::Null)
    }

    /// The canonical id, if assigned.
    pub fn id(&self) -> Option<&CanonicalId> {
        match self {
            Entity::Customer(x) => x.id.as_ref(),
            Entity::Order(x) => x.id.as_ref(),
            Entity::Invoice(x) => x.id.as_ref(),
            Entity::Payment(x) => x.id.as_ref(),
            Entity::BankTransaction(x) => x.id.as_ref(),
        }
    }

    /// Assigns (or clears) the canonical id.
    pub fn set_id(&mut self, id: Option<CanonicalId>) {
        match self {
            Entity::Customer(x) => x.id = id,
            Entity::Order(x) => x.id = id,
            Entity::Invoice(x) => x.id = id,
            Entity::Payment(x) => x.id = id,
            Entity::BankTransaction(x) => x.id = id,
        }
    }

    /// The amount the store indexes for matching: invoice → open amount,
    /// order → stated total, payment → amount, bank transaction → signed
    /// amount, customer → credit limit.
    ///
    /// `None` when the entity has no such amount, or when an amount field was
    /// set in code to more than [`MAX_SCALE`](super::MAX_SCALE) decimals
    /// (deserialized records never are).
    pub fn principal_amount(&self) -> Option<Money> {
        match self {
            Entity::Customer(x) => x.credit_limit,
            Entity::Order(x) => x.total_money().ok().flatten(),
            Entity::Invoice(x) => x.open_money().ok(),
            Entity::Payment(x) => Some(x.amount),
            Entity::BankTransaction(x) => x.money().ok(),
        }
    }
}

impl From<Customer> for Entity {
    fn from(x: Customer) -> Self {
        Entity::Customer(x)
    }
}

impl From<Order> for Entity {
    fn from(x: Order) -> Self {
        Entity::Order(x)
    }
}

impl From<Invoice> for Entity {
    fn from(x: Invoice) -> Self {
        Entity::Invoice(x)
    }
}

impl From<Payment> for Entity {
    fn from(x: Payment) -> Self {
        Entity::Payment(x)
    }
}

impl From<BankTransaction> for Entity {
    fn from(x: BankTransaction) -> Self {
        Entity::BankTransaction(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    fn money(s: &str) -> Money {
        Money::parse(s, eur()).unwrap()
    }

    fn round_trip(kind: EntityKind, fixture: Value) -> Entity {
        let entity = Entity::from_value(kind, fixture.clone()).unwrap();
        assert_eq!(entity.kind(), kind);
        assert_eq!(entity.to_value(), fixture, "{kind} did not round-trip");
        entity
    }

    fn customer_fixture() -> Value {
        json!({
            "id": "0190f5a2-7c1e-7d3a-9f00-000000000001",
            "name": "Acme GmbH",
            "legal_name": "Acme Gesellschaft mbH",
            "tax_id": "DE123456789",
            "email": "ap@acme.example",
            "phone": "+49 30 123456",
            "billing": {
                "line1": "Hauptstr. 1",
                "city": "Berlin",
                "postal_code": "10115",
                "country": "DE",
                "floor": "3rd"
            },
            "shipping": {"line1": "Lager 7", "line2": "Tor 2", "region": "BE"},
            "bank_accounts": ["DE89370400440532013000", "NL91ABNA0417164300"],
            "currency": "EUR",
            "credit_limit": {"amount": "10000.00", "currency": "EUR"},
            "status": "active",
            "crm_segment": "enterprise",
            "custom": {"nested": [1, 2.5, null, "x"], "flag": true}
        })
    }

    fn order_fixture() -> Value {
        json!({
            "id": "ord-1",
            "number": "SO-1001",
            "customer": "cust-1",
            "currency": "CHF",
            "order_date": "2024-03-01",
            "status": "confirmed",
            "lines": [
                {"sku": "A-1", "description": "Widget", "quantity": "2", "unit_price": "10.1250",
                 "tax_rate": "0.081", "total": "20.25", "warehouse": "ZRH"},
                {"quantity": "1.5", "unit_price": "100.50"}
            ],
            "total": "170.00",
            "channel": "web"
        })
    }

    fn invoice_fixture() -> Value {
        json!({
            "id": "inv-1",
            "number": "RE-2024-0001",
            "customer": "cust-1",
            "currency": "EUR",
            "total": "100.50",
            "open_amount": "40.50",
            "issue_date": "2024-01-31",
            "due_date": "2024-02-29",
            "status": "partially_paid",
            "reference": "RF18539007547034",
            "erp": {"doc_type": "RE", "company": 1000}
        })
    }

    fn payment_fixture() -> Value {
        json!({
            "id": "pay-1",
            "customer": "cust-1",
            "amount": {"amount": "150.00", "currency": "EUR"},
            "date": "2024-02-10",
            "method": "sepa_credit_transfer",
            "reference": "RE-2024-0001",
            "allocations": [
                {"invoice": "inv-1", "amount": "60.00"},
                {"invoice": "inv-2", "amount": "40.5", "note": "partial"}
            ],
            "batch": 7
        })
    }

    fn bank_fixture() -> Value {
        json!({
            "account": "DE89370400440532013000",
            "booking_date": "2024-02-10",
            "value_date": "2024-02-11",
            "amount": "-1234.5600",
            "currency": "EUR",
            "counterparty_name": "Lieferant AG",
            "counterparty_account": "CH9300762011623852957",
            "remittance_info": "INV 4711",
            "end_to_end_id": "E2E-1",
            "bank_reference": "BR-9",
            "bank_transaction_code": "PMNT-ICDT-ESCT",
            "camt": {"entry_ref": "1", "status": "BOOK"}
        })
    }

    #[test]
    fn customer_round_trip() {
        let Entity::Customer(c) = round_trip(EntityKind::Customer, customer_fixture()) else {
            panic!("wrong variant");
        };
        assert_eq!(c.name, "Acme GmbH");
        assert_eq!(c.bank_accounts.len(), 2);
        assert_eq!(c.billing.as_ref().unwrap().extra["floor"], json!("3rd"));
        assert_eq!(c.extra["crm_segment"], json!("enterprise"));
        assert_eq!(
            Entity::Customer(c.clone()).principal_amount(),
            Some(money("10000.00"))
        );
        // Minimal customer.
        let min = round_trip(EntityKind::Customer, json!({"name": "X"}));
        assert_eq!(min.id(), None);
        assert_eq!(min.principal_amount(), None);
    }

    #[test]
    fn order_round_trip() {
        let e = round_trip(EntityKind::Order, order_fixture());
        let Entity::Order(o) = &e else { panic!() };
        assert_eq!(o.lines[0].unit_price.to_string(), "10.1250");
        assert_eq!(o.lines[1].unit_price.to_string(), "100.50");
        let chf = Currency::parse("CHF").unwrap();
        assert_eq!(
            e.principal_amount(),
            Some(Money::parse("170.00", chf).unwrap())
        );
        let no_total = round_trip(
            EntityKind::Order,
            json!({"number": "SO-2", "currency": "EUR"}),
        );
        assert_eq!(no_total.principal_amount(), None);
    }

    #[test]
    fn invoice_round_trip() {
        let e = round_trip(EntityKind::Invoice, invoice_fixture());
        let Entity::Invoice(i) = &e else { panic!() };
        assert_eq!(i.status, InvoiceStatus::PartiallyPaid);
        assert_eq!(i.total_money().unwrap().to_string(), "100.50 EUR");
        assert_eq!(i.open_money().unwrap(), money("40.50"));
        assert_eq!(e.principal_amount(), Some(money("40.50")));
        assert_eq!(e.id().unwrap().as_str(), "inv-1");
        for s in ["draft", "open", "partially_paid", "paid", "void"] {
            let st: InvoiceStatus = serde_json::from_value(json!(s)).unwrap();
            assert_eq!(st.as_str(), s);
        }
    }

    #[test]
    fn payment_round_trip_and_allocation_sums() {
        let e = round_trip(EntityKind::Payment, payment_fixture());
        let Entity::Payment(p) = &e else { panic!() };
        assert_eq!(p.allocated().unwrap().amount().to_string(), "100.50");
        assert_eq!(p.unallocated().unwrap().amount().to_string(), "49.50");
        assert_eq!(e.principal_amount(), Some(money("150.00")));
        let mut over = p.clone();
        over.allocations[0].amount = Decimal::new(20000, 2);
        assert!(over.unallocated().unwrap().is_negative());
        let mut bad = p.clone();
        bad.allocations[0].amount = Decimal::new(1, 20);
        assert!(matches!(
            bad.allocated(),
            Err(ModelError::TooManyDecimals { .. })
        ));
    }

    #[test]
    fn bank_transaction_round_trip() {
        let e = round_trip(EntityKind::BankTransaction, bank_fixture());
        let Entity::BankTransaction(t) = &e else {
            panic!()
        };
        assert!(!t.is_credit());
        assert_eq!(t.money().unwrap().to_string(), "-1234.5600 EUR");
        assert_eq!(e.principal_amount(), Some(money("-1234.56")));
        let mut credit = t.clone();
        credit.amount = Decimal::new(1, 2);
        assert!(credit.is_credit());
        credit.amount = Decimal::ZERO;
        assert!(!credit.is_credit());
    }

    #[test]
    fn set_id_and_from_impls() {
        let mut e: Entity =
            Entity::from_value(EntityKind::BankTransaction, bank_fixture()).unwrap();
        assert_eq!(e.id(), None);
        let id = CanonicalId::new();
        e.set_id(Some(id.clone()));
        assert_eq!(e.id(), Some(&id));
        assert_eq!(e.to_value()["id"], json!(id.as_str()));
        let Entity::BankTransaction(t) = e else {
            panic!()
        };
        assert_eq!(Entity::from(t).kind(), EntityKind::BankTransaction);
    }

    fn reason(kind: EntityKind, v: Value) -> String {
        match Entity::from_value(kind, v) {
            Err(ModelError::InvalidRecord { entity, reason }) => {
                assert_eq!(entity, kind);
                reason
            }
            other => panic!("expected InvalidRecord, got {other:?}"),
        }
    }

    #[test]
    fn invalid_records_name_the_field() {
        let mut v = invoice_fixture();
        v.as_object_mut().unwrap().remove("number");
        assert_eq!(reason(EntityKind::Invoice, v), "missing field `number`");

        let mut v = invoice_fixture();
        v["total"] = json!("12,50");
        let r = reason(EntityKind::Invoice, v);
        assert!(
            r.starts_with("field `total`: invalid amount \"12,50\""),
            "{r}"
        );

        let mut v = invoice_fixture();
        v["total"] = json!(12.5);
        let r = reason(EntityKind::Invoice, v);
        assert!(r.starts_with("field `total`: invalid type"), "{r}");

        let mut v = invoice_fixture();
        v["status"] = json!("overdue");
        let r = reason(EntityKind::Invoice, v);
        assert!(r.starts_with("field `status`:"), "{r}");
        assert!(r.contains("overdue"), "{r}");

        let mut v = invoice_fixture();
        v["due_date"] = json!("31.01.2024");
        assert!(reason(EntityKind::Invoice, v).starts_with("field `due_date`:"));

        let mut v = invoice_fixture();
        v["open_amount"] = json!("0.00000000001");
        let r = reason(EntityKind::Invoice, v);
        assert!(
            r.contains("open_amount") && r.contains("too many decimal places"),
            "{r}"
        );

        let mut v = customer_fixture();
        v["bank_accounts"] = json!(["DE89370400440532013001"]);
        let r = reason(EntityKind::Customer, v);
        assert!(r.starts_with("field `bank_accounts`: invalid iban"), "{r}");

        let mut v = payment_fixture();
        v["amount"]["currency"] = json!("EURO");
        let r = reason(EntityKind::Payment, v);
        assert!(
            r.starts_with("field `amount`:") && r.contains("EURO"),
            "{r}"
        );

        let mut v = order_fixture();
        v["lines"][1]["quantity"] = json!("x");
        assert!(reason(EntityKind::Order, v).starts_with("field `lines`:"));

        let r = reason(EntityKind::BankTransaction, json!([1, 2]));
        assert!(r.contains("invalid type"), "{r}");
        let msg = Entity::from_value(EntityKind::Customer, json!({}))
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "invalid customer record: missing field `name`");
    }
}
