//! The store suite: every test runs on SQLite and, when
//! `CONCORD_TEST_DATABASE_URL` is set, on PostgreSQL in a fresh schema.

mod common;

use std::str::FromStr;

use common::TestStore;
use concord::model::{CanonicalId, Currency, EntityKind, Money};
use concord::store::{
    Batch, Cause, CursorWrite, Delivery, IdentityKeyWrite, InboxEvent, LinkWrite, NewAlert,
    NewConflict, OutboxWrite, Provenance, QuarantineItem, RecordWrite, Severity, SourceHashWrite,
    StoreError,
};
use rust_decimal::Decimal;
use serde_json::json;

on_both_backends!(
    insert_and_update_keep_history,
    stale_version_rolls_back_the_whole_batch,
    creating_an_existing_record_is_a_conflict,
    links_are_found_both_ways,
    many_links_are_found_in_batches,
    cursor_commits_with_its_records,
    outbox_keys_are_unique,
    inbox_deduplicates_events,
    decimals_round_trip_exactly,
    record_heads_skip_data,
    quarantine_conflicts_and_alerts_show_in_status,
    migrate_twice_applies_nothing,
    identity_keys_and_conflicts_commit_with_their_batch,
    outbox_delivery_settles_with_the_link,
    records_are_read_in_batches,
    links_name_the_version_they_hold,
    awkward_documents_round_trip,
    source_hashes_hold_only_for_the_take_in_that_wrote_them,
    changed_arrivals_leave_out_what_arrived_so_before,
);

fn eur(amount: &str) -> Money {
    Money::new(
        Decimal::from_str(amount).unwrap(),
        Currency::parse("EUR").unwrap(),
    )
    .unwrap()
}

fn customer(id: &CanonicalId, expected: i64, name: &str, system: &str) -> RecordWrite {
    RecordWrite {
        entity: EntityKind::Customer,
        id: id.clone(),
        expected_version: expected,
        content_hash: None,
        data_json: None,
        data: json!({ "name": name, "email": "ap@acme.example" }),
        amount: None,
        provenance: Provenance {
            event_id: Some(format!("pull-{expected}")),
            mapping_version: Some("crm-customer-in@1".into()),
            ..Provenance::pull(system)
        },
    }
}

fn batch_of(records: Vec<RecordWrite>) -> Batch {
    Batch {
        records,
        ..Batch::default()
    }
}

async fn insert_and_update_keep_history(store: &TestStore) {
    let id = CanonicalId::new();
    let first = store
        .commit(&batch_of(vec![customer(&id, 0, "Acme", "crm")]))
        .await
        .unwrap();
    assert_eq!(first.versions, vec![1]);

    let mut edit = customer(&id, 1, "Acme GmbH", "erp");
    edit.provenance = Provenance::operator("alice");
    let second = store.commit(&batch_of(vec![edit])).await.unwrap();
    assert_eq!(second.versions, vec![2]);

    let current = store
        .get_record(EntityKind::Customer, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.version, 2);
    assert_eq!(current.data["name"], "Acme GmbH");
    assert_eq!(
        current.content_hash,
        concord::model::content_hash(&current.data)
    );

    let history = store.history(EntityKind::Customer, &id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].version, 1);
    assert_eq!(history[0].data["name"], "Acme");
    assert_eq!(history[0].provenance.cause, Cause::Pull);
    assert_eq!(history[0].provenance.source_system.as_deref(), Some("crm"));
    assert_eq!(
        history[0].provenance.mapping_version.as_deref(),
        Some("crm-customer-in@1")
    );
    assert_eq!(history[1].provenance.cause, Cause::Operator);
    assert_eq!(history[1].provenance.actor.as_deref(), Some("alice"));
    assert!(history[1].at >= history[0].at);

    assert!(
        store
            .get_record(EntityKind::Customer, &CanonicalId::new())
            .await
            .unwrap()
            .is_none()
    );
}

