//! Store mode reconciliation on SQLite and PostgreSQL: allocations kept in
//! the store, idempotent re-runs, confirmations teaching payer aliases,
//! decisions never undone by a run, alerts raised once.

mod common;

use common::TestStore;
use concord::model::{CanonicalId, Entity, EntityKind};
use concord::reconcile::Config;
use concord::reconcile::stored::{self, RunOptions};
use concord::store::{AllocationStatus, Batch, NewAllocation, Provenance, RecordWrite};
use rust_decimal::Decimal;
use serde_json::{Value, json};

async fn put(store: &TestStore, kind: EntityKind, data: Value) -> CanonicalId {
    let entity = Entity::from_value(kind, data).unwrap();
    let id = CanonicalId::new();
    let batch = Batch {
        records: vec![RecordWrite::of(
            &entity,
            id.clone(),
            0,
            Provenance::pull("test"),
        )],
        ..Batch::default()
    };
    store.commit(&batch).await.unwrap();
    id
}

fn opts() -> RunOptions {
    RunOptions {
        since: None,
        actor: "scheduler".into(),
        config: Config::default(),
    }
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

async fn customer(store: &TestStore, name: &str, iban: Option<&str>) -> CanonicalId {
    let mut c = json!({"name": name});
    if let Some(i) = iban {
        c["bank_accounts"] = json!([i]);
    }
    put(store, EntityKind::Customer, c).await
}

async fn invoice(
    store: &TestStore,
    number: &str,
    customer: &CanonicalId,
    amount: &str,
) -> CanonicalId {
    put(
        store,
        EntityKind::Invoice,
        json!({
            "number": number, "customer": customer.to_string(), "currency": "EUR",
            "total": amount, "open_amount": amount, "issue_date": "2026-02-01",
            "due_date": "2026-03-01", "status": "open"
        }),
    )
    .await
}

async fn receipt(
    store: &TestStore,
    amount: &str,
    currency: &str,
    name: &str,
    account: Option<&str>,
    text: Option<&str>,
    day: u32,
) -> CanonicalId {
    let mut t = json!({
        "account": "DE02120300000000202051", "booking_date": format!("2026-03-{day:02}"),
        "amount": amount, "currency": currency, "counterparty_name": name,
    });
    if let Some(a) = account {
        t["counterparty_account"] = json!(a);
    }
    if let Some(x) = text {
        t["remittance_info"] = json!(x);
    }
    put(store, EntityKind::BankTransaction, t).await
}

async fn of_tx(store: &TestStore, tx: &CanonicalId) -> Vec<concord::store::StoredAllocation> {
    store
        .allocations(&[])
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.allocation.transaction_id == tx.to_string())
        .collect()
}

