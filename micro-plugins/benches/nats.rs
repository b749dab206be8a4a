//! Publish -> receive through `NatsBroker` against a raw async-nats client, in the same run
//! and against the same private nats-server.
//!
//! `cargo bench -p micro-plugins --features nats --bench nats`
//!
//! - throughput: N messages of 128 bytes published one after the other as fast as each
//!   publisher allows (the per-publish round trip mode, which would wait a round trip per
//!   message, with 256 publishes in flight), one subscriber on its own connection (raw
//!   async-nats for raw, subject formatted once, `NatsBroker` for the broker: publish -> receive through micro on
//!   both sides); messages/s received, from the first publish to the last receive. Both
//!   publishers use the same client capacity (1024 commands). `MICRO_BENCH_SUB=raw` uses
//!   the raw subscriber for every publisher (the publishing side alone);
//!   `MICRO_BENCH_ROUNDS` sets the rounds (default 3).
//! - instruction counts (`valgrind --tool=callgrind`): `MICRO_BENCH_ONLY=raw|default|buffered|server`
//!   with `MICRO_BENCH_MSGS=n` runs one throughput round of exactly `n` messages on that path
//!   alone (after 1,000 warm-up messages on the same connections) and exits; the difference
//!   between two runs with different `n`, divided by the difference of `n`, is the cost per
//!   message without the set-up.
//! - latency: an open-loop rate (20 messages every 1 ms = 20,000/s) for 2 s; publish ->
//!   receive p50/p99 from a timestamp in the body.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;
use micro_core::broker::{Broker, Message, SubscribeOptions};
use micro_plugins::nats::{NatsBroker, PublishConfirm};
use tokio::time::Instant;

const N: usize = 200_000;
const SIZE: usize = 128;
const CLIENT_CAPACITY: usize = 1024;
const SUB_CAPACITY: usize = 65_536;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Raw,
    Micro(PublishConfirm),
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Raw => "raw async-nats",
            Kind::Micro(PublishConfirm::Resend) => "NatsBroker (default)",
            Kind::Micro(PublishConfirm::Server) => "NatsBroker (per-publish)",
            Kind::Micro(PublishConfirm::Buffered) => "NatsBroker (buffered)",
        }
    }
}

struct Publisher {
    kind: Kind,
    raw: async_nats::Client,
    micro: Option<NatsBroker>,
}

impl Publisher {
    async fn new(kind: Kind, url: &str) -> Self {
        let raw = async_nats::ConnectOptions::new()
            .client_capacity(CLIENT_CAPACITY)
            .connect(url)
            .await
            .unwrap();
        let micro = match kind {
            Kind::Raw => None,
            Kind::Micro(confirm) => Some(
                NatsBroker::builder(url)
                    .client_capacity(CLIENT_CAPACITY)
                    .confirm(confirm)
                    .connect()
                    .await
                    .unwrap(),
            ),
        };
        Self { kind, raw, micro }
    }

    async fn publish(&self, topic: &str, subject: &async_nats::Subject, body: Bytes) {
        match &self.micro {
            None => self.raw.publish(subject.clone(), body).await.unwrap(),
            Some(broker) => broker
                .publish(
                    topic,
                    Message {
                        headers: Default::default(),
                        body,
                    },
                )
                .await
                .unwrap(),
        }
    }

    async fn flush(&self) {
        match &self.micro {
            None => self.raw.flush().await.unwrap(),
            Some(broker) => {
                broker.client().flush().await.unwrap();
                broker.flush().await.unwrap();
            }
        }
    }
}