async fn stale_version_rolls_back_the_whole_batch(store: &TestStore) {
    let id = CanonicalId::new();
    store
        .commit(&batch_of(vec![customer(&id, 0, "Acme", "crm")]))
        .await
        .unwrap();
    store
        .commit(&batch_of(vec![customer(&id, 1, "Acme 2", "crm")]))
        .await
        .unwrap();

    let other = CanonicalId::new();
    let stale = Batch {
        records: vec![
            customer(&other, 0, "Globex", "crm"),
            customer(&id, 1, "lost update", "crm"),
        ],
        outbox: vec![OutboxWrite {
            entity: EntityKind::Customer,
            canonical_id: other.clone(),
            version: 1,
            target_system: "erp".into(),
        }],
        cursors: vec![CursorWrite {
            system: "crm".into(),
            entity: "customer".into(),
            cursor: "2026-11-28T00:00:00Z|42".into(),
        }],
        ..Batch::default()
    };
    let err = store.commit(&stale).await.unwrap_err();
    match &err {
        StoreError::VersionConflict {
            expected, actual, ..
        } => assert_eq!((*expected, *actual), (1, 2)),
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert!(err.to_string().contains("version 2, not 1"), "{err}");

    // Nothing of the failed batch is visible.
    assert!(
        store
            .get_record(EntityKind::Customer, &other)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.load_cursor("crm", "customer").await.unwrap(), None);
    assert!(store.outbox_due(10).await.unwrap().is_empty());
    let current = store
        .get_record(EntityKind::Customer, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.data["name"], "Acme 2");
}

async fn creating_an_existing_record_is_a_conflict(store: &TestStore) {
    let id = CanonicalId::new();
    store
        .commit(&batch_of(vec![customer(&id, 0, "Acme", "crm")]))
        .await
        .unwrap();
    let err = store
        .commit(&batch_of(vec![customer(&id, 0, "Acme again", "erp")]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::VersionConflict {
                expected: 0,
                actual: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        store
            .history(EntityKind::Customer, &id)
            .await
            .unwrap()
            .len(),
        1
    );
}

fn link(id: &CanonicalId, system: &str, external_id: &str) -> LinkWrite {
    LinkWrite {
        entity: EntityKind::Customer,
        system: system.into(),
        external_id: external_id.into(),
        canonical_id: id.clone(),
        synced_version: Some(1),
        synced_data: Some(json!({ "name": "Acme" })),
        synced_hash: None,
        remote_updated_at: Some("2026-11-27T10:00:00Z".parse().unwrap()),
        source_hash: None,
    }
}

async fn links_are_found_both_ways(store: &TestStore) {
    let id = CanonicalId::new();
    let batch = Batch {
        records: vec![customer(&id, 0, "Acme", "crm")],
        links: vec![link(&id, "crm", "hs-101"), link(&id, "erp", "CUST-0042")],
        ..Batch::default()
    };
    store.commit(&batch).await.unwrap();

    let found = store
        .find_link(EntityKind::Customer, "erp", "CUST-0042")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.canonical_id, id);
    assert_eq!(found.synced_version, Some(1));
    assert_eq!(found.synced_data, Some(json!({ "name": "Acme" })));
    assert_eq!(
        found.synced_hash.as_deref(),
        Some(concord::model::content_hash(&json!({ "name": "Acme" })).as_str())
    );
    assert_eq!(
        found.remote_updated_at,
        Some("2026-11-27T10:00:00Z".parse().unwrap())
    );

    // The same external id in another system, or another entity, is not it.
    assert!(
        store
            .find_link(EntityKind::Customer, "crm", "CUST-0042")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_link(EntityKind::Invoice, "erp", "CUST-0042")
            .await
            .unwrap()
            .is_none()
    );

    let all = store.links_of(EntityKind::Customer, &id).await.unwrap();
    let systems: Vec<(&str, &str)> = all
        .iter()
        .map(|l| (l.system.as_str(), l.external_id.as_str()))
        .collect();
    assert_eq!(systems, vec![("crm", "hs-101"), ("erp", "CUST-0042")]);
    let outbound = store
        .external_links(
            EntityKind::Customer,
            "erp",
            &[id.clone(), CanonicalId::new()],
        )
        .await
        .unwrap();
    assert_eq!(outbound.len(), 1);
    assert_eq!(outbound[0].external_id, "CUST-0042");

    // Re-linking updates in place.
    let mut moved = link(&id, "erp", "CUST-0042");
    moved.synced_version = Some(2);
    moved.synced_data = None;
    store
        .commit(&Batch {
            links: vec![moved],
            ..Batch::default()
        })
        .await
        .unwrap();
    let found = store
        .find_link(EntityKind::Customer, "erp", "CUST-0042")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.synced_version, Some(2));
    assert_eq!(found.synced_data, None);
    assert_eq!(found.synced_hash, None);
}

async fn many_links_are_found_in_batches(store: &TestStore) {
    let n = 1_203;
    let mut batch = Batch::default();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = CanonicalId::new();
        batch.links.push(link(&id, "erp", &format!("C{i:05}")));
        ids.push(id);
    }
    store.commit(&batch).await.unwrap();
    let mut wanted: Vec<String> = (0..n).map(|i| format!("C{i:05}")).collect();
    wanted.push("C-unknown".into());
    let mut found = store
        .find_links(EntityKind::Customer, "erp", &wanted)
        .await
        .unwrap();
    assert_eq!(found.len(), n);
    found.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    for (i, l) in found.iter().enumerate() {
        assert_eq!(l.external_id, format!("C{i:05}"));
        assert_eq!(l.canonical_id, ids[i]);
    }
}

