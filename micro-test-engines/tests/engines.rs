//! The engines start, answer their protocol, survive stop + restart on the same port, go
//! silent when paused, and clusters keep answering with one member killed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use micro_test_engines::probe::{self, HttpResponse};
use micro_test_engines::{EtcdCluster, EtcdServer, NatsCluster, NatsServer, RedisServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Longer than any answer from a running engine on loopback, short enough to keep the file
/// quick: a paused engine must not answer within it.
const SILENT: Duration = Duration::from_millis(500);

async fn etcd_post(endpoint: &str, path: &str, body: &str) -> HttpResponse {
    let r = timeout(
        Duration::from_secs(5),
        probe::http(endpoint, "POST", path, Some(body)),
    )
    .await
    .expect("etcd answers within 5 s")
    .expect("etcd HTTP request");
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r
}

// "foo" = Zm9v, "bar" = YmFy, "baz" = YmF6 in base64, as the v3 JSON gateway wants.
async fn etcd_put(endpoint: &str, key_b64: &str, value_b64: &str) {
    etcd_post(
        endpoint,
        "/v3/kv/put",
        &format!(r#"{{"key":"{key_b64}","value":"{value_b64}"}}"#),
    )
    .await;
}

async fn etcd_get(endpoint: &str, key_b64: &str) -> String {
    etcd_post(
        endpoint,
        "/v3/kv/range",
        &format!(r#"{{"key":"{key_b64}"}}"#),
    )
    .await
    .body
}

#[tokio::test]
async fn etcd_round_trip_restart_pause() {
    let mut etcd = EtcdServer::start().await;
    let endpoint = etcd.endpoint();
    assert_eq!(etcd.url(), format!("http://{endpoint}"));

    let version = probe::http(&endpoint, "GET", "/version", None)
        .await
        .unwrap();
    assert_eq!(version.status, 200);
    assert!(version.body.contains("etcdserver"), "{}", version.body);
    etcd_put(&endpoint, "Zm9v", "YmFy").await;
    assert!(
        etcd_get(&endpoint, "Zm9v")
            .await
            .contains(r#""value":"YmFy""#)
    );

    etcd.stop().await;
    assert!(!etcd.is_running());
    assert!(
        probe::http(&endpoint, "GET", "/health", None)
            .await
            .is_err(),
        "stopped etcd still answers"
    );
    etcd.restart().await;
    assert_eq!(etcd.endpoint(), endpoint, "restart keeps the port");
    assert!(
        etcd_get(&endpoint, "Zm9v")
            .await
            .contains(r#""value":"YmFy""#),
        "restart keeps the data"
    );

    etcd.pause();
    let paused = timeout(SILENT, probe::http(&endpoint, "GET", "/health", None)).await;
    assert!(paused.is_err(), "paused etcd answered: {paused:?}");
    etcd.resume();
    assert!(etcd.is_healthy().await);
    etcd_put(&endpoint, "Zm9v", "YmF6").await;

    etcd.kill().await;
    assert!(
        probe::http(&endpoint, "GET", "/health", None)
            .await
            .is_err()
    );
    etcd.restart().await;
    assert!(
        etcd_get(&endpoint, "Zm9v")
            .await
            .contains(r#""value":"YmF6""#),
        "kill keeps the data"
    );
}

#[tokio::test]
async fn etcd_cluster_survives_one_member_killed() {
    let mut cluster = EtcdCluster::start(3).await;
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.len(), 3);
    for i in 0..3 {
        assert!(cluster.member(i).is_healthy().await, "member {i}");
    }
    etcd_put(&endpoints[0], "Zm9v", "YmFy").await;
    let members = probe::http(&endpoints[1], "POST", "/v3/cluster/member/list", Some("{}"))
        .await
        .unwrap();
    assert_eq!(
        members.body.matches("clientURLs").count(),
        3,
        "{}",
        members.body
    );

    cluster.member(2).kill().await;
    // If m2 led, the others elect a new leader first.
    cluster.wait_healthy().await;
    for endpoint in &endpoints[..2] {
        assert!(
            etcd_get(endpoint, "Zm9v")
                .await
                .contains(r#""value":"YmFy""#)
        );
    }
    etcd_put(&endpoints[1], "Zm9v", "YmF6").await;
    assert!(
        etcd_get(&endpoints[0], "Zm9v")
            .await
            .contains(r#""value":"YmF6""#)
    );

    cluster.member(2).restart().await;
    assert!(
        etcd_get(&endpoints[2], "Zm9v")
            .await
            .contains(r#""value":"YmF6""#)
    );
}

#[tokio::test]
async fn nats_round_trip_restart_pause() {
    let mut nats = NatsServer::start().await;
    let port = nats.port();
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    let addr = format!("127.0.0.1:{port}");
    probe::nats_ping(&addr).await.unwrap();
    let jsz = probe::http(
        &format!("127.0.0.1:{}", nats.monitor_port()),
        "GET",
        "/jsz",
        None,
    )
    .await
    .unwrap();
    assert_eq!(jsz.status, 200);
    assert!(
        jsz.body.contains("\"config\""),
        "JetStream not enabled: {}",
        jsz.body
    );

    nats.stop().await;
    assert!(
        probe::nats_ping(&addr).await.is_err(),
        "stopped nats still answers"
    );
    nats.restart().await;
    assert_eq!(nats.port(), port, "restart keeps the port");
    probe::nats_ping(&addr).await.unwrap();

    nats.pause();
    let paused = timeout(SILENT, probe::nats_ping(&addr)).await;
    assert!(paused.is_err(), "paused nats answered: {paused:?}");
    nats.resume();
    timeout(Duration::from_secs(5), probe::nats_ping(&addr))
        .await
        .unwrap()
        .unwrap();

    nats.kill().await;
    nats.restart().await;
    probe::nats_ping(&addr).await.unwrap();
}

/// A raw NATS client connection: INFO read, CONNECT sent.
async fn nats_connect(addr: &str) -> BufReader<TcpStream> {
    let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("INFO "), "{line}");
    conn.get_mut()
        .write_all(b"CONNECT {\"verbose\":false}\r\n")
        .await
        .unwrap();
    conn
}

/// Reads lines until one starts with `prefix`, or `SILENT` passes.
async fn read_until(conn: &mut BufReader<TcpStream>, prefix: &str) -> bool {
    timeout(SILENT, async {
        let mut line = String::new();
        loop {
            line.clear();
            if conn.read_line(&mut line).await.unwrap() == 0 {
                return false;
            }
            if line.starts_with(prefix) {
                return true;
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// A message published on node `from` reaches a subscriber on node `to` (interest crosses
/// the routes asynchronously: publish again until it arrives, for up to 10 s).
async fn nats_crosses(from: &str, to: &str, subject: &str) {
    let mut sub = nats_connect(to).await;
    sub.get_mut()
        .write_all(format!("SUB {subject} 1\r\nPING\r\n").as_bytes())
        .await
        .unwrap();
    assert!(read_until(&mut sub, "PONG").await);
    let mut publisher = nats_connect(from).await;
    for _ in 0..20 {
        publisher
            .get_mut()
            .write_all(format!("PUB {subject} 5\r\nhello\r\nPING\r\n").as_bytes())
            .await
            .unwrap();
        assert!(read_until(&mut publisher, "PONG").await);
        if read_until(&mut sub, &format!("MSG {subject} 1 5")).await {
            return;
        }
    }
    panic!("no message from {from} reached {to}");
}

#[tokio::test]
async fn nats_cluster_survives_one_node_killed() {
    let mut cluster = NatsCluster::start(3).await;
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    let addrs: Vec<String> = urls
        .iter()
        .map(|u| u.trim_start_matches("nats://").to_owned())
        .collect();
    for (i, addr) in addrs.iter().enumerate() {
        probe::nats_ping(addr).await.unwrap();
        assert!(cluster.node(i).is_healthy().await, "node {i}");
    }
    nats_crosses(&addrs[0], &addrs[2], "micro.test.before").await;

    cluster.node(2).kill().await;
    cluster.wait_healthy().await;
    for addr in &addrs[..2] {
        probe::nats_ping(addr).await.unwrap();
    }
    nats_crosses(&addrs[0], &addrs[1], "micro.test.after").await;

    cluster.node(2).restart().await;
    nats_crosses(&addrs[1], &addrs[2], "micro.test.back").await;
}

#[tokio::test]
async fn redis_round_trip_restart_pause() {
    let mut redis = RedisServer::start().await;
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    let addr = redis.addr();

    let mut conn = BufReader::new(TcpStream::connect(&addr).await.unwrap());
    conn.get_mut()
        .write_all(b"SET micro 42\r\nGET micro\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    for _ in 0..3 {
        conn.read_line(&mut reply).await.unwrap();
    }
    assert_eq!(reply, "+OK\r\n$2\r\n42\r\n");

    redis.stop().await;
    assert!(
        probe::redis_ping(&addr).await.is_err(),
        "stopped redis still answers"
    );
    redis.restart().await;
    assert_eq!(redis.port(), port, "restart keeps the port");
    probe::redis_ping(&addr).await.unwrap();

    redis.pause();
    let paused = timeout(SILENT, probe::redis_ping(&addr)).await;
    assert!(paused.is_err(), "paused redis answered: {paused:?}");
    redis.resume();
    timeout(Duration::from_secs(5), probe::redis_ping(&addr))
        .await
        .unwrap()
        .unwrap();
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie still would.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn drop_kills_and_reaps_also_on_panic() {
    let redis = RedisServer::start().await;
    let pid = redis.pid().unwrap();
    redis.pause(); // a stopped process must die too
    drop(redis);
    assert!(!alive(pid), "redis {pid} outlived its value");

    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let nats = NatsServer::start().await;
        tx.send(nats.pid().unwrap()).unwrap();
        panic!("test failure while nats runs");
    });
    assert!(task.await.unwrap_err().is_panic());
    let pid = rx.await.unwrap();
    assert!(!alive(pid), "nats {pid} outlived a panicking test");
}

#[tokio::test]
async fn restart_on_a_taken_port_fails_with_the_log() {
    let mut redis = RedisServer::start().await;
    redis.stop().await;
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", redis.port())).unwrap();
    let err = tokio::spawn(async move { redis.restart().await })
        .await
        .unwrap_err();
    let msg = err.into_panic();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(
        msg.to_ascii_lowercase().contains("address already in use"),
        "{msg}"
    );
}