/// A subscriber that counts messages and records latencies; raw or micro as `kind`.
async fn subscriber(
    kind: Kind,
    url: &str,
    topic: &str,
    expect: usize,
    base: Instant,
) -> tokio::task::JoinHandle<(usize, Option<Instant>, Vec<u64>)> {
    let mut latencies = Vec::with_capacity(expect);
    let raw_sub = kind == Kind::Raw || std::env::var("MICRO_BENCH_SUB").is_ok_and(|v| v == "raw");
    let mut stream: futures_util::stream::BoxStream<'static, Bytes> = match kind {
        _ if raw_sub => {
            let client = async_nats::ConnectOptions::new()
                .subscription_capacity(SUB_CAPACITY)
                .connect(url)
                .await
                .unwrap();
            let sub = client.subscribe(format!("micro.{topic}")).await.unwrap();
            client.flush().await.unwrap();
            // Keep the client alive with the stream.
            Box::pin(sub.map(move |m| {
                let _ = &client;
                m.payload
            }))
        }
        _ => {
            let broker = NatsBroker::builder(url)
                .subscription_capacity(SUB_CAPACITY)
                .connect()
                .await
                .unwrap();
            let sub = broker
                .subscribe(topic, SubscribeOptions::default())
                .await
                .unwrap();
            broker.round_trip().await.unwrap();
            Box::pin(sub.map(move |d| {
                let _ = &broker;
                d.unwrap().message.body
            }))
        }
    };
    // Under valgrind everything is ~50x slower: wait longer for the first message.
    let idle = if std::env::var("MICRO_BENCH_ONLY").is_ok() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(2)
    };
    tokio::spawn(async move {
        let mut count = 0;
        let mut last = None;
        while let Ok(Some(body)) = tokio::time::timeout(idle, stream.next()).await {
            let now = Instant::now();
            let sent = u64::from_le_bytes(body[..8].try_into().unwrap());
            let now_ns = u64::try_from((now - base).as_nanos()).unwrap();
            latencies.push(now_ns.saturating_sub(sent));
            count += 1;
            last = Some(now);
            if count == expect {
                break;
            }
        }
        (count, last, latencies)
    })
}

fn body(base: Instant) -> Bytes {
    let mut b = vec![0u8; SIZE];
    let ns = u64::try_from(base.elapsed().as_nanos()).unwrap();
    b[..8].copy_from_slice(&ns.to_le_bytes());
    Bytes::from(b)
}

/// CPU time used so far by this process's threads (publisher and subscriber), in ns, from
/// `/proc/self/task/*/schedstat`; 0 where that is not available.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Messages/s received, messages received, client CPU ns per message.
async fn throughput(kind: Kind, url: &str, round: usize) -> (f64, usize, f64) {
    throughput_n(kind, url, round, N, 0).await
}

/// [`throughput`] with `n` messages, after `warmup` messages on the same connections.
async fn throughput_n(
    kind: Kind,
    url: &str,
    round: usize,
    n: usize,
    warmup: usize,
) -> (f64, usize, f64) {
    let topic = format!("bench.tp.{round}");
    // The raw publisher's subject, formatted once (as a raw client that cares would).
    let subject = async_nats::Subject::from(format!("micro.{topic}"));
    let base = Instant::now();
    let sub = subscriber(kind, url, &topic, n + warmup, base).await;
    let publisher = Arc::new(Publisher::new(kind, url).await);
    for _ in 0..warmup {
        publisher.publish(&topic, &subject, body(base)).await;
    }
    publisher.flush().await;
    let cpu = cpu_ns();
    let start = Instant::now();
    match kind {
        Kind::Micro(PublishConfirm::Server) => {
            // Each publish waits for its confirmation: run many at once.
            futures_util::stream::iter(0..n)
                .map(|_| {
                    let publisher = publisher.clone();
                    let topic = topic.clone();
                    let subject = subject.clone();
                    async move { publisher.publish(&topic, &subject, body(base)).await }
                })
                .buffer_unordered(256)
                .for_each(|()| async {})
                .await;
        }
        _ => {
            for _ in 0..n {
                publisher.publish(&topic, &subject, body(base)).await;
            }
        }
    }
    publisher.flush().await;
    let (count, last, _) = sub.await.unwrap();
    let count = count.saturating_sub(warmup);
    let cpu = cpu_ns().saturating_sub(cpu) as f64 / count.max(1) as f64;
    let elapsed = last.map_or(Duration::from_secs(1), |l| l - start);
    (count as f64 / elapsed.as_secs_f64(), count, cpu)
}

