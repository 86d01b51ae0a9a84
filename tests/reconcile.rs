//! Reconciliation on generated, labelled scenarios: accuracy per kind of
//! receipt, and the invariants every result keeps.

use concord::reconcile::scenario::{self, Kind, Params};
use concord::reconcile::{Config, reconcile};

#[test]
fn accuracy_per_scenario_kind() {
    let s = scenario::generate(Params {
        seed: 2026,
        receipts: 6000,
        receivables: 9000,
    });
    let result = reconcile(&s.receipts, &s.receivables, &Config::default());
    let acc = scenario::accuracy(&s, &result);
    println!("{}", acc.table());
    let total = acc.total();
    assert!(
        total.precision() >= 0.995,
        "precision {}",
        total.precision()
    );
    for (kind, row) in &acc.rows {
        assert!(
            row.precision() >= 0.995,
            "{kind:?}: precision {}",
            row.precision()
        );
        if matches!(kind, Kind::Unrelated | Kind::LookAlike) {
            assert_eq!(row.auto, 0, "{kind:?} must never be matched automatically");
        } else {
            assert!(
                row.auto_rate() >= 0.90,
                "{kind:?}: auto rate {}",
                row.auto_rate()
            );
        }
    }
}
