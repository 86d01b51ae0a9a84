//! Data-quality rules over generated data: time of one evaluation of all
//! fourteen rules (pure, no store) as the data grows.
//!
//! `cargo bench --bench quality` builds, for each size N in
//! `CONCORD_BENCH_SIZES` (default `10000,100000,1000000`): N invoices, N
//! bank lines, N payments, N/10 customers with credit limits and bank
//! accounts (three versions each), N/2 orders and links of every invoice in
//! two systems with their last-synced views, a few percent of which
//! disagree; then prints the time of one evaluation and the alerts found.

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use concord::model::{CanonicalId, EntityKind};
use concord::quality::QualitySettings;
use concord::quality::rules::{self, AccountVersion, Dataset, LinkView, Loaded};
use rust_decimal::Decimal;
use serde_json::json;

fn generate(n: usize) -> Dataset {
    let day0 = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    let customers: Vec<CanonicalId> = (0..(n / 10).max(1)).map(|_| CanonicalId::new()).collect();
    let mut data = Dataset::default();
    for (i, id) in customers.iter().enumerate() {
        let record = serde_json::from_value(json!({
            "name": format!("Customer {i} GmbH"),
            "tax_id": format!("DE{:09}", i % (customers.len() - customers.len() / 50).max(1)),
            "credit_limit": {"amount": "50000.00", "currency": "EUR"},
        }))
        .unwrap();
        data.customers.push(Loaded {
            id: id.clone(),
            version: 3,
            stored_on: day0,
            record,
        });
        for v in 1..=3 {
            data.account_history.push(AccountVersion {
                customer: id.clone(),
                version: v,
                at: Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap() + Duration::days(v * 20),
                accounts: BTreeSet::from([format!(
                    "DE{:020}",
                    i * 10 + (v as usize % 2) * (i % 7)
                )]),
            });
        }
    }
    for i in 0..n {
        let id = CanonicalId::new();
        let customer = &customers[i % customers.len()];
        let due = day0 + Duration::days((i % 330) as i64);
        let open = if i % 3 == 0 { "0.00" } else { "1234.50" };
        let invoice = json!({
            "number": format!("INV-{:07}", i - i % 997 / 996), "customer": customer.to_string(),
            "currency": "EUR", "total": "1234.50", "open_amount": open,
            "status": if open == "0.00" { "paid" } else { "open" }, "due_date": due.to_string(),
        });
        let mut other = invoice.clone();
        if i % 40 == 0 {
            other["due_date"] = json!((due + Duration::days(1)).to_string());
        }
        data.links.push(LinkView {
            entity: EntityKind::Invoice,
            system: "erp".into(),
            canonical_id: id.clone(),
            synced_data: Some(invoice.clone()),
        });
        data.links.push(LinkView {
            entity: EntityKind::Invoice,
            system: "crm".into(),
            canonical_id: id.clone(),
            synced_data: Some(other),
        });
        data.invoices.push(Loaded {
            id,
            version: 1,
            stored_on: day0,
            record: serde_json::from_value(invoice).unwrap(),
        });
        let tx = json!({
            "account": "DE89370400440532013000", "booking_date": due.to_string(),
            "amount": format!("{}.{:02}", 100 + i % 20_000, i % 100), "currency": "EUR",
            "counterparty_name": format!("Customer {} GmbH", i % customers.len()),
            "counterparty_account": format!("DE{:020}", i % customers.len()),
            "end_to_end_id": format!("E2E-{}", i - i % 500 / 499),
            "timestamp": format!("{}T{:02}:15:00Z", due, i % 24),
        });
        data.bank_transactions.push(Loaded {
            id: CanonicalId::new(),
            version: 1,
            stored_on: day0,
            record: serde_json::from_value(tx).unwrap(),
        });
        let payment = json!({
            "customer": customer.to_string(),
            "amount": {"amount": format!("{}.00", 100 + i % 5_000), "currency": "EUR"},
            "date": due.to_string(), "reference": format!("INV-{:07}", i - i % 300 / 299),
        });
        data.payments.push(Loaded {
            id: CanonicalId::new(),
            version: 1,
            stored_on: day0,
            record: serde_json::from_value(payment).unwrap(),
        });
        if i % 2 == 0 {
            let order = json!({
                "number": format!("SO-{i}"), "customer": customer.to_string(), "currency": "EUR",
                "total": format!("{}.00", 9_000 + i % 1_500), "order_date": due.to_string(),
            });
            data.orders.push(Loaded {
                id: CanonicalId::new(),
                version: 1,
                stored_on: day0,
                record: serde_json::from_value(order).unwrap(),
            });
        }
    }
    data
}

fn main() {
    let sizes: Vec<usize> = std::env::var("CONCORD_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    let mut settings = QualitySettings {
        time_zone: "Europe/Berlin".into(),
        ..QualitySettings::default()
    };
    settings
        .rules
        .large_outside_hours
        .thresholds
        .insert("EUR".into(), Decimal::from(15_000));
    settings
        .rules
        .split_order
        .approval_limits
        .insert("EUR".into(), Decimal::from(10_000));
    let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
    println!("quality rules, one evaluation (all 14 rules), pure over loaded data");
    for n in sizes {
        let t = Instant::now();
        let data = generate(n);
        let built = t.elapsed();
        let t = Instant::now();
        let e = rules::evaluate(&data, &settings, now);
        let took = t.elapsed();
        let mut per_rule = std::collections::BTreeMap::new();
        for a in &e.alerts {
            *per_rule.entry(a.rule.as_str()).or_insert(0usize) += 1;
        }
        println!(
            "N={n:>9}: {:>5} records, evaluate {:>8.1} ms ({:.0} records/s), {} alerts, consistency {:.1}% (generated in {:.1} s)",
            data.invoices.len()
                + data.bank_transactions.len()
                + data.payments.len()
                + data.orders.len()
                + data.customers.len(),
            took.as_secs_f64() * 1e3,
            (data.invoices.len() + data.bank_transactions.len() + data.payments.len()) as f64
                / took.as_secs_f64(),
            e.alerts.len(),
            e.consistency.rate().unwrap_or(0.0) * 100.0,
            built.as_secs_f64(),
        );
        println!("    {per_rule:?}");
    }
}
