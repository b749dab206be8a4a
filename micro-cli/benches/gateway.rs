//! Gateway benchmark: SayHello as direct gRPC (a raw tonic client to the server) vs as
//! JSON through the API gateway (a keep-alive hyper client, HTTP/1.1 with a connection per
//! call in flight, then HTTP/2 without TLS on one connection), same server, same run, at 1
//! and 64 concurrent calls. Prints rps, p50 and p99 of both, the gateway/direct
//! throughput ratio and the latency the gateway adds at p50 and p99.
//!
//! ```text
//! cargo bench -p micro-cli --bench gateway              # 3 s per measurement
//! MICRO_BENCH_SECS=10 cargo bench -p micro-cli --bench gateway
//! ```
//!
//! The greeter server, the gateway and the load each run on their own single-threaded
//! runtime, on their own thread.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client as HttpClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use micro::{api::Gateway, registry::MemoryRegistry};
use tokio::time::Instant;

#[path = "../../benches/support/greeter.rs"]
mod greeter;

use greeter::pb;
use pb::{HelloRequest, greeter_client::GreeterClient};

#[derive(Debug, Clone, Copy)]
struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// One way of making a call.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Path {
    Direct(GreeterClient<tonic::transport::Channel>),
    Gateway {
        client: HttpClient<HttpConnector, Full<Bytes>>,
        uri: http::Uri,
    },
}

impl Path {
    async fn call(&mut self) {
        match self {
            Self::Direct(client) => {
                let request = HelloRequest {
                    name: "bench".into(),
                    delay_ms: 0,
                };
                client.say_hello(request).await.expect("call");
            }
            Self::Gateway { client, uri } => {
                let request = http::Request::post(uri.clone())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(br#"{"name":"bench"}"#)))
                    .unwrap();
                let response = client.request(request).await.expect("HTTP call");
                assert_eq!(response.status(), http::StatusCode::OK);
                response.into_body().collect().await.expect("body");
            }
        }
    }
}

async fn measure(path: &Path, concurrency: usize, duration: Duration) -> Figures {
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            while Instant::now() < end {
                let started = Instant::now();
                path.call().await;
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Figures {
        rps: all.len() as f64 / duration.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Runs `future` on a new single-threaded runtime on its own thread.
fn spawn_runtime<F>(future: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future);
    });
}

fn main() {
    let secs: u64 = std::env::var("MICRO_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let duration = Duration::from_secs(secs);
    let registry: micro::registry::SharedRegistry = Arc::new(MemoryRegistry::new());

    let (addresses, _) = greeter::serve_on_thread(registry.clone(), vec![("greeter", None)]);
    let server = addresses[0].clone();

    let (gateway_tx, gateway_rx) = std::sync::mpsc::channel();
    let gateway_registry = registry.clone();
    spawn_runtime(async move {
        let gateway = Gateway::builder()
            .registry(gateway_registry)
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        gateway_tx.send(listener.local_addr().unwrap()).unwrap();
        gateway.serve(listener).await.unwrap();
    });
    let gateway = gateway_rx.recv().unwrap();

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{server}"))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap();
        let direct = Path::Direct(GreeterClient::new(channel));
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        let uri: http::Uri = format!("http://{gateway}/greeter/Greeter/SayHello")
            .parse()
            .unwrap();
        let via_gateway = Path::Gateway {
            client: http,
            uri: uri.clone(),
        };
        // The same over HTTP/2 without TLS: one connection, like the direct gRPC client.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let via_gateway_h2 = Path::Gateway {
            client: HttpClient::builder(TokioExecutor::new())
                .http2_only(true)
                .build(connector),
            uri,
        };

        // Warm both paths up: connections, the gateway's schema cache, allocator.
        measure(&direct, 8, Duration::from_millis(500)).await;
        measure(&via_gateway, 8, Duration::from_millis(500)).await;
        measure(&via_gateway_h2, 8, Duration::from_millis(500)).await;

        println!(
            "SayHello, {secs} s per measurement; direct = raw tonic client to the server; \
             gateway = HTTP/1.1 keep-alive JSON POST through micro::api::Gateway"
        );
        println!(
            "{:>5} {:>11} | {:>10} {:>9} {:>9} | {:>10} {:>9} {:>9} | {:>9} {:>10} {:>10}",
            "http",
            "concurrency",
            "direct rps",
            "p50",
            "p99",
            "gw rps",
            "p50",
            "p99",
            "rps ratio",
            "+p50 µs",
            "+p99 µs"
        );
        for (concurrency, http, via_gateway) in [
            (1, "1.1", &via_gateway),
            (64, "1.1", &via_gateway),
            (1, "2", &via_gateway_h2),
            (64, "2", &via_gateway_h2),
        ] {
            // Alternate the two paths so drift in the machine's load hits both alike.
            let direct_a = measure(&direct, concurrency, duration / 2).await;
            let gateway_a = measure(via_gateway, concurrency, duration / 2).await;
            let gateway_b = measure(via_gateway, concurrency, duration / 2).await;
            let direct_b = measure(&direct, concurrency, duration / 2).await;
            let direct = average(direct_a, direct_b);
            let gw = average(gateway_a, gateway_b);
            let added = |a: Duration, b: Duration| (a.as_secs_f64() - b.as_secs_f64()) * 1e6;
            println!(
                "{:>5} {:>11} | {:>10.0} {:>9.1?} {:>9.1?} | {:>10.0} {:>9.1?} {:>9.1?} | {:>9.3} {:>10.0} {:>10.0}",
                http,
                concurrency,
                direct.rps,
                direct.p50,
                direct.p99,
                gw.rps,
                gw.p50,
                gw.p99,
                gw.rps / direct.rps,
                added(gw.p50, direct.p50),
                added(gw.p99, direct.p99),
            );
        }
    });
}

fn average(a: Figures, b: Figures) -> Figures {
    Figures {
        rps: (a.rps + b.rps) / 2.0,
        p50: (a.p50 + b.p50) / 2,
        p99: (a.p99 + b.p99) / 2,
    }
}
