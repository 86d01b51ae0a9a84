//! Reconciliation on generated, labelled scenarios: accuracy per kind of
//! receipt, and the invariants every result keeps.

// `*rng.pick(..)` stays explicit: without it the generic pick infers `str`.
#![allow(clippy::explicit_auto_deref)]

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

// ---------------------------------------------------------------------------
// Invariants

use std::collections::BTreeMap;

use chrono::NaiveDate;
use concord::model::Currency;
use concord::reconcile::scenario::Rng;
use concord::reconcile::{Receipt, Receivable, Reconciliation, Status};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Small data built to collide: few customers sharing accounts and names,
/// amounts from a short list, references to existing, mistyped or duplicate
/// invoice numbers, zero and negative amounts, three currencies.
fn adversarial(seed: u64, n_receipts: usize, n_invoices: usize) -> (Vec<Receipt>, Vec<Receivable>) {
    let mut rng = Rng::new(seed);
    let amounts = [
        "10.00", "20.00", "30.00", "15.50", "45.50", "100", "99.99", "0.01", "7", "50",
    ];
    let ccys = ["EUR", "EUR", "USD", "JPY"];
    let names = [
        "Müller GmbH",
        "MUELLER AG",
        "Acme Ltd",
        "上海华信贸易有限公司",
        "Rossi S.p.A.",
    ];
    let accounts = [
        "DE89370400440532013000",
        "GB82WEST12345698765432",
        "FR1420041010050500013M02606",
    ];
    let date = |k: usize| NaiveDate::from_ymd_opt(2026, 3, 1 + (k % 28) as u32).unwrap();
    let mut invoices = Vec::new();
    for k in 0..n_invoices {
        let c = rng.below(4);
        let open = d(*rng.pick(&amounts));
        let open = match rng.below(12) {
            0 => Decimal::ZERO,
            1 => -open,
            _ => open,
        };
        // Occasional duplicate numbers.
        let number = format!("INV-{:03}", if rng.chance(0.1) { k / 2 } else { k });
        invoices.push(Receivable {
            invoice_number: number,
            customer_id: format!("C{c}"),
            customer_name: names[c].to_owned(),
            payer_accounts: if rng.chance(0.6) {
                vec![accounts[c % 3].to_owned()]
            } else {
                vec![]
            },
            payer_names: vec![],
            currency: Currency::parse(ccys[c]).unwrap(),
            total: open.abs() + Decimal::from(rng.below(3) as u32),
            open_amount: open,
            issue_date: Some(date(rng.below(28))),
            due_date: Some(date(rng.below(28))),
            reference: rng.chance(0.3).then(|| format!("RF-{k}")),
        });
    }
    let mut receipts = Vec::new();
    for k in 0..n_receipts {
        let c = rng.below(5);
        let amount = match rng.below(10) {
            0 => Decimal::ZERO,
            1 => -d(*rng.pick(&amounts)),
            2 if !invoices.is_empty() => {
                // A sum of two open amounts.
                let a = invoices[rng.below(invoices.len())].open_amount.abs();
                let b = invoices[rng.below(invoices.len())].open_amount.abs();
                a + b
            }
            _ => d(*rng.pick(&amounts)),
        };
        let reference = match rng.below(4) {
            0 if !invoices.is_empty() => {
                Some(invoices[rng.below(invoices.len())].invoice_number.clone())
            }
            1 => Some(format!(
                "inv {:03} and inv {:03}",
                rng.below(n_invoices + 1),
                rng.below(n_invoices + 1)
            )),
            _ => None,
        };
        receipts.push(Receipt {
            id: format!("R{k:03}"),
            booking_date: date(rng.below(28)),
            amount,
            currency: Currency::parse(ccys[rng.below(4)]).unwrap(),
            counterparty_name: rng
                .chance(0.8)
                .then(|| names[c % names.len()].to_uppercase()),
            counterparty_account: rng.chance(0.5).then(|| accounts[rng.below(3)].to_owned()),
            remittance: reference,
            end_to_end_id: None,
            creditor_reference: rng
                .chance(0.1)
                .then(|| format!("RF-{}", rng.below(n_invoices + 1))),
        });
    }
    (receipts, invoices)
}

