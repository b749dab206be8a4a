//! Behaviour every registry shares, run by each registry's tests.
//!
//! Available to other crates with the `test-util` feature, so registries outside
//! micro-core (etcd, mDNS, …) run the same checks: call [`run`] with an empty registry.

// Test support: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt;

use super::{
    Event, EventKind, Node, RegisterOptions, RegistryError, Service, SharedRegistry, WatchOptions,
    Watcher,
};

/// How long a test waits for an event that must come.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A node with `id` and `address` and no metadata.
pub fn node(id: &str, address: &str) -> Node {
    Node {
        id: id.to_owned(),
        address: address.to_owned(),
        ..Node::default()
    }
}

/// A service record with `name`, `version` and `nodes`.
pub fn service(name: &str, version: &str, nodes: &[Node]) -> Service {
    Service {
        name: name.to_owned(),
        version: version.to_owned(),
        nodes: nodes.to_vec(),
        ..Service::default()
    }
}

/// The next event, failing the test after [`EVENT_TIMEOUT`].
pub async fn next_event(watcher: &mut Watcher) -> Event {
    match tokio::time::timeout(EVENT_TIMEOUT, watcher.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(err))) => panic!("watch failed: {err}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no event within {EVENT_TIMEOUT:?}"),
    }
}

async fn expect(watcher: &mut Watcher, kind: EventKind, record: &Service) {
    let event = next_event(watcher).await;
    assert_eq!(event.kind, kind, "{event:?}");
    assert_eq!(&event.service, record, "{event:?}");
}

fn ids(services: &[Service]) -> Vec<(String, String, Vec<String>)> {
    services
        .iter()
        .map(|s| {
            let ids = s.nodes.iter().map(|n| n.id.clone()).collect();
            (s.name.clone(), s.version.clone(), ids)
        })
        .collect()
}

fn row(name: &str, version: &str, nodes: &[&str]) -> (String, String, Vec<String>) {
    (
        name.to_owned(),
        version.to_owned(),
        nodes.iter().map(|&n| n.to_owned()).collect(),
    )
}

/// Register, read, watch and deregister on an empty registry. Waits for each event before
/// the next change, so registries that derive events by diffing see every step.
///
/// # Panics
/// On the first behaviour that differs, with what was expected.
pub async fn run(registry: SharedRegistry) {
    let opts = RegisterOptions {
        ttl: Duration::from_secs(600),
    };
    assert!(registry.get_service("conf-a").await.unwrap().is_empty());
    assert!(registry.list_services().await.unwrap().is_empty());

    let mut all = registry.watch(WatchOptions::default()).await.unwrap();
    let mut only_a = registry
        .watch(WatchOptions {
            service: Some("conf-a".into()),
        })
        .await
        .unwrap();

    // Create, then an identical refresh (no event), then an update.
    let a1 = service("conf-a", "1.0.0", &[node("n1", "127.0.0.1:1001")]);
    registry.register(&a1, opts).await.unwrap();
    expect(&mut all, EventKind::Create, &a1).await;
    expect(&mut only_a, EventKind::Create, &a1).await;
    registry.register(&a1, opts).await.unwrap();
    let mut a1_changed = a1.clone();
    a1_changed.nodes[0]
        .metadata
        .insert("zone".into(), "b".into());
    registry.register(&a1_changed, opts).await.unwrap();
    expect(&mut all, EventKind::Update, &a1_changed).await;
    expect(&mut only_a, EventKind::Update, &a1_changed).await;

    // Another service: only the unfiltered watcher sees it.
    let b1 = service("conf-b", "1.0.0", &[node("m1", "127.0.0.1:2001")]);
    registry.register(&b1, opts).await.unwrap();
    expect(&mut all, EventKind::Create, &b1).await;

    let a2 = service("conf-a", "2.0.0", &[node("n2", "127.0.0.1:1002")]);
    registry.register(&a2, opts).await.unwrap();
    expect(&mut all, EventKind::Create, &a2).await;
    expect(&mut only_a, EventKind::Create, &a2).await;

    let got = registry.get_service("conf-a").await.unwrap();
    assert_eq!(
        ids(&got),
        vec![
            row("conf-a", "1.0.0", &["n1"]),
            row("conf-a", "2.0.0", &["n2"]),
        ]
    );
    assert_eq!(got[0].nodes[0], a1_changed.nodes[0]);
    assert_eq!(
        ids(&registry.list_services().await.unwrap()),
        vec![
            row("conf-a", "1.0.0", &["n1"]),
            row("conf-a", "2.0.0", &["n2"]),
            row("conf-b", "1.0.0", &["m1"]),
        ]
    );
    assert!(registry.get_service("conf-c").await.unwrap().is_empty());

    // Unknown nodes deregister quietly; a Delete carries the last record.
    registry
        .deregister(&service("conf-a", "", &[node("nobody", "")]))
        .await
        .unwrap();
    registry
        .deregister(&service("conf-a", "", &[node("n1", "")]))
        .await
        .unwrap();
    expect(&mut all, EventKind::Delete, &a1_changed).await;
    expect(&mut only_a, EventKind::Delete, &a1_changed).await;
    registry.deregister(&a2).await.unwrap();
    expect(&mut all, EventKind::Delete, &a2).await;
    expect(&mut only_a, EventKind::Delete, &a2).await;
    registry.deregister(&b1).await.unwrap();
    expect(&mut all, EventKind::Delete, &b1).await;

    assert!(registry.get_service("conf-a").await.unwrap().is_empty());
    assert!(registry.list_services().await.unwrap().is_empty());

    // Invalid records never reach the backend.
    let err = registry
        .register(&service("conf-a", "1", &[]), opts)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::InvalidRecord(_)), "{err}");
    let err = registry
        .register(&service("../etc", "1", &[node("n", "a:1")]), opts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("'/'"), "{err}");
    let err = registry
        .register(&service("ok", "1", &[node("a/b", "a:1")]), opts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("node id"), "{err}");
}
