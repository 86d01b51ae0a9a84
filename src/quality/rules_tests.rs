//! One test module per rule: it fires on the case it is for, stays quiet
//! on the near miss, honours its thresholds, and names a stable cause.

// Datasets are built field by field: each test sets only what its rule reads.
#![allow(clippy::field_reassign_with_default)]

use super::*;
use crate::model::Iban;
use crate::store::QuarantineItem;
use chrono::TimeZone;
use serde_json::json;

fn id(n: u32) -> CanonicalId {
    CanonicalId::parse(&format!("0190f5a2-7c1e-7d3a-9f00-{n:012}")).unwrap()
}

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

fn loaded<T>(n: u32, record: T) -> Loaded<T> {
    Loaded {
        id: id(n),
        version: 1,
        stored_on: d("2026-10-01"),
        record,
    }
}

fn customer(name: &str) -> Customer {
    serde_json::from_value(json!({ "name": name })).unwrap()
}

fn invoice(number: &str, customer: Option<u32>, total: &str, open: &str, due: &str) -> Invoice {
    let mut v = json!({
        "number": number, "currency": "EUR", "total": total, "open_amount": open,
        "status": if open == "0" { "paid" } else { "open" }, "due_date": due,
    });
    if let Some(c) = customer {
        v["customer"] = json!(id(c).to_string());
    }
    serde_json::from_value(v).unwrap()
}

fn order(number: &str, customer: u32, total: &str, date: &str) -> Order {
    serde_json::from_value(json!({
        "number": number, "customer": id(customer).to_string(), "currency": "EUR",
        "total": total, "order_date": date,
    }))
    .unwrap()
}

fn bank_tx(amount: &str, date: &str) -> BankTransaction {
    serde_json::from_value(json!({
        "account": "DE89370400440532013000", "booking_date": date, "amount": amount,
        "currency": "EUR", "counterparty_name": "ACME GmbH",
        "counterparty_account": "FR1420041010050500013M02606",
    }))
    .unwrap()
}

fn payment(customer: u32, amount: &str, date: &str, reference: &str) -> Payment {
    serde_json::from_value(json!({
        "customer": id(customer).to_string(),
        "amount": {"amount": amount, "currency": "EUR"},
        "date": date, "reference": reference,
    }))
    .unwrap()
}

fn only(settings: &mut QualitySettings, rule: &str) {
    let r = &mut settings.rules;
    r.mapping_failure.enabled = rule == "mapping_failure";
    r.duplicate_record.enabled = rule == "duplicate_record";
    r.missing_in_linked_system.enabled = rule == "missing_in_linked_system";
    r.field_mismatch.enabled = rule == "field_mismatch";
    r.consistency_rate.enabled = rule == "consistency_rate";
    r.receipt_unmatched.enabled = rule == "receipt_unmatched";
    r.overdue_receivable.enabled = rule == "overdue_receivable";
    r.duplicate_payment.enabled = rule == "duplicate_payment";
    r.overpayment.enabled = rule == "overpayment";
    r.payer_account_changed.enabled = rule == "payer_account_changed";
    r.large_outside_hours.enabled = rule == "large_outside_hours";
    r.split_order.enabled = rule == "split_order";
    r.credit_limit_exceeded.enabled = rule == "credit_limit_exceeded";
    r.credit_usage.enabled = rule == "credit_usage";
}

/// Runs one rule; asserts that re-running gives the same causes.
fn run(data: &Dataset, rule: &str, tweak: impl FnOnce(&mut QualitySettings)) -> Vec<NewAlert> {
    let mut s = QualitySettings::default();
    only(&mut s, rule);
    tweak(&mut s);
    let first = evaluate(data, &s, now());
    assert_eq!(first.rules, vec![rule]);
    let again = evaluate(data, &s, now());
    let causes = |e: &Evaluation| e.alerts.iter().map(|a| a.cause.clone()).collect::<Vec<_>>();
    assert_eq!(causes(&first), causes(&again), "causes must be stable");
    for a in &first.alerts {
        assert_eq!(a.rule, rule);
        assert!(a.cause.is_some(), "every quality alert has a cause");
        assert!(!a.reason.is_empty());
    }
    first.alerts
}

