//! Confirmed and manual allocations pushed to the ERP as payments
//! (`[reconcile.push]`), on SQLite and PostgreSQL: one payment record and
//! one outbox entry per decision, written with it; undo cancels what has
//! not reached the ERP and refuses what has; manual allocations never
//! over-allocate; delivery through the sync engine to Xero (Prism serving
//! Xero's own OpenAPI spec) and to an ERPNext site (the mock of
//! `tests/support/erpnext.rs`), idempotent, with dead letters and replay.

mod common;
#[path = "support/erpnext.rs"]
mod erpnext;
#[allow(dead_code)]
#[path = "support/prism.rs"]
mod prism;
mod support;

use std::collections::BTreeMap;

use axum::Router;
use axum::routing::post;
use chrono::Utc;
use common::TestStore;
use concord::model::{CanonicalId, Entity, EntityKind};
use concord::reconcile::push::{self, ManualAllocation, PaymentPushSettings};
use concord::reconcile::stored::{self, RunOptions};
use concord::settings::{Settings, SystemSettings};
use concord::store::{
    AllocationChangeError, AllocationStatus, Batch, Delivery, LinkWrite, NewAllocation,
    PaymentStatus, Provenance, RecordWrite, Store,
};
use concord::sync::{Engine, JobReport};
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde_json::{Value, json};

const XERO: &str = "xero_main";

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn push_to_xero() -> PaymentPushSettings {
    PaymentPushSettings {
        system: XERO.into(),
        entity: "payment".into(),
        mapping: "xero-payment-out".into(),
        bank_account: Some("090".into()),
        bank_accounts: BTreeMap::new(),
    }
}

async fn put_from(store: &Store, system: &str, kind: EntityKind, data: Value) -> CanonicalId {
    let entity = Entity::from_value(kind, data).unwrap();
    let id = CanonicalId::new();
    let batch = Batch {
        records: vec![RecordWrite::of(
            &entity,
            id.clone(),
            0,
            Provenance::pull(system),
        )],
        ..Batch::default()
    };
    store.commit(&batch).await.unwrap();
    id
}

async fn link(store: &Store, kind: EntityKind, id: &CanonicalId, system: &str, external: &str) {
    let batch = Batch {
        links: vec![LinkWrite {
            entity: kind,
            system: system.into(),
            external_id: external.into(),
            canonical_id: id.clone(),
            synced_version: Some(1),
            synced_data: None,
            synced_hash: None,
            remote_updated_at: None,
            source_hash: None,
        }],
        ..Batch::default()
    };
    store.commit(&batch).await.unwrap();
}

fn invoice_data(number: &str, customer: &CanonicalId, total: &str, open: &str) -> Value {
    json!({
        "number": number, "customer": customer.to_string(), "currency": "EUR",
        "total": total, "open_amount": open, "issue_date": "2026-10-01",
        "due_date": "2026-11-01", "status": if total == open { "open" } else { "partially_paid" }
    })
}

/// A customer and an invoice read from `system`, the invoice linked there
/// as `external`.
async fn invoice_at(
    store: &Store,
    system: &str,
    number: &str,
    amount: &str,
    external: &str,
) -> (CanonicalId, CanonicalId) {
    let customer = put_from(
        store,
        system,
        EntityKind::Customer,
        json!({"name": format!("Customer of {number}")}),
    )
    .await;
    let invoice = put_from(
        store,
        system,
        EntityKind::Invoice,
        invoice_data(number, &customer, amount, amount),
    )
    .await;
    link(store, EntityKind::Invoice, &invoice, system, external).await;
    (customer, invoice)
}

async fn receipt(store: &Store, amount: &str, currency: &str, text: &str) -> CanonicalId {
    put_from(
        store,
        "bank",
        EntityKind::BankTransaction,
        json!({
            "account": "DE02120300000000202051", "booking_date": "2026-11-05",
            "amount": amount, "currency": currency, "counterparty_name": "Muster GmbH",
            "counterparty_account": "DE89370400440532013000", "remittance_info": text,
            "bank_reference": "BR-2026-11-05-001"
        }),
    )
    .await
}

/// A suggestion, as a run would make it.
async fn suggest(
    store: &Store,
    tx: &CanonicalId,
    invoice: &CanonicalId,
    customer: &CanonicalId,
    number: &str,
    amount: &str,
) -> i64 {
    store
        .apply_reconciliation(
            "run-test",
            "scheduler",
            &[],
            &[NewAllocation {
                transaction_id: tx.to_string(),
                invoice_id: invoice.to_string(),
                invoice_number: number.into(),
                customer_id: Some(customer.to_string()),
                amount: d(amount),
                currency: concord::model::Currency::parse("EUR").unwrap(),
                write_off: None,
                status: AllocationStatus::Suggested,
                confidence: 0.7,
                stage: Some("reference".into()),
                reasons: vec!["the invoice number is in the remittance".into()],
            }],
        )
        .await
        .unwrap()[0]
}

async fn payments_due(store: &Store, system: &str) -> Vec<concord::store::OutboxEntry> {
    store
        .outbox_due_for(system, Some(EntityKind::Payment), 100)
        .await
        .unwrap()
}

