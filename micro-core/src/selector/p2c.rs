use rand::Rng;
use tokio::time::Instant;

use super::{CallInfo, Candidates, Picks, Selector};

/// Power of two choices over peak-EWMA load: the default selector.
///
/// Picks two distinct random nodes and tries the cheaper first, the other second, then the
/// rest in rotation from a random start. A node's cost is its peak-EWMA latency times its
/// calls in flight plus one (see [`Load::cost`](crate::node::Load::cost)), so slow or busy
/// nodes get less traffic without any node starving, and no global ordering is needed.
/// Costs a few random numbers and one clock read per call; never allocates.
#[derive(Debug, Default, Clone, Copy)]
pub struct PeakEwma;

impl PeakEwma {
    /// The power-of-two-choices selector.
    pub fn new() -> Self {
        Self
    }
}

impl Selector for PeakEwma {
    fn select(&self, candidates: &Candidates<'_>, _call: &CallInfo<'_>) -> Picks {
        let nodes = candidates.nodes();
        let len = nodes.len();
        if len < 2 {
            return Picks::rotation(0, len);
        }
        let mut rng = rand::rng();
        let a = rng.random_range(0..len);
        let mut b = rng.random_range(0..len - 1);
        if b >= a {
            b += 1;
        }
        let now = Instant::now();
        let first = if nodes[b].load().cost_at(now) < nodes[a].load().cost_at(now) {
            [b, a]
        } else {
            [a, b]
        };
        // `a` is uniform: a fine start for the rotation of the rest.
        Picks::first_then_rotation(&first, a, len)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::node::NodeHandle;
    use crate::selector::test_nodes;

    fn first_counts(nodes: &[Arc<NodeHandle>], calls: usize) -> Vec<usize> {
        let candidates = Candidates::new(nodes, 1);
        let mut counts = vec![0; nodes.len()];
        for _ in 0..calls {
            let mut picks = PeakEwma.select(&candidates, &CallInfo::default());
            counts[picks.next().expect("a pick")] += 1;
        }
        counts
    }

    #[test]
    fn every_node_once() {
        for n in 0..6 {
            let nodes = test_nodes(0..n);
            let candidates = Candidates::new(&nodes, 1);
            let mut order: Vec<_> = PeakEwma.select(&candidates, &CallInfo::default()).collect();
            order.sort_unstable();
            assert_eq!(order, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn cheaper_of_two_goes_first() {
        let nodes = test_nodes(0..2);
        nodes[0].load().end(Some(Duration::from_millis(50)));
        nodes[1].load().end(Some(Duration::from_millis(5)));
        let candidates = Candidates::new(&nodes, 1);
        for _ in 0..100 {
            let order: Vec<_> = PeakEwma.select(&candidates, &CallInfo::default()).collect();
            assert_eq!(order, [1, 0]);
        }
        // In-flight calls count: 5 ms × 11 is worse than 50 ms × 1.
        for _ in 0..10 {
            nodes[1].load().begin();
        }
        let order: Vec<_> = PeakEwma.select(&candidates, &CallInfo::default()).collect();
        assert_eq!(order, [0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn equal_nodes_share_evenly() {
        let nodes = test_nodes(0..4);
        let counts = first_counts(&nodes, 40_000);
        for count in counts {
            assert!((8_000..12_000).contains(&count), "{count}");
        }
    }

    // Paused, so equal latencies decay alike and tie exactly.
    #[tokio::test(start_paused = true)]
    async fn slow_node_gets_least() {
        let nodes = test_nodes(0..4);
        for (i, node) in nodes.iter().enumerate() {
            let rtt = if i == 3 { 100 } else { 10 };
            node.load().end(Some(Duration::from_millis(rtt)));
        }
        let counts = first_counts(&nodes, 40_000);
        // Picked first only when paired with itself, which never happens.
        assert_eq!(counts[3], 0, "{counts:?}");
        for count in &counts[..3] {
            assert!((11_000..15_700).contains(count), "{counts:?}");
        }
    }
}