#[test]
fn every_rule_is_listed_and_runs_by_default() {
    let e = evaluate(&Dataset::default(), &QualitySettings::default(), now());
    assert_eq!(e.rules, RULES);
    assert!(e.alerts.is_empty());
    assert_eq!(e.consistency.rate(), None);
}

#[test]
fn mapping_failures_alert_quarantine_and_unparsable_records() {
    let mut data = Dataset::default();
    data.quarantine.push(QuarantinedRecord {
        id: 7,
        item: QuarantineItem {
            system: "crm".into(),
            entity: EntityKind::Customer,
            external_id: Some("C-1".into()),
            raw: json!({}),
            reason: "name is required".into(),
            rule: None,
            field_path: Some("name".into()),
        },
        status: "open".into(),
        at: now(),
    });
    data.invalid.push(InvalidRecord {
        entity: EntityKind::Invoice,
        id: id(1),
        version: 3,
        reason: "field `total`: bad".into(),
    });
    let alerts = run(&data, "mapping_failure", |_| {});
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0].cause.as_deref(), Some("quarantine:7"));
    assert!(
        alerts[0].reason.contains("name is required"),
        "{}",
        alerts[0].reason
    );
    assert!(alerts[0].reason.contains("at `name`"));
    assert!(alerts[1].cause.as_deref().unwrap().ends_with(":v3"));
    assert!(run(&Dataset::default(), "mapping_failure", |_| {}).is_empty());
}

#[test]
fn duplicates_by_invoice_number_tax_id_and_iban() {
    let mut data = Dataset::default();
    data.invoices = vec![
        loaded(1, invoice("INV-2026-001", None, "10", "10", "2026-12-01")),
        loaded(2, invoice("inv 2026 001", None, "10", "10", "2026-12-01")),
        loaded(3, invoice("INV-2026-002", None, "10", "10", "2026-12-01")),
    ];
    let mut a = customer("A");
    a.tax_id = Some("DE 123.456.789".into());
    a.bank_accounts = vec![Iban::parse("DE89 3704 0044 0532 0130 00").unwrap()];
    let mut b = customer("B");
    b.tax_id = Some("de123456789".into());
    b.bank_accounts = vec![Iban::parse("DE89370400440532013000").unwrap()];
    let c = customer("C");
    data.customers = vec![loaded(10, a), loaded(11, b), loaded(12, c)];
    let alerts = run(&data, "duplicate_record", |_| {});
    let keys: Vec<&str> = alerts
        .iter()
        .map(|a| a.cause.as_deref().unwrap().split(':').next().unwrap())
        .collect();
    assert_eq!(keys, ["iban", "invoice_number", "tax_id"]);
    assert_eq!(alerts[1].record_ids, [id(1).to_string(), id(2).to_string()]);
    // The IBAN is masked in the reason.
    assert!(
        !alerts[0].reason.contains("370400440532"),
        "{}",
        alerts[0].reason
    );
    // Configured keys only.
    let only_tax = run(&data, "duplicate_record", |s| {
        s.rules.duplicate_record.keys = vec!["tax_id".into()];
    });
    assert_eq!(only_tax.len(), 1);
    // A third record sharing the number is a new cause.
    data.invoices.push(loaded(
        4,
        invoice("INV2026001", None, "1", "1", "2026-12-01"),
    ));
    let more = run(&data, "duplicate_record", |_| {});
    assert_ne!(more[1].cause, alerts[1].cause);
    assert_eq!(more[1].record_ids.len(), 3);
}

fn link(entity: EntityKind, system: &str, n: u32, data: Option<Value>) -> LinkView {
    LinkView {
        entity,
        system: system.into(),
        canonical_id: id(n),
        synced_data: data,
    }
}

