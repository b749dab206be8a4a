//! Registration -> watcher latency on a private etcd: how long after a node starts
//! registering a watcher learns about it.
//!
//! `cargo bench -p micro-plugins --features etcd --bench etcd`
//!
//! One node at a time (200 after 20 of warm-up, each a new node id, TTL 30 s so every
//! node shares one lease), the clock started just before the write:
//! - raw etcd-client: `put` -> the put event of a raw prefix watch (the baseline);
//! - `EtcdRegistry`: `register` -> the `Create` event of `EtcdRegistry::watch`;
//! - `CacheRegistry`: `register` -> the change of `CacheRegistry::subscribe`'s receiver
//!   (what a client channel sees).
//!
//! Also `register` alone (until etcd acknowledged the put). Prints p50 and p99 of each.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::{sync::Arc, time::Duration};

use etcd_client::{Client, EventType, GetOptions, WatchOptions as RawWatchOptions};
use futures_util::StreamExt;
use micro_core::registry::{CacheRegistry, Node, RegisterOptions, Registry, Service, WatchOptions};
use micro_plugins::etcd::EtcdRegistry;
use tokio::time::Instant;

const WARM_UP: usize = 20;
const N: usize = 200;
const TIMEOUT: Duration = Duration::from_secs(5);

fn record(service: &str, i: usize) -> Service {
    Service {
        name: service.to_owned(),
        version: "1.0.0".to_owned(),
        nodes: vec![Node {
            id: format!("{service}-{i:04}"),
            address: format!("10.0.{}.{}:50051", i / 256, i % 256),
            ..Node::default()
        }],
        ..Service::default()
    }
}

fn options() -> RegisterOptions {
    RegisterOptions {
        ttl: Duration::from_secs(30),
    }
}

/// p50 and p99 of `samples`, in microseconds.
fn quantiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    (at(0.50), at(0.99))
}

fn report(label: &str, samples: Vec<Duration>) {
    let n = samples.len();
    let (p50, p99) = quantiles(samples);
    println!("{label:<44} p50 {p50:>8.0} µs   p99 {p99:>8.0} µs   ({n} registrations)");
}

async fn raw(endpoint: &str) -> Vec<Duration> {
    let mut client = Client::connect([endpoint], None).await.unwrap();
    let prefix = "/bench/raw/";
    let mut events = client
        .watch(prefix, Some(RawWatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let lease = client.lease_grant(30, None).await.unwrap().id();
    let mut samples = Vec::with_capacity(N);
    for i in 0..WARM_UP + N {
        let key = format!("{prefix}{i:04}");
        let value = serde_json::to_string(&record("raw", i)).unwrap();
        let start = Instant::now();
        client
            .put(
                key.as_str(),
                value,
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )
            .await
            .unwrap();
        loop {
            let response = tokio::time::timeout(TIMEOUT, events.message())
                .await
                .expect("raw watch event in time")
                .unwrap()
                .expect("raw watch open");
            let seen = response.events().iter().any(|e| {
                e.event_type() == EventType::Put
                    && e.kv().is_some_and(|kv| kv.key() == key.as_bytes())
            });
            if seen {
                break;
            }
        }
        if i >= WARM_UP {
            samples.push(start.elapsed());
        }
    }
    let left = client
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap()
        .count();
    assert_eq!(usize::try_from(left).unwrap(), WARM_UP + N);
    samples
}

async fn registry(endpoint: &str) -> (Vec<Duration>, Vec<Duration>) {
    let registrant = EtcdRegistry::builder([endpoint])
        .namespace("bench")
        .build()
        .unwrap();
    let reader = EtcdRegistry::builder([endpoint])
        .namespace("bench")
        .build()
        .unwrap();
    let mut watcher = reader
        .watch(WatchOptions {
            service: Some("watched".to_owned()),
        })
        .await
        .unwrap();
    let mut seen = Vec::with_capacity(N);
    let mut acked = Vec::with_capacity(N);
    for i in 0..WARM_UP + N {
        let service = record("watched", i);
        let start = Instant::now();
        registrant.register(&service, options()).await.unwrap();
        let registered = start.elapsed();
        loop {
            let event = tokio::time::timeout(TIMEOUT, watcher.next())
                .await
                .expect("watch event in time")
                .expect("watch open")
                .unwrap();
            if event.service.nodes[0].id == service.nodes[0].id {
                break;
            }
        }
        if i >= WARM_UP {
            seen.push(start.elapsed());
            acked.push(registered);
        }
    }
    (seen, acked)
}

async fn cache(endpoint: &str) -> Vec<Duration> {
    let registrant = EtcdRegistry::builder([endpoint])
        .namespace("bench")
        .build()
        .unwrap();
    let reader = EtcdRegistry::builder([endpoint])
        .namespace("bench")
        .build()
        .unwrap();
    let cache = CacheRegistry::new(Arc::new(reader));
    let mut records = cache.subscribe("cached").await.unwrap();
    let mut samples = Vec::with_capacity(N);
    for i in 0..WARM_UP + N {
        let service = record("cached", i);
        let id = service.nodes[0].id.clone();
        let start = Instant::now();
        registrant.register(&service, options()).await.unwrap();
        loop {
            let has = records
                .borrow_and_update()
                .iter()
                .any(|s| s.nodes.iter().any(|n| n.id == id));
            if has {
                break;
            }
            tokio::time::timeout(TIMEOUT, records.changed())
                .await
                .expect("cache change in time")
                .unwrap();
        }
        if i >= WARM_UP {
            samples.push(start.elapsed());
        }
    }
    samples
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let etcd = micro_test_engines::EtcdServer::start().await;
    let endpoint = etcd.endpoint();
    println!(
        "etcd at {endpoint}; {N} registrations each, one at a time, after {WARM_UP} of warm-up"
    );
    let raw = raw(&endpoint).await;
    let (seen, acked) = registry(&endpoint).await;
    let cached = cache(&endpoint).await;
    println!();
    report("raw etcd-client put -> raw watch event", raw);
    report("EtcdRegistry register (acknowledged)", acked);
    report("EtcdRegistry register -> watch Create", seen);
    report("EtcdRegistry register -> CacheRegistry view", cached);
}
