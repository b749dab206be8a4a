//! The mDNS registry over loopback: conformance, two daemons seeing each other, goodbye
//! packets, and the loopback-only guarantee.
//!
//! Every registry here is built loopback-only, each test on its own free UDP port, so tests
//! (and other runs on the same machine) never hear each other and nothing is ever sent on
//! another interface: no test creates a daemon on all interfaces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    future::Future,
    net::UdpSocket,
    sync::{Arc, Once},
    time::{Duration, Instant},
};

use micro_core::registry::{
    self, EventKind, RegisterOptions, Registry, Service, WatchOptions, conformance,
};
use micro_plugins::mdns::MdnsRegistry;

/// 224.0.0.251 as /proc/net/igmp prints it (little-endian hex).
const MDNS_GROUP_V4: &str = "FB0000E0";
/// ff02::fb as /proc/net/igmp6 prints it.
const MDNS_GROUP_V6: &str = "ff0200000000000000000000000000fb";

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

/// A UDP port nothing on loopback uses right now: each test gets its own mDNS "network".
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn loopback(port: u16) -> MdnsRegistry {
    MdnsRegistry::builder()
        .interface_loopback_only()
        .port(port)
        .build()
        .unwrap()
}

fn svc(name: &str, id: &str, port: u16) -> Service {
    conformance::service(
        name,
        "1.0.0",
        &[conformance::node(id, &format!("127.0.0.1:{port}"))],
    )
}

fn ttl(secs: u64) -> RegisterOptions {
    RegisterOptions {
        ttl: Duration::from_secs(secs),
    }
}

/// Polls `check` every 20 ms until it holds; panics with `what` after `timeout`.
async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn node_ids(registry: &MdnsRegistry, name: &str) -> Vec<String> {
    registry
        .get_service(name)
        .await
        .unwrap()
        .iter()
        .flat_map(|s| s.nodes.iter().map(|n| n.id.clone()))
        .collect()
}

/// The whole suite holds on loopback: it waits for each event before reading, which is
/// what an eventually consistent registry needs (see the module docs of `mdns`).
#[tokio::test]
async fn conformance_over_loopback() {
    init_tracing();
    conformance::run(Arc::new(loopback(free_port()))).await;
}

#[tokio::test]
async fn two_daemons_see_each_others_nodes() {
    init_tracing();
    let port = free_port();
    let a = loopback(port);
    let b = loopback(port);
    let mut watch_b = b.watch(WatchOptions::default()).await.unwrap();

    let mut from_a = svc("pair", "from-a", 1001);
    from_a.nodes[0].metadata.insert("zone".into(), "x".into());
    a.register(&from_a, ttl(60)).await.unwrap();
    b.register(&svc("pair", "from-b", 1002), ttl(60))
        .await
        .unwrap();

    let event = conformance::next_event(&mut watch_b).await;
    assert_eq!(event.kind, EventKind::Create, "{event:?}");
    let took = wait_for(
        "both nodes in both registries",
        Duration::from_secs(5),
        || async {
            node_ids(&a, "pair").await == ["from-a", "from-b"]
                && node_ids(&b, "pair").await == ["from-a", "from-b"]
        },
    )
    .await;
    println!("both registries saw both nodes after {took:?}");
    // The record crosses intact (TXT metadata included).
    let seen = b.get_service("pair").await.unwrap();
    assert_eq!(seen[0].nodes[0], from_a.nodes[0]);
}

#[tokio::test]
async fn goodbye_removes_the_node_from_a_watcher() {
    init_tracing();
    let port = free_port();
    let owner = loopback(port);
    let observer = loopback(port);
    let mut watcher = observer
        .watch(WatchOptions {
            service: Some("bye".into()),
        })
        .await
        .unwrap();

    // A long TTL: the node can only go away through the goodbye packets.
    let record = svc("bye", "n1", 3001);
    owner.register(&record, ttl(600)).await.unwrap();
    let event = conformance::next_event(&mut watcher).await;
    assert_eq!((event.kind, &event.service), (EventKind::Create, &record));

    let start = Instant::now();
    owner.deregister(&record).await.unwrap();
    let event = conformance::next_event(&mut watcher).await;
    assert_eq!((event.kind, &event.service), (EventKind::Delete, &record));
    println!("goodbye seen after {:?}", start.elapsed());
    assert!(observer.get_service("bye").await.unwrap().is_empty());

    // Dropping a registry says goodbye for what it still has registered.
    let record = svc("bye", "n2", 3002);
    owner.register(&record, ttl(600)).await.unwrap();
    let event = conformance::next_event(&mut watcher).await;
    assert_eq!((event.kind, &event.service), (EventKind::Create, &record));
    drop(owner);
    let event = conformance::next_event(&mut watcher).await;
    assert_eq!((event.kind, &event.service), (EventKind::Delete, &record));
}

#[tokio::test]
async fn expired_registration_is_withdrawn() {
    init_tracing();
    let port = free_port();
    let owner = loopback(port);
    let observer = loopback(port);
    let mut watcher = observer.watch(WatchOptions::default()).await.unwrap();
    let record = svc("short", "n1", 4001);
    owner.register(&record, ttl(2)).await.unwrap();
    let event = conformance::next_event(&mut watcher).await;
    assert_eq!(event.kind, EventKind::Create);
    // No heartbeat: the owner withdraws the node when its 2 s TTL has run out (its DNS
    // records live 5 s, the minimum: the goodbye is what removes it).
    let start = Instant::now();
    let event = conformance::next_event(&mut watcher).await;
    assert_eq!((event.kind, &event.service), (EventKind::Delete, &record));
    println!("expired node gone after {:?}", start.elapsed());
}

