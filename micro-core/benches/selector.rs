//! One pick over 1,000 candidates: `select`, then the first two nodes (a call and its retry).
//!
//! `cargo bench -p micro-core --bench selector`

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use micro_core::{
    node::NodeHandle,
    registry::Node,
    selector::{CallInfo, Candidates, ConsistentHash, PeakEwma, Random, RoundRobin, Selector},
};

const NODES: usize = 1_000;

fn nodes() -> Vec<Arc<NodeHandle>> {
    (0..NODES)
        .map(|i| {
            let handle = NodeHandle::new(
                Node {
                    id: format!("greeter-{i:04}"),
                    address: format!("10.0.{}.{}:50051", i / 256, i % 256),
                    ..Node::default()
                },
                "1.0.0",
            );
            // Varied loads, so the comparisons are real.
            handle
                .load()
                .end(Some(Duration::from_micros(500 + (i as u64 * 7919) % 5_000)));
            for _ in 0..i % 3 {
                handle.load().begin();
            }
            Arc::new(handle)
        })
        .collect()
}

fn pick(selector: &dyn Selector, candidates: &Candidates<'_>, call: &CallInfo<'_>) -> usize {
    let mut picks = selector.select(candidates, call);
    let first = picks.next().unwrap_or(0);
    let second = picks.next().unwrap_or(0);
    first ^ second
}

fn selectors(c: &mut Criterion) {
    let nodes = nodes();
    let candidates = Candidates::new(&nodes, 1);
    let call = CallInfo {
        path: "/greeter.Greeter/SayHello",
        key: None,
    };
    let mut group = c.benchmark_group("pick_of_1000");

    let round_robin = RoundRobin::new();
    group.bench_function("round_robin", |b| {
        b.iter(|| pick(&round_robin, black_box(&candidates), &call))
    });
    group.bench_function("random", |b| {
        b.iter(|| pick(&Random, black_box(&candidates), &call))
    });
    group.bench_function("peak_ewma", |b| {
        b.iter(|| pick(&PeakEwma::new(), black_box(&candidates), &call))
    });

    let hash = ConsistentHash::new();
    let keys: Vec<String> = (0..1024).map(|i| format!("user-{i}")).collect();
    // Builds the ring, outside the measurement.
    pick(
        &hash,
        &candidates,
        &CallInfo {
            key: Some("warm-up"),
            ..call
        },
    );
    let mut next = 0;
    group.bench_function("consistent_hash", |b| {
        b.iter(|| {
            next = (next + 1) % keys.len();
            let call = CallInfo {
                key: Some(&keys[next]),
                ..call
            };
            pick(&hash, black_box(&candidates), &call)
        })
    });
    group.finish();

    // What the first keyed call after a change of nodes pays.
    c.bench_function("ring_build_1000x160", |b| {
        let mut generation = 1;
        b.iter(|| {
            generation += 1;
            let selector = ConsistentHash::new();
            let candidates = Candidates::new(&nodes, generation);
            pick(
                &selector,
                &candidates,
                &CallInfo {
                    key: Some("k"),
                    ..call
                },
            )
        })
    });
}

criterion_group!(benches, selectors);
criterion_main!(benches);
