use std::collections::HashMap;

use super::*;
use crate::{node::NodeHandle, selector::test_nodes};

fn keyed(key: &str) -> CallInfo<'_> {
    CallInfo {
        path: "/greeter.Greeter/SayHello",
        key: Some(key),
    }
}

/// The id of the node each key goes to first.
fn owners<'a>(
    selector: &ConsistentHash,
    nodes: &'a [Arc<NodeHandle>],
    generation: u64,
    keys: &[String],
) -> Vec<&'a str> {
    let candidates = Candidates::new(nodes, generation);
    keys.iter()
        .map(|key| {
            let first = selector.select(&candidates, &keyed(key)).next();
            nodes[first.expect("a pick")].id()
        })
        .collect()
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

#[test]
fn hash_is_pinned() {
    // Changing these changes where every key of every deployment goes.
    assert_eq!(Fnv::new().finish(), 0xefd0_1f60_ba99_2926);
    assert_eq!(Fnv::new().write(b"user-42").finish(), 0xa395_32c7_ab05_1e8d);
}

#[test]
fn same_key_same_node() {
    let nodes = test_nodes(0..10);
    let keys = keys(1000);
    let a = ConsistentHash::new();
    let first = owners(&a, &nodes, 1, &keys);
    assert_eq!(owners(&a, &nodes, 1, &keys), first);
    // Another selector, another order, another generation: same owners.
    let mut shuffled = test_nodes(0..10);
    shuffled.reverse();
    shuffled.swap(2, 7);
    assert_eq!(owners(&ConsistentHash::new(), &shuffled, 9, &keys), first);
    // Keys spread over all nodes.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for owner in &first {
        *counts.entry(owner).or_default() += 1;
    }
    assert_eq!(counts.len(), 10);
    assert!(
        counts.values().all(|&n| (50..=170).contains(&n)),
        "{counts:?}"
    );
}

#[test]
fn removing_a_node_moves_only_its_keys() {
    let keys = keys(10_000);
    let selector = ConsistentHash::new();
    let all = test_nodes(0..10);
    let before = owners(&selector, &all, 1, &keys);
    let without: Vec<_> = all.iter().filter(|n| n.id() != "node-3").cloned().collect();
    let after = owners(&selector, &without, 2, &keys);
    let moved: Vec<_> = (0..keys.len()).filter(|&i| before[i] != after[i]).collect();
    assert!(
        (500..=1600).contains(&moved.len()),
        "{} keys moved",
        moved.len()
    );
    assert!(moved.iter().all(|&i| before[i] == "node-3"));
    assert!(after.iter().all(|&owner| owner != "node-3"));
}

#[test]
fn fallbacks_are_distinct_ring_successors() {
    for n in [2, 3, 8, 20] {
        let nodes = test_nodes(0..n);
        let candidates = Candidates::new(&nodes, 1);
        let selector = ConsistentHash::new();
        for key in keys(200) {
            let order: Vec<_> = selector.select(&candidates, &keyed(&key)).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "every node once");
            // The same fallbacks on every call.
            let again: Vec<_> = selector.select(&candidates, &keyed(&key)).collect();
            assert_eq!(order, again);
        }
    }
}

#[test]
fn ring_is_cached_per_set() {
    let selector = ConsistentHash::new();
    let a = test_nodes(0..5);
    let b = test_nodes(0..5);
    let keys = keys(100);
    // Two channels with equal generations: told apart by node identity.
    let owners_a = owners(&selector, &a, 1, &keys);
    let owners_b = owners(&selector, &b, 1, &keys);
    assert_eq!(owners_a, owners_b);
    assert_eq!(selector.rings.load().len(), 2);
    owners(&selector, &a, 1, &keys);
    assert_eq!(selector.rings.load().len(), 2);
    for generation in 2..20 {
        owners(&selector, &a, generation, &keys[..1]);
    }
    assert_eq!(selector.rings.load().len(), ConsistentHash::CACHED_RINGS);
}

#[test]
fn stale_ring_is_rebuilt() {
    // Same generation, length, first and last node, but a different node in the middle:
    // a caller breaking the generation contract still gets a consistent answer.
    let selector = ConsistentHash::new();
    let nodes = test_nodes(0..3);
    let keys = keys(300);
    owners(&selector, &nodes, 1, &keys);
    let mut changed = nodes.clone();
    changed[1] = test_nodes([7]).remove(0);
    let got = owners(&selector, &changed, 1, &keys);
    let fresh = owners(&ConsistentHash::new(), &changed, 1, &keys);
    assert_eq!(got, fresh);
}

#[test]
fn no_key_uses_fallback() {
    let nodes = test_nodes(0..4);
    let candidates = Candidates::new(&nodes, 1);
    let selector = ConsistentHash::new().fallback(super::super::RoundRobin::new());
    let firsts: Vec<_> = (0..4)
        .filter_map(|_| selector.select(&candidates, &CallInfo::default()).next())
        .collect();
    assert_eq!(firsts, [0, 1, 2, 3]);
    assert!(selector.rings.load().is_empty());
}

#[test]
fn tiny_sets() {
    let selector = ConsistentHash::new().virtual_nodes(0);
    for n in 0..2 {
        let nodes = test_nodes(0..n);
        let order: Vec<_> = selector
            .select(&Candidates::new(&nodes, 1), &keyed("k"))
            .collect();
        assert_eq!(order, (0..n).collect::<Vec<_>>());
    }
    let nodes = test_nodes(0..2);
    let order: Vec<_> = selector
        .select(&Candidates::new(&nodes, 1), &keyed("k"))
        .collect();
    assert_eq!(order.len(), 2);
}