async fn cursor_commits_with_its_records(store: &TestStore) {
    assert_eq!(store.load_cursor("erp", "invoice").await.unwrap(), None);
    let id = CanonicalId::new();
    let page = Batch {
        records: vec![RecordWrite {
            entity: EntityKind::Invoice,
            id: id.clone(),
            expected_version: 0,
            content_hash: None,
            data_json: None,
            data: json!({ "number": "INV-1", "currency": "EUR", "total": "100.00", "open_amount": "100.00" }),
            amount: Some(eur("100.00")),
            provenance: Provenance::pull("erp"),
        }],
        cursors: vec![CursorWrite {
            system: "erp".into(),
            entity: "invoice".into(),
            cursor: "2026-11-28T08:00:00Z|INV-1".into(),
        }],
        ..Batch::default()
    };
    store.commit(&page).await.unwrap();
    assert_eq!(
        store
            .load_cursor("erp", "invoice")
            .await
            .unwrap()
            .as_deref(),
        Some("2026-11-28T08:00:00Z|INV-1")
    );

    // A page that fails to store does not move the cursor.
    let failing = Batch {
        records: vec![RecordWrite {
            expected_version: 7,
            content_hash: None,
            data_json: None,
            ..page.records[0].clone()
        }],
        cursors: vec![CursorWrite {
            cursor: "2026-11-28T09:00:00Z|INV-2".into(),
            ..page.cursors[0].clone()
        }],
        ..Batch::default()
    };
    assert!(store.commit(&failing).await.is_err());
    assert_eq!(
        store
            .load_cursor("erp", "invoice")
            .await
            .unwrap()
            .as_deref(),
        Some("2026-11-28T08:00:00Z|INV-1")
    );
}

async fn outbox_keys_are_unique(store: &TestStore) {
    let id = CanonicalId::new();
    let entry = OutboxWrite {
        entity: EntityKind::Customer,
        canonical_id: id.clone(),
        version: 1,
        target_system: "erp".into(),
    };
    let batch = Batch {
        outbox: vec![entry.clone(), entry.clone()],
        ..Batch::default()
    };
    let outcome = store.commit(&batch).await.unwrap();
    assert_eq!((outcome.outbox_enqueued, outcome.outbox_duplicates), (1, 1));
    let again = store
        .commit(&Batch {
            outbox: vec![
                entry.clone(),
                OutboxWrite {
                    version: 2,
                    ..entry.clone()
                },
            ],
            ..Batch::default()
        })
        .await
        .unwrap();
    assert_eq!((again.outbox_enqueued, again.outbox_duplicates), (1, 1));

    let due = store.outbox_due(10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].idempotency_key, entry.idempotency_key());
    assert_eq!(due[0].canonical_id, id);
    assert_eq!((due[0].version, due[1].version), (1, 2));
    assert_eq!(due[0].status, "pending");
    assert_eq!(due[0].attempts, 0);
}

async fn inbox_deduplicates_events(store: &TestStore) {
    let event = InboxEvent {
        idempotency_key: "hubspot:evt-1".into(),
        system: "hubspot".into(),
        entity: Some(EntityKind::Customer),
        payload: json!({ "objectId": 101 }),
    };
    let first = store.inbox_push(&event).await.unwrap();
    assert!(first.is_some());
    assert_eq!(store.inbox_push(&event).await.unwrap(), None);
    let other = InboxEvent {
        idempotency_key: "hubspot:evt-2".into(),
        ..event.clone()
    };
    assert!(store.inbox_push(&other).await.unwrap() > first);
    let status = store.status().await.unwrap();
    assert_eq!(status.inbox.len(), 1);
    assert_eq!(status.inbox[0].count, 2);
}

