use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;

use super::*;
use crate::registry::conformance::{self, next_event, node, service};

#[tokio::test]
async fn conformance() {
    conformance::run(Arc::new(MemoryRegistry::new())).await;
}

#[tokio::test]
async fn clones_share_records() {
    let a = MemoryRegistry::new();
    let b = a.clone();
    a.register(
        &service("s", "1", &[node("n", "h:1")]),
        RegisterOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(b.get_service("s").await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn ttl_expiry_hides_node_and_emits_delete() {
    let registry = MemoryRegistry::new();
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    let short = service("s", "1", &[node("short", "h:1")]);
    let long = service("s", "1", &[node("long", "h:2")]);
    let ttl = |secs| RegisterOptions {
        ttl: Duration::from_secs(secs),
    };
    registry.register(&short, ttl(10)).await.unwrap();
    registry.register(&long, ttl(60)).await.unwrap();
    assert_eq!(next_event(&mut watcher).await.kind, EventKind::Create);
    assert_eq!(next_event(&mut watcher).await.kind, EventKind::Create);

    // A refresh at 5 s moves the expiry of `short` to 15 s.
    tokio::time::advance(Duration::from_secs(5)).await;
    registry.register(&short, ttl(10)).await.unwrap();
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(registry.get_service("s").await.unwrap()[0].nodes.len(), 2);

    tokio::time::advance(Duration::from_secs(1)).await;
    let nodes = &registry.get_service("s").await.unwrap()[0].nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].id, "long");

    let event = next_event(&mut watcher).await;
    assert_eq!(event.kind, EventKind::Delete);
    assert_eq!(event.service, short);
}

#[tokio::test(start_paused = true)]
async fn sweeper_emits_delete_without_other_calls() {
    let registry = MemoryRegistry::new();
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    let s = service("s", "1", &[node("n", "h:1")]);
    let opts = RegisterOptions {
        ttl: Duration::from_secs(3),
    };
    registry.register(&s, opts).await.unwrap();
    assert_eq!(next_event(&mut watcher).await.kind, EventKind::Create);
    let start = Instant::now();
    // Paused time jumps to the sweeper's deadline once everything is idle.
    let event = next_event(&mut watcher).await;
    assert_eq!(event.kind, EventKind::Delete);
    assert_eq!(event.service, s);
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn reregister_after_expiry_is_delete_then_create() {
    let registry = MemoryRegistry::new();
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    let s = service("s", "1", &[node("n", "h:1")]);
    let opts = RegisterOptions {
        ttl: Duration::from_secs(3),
    };
    registry.register(&s, opts).await.unwrap();
    tokio::time::advance(Duration::from_secs(4)).await;
    registry.register(&s, opts).await.unwrap();
    let kinds = [
        next_event(&mut watcher).await.kind,
        next_event(&mut watcher).await.kind,
        next_event(&mut watcher).await.kind,
    ];
    assert_eq!(
        kinds,
        [EventKind::Create, EventKind::Delete, EventKind::Create]
    );
}

#[tokio::test]
async fn lagging_watcher_ends_with_error() {
    let registry = MemoryRegistry::new();
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    for i in 0..(WATCH_BUFFER + 10) {
        let s = service("s", "1", &[node(&format!("n{i}"), "h:1")]);
        registry
            .register(&s, RegisterOptions::default())
            .await
            .unwrap();
    }
    let err = watcher.next().await.unwrap().unwrap_err();
    assert!(err.to_string().contains("missed"), "{err}");
    assert!(watcher.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn sweeper_stops_when_watchers_are_gone() {
    let registry = MemoryRegistry::new();
    let watcher = registry.watch(WatchOptions::default()).await.unwrap();
    assert!(registry.inner.lock().sweeper_running);
    drop(watcher);
    // The sweeper runs on this single-threaded runtime; let it notice.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!registry.inner.lock().sweeper_running);
}
