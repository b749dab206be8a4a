//! Connection pressure on `micro server` (issue 12, section 3), the real binary as a child
//! process. Not run by CI.
//!
//! 1. Latency under a flood: `micro server` under `ulimit -n 1024`; valid calls, one at a
//!    time on each of two callers side by side for a few seconds, first alone (baseline),
//!    then while 1,100 connections to each port send nothing: opened once (the issue's
//!    test), reopened 1 s after the server closes each, or reopened at once. The two
//!    callers: a kv Get on one long-lived gRPC client (`KvClient`), and a kv Get through
//!    the gateway on a new TCP connection each time (so every call goes through the accept
//!    loop). Prints p50/p99 of both phases and the p99 ratio (goal ≤ 2). The flood runs in
//!    this process, on the same cores as the server.
//! 2. Memory after churn: `micro server` (no file limit); its RSS after warm-up and 11 s
//!    idle (baseline), then 1.5 s after each of 15 cycles of 1,000 HTTP/2 connections
//!    opened (preface and SETTINGS exchanged), held idle, and closed, and once more 11 s
//!    after the last (the allocator's decay time). Prints RSS per cycle and the
//!    settled/baseline ratio (goal ≤ 1.2).
//!
//! ```text
//! cargo bench -p micro-cli --bench conn                  # 5 s per latency phase
//! MICRO_BENCH_SECS=10 cargo bench -p micro-cli --bench conn
//! MICRO_BENCH_ONLY=latency|rss cargo bench -p micro-cli --bench conn
//! MICRO_BENCH_MICRO=/path/to/other/micro cargo bench -p micro-cli --bench conn
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::{
    path::Path,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use micro::{
    platform::kv::KvClient,
    store::{Namespace, Put, Store},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
    time::Instant,
};

/// Silent connections per port during the flood.
const SILENT: usize = 1_100;
/// Connections per churn cycle, and cycles.
const CHURN: usize = 1_000;
const CYCLES: usize = 15;
/// How long one call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

struct Server {
    child: Child,
    grpc: String,
    api: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `micro server` (under `ulimit -n <nofile>` when given) and waits for its
    /// ready line.
    async fn start(nofile: Option<u64>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // MICRO_BENCH_MICRO: another build of the binary to compare (e.g. one with glibc's
        // allocator), in the same run.
        let bin = std::env::var("MICRO_BENCH_MICRO")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_micro").to_owned());
        let data = dir.path().join("data").display().to_string();
        let registry = format!("local://{}", dir.path().join("registry").display());
        let args = [
            "server",
            "--address",
            "127.0.0.1:0",
            "--api-address",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--registry",
            &registry,
        ];
        let mut command = match nofile {
            None => Command::new(&bin),
            Some(limit) => {
                let mut command = Command::new("/bin/sh");
                command
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(&bin);
                command
            }
        };
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("MICRO_STORE")
            .env_remove("MICRO_AUTH_ADMIN_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut api = String::new();
        let grpc = loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .expect("micro server ready in time")
                .unwrap()
                .expect("micro server output");
            if let Some(rest) = line.strip_prefix("api addr=") {
                api = rest.split_whitespace().next().unwrap().to_owned();
            }
            if let Some(rest) = line.strip_prefix("ready addr=") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Drain the rest of its output.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            grpc,
            api,
            _dir: dir,
        }
    }

    fn open_files(&self) -> usize {
        let pid = self.child.id().unwrap();
        std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
    }

    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap()
    }
}

#[derive(Debug, Default)]
struct Latencies {
    ok: Vec<Duration>,
    failed: u64,
}

impl Latencies {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.ok.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index]
    }
}

/// kv Gets on one long-lived client, one at a time, for `secs`.
async fn grpc_calls(kv: &KvClient, ns: &Namespace, secs: Duration) -> Latencies {
    let mut latencies = Latencies::default();
    let end = Instant::now() + secs;
    while Instant::now() < end {
        let started = Instant::now();
        match tokio::time::timeout(CALL_TIMEOUT, kv.get(ns, "key")).await {
            Ok(Ok(Some(_))) => latencies.ok.push(started.elapsed()),
            _ => latencies.failed += 1,
        }
    }
    latencies
}