async fn decimals_round_trip_exactly(store: &TestStore) {
    let sum = eur("0.1").checked_add(&eur("0.2")).unwrap();
    let big = eur("123456789012345678.1234567890"); // 28 significant digits
    let tiny = eur("-0.0000000001");
    for money in [sum, big, tiny, eur("100.50")] {
        let id = CanonicalId::new();
        store
            .commit(&batch_of(vec![RecordWrite {
                entity: EntityKind::Invoice,
                id: id.clone(),
                expected_version: 0,
                content_hash: None,
                data_json: None,
                data: json!({ "number": "INV-X", "total": money.amount().to_string() }),
                amount: Some(money),
                provenance: Provenance::pull("erp"),
            }]))
            .await
            .unwrap();
        let stored = store
            .get_record(EntityKind::Invoice, &id)
            .await
            .unwrap()
            .unwrap();
        let amount = stored.amount.unwrap();
        assert_eq!(amount.amount(), money.amount(), "{money}");
        assert_eq!(amount.currency(), money.currency());
        // The document keeps the amount as the source wrote it, scale included.
        assert_eq!(stored.data["total"], money.amount().to_string());
    }
    assert_eq!(sum.amount(), Decimal::from_str("0.3").unwrap());

    let alert = NewAlert {
        rule: "duplicate_payment".into(),
        severity: Severity::Critical,
        entity: Some(EntityKind::Payment),
        record_ids: vec!["p1".into(), "p2".into()],
        reason: "same amount, payer and reference twice within 2 days".into(),
        amount: Some(big),
        cause: Some("p1+p2".into()),
    };
    assert!(store.raise_alert(&alert).await.unwrap().is_some());
    // Raised once per cause, however often the run that finds it repeats;
    // another cause, or none, is another alert.
    assert_eq!(store.raise_alert(&alert).await.unwrap(), None);
    let other = NewAlert {
        cause: Some("p3+p4".into()),
        ..alert.clone()
    };
    assert!(store.raise_alert(&other).await.unwrap().is_some());
    let uncaused = NewAlert {
        cause: None,
        ..alert.clone()
    };
    assert!(store.raise_alert(&uncaused).await.unwrap().is_some());
    assert!(store.raise_alert(&uncaused).await.unwrap().is_some());
    let alerts = store.open_alerts(10).await.unwrap();
    assert_eq!(alerts.len(), 4);
    assert_eq!(alerts[3].alert, alert);
}

async fn record_heads_skip_data(store: &TestStore) {
    let a = CanonicalId::new();
    let b = CanonicalId::new();
    store
        .commit(&batch_of(vec![
            customer(&a, 0, "A", "crm"),
            customer(&b, 0, "B", "crm"),
        ]))
        .await
        .unwrap();
    store
        .commit(&batch_of(vec![customer(&b, 1, "B2", "crm")]))
        .await
        .unwrap();
    let mut heads = store
        .record_heads(
            EntityKind::Customer,
            &[a.clone(), b.clone(), CanonicalId::new()],
        )
        .await
        .unwrap();
    heads.sort_by_key(|h| h.version);
    assert_eq!(heads.len(), 2);
    assert_eq!((heads[0].id.clone(), heads[0].version), (a, 1));
    assert_eq!((heads[1].id.clone(), heads[1].version), (b, 2));
    assert_eq!(
        heads[1].content_hash,
        concord::model::content_hash(&json!({ "name": "B2", "email": "ap@acme.example" }))
    );
}

async fn quarantine_conflicts_and_alerts_show_in_status(store: &TestStore) {
    let raw = json!({ "InvoiceNumber": "INV-9", "Total": "12,34.5" });
    let item = QuarantineItem {
        system: "xero".into(),
        entity: EntityKind::Invoice,
        external_id: Some("inv-9".into()),
        raw: raw.clone(),
        reason: "total: \"12,34.5\" is not an amount".into(),
        rule: Some("decimal".into()),
        field_path: Some("total".into()),
    };
    store.quarantine(&item).await.unwrap();
    store
        .commit(&Batch {
            quarantine: vec![item.clone()],
            ..Batch::default()
        })
        .await
        .unwrap();
    let listed = store.quarantined(10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].item, item);
    assert_eq!(listed[0].status, "open");

    let id = CanonicalId::new();
    store
        .open_conflict(&NewConflict {
            entity: EntityKind::Customer,
            canonical_id: id.clone(),
            field_path: "billing.city".into(),
            base: Some(json!("Berlin")),
            ours: Some(json!("Munich")),
            theirs: Some(json!("Hamburg")),
            source_system: "crm".into(),
        })
        .await
        .unwrap();
    store
        .raise_alert(&NewAlert {
            rule: "payer_account_changed".into(),
            severity: Severity::Warning,
            entity: Some(EntityKind::Customer),
            record_ids: vec![id.to_string()],
            reason: "payer paid from a new IBAN".into(),
            amount: None,
            cause: None,
        })
        .await
        .unwrap();
    store
        .commit(&Batch {
            records: vec![customer(&id, 0, "Acme", "crm")],
            links: vec![link(&id, "crm", "hs-1")],
            cursors: vec![CursorWrite {
                system: "crm".into(),
                entity: "customer".into(),
                cursor: "c1".into(),
            }],
            alerts: vec![NewAlert {
                rule: "duplicate_customer".into(),
                severity: Severity::Info,
                entity: Some(EntityKind::Customer),
                record_ids: vec![id.to_string()],
                reason: "same tax id as another customer".into(),
                amount: None,
                cause: None,
            }],
            ..Batch::default()
        })
        .await
        .unwrap();

    let status = store.status().await.unwrap();
    assert_eq!(status.open_quarantine, 2);
    assert_eq!(status.open_conflicts, 1);
    assert_eq!(status.open_alerts, 2);
    assert_eq!(status.records.len(), 1);
    assert_eq!(
        (status.records[0].entity.as_str(), status.records[0].count),
        ("customer", 1)
    );
    assert_eq!(
        (status.links[0].system.as_str(), status.links[0].count),
        ("crm", 1)
    );
    assert_eq!(status.cursors[0].cursor, "c1");
    assert_eq!(status.schema_applied, status.schema_known);
}