async fn latency(kind: Kind, url: &str, round: usize) -> (u64, u64, usize, usize) {
    const PER_TICK: usize = 20;
    const TICKS: usize = 2000;
    let topic = format!("bench.lat.{round}");
    let subject = async_nats::Subject::from(format!("micro.{topic}"));
    let base = Instant::now();
    let sub = subscriber(kind, url, &topic, PER_TICK * TICKS, base).await;
    let publisher = Arc::new(Publisher::new(kind, url).await);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(TICKS);
    for _ in 0..TICKS {
        tick.tick().await;
        let publisher = publisher.clone();
        let topic = topic.clone();
        let subject = subject.clone();
        tasks.push(tokio::spawn(async move {
            futures_util::future::join_all(
                (0..PER_TICK).map(|_| publisher.publish(&topic, &subject, body(base))),
            )
            .await;
            if publisher.kind == Kind::Raw {
                publisher.flush().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    publisher.flush().await;
    let (count, _, mut lat) = sub.await.unwrap();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    (pct(0.50), pct(0.99), count, PER_TICK * TICKS)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = micro_test_engines::NatsServer::start().await;
    let url = server.url();
    let kinds = [
        Kind::Raw,
        Kind::Micro(PublishConfirm::Resend),
        Kind::Micro(PublishConfirm::Buffered),
        Kind::Micro(PublishConfirm::Server),
    ];
    if let (Ok(only), Some(n)) = (
        std::env::var("MICRO_BENCH_ONLY"),
        std::env::var("MICRO_BENCH_MSGS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok()),
    ) {
        let kind = match only.as_str() {
            "raw" => Kind::Raw,
            "default" | "resend" => Kind::Micro(PublishConfirm::Resend),
            "buffered" => Kind::Micro(PublishConfirm::Buffered),
            "server" => Kind::Micro(PublishConfirm::Server),
            other => panic!("MICRO_BENCH_ONLY={other}: raw, default, buffered or server"),
        };
        let (rate, count, ns) = throughput_n(kind, &url, 0, n, 1000).await;
        println!(
            "only {:<26} {n} messages: {rate:.0} msg/s ({count}/{n} received)  client CPU {ns:.0} ns/msg",
            kind.label()
        );
        return;
    }
    println!("{N} messages of {SIZE} bytes");

    // Throughput: 3 rounds, interleaved, best of each.
    let mut best = [0f64; 4];
    let mut cpu = [f64::MAX; 4];
    let rounds: usize = std::env::var("MICRO_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for round in 0..rounds {
        let mut raw = 0f64;
        for (i, kind) in kinds.iter().enumerate() {
            let (rate, count, ns) = throughput(*kind, &url, round * 10 + i).await;
            cpu[i] = cpu[i].min(ns);
            if i == 0 {
                raw = rate;
            }
            println!(
                "throughput round {round} {:<26} {:>10.0} msg/s ({count}/{N} received)  ratio this round {:.2}  client CPU {ns:.0} ns/msg",
                kind.label(),
                rate,
                rate / raw
            );
            best[i] = best[i].max(rate);
        }
    }
    println!();
    for (i, kind) in kinds.iter().enumerate() {
        println!(
            "throughput {:<26} {:>10.0} msg/s  ratio of bests {:.2}  client CPU (least) {:.0} ns/msg, ratio raw/this {:.2}",
            kind.label(),
            best[i],
            best[i] / best[0],
            cpu[i],
            cpu[0] / cpu[i]
        );
    }

    // Latency at 20,000 msg/s: 2 rounds, interleaved, the second reported.
    let mut results = [(0, 0, 0, 0); 4];
    for round in 0..2 {
        for (i, kind) in kinds.iter().enumerate() {
            results[i] = latency(*kind, &url, 100 + round * 10 + i).await;
        }
    }
    println!();
    for (i, kind) in kinds.iter().enumerate() {
        let (p50, p99, got, sent) = results[i];
        println!(
            "latency @20k/s {:<26} p50 {:>7.1} us  p99 {:>8.1} us  ({got}/{sent})  p50 ratio raw/this {:.2}  p99 ratio {:.2}",
            kind.label(),
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
            results[0].0 as f64 / p50.max(1) as f64,
            results[0].1 as f64 / p99.max(1) as f64,
        );
    }
}
