//! Load benchmark: SayHello through micro's Channel vs a raw tonic Channel, same server,
//! same run, at 1 and 64 concurrent calls. Prints rps, p50/p99 latency and CPU time per call
//! (client and server threads, from /proc schedstat) for both, and the micro/raw ratios; the
//! "cpu ratio" is raw CPU per call / micro CPU per call, the throughput ratio the machine
//! would give with both cores to itself.
//!
//! ```text
//! cargo bench --bench load                   # 5 s per measurement
//! MICRO_BENCH_SECS=10 cargo bench --bench load
//! ```
//!
//! The server runs on its own single-threaded runtime, the clients on another, so the two
//! sides do not steal each other's core on a 2-core machine.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::{sync::Arc, time::Duration};

use micro::{Client, registry::MemoryRegistry};

#[path = "support/greeter.rs"]
mod greeter;
#[path = "support/measure.rs"]
mod measure;

use greeter::pb;
use measure::{THREADS, average, measure};
use pb::{HelloRequest, greeter_client::GreeterClient};

fn main() {
    let secs: u64 = std::env::var("MICRO_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(secs);

    let registry: micro::registry::SharedRegistry = Arc::new(MemoryRegistry::new());
    let (addresses, server_tid) =
        greeter::serve_on_thread(registry.clone(), vec![("greeter", None)]);
    let address = addresses[0].clone();
    THREADS
        .set([nix::unistd::gettid().as_raw(), server_tid])
        .unwrap();

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async move {
        let raw_channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap();
        let raw = GreeterClient::new(raw_channel);
        let mut builder = Client::builder().registry(registry);
        if std::env::var("MICRO_BENCH_BARE").is_ok() {
            builder = builder.default_layers(false);
        }
        if std::env::var("MICRO_BENCH_NOBUF").is_ok() {
            builder = builder.buffer_limit(0);
        }
        let micro_client = builder.build().unwrap();
        let micro = GreeterClient::new(micro_client.channel("greeter"));

        // For instruction counts (valgrind --tool=callgrind): MICRO_BENCH_ONLY=micro|raw with
        // MICRO_BENCH_CALLS=N makes exactly N calls at 64 concurrent, after 1,000 warm-up
        // calls on that path only.
        if let (Ok(only), Some(calls)) = (
            std::env::var("MICRO_BENCH_ONLY"),
            std::env::var("MICRO_BENCH_CALLS")
                .ok()
                .and_then(|n| n.parse::<usize>().ok()),
        ) {
            if only == "raw" {
                count(raw.clone(), 1_000).await;
                count(raw, calls).await;
            } else {
                count(micro.clone(), 1_000).await;
                count(micro, calls).await;
            }
            println!("{only}: {calls} calls");
            return;
        }

        // Warm both paths up: connections, allocator, caches.
        measure(raw.clone(), 8, Duration::from_millis(500)).await;
        measure(micro.clone(), 8, Duration::from_millis(500)).await;

        println!(
            "SayHello, {secs} s per measurement, server on 127.0.0.1 (other thread); micro = default client stack (trace, metrics, retry, P2C peak-EWMA)"
        );
        println!(
            "{:>11} | {:>10} {:>9} {:>9} {:>9} | {:>10} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9}",
            "concurrency",
            "raw rps",
            "raw p50",
            "raw p99",
            "raw cpu",
            "micro rps",
            "micro p50",
            "micro p99",
            "micro cpu",
            "rps ratio",
            "p50 ratio",
            "p99 ratio",
            "cpu ratio"
        );
        // For profiling one path alone: MICRO_BENCH_ONLY=micro (or raw) runs just that one.
        if let Ok(only) = std::env::var("MICRO_BENCH_ONLY") {
            let figures = if only == "raw" {
                measure(raw.clone(), 64, duration).await
            } else {
                measure(micro.clone(), 64, duration).await
            };
            println!("{only} at 64: {:.0} rps, p50 {:?}", figures.rps, figures.p50);
            return;
        }
        for concurrency in [1, 64] {
            // Alternate the two paths so drift in the machine's load hits both alike.
            let raw_a = measure(raw.clone(), concurrency, duration / 2).await;
            let micro_a = measure(micro.clone(), concurrency, duration / 2).await;
            let micro_b = measure(micro.clone(), concurrency, duration / 2).await;
            let raw_b = measure(raw.clone(), concurrency, duration / 2).await;
            let raw = average(raw_a, raw_b);
            let micro = average(micro_a, micro_b);
            println!(
                "{:>11} | {:>10.0} {:>9.1?} {:>9.1?} {:>9.1?} | {:>10.0} {:>9.1?} {:>9.1?} {:>9.1?} | {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                concurrency,
                raw.rps,
                raw.p50,
                raw.p99,
                raw.cpu_per_call,
                micro.rps,
                micro.p50,
                micro.p99,
                micro.cpu_per_call,
                micro.rps / raw.rps,
                micro.p50.as_secs_f64() / raw.p50.as_secs_f64(),
                micro.p99.as_secs_f64() / raw.p99.as_secs_f64(),
                raw.cpu_per_call.as_secs_f64() / micro.cpu_per_call.as_secs_f64(),
            );
        }
    });
}

/// Exactly `calls` SayHello calls, 64 at a time.
async fn count<T>(client: GreeterClient<T>, calls: usize)
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    T::Future: Send,
{
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(calls));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut client = client.clone();
        let left = Arc::clone(&left);
        tasks.push(tokio::spawn(async move {
            while left
                .fetch_update(
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                    |n| n.checked_sub(1),
                )
                .is_ok()
            {
                let request = HelloRequest {
                    name: "bench".into(),
                    delay_ms: 0,
                };
                client.say_hello(request).await.expect("call");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}