#[test]
fn missing_in_linked_system_needs_a_route_and_no_delivery_in_flight() {
    let c = EntityKind::Customer;
    let mut data = Dataset {
        links: vec![
            link(c, "crm", 1, None),
            link(c, "erp", 1, None),
            link(c, "crm", 2, None),                   // dead delivery
            link(c, "crm", 3, None),                   // pending delivery
            link(c, "crm", 4, None),                   // never delivered
            link(EntityKind::Invoice, "crm", 5, None), // no route for invoices
        ],
        outbox: vec![
            OutboxState {
                entity: c,
                canonical_id: id(2),
                target_system: "erp".into(),
                status: "dead".into(),
            },
            OutboxState {
                entity: c,
                canonical_id: id(3),
                target_system: "erp".into(),
                status: "pending".into(),
            },
        ],
        ..Dataset::default()
    };
    assert!(run(&data, "missing_in_linked_system", |_| {}).is_empty());
    data.routes.push(Route {
        entity: c,
        source: "crm".into(),
        target: "erp".into(),
        job: "customers".into(),
    });
    let alerts = run(&data, "missing_in_linked_system", |_| {});
    let ids: Vec<&str> = alerts.iter().map(|a| a.record_ids[0].as_str()).collect();
    assert_eq!(ids, [id(2).to_string(), id(4).to_string()]);
    assert!(
        alerts[0].reason.contains("dead letter"),
        "{}",
        alerts[0].reason
    );
    assert!(alerts[1].reason.contains("never delivered"));
}

#[test]
fn field_mismatch_and_consistency_rate() {
    let c = EntityKind::Customer;
    let mut data = Dataset::default();
    // 1: agrees (decimal scale differs only), 2: differs on email,
    // 3: one system only (not compared), 4: fields carried by one side only.
    data.links = vec![
        link(
            c,
            "crm",
            1,
            Some(json!({"id": "x", "name": "A", "credit": "100.50"})),
        ),
        link(
            c,
            "erp",
            1,
            Some(json!({"id": "y", "name": "A", "credit": "100.5"})),
        ),
        link(
            c,
            "crm",
            2,
            Some(json!({"name": "B", "email": "b@x.com", "billing": {"city": "Graz"}})),
        ),
        link(
            c,
            "erp",
            2,
            Some(json!({"name": "B", "email": "b@y.com", "billing": {"city": "Graz"}})),
        ),
        link(c, "crm", 3, Some(json!({"name": "C"}))),
        link(c, "crm", 4, Some(json!({"name": "D", "phone": "1"}))),
        link(c, "erp", 4, Some(json!({"name": "D", "tax_id": "2"}))),
    ];
    let alerts = run(&data, "field_mismatch", |_| {});
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].record_ids, [id(2).to_string()]);
    assert!(alerts[0].reason.contains("email"), "{}", alerts[0].reason);
    assert!(!alerts[0].reason.contains("billing"));
    let e = evaluate(&data, &QualitySettings::default(), now());
    assert_eq!(
        e.consistency,
        Consistency {
            compared: 3,
            agreeing: 2
        }
    );
    // Ignored fields are not compared.
    assert!(
        run(&data, "field_mismatch", |s| {
            s.rules.field_mismatch.ignore_fields = vec!["email".into()];
        })
        .is_empty()
    );
    // A different disagreement is a different cause.
    let mut changed = data.clone();
    changed.links[3].synced_data = Some(json!({"name": "B", "email": "b@z.com"}));
    let again = run(&changed, "field_mismatch", |_| {});
    assert_ne!(again[0].cause, alerts[0].cause);

    // The rate rule: 2 of 3 agree.
    assert!(
        run(&data, "consistency_rate", |_| {}).is_empty(),
        "too few records"
    );
    let low = run(&data, "consistency_rate", |s| {
        s.rules.consistency_rate.min_records = 3;
        s.rules.consistency_rate.min_rate = 0.9;
    });
    assert_eq!(low.len(), 1);
    assert!(low[0].reason.contains("66.7%"), "{}", low[0].reason);
    assert!(
        run(&data, "consistency_rate", |s| {
            s.rules.consistency_rate.min_records = 3;
            s.rules.consistency_rate.min_rate = 0.6;
        })
        .is_empty()
    );
}

