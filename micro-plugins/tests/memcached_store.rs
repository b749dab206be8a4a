//! The memcached store against private memcached instances (micro-test-engines):
//! conformance, selection by URL, listing after records expire or vanish, and a restart of
//! memcached surfacing `Unavailable` then recovering.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{Arc, Once},
    time::{Duration, Instant},
};

use micro_core::store::{self, ListOptions, Namespace, Put, Store, StoreError, conformance};
use micro_plugins::memcached::MemcachedStore;
use micro_test_engines::MemcachedServer;

fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "micro_plugins=info".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

fn store(server: &MemcachedServer) -> MemcachedStore {
    MemcachedStore::new(&server.url())
        .unwrap()
        .request_timeout(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    init_tracing();
    let server = MemcachedServer::start().await;
    let store = store(&server);
    assert!(!store.atomic_batches());
    conformance::run(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selected_by_url_after_install() {
    init_tracing();
    let server = MemcachedServer::start().await;
    micro_plugins::install();
    let store = store::from_url(&server.url()).unwrap();
    assert_eq!(store.name(), "memcached");
    let ns = Namespace::default();
    assert_eq!(store.put(&ns, Put::new("k", "v")).await.unwrap(), 1);
    for bad in ["memcached://", "memcached://h:port", "memcached://h:1/path"] {
        assert!(
            matches!(store::from_url(bad), Err(StoreError::InvalidArgument(_))),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_share_versions_and_listing() {
    init_tracing();
    let server = MemcachedServer::start().await;
    let (a, b) = (store(&server), store(&server));
    let ns = Namespace::new("app", "shared").unwrap();
    let long = "x".repeat(300);
    a.put_many(
        &ns,
        vec![
            Put::new("k 1", "a"),
            Put::new(long.clone(), "a"),
            Put::new("k2", "a"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(b.put(&ns, Put::new("k2", "b")).await.unwrap(), 2);
    assert_eq!(a.get(&ns, "k2").await.unwrap().unwrap().version, 2);
    assert!(b.delete(&ns, "k 1", store::Condition::None).await.unwrap());
    let keys = a.list(&ns, ListOptions::default()).await.unwrap().keys;
    assert_eq!(keys, ["k2".to_owned(), long]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_unavailable_then_recovers() {
    init_tracing();
    let mut server = MemcachedServer::start().await;
    let store = store(&server);
    let ns = Namespace::new("app", "sessions").unwrap();
    store.put(&ns, Put::new("a", "1")).await.unwrap();

    server.stop().await;
    match store.get(&ns, "a").await {
        Err(StoreError::Unavailable {
            store,
            message,
            source,
        }) => {
            assert_eq!(store, "memcached");
            assert!(message.contains(&server.url()), "{message}");
            // The broken connection's I/O error, for callers that look at the cause.
            let cause = source.as_deref().map(|s| s.is::<std::io::Error>());
            assert_eq!(cause, Some(true), "{message}");
        }
        other => panic!("memcached stopped: {other:?}"),
    }

    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let version = loop {
        match store.put(&ns, Put::new("b", "2")).await {
            Ok(version) => break version,
            Err(StoreError::Unavailable { .. }) => {
                assert!(Instant::now() < deadline, "not recovered within 10 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("after the restart: {other}"),
        }
    };
    assert_eq!(version, 1);
    assert_eq!(
        store.get(&ns, "a").await.unwrap(),
        None,
        "memcached forgot it"
    );
}

/// `request_timeout` takes effect on a store that has clones (it used to change nothing
/// once the store was shared), and the clones made before keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_applies_after_a_clone() {
    init_tracing();
    let server = MemcachedServer::start().await;
    let ns = Namespace::default();
    let store = MemcachedStore::new(&server.url()).unwrap();
    let earlier = store.clone();
    earlier.put(&ns, Put::new("k", "v")).await.unwrap();
    let quick = store.request_timeout(Duration::from_millis(200));
    assert!(quick.get(&ns, "k").await.unwrap().is_some());

    server.pause();
    let started = Instant::now();
    let result = quick.get(&ns, "k").await;
    let waited = started.elapsed();
    server.resume();
    match result {
        Err(StoreError::Unavailable { message, .. }) => {
            assert!(message.contains(&server.url()), "{message}");
        }
        other => panic!("memcached paused: {other:?}"),
    }
    assert!(
        waited < MemcachedStore::DEFAULT_REQUEST_TIMEOUT,
        "failed after {waited:?}: the default timeout, not the 200 ms set"
    );
    let (earlier, quick) = (format!("{earlier:?}"), format!("{quick:?}"));
    assert!(earlier.contains("request_timeout: 5s"), "{earlier}");
    assert!(quick.contains("request_timeout: 200ms"), "{quick}");
}
