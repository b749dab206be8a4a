//! `micro server` as a real process: the kv service keeps data across restarts, and the
//! registry, sync and event services are usable from other processes through `service://`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::{path::Path, sync::Arc, time::Duration};

use futures_util::StreamExt;
use micro::{
    Client, Registry,
    platform::{config::ConfigClient, kv::KvClient, registry::RegistryClient, sync::SyncClient},
    registry::{self, EventKind, RegisterOptions, SharedRegistry, WatchOptions},
    store::{Namespace, Put, Store},
};
use micro_core::{
    broker::{self, Message, SubscribeOptions},
    sync::{self, LockOptions, Sync, SyncError},
};
use nix::sys::signal::Signal;
use support::{Proc, RegistryDir, server::MicroServer};

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `micro server` on a free loopback port with its data under `data_dir` and its
/// registry in `registry`; returns once it printed its ready line, with its address and
/// the lines before.
async fn start(data_dir: &Path, registry: &RegistryDir) -> (Proc, String, Vec<String>) {
    start_with(data_dir, registry, &[]).await
}

/// [`start`] with more flags.
async fn start_with(
    data_dir: &Path,
    registry: &RegistryDir,
    extra: &[&str],
) -> (Proc, String, Vec<String>) {
    let server = MicroServer::builder()
        .data_dir(data_dir)
        .registry(registry)
        .api()
        .args(extra)
        .start()
        .await;
    (server.process, server.addr, server.lines)
}

async fn stop(mut server: Proc) {
    server.signal(Signal::SIGTERM);
    let status = server.wait(EXIT_TIMEOUT).await;
    assert!(status.success(), "micro server exited with {status}");
}

#[tokio::test]
async fn kv_keeps_keys_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let registry = RegistryDir::new();
    let ns = Namespace::new("acceptance", "restart").unwrap();

    let (server, addr, _) = start(data.path(), &registry).await;
    let kv = KvClient::connect(&addr).unwrap();
    for i in 0..20 {
        let version = kv
            .put(&ns, Put::new(format!("key-{i:02}"), format!("value {i}")))
            .await
            .unwrap();
        assert_eq!(version, 1);
    }
    kv.put(&ns, Put::new("key-00", "changed")).await.unwrap();
    stop(server).await;

    let (server, addr, _) = start(data.path(), &registry).await;
    let kv = KvClient::connect(&addr).unwrap();
    let keys: Vec<String> = (0..20).map(|i| format!("key-{i:02}")).collect();
    let records = kv.get_many(&ns, &keys).await.unwrap();
    for (i, record) in records.into_iter().enumerate() {
        let record = record.unwrap_or_else(|| panic!("key-{i:02} was lost in the restart"));
        if i == 0 {
            assert_eq!(
                (record.value.as_ref(), record.version),
                (&b"changed"[..], 2)
            );
        } else {
            assert_eq!(record.value, format!("value {i}").into_bytes());
        }
    }
    stop(server).await;
}

