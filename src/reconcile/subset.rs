//! Bounded subset-sum: which of a customer's open items add up to a receipt.
//!
//! Depth-first over the items in descending order, pruned by the sum still
//! reachable, limited in the number of items per subset and in steps (each
//! step is one extension of a partial subset, a few nanoseconds, so the
//! default budget bounds one search to about a millisecond). The budget is a
//! step count rather than a clock so that results never depend on machine
//! load.

use rust_decimal::Decimal;

/// What a search found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Found {
    /// Subsets as indices into the input, each ascending; exact sums first.
    pub exact: Vec<Vec<usize>>,
    /// Subsets whose sum exceeds the target by at most the slack.
    pub near: Vec<Vec<usize>>,
    /// False when the step budget ran out before the search finished (and
    /// before it had proven ambiguity by finding two exact subsets).
    pub complete: bool,
    /// Search steps taken.
    pub steps: u64,
}

/// Limits of one search.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub min_parts: usize,
    pub max_parts: usize,
    pub max_steps: u64,
}

/// Subsets of `amounts` (all positive) of `min_parts..=max_parts` items whose
/// sum lies in `[target, target + slack]`. Stops early once two exact
/// subsets are known (the answer is then "ambiguous" whatever else exists).
/// Amounts that cannot share one integer scale make the search incomplete.
pub(crate) fn search(amounts: &[Decimal], target: Decimal, slack: Decimal, b: Bounds) -> Found {
    let Some((items, lo, hi)) = to_integers(amounts, target, slack) else {
        return Found::default();
    };
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&x, &y| items[y].cmp(&items[x]).then(x.cmp(&y)));
    let sorted: Vec<i128> = order.iter().map(|&i| items[i]).collect();
    // suffix[k] = sum of sorted[k..]
    let mut suffix = vec![0i128; sorted.len() + 1];
    for k in (0..sorted.len()).rev() {
        suffix[k] = suffix[k + 1].saturating_add(sorted[k]);
    }
    let mut s = Search {
        sorted: &sorted,
        suffix: &suffix,
        lo,
        hi,
        bounds: b,
        steps: 0,
        stack: Vec::with_capacity(b.max_parts),
        exact: Vec::new(),
        near: Vec::new(),
        out_of_steps: false,
    };
    s.dfs(0, 0);
    let map = |sets: Vec<Vec<usize>>| -> Vec<Vec<usize>> {
        sets.into_iter()
            .map(|set| {
                let mut v: Vec<usize> = set.into_iter().map(|k| order[k]).collect();
                v.sort_unstable();
                v
            })
            .collect()
    };
    let proven_ambiguous = s.exact.len() >= 2;
    Found {
        complete: !s.out_of_steps || proven_ambiguous,
        steps: s.steps,
        exact: map(s.exact),
        near: map(s.near),
    }
}

/// Most near subsets remembered (two are enough to call it ambiguous).
const MAX_NEAR: usize = 2;

struct Search<'a> {
    sorted: &'a [i128],
    suffix: &'a [i128],
    lo: i128,
    hi: i128,
    bounds: Bounds,
    steps: u64,
    stack: Vec<usize>,
    exact: Vec<Vec<usize>>,
    near: Vec<Vec<usize>>,
    out_of_steps: bool,
}

impl Search<'_> {
    fn done(&self) -> bool {
        self.out_of_steps || self.exact.len() >= 2
    }

    fn dfs(&mut self, start: usize, sum: i128) {
        // Items are in descending order: skip those that overshoot at once.
        let room = self.hi - sum;
        let first = start + self.sorted[start..].partition_point(|&v| v > room);
        for k in first..self.sorted.len() {
            if self.done() {
                return;
            }
            // Even all remaining items cannot reach the target.
            if sum + self.suffix[k] < self.lo {
                return;
            }
            self.steps += 1;
            if self.steps > self.bounds.max_steps {
                self.out_of_steps = true;
                return;
            }
            let s = sum + self.sorted[k];
            if s > self.hi {
                continue;
            }
            self.stack.push(k);
            let parts = self.stack.len();
            if s >= self.lo && parts >= self.bounds.min_parts {
                if s == self.lo {
                    self.exact.push(self.stack.clone());
                } else if self.near.len() < MAX_NEAR {
                    self.near.push(self.stack.clone());
                }
            }
            if parts < self.bounds.max_parts && s < self.hi {
                self.dfs(k + 1, s);
            }
            self.stack.pop();
        }
    }
}

