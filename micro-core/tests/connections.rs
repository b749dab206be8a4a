//! The connection rules of a `Service`'s gRPC port, over real sockets on 127.0.0.1:
//!
//! - a connection that sends nothing is closed after the first-byte timeout;
//! - an HTTP/2 connection with a stream in flight stays open past the idle timeout, and
//!   gets a GOAWAY (NO_ERROR) once it has been idle that long;
//! - at the connection limit, the connection idle the longest is shed and a new call
//!   succeeds;
//! - HTTP/2 Rapid Reset (streams opened and reset at once) still gets GOAWAY
//!   ENHANCE_YOUR_CALM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use micro_core::{
    Client, Service,
    registry::{MemoryRegistry, SharedRegistry},
    service::RunningService,
    transport::{ConnectionConfig, ConnectionLimit},
};
use tokio::{io::AsyncReadExt, net::TcpStream};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// How long anything the test waits for may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start(
    name: &str,
    registry: &SharedRegistry,
    connections: ConnectionConfig,
) -> RunningService {
    Service::builder(name)
        .address("127.0.0.1:0")
        .registry(registry.clone())
        .connections(connections)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// Waits until the server closed `stream`: a read returns end of file or an error.
async fn closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // HTTP/2 frames (SETTINGS, GOAWAY): read on until the close.
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection");
}

/// Whether `stream` is still open: nothing to read and no close within `wait`.
async fn still_open(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    tokio::time::timeout(wait, stream.read(&mut buf))
        .await
        .is_err()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_first_byte_timeout() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let running = start(
        "conn-silent",
        &registry,
        ConnectionConfig::new().first_byte_timeout(Duration::from_millis(300)),
    )
    .await;
    let mut silent = TcpStream::connect(running.local_address()).await.unwrap();
    closed(&mut silent).await;

    // A client that speaks is served as before.
    let client = Client::new(registry.clone());
    let mut health = HealthClient::new(client.channel("conn-silent"));
    health
        .check(HealthCheckRequest::default())
        .await
        .expect("a valid call succeeds");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idle_http2_connection_gets_a_goaway_after_the_idle_timeout() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let idle = Duration::from_millis(500);
    let running = start(
        "conn-idle",
        &registry,
        ConnectionConfig::new().idle_timeout(idle),
    )
    .await;
    let tcp = TcpStream::connect(running.local_address()).await.unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);

    // A health Watch: a stream that stays in flight as long as the client keeps it.
    let request = http::Request::post(format!(
        "http://{}/grpc.health.v1.Health/Watch",
        running.local_address()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut send) = h2.send_request(request, false).unwrap();
    // One empty HealthCheckRequest: uncompressed, zero length.
    send.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("Watch answers")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = tokio::time::timeout(PATIENCE, body.data())
        .await
        .expect("a first health message")
        .expect("a message")
        .unwrap();
    assert!(!first.is_empty());

    // In flight, the connection outlives several idle timeouts.
    tokio::time::sleep(idle * 4).await;
    assert!(!connection.is_finished(), "closed with a stream in flight");

    // Once the stream ends, the connection is idle and closed gracefully.
    drop(body);
    drop(send);
    let ended = tokio::time::timeout(PATIENCE, connection)
        .await
        .expect("the server closes the idle connection")
        .unwrap();
    assert!(ended.is_ok(), "not a graceful close: {ended:?}");
    let err = std::future::poll_fn(|cx| h2.poll_ready(cx))
        .await
        .expect_err("no new streams after the GOAWAY");
    assert!(err.is_go_away(), "{err:?}");
    assert_eq!(err.reason(), Some(h2::Reason::NO_ERROR), "{err:?}");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn at_the_connection_limit_the_connection_idle_longest_is_shed() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let limit = ConnectionLimit::new(4);
    let running = start(
        "conn-limit",
        &registry,
        ConnectionConfig::new()
            .first_byte_timeout(Duration::from_secs(600))
            .limit(limit.clone()),
    )
    .await;
    let address = running.local_address().to_owned();
    // Four silent connections, each admitted before the next one connects.
    let mut silent = Vec::new();
    for open in 1..=4 {
        silent.push(TcpStream::connect(&address).await.unwrap());
        tokio::time::timeout(PATIENCE, async {
            while limit.open() < open {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the server admits connection {open}: {limit:?}"));
    }

    // A fifth connection, a real client's: the oldest silent one makes room.
    let client = Client::new(registry.clone());
    let mut health = HealthClient::new(client.channel("conn-limit"));
    tokio::time::timeout(PATIENCE, health.check(HealthCheckRequest::default()))
        .await
        .expect("the call ends in time")
        .expect("a valid call succeeds at the limit");
    closed(&mut silent[0]).await;
    for (i, stream) in silent.iter_mut().enumerate().skip(1) {
        assert!(
            still_open(stream, Duration::from_millis(200)).await,
            "silent connection {i} was closed; only the oldest should be"
        );
    }
    tokio::time::timeout(PATIENCE, async {
        while limit.open() > 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the shed connection leaves the budget");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway_enhance_your_calm() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let running = start("conn-reset", &registry, ConnectionConfig::new()).await;
    let tcp = TcpStream::connect(running.local_address()).await.unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut sent = 0u32;
    let attack = async {
        for _ in 0..10_000 {
            let request = http::Request::post(format!(
                "http://{}/grpc.health.v1.Health/Check",
                running.local_address()
            ))
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
            let ready = std::future::poll_fn(|cx| h2.poll_ready(cx)).await;
            let Ok(()) = ready else { return ready };
            match h2.send_request(request, false) {
                Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                Err(err) => return Err(err),
            }
            sent += 1;
            // Lets the connection task write the HEADERS and RST_STREAM frames.
            tokio::task::yield_now().await;
        }
        Ok(())
    };
    let err = tokio::time::timeout(PATIENCE, attack)
        .await
        .expect("the attack ends in time")
        .expect_err("the server stops the attack");
    // Without the limit all 10,000 go through; with it the server ends the connection after
    // a few dozen (h2 allows 20 pending resets) plus what was in flight.
    assert!(sent < 2_000, "the server let {sent} reset streams through");
    let ended = tokio::time::timeout(PATIENCE, connection)
        .await
        .expect("the connection ends")
        .unwrap();
    // The server sends GOAWAY(ENHANCE_YOUR_CALM), then closes with the attacker's later
    // frames unread, so its kernel answers them with a TCP reset. The client reads the
    // GOAWAY first, but h2's client reports whichever it handles last: the reason, or the
    // reset as an I/O error with no reason (seen on a loaded machine). A reason, when
    // reported, must be that one.
    let reason = ended.err().and_then(|err| err.reason()).or(err.reason());
    if let Some(reason) = reason {
        assert_eq!(reason, h2::Reason::ENHANCE_YOUR_CALM, "{err:?}");
    } else {
        assert!(err.is_io(), "neither a GOAWAY reason nor a reset: {err:?}");
    }
    running.shutdown().await.unwrap();
}
