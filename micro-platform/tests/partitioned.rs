//! `PartitionedStore` end to end: several `KvService` servers on loopback, each over its own
//! `MemoryStore`, registered as `micro.kv` in one memory registry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{collections::HashMap, sync::Arc, time::Duration};

use micro_core::{
    Service,
    registry::{MemoryRegistry, SharedRegistry},
    service::RunningService,
    store::{
        self, Condition, ListOptions, MemoryStore, Namespace, Put, SharedStore, Store, StoreError,
    },
};
use micro_platform::kv::{KvClient, KvService, PartitionedStore};
use tokio::time::Instant;

/// A kv node over a fresh memory store, registered in `registry` (with a heartbeat too slow
/// to re-register a node the test deregistered).
async fn start(registry: SharedRegistry) -> RunningService {
    Service::builder("micro.kv")
        .address("127.0.0.1:0")
        .registry(registry)
        .register_ttl(Duration::from_secs(600))
        .register_interval(Duration::from_secs(240))
        .add_service(KvService::new(Arc::new(MemoryStore::new())).into_server())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// Waits until `store` sees `count` nodes (the registry watch is asynchronous).
async fn wait_for_nodes(store: &PartitionedStore, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.nodes().len() != count {
        assert!(
            Instant::now() < deadline,
            "the store saw {:?}, not {count} nodes",
            store.nodes()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn conformance_over_three_nodes() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start(registry.clone()).await);
    }
    let store = PartitionedStore::new(registry).await.unwrap();
    wait_for_nodes(&store, 3).await;
    assert!(!store.atomic_batches());
    store::conformance::run(Arc::new(store.clone()) as SharedStore).await;

    // The keys really are spread: every node holds some of a namespace's keys.
    let ns = store::conformance::fresh_namespace();
    let puts: Vec<Put> = (0..300).map(|i| Put::new(format!("k{i}"), "v")).collect();
    store.put_many(&ns, puts).await.unwrap();
    for node in &nodes {
        let direct = KvClient::connect(node.local_address()).unwrap();
        let page = direct
            .list(
                &ns,
                ListOptions {
                    limit: 1000,
                    ..ListOptions::default()
                },
            )
            .await
            .unwrap();
        assert!(
            (50..150).contains(&page.keys.len()),
            "{} of 300 keys on one node",
            page.keys.len()
        );
        for key in &page.keys {
            assert_eq!(store.owner(&ns, key).unwrap(), node.local_address());
        }
    }
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn no_node_is_unavailable() {
    let store = PartitionedStore::new(Arc::new(MemoryRegistry::new()))
        .await
        .unwrap();
    let err = store.get(&Namespace::default(), "k").await.unwrap_err();
    assert!(
        matches!(err, store::StoreError::Unavailable { .. }),
        "{err}"
    );
}

/// Acceptance 5: 10,000 keys on 3 nodes; a 4th node takes 15–35 % of them, and after a
/// rebalance every key reads back; removing a node likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_and_removing_a_node_moves_about_one_in_n() {
    const KEYS: usize = 10_000;
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start(registry.clone()).await);
    }
    let store = PartitionedStore::new(registry.clone()).await.unwrap();
    wait_for_nodes(&store, 3).await;
    let ns = Namespace::new("acceptance", "partition").unwrap();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("user/{i:05}")).collect();
    for chunk in keys.chunks(1000) {
        let puts = chunk
            .iter()
            .map(|k| Put::new(k.clone(), k.clone()))
            .collect();
        store.put_many(&ns, puts).await.unwrap();
    }
    let owners = |store: &PartitionedStore| -> HashMap<String, String> {
        keys.iter()
            .map(|k| (k.clone(), store.owner(&ns, k).unwrap()))
            .collect()
    };
    let before = owners(&store);

    // Add a 4th node.
    nodes.push(start(registry.clone()).await);
    wait_for_nodes(&store, 4).await;
    let after = owners(&store);
    let new_node = nodes[3].local_address().to_owned();
    let moved: Vec<&String> = keys.iter().filter(|k| before[*k] != after[*k]).collect();
    let share = moved.len() as f64 / KEYS as f64;
    eprintln!(
        "adding a 4th node moved {} of {KEYS} keys ({:.1} %)",
        moved.len(),
        share * 100.0
    );
    assert!((0.15..=0.35).contains(&share), "{share}");
    assert!(
        moved.iter().all(|k| after[*k] == new_node),
        "keys move only to the new node"
    );

    // Before the rebalance: a key read, deleted or compare-and-set on its new owner is
    // first fetched from its earlier owner.
    assert!(store.needs_rebalance());
    let sampled: Vec<&String> = moved.iter().copied().take(100).collect();
    for key in &sampled {
        let record = store
            .get(&ns, key)
            .await
            .unwrap()
            .expect("readable before rebalance");
        assert_eq!(record.value, key.as_bytes());
    }
    let gone = moved[100].clone();
    assert!(store.delete(&ns, &gone, Condition::None).await.unwrap());
    assert_eq!(store.get(&ns, &gone).await.unwrap(), None);
    let cas_key = moved[101].clone();
    let err = store
        .put(
            &ns,
            Put::new(cas_key.clone(), "x").condition(Condition::Absent),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err}");
    let misses = store.get_many(&ns, &keys[..1000]).await.unwrap();
    assert_eq!(
        misses.iter().filter(|r| r.is_none()).count(),
        usize::from(keys[..1000].contains(&gone))
    );
    let settled_early = keys[..1000]
        .iter()
        .chain(sampled.iter().copied())
        .chain([&gone, &cas_key])
        .filter(|k| before[*k] != after[*k])
        .collect::<std::collections::HashSet<_>>()
        .len();

    let report = store.rebalance(std::slice::from_ref(&ns)).await.unwrap();
    assert!(!store.needs_rebalance());
    assert_eq!(report.moved, moved.len() - settled_early, "{report:?}");
    assert_eq!(
        store.get(&ns, &gone).await.unwrap(),
        None,
        "a deleted key stays deleted"
    );
    let keys: Vec<String> = keys.iter().filter(|k| **k != gone).cloned().collect();
    // One key was deleted; a moved key is listed again when its new node is listed after
    // its old one.
    assert!(
        (KEYS - 1..=KEYS - 1 + moved.len()).contains(&report.scanned),
        "{report:?}"
    );
    assert_eq!(report.superseded, 0);
    assert!(report.unreachable.is_empty());
    check_all_readable(&store, &ns, &keys).await;
    let again = store.rebalance(std::slice::from_ref(&ns)).await.unwrap();
    assert_eq!(
        (again.scanned, again.moved),
        (KEYS - 1, 0),
        "a second run moves nothing"
    );

    // Remove the first node gracefully: deregistered but still serving, rebalance, stop.
    let leaving = nodes.remove(0);
    let leaving_address = leaving.local_address().to_owned();
    let owned_by_leaving = keys
        .iter()
        .filter(|k| store.owner(&ns, k).unwrap() == leaving_address)
        .count();
    registry.deregister(leaving.record()).await.unwrap();
    wait_for_nodes(&store, 3).await;
    let report = store.rebalance(std::slice::from_ref(&ns)).await.unwrap();
    eprintln!("removing a node moved {} keys", report.moved);
    assert_eq!(report.moved, owned_by_leaving);
    leaving.shutdown().await.unwrap();
    check_all_readable(&store, &ns, &keys).await;
    let listed = list_all(&store, &ns).await;
    assert_eq!(listed, keys, "listing merges the nodes in byte order");
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

async fn check_all_readable(store: &PartitionedStore, ns: &Namespace, keys: &[String]) {
    for chunk in keys.chunks(1000) {
        let records = store.get_many(ns, chunk).await.unwrap();
        for (key, record) in chunk.iter().zip(records) {
            let record = record.unwrap_or_else(|| panic!("{key} is not readable"));
            assert_eq!(record.value, key.as_bytes());
        }
    }
    // Single reads too, for a sample.
    for key in keys.iter().step_by(97) {
        assert!(store.get(ns, key).await.unwrap().is_some(), "{key}");
    }
}

async fn list_all(store: &PartitionedStore, ns: &Namespace) -> Vec<String> {
    let mut keys = Vec::new();
    let mut start_after = None;
    loop {
        let page = store
            .list(
                ns,
                ListOptions {
                    start_after: start_after.take(),
                    limit: 700,
                    ..ListOptions::default()
                },
            )
            .await
            .unwrap();
        keys.extend(page.keys);
        match page.next {
            Some(next) => start_after = Some(next),
            None => return keys,
        }
    }
}
