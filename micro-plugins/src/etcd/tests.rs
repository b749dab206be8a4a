//! Watch internals against a real etcd: a watch forced to start at a compacted revision.

use std::time::Duration;

use etcd_client::CompactionOptions;
use futures_util::StreamExt;
use micro_core::registry::{EventKind, conformance};

use super::*;

fn svc(id: &str, zone: &str) -> Service {
    let mut s = conformance::service("comp", "1", &[conformance::node(id, "127.0.0.1:1")]);
    s.nodes[0].metadata.insert("zone".into(), zone.into());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_watch_lists_again_and_reports_the_difference() {
    let etcd = micro_test_engines::EtcdServer::start().await;
    let registry = EtcdRegistry::builder([etcd.endpoint()])
        .namespace("unit")
        .build()
        .unwrap();
    let opts = RegisterOptions {
        ttl: Duration::from_secs(60),
    };
    for id in ["a", "b", "c"] {
        registry.register(&svc(id, "1"), opts).await.unwrap();
    }
    let inner = &registry.inner;
    let client = inner.client().await.unwrap();
    // What a watcher saw at `revision`…
    let (known, revision) = inner.list(&client, &inner.root).await.unwrap();
    // …then changes it never saw, and a compaction past them.
    registry
        .deregister(&conformance::service(
            "comp",
            "",
            &[conformance::node("a", "")],
        ))
        .await
        .unwrap();
    registry.register(&svc("b", "2"), opts).await.unwrap();
    registry.register(&svc("c", "1"), opts).await.unwrap(); // identical: no event
    registry.register(&svc("d", "1"), opts).await.unwrap();
    let (_, mut raw) = client.current();
    let now = raw
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    raw.compact(now, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();

    let mut watcher = watch::start(
        inner.watch_config(client.clone(), inner.root.clone()),
        known.clone(),
        revision,
    )
    .await
    .unwrap();
    let mut events = Vec::new();
    for _ in 0..3 {
        let event = conformance::next_event(&mut watcher).await;
        events.push((event.kind, event.service.nodes[0].id.clone()));
    }
    events.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        events,
        [
            (EventKind::Delete, "a".to_owned()),
            (EventKind::Update, "b".to_owned()),
            (EventKind::Create, "d".to_owned()),
        ]
    );
    // Nothing else is pending, and the watch goes on from the new listing.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), watcher.next())
            .await
            .is_err()
    );
    registry.register(&svc("e", "1"), opts).await.unwrap();
    let event = conformance::next_event(&mut watcher).await;
    assert_eq!(event.kind, EventKind::Create);
    assert_eq!(event.service, svc("e", "1"));
}

#[test]
fn ttl_rounds_up_to_whole_seconds() {
    assert_eq!(ttl_secs(Duration::from_millis(2500)), 3);
    assert_eq!(ttl_secs(Duration::from_secs(3)), 3);
    assert_eq!(ttl_secs(Duration::ZERO), 1);
    assert_eq!(ttl_secs(Duration::MAX), 9_000_000_000);
}