/// Every invariant of a result: allocations positive, in the receipt's
/// currency, never more than the receipt nor (over all receipts) the
/// invoice's open amount; open amounts after the run add up; statuses
/// agree with confidences; ambiguity is never automatic.
fn check_invariants(
    receipts: &[Receipt],
    invoices: &[Receivable],
    res: &Reconciliation,
    cfg: &Config,
) {
    assert_eq!(res.decisions.len(), receipts.len());
    let mut taken_all = vec![Decimal::ZERO; invoices.len()];
    let mut taken_auto = vec![Decimal::ZERO; invoices.len()];
    for (k, dec) in res.decisions.iter().enumerate() {
        assert_eq!(dec.receipt, k);
        let r = &receipts[k];
        assert!((0.0..=1.0).contains(&dec.confidence));
        let sum: Decimal = dec.allocations.iter().map(|a| a.amount).sum();
        match dec.status {
            Status::Open => {
                assert!(dec.allocations.is_empty() && dec.write_off.is_none());
                assert!(
                    dec.confidence < cfg.suggest_threshold + 1e-9 || dec.allocations.is_empty()
                );
            }
            s => {
                assert!(r.amount > Decimal::ZERO, "only credits are matched");
                assert!(!dec.allocations.is_empty());
                assert!(sum <= r.amount, "{}: allocated {sum} of {}", r.id, r.amount);
                assert_eq!(sum + dec.unallocated, r.amount, "{}", r.id);
                if s == Status::Auto {
                    assert!(dec.confidence >= cfg.auto_threshold - 1e-9);
                    assert!(
                        !dec.reasons.iter().any(|x| matches!(
                            x,
                            concord::reconcile::Reason::Ambiguous { .. }
                                | concord::reconcile::Reason::Contested { .. }
                        )),
                        "{}: ambiguous yet automatic",
                        r.id
                    );
                } else {
                    assert!(dec.confidence < cfg.auto_threshold);
                }
                for a in &dec.allocations {
                    assert!(a.amount > Decimal::ZERO);
                    assert_eq!(
                        invoices[a.invoice].currency, r.currency,
                        "currencies never mix"
                    );
                    taken_all[a.invoice] += a.amount;
                    if s == Status::Auto {
                        taken_auto[a.invoice] += a.amount;
                    }
                }
                if let Some(w) = &dec.write_off {
                    assert!(w.amount > Decimal::ZERO);
                    // The tolerance applies to what the receipt pays: one
                    // invoice, or several together.
                    let paid: Decimal = dec
                        .allocations
                        .iter()
                        .map(|a| invoices[a.invoice].open_amount)
                        .sum();
                    assert!(
                        w.amount <= cfg.tolerance.allowance(r.currency, paid),
                        "{}: write-off {}",
                        r.id,
                        w.amount
                    );
                    taken_all[w.invoice] += w.amount;
                    if s == Status::Auto {
                        taken_auto[w.invoice] += w.amount;
                    }
                }
            }
        }
    }
    for (i, inv) in invoices.iter().enumerate() {
        let open = inv.open_amount.max(Decimal::ZERO);
        assert!(
            taken_all[i] <= open,
            "{} over-allocated: {} of {}",
            inv.invoice_number,
            taken_all[i],
            open
        );
        let usable =
            !res.excluded.iter().any(|e| e.invoice == i) && inv.open_amount > Decimal::ZERO;
        if usable {
            assert_eq!(res.open_after_all[i], open - taken_all[i]);
            assert_eq!(res.open_after_auto[i], open - taken_auto[i]);
        } else {
            assert_eq!(
                taken_all[i],
                Decimal::ZERO,
                "{} is excluded",
                inv.invoice_number
            );
        }
    }
}

/// The result keyed by receipt id and invoice number, so that two runs
/// over differently ordered input can be compared. Reasons are left out:
/// when two pieces of evidence tie, which one is quoted may differ.
type Summary = BTreeMap<
    String,
    (
        Status,
        i64,
        Option<&'static str>,
        Vec<(String, Decimal)>,
        Option<(String, Decimal)>,
        Decimal,
        Vec<Vec<String>>,
    ),
>;

