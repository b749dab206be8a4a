//! Node selection: which node of a service a call goes to.
//!
//! A [`Selector`] picks the first node to try; when that node cannot be reached the
//! channel walks on to the next nodes in list order, so one call never tries a node twice.
//!
//! | selector | picks |
//! |---|---|
//! | [`RoundRobin`] (the default) | each node in turn |
//! | [`Random`] | a uniformly random node |

use std::{
    fmt,
    sync::atomic::{AtomicUsize, Ordering},
};

use crate::registry::Node;

/// Chooses the node a call goes to first.
pub trait Selector: fmt::Debug + Send + Sync + 'static {
    /// Returns the index in `nodes` (never empty) of the node to try first.
    fn select(&self, nodes: &[Node]) -> usize;
}

/// Picks each node in turn.
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
    fn select(&self, nodes: &[Node]) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % nodes.len().max(1)
    }
}

/// Picks a uniformly random node.
#[derive(Debug, Default, Clone, Copy)]
pub struct Random;

impl Selector for Random {
    fn select(&self, nodes: &[Node]) -> usize {
        rand::random_range(0..nodes.len().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<Node> {
        (0..n)
            .map(|i| Node {
                id: format!("n{i}"),
                address: format!("127.0.0.1:{}", 1000 + i),
                ..Node::default()
            })
            .collect()
    }

    #[test]
    fn round_robin_visits_every_node_in_turn() {
        let rr = RoundRobin::new();
        let nodes = nodes(3);
        let picks: Vec<_> = (0..6).map(|_| rr.select(&nodes)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn random_covers_all_nodes_and_stays_in_range() {
        let nodes = nodes(4);
        let mut seen = [0usize; 4];
        for _ in 0..4000 {
            seen[Random.select(&nodes)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 700), "{seen:?}");
    }
}
