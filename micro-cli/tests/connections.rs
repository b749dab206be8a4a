//! The gateway's connection rules, and `micro server` under connection pressure:
//!
//! - a gateway connection that sends nothing is closed after the first-byte timeout; an
//!   HTTP/1.1 keep-alive connection is closed once idle; a request head trickled byte by
//!   byte (slowloris) is still cut off by the header read timeout;
//! - `micro server` as a real process under a common open-file limit (1,024): 1,100
//!   connections that send nothing (or one byte and then nothing) to each of its ports
//!   leave gRPC and gateway calls working, registry lookups included.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::Duration;

use http::StatusCode;
use micro::{api::Gateway, registry::MemoryRegistry, transport::ConnectionConfig};
use micro::{
    platform::kv::KvClient,
    store::{Namespace, Put, Store},
};
use support::{http::Http, server::MicroServer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Connections opened to each port: more than the server has file descriptors.
const SILENT: usize = 1_100;
/// How long one valid call may take on a loaded machine.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long anything a test waits for may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// A gateway on an empty memory registry, with `connections` and a header read timeout of
/// `header_read`.
async fn gateway(connections: ConnectionConfig, header_read: Duration) -> String {
    let gateway = Gateway::builder()
        .registry(std::sync::Arc::new(MemoryRegistry::new()))
        .header_read_timeout(header_read)
        .connections(connections)
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(gateway.serve(listener));
    addr
}

/// Reads `stream` until the server closes it; what it sent meanwhile.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the gateway closes the connection");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn the_gateway_closes_silent_and_idle_connections() {
    let addr = gateway(
        ConnectionConfig::new()
            .first_byte_timeout(Duration::from_millis(300))
            .idle_timeout(Duration::from_millis(500)),
        Duration::from_secs(60),
    )
    .await;
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(until_closed(&mut silent).await, "");

    // A keep-alive connection: one request answered, then closed once idle.
    let mut keep_alive = TcpStream::connect(&addr).await.unwrap();
    keep_alive
        .write_all(format!("GET /openapi.json HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let reply = until_closed(&mut keep_alive).await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
}

#[tokio::test]
async fn a_trickled_request_head_is_still_cut_off_by_the_header_read_timeout() {
    // No idle timeout: only the header read timeout can end it.
    let addr = gateway(
        ConnectionConfig::new().idle_timeout(None),
        Duration::from_millis(500),
    )
    .await;
    let mut slowloris = TcpStream::connect(&addr).await.unwrap();
    let head = format!("GET /openapi.json HTTP/1.1\r\nhost: {addr}\r\nx-a: ");
    slowloris.write_all(head.as_bytes()).await.unwrap();
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if slowloris.write_all(b"a").await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(PATIENCE, trickle)
        .await
        .expect("the gateway cuts the trickle off");
}

/// Opens `count` connections to `addr`; every other one sends `byte` and then nothing
/// (past the first-byte gate, never a whole request).
async fn flood(addr: &str, count: usize, byte: u8) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|err| panic!("connection {i} to {addr}: {err}"));
        if i % 2 == 1 {
            // The server may have shed it already: a failed write is fine.
            let _ = stream.write_all(&[byte]).await;
        }
        streams.push(stream);
    }
    streams
}

/// The soft and hard open-file limits of process `pid`, from /proc.
fn nofile_of(pid: i32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .map(|line| {
            line.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_server_under_1024_files_serves_calls_past_1100_silent_connections_per_port() {
    // This process holds 2,200 sockets.
    micro::transport::raise_nofile_limit().unwrap();
    let server = MicroServer::builder().api().nofile(1024).start().await;
    assert_eq!(nofile_of(server.process.pid().as_raw()), "1024 1024");
    let ns = Namespace::new("conn", "flood").unwrap();
    let http = Http::to(server.api_addr());

    // Before: both ports answer.
    let kv = KvClient::connect(&server.addr).unwrap();
    kv.put(&ns, Put::new("before", "1")).await.unwrap();

    let grpc_flood = flood(&server.addr, SILENT, b'P').await;
    let api_flood = flood(server.api_addr(), SILENT, b'G').await;

    // While they are open: a new gRPC client (a new connection), and gateway calls that
    // make the server look up micro.kv in its registry and dial its own gRPC port.
    let fresh = KvClient::connect(&server.addr).unwrap();
    tokio::time::timeout(CALL_TIMEOUT, fresh.put(&ns, Put::new("during", "2")))
        .await
        .expect("a gRPC call in time")
        .expect("a gRPC call succeeds");
    let put = http
        .post(
            "/micro.kv/Kv/Put",
            r#"{"namespace":{"database":"conn","table":"flood"},"write":{"key":"api","value":"Mw=="}}"#,
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{put:?}");
    let get = http
        .post(
            "/micro.kv/micro.kv.v1.Kv/Get",
            r#"{"namespace":{"database":"conn","table":"flood"},"key":"during"}"#,
        )
        .await;
    assert_eq!(get.status, StatusCode::OK, "{get:?}");
    assert!(get.json().to_string().contains("Mg=="), "{get:?}");
    // The connection opened before the flood still works.
    tokio::time::timeout(CALL_TIMEOUT, kv.put(&ns, Put::new("old-connection", "4")))
        .await
        .expect("a call on the old connection in time")
        .expect("a call on the old connection succeeds");
    drop((grpc_flood, api_flood));
}