/// As a delivery would settle it: the ERP took the payment as `external`.
async fn deliver_by_hand(store: &Store, entry: &concord::store::OutboxEntry, external: &str) {
    store
        .outbox_settle(
            entry.id,
            &Delivery::Delivered {
                link: LinkWrite {
                    entity: EntityKind::Payment,
                    system: entry.target_system.clone(),
                    external_id: external.into(),
                    canonical_id: entry.canonical_id.clone(),
                    synced_version: Some(entry.version),
                    synced_data: None,
                    synced_hash: None,
                    remote_updated_at: None,
                    source_hash: None,
                },
            },
        )
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------
// In the store

async fn confirm_writes_one_payment_and_one_outbox_entry(store: &TestStore) {
    let push = push_to_xero();
    let (cust, inv) = invoice_at(
        store,
        XERO,
        "RE-1001",
        "100.00",
        "d4956132-ed94-4dd7-9eaa-aa22dfdf06f2",
    )
    .await;
    let tx = receipt(store, "100.00", "EUR", "RE-1001").await;
    let id = suggest(store, &tx, &inv, &cust, "RE-1001", "100.00").await;

    let done = push::confirm(store, Some(&push), id, "alice", Some("remittance checked"))
        .await
        .unwrap();
    assert_eq!(
        done.allocation.allocation.status,
        AllocationStatus::Confirmed
    );
    assert_eq!(done.payments.len(), 1, "{done:?}");
    let pid = done.payments[0].written.clone().unwrap();

    // One canonical payment: the invoice, the amount, the booking date, the
    // payer, the bank line, the ERP's bank account.
    let payments = store.records_of(EntityKind::Payment).await.unwrap();
    assert_eq!(payments.len(), 1);
    let p = &payments[0];
    assert_eq!((p.id.clone(), p.version), (pid.clone(), 1));
    let Entity::Payment(payment) = Entity::from_value(EntityKind::Payment, p.data.clone()).unwrap()
    else {
        panic!()
    };
    assert_eq!(payment.amount.amount(), d("100.00"));
    assert_eq!(payment.amount.currency().as_str(), "EUR");
    assert_eq!(payment.date.to_string(), "2026-11-05");
    assert_eq!(payment.customer.as_ref(), Some(&cust));
    assert_eq!(payment.reference.as_deref(), Some("RE-1001"));
    assert_eq!(payment.allocations.len(), 1);
    assert_eq!(payment.allocations[0].invoice, inv);
    assert_eq!(payment.allocations[0].amount, d("100.00"));
    assert_eq!(p.data["bank_transaction"], json!(tx.to_string()));
    assert_eq!(p.data["deposit_account"], "090");
    assert_eq!(p.data["allocation"], json!(id));
    // Every change is explained: by the operator, for this allocation.
    let history = store.history(EntityKind::Payment, &pid).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].provenance.actor.as_deref(), Some("alice"));
    assert_eq!(
        history[0].provenance.event_id.as_deref(),
        Some(format!("allocation:{id}").as_str())
    );

    // One outbox entry for the ERP, for that version.
    let due = payments_due(store, XERO).await;
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(
        (due[0].canonical_id.clone(), due[0].version),
        (pid.clone(), 1)
    );
    let rows = store.allocation_payments(&[id]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, PaymentStatus::Active);
    assert_eq!(rows[0].delivery.as_ref().unwrap().outbox_id, due[0].id);

    // Confirming again is refused and writes nothing more.
    let again = push::confirm(store, Some(&push), id, "bob", None).await;
    assert!(
        matches!(again, Err(AllocationChangeError::WrongStatus { .. })),
        "{again:?}"
    );
    assert_eq!(
        store.records_of(EntityKind::Payment).await.unwrap().len(),
        1
    );
    assert_eq!(payments_due(store, XERO).await.len(), 1);

    // The id is the allocation's: derived, not random.
    assert_eq!(
        pid,
        push::payment_id(id, &tx.to_string(), &inv.to_string(), 1)
    );

    // Without [reconcile.push], a confirmation writes no payment.
    let tx2 = receipt(store, "20.00", "EUR", "RE-1002").await;
    let (c2, i2) = invoice_at(
        store,
        XERO,
        "RE-1002",
        "20.00",
        "046d8a6d-1ae1-4b4d-9340-5601bdf41b87",
    )
    .await;
    let id2 = suggest(store, &tx2, &i2, &c2, "RE-1002", "20.00").await;
    let done = stored::confirm(store, id2, "alice", None).await.unwrap();
    assert_eq!(done.allocation.status, AllocationStatus::Confirmed);
    assert_eq!(
        store.records_of(EntityKind::Payment).await.unwrap().len(),
        1
    );
    assert!(store.allocation_payments(&[id2]).await.unwrap().is_empty());
}

