//! Memory under concurrent large messages: rounds of N concurrent kv `Put`s of a 3.9 MiB
//! value (just under tonic's 4 MiB message limit) to a real `micro server` process (the kv
//! service decodes each and answers INVALID_ARGUMENT, its values being at most 512 KiB: the
//! memory is the server's buffering and decoding), once with
//! the large-message budget off (`MICRO_MESSAGE_BUDGET=off`, the baseline: every message
//! buffered at once) and once with the default budget (64 MiB), in the same run. Prints the
//! server's peak RSS (`VmHWM`), its RSS after each round, and how many puts reached the
//! handler or were refused by the budget (RESOURCE_EXHAUSTED).
//!
//! ```text
//! cargo bench -p micro-cli --bench large_messages
//! MICRO_BENCH_CALLS=100 MICRO_BENCH_CONNS=4 MICRO_BENCH_ROUNDS=3 cargo bench -p micro-cli --bench large_messages
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use micro::platform::proto::kv::v1::{self as kv, kv_client::KvClient};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::{Code, transport::Channel};

/// 3.9 MiB: a put's message stays under tonic's 4 MiB default limit.
const VALUE_BYTES: usize = 3_900 * 1024;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// `micro server` on a free port with a private registry and data directory: the child, its
/// address, its pid.
async fn start_server(dir: &std::path::Path, budget: &str) -> (Child, String, i32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_micro"))
        .args(["server", "--address", "127.0.0.1:0", "--api-address", "off"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--registry")
        .arg(format!("local://{}", dir.join("registry").display()))
        .env("MICRO_MESSAGE_BUDGET", budget)
        .env("RUST_LOG", "warn")
        .env_remove("MICRO_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start micro server");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("a ready line");
            if let Some(rest) = line.strip_prefix("ready addr=") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        }
    })
    .await
    .expect("ready within 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    (child, addr, pid)
}

/// `VmHWM` (peak) and `VmRSS` of `pid`, in MB.
fn memory(pid: i32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb * 1024.0 / 1e6)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

struct Round {
    /// Decoded and answered by the kv service (OK, or INVALID_ARGUMENT for the value's size).
    handled: usize,
    refused: usize,
    other: usize,
    elapsed: Duration,
}

/// `calls` concurrent puts spread over `channels`.
async fn round(channels: &[Channel], calls: usize, round: usize) -> Round {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(calls);
    for i in 0..calls {
        let mut client = KvClient::new(channels[i % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            client
                .put(kv::PutRequest {
                    namespace: Some(kv::Namespace {
                        database: "bench".to_owned(),
                        table: "large".to_owned(),
                    }),
                    write: Some(kv::Write {
                        key: format!("key-{round}-{i}"),
                        value: vec![u8::try_from(i % 251).unwrap(); VALUE_BYTES],
                        ..Default::default()
                    }),
                })
                .await
        }));
    }
    let mut result = Round {
        handled: 0,
        refused: 0,
        other: 0,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => result.handled += 1,
            Err(status) if status.code() == Code::InvalidArgument => result.handled += 1,
            Err(status) if status.code() == Code::ResourceExhausted => result.refused += 1,
            Err(status) => {
                if result.other == 0 {
                    println!("  failed: {status:?}");
                }
                result.other += 1;
            }
        }
    }
    result.elapsed = started.elapsed();
    result
}

async fn run(name: &str, budget: &str, calls: usize, conns: usize, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, pid) = start_server(dir.path(), budget).await;
    let mut channels = Vec::new();
    for _ in 0..conns {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let (_, idle) = memory(pid);
    println!("{name}: MICRO_MESSAGE_BUDGET={budget}, idle RSS {idle:.0} MB");
    for i in 0..rounds {
        let result = round(&channels, calls, i).await;
        let (peak, rss) = memory(pid);
        println!(
            "  round {}: {} handled, {} refused, {} other in {:.1} s; peak RSS {peak:.0} MB, RSS after {rss:.0} MB",
            i + 1,
            result.handled,
            result.refused,
            result.other,
            result.elapsed.as_secs_f64()
        );
    }
    child.kill().await.unwrap();
}

fn main() {
    let calls = env_number("MICRO_BENCH_CALLS", 100);
    let conns = env_number("MICRO_BENCH_CONNS", 1).max(1);
    let rounds = env_number("MICRO_BENCH_ROUNDS", 3).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "{calls} concurrent puts of {:.1} MiB over {conns} connection(s), {rounds} rounds",
            VALUE_BYTES as f64 / 1024.0 / 1024.0
        );
        run("baseline (no budget)", "off", calls, conns, rounds).await;
        run("budget (default)", "64M", calls, conns, rounds).await;
    });
}