#[test]
fn receipts_unmatched_after_n_days() {
    let mut data = Dataset::default();
    data.bank_transactions = vec![
        loaded(1, bank_tx("100.00", "2026-11-20")), // 8 days: alert
        loaded(2, bank_tx("100.00", "2026-11-25")), // 3 days: too young
        loaded(3, bank_tx("-50.00", "2026-11-01")), // a debit
        loaded(4, bank_tx("70.00", "2026-11-01")),  // matched by a payment
        loaded(5, bank_tx("80.00", "2026-11-01")),  // marked matched
    ];
    data.bank_transactions[4]
        .record
        .extra
        .insert(MATCHED_KEY.into(), Value::Bool(true));
    data.matched_receipts.insert(id(4));
    // Imported yesterday: reconciliation has not had its days yet.
    let mut late = loaded(6, bank_tx("90.00", "2026-10-01"));
    late.stored_on = d("2026-11-27");
    data.bank_transactions.push(late);
    let alerts = run(&data, "receipt_unmatched", |_| {});
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].record_ids, [id(1).to_string()]);
    assert_eq!(alerts[0].amount.unwrap().amount(), Decimal::new(10000, 2));
    assert_eq!(
        run(&data, "receipt_unmatched", |s| s
            .rules
            .receipt_unmatched
            .days = 2)
        .len(),
        2
    );
}

#[test]
fn overdue_receivables_by_days_past_due() {
    let mut data = Dataset::default();
    data.invoices = vec![
        loaded(1, invoice("I-1", Some(9), "100", "40", "2026-10-01")), // 58 days
        loaded(2, invoice("I-2", Some(9), "100", "100", "2026-11-20")), // 8 days
        loaded(3, invoice("I-3", Some(9), "100", "0", "2026-01-01")),  // paid
    ];
    let alerts = run(&data, "overdue_receivable", |_| {});
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].record_ids, [id(1).to_string()]);
    assert_eq!(alerts[0].amount.unwrap().amount(), Decimal::from(40));
    assert!(alerts[0].reason.contains("58 days"), "{}", alerts[0].reason);
    assert_eq!(
        run(&data, "overdue_receivable", |s| s
            .rules
            .overdue_receivable
            .days = 5)
        .len(),
        2
    );
    // A new due date is a new cause.
    let mut moved = data.clone();
    moved.invoices[0].record.due_date = Some(d("2026-09-01"));
    assert_ne!(
        run(&moved, "overdue_receivable", |_| {})[0].cause,
        alerts[0].cause
    );
}

#[test]
fn duplicate_payments_same_payer_amount_reference_within_window() {
    let mut data = Dataset::default();
    data.payments = vec![
        loaded(1, payment(9, "250.00", "2026-11-01", "INV-7")),
        loaded(2, payment(9, "250.0", "2026-11-03", "inv 7")),
        loaded(3, payment(9, "250.00", "2026-11-03", "INV-8")), // other reference
        loaded(4, payment(8, "250.00", "2026-11-03", "INV-7")), // other payer
        loaded(5, payment(9, "250.00", "2026-03-01", "INV-7")), // long before
    ];
    let alerts = run(&data, "duplicate_payment", |_| {});
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].record_ids, [id(1).to_string(), id(2).to_string()]);
    assert_eq!(alerts[0].severity, Severity::Critical);
    let wide = run(&data, "duplicate_payment", |s| {
        s.rules.duplicate_payment.window_days = 365;
    });
    assert_eq!(wide[0].record_ids.len(), 3);
    // Bank receipts: same counterparty, amount and end-to-end id.
    let mut bank = Dataset::default();
    let mut a = bank_tx("99.00", "2026-11-02");
    a.end_to_end_id = Some("E2E-1".into());
    let mut b = a.clone();
    b.booking_date = d("2026-11-04");
    let mut c = a.clone();
    c.end_to_end_id = Some("E2E-2".into());
    bank.bank_transactions = vec![loaded(1, a), loaded(2, b), loaded(3, c)];
    let alerts = run(&bank, "duplicate_payment", |_| {});
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].entity, Some(EntityKind::BankTransaction));
}