/// The interfaces a multicast group is joined on, from the kernel's table (`/proc/net/igmp`
/// for IPv4, `/proc/net/igmp6` for IPv6).
fn group_members() -> Vec<String> {
    let mut devices = Vec::new();
    let v4 = std::fs::read_to_string("/proc/net/igmp").unwrap_or_default();
    let mut device = String::new();
    for line in v4.lines().skip(1) {
        if !line.starts_with(char::is_whitespace) {
            // "4\teth0      :     1      V3"
            device = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .trim_end_matches(':')
                .to_owned();
        } else if line.split_whitespace().next() == Some(MDNS_GROUP_V4) {
            devices.push(device.clone());
        }
    }
    let v6 = std::fs::read_to_string("/proc/net/igmp6").unwrap_or_default();
    for line in v6.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(2) == Some(&MDNS_GROUP_V6) {
            devices.push(fields[1].to_owned());
        }
    }
    devices
}

/// The loopback-only guarantee, checked two ways:
///
/// - through the registry's API: `interfaces()` lists what the engine has joined and sends
///   on (its interface table, from which every multicast send picks its `IP_MULTICAST_IF`,
///   and which filters the sources it accepts); it must be 127.0.0.1 only, also after
///   registering and browsing;
/// - through the kernel: no other interface holds a membership of the mDNS group
///   (a join is what would make the kernel send an IGMP/MLD report on it). That part is
///   skipped for an interface that held it before the test (another mDNS responder on
///   this machine, for example avahi).
///
/// Counting eth0's tx packets would not prove anything on a shared machine; what the
/// daemon can send on is decided by its interface table, which is what we read.
#[tokio::test]
async fn loopback_only_uses_loopback_only() {
    init_tracing();
    let before: Vec<String> = group_members().into_iter().filter(|d| d != "lo").collect();
    let port = free_port();
    let registry = loopback(port);
    let other = loopback(port);
    let mut watcher = other.watch(WatchOptions::default()).await.unwrap();
    registry
        .register(&svc("guard", "n1", 5001), ttl(60))
        .await
        .unwrap();
    let event = conformance::next_event(&mut watcher).await;
    assert_eq!(event.kind, EventKind::Create);

    for r in [&registry, &other] {
        let interfaces = r.interfaces().await.unwrap();
        println!("{}: {interfaces:?}", r.name());
        assert!(!interfaces.is_empty(), "no interface at all");
        for (name, addr) in &interfaces {
            assert!(
                addr.is_loopback() && addr.is_ipv4(),
                "{name} {addr} is not IPv4 loopback"
            );
        }
    }

    let after = group_members();
    assert!(
        after.iter().any(|d| d == "lo"),
        "lo holds no mDNS membership: {after:?}"
    );
    for device in after.iter().filter(|d| *d != "lo") {
        assert!(
            before.contains(device),
            "{device} joined the mDNS group during the test: {after:?}"
        );
    }
}

#[tokio::test]
async fn url_opens_a_loopback_registry() {
    init_tracing();
    micro_plugins::install();
    let port = free_port();
    let url = format!("mdns://?interface=lo&port={port}");
    let r = registry::from_url(&url).unwrap();
    assert_eq!(r.name(), url);
    r.register(&svc("url", "n1", 6001), ttl(60)).await.unwrap();
    wait_for("the node, by URL", Duration::from_secs(5), || async {
        r.get_service("url").await.unwrap().len() == 1
    })
    .await;
}

#[tokio::test]
async fn records_that_do_not_fit_are_refused() {
    let registry = loopback(free_port());
    let mut record = svc("big", "n1", 7001);
    record.nodes[0]
        .metadata
        .insert("blob".into(), "x".repeat(300));
    let err = registry.register(&record, ttl(60)).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("n.blob") && msg.contains("255"), "{msg}");
}

/// Naming `lo` selects its IPv4 address only; naming an interface without one fails.
#[tokio::test]
async fn named_interfaces() {
    init_tracing();
    let port = free_port();
    let named = MdnsRegistry::builder()
        .interfaces(["lo"])
        .port(port)
        .build()
        .unwrap();
    let interfaces = named.interfaces().await.unwrap();
    assert!(!interfaces.is_empty());
    assert!(
        interfaces
            .iter()
            .all(|(name, addr)| name == "lo" && addr.is_loopback() && addr.is_ipv4()),
        "{interfaces:?}"
    );
    let err = MdnsRegistry::builder()
        .interfaces(["no-such-interface0"])
        .port(port)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("no IPv4 address"), "{err}");
}

/// Garbage on the port (truncated, random, empty datagrams) is ignored: the registry goes
/// on announcing and resolving.
#[tokio::test]
async fn malformed_packets_are_ignored() {
    init_tracing();
    let port = free_port();
    let owner = loopback(port);
    let observer = loopback(port);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let garbage: [&[u8]; 5] = [
        b"",
        b"\x00",
        &[0xff; 12],
        // A response header claiming 5 answers, and none.
        b"\x00\x00\x84\x00\x00\x00\x00\x05\x00\x00\x00\x00",
        // A query header claiming a question whose name runs off the end.
        b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3f_micro",
    ];
    for _ in 0..20 {
        for packet in garbage {
            sender.send_to(packet, ("127.0.0.1", port)).unwrap();
        }
    }
    let mut watcher = observer.watch(WatchOptions::default()).await.unwrap();
    let record = svc("sturdy", "n1", 8001);
    owner.register(&record, ttl(60)).await.unwrap();
    let event = conformance::next_event(&mut watcher).await;
    assert_eq!((event.kind, &event.service), (EventKind::Create, &record));
}
