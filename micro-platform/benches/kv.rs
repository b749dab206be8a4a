//! kv benchmark: GET/PUT of 128-byte values through the kv service against a direct Redis
//! client, same run, same private Redis. Prints rps, p50 and p99 per path, and ratios
//! against the direct client (a).
//!
//! ```text
//! cargo bench -p micro-platform --bench kv          # 2 s per measurement
//! MICRO_BENCH_SECS=5 cargo bench -p micro-platform --bench kv
//! ```
//!
//! Paths: (a) the `redis` crate's `ConnectionManager`, GET/SET; (b) `RedisStore` directly
//! (one Lua script per operation); (c) `KvClient` → gRPC on loopback → `KvService` →
//! `RedisStore`; (d) the kv service over `MemoryStore`; (e) the kv service over redb
//! `FileStore`. Each (operation, concurrency) case runs every path twice, in forward then
//! reverse order, so drift hits all alike; the figures merge both halves. The kv servers
//! run on their own single-threaded runtime, the clients on another, and redis-server is a
//! third process.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::{sync::Arc, time::Duration};

use futures_util::future::join_all;
use micro_core::{
    Service,
    registry::MemoryRegistry,
    store::{FileStore, MemoryStore, Namespace, Put, SharedStore},
};
use micro_platform::kv::{KvClient, KvService};
use micro_plugins::redis::RedisStore;
use micro_test_engines::RedisServer;
use tokio::time::Instant;

const KEYS: usize = 1_000;
const VALUE_LEN: usize = 128;

#[derive(Clone)]
enum Target {
    Direct(redis::aio::ConnectionManager),
    Store(SharedStore),
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Get,
    Put,
}

#[derive(Default)]
struct Sample {
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Target {
    async fn run(&self, op: Op, i: usize, value: &[u8]) {
        let key = format!("bench/{i:04}");
        match (self, op) {
            (Self::Direct(conn), Op::Get) => {
                let got: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn.clone())
                    .await
                    .unwrap();
                assert_eq!(got.map(|v| v.len()), Some(VALUE_LEN));
            }
            (Self::Direct(conn), Op::Put) => {
                let () = redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .query_async(&mut conn.clone())
                    .await
                    .unwrap();
            }
            (Self::Store(store), Op::Get) => {
                let record = store.get(&Namespace::default(), &key).await.unwrap();
                assert_eq!(record.map(|r| r.value.len()), Some(VALUE_LEN));
            }
            (Self::Store(store), Op::Put) => {
                store
                    .put(&Namespace::default(), Put::new(key, value.to_vec()))
                    .await
                    .unwrap();
            }
        }
    }
}

async fn measure(target: &Target, op: Op, concurrency: usize, secs: Duration) -> Sample {
    let value = vec![b'v'; VALUE_LEN];
    let start = Instant::now();
    let deadline = start + secs;
    let workers = (0..concurrency).map(|w| {
        let target = target.clone();
        let value = value.clone();
        async move {
            let mut latencies = Vec::with_capacity(16_384);
            let mut i = w * 31;
            while Instant::now() < deadline {
                let began = Instant::now();
                target.run(op, i % KEYS, &value).await;
                latencies.push(began.elapsed());
                i += 1;
            }
            latencies
        }
    });
    let latencies: Vec<Duration> = join_all(workers).await.into_iter().flatten().collect();
    Sample {
        ops: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
    }
}

impl Sample {
    fn merge(&mut self, other: Sample) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }

    fn rps(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let at = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[at]
    }
}

/// Starts a kv service over `store` on the server runtime; returns its address.
fn serve(server: &tokio::runtime::Runtime, store: SharedStore) -> String {
    server.block_on(async move {
        let running = Service::builder("micro.kv")
            .address("127.0.0.1:0")
            .registry(Arc::new(MemoryRegistry::new()))
            .add_service(KvService::new(store).into_server())
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        let address = running.local_address().to_owned();
        // Serves until the process exits.
        std::mem::forget(running);
        address
    })
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

fn main() {
    let secs = Duration::from_secs_f64(
        std::env::var("MICRO_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    );
    // The kv servers' runtime, driven by its own thread.
    let server = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = Arc::new(server);
    {
        let server = server.clone();
        std::thread::spawn(move || server.block_on(std::future::pending::<()>()));
    }
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let redis_server = client.block_on(RedisServer::start());
    let url = redis_server.url();
    let dir = tempfile::tempdir().unwrap();

    let redis_store: SharedStore = Arc::new(RedisStore::new(&url).unwrap());
    let server_redis: SharedStore = Arc::new(RedisStore::new(&url).unwrap());
    let memory: SharedStore = Arc::new(MemoryStore::new());
    let file: SharedStore = Arc::new(FileStore::open(dir.path().join("kv.redb")).unwrap());
    let over_redis = serve(&server, server_redis);
    let over_memory = serve(&server, memory);
    let over_file = serve(&server, file);

    let targets: Vec<(&str, Target)> = client.block_on(async {
        let direct = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap();
        let kv = |address: &str| -> Target {
            Target::Store(Arc::new(KvClient::connect(address).unwrap()))
        };
        vec![
            ("(a) redis direct", Target::Direct(direct)),
            ("(b) RedisStore", Target::Store(redis_store)),
            ("(c) kv → RedisStore", kv(&over_redis)),
            ("(d) kv → MemoryStore", kv(&over_memory)),
            ("(e) kv → FileStore", kv(&over_file)),
        ]
    });

    // Every key exists before the reads, and warms connections.
    client.block_on(async {
        let value = vec![b'v'; VALUE_LEN];
        for (_, target) in &targets {
            for i in 0..KEYS {
                target.run(Op::Put, i, &value).await;
            }
        }
    });

    println!(
        "kv benchmark: {VALUE_LEN}-byte values, {KEYS} keys, {:?} per path and case \
         (two halves), redis {url}",
        secs
    );
    for concurrency in [1, 32] {
        for op in [Op::Get, Op::Put] {
            let mut samples: Vec<Sample> = targets.iter().map(|_| Sample::default()).collect();
            for round in 0..2 {
                let order: Vec<usize> = if round == 0 {
                    (0..targets.len()).collect()
                } else {
                    (0..targets.len()).rev().collect()
                };
                for at in order {
                    let sample =
                        client.block_on(measure(&targets[at].1, op, concurrency, secs / 2));
                    samples[at].merge(sample);
                }
            }
            let name = if op == Op::Get { "get" } else { "put" };
            println!();
            println!("### {name}, concurrency {concurrency}");
            println!();
            println!("| path | rps | p50 | p99 | rps ratio | p50 ratio | p99 ratio |");
            println!("|---|---:|---:|---:|---:|---:|---:|");
            let base_rps = samples[0].rps();
            let base_p50 = samples[0].percentile(0.50);
            let base_p99 = samples[0].percentile(0.99);
            for (at, sample) in samples.iter_mut().enumerate() {
                let (rps, p50, p99) = (
                    sample.rps(),
                    sample.percentile(0.5),
                    sample.percentile(0.99),
                );
                println!(
                    "| {} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} |",
                    targets[at].0,
                    rps,
                    fmt(p50),
                    fmt(p99),
                    rps / base_rps,
                    p50.as_secs_f64() / base_p50.as_secs_f64(),
                    p99.as_secs_f64() / base_p99.as_secs_f64(),
                );
            }
        }
    }
    drop(redis_server);
}