async fn migrate_twice_applies_nothing(store: &TestStore) {
    let (applied, known) = store.schema_state().await.unwrap();
    assert_eq!(applied, known);
    assert!(known >= 1);
    assert_eq!(store.migrate().await.unwrap(), 0);
    store.ping().await.unwrap();
}

async fn identity_keys_and_conflicts_commit_with_their_batch(store: &TestStore) {
    let a = CanonicalId::new();
    let b = CanonicalId::new();
    let key = |id: &CanonicalId, value: &str| IdentityKeyWrite {
        entity: EntityKind::Customer,
        key_name: "tax_id".into(),
        key_value: Some(value.into()),
        canonical_id: id.clone(),
    };
    let conflict = NewConflict {
        entity: EntityKind::Customer,
        canonical_id: a.clone(),
        field_path: "credit_limit".into(),
        base: Some(json!("1000")),
        ours: Some(json!("2000")),
        theirs: Some(json!("5000")),
        source_system: "crm".into(),
    };
    // A failing batch (stale version) leaves neither keys nor conflicts.
    let failing = Batch {
        records: vec![customer(&a, 3, "Acme", "crm")],
        identity_keys: vec![key(&a, "CHE-1")],
        conflicts: vec![conflict.clone()],
        ..Batch::default()
    };
    assert!(store.commit(&failing).await.is_err());
    assert!(
        store
            .find_identities(EntityKind::Customer, "tax_id", &["CHE-1".into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.status().await.unwrap().open_conflicts, 0);

    store
        .commit(&Batch {
            records: vec![
                customer(&a, 0, "Acme", "crm"),
                customer(&b, 0, "Acme Two", "erp"),
            ],
            identity_keys: vec![key(&a, "CHE-1"), key(&b, "CHE-2")],
            conflicts: vec![conflict],
            ..Batch::default()
        })
        .await
        .unwrap();
    let values: Vec<String> = vec!["CHE-1".into(), "CHE-2".into(), "CHE-3".into()];
    let lookup = || store.find_identities(EntityKind::Customer, "tax_id", &values);
    let mut found = lookup().await.unwrap();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("CHE-1".to_string(), a.clone()),
            ("CHE-2".to_string(), b.clone())
        ]
    );
    // A new value replaces the record's old one; two records may share a key.
    store
        .commit(&Batch {
            identity_keys: vec![key(&b, "CHE-1")],
            ..Batch::default()
        })
        .await
        .unwrap();
    let mut found = lookup().await.unwrap();
    found.sort();
    let mut want = vec![
        ("CHE-1".to_string(), a.clone()),
        ("CHE-1".to_string(), b.clone()),
    ];
    want.sort();
    assert_eq!(found, want);
    // No value removes the key.
    store
        .commit(&Batch {
            identity_keys: vec![IdentityKeyWrite {
                key_value: None,
                ..key(&a, "")
            }],
            ..Batch::default()
        })
        .await
        .unwrap();
    assert_eq!(
        lookup().await.unwrap(),
        vec![("CHE-1".to_string(), b.clone())]
    );
    assert_eq!(store.status().await.unwrap().open_conflicts, 1);
}