async fn a_receipt_paying_two_invoices_becomes_two_payments(store: &TestStore) {
    let push = push_to_xero();
    let (c, a) = invoice_at(
        store,
        XERO,
        "RE-2001",
        "50.00",
        "11111111-1111-4111-8111-111111111111",
    )
    .await;
    let b = put_from(
        store,
        XERO,
        EntityKind::Invoice,
        invoice_data("RE-2002", &c, "50.00", "50.00"),
    )
    .await;
    let tx = receipt(store, "100.00", "EUR", "RE-2001 RE-2002").await;
    let mk = |inv: &CanonicalId, number: &str, amount: &str| NewAllocation {
        transaction_id: tx.to_string(),
        invoice_id: inv.to_string(),
        invoice_number: number.into(),
        customer_id: Some(c.to_string()),
        amount: d(amount),
        currency: concord::model::Currency::parse("EUR").unwrap(),
        write_off: None,
        status: AllocationStatus::Suggested,
        confidence: 0.8,
        stage: Some("subset".into()),
        reasons: vec![],
    };
    let ids = store
        .apply_reconciliation(
            "run-2",
            "scheduler",
            &[],
            &[mk(&a, "RE-2001", "50.00"), mk(&b, "RE-2002", "50.00")],
        )
        .await
        .unwrap();
    let done = push::confirm(store, Some(&push), ids[1], "alice", None)
        .await
        .unwrap();
    assert_eq!(
        done.with.len(),
        1,
        "the other invoice of the receipt is decided too"
    );
    assert_eq!(done.payments.len(), 2);
    let mut paid: Vec<(String, Decimal)> = Vec::new();
    for p in store.records_of(EntityKind::Payment).await.unwrap() {
        let Entity::Payment(p) = Entity::from_value(EntityKind::Payment, p.data).unwrap() else {
            panic!()
        };
        paid.push((p.allocations[0].invoice.to_string(), p.amount.amount()));
    }
    paid.sort();
    let mut want = vec![(a.to_string(), d("50.00")), (b.to_string(), d("50.00"))];
    want.sort();
    assert_eq!(paid, want);
    assert_eq!(payments_due(store, XERO).await.len(), 2);
    // Two payments of one payer, amount and reference, booked from one
    // bank line, are not a duplicate payment.
    concord::quality::run_after(store, &Settings::default(), "test").await;
    let alerts = store.open_alerts(100).await.unwrap();
    assert!(
        !alerts.iter().any(|a| a.alert.rule == "duplicate_payment"),
        "{alerts:?}"
    );
}

async fn undo_cancels_a_payment_that_has_not_left(store: &TestStore) {
    let push = push_to_xero();
    let (cust, inv) = invoice_at(
        store,
        XERO,
        "RE-3001",
        "80.00",
        "22222222-2222-4222-8222-222222222222",
    )
    .await;
    let tx = receipt(store, "80.00", "EUR", "RE-3001").await;
    let id = suggest(store, &tx, &inv, &cust, "RE-3001", "80.00").await;
    let first = push::confirm(store, Some(&push), id, "alice", None)
        .await
        .unwrap()
        .payments[0]
        .written
        .clone()
        .unwrap();

    let undone = push::undo(store, id, "alice", Some("wrong customer"), false)
        .await
        .unwrap();
    assert_eq!(
        undone.allocation.allocation.status,
        AllocationStatus::Suggested
    );
    assert_eq!(
        undone.payments[0].voided,
        Some((first.clone(), PaymentStatus::Cancelled))
    );
    // Nothing is left to deliver, and the entry cannot come back through
    // dead-letter replay either.
    assert!(payments_due(store, XERO).await.is_empty());
    assert_eq!(store.outbox_requeue(Some(XERO), &[]).await.unwrap(), 0);
    let row = &store.allocation_payments(&[id]).await.unwrap()[0];
    assert_eq!(row.status, PaymentStatus::Cancelled);
    assert_eq!(row.delivery.as_ref().unwrap().status, "cancelled");
    assert_eq!(row.closed_by.as_deref(), Some("alice"));
    assert_eq!(row.close_note.as_deref(), Some("wrong customer"));
    // The payment record pays nothing any more (version 2, by the operator).
    let rec = store
        .get_record(EntityKind::Payment, &first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.version, 2);
    assert_eq!(rec.data["allocations"], json!([]));
    assert_eq!(rec.data["status"], "cancelled");

    // Confirmed again: a new payment (the next generation), queued anew.
    let second = push::confirm(store, Some(&push), id, "bob", None)
        .await
        .unwrap()
        .payments[0]
        .written
        .clone()
        .unwrap();
    assert_ne!(second, first);
    assert_eq!(
        second,
        push::payment_id(id, &tx.to_string(), &inv.to_string(), 2)
    );
    let due = payments_due(store, XERO).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].canonical_id, second);

    // A delivery the ERP refused (a dead letter saying so) is cancelled too.
    store
        .outbox_settle(
            due[0].id,
            &Delivery::Dead {
                error: "rejected by xero_main: 400 Account code '090' is not a bank account".into(),
            },
        )
        .await
        .unwrap();
    let undone = push::undo(store, id, "bob", None, false).await.unwrap();
    assert_eq!(
        undone.payments[0].voided,
        Some((second, PaymentStatus::Cancelled))
    );
    assert_eq!(store.outbox_requeue(Some(XERO), &[]).await.unwrap(), 0);
}

