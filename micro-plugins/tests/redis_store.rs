//! The Redis store against private redis-server instances (micro-test-engines): conformance,
//! selection by URL, and a restart of redis-server surfacing `Unavailable` then recovering.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{Arc, Once},
    time::{Duration, Instant},
};

use bytes::Bytes;
use micro_core::store::{self, ListOptions, Namespace, Put, Store, StoreError, conformance};
use micro_plugins::redis::RedisStore;
use micro_test_engines::RedisServer;

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

fn store(server: &RedisServer) -> RedisStore {
    RedisStore::new(&server.url())
        .unwrap()
        .request_timeout(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    init_tracing();
    let server = RedisServer::start().await;
    conformance::run(Arc::new(store(&server))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selected_by_url_after_install() {
    init_tracing();
    let server = RedisServer::start().await;
    micro_plugins::install();
    let store = store::from_url(&format!("{}/3", server.url())).unwrap();
    assert_eq!(store.name(), "redis");
    let ns = Namespace::default();
    assert_eq!(store.put(&ns, Put::new("k", "v")).await.unwrap(), 1);
    assert_eq!(
        store.list(&ns, ListOptions::default()).await.unwrap().keys,
        ["k"]
    );
    assert!(matches!(
        store::from_url("redis://host:notaport"),
        Err(StoreError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_unavailable_then_recovers() {
    init_tracing();
    let mut server = RedisServer::start().await;
    let store = store(&server);
    let ns = Namespace::new("app", "sessions").unwrap();
    store.put(&ns, Put::new("a", "1")).await.unwrap();

    server.stop().await;
    match store.get(&ns, "a").await {
        Err(StoreError::Unavailable { store, message, .. }) => {
            assert_eq!(store, "redis");
            assert!(message.contains(&server.url()), "{message}");
        }
        other => panic!("redis-server stopped: {other:?}"),
    }

    server.restart().await;
    // The connection manager reconnects in the background: poll with a deadline.
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
    // Nothing persisted across the restart (the test server keeps no data), and the scripts
    // were loaded again.
    assert_eq!(store.get(&ns, "a").await.unwrap(), None);
    assert_eq!(
        store.get(&ns, "b").await.unwrap().unwrap().value,
        Bytes::from("2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_and_lazy_index_cleanup() {
    init_tracing();
    let server = RedisServer::start().await;
    let store = store(&server);
    let ns = Namespace::new("app", "cache").unwrap();
    store
        .put(&ns, Put::new("brief", "v").ttl(Duration::from_millis(50)))
        .await
        .unwrap();
    store.put(&ns, Put::new("kept", "v")).await.unwrap();

    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let index = "micro:store:{app/cache}:keys";
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(index)
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(members, ["brief", "kept"]);
    let version: String = redis::cmd("HGET")
        .arg("micro:store:{app/cache}:r:kept")
        .arg("version")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(version, "1");

    let deadline = Instant::now() + Duration::from_secs(5);
    while store.get(&ns, "brief").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "a 50 ms TTL expired within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let keys = store.list(&ns, ListOptions::default()).await.unwrap().keys;
    assert_eq!(keys, ["kept"]);
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(index)
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(members, ["kept"], "listing removed the expired member");
}

/// `request_timeout` takes effect on a store that has clones (it used to change nothing
/// once the store was shared), and the clones made before keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_applies_after_a_clone() {
    init_tracing();
    let server = RedisServer::start().await;
    let ns = Namespace::default();
    let store = RedisStore::new(&server.url()).unwrap();
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
        other => panic!("redis-server paused: {other:?}"),
    }
    assert!(
        waited < RedisStore::DEFAULT_REQUEST_TIMEOUT,
        "failed after {waited:?}: the default timeout, not the 200 ms set"
    );
    let (earlier, quick) = (format!("{earlier:?}"), format!("{quick:?}"));
    assert!(earlier.contains("request_timeout: 5s"), "{earlier}");
    assert!(quick.contains("request_timeout: 200ms"), "{quick}");
}