/// The amounts, target and target + slack as integers of one scale.
fn to_integers(
    amounts: &[Decimal],
    target: Decimal,
    slack: Decimal,
) -> Option<(Vec<i128>, i128, i128)> {
    let scale = amounts
        .iter()
        .chain([&target, &slack])
        .map(|d| d.scale())
        .max()
        .unwrap_or(0);
    let at = |d: Decimal| -> Option<i128> {
        let factor = 10i128.checked_pow(scale - d.scale())?;
        d.mantissa().checked_mul(factor)
    };
    let items = amounts.iter().map(|&d| at(d)).collect::<Option<Vec<_>>>()?;
    if items.iter().any(|&v| v <= 0) {
        return None;
    }
    let lo = at(target)?;
    let hi = lo.checked_add(at(slack)?)?;
    // Sums of up to max_parts items must not overflow.
    items.iter().try_fold(0i128, |acc, &v| acc.checked_add(v))?;
    Some((items, lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn bounds() -> Bounds {
        Bounds {
            min_parts: 2,
            max_parts: 6,
            max_steps: 100_000,
        }
    }

    #[test]
    fn finds_the_unique_exact_subset() {
        let items = [d("100.00"), d("250.50"), d("75.25"), d("19.99")];
        let f = search(&items, d("325.75"), Decimal::ZERO, bounds());
        assert_eq!(f.exact, vec![vec![1, 2]]);
        assert!(f.complete);
    }

    #[test]
    fn two_exact_subsets_are_ambiguous() {
        let items = [d("50"), d("50"), d("30")];
        let f = search(&items, d("80"), Decimal::ZERO, bounds());
        assert_eq!(f.exact.len(), 2);
        assert!(f.complete);
    }

    #[test]
    fn a_shortfall_within_slack_is_near() {
        let items = [d("100.00"), d("200.00"), d("7.00")];
        let f = search(&items, d("290.00"), d("15.00"), bounds());
        assert!(f.exact.is_empty());
        assert_eq!(f.near, vec![vec![0, 1]]);
    }

    #[test]
    fn the_step_budget_makes_it_incomplete() {
        let items: Vec<Decimal> = (1..=40).map(|i| Decimal::from(i * 1000 + 7)).collect();
        let f = search(
            &items,
            Decimal::from(3),
            Decimal::ZERO,
            Bounds {
                min_parts: 2,
                max_parts: 6,
                max_steps: 10,
            },
        );
        assert!(f.exact.is_empty());
        // Pruning proves quickly that nothing reaches 3, so it completes.
        assert!(f.complete);
        let f = search(
            &items,
            Decimal::from(120_000 + 42),
            Decimal::ZERO,
            Bounds {
                min_parts: 2,
                max_parts: 6,
                max_steps: 10,
            },
        );
        assert!(!f.complete);
    }

    #[test]
    fn mixed_scales_and_part_limits() {
        let items = [d("0.1"), d("0.25"), d("1")];
        let f = search(&items, d("1.35"), Decimal::ZERO, bounds());
        assert_eq!(f.exact, vec![vec![0, 1, 2]]);
        let f = search(
            &items,
            d("1.35"),
            Decimal::ZERO,
            Bounds {
                max_parts: 2,
                ..bounds()
            },
        );
        assert!(f.exact.is_empty());
    }
}
