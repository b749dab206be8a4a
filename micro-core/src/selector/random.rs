use rand::Rng;

use super::{CallInfo, Candidates, Picks, Selector};

/// Tries a uniformly random node first, then the others in rotation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Random;

impl Selector for Random {
    fn select(&self, candidates: &Candidates<'_>, _call: &CallInfo<'_>) -> Picks {
        picks(&mut rand::rng(), candidates.len())
    }
}

/// The order of one call over `len` candidates: a start drawn uniformly from `rng`, then
/// the rotation from there. Apart from [`Random::select`] so that tests can seed `rng`.
fn picks<R: Rng + ?Sized>(rng: &mut R, len: usize) -> Picks {
    Picks::rotation(rng.random_range(0..len.max(1)), len)
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;
    use crate::selector::test_nodes;

    /// How often each candidate is tried first, and second, over `calls` seeded calls.
    fn spread(seed: u64, len: usize, calls: usize) -> (Vec<usize>, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut first, mut second) = (vec![0; len], vec![0; len]);
        for _ in 0..calls {
            let mut order = picks(&mut rng, len);
            first[order.next().expect("a first pick")] += 1;
            second[order.next().expect("a second pick")] += 1;
        }
        (first, second)
    }

    /// Pearson's chi-square statistic of `counts` against a uniform spread.
    fn chi_square(counts: &[usize]) -> f64 {
        let total: usize = counts.iter().sum();
        let expected = total as f64 / counts.len() as f64;
        counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum()
    }

    #[test]
    fn first_picks_spread_uniformly() {
        // Seeded, so the counts are the same on every run: the bounds state what uniform
        // means, they cannot flake. 18.47 is the 99.9 % quantile of chi-square with 4
        // degrees of freedom; each count is within 3 % of its share.
        for seed in [1, 2, 3] {
            let (first, second) = spread(seed, 5, 50_000);
            for count in &first {
                assert!((9_700..=10_300).contains(count), "seed {seed}: {first:?}");
            }
            assert!(chi_square(&first) < 18.47, "seed {seed}: {first:?}");
            // The second pick is the first's successor in rotation: as uniform as the first.
            let rotated: Vec<usize> = (0..5).map(|i| first[(i + 4) % 5]).collect();
            assert_eq!(second, rotated, "seed {seed}");
        }
    }

    #[test]
    fn spread_is_uniform_over_two_and_seven_nodes() {
        // An even and an odd count: no bias from reducing the random number to the range.
        for len in [2, 7] {
            let (first, _) = spread(11, len, 70_000);
            let expected = 70_000 / len;
            for count in &first {
                assert!(
                    count.abs_diff(expected) * 100 < expected * 3,
                    "{len}: {first:?}"
                );
            }
        }
    }

    #[test]
    fn every_call_tries_each_node_once_in_rotation() {
        let mut rng = StdRng::seed_from_u64(5);
        for len in 0..9 {
            for _ in 0..20 {
                let order: Vec<usize> = picks(&mut rng, len).collect();
                assert_eq!(order.len(), len);
                for (i, pair) in order.windows(2).enumerate() {
                    assert_eq!(pair[1], (pair[0] + 1) % len, "len {len}: {order:?} at {i}");
                }
            }
        }
    }

    #[test]
    fn the_selector_reaches_every_node() {
        // The thread RNG, as calls use it. Not statistical in practice: a node missing
        // from 3,000 uniform draws over 3 has probability 3 × (2/3)^3000 ≈ 10^-528.
        let nodes = test_nodes(0..3);
        let candidates = Candidates::new(&nodes, 1);
        let mut first = [0_usize; 3];
        for _ in 0..3_000 {
            let order: Vec<usize> = Random.select(&candidates, &CallInfo::default()).collect();
            assert_eq!(order.len(), 3, "{order:?}");
            first[order[0]] += 1;
        }
        assert!(first.iter().all(|&c| c > 0), "{first:?}");
        assert_eq!(
            Random
                .select(&Candidates::new(&[], 1), &CallInfo::default())
                .next(),
            None
        );
    }
}