async fn store_mode_lifecycle(store: &TestStore) {
    let muster = customer(store, "Muster GmbH", Some("DE89370400440532013000")).await;
    let acme = customer(store, "Acme Trading Ltd", None).await;
    let beta = customer(store, "Beta Logistik AG", None).await;
    let inv1 = invoice(store, "INV-2026-0001", &muster, "100.00").await;
    let _inv2 = invoice(store, "INV-2026-0002", &acme, "250.00").await;
    let _inv4 = invoice(store, "INV-2026-0004", &acme, "40.00").await;
    let _inv3 = invoice(store, "INV-2026-0003", &beta, "80.00").await;

    // Clean: reference and payer agree.
    let t1 = receipt(
        store,
        "100.00",
        "EUR",
        "Muster GmbH",
        Some("DE89370400440532013000"),
        Some("Invoice INV-2026-0001"),
        5,
    )
    .await;
    // A payer name like the customer's, the exact amount, no reference, an
    // account nobody knows yet.
    let t2 = receipt(
        store,
        "250.00",
        "EUR",
        "ACME TRADING",
        Some("GB33BUKB20201555555555"),
        None,
        6,
    )
    .await;
    // Only the amount fits.
    let t3 = receipt(
        store,
        "80.00",
        "EUR",
        "Someone Else",
        None,
        Some("payment"),
        7,
    )
    .await;
    // A debit and a currency nobody invoices in.
    receipt(store, "-50.00", "EUR", "Supplier", None, None, 7).await;
    receipt(store, "12.00", "GBP", "Bank", None, Some("interest"), 8).await;

    let r1 = stored::run(store, &opts()).await.unwrap();
    println!("run 1: {r1:?}");
    assert_eq!(r1.receipts, 4, "credits only");
    assert_eq!(r1.auto + r1.suggested + r1.open, 4);
    assert!(r1.alerts_raised >= 1, "currency without invoices");
    let a1 = of_tx(store, &t1).await;
    assert_eq!(a1.len(), 1);
    assert_eq!(a1[0].allocation.status, AllocationStatus::Auto);
    assert_eq!(a1[0].allocation.invoice_id, inv1.to_string());
    assert_eq!(a1[0].allocation.amount, d("100.00"));
    assert!(!a1[0].allocation.reasons.is_empty());

    // Idempotent: the same data, the same allocations, nothing written.
    let before = store.allocations(&[]).await.unwrap();
    let r2 = stored::run(store, &opts()).await.unwrap();
    assert_eq!((r2.written, r2.retired), (0, 0), "{r2:?}");
    assert_eq!(r2.kept, before.len());
    assert_eq!(r2.alerts_raised, 0, "alerts are raised once per cause");
    assert_eq!(store.allocations(&[]).await.unwrap(), before);

    // The Acme receipt is not automatic (the account is new, the name only
    // similar): confirm it; its account is learnt for Acme.
    let a2 = of_tx(store, &t2).await;
    assert_eq!(a2.len(), 1, "{a2:?}");
    assert_eq!(a2[0].allocation.invoice_number, "INV-2026-0002");
    let id2 = a2[0].id;
    let confirmed = stored::confirm(store, id2, "alice", Some("checked the remittance advice"))
        .await
        .unwrap();
    assert_eq!(confirmed.allocation.status, AllocationStatus::Confirmed);
    let history = store.allocation_history(id2).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.to_status.as_str(), last.actor.as_str()),
        ("confirmed", "alice")
    );
    assert_eq!(last.note.as_deref(), Some("checked the remittance advice"));
    let aliases = store.payer_aliases().await.unwrap();
    assert!(
        aliases.iter().any(|a| a.customer_id == acme.to_string()
            && a.kind == "account"
            && a.value == "GB33BUKB20201555555555"),
        "{aliases:?}"
    );
    // Confirming twice is refused and changes nothing.
    assert!(stored::confirm(store, id2, "bob", None).await.is_err());

    // The next payment from that account, with no reference and a name the
    // bank shortened, is recognised through the learnt account.
    let t5 = receipt(
        store,
        "40.00",
        "EUR",
        "ACME TR",
        Some("GB33BUKB20201555555555"),
        None,
        9,
    )
    .await;
    let r3 = stored::run(store, &opts()).await.unwrap();
    println!("run 3: {r3:?}");
    assert_eq!(
        r3.decided, 1,
        "the confirmed transaction is not matched again"
    );
    let a5 = of_tx(store, &t5).await;
    assert_eq!(a5.len(), 1, "{a5:?}");
    assert_eq!(a5[0].allocation.invoice_number, "INV-2026-0004");
    assert!(
        a5[0]
            .allocation
            .reasons
            .iter()
            .any(|r| r.contains("payer account GB33BUKB20201555555555 is known")),
        "{:?}",
        a5[0].allocation.reasons
    );
    // The confirmation is untouched.
    assert_eq!(
        store
            .allocation(id2)
            .await
            .unwrap()
            .unwrap()
            .allocation
            .status,
        AllocationStatus::Confirmed
    );

    // Reject what the amount-only receipt got (if anything); it is never
    // proposed again.
    for a in of_tx(store, &t3).await {
        stored::reject(store, a.id, "alice", Some("not theirs"))
            .await
            .unwrap();
        let r = stored::run(store, &opts()).await.unwrap();
        assert!(r.rejected_before >= 1, "{r:?}");
        let again: Vec<_> = of_tx(store, &t3)
            .await
            .into_iter()
            .filter(|x| x.allocation.status != AllocationStatus::Rejected)
            .collect();
        assert!(again.is_empty(), "{again:?}");
    }

    // Undo the automatic match of T1: it is not made again.
    let id1 = of_tx(store, &t1).await[0].id;
    let undone = stored::undo(store, id1, "bob", None).await.unwrap();
    assert_eq!(undone.allocation.status, AllocationStatus::Undone);
    stored::run(store, &opts()).await.unwrap();
    let a1 = of_tx(store, &t1).await;
    assert!(
        a1.iter()
            .all(|a| a.allocation.status == AllocationStatus::Undone),
        "{a1:?}"
    );

    // Undoing the confirmation returns it to suggested and forgets the
    // alias it taught.
    let back = stored::undo(store, id2, "alice", None).await.unwrap();
    assert_eq!(back.allocation.status, AllocationStatus::Suggested);
    assert!(store.payer_aliases().await.unwrap().is_empty());
}