#[test]
fn overpayment_by_open_amount_or_allocations() {
    let mut data = Dataset::default();
    data.invoices = vec![
        loaded(1, invoice("I-1", Some(9), "100", "-20", "2026-12-01")),
        loaded(2, invoice("I-2", Some(9), "100", "0", "2026-12-01")),
        loaded(3, invoice("I-3", Some(9), "100", "0", "2026-12-01")),
    ];
    let mut p = payment(9, "130", "2026-11-01", "I-2");
    p.allocations = vec![
        serde_json::from_value(json!({"invoice": id(2).to_string(), "amount": "130"})).unwrap(),
    ];
    let mut exact = payment(9, "100", "2026-11-01", "I-3");
    exact.allocations = vec![
        serde_json::from_value(json!({"invoice": id(3).to_string(), "amount": "100"})).unwrap(),
    ];
    data.payments = vec![loaded(20, p), loaded(21, exact)];
    let alerts = run(&data, "overpayment", |_| {});
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0].amount.unwrap().amount(), Decimal::from(20));
    assert_eq!(
        alerts[1].record_ids,
        [id(2).to_string(), id(20).to_string()]
    );
    assert_eq!(alerts[1].amount.unwrap().amount(), Decimal::from(30));
    assert!(
        run(&data, "overpayment", |s| s.rules.overpayment.tolerance =
            Decimal::from(50))
        .is_empty()
    );
}

fn version(customer: u32, v: i64, day: u32, accounts: &[&str]) -> AccountVersion {
    AccountVersion {
        customer: id(customer),
        version: v,
        at: Utc.with_ymd_and_hms(2026, 11, day, 9, 0, 0).unwrap(),
        accounts: accounts.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn payer_account_changes_and_repeats_in_a_window() {
    let data = Dataset {
        account_history: vec![
            version(1, 1, 1, &[]),
            version(1, 2, 2, &["DE01AAAA"]), // first account: not a change
            version(1, 3, 3, &["DE01AAAA"]), // unchanged
            version(1, 4, 10, &["DE02BBBB"]), // change
            version(1, 5, 12, &["DE03CCCC"]), // second change within 90 days
            version(2, 1, 1, &["DE09ZZZZ"]),
        ],
        ..Dataset::default()
    };
    let alerts = run(&data, "payer_account_changed", |_| {});
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0].severity, Severity::Warning);
    assert_eq!(alerts[1].severity, Severity::Critical);
    assert!(alerts[1].reason.contains("2 times"), "{}", alerts[1].reason);
    assert!(alerts[0].reason.contains("…BBBB"));
    assert!(!alerts[0].reason.contains("DE02"), "accounts are masked");
    let narrow = run(&data, "payer_account_changed", |s| {
        s.rules.payer_account_changed.window_days = 1;
    });
    assert_eq!(narrow[1].severity, Severity::Warning);
}

#[test]
fn large_amounts_outside_business_hours_in_the_configured_zone() {
    let mut data = Dataset::default();
    let at = |tx: &mut BankTransaction, ts: &str| {
        tx.extra.insert(TIMESTAMP_KEY.into(), json!(ts));
    };
    // Thu 2026-11-26. 06:30 UTC is 07:30 in Berlin: before 08:00.
    let mut early = bank_tx("20000", "2026-11-26");
    at(&mut early, "2026-11-26T06:30:00Z");
    // 10:00 UTC: 11:00 in Berlin, inside.
    let mut inside = bank_tx("-20000", "2026-11-26");
    at(&mut inside, "2026-11-26T10:00:00Z");
    // Saturday, date only.
    let weekend = bank_tx("15000", "2026-11-28");
    // Small, at night.
    let mut small = bank_tx("50", "2026-11-26");
    at(&mut small, "2026-11-26T02:00:00Z");
    data.bank_transactions = vec![
        loaded(1, early),
        loaded(2, inside),
        loaded(3, weekend),
        loaded(4, small),
    ];
    let mut p = payment(9, "12000", "2026-11-26", "X");
    p.extra
        .insert(TIMESTAMP_KEY.into(), json!("2026-11-26T20:00:00+01:00"));
    data.payments = vec![loaded(5, p)];
    let cfg = |s: &mut QualitySettings| {
        s.time_zone = "Europe/Berlin".into();
        s.rules
            .large_outside_hours
            .thresholds
            .insert("EUR".into(), Decimal::from(10_000));
    };
    let alerts = run(&data, "large_outside_hours", cfg);
    let ids: BTreeSet<String> = alerts.iter().map(|a| a.record_ids[0].clone()).collect();
    let want: BTreeSet<String> = [1, 3, 5].map(|n| id(n).to_string()).into();
    assert_eq!(ids, want);
    assert!(
        alerts.iter().any(|a| a.reason.contains("07:30")),
        "{alerts:?}"
    );
    // In UTC the 06:30 booking is still early; no thresholds, no alerts.
    assert!(run(&data, "large_outside_hours", |_| {}).is_empty());
}