#[tokio::test]
async fn registry_and_kv_are_reachable_through_service_urls() {
    let data = tempfile::tempdir().unwrap();
    let registry = RegistryDir::new();
    let (server, addr, lines) = start(data.path(), &registry).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("service name=micro.registry ")),
        "{lines:?}"
    );

    micro::platform::install();
    let url = format!("service://{}", addr);
    // One client registers a node through the server...
    let writer = RegistryClient::connect(&addr).unwrap();
    // ...another, opened by URL as a service would with MICRO_REGISTRY, watches and reads.
    let reader: SharedRegistry = registry::from_url(&url).unwrap();
    let mut watch = reader
        .watch(WatchOptions {
            service: Some("probe".into()),
        })
        .await
        .unwrap();
    let probe = registry::Service {
        name: "probe".into(),
        version: "1.0.0".into(),
        nodes: vec![registry::Node {
            id: "probe-1".into(),
            address: "127.0.0.1:9".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    writer
        .register(&probe, RegisterOptions::default())
        .await
        .unwrap();
    let event = tokio::time::timeout(EXIT_TIMEOUT, watch.next())
        .await
        .expect("an event")
        .expect("a live watch")
        .unwrap();
    assert_eq!((event.kind, &event.service), (EventKind::Create, &probe));
    assert_eq!(
        reader.get_service("probe").await.unwrap(),
        vec![probe.clone()]
    );
    // The server's own registry backend holds it too: it is the registry other local
    // services use.
    assert_eq!(
        registry.registry().get_service("probe").await.unwrap()[0].nodes,
        probe.nodes
    );

    // The platform services are registered under their own names at the server's address.
    for name in [
        "micro.kv",
        "micro.registry",
        "micro.config",
        "micro.sync",
        "micro.event",
        "micro.server",
    ] {
        let services = reader.get_service(name).await.unwrap();
        assert_eq!(services.len(), 1, "{name}: {services:?}");
        assert_eq!(services[0].nodes[0].address, addr, "{name}");
    }

    // MICRO_STORE=service: the kv service found by name through that registry.
    let kv = KvClient::from_client(&Client::new(Arc::clone(&reader)));
    let ns = Namespace::default();
    assert_eq!(kv.put(&ns, Put::new("hello", "world")).await.unwrap(), 1);
    let record = kv.get(&ns, "hello").await.unwrap().unwrap();
    assert_eq!(record.value.as_ref(), b"world");

    writer.deregister(&probe).await.unwrap();
    let event = tokio::time::timeout(EXIT_TIMEOUT, watch.next())
        .await
        .expect("an event")
        .expect("a live watch")
        .unwrap();
    assert_eq!(event.kind, EventKind::Delete);

    stop(server).await;
    // A graceful stop deregistered every name.
    let local = registry.registry();
    for name in [
        "micro.kv",
        "micro.registry",
        "micro.config",
        "micro.sync",
        "micro.event",
        "micro.server",
    ] {
        assert!(local.get_service(name).await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn config_and_sync_are_served() {
    let data = tempfile::tempdir().unwrap();
    let registry = RegistryDir::new();
    let (server, addr, lines) = start(data.path(), &registry).await;
    for name in ["micro.config", "micro.sync"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("service name={name} "))),
            "{name} in {lines:?}"
        );
    }

    // Config: a value set through the service is read back, and a config follows it.
    let config = ConfigClient::connect(&addr, "acceptance").unwrap();
    config.set("db.pool", "20").await.unwrap();
    assert_eq!(
        config.get("db.pool").await.unwrap(),
        Some(serde_json::json!(20))
    );
    let bad = config.set("db.pool", "{unclosed").await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let loaded = micro_core::config::Config::builder()
        .source(config.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(loaded.get::<u32>("db.pool").unwrap(), 20);
    let mut pool = loaded.watch::<u32>("db.pool").unwrap();
    config.set("db.pool", "21").await.unwrap();
    assert_eq!(
        tokio::time::timeout(EXIT_TIMEOUT, pool.changed())
            .await
            .expect("the change"),
        21
    );
    // Kept in the server's store, next to kv: the same backend.
    let kv = KvClient::connect(&addr).unwrap();
    let record = kv
        .get(&Namespace::new("config", "acceptance").unwrap(), "db.pool")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.value.as_ref(), b"21");

    // Sync through MICRO_SYNC=service://…: a lock excludes others until released.
    micro::platform::install();
    let url = format!("service://{addr}");
    let first = sync::from_url(&url).await.unwrap();
    let second = SyncClient::connect(&addr).unwrap();
    let lock = first
        .lock("acceptance", LockOptions::default())
        .await
        .unwrap();
    let try_once = LockOptions {
        wait: Some(Duration::ZERO),
        ..LockOptions::default()
    };
    assert!(matches!(
        second.lock("acceptance", try_once).await,
        Err(SyncError::Timeout { .. })
    ));
    let token = lock.token();
    lock.release().await.unwrap();
    let next = second.lock("acceptance", try_once).await.unwrap();
    assert!(next.token() > token);

    // Held at shutdown: the server still stops at once, and the holder sees it lost.
    let mut next = next;
    stop(server).await;
    tokio::time::timeout(EXIT_TIMEOUT, next.lost())
        .await
        .expect("the holder sees the lock lost");
}

#[tokio::test]
async fn events_are_published_and_delivered_through_service_urls() {
    let data = tempfile::tempdir().unwrap();
    let registry = RegistryDir::new();
    let (server, addr, lines) = start(data.path(), &registry).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("service name=micro.event ") && l.contains("broker=local")),
        "{lines:?}"
    );

    // MICRO_BROKER=service://…: one client subscribes, another publishes.
    micro::platform::install();
    let url = format!("service://{addr}");
    let subscriber = broker::from_url(&url).unwrap();
    let publisher = broker::from_url(&url).unwrap();
    // Ready once it returned: the service confirmed the subscription.
    let mut orders = subscriber
        .subscribe("acceptance.orders", SubscribeOptions::default())
        .await
        .unwrap();
    let message = Message {
        headers: [("x-order".to_owned(), "7".to_owned())].into(),
        body: "order 7".into(),
    };
    publisher
        .publish("acceptance.orders", message.clone())
        .await
        .unwrap();
    let delivery = tokio::time::timeout(EXIT_TIMEOUT, orders.next())
        .await
        .expect("a delivery in time")
        .expect("the subscription goes on")
        .unwrap();
    assert_eq!(&*delivery.topic, "acceptance.orders");
    assert_eq!(delivery.message, message);

    // The default backend is the local broker on the server's registry: the subscription
    // is a node of `micro.broker.<topic>` there, so local services reach it too.
    let nodes = registry
        .registry()
        .get_service("micro.broker.acceptance.orders")
        .await
        .unwrap();
    assert_eq!(
        nodes.iter().map(|s| s.nodes.len()).sum::<usize>(),
        1,
        "{nodes:?}"
    );

    // A bad topic is refused by the service too (raw gRPC, no client-side check).
    let mut stub = micro::platform::proto::event::v1::event_client::EventClient::new(
        Client::new(registry.registry()).channel("micro.event"),
    );
    let status = stub
        .publish(micro::platform::proto::event::v1::PublishRequest {
            topic: "acceptance..orders".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // A subscription open at shutdown does not hold the server up.
    stop(server).await;
    drop(orders);
}

/// `--broker nats://…`: the event service on NATS. A raw NATS client publishes to the
/// documented subject of a micro topic and a subscriber of the event service receives it.
#[cfg(feature = "nats")]
#[tokio::test]
async fn the_event_service_runs_on_nats() {
    let nats = micro_test_engines::NatsServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let registry = RegistryDir::new();
    let broker = nats.url();
    let (server, addr, lines) = start_with(data.path(), &registry, &["--broker", &broker]).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("service name=micro.event ") && l.contains("broker=nats")),
        "{lines:?}"
    );
    micro::platform::install();
    let subscriber = broker::from_url(&format!("service://{addr}")).unwrap();
    let mut orders = subscriber
        .subscribe("acceptance.nats", SubscribeOptions::default())
        .await
        .unwrap();
    // NATS core is at-most-once and the server's SUB may reach nats-server after a first
    // publish from another connection: publish until one arrives.
    let raw = async_nats::connect(broker.as_str()).await.unwrap();
    let deadline = tokio::time::Instant::now() + EXIT_TIMEOUT;
    let delivery = loop {
        raw.publish("micro.acceptance.nats", "from raw NATS".into())
            .await
            .unwrap();
        raw.flush().await.unwrap();
        match tokio::time::timeout(Duration::from_millis(100), orders.next()).await {
            Ok(next) => break next.expect("the subscription goes on").unwrap(),
            Err(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "no delivery from NATS in time"
            ),
        }
    };
    assert_eq!(&*delivery.topic, "acceptance.nats");
    assert_eq!(delivery.message.body, "from raw NATS");
    stop(server).await;
}