async fn manual_allocations_survive_runs(store: &TestStore) {
    let c = customer(store, "Gamma SARL", None).await;
    let inv = invoice(store, "INV-9", &c, "500.00").await;
    let tx = receipt(store, "500.00", "EUR", "Gamma", None, Some("INV-9"), 3).await;
    let ids = store
        .apply_reconciliation(
            "manual",
            "carol",
            &[],
            &[NewAllocation {
                transaction_id: tx.to_string(),
                invoice_id: inv.to_string(),
                invoice_number: "INV-9".into(),
                customer_id: Some(c.to_string()),
                amount: d("500.00"),
                currency: concord::model::Currency::parse("EUR").unwrap(),
                write_off: None,
                status: AllocationStatus::Manual,
                confidence: 1.0,
                stage: None,
                reasons: vec!["allocated by hand".into()],
            }],
        )
        .await
        .unwrap();
    for _ in 0..2 {
        let r = stored::run(store, &opts()).await.unwrap();
        assert_eq!(r.decided, 1);
        assert_eq!(r.written, 0, "{r:?}");
    }
    let all = store.allocations(&[]).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, ids[0]);
    assert_eq!(all[0].allocation.status, AllocationStatus::Manual);
    // A person's allocation cannot be rejected or undone by accident.
    assert!(stored::reject(store, ids[0], "dave", None).await.is_err());
}

async fn a_combined_payment_is_decided_as_one(store: &TestStore) {
    let c = customer(store, "Delta Kft", None).await;
    invoice(store, "INV-2026-0101", &c, "100.00").await;
    invoice(store, "INV-2026-0102", &c, "50.00").await;
    let tx = receipt(
        store,
        "150.00",
        "EUR",
        "Delta Kft",
        None,
        Some("INV-2026-0101 INV-2026-0102"),
        4,
    )
    .await;
    stored::run(store, &opts()).await.unwrap();
    let parts = of_tx(store, &tx).await;
    assert_eq!(parts.len(), 2, "{parts:?}");
    let total: Decimal = parts.iter().map(|a| a.allocation.amount).sum();
    assert_eq!(total, d("150.00"));
    stored::confirm(store, parts[0].id, "erin", None)
        .await
        .unwrap();
    let parts = of_tx(store, &tx).await;
    assert!(
        parts
            .iter()
            .all(|a| a.allocation.status == AllocationStatus::Confirmed
                && a.actor.as_deref() == Some("erin")),
        "{parts:?}"
    );
    let r = stored::run(store, &opts()).await.unwrap();
    assert_eq!((r.decided, r.written), (1, 0), "{r:?}");
}

on_both_backends!(
    store_mode_lifecycle,
    manual_allocations_survive_runs,
    a_combined_payment_is_decided_as_one
);
