//! Load benchmark: SayHello through micro's Channel vs a raw tonic Channel, same server,
//! same run, at 1 and 64 concurrent calls. Prints rps, p50/p99 latency and CPU time per call
//! (client and server threads, from /proc schedstat) for both, and the micro/raw ratios; the
//! "cpu ratio" is raw CPU per call / micro CPU per call, the throughput ratio the machine
//! would give with both cores to itself.
//!
//! Two set-ups, each measured against raw tonic to the same server in the same run:
//! - **process** (what users run): the greeter is a separate process (this binary started
//!   again), registered in a `local` registry (a private directory); micro's client finds it
//!   there by name, every default layer on.
//! - **memory**: server and client in one process on a memory registry (the shortcut the
//!   benchmark used before; kept for comparison).
//!
//! ```text
//! cargo bench --bench load                           # both, 5 s per measurement
//! MICRO_BENCH_SECS=10 cargo bench --bench load
//! MICRO_BENCH_SETUP=process cargo bench --bench load # one of them
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
use measure::{average, count_threads, measure, this_thread};
use pb::{HelloRequest, greeter_client::GreeterClient};

/// Set in the server process: the registry URL to register the greeter in.
const SERVER_ENV: &str = "MICRO_BENCH_SERVE";

fn main() {
    if let Ok(url) = std::env::var(SERVER_ENV) {
        serve_process(&url);
        return;
    }
    let secs: u64 = std::env::var("MICRO_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(secs);
    let setup = std::env::var("MICRO_BENCH_SETUP").unwrap_or_default();

    if setup.is_empty() || setup == "process" {
        // The greeter in its own process, found through a `local` registry.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("local://{}", dir.path().join("registry").display());
        let mut server = std::process::Command::new(std::env::current_exe().unwrap())
            .env(SERVER_ENV, &url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(server.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        let field = |key: &str| {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in the server's line {ready:?}"))
                .to_owned()
        };
        let address = field("addr=");
        let server_thread = (
            field("pid=").parse().unwrap(),
            field("tid=").parse().unwrap(),
        );
        let registry = micro::registry::from_url(&url).unwrap();
        println!("== process: greeter in another process, found in the local registry ({url})");
        run(&address, registry, server_thread, duration);
        // The server ends when its stdin closes.
        drop(server.stdin.take());
        let _ = server.wait();
    }
    if setup.is_empty() || setup == "memory" {
        let registry: micro::registry::SharedRegistry = Arc::new(MemoryRegistry::new());
        let (addresses, server_tid) =
            greeter::serve_on_thread(registry.clone(), vec![("greeter", None)]);
        println!("== memory: greeter on another thread of this process, memory registry");
        run(
            &addresses[0],
            registry,
            (this_thread().0, server_tid),
            duration,
        );
    }
}

/// The server process: a greeter with micro's defaults, registered at `url`, on a
/// single-threaded runtime; prints `ready addr=… pid=… tid=…` and serves until stdin closes.
fn serve_process(url: &str) {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let service = micro::Service::builder("greeter")
            .registry(micro::registry::from_url(url).unwrap())
            .add_service(pb::greeter_server::GreeterServer::new(greeter::Hello))
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        let (pid, tid) = this_thread();
        println!("ready addr={} pid={pid} tid={tid}", service.local_address());
        std::future::pending::<()>().await;
    });
}

/// Measures raw tonic and micro's client against the greeter at `address`, found by micro
/// through `registry`; `server_thread` is the server's runtime thread.
fn run(
    address: &str,
    registry: micro::registry::SharedRegistry,
    server_thread: (i32, i32),
    duration: Duration,
) {
    let secs = duration.as_secs();
    let address = address.to_owned();
    count_threads([this_thread(), server_thread]);
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
            "SayHello, {secs} s per measurement; micro = default client stack (trace, metrics, retry, P2C peak-EWMA)"
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
        // For profiling one path alone: MICRO_BENCH_ONLY=micro (or raw) runs just that one,
        // at MICRO_BENCH_CONCURRENCY calls in flight (64).
        if let Ok(only) = std::env::var("MICRO_BENCH_ONLY") {
            let concurrency = std::env::var("MICRO_BENCH_CONCURRENCY")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(64);
            let figures = if only == "raw" {
                measure(raw.clone(), concurrency, duration).await
            } else {
                measure(micro.clone(), concurrency, duration).await
            };
            println!(
                "{only} at {concurrency}: {:.0} rps, p50 {:?}",
                figures.rps, figures.p50
            );
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