/// kv Gets through the gateway, each on a new connection, one at a time, for `secs`.
async fn gateway_calls(api: &str, secs: Duration) -> Latencies {
    let body = r#"{"namespace":{"database":"bench","table":"conn"},"key":"key"}"#;
    let mut latencies = Latencies::default();
    let end = Instant::now() + secs;
    while Instant::now() < end {
        let started = Instant::now();
        let call = async {
            let tcp = TcpStream::connect(api).await.ok()?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .ok()?;
            tokio::spawn(connection);
            let request = http::Request::post(format!("http://{api}/micro.kv/Kv/Get"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            let response = sender.send_request(request).await.ok()?;
            let ok = response.status().is_success();
            response.into_body().collect().await.ok()?;
            ok.then_some(())
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Some(())) => latencies.ok.push(started.elapsed()),
            _ => latencies.failed += 1,
        }
    }
    latencies
}

/// Opens `count` connections to `addr` that send nothing; each is reopened `reopen` after
/// the server closed it (never, with `None`), until `stop` turns true. Counts the closes
/// seen.
fn flood(
    addr: &str,
    count: usize,
    reopen: Option<Duration>,
    stop: &tokio::sync::watch::Receiver<bool>,
    closed: &Arc<AtomicU64>,
) {
    for _ in 0..count {
        let (addr, mut stop, closed) = (addr.to_owned(), stop.clone(), closed.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 16];
            loop {
                let Ok(mut stream) = TcpStream::connect(&addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                // Until the server closes it (or the flood stops).
                loop {
                    tokio::select! {
                        read = stream.read(&mut buf) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        },
                        _ = stop.wait_for(|stop| *stop) => return,
                    }
                }
                closed.fetch_add(1, Ordering::Relaxed);
                match reopen {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => return,
                }
            }
        });
    }
}

fn row(name: &str, base: &Latencies, flood: &Latencies) {
    let (b50, b99) = (base.percentile(0.5), base.percentile(0.99));
    let (f50, f99) = (flood.percentile(0.5), flood.percentile(0.99));
    println!(
        "| {name} | {b50:.1?} | {b99:.1?} | {} ok, {} failed | {f50:.1?} | {f99:.1?} | {:.2} |",
        flood.ok.len(),
        flood.failed,
        f99.as_secs_f64() / b99.as_secs_f64().max(f64::MIN_POSITIVE),
    );
}

/// Both kinds of call side by side, one at a time each, for `secs`.
async fn both(kv: &KvClient, ns: &Namespace, api: &str, secs: Duration) -> (Latencies, Latencies) {
    tokio::join!(grpc_calls(kv, ns, secs), gateway_calls(api, secs))
}

async fn latency_under_flood(secs: Duration) {
    println!(
        "\n### Latency: one gRPC caller and one gateway caller side by side, {secs:?} per phase; flood: {SILENT} connections per port that send nothing\n"
    );
    println!(
        "| call | baseline p50 | baseline p99 | under flood | flood p50 | flood p99 | p99 ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (mode, reopen) in [
        ("held (opened once)", None),
        (
            "reopened 1 s after each close",
            Some(Duration::from_secs(1)),
        ),
        ("reopened at once", Some(Duration::ZERO)),
    ] {
        let server = Server::start(Some(1024)).await;
        let ns = Namespace::new("bench", "conn").unwrap();
        let kv = KvClient::connect(&server.grpc).unwrap();
        kv.put(&ns, Put::new("key", "value")).await.unwrap();
        // Warm up both paths (schemas, connections).
        both(&kv, &ns, &server.api, Duration::from_millis(500)).await;
        let (base_grpc, base_api) = both(&kv, &ns, &server.api, secs).await;

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let closed = Arc::new(AtomicU64::new(0));
        let opened = Instant::now();
        flood(&server.grpc, SILENT, reopen, &stopped, &closed);
        flood(&server.api, SILENT, reopen, &stopped, &closed);
        // The flood's first connections are accepted (or queued) by now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (flood_grpc, flood_api) = both(&kv, &ns, &server.api, secs).await;
        let _ = stop.send(true);
        println!(
            "| **{mode}**: {} closes by the server in {:.1?} | | | | | | |",
            closed.load(Ordering::Relaxed),
            opened.elapsed()
        );
        row(
            "gRPC kv Get, one long-lived client",
            &base_grpc,
            &flood_grpc,
        );
        row(
            "gateway kv Get, a new connection each",
            &base_api,
            &flood_api,
        );
    }
}