#[test]
fn orders_split_under_the_approval_limit() {
    let mut data = Dataset::default();
    data.orders = vec![
        loaded(1, order("O-1", 9, "9500", "2026-11-02")),
        loaded(2, order("O-2", 9, "9800", "2026-11-04")),
        loaded(3, order("O-3", 9, "9900", "2026-11-30")), // outside the window
        loaded(4, order("O-4", 8, "9500", "2026-11-02")), // other customer, alone
        loaded(5, order("O-5", 8, "3000", "2026-11-03")), // not "just under"
        loaded(6, order("O-6", 7, "12000", "2026-11-03")), // over the limit: approved normally
    ];
    let cfg = |s: &mut QualitySettings| {
        s.rules
            .split_order
            .approval_limits
            .insert("EUR".into(), Decimal::from(10_000));
    };
    let alerts = run(&data, "split_order", cfg);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].record_ids, [id(1).to_string(), id(2).to_string()]);
    assert_eq!(alerts[0].amount.unwrap().amount(), Decimal::from(19_300));
    // Without a limit for the currency the rule does nothing.
    assert!(run(&data, "split_order", |_| {}).is_empty());
    // A narrower margin excludes 9500.
    assert!(
        run(&data, "split_order", |s| {
            cfg(s);
            s.rules.split_order.margin = Decimal::new(3, 2);
        })
        .is_empty()
    );
}

fn credit_data(open: &str, orders: &[(&str, Option<&str>)]) -> Dataset {
    let mut c = customer("ACME");
    c.credit_limit = Some(Money::new(Decimal::from(10_000), eur()).unwrap());
    let mut data = Dataset::default();
    data.customers = vec![loaded(9, c), loaded(8, customer("No limit"))];
    data.invoices = vec![
        loaded(1, invoice("I-1", Some(9), open, open, "2026-12-31")),
        loaded(2, invoice("I-2", Some(8), "99999", "99999", "2026-12-31")),
    ];
    data.orders = orders
        .iter()
        .enumerate()
        .map(|(i, (total, status))| {
            let mut o = order(&format!("O-{i}"), 9, total, "2026-11-20");
            o.status = status.map(str::to_owned);
            loaded(20 + i as u32, o)
        })
        .collect();
    data
}

#[test]
fn order_over_the_credit_limit() {
    let data = credit_data(
        "8000",
        &[
            ("1500", None),
            ("2500", Some("open")),
            ("9000", Some("cancelled")),
        ],
    );
    let alerts = run(&data, "credit_limit_exceeded", |_| {});
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].record_ids[0], id(21).to_string());
    assert_eq!(alerts[0].amount.unwrap().amount(), Decimal::from(500));
    assert!(
        alerts[0].reason.contains("8000 + order = 10500"),
        "{}",
        alerts[0].reason
    );
}

#[test]
fn credit_usage_alerts_the_highest_level_crossed() {
    let level = |open: &str| {
        let alerts = run(&credit_data(open, &[]), "credit_usage", |_| {});
        alerts
            .iter()
            .map(|a| (a.cause.clone().unwrap(), a.severity))
            .collect::<Vec<_>>()
    };
    assert!(level("7499.99").is_empty());
    assert_eq!(level("7500"), [(format!("{}:75", id(9)), Severity::Info)]);
    assert_eq!(
        level("9100"),
        [(format!("{}:90", id(9)), Severity::Warning)]
    );
    assert_eq!(
        level("10000"),
        [(format!("{}:100", id(9)), Severity::Critical)]
    );
    let custom = run(&credit_data("5000", &[]), "credit_usage", |s| {
        s.rules.credit_usage.levels = vec![50];
    });
    assert_eq!(custom.len(), 1);
}

#[test]
fn disabled_rules_do_not_run() {
    let data = credit_data("10000", &[]);
    let mut s = QualitySettings::default();
    s.rules.credit_usage.enabled = false;
    let e = evaluate(&data, &s, now());
    assert!(!e.rules.contains(&"credit_usage"));
    assert!(e.alerts.iter().all(|a| a.rule != "credit_usage"));
}
