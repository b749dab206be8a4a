//! Node selection: the order in which a call tries the nodes of a service.
//!
//! A [`Selector`] turns the eligible nodes of a service (healthy, not ejected, matching the
//! call's filter) into [`Picks`]: an ordered sequence of distinct nodes. The first is tried
//! first; a retry always goes to the next one, so a retry never lands on a node the call
//! already tried.
//!
//! | selector | picks first |
//! |---|---|
//! | [`PeakEwma`] (the default) | the less loaded of two random nodes: peak-EWMA latency × (in-flight + 1) |
//! | [`RoundRobin`] | each node in turn |
//! | [`Random`] | a uniformly random node |
//! | [`ConsistentHash`] | the node owning the call's key on a hash ring, then its ring successors |
//!
//! [`NodeFilter`] narrows the candidates by version or metadata labels, per client or per call.

mod filter;
mod hash;
mod p2c;
mod picks;
mod random;
mod round_robin;

pub use filter::NodeFilter;
pub use hash::ConsistentHash;
pub use p2c::PeakEwma;
pub use picks::{MAX_EXPLICIT, Picks};
pub use random::Random;
pub use round_robin::RoundRobin;

use std::{fmt, sync::Arc};

use crate::node::NodeHandle;

/// Orders the nodes a call may go to.
pub trait Selector: fmt::Debug + Send + Sync + 'static {
    /// Returns the order in which this call tries `candidates` (never empty).
    fn select(&self, candidates: &Candidates<'_>, call: &CallInfo<'_>) -> Picks;
}

/// The nodes a call may go to, as handed to a [`Selector`].
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    nodes: &'a [Arc<NodeHandle>],
    generation: u64,
}

/// What a selector may know about the call it orders nodes for.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallInfo<'a> {
    /// The gRPC path, `/package.Service/Method`.
    pub path: &'a str,
    /// The call's affinity key, for [`ConsistentHash`]: from
    /// [`CallOptions::key`](crate::client::CallOptions::key) or the `x-micro-key` header.
    pub key: Option<&'a str>,
}

// === impl Candidates ===

impl<'a> Candidates<'a> {
    /// Wraps `nodes`; `generation` changes whenever the set of nodes does, so selectors
    /// can cache work per set (a hash ring, say).
    pub fn new(nodes: &'a [Arc<NodeHandle>], generation: u64) -> Self {
        Self { nodes, generation }
    }

    /// The candidate nodes.
    pub fn nodes(&self) -> &'a [Arc<NodeHandle>] {
        self.nodes
    }

    /// How many candidates there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// An id of this set of candidates: equal ids mean equal sets, in the same order.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl<S: Selector + ?Sized> Selector for Arc<S> {
    fn select(&self, candidates: &Candidates<'_>, call: &CallInfo<'_>) -> Picks {
        (**self).select(candidates, call)
    }
}

/// Node handles `node-<i>` at `127.0.0.1:<9000 + i>` for each `i` of `ids`, version
/// `1.0.0`: the selectors' unit tests' nodes.
#[cfg(test)]
fn test_nodes(ids: impl IntoIterator<Item = usize>) -> Vec<Arc<NodeHandle>> {
    ids.into_iter()
        .map(|i| {
            Arc::new(NodeHandle::new(
                crate::registry::Node {
                    id: format!("node-{i}"),
                    address: format!("127.0.0.1:{}", 9000 + i),
                    ..crate::registry::Node::default()
                },
                "1.0.0",
            ))
        })
        .collect()
}
