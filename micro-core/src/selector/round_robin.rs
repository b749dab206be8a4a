use std::sync::atomic::{AtomicUsize, Ordering};

use super::{CallInfo, Candidates, Picks, Selector};

/// Tries each node in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A round-robin selector starting at the first node.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Selector for RoundRobin {
    fn select(&self, candidates: &Candidates<'_>, _call: &CallInfo<'_>) -> Picks {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        Picks::rotation(start, candidates.len())
    }
}

impl Clone for RoundRobin {
    /// A selector with its own position, starting where this one is.
    fn clone(&self) -> Self {
        Self {
            next: AtomicUsize::new(self.next.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;
    use crate::selector::test_nodes;

    fn order(selector: &RoundRobin, candidates: &Candidates<'_>) -> Vec<usize> {
        selector.select(candidates, &CallInfo::default()).collect()
    }

    #[test]
    fn each_node_in_turn_then_the_rest_in_rotation() {
        let nodes = test_nodes(0..3);
        let candidates = Candidates::new(&nodes, 1);
        let selector = RoundRobin::new();
        for call in 0..9 {
            let start = call % 3;
            assert_eq!(
                order(&selector, &candidates),
                [start, (start + 1) % 3, (start + 2) % 3],
                "call {call}"
            );
        }
    }

    #[test]
    fn concurrent_callers_share_exactly_evenly() {
        // Each call takes its own position, so 4 threads × 3,000 calls over 3 nodes give
        // exactly 4,000 first picks each, however the threads interleave.
        let nodes = test_nodes(0..3);
        let selector = RoundRobin::new();
        let counts = thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let candidates = Candidates::new(&nodes, 1);
                        let mut counts = [0_usize; 3];
                        for _ in 0..3_000 {
                            counts[order(&selector, &candidates)[0]] += 1;
                        }
                        counts
                    })
                })
                .collect();
            workers.into_iter().fold([0_usize; 3], |mut total, worker| {
                let counts = worker.join().expect("a worker thread");
                for (total, count) in total.iter_mut().zip(counts) {
                    *total += count;
                }
                total
            })
        });
        assert_eq!(counts, [4_000; 3]);
    }

    #[test]
    fn a_changed_node_set_keeps_the_spread_even() {
        let selector = RoundRobin::new();
        let three = test_nodes(0..3);
        let five = test_nodes(0..5);
        // One call on three nodes, then 500 on five: each of the five is first 100 times.
        let _ = order(&selector, &Candidates::new(&three, 1));
        let candidates = Candidates::new(&five, 2);
        let mut counts = [0_usize; 5];
        for _ in 0..500 {
            counts[order(&selector, &candidates)[0]] += 1;
        }
        assert_eq!(counts, [100; 5]);
        assert!(order(&selector, &Candidates::new(&[], 3)).is_empty());
    }

    #[test]
    fn a_clone_goes_on_from_the_same_position_independently() {
        let nodes = test_nodes(0..4);
        let candidates = Candidates::new(&nodes, 1);
        let selector = RoundRobin::new();
        let _ = order(&selector, &candidates);
        let clone = selector.clone();
        assert_eq!(order(&clone, &candidates)[0], 1);
        assert_eq!(order(&clone, &candidates)[0], 2);
        assert_eq!(
            order(&selector, &candidates)[0],
            1,
            "the original did not move"
        );
    }
}