async fn undo_of_a_payment_at_the_erp_is_refused_until_reversed(store: &TestStore) {
    let push = push_to_xero();
    let (cust, inv) = invoice_at(
        store,
        XERO,
        "RE-4001",
        "50.00",
        "33333333-3333-4333-8333-333333333333",
    )
    .await;
    let tx = receipt(store, "50.00", "EUR", "RE-4001").await;
    let id = suggest(store, &tx, &inv, &cust, "RE-4001", "50.00").await;
    let pid = push::confirm(store, Some(&push), id, "alice", None)
        .await
        .unwrap()
        .payments[0]
        .written
        .clone()
        .unwrap();
    let entry = payments_due(store, XERO).await.remove(0);

    // Sent, answer lost (a timeout): it may be in Xero.
    store
        .outbox_settle(
            entry.id,
            &Delivery::Retry {
                at: Utc::now() + chrono::Duration::hours(1),
                error: "timeout after 60 s".into(),
            },
        )
        .await
        .unwrap();
    let err = push::undo(store, id, "bob", None, false).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, AllocationChangeError::PaymentAtErp { .. }),
        "{text}"
    );
    assert!(text.contains(pid.as_str()), "{text}");
    assert!(
        text.contains("sent 1 time(s) without a definite answer"),
        "{text}"
    );
    assert!(text.contains("--payment-reversed"), "{text}");

    // Delivered: refused, naming the payment and Xero's id of it.
    deliver_by_hand(store, &entry, "61ed71fc-01bf-4eb8-8419-8a18789ff45f").await;
    let err = push::undo(store, id, "bob", None, false).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(pid.as_str()), "{text}");
    assert!(
        text.contains("61ed71fc-01bf-4eb8-8419-8a18789ff45f"),
        "{text}"
    );
    assert!(text.contains("xero_main"), "{text}");
    // Nothing changed.
    let a = store.allocation(id).await.unwrap().unwrap();
    assert_eq!(a.allocation.status, AllocationStatus::Confirmed);
    assert_eq!(
        store
            .get_record(EntityKind::Payment, &pid)
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );

    // Reversed in Xero by the operator: the undo goes through and says so.
    let undone = push::undo(store, id, "bob", Some("deleted the payment in Xero"), true)
        .await
        .unwrap();
    assert_eq!(
        undone.allocation.allocation.status,
        AllocationStatus::Suggested
    );
    assert_eq!(
        undone.payments[0].voided,
        Some((pid.clone(), PaymentStatus::Reversed))
    );
    let row = &store.allocation_payments(&[id]).await.unwrap()[0];
    assert_eq!(row.status, PaymentStatus::Reversed);
    assert_eq!(row.delivery.as_ref().unwrap().status, "delivered");
    let rec = store
        .get_record(EntityKind::Payment, &pid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.version, rec.data["status"].clone()),
        (2, json!("reversed"))
    );
    assert!(
        payments_due(store, XERO).await.is_empty(),
        "a reversal is not pushed"
    );
}

async fn a_delivery_that_beat_the_undo_raises_an_alert(store: &TestStore) {
    let push = push_to_xero();
    let (cust, inv) = invoice_at(
        store,
        XERO,
        "RE-5001",
        "70.00",
        "44444444-4444-4444-8444-444444444444",
    )
    .await;
    let tx = receipt(store, "70.00", "EUR", "RE-5001").await;
    let id = suggest(store, &tx, &inv, &cust, "RE-5001", "70.00").await;
    push::confirm(store, Some(&push), id, "alice", None)
        .await
        .unwrap();
    // A delivery pass read the entry, then the undo cancelled it, then the
    // pass settled what the ERP answered.
    let entry = payments_due(store, XERO).await.remove(0);
    push::undo(store, id, "alice", None, false).await.unwrap();
    deliver_by_hand(store, &entry, "55555555-5555-4555-8555-555555555555").await;
    assert_eq!(push::check_after_delivery(store).await.unwrap(), 1);
    assert_eq!(push::check_after_delivery(store).await.unwrap(), 0, "once");
    let alerts = store.open_alerts(100).await.unwrap();
    let a = alerts
        .iter()
        .find(|a| a.alert.rule == "reconcile_payment_after_undo")
        .expect("an alert");
    assert_eq!(a.alert.severity.as_str(), "critical");
    assert!(
        a.alert
            .reason
            .contains("55555555-5555-4555-8555-555555555555"),
        "{}",
        a.alert.reason
    );
}

