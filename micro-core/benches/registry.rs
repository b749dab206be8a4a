//! Registry lookups served by `CacheRegistry` for a warm service: no backend involved.
//!
//! `cargo bench -p micro-core --bench registry`
//!
//! - `get_service/<n>_nodes`: `Registry::get_service` on the cache, which returns an owned
//!   copy of the records (one version, `n` nodes with two metadata entries each, one
//!   endpoint);
//! - `subscribe_borrow/<n>_nodes`: `CacheRegistry::subscribe` and a borrow of the current
//!   records, the path a client channel takes (no copy).
//!
//! Each iteration is one awaited lookup on a current-thread runtime; the timing loop runs
//! inside the runtime, so it measures the lookup and not `block_on`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{collections::BTreeMap, hint::black_box, sync::Arc, time::Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use micro_core::registry::{
    CacheRegistry, Endpoint, MemoryRegistry, Node, RegisterOptions, Registry, Service,
};

fn record(nodes: usize) -> Service {
    Service {
        name: "greeter".to_owned(),
        version: "1.0.0".to_owned(),
        metadata: BTreeMap::new(),
        endpoints: vec![Endpoint {
            name: "greeter.v1.Greeter.SayHello".to_owned(),
            request: "greeter.v1.HelloRequest".to_owned(),
            response: "greeter.v1.HelloReply".to_owned(),
            metadata: BTreeMap::new(),
        }],
        nodes: (0..nodes)
            .map(|i| Node {
                id: format!("greeter-{i:04}"),
                address: format!("10.0.{}.{}:50051", i / 256, i % 256),
                metadata: BTreeMap::from([
                    ("zone".to_owned(), format!("z{}", i % 3)),
                    ("weight".to_owned(), "100".to_owned()),
                ]),
            })
            .collect(),
    }
}

fn lookups(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut get = c.benchmark_group("get_service");
    let mut caches = Vec::new();
    for nodes in [1, 3, 30] {
        let cache = runtime.block_on(async {
            let backend = MemoryRegistry::new();
            backend
                .register(&record(nodes), RegisterOptions::default())
                .await
                .unwrap();
            let cache = CacheRegistry::new(Arc::new(backend));
            // Warm: the first lookup reads the backend and starts the watch.
            assert_eq!(
                cache.get_service("greeter").await.unwrap()[0].nodes.len(),
                nodes
            );
            cache
        });
        get.bench_with_input(
            BenchmarkId::from_parameter(format!("{nodes}_nodes")),
            &cache,
            |b, cache| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            black_box(cache.get_service(black_box("greeter")).await.unwrap());
                        }
                        start.elapsed()
                    })
                })
            },
        );
        caches.push((nodes, cache));
    }
    get.finish();

    let mut subscribe = c.benchmark_group("subscribe_borrow");
    for (nodes, cache) in &caches {
        subscribe.bench_with_input(
            BenchmarkId::from_parameter(format!("{nodes}_nodes")),
            cache,
            |b, cache| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let records = cache.subscribe(black_box("greeter")).await.unwrap();
                            black_box(records.borrow()[0].nodes.len());
                        }
                        start.elapsed()
                    })
                })
            },
        );
    }
    subscribe.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