/// Longer than jemalloc's default dirty-page decay (10 s).
const SETTLE: Duration = Duration::from_secs(11);

async fn rss_after_churn() {
    let server = Server::start(None).await;
    let ns = Namespace::new("bench", "conn").unwrap();
    let kv = KvClient::connect(&server.grpc).unwrap();
    kv.put(&ns, Put::new("key", "value")).await.unwrap();
    grpc_calls(&kv, &ns, Duration::from_millis(500)).await;
    gateway_calls(&server.api, Duration::from_millis(500)).await;
    // The allocator's decay time (jemalloc's 10 s) passes before the baseline is taken, and
    // again after the last cycle, so both figures are of a settled process.
    tokio::time::sleep(SETTLE).await;
    let baseline = server.rss_kib();
    println!("\n### RSS of micro server, {CYCLES} cycles of {CHURN} idle HTTP/2 connections\n");
    println!("| after | RSS (MiB) | ratio to baseline | open files |");
    println!("|---|---:|---:|---:|");
    println!(
        "| warm-up (baseline) | {:.1} | 1.00 | {} |",
        baseline as f64 / 1024.0,
        server.open_files()
    );
    let mut open_peak = 0;
    for cycle in 1..=CYCLES {
        let mut senders = Vec::with_capacity(CHURN);
        for _ in 0..CHURN {
            let tcp = TcpStream::connect(&server.grpc).await.unwrap();
            let (sender, connection) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
                TokioExecutor::new(),
                TokioIo::new(tcp),
            )
            .await
            .unwrap();
            let task = tokio::spawn(connection);
            senders.push((sender, task));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        open_peak = open_peak.max(server.rss_kib());
        for (sender, task) in senders {
            drop(sender);
            task.abort();
        }
        // Let the server see the closes.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let rss = server.rss_kib();
        if cycle == 1 || cycle % 5 == 0 {
            println!(
                "| cycle {cycle} | {:.1} | {:.2} | {} |",
                rss as f64 / 1024.0,
                rss as f64 / baseline as f64,
                server.open_files()
            );
        }
    }
    tokio::time::sleep(SETTLE - Duration::from_millis(1500)).await;
    let rss = server.rss_kib();
    println!(
        "| cycle {CYCLES} + {SETTLE:?} idle | {:.1} | {:.2} | {} |",
        rss as f64 / 1024.0,
        rss as f64 / baseline as f64,
        server.open_files()
    );
    println!(
        "\nPeak with {CHURN} connections open: {:.1} MiB ({:.1} KiB per connection over baseline).",
        open_peak as f64 / 1024.0,
        (open_peak.saturating_sub(baseline)) as f64 / CHURN as f64
    );
}

fn main() {
    // This process holds 2,200 sockets.
    micro::transport::raise_nofile_limit().unwrap();
    let secs = std::env::var("MICRO_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_secs);
    assert!(
        Path::new(env!("CARGO_BIN_EXE_micro")).exists(),
        "build the micro binary first"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("MICRO_BENCH_ONLY").unwrap_or_default();
    runtime.block_on(async {
        if only != "rss" {
            latency_under_flood(secs).await;
        }
        if only != "latency" {
            rss_after_churn().await;
        }
    });
}