async fn manual_allocations_never_over_allocate(store: &TestStore) {
    let push = push_to_xero();
    let (_, inv) = invoice_at(
        store,
        XERO,
        "RE-6001",
        "100.00",
        "66666666-6666-4666-8666-666666666666",
    )
    .await;
    let t1 = receipt(store, "70.00", "EUR", "part one").await;
    let t2 = receipt(store, "50.00", "EUR", "part two").await;
    let allocate = |tx: &CanonicalId, inv: &CanonicalId, amount: Option<&str>| ManualAllocation {
        transaction_id: tx.clone(),
        invoice_id: inv.clone(),
        amount: amount.map(d),
        actor: "carol".into(),
        note: Some("customer called".into()),
    };

    // More than the receipt received.
    let err = push::allocate(store, Some(&push), &allocate(&t1, &inv, Some("80.00")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("would over-allocate bank transaction"),
        "{err}"
    );
    assert!(err.contains("at most 70.00 EUR is left"), "{err}");

    // The whole receipt by default (less than the invoice is open for).
    let done = push::allocate(store, Some(&push), &allocate(&t1, &inv, None))
        .await
        .unwrap();
    let a = &done.allocation;
    assert_eq!(a.allocation.status, AllocationStatus::Manual);
    assert_eq!(a.allocation.amount, d("70.00"));
    assert_eq!(a.actor.as_deref(), Some("carol"));
    assert!(
        a.allocation
            .reasons
            .iter()
            .any(|r| r.contains("customer called"))
    );
    assert_eq!(done.payments.len(), 1, "a manual allocation is pushed too");
    assert_eq!(payments_due(store, XERO).await.len(), 1);
    let history = store.allocation_history(a.id).await.unwrap();
    assert_eq!(history.last().unwrap().to_status, "manual");

    // 50 more would pay 120 of an invoice open for 100.
    let err = push::allocate(store, Some(&push), &allocate(&t2, &inv, Some("50.00")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("would over-allocate invoice RE-6001"), "{err}");
    assert!(err.contains("70.00 EUR is already allocated"), "{err}");
    assert!(err.contains(&format!("allocation(s) {}", a.id)), "{err}");
    assert!(err.contains("at most 30.00 EUR is left"), "{err}");
    // By default exactly what is left.
    let rest = push::allocate(store, Some(&push), &allocate(&t2, &inv, None))
        .await
        .unwrap();
    assert_eq!(rest.allocation.allocation.amount, d("30.00"));
    // Now nothing is left.
    let t3 = receipt(store, "5.00", "EUR", "more").await;
    let err = push::allocate(store, Some(&push), &allocate(&t3, &inv, None))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing is left to allocate"), "{err}");
    // The same pair twice.
    let err = push::allocate(store, Some(&push), &allocate(&t1, &inv, Some("1.00")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already pays invoice RE-6001"), "{err}");

    // Another currency, a debit, too many decimals, not positive.
    let (_, other) = invoice_at(
        store,
        XERO,
        "RE-6002",
        "100.00",
        "77777777-7777-4777-8777-777777777777",
    )
    .await;
    let usd = receipt(store, "100.00", "USD", "RE-6002").await;
    let err = push::allocate(store, Some(&push), &allocate(&usd, &other, None))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is in USD, invoice RE-6002 in EUR"), "{err}");
    let debit = receipt(store, "-100.00", "EUR", "refund").await;
    let err = push::allocate(store, Some(&push), &allocate(&debit, &other, None))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("only receipts pay invoices"), "{err}");
    let t4 = receipt(store, "100.00", "EUR", "RE-6002").await;
    let err = push::allocate(store, Some(&push), &allocate(&t4, &other, Some("10.001")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("more decimals than EUR has"), "{err}");
    let err = push::allocate(store, Some(&push), &allocate(&t4, &other, Some("0")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be positive"), "{err}");

    // A suggestion that no longer fits is not confirmed either.
    let (c8, i8) = invoice_at(
        store,
        XERO,
        "RE-6003",
        "40.00",
        "88888888-8888-4888-8888-888888888888",
    )
    .await;
    let t8 = receipt(store, "40.00", "EUR", "RE-6003").await;
    let t9 = receipt(store, "40.00", "EUR", "RE-6003 again").await;
    let s = suggest(store, &t8, &i8, &c8, "RE-6003", "40.00").await;
    push::allocate(store, Some(&push), &allocate(&t9, &i8, None))
        .await
        .unwrap();
    let err = push::confirm(store, Some(&push), s, "alice", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("would allocate 80.00 EUR of invoice RE-6003, which is open for 40.00 EUR"),
        "{err}"
    );
    assert_eq!(
        store
            .allocation(s)
            .await
            .unwrap()
            .unwrap()
            .allocation
            .status,
        AllocationStatus::Suggested
    );

    // Manual allocations can be taken back; the payment goes with them.
    let undone = push::undo(store, rest.allocation.id, "carol", None, false)
        .await
        .unwrap();
    assert_eq!(
        undone.allocation.allocation.status,
        AllocationStatus::Undone
    );
    assert_eq!(
        undone.payments[0].voided.as_ref().unwrap().1,
        PaymentStatus::Cancelled
    );
}

async fn a_payment_the_erp_shows_is_not_counted_twice(store: &TestStore) {
    let push = push_to_xero();
    let (cust, inv) = invoice_at(
        store,
        XERO,
        "RE-7001",
        "100.00",
        "99999999-9999-4999-8999-999999999999",
    )
    .await;
    let t1 = receipt(store, "40.00", "EUR", "RE-7001 part").await;
    let id = suggest(store, &t1, &inv, &cust, "RE-7001", "40.00").await;
    push::confirm(store, Some(&push), id, "alice", None)
        .await
        .unwrap();
    let entry = payments_due(store, XERO).await.remove(0);
    deliver_by_hand(store, &entry, "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // Xero applied it: the invoice read from Xero again is open for 60.
    let head = store
        .get_record(EntityKind::Invoice, &inv)
        .await
        .unwrap()
        .unwrap();
    let entity = Entity::from_value(
        EntityKind::Invoice,
        invoice_data("RE-7001", &cust, "100.00", "60.00"),
    )
    .unwrap();
    store
        .commit(&Batch {
            records: vec![RecordWrite::of(
                &entity,
                inv.clone(),
                head.version,
                Provenance::pull(XERO),
            )],
            ..Batch::default()
        })
        .await
        .unwrap();
    // 60 is what is left, not 60 - 40.
    let t2 = receipt(store, "60.00", "EUR", "RE-7001 rest").await;
    let rest = push::allocate(
        store,
        Some(&push),
        &ManualAllocation {
            transaction_id: t2,
            invoice_id: inv.clone(),
            amount: None,
            actor: "carol".into(),
            note: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(rest.allocation.allocation.amount, d("60.00"));
    // And a run sees the invoice paid in full: nothing is left to match.
    receipt(store, "60.00", "EUR", "RE-7001").await;
    let r = stored::run(
        store,
        &RunOptions {
            since: None,
            actor: "scheduler".into(),
            config: concord::reconcile::Config::default(),
        },
    )
    .await
    .unwrap();
    assert_eq!(r.invoices, 0, "{r:?}");
}

on_both_backends!(
    confirm_writes_one_payment_and_one_outbox_entry,
    a_receipt_paying_two_invoices_becomes_two_payments,
    undo_cancels_a_payment_that_has_not_left,
    undo_of_a_payment_at_the_erp_is_refused_until_reversed,
    a_delivery_that_beat_the_undo_raises_an_alert,
    manual_allocations_never_over_allocate,
    a_payment_the_erp_shows_is_not_counted_twice,
);

// ---------------------------------------------------------------------------
// Delivery through the sync engine

fn settings_with(
    system: &str,
    connector: &str,
    base_url: &str,
    vars: &[(&str, &str)],
    push: PaymentPushSettings,
) -> Settings {
    let mut settings = Settings::default();
    settings.connectors.dir = support::root().join("connectors");
    settings.mappings.dir = support::root().join("mappings");
    settings.systems.insert(
        system.into(),
        SystemSettings {
            connector: connector.into(),
            base_url: Some(base_url.into()),
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), SecretString::from((*v).to_owned())))
                .collect(),
        },
    );
    settings.reconcile.push = Some(push);
    settings
}

/// Payments pushed as submitted Payment Entries to the ERPNext `site`,
/// known as `system`.
fn push_to_erpnext(site: &erpnext::Erpnext, system: &str) -> Settings {
    settings_with(
        system,
        "erpnext",
        &site.base_url,
        &[
            ("site", "erp.example.com"),
            ("api_key", erpnext::API_KEY),
            ("api_secret", erpnext::API_SECRET),
            ("timezone", "UTC"),
        ],
        PaymentPushSettings {
            system: system.into(),
            entity: "payment_entry".into(),
            mapping: "erpnext-payment-entry-out".into(),
            bank_account: Some("Bank - CDG".into()),
            bank_accounts: BTreeMap::new(),
        },
    )
}

/// Xero's identity server, as far as a client-credentials token goes.
async fn identity_server() -> String {
    async fn token() -> axum::Json<Value> {
        axum::Json(json!({
            "access_token": "eyJ-reconcile-push-test",
            "expires_in": 1800,
            "token_type": "Bearer",
        }))
    }
    let addr = support::serve(Router::new().route("/connect/token", post(token))).await;
    format!("http://{addr}/connect/token")
}

fn puts_of_payments(prism: &prism::Prism) -> usize {
    std::fs::read_to_string(&prism.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("put /Payments") && l.contains("Request received"))
        .count()
}

#[tokio::test]
async fn confirmed_payments_reach_xero_once() {
    let Some(prism) = prism::shared() else { return };
    let store = common::sqlite().await;
    let token_url = identity_server().await;
    let settings = settings_with(
        XERO,
        "xero",
        &prism.base_url,
        &[
            ("token_url", &token_url),
            ("client_id", "CONCORDTESTCLIENT"),
            ("client_secret", "s3cret-client-secret"),
            ("tenant_id", "a3675fc4-f8dd-4f03-ba5b-f1870566bcd7"),
        ],
        push_to_xero(),
    );
    let push = settings.reconcile.push.clone().unwrap();
    let (cust, inv) = invoice_at(
        &store,
        XERO,
        "INV-0004",
        "230.00",
        "c7c37b83-ac95-45ea-88ba-8ad83a5f22fe",
    )
    .await;
    let tx = receipt(&store, "230.00", "EUR", "INV-0004").await;
    let id = suggest(&store, &tx, &inv, &cust, "INV-0004", "230.00").await;
    // An invoice linked to something that is not a Xero id: Xero (the
    // spec) refuses the payment, and it waits in dead letters.
    let (c2, i2) = invoice_at(&store, XERO, "INV-0005", "10.00", "INV-0005").await;
    let t2 = receipt(&store, "10.00", "EUR", "INV-0005").await;
    let id2 = suggest(&store, &t2, &i2, &c2, "INV-0005", "10.00").await;
    // An invoice not linked to Xero yet: the payment cannot be rendered.
    let c3 = put_from(
        &store,
        XERO,
        EntityKind::Customer,
        json!({"name": "Later Ltd"}),
    )
    .await;
    let i3 = put_from(
        &store,
        XERO,
        EntityKind::Invoice,
        invoice_data("INV-0006", &c3, "20.00", "20.00"),
    )
    .await;
    let t3 = receipt(&store, "20.00", "EUR", "INV-0006").await;
    let id3 = suggest(&store, &t3, &i3, &c3, "INV-0006", "20.00").await;
    for a in [id, id2, id3] {
        push::confirm(&store, Some(&push), a, "alice", None)
            .await
            .unwrap();
    }

    let engine = Engine::new(settings.clone(), store.store.clone()).unwrap();
    let mut report = JobReport::default();
    engine.deliver_payments(&mut report).await.unwrap();
    assert_eq!(
        (report.delivered, report.dead_lettered),
        (1, 2),
        "{report:?}\n{}",
        prism.log_tail(20)
    );
    let rows = store.allocation_payments(&[id, id2]).await.unwrap();
    let delivered = rows.iter().find(|r| r.allocation_id == id).unwrap();
    let d = delivered.delivery.as_ref().unwrap();
    assert_eq!(d.status, "delivered");
    // The PaymentID of the spec's example answer.
    assert_eq!(
        d.external_id.as_deref(),
        Some("61ed71fc-01bf-4eb8-8419-8a18789ff45f")
    );
    let links = store
        .external_links(
            EntityKind::Payment,
            XERO,
            std::slice::from_ref(&delivered.payment_id),
        )
        .await
        .unwrap();
    assert_eq!(links.len(), 1);
    let dead = rows.iter().find(|r| r.allocation_id == id2).unwrap();
    let dd = dead.delivery.as_ref().unwrap();
    assert_eq!(dd.status, "dead");
    let error = dd.last_error.as_deref().unwrap();
    assert!(error.starts_with("rejected by xero_main"), "{error}");
    assert!(error.contains("400"), "{error}");
    let unrendered = &store.allocation_payments(&[id3]).await.unwrap()[0];
    let error = unrendered
        .delivery
        .as_ref()
        .unwrap()
        .last_error
        .clone()
        .unwrap();
    assert!(
        error.contains("mapping xero-payment-out cannot render"),
        "{error}"
    );
    assert!(error.contains("Invoice.InvoiceID"), "{error}");

    // Pushing again sends nothing: what was delivered is not due.
    let sent = puts_of_payments(prism);
    assert!(
        sent >= 2,
        "Prism's log shows the requests:\n{}",
        prism.log_tail(20)
    );
    let mut again = JobReport::default();
    engine.deliver_payments(&mut again).await.unwrap();
    assert_eq!((again.delivered, again.dead_lettered), (0, 0), "{again:?}");
    assert_eq!(puts_of_payments(prism), sent, "nothing was sent again");

    // The invoice reaches Xero; the dead letters are replayed (as
    // `concord replay dead-letters --target xero_main` does): that payment
    // is delivered, the one Xero refuses is dead again.
    link(
        &store,
        EntityKind::Invoice,
        &i3,
        XERO,
        "046d8a6d-1ae1-4b4d-9340-5601bdf41b87",
    )
    .await;
    assert_eq!(store.outbox_requeue(Some(XERO), &[]).await.unwrap(), 2);
    let replayed = engine.deliver_all(Some(XERO)).await.unwrap();
    assert_eq!(
        (replayed.delivered, replayed.dead_lettered),
        (1, 1),
        "{replayed:?}\n{}",
        prism.log_tail(20)
    );

    // The ERP has the payment: undo is refused, naming it.
    let err = push::undo(&store, id, "bob", None, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("61ed71fc-01bf-4eb8-8419-8a18789ff45f"),
        "{err}"
    );
    assert!(err.contains(delivered.payment_id.as_str()), "{err}");
    store.cleanup().await;
}

#[tokio::test]
async fn confirmed_payments_become_submitted_erpnext_payment_entries() {
    let site = erpnext::Erpnext::start().await;
    let store = common::sqlite().await;
    let system = "erp_main";
    let settings = push_to_erpnext(&site, system);
    let push = settings.reconcile.push.clone().unwrap();
    let (cust, inv) = invoice_at(
        &store,
        system,
        "ACC-SINV-2026-00042",
        "1190.50",
        "ACC-SINV-2026-00042",
    )
    .await;
    link(
        &store,
        EntityKind::Customer,
        &cust,
        system,
        "Müller Maschinenbau GmbH",
    )
    .await;
    let tx = receipt(&store, "1190.50", "EUR", "ACC-SINV-2026-00042").await;
    let id = suggest(&store, &tx, &inv, &cust, "ACC-SINV-2026-00042", "1190.50").await;
    let pid = push::confirm(&store, Some(&push), id, "alice", None)
        .await
        .unwrap()
        .payments[0]
        .written
        .clone()
        .unwrap();

    let engine = Engine::new(settings, store.store.clone()).unwrap();
    let report = engine.deliver_all(None).await.unwrap();
    assert_eq!(report.delivered, 1, "{report:?}");
    let (name, doc) = {
        let s = site.lock();
        let docs = &s.docs["Payment Entry"];
        assert_eq!(docs.len(), 1, "{docs:?}");
        let (name, doc) = docs.iter().next().unwrap();
        (name.clone(), doc.clone())
    };
    assert_eq!(doc["payment_type"], "Receive");
    assert_eq!(doc["party_type"], "Customer");
    assert_eq!(doc["party"], "Müller Maschinenbau GmbH");
    assert_eq!(doc["paid_to"], "Bank - CDG");
    assert_eq!(doc["remarks"], "ACC-SINV-2026-00042");
    assert_eq!(doc["paid_amount"], json!(1190.5));
    assert_eq!(doc["posting_date"], "2026-11-05");
    assert_eq!(doc["reference_no"], "BR-2026-11-05-001");
    assert_eq!(doc["references"][0]["reference_doctype"], "Sales Invoice");
    assert_eq!(
        doc["references"][0]["reference_name"],
        "ACC-SINV-2026-00042"
    );
    assert_eq!(doc["references"][0]["allocated_amount"], json!(1190.5));
    assert_eq!(
        doc["custom_concord_key"],
        json!(format!("payment:{pid}:create:{system}")),
        "the create carries its idempotency key"
    );
    let rows = store.allocation_payments(&[id]).await.unwrap();
    assert_eq!(
        rows[0].delivery.as_ref().unwrap().external_id.as_deref(),
        Some(name.as_str())
    );
    // The body as sent: submitted on insert, into the configured account.
    let posts = site.lock().seen("POST", "/api/resource/Payment Entry");
    assert_eq!(posts.len(), 1);
    let body = posts[0].body.as_ref().unwrap();
    assert_eq!(body["docstatus"], 1);
    assert_eq!(body["paid_to"], "Bank - CDG");

    // Idempotent: a second pass sends nothing.
    let again = engine.deliver_all(None).await.unwrap();
    assert_eq!(again.delivered, 0);
    assert_eq!(
        site.lock()
            .seen("POST", "/api/resource/Payment Entry")
            .len(),
        1
    );
    store.cleanup().await;
}

/// `[reconcile] schedule`: `concord serve` matches the store's receipts on
/// its cron schedule, and each scheduled run delivers the payments of what
/// people confirmed in between.
#[tokio::test]
async fn the_daemon_reconciles_on_schedule_and_delivers_confirmed_payments() {
    let site = erpnext::Erpnext::start().await;
    let store = common::sqlite().await;
    let system = "erp_main";
    let mut settings = push_to_erpnext(&site, system);
    settings.reconcile.schedule = Some("* * * * * *".into());
    settings.server.workers = 0;
    settings.server.scheduler = true;
    let number = "ACC-SINV-2026-00077";
    let (cust, _inv) = invoice_at(&store, system, number, "640.00", number).await;
    link(&store, EntityKind::Customer, &cust, system, "Customer 77").await;
    // Paid in part: a suggestion, which a person confirms.
    receipt(&store, "600.00", "EUR", &format!("Rechnung {number}")).await;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let engine = Engine::new(settings.clone(), store.store.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = concord::serve::start(settings.clone(), std::sync::Arc::new(engine), listener)
        .await
        .unwrap();
    let mut made = Vec::new();
    for _ in 0..100 {
        made = store.allocations(&[]).await.unwrap();
        if !made.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        made.len(),
        1,
        "the scheduled run matched the receipt: {made:?}"
    );
    assert_eq!(
        made[0].allocation.status,
        AllocationStatus::Suggested,
        "{made:?}"
    );
    assert_eq!(
        made[0].actor.as_deref(),
        Some(concord::serve::RECONCILE_ACTOR)
    );
    let push = settings.reconcile.push.clone().unwrap();
    push::confirm(&store, Some(&push), made[0].id, "alice", None)
        .await
        .unwrap();
    let mut posted = 0;
    for _ in 0..100 {
        posted = site
            .lock()
            .seen("POST", "/api/resource/Payment Entry")
            .len();
        if posted > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A few more ticks: confirmed stays confirmed, nothing is sent twice.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    running.shutdown();
    running.wait().await.unwrap();
    assert_eq!(posted, 1, "the next scheduled run delivered the payment");
    assert_eq!(
        site.lock()
            .seen("POST", "/api/resource/Payment Entry")
            .len(),
        1
    );
    let now = store.allocations(&[]).await.unwrap();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0].allocation.status, AllocationStatus::Confirmed);
    store.cleanup().await;
}

// ---------------------------------------------------------------------------
// The commands

fn concord(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_concord"));
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("CONCORD_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run concord")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn allocate_refuses_to_over_allocate_and_undo_cancels_the_payment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("concord.db");
    let root = support::root();
    let base = format!(
        "[store]\nurl = \"sqlite://{}\"\n[connectors]\ndir = \"{}\"\n[mappings]\ndir = \"{}\"\n\
         [systems.xero_main]\nconnector = \"xero\"\nbase_url = \"http://127.0.0.1:9\"\n",
        db.display(),
        root.join("connectors").display(),
        root.join("mappings").display()
    );
    let with_push = format!(
        "{base}[reconcile.push]\nsystem = \"xero_main\"\nentity = \"payment\"\nmapping = \"xero-payment-out\"\nbank_account = \"090\"\n"
    );
    std::fs::write(dir.path().join("push.toml"), &with_push).unwrap();
    std::fs::write(dir.path().join("plain.toml"), &base).unwrap();
    let (tx, inv) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let settings = concord::settings::StoreSettings {
            url: format!("sqlite://{}", db.display()).into(),
            ..Default::default()
        };
        let store = Store::open(&settings).await.unwrap();
        let (_, inv) = invoice_at(
            &store,
            XERO,
            "RE-9001",
            "100.00",
            "d4956132-ed94-4dd7-9eaa-aa22dfdf06f2",
        )
        .await;
        let tx = receipt(&store, "150.00", "EUR", "RE-9001 and more").await;
        store.close().await;
        (tx, inv)
    });
    let tx = tx.to_string();

    // More than the invoice is open for: refused, saying by how much.
    let out = concord(
        dir.path(),
        &[
            "--config",
            "push.toml",
            "reconcile",
            "allocate",
            &tx,
            "RE-9001",
            "--amount",
            "120.00",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not allocated to invoice RE-9001"), "{err}");
    assert!(
        err.contains("120.00 EUR would over-allocate invoice RE-9001"),
        "{err}"
    );
    assert!(err.contains("at most 100.00 EUR is left"), "{err}");

    // By number, the amount both have left: a manual allocation, its
    // payment queued.
    let out = concord(
        dir.path(),
        &[
            "--config",
            "push.toml",
            "reconcile",
            "allocate",
            &tx,
            "RE-9001",
            "--note",
            "phone call",
            "--actor",
            "carol",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "100.00 EUR of transaction {tx} to invoice RE-9001 is manual (by carol)"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("payment pay-"), "{stdout}");
    assert!(stdout.contains("queued for the ERP"), "{stdout}");
    let id: i64 = stdout
        .strip_prefix("allocation ")
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));

    let out = concord(
        dir.path(),
        &[
            "--config",
            "push.toml",
            "reconcile",
            "payments",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["allocation_id"], json!(id));
    assert_eq!(listed[0]["status"], "active");
    assert_eq!(listed[0]["delivery"]["status"], "pending");
    assert_eq!(listed[0]["delivery"]["attempts"], 0);

    // Taken back before it was sent: the delivery is cancelled with it.
    let out = concord(
        dir.path(),
        &[
            "--config",
            "push.toml",
            "reconcile",
            "undo",
            &id.to_string(),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("is now undone"), "{stdout}");
    assert!(
        stdout.contains("had not reached the ERP: its delivery is cancelled"),
        "{stdout}"
    );
    let out = concord(
        dir.path(),
        &["--config", "push.toml", "reconcile", "payments"],
    );
    assert_eq!(text(&out.stdout), "no payments\n");

    // Pushing without [reconcile.push] is a configuration error (exit 2).
    let out = concord(dir.path(), &["--config", "plain.toml", "reconcile", "push"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("reconcile.push"),
        "{}",
        text(&out.stderr)
    );
    let _ = inv;
}