async fn outbox_delivery_settles_with_the_link(store: &TestStore) {
    let id = CanonicalId::new();
    let entry = |version| OutboxWrite {
        entity: EntityKind::Customer,
        canonical_id: id.clone(),
        version,
        target_system: "erp".into(),
    };
    store
        .commit(&Batch {
            records: vec![customer(&id, 0, "Acme", "crm")],
            outbox: vec![
                entry(1),
                OutboxWrite {
                    target_system: "books".into(),
                    ..entry(1)
                },
            ],
            ..Batch::default()
        })
        .await
        .unwrap();
    let due = store.outbox_due_for("erp", None, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].idempotency_key, format!("customer:{id}:1:erp"));

    // A retry later is not due now; dead letters are listed and requeued.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    store
        .outbox_settle(
            due[0].id,
            &Delivery::Retry {
                at: later,
                error: "HTTP 503".into(),
            },
        )
        .await
        .unwrap();
    assert!(
        store
            .outbox_due_for("erp", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .outbox_settle(
            due[0].id,
            &Delivery::Dead {
                error: "HTTP 422: name too long".into(),
            },
        )
        .await
        .unwrap();
    let dead = store.outbox_dead(Some("erp"), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("HTTP 422: name too long")
    );
    let entry = dead[0].id;
    assert_eq!(
        store.outbox_dead_among(&[entry, entry + 1]).await.unwrap(),
        [entry]
    );
    let later = chrono::Utc::now() + chrono::Duration::minutes(1);
    assert_eq!(
        store
            .outbox_requeue_since(Some("erp"), Some(later), &[])
            .await
            .unwrap(),
        0,
        "it died before that"
    );
    assert_eq!(store.outbox_requeue(Some("erp"), &[]).await.unwrap(), 1);
    assert!(store.outbox_dead_among(&[entry]).await.unwrap().is_empty());

    let due = store.outbox_due_for("erp", None, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let link = LinkWrite {
        entity: EntityKind::Customer,
        system: "erp".into(),
        external_id: "CUST-7".into(),
        canonical_id: id.clone(),
        synced_version: Some(1),
        synced_data: Some(json!({"name": "Acme"})),
        synced_hash: None,
        remote_updated_at: None,
        source_hash: None,
    };
    store
        .outbox_settle(due[0].id, &Delivery::Delivered { link })
        .await
        .unwrap();
    assert!(
        store
            .outbox_due_for("erp", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .outbox_due_for("books", Some(EntityKind::Customer), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let link = store
        .find_link(EntityKind::Customer, "erp", "CUST-7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link.canonical_id, id);
    assert_eq!(link.synced_version, Some(1));
    assert!(link.synced_hash.is_some());
}

async fn records_are_read_in_batches(store: &TestStore) {
    let ids: Vec<CanonicalId> = (0..250).map(|_| CanonicalId::new()).collect();
    let writes: Vec<RecordWrite> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| customer(id, 0, &format!("c{i}"), "crm"))
        .collect();
    store.commit(&batch_of(writes)).await.unwrap();
    store
        .commit(&batch_of(vec![customer(&ids[7], 1, "renamed", "crm")]))
        .await
        .unwrap();
    let mut wanted = ids.clone();
    wanted.push(CanonicalId::new()); // unknown: simply absent
    let got = store
        .get_records(EntityKind::Customer, &wanted)
        .await
        .unwrap();
    assert_eq!(got.len(), 250);
    let seven = &got[&ids[7]];
    assert_eq!(
        (seven.version, seven.data["name"].as_str()),
        (2, Some("renamed"))
    );
    assert_eq!(
        store
            .get_version(EntityKind::Customer, &ids[7], 1)
            .await
            .unwrap(),
        Some(json!({ "name": "c7", "email": "ap@acme.example" }))
    );
    assert_eq!(
        store
            .get_version(EntityKind::Customer, &ids[7], 3)
            .await
            .unwrap(),
        None
    );
}

async fn links_name_the_version_they_hold(store: &TestStore) {
    let id = CanonicalId::new();
    let v1 = customer(&id, 0, "Acme", "crm");
    let first = v1.data.clone();
    // The CRM sent exactly version 1; the ERP holds something else.
    let crm = LinkWrite {
        synced_data: Some(first.clone()),
        ..link(&id, "crm", "hs-101")
    };
    store
        .commit(&Batch {
            records: vec![v1],
            links: vec![crm, link(&id, "erp", "CUST-0042")],
            ..Batch::default()
        })
        .await
        .unwrap();
    assert_eq!(store.links_with_copies().await, 1, "only the ERP's differs");
    let read = |system: &'static str, external_id: &'static str| async move {
        store
            .find_link(EntityKind::Customer, system, external_id)
            .await
            .unwrap()
            .unwrap()
    };
    let crm = read("crm", "hs-101").await;
    assert_eq!(crm.synced_data.as_ref(), Some(&first));
    assert_eq!(
        crm.synced_hash.as_deref(),
        Some(concord::model::content_hash(&first).as_str())
    );
    // The hashes alone, by external id; an id without a link is absent.
    let hashes = store
        .synced_hashes(
            EntityKind::Customer,
            "crm",
            &["hs-101".to_string(), "hs-999".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(hashes.len(), 1);
    assert_eq!(hashes["hs-101"].synced, crm.synced_hash);
    assert_eq!(hashes["hs-101"].source, None);

    // A newer version: the CRM's link still reads the version it holds.
    let v2 = RecordWrite {
        data: json!({ "name": "Acme AG", "email": "ap@acme.example" }),
        ..customer(&id, 1, "Acme AG", "erp")
    };
    let second = v2.data.clone();
    store.commit(&batch_of(vec![v2])).await.unwrap();
    assert_eq!(read("crm", "hs-101").await.synced_data, Some(first.clone()));
    let by_canonical = store
        .external_links(EntityKind::Customer, "crm", std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(by_canonical[0].synced_data, Some(first));

    // A delivery of version 2 names it, by its hash.
    store
        .commit(&Batch {
            outbox: vec![OutboxWrite {
                entity: EntityKind::Customer,
                canonical_id: id.clone(),
                version: 2,
                target_system: "crm".into(),
            }],
            ..Batch::default()
        })
        .await
        .unwrap();
    let due = store.outbox_due_for("crm", None, 10).await.unwrap();
    let head = store
        .get_record(EntityKind::Customer, &id)
        .await
        .unwrap()
        .unwrap();
    let delivered = LinkWrite {
        synced_version: Some(2),
        synced_data: None,
        synced_hash: Some(head.content_hash.clone()),
        ..link(&id, "crm", "hs-101")
    };
    store
        .outbox_settle(due[0].id, &Delivery::Delivered { link: delivered })
        .await
        .unwrap();
    let crm = read("crm", "hs-101").await;
    assert_eq!(crm.synced_version, Some(2));
    assert_eq!(crm.synced_data, Some(second));
    assert_eq!(crm.synced_hash, Some(head.content_hash));
    assert_eq!(store.links_with_copies().await, 1);
    // Data quality reads links the same way.
    let views = store.all_link_views().await.unwrap();
    assert!(
        views.iter().all(|(_, _, _, data)| data.is_some()),
        "{views:?}"
    );
}

/// What a commit writes comes back exactly, also where reads take rows as
/// one JSON text (links): quotes, escapes, control characters, non-ASCII
/// text, big numbers and sub-second timestamps (PostgreSQL keeps
/// microseconds, cut, not rounded).
async fn awkward_documents_round_trip(store: &TestStore) {
    let id = CanonicalId::new();
    let data = json!({
        "name": "O'Brien \"Ltd\" \\ Zürich 東京 🚀",
        "notes": "line 1\nline 2\ttab \u{1} \u{7f}",
        "extra": { "n": 12345678901234567_i64, "f": 0.1, "empty": "", "nothing": null, "list": [1, "two", [3]] }
    });
    let at: chrono::DateTime<chrono::Utc> = "2026-11-27T10:00:00.123456789Z".parse().unwrap();
    let kept: chrono::DateTime<chrono::Utc> = match store.backend() {
        concord::store::Backend::Sqlite => at,
        concord::store::Backend::Postgres => "2026-11-27T10:00:00.123456Z".parse().unwrap(),
    };
    let mut their_copy = data.clone();
    their_copy["name"] = json!("Ö'Brien \u{2028}");
    let mut l = link(&id, "crm", "hs-\"1\"");
    l.synced_data = Some(their_copy.clone());
    l.remote_updated_at = Some(at);
    let batch = Batch {
        records: vec![RecordWrite {
            data: data.clone(),
            ..customer(&id, 0, "x", "crm")
        }],
        links: vec![l],
        ..Batch::default()
    };
    store.commit(&batch).await.unwrap();
    let stored = store
        .get_record(EntityKind::Customer, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.data, data);
    assert_eq!(stored.content_hash, concord::model::content_hash(&data));
    let found = store
        .find_link(EntityKind::Customer, "crm", "hs-\"1\"")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.synced_data, Some(their_copy));
    assert_eq!(found.remote_updated_at, Some(kept));
}

/// A link's source hash comes with the take-in that wrote it; a refresh
/// applies only while the link still holds the synced hash it names; any
/// other write of the link clears it.
async fn source_hashes_hold_only_for_the_take_in_that_wrote_them(store: &TestStore) {
    let id = CanonicalId::new();
    let hashes = || async {
        store
            .synced_hashes(EntityKind::Customer, "crm", &["hs-7".to_string()])
            .await
            .unwrap()
            .remove("hs-7")
            .unwrap()
    };
    let mut l = link(&id, "crm", "hs-7");
    l.synced_data = Some(json!({"name": "Acme"}));
    l.source_hash = Some("raw-1".into());
    store
        .commit(&Batch {
            records: vec![customer(&id, 0, "Acme", "crm")],
            links: vec![l],
            ..Batch::default()
        })
        .await
        .unwrap();
    let synced = concord::model::content_hash(&json!({"name": "Acme"}));
    assert_eq!(hashes().await.synced.as_deref(), Some(synced.as_str()));
    assert_eq!(hashes().await.source.as_deref(), Some("raw-1"));

    let refresh = |synced_hash: &str, source_hash: &str| Batch {
        source_hashes: vec![SourceHashWrite {
            entity: EntityKind::Customer,
            system: "crm".into(),
            external_id: "hs-7".into(),
            synced_hash: synced_hash.into(),
            source_hash: source_hash.into(),
        }],
        ..Batch::default()
    };
    // Naming another synced hash: the link moved on, nothing changes.
    store.commit(&refresh("other", "raw-2")).await.unwrap();
    assert_eq!(hashes().await.source.as_deref(), Some("raw-1"));
    store.commit(&refresh(&synced, "raw-2")).await.unwrap();
    assert_eq!(hashes().await.source.as_deref(), Some("raw-2"));

    // A write of the link by anything but that take-in (here a delivery
    // to the same system) clears it.
    let mut delivered = link(&id, "crm", "hs-7");
    delivered.synced_data = Some(json!({"name": "Acme AG"}));
    store
        .outbox_settle_many(&[(
            0,
            Delivery::Delivered {
                link: delivered.clone(),
            },
        )])
        .await
        .unwrap();
    assert_eq!(hashes().await.source, None);
    store
        .commit(&Batch {
            links: vec![delivered],
            ..Batch::default()
        })
        .await
        .unwrap();
    assert_eq!(hashes().await.source, None);
}

/// Of records arriving with their source hashes, the store names only
/// those that did not arrive so before: with their link's hashes when
/// linked, as unlinked otherwise, across look-up chunks and systems.
async fn changed_arrivals_leave_out_what_arrived_so_before(store: &TestStore) {
    let id = CanonicalId::new();
    let other = CanonicalId::new();
    let mut same = link(&id, "crm", "hs-\"1\"");
    same.synced_data = Some(json!({"name": "Acme"}));
    same.source_hash = Some("raw-1".into());
    // Last written by a delivery: no source hash.
    let mut delivered = link(&other, "crm", "hs-2");
    delivered.synced_data = Some(json!({"name": "Acme AG"}));
    // The same external id in another system, with the hash that hs-3
    // arrives with: it says nothing about crm's hs-3.
    let mut other_system = link(&id, "erp", "hs-3");
    other_system.source_hash = Some("raw-3".into());
    store
        .commit(&Batch {
            records: vec![
                customer(&id, 0, "Acme", "crm"),
                customer(&other, 0, "Acme AG", "crm"),
            ],
            links: vec![same, delivered, other_system],
            ..Batch::default()
        })
        .await
        .unwrap();

    let arrival = |id: &str, hash: &str| (id.to_string(), hash.to_string());
    let mut arrivals = vec![
        arrival("hs-\"1\"", "raw-1"),
        arrival("hs-2", "raw-2"),
        arrival("hs-3", "raw-3"),
    ];
    // More than one look-up chunk of new records.
    arrivals.extend((0..1_200).map(|n| arrival(&format!("new-{n}"), "raw")));
    let changed = store
        .changed_arrivals(EntityKind::Customer, "crm", &arrivals)
        .await
        .unwrap();
    assert_eq!(changed.len(), 1_202, "all but hs-\"1\"");
    assert!(!changed.contains_key("hs-\"1\""));
    let delivered = changed["hs-2"].as_ref().expect("hs-2 is linked");
    let synced = concord::model::content_hash(&json!({"name": "Acme AG"}));
    assert_eq!(delivered.synced.as_deref(), Some(synced.as_str()));
    assert_eq!(delivered.source, None);
    assert_eq!(changed["hs-3"], None, "not linked in crm");
    assert_eq!(changed["new-1199"], None);

    // The same record arriving otherwise than it did is named, with the
    // source hash its link holds.
    let changed = store
        .changed_arrivals(
            EntityKind::Customer,
            "crm",
            &[arrival("hs-\"1\"", "raw-1b")],
        )
        .await
        .unwrap();
    let hashes = changed["hs-\"1\""].as_ref().expect("linked");
    assert_eq!(hashes.source.as_deref(), Some("raw-1"));
    assert!(
        store
            .changed_arrivals(EntityKind::Customer, "crm", &[])
            .await
            .unwrap()
            .is_empty()
    );
}