fn summary(receipts: &[Receipt], invoices: &[Receivable], res: &Reconciliation) -> Summary {
    res.decisions
        .iter()
        .map(|dec| {
            let mut allocs: Vec<(String, Decimal)> = dec
                .allocations
                .iter()
                .map(|a| (invoices[a.invoice].invoice_number.clone(), a.amount))
                .collect();
            allocs.sort();
            let alternatives = dec
                .alternatives
                .iter()
                .map(|a| {
                    let mut v: Vec<String> = a
                        .allocations
                        .iter()
                        .map(|x| invoices[x.invoice].invoice_number.clone())
                        .collect();
                    v.sort();
                    v
                })
                .collect();
            (
                receipts[dec.receipt].id.clone(),
                (
                    dec.status,
                    (dec.confidence * 1e9).round() as i64,
                    dec.stage.map(|s| s.as_str()),
                    allocs,
                    dec.write_off
                        .as_ref()
                        .map(|w| (invoices[w.invoice].invoice_number.clone(), w.amount)),
                    dec.unallocated,
                    alternatives,
                ),
            )
        })
        .collect()
}

fn cases(
    seed: u64,
    n_receipts: usize,
    n_invoices: usize,
    realistic: bool,
) -> (Vec<Receipt>, Vec<Receivable>) {
    if realistic {
        let s = scenario::generate(Params {
            seed,
            receipts: n_receipts,
            receivables: n_invoices,
        });
        (s.receipts, s.receivables)
    } else {
        adversarial(seed, n_receipts, n_invoices)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn no_over_allocation(seed in any::<u64>(), nr in 0usize..60, ni in 0usize..60, realistic in any::<bool>()) {
        let (receipts, invoices) = cases(seed, nr, ni, realistic);
        let cfg = Config::default();
        let res = reconcile(&receipts, &invoices, &cfg);
        check_invariants(&receipts, &invoices, &res, &cfg);
    }

    #[test]
    fn result_independent_of_input_order(seed in any::<u64>(), nr in 0usize..60, ni in 0usize..60, realistic in any::<bool>(), shuffle in any::<u64>()) {
        let (receipts, invoices) = cases(seed, nr, ni, realistic);
        let cfg = Config::default();
        let a = reconcile(&receipts, &invoices, &cfg);
        let mut rng = Rng::new(shuffle);
        let mut r2 = receipts.clone();
        let mut i2 = invoices.clone();
        rng.shuffle(&mut r2);
        rng.shuffle(&mut i2);
        let b = reconcile(&r2, &i2, &cfg);
        prop_assert_eq!(summary(&receipts, &invoices, &a), summary(&r2, &i2, &b));
    }

    /// Running again changes nothing, and running again over what is left
    /// after applying the automatic matches (matched receipts gone, open
    /// amounts reduced, as store mode will do) keeps every invariant
    /// against the original open amounts and re-matches nothing twice.
    #[test]
    fn idempotent_re_run(seed in any::<u64>(), nr in 0usize..60, ni in 0usize..60, realistic in any::<bool>()) {
        let (receipts, invoices) = cases(seed, nr, ni, realistic);
        let cfg = Config::default();
        let first = reconcile(&receipts, &invoices, &cfg);
        let again = reconcile(&receipts, &invoices, &cfg);
        prop_assert_eq!(&first, &again);

        let rest: Vec<Receipt> = first
            .decisions
            .iter()
            .filter(|d| d.status != Status::Auto)
            .map(|d| receipts[d.receipt].clone())
            .collect();
        let mut left = invoices.clone();
        for (i, inv) in left.iter_mut().enumerate() {
            if inv.open_amount > Decimal::ZERO && !first.excluded.iter().any(|e| e.invoice == i) {
                inv.open_amount = first.open_after_auto[i];
            }
        }
        let second = reconcile(&rest, &left, &cfg);
        check_invariants(&rest, &left, &second, &cfg);
        for (i, inv) in invoices.iter().enumerate() {
            let open = inv.open_amount.max(Decimal::ZERO);
            let second_taken = left[i].open_amount.max(Decimal::ZERO) - second.open_after_all[i].max(Decimal::ZERO);
            let first_taken = open - first.open_after_auto[i].max(Decimal::ZERO);
            if open > Decimal::ZERO && !first.excluded.iter().any(|e| e.invoice == i) {
                prop_assert!(first_taken + second_taken <= open, "{} over-allocated across runs", inv.invoice_number);
            }
        }
        // A second run over its own residual is as stable as the first.
        let second_again = reconcile(&rest, &left, &cfg);
        prop_assert_eq!(&second, &second_again);
    }
}
