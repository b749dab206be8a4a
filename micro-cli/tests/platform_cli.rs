//! The platform commands of `micro` (`publish`, `kv`, `config`) against a real `micro server`
//! process in a private registry and data directory.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::{path::Path, process::Stdio, time::Duration};

use futures_util::StreamExt;
use micro::platform::event::EventClient;
use micro_core::broker::{Broker, SubscribeOptions};
use nix::sys::signal::Signal;
use support::{Proc, RegistryDir, server::MicroServer};

/// A `micro server` on a free loopback port, registered in a private registry.
struct Server {
    inner: MicroServer,
    addr: String,
    registry_url: String,
}

impl Server {
    async fn start() -> Self {
        // The HTTP gateway on a free port, not 8080.
        let inner = MicroServer::builder().api().start().await;
        Self {
            addr: inner.addr.clone(),
            registry_url: inner.registry_url.clone(),
            inner,
        }
    }

    /// Runs `micro args…` with this server's registry; `(exit code, stdout, stderr)`.
    async fn micro(&self, args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
        self.inner.micro(args, &[], stdin).await
    }

    async fn stop(self) {
        self.inner.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_delivers_json_through_the_event_service() {
    let server = Server::start().await;
    let events = EventClient::connect(&server.addr).unwrap();
    let mut subscription = events
        .subscribe("orders.created", SubscribeOptions::default())
        .await
        .unwrap();

    let (code, out, err) = server
        .micro(
            &["publish", "orders.created", r#"{"id": 7, "item": "tea"}"#],
            None,
        )
        .await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    let delivery = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("delivered within 10 s")
        .expect("subscription open")
        .expect("a delivery");
    let body: serde_json::Value = serde_json::from_slice(&delivery.message.body).unwrap();
    assert_eq!(body, serde_json::json!({"id": 7, "item": "tea"}));
    assert_eq!(
        delivery
            .message
            .headers
            .get("content-type")
            .map(String::as_str),
        Some("application/json")
    );

    // From stdin too.
    let (code, _, err) = server
        .micro(&["publish", "orders.created", "-d", "-"], Some(b"[1, 2]"))
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    let delivery = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("delivered within 10 s")
        .expect("subscription open")
        .expect("a delivery");
    assert_eq!(&delivery.message.body[..], b"[1,2]");

    // Bad JSON and a bad topic are usage errors; nothing is published.
    let (code, _, err) = server
        .micro(&["publish", "orders.created", "{not json"], None)
        .await;
    assert_eq!(code, 2, "stderr: {err}");
    assert!(err.contains("not valid JSON"), "stderr: {err}");
    let (code, _, err) = server.micro(&["publish", "bad topic", "{}"], None).await;
    assert_eq!(code, 2, "stderr: {err}");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_prints_what_publish_sends() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let server = Server::start().await;
    let mut subscriber = tokio::process::Command::new(env!("CARGO_BIN_EXE_micro"))
        .args([
            "subscribe",
            "chat.room1",
            "--count",
            "2",
            "--output",
            "json",
        ])
        .env("MICRO_REGISTRY", &server.registry_url)
        .env_remove("MICRO_BROKER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Ready once it says it subscribed (messages before that are not delivered).
    let mut errors = BufReader::new(subscriber.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(support::READY_TIMEOUT, errors.next_line())
        .await
        .expect("subscribed in time")
        .unwrap()
        .expect("a line on stderr");
    assert!(line.contains("subscribed to chat.room1"), "stderr: {line}");

    for body in [r#"{"text": "hi"}"#, r#""plain""#] {
        let (code, _, err) = server.micro(&["publish", "chat.room1", body], None).await;
        assert_eq!(code, 0, "stderr: {err}");
    }
    let output = tokio::time::timeout(Duration::from_secs(30), subscriber.wait_with_output())
        .await
        .expect("the subscriber exits after 2 messages")
        .unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["topic"], "chat.room1");
    assert_eq!(lines[0]["body"], serde_json::json!({"text": "hi"}));
    assert_eq!(lines[1]["body"], "plain");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_platform_services_commands_exit_3() {
    let registry = RegistryDir::new();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_micro"))
        .args(["publish", "a.b", "{}", "--registry", registry.url()])
        .env_remove("MICRO_BROKER")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "stderr: {err}");
    assert!(err.contains("micro.event"), "stderr: {err}");

    // So are kv and config.
    for (args, service) in [
        (&["kv", "get", "x"][..], "micro.kv"),
        (&["config", "get", "x"][..], "micro.config"),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_micro"))
            .args(args)
            .args(["--registry", registry.url()])
            .env_remove("MICRO_STORE")
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains(service), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_put_get_list_delete_round_trip() {
    let server = Server::start().await;
    let ns = ["--database", "clitest", "--table", "t1"];
    let with_ns = |args: &[&'static str]| -> Vec<&'static str> {
        let mut all = args.to_vec();
        all.extend_from_slice(&ns);
        all
    };

    let (code, _, err) = server
        .micro(&with_ns(&["kv", "put", "greeting", "hello"]), None)
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    let (code, out, err) = server
        .micro(&with_ns(&["kv", "get", "greeting"]), None)
        .await;
    assert_eq!((code, out.as_str()), (0, "hello\n"), "stderr: {err}");

    // A binary value from stdin, with a TTL, read back as JSON (base64).
    let (code, _, err) = server
        .micro(
            &with_ns(&["kv", "put", "blob", "--ttl", "1m"]),
            Some(&[0xff, 0x00, 0x01]),
        )
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    let (code, out, err) = server
        .micro(&with_ns(&["kv", "get", "blob", "--output", "json"]), None)
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    let record: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["value"], "/wAB");
    assert_eq!(record["encoding"], "base64");
    assert_eq!(record["version"], 1);
    let ttl = record["expiry"]["ttl_ms"].as_u64().expect("a TTL");
    assert!(ttl > 0 && ttl <= 60_000, "ttl {ttl}");

    // Another namespace does not see the keys.
    let (code, _, _) = server.micro(&["kv", "get", "greeting"], None).await;
    assert_eq!(code, 1);

    let (code, out, err) = server.micro(&with_ns(&["kv", "list"]), None).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "blob\ngreeting\n"),
        "stderr: {err}"
    );
    let (code, out, _) = server
        .micro(
            &with_ns(&["kv", "list", "--prefix", "g", "--output", "json"]),
            None,
        )
        .await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!(["greeting"])
    );
    let (code, out, _) = server
        .micro(&with_ns(&["kv", "list", "--limit", "1"]), None)
        .await;
    assert_eq!((code, out.as_str()), (0, "blob\n"));

    let (code, _, err) = server
        .micro(&with_ns(&["kv", "delete", "greeting"]), None)
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    let (code, _, err) = server
        .micro(&with_ns(&["kv", "get", "greeting"]), None)
        .await;
    assert_eq!(code, 1, "stderr: {err}");
    assert!(err.contains("key not found"), "stderr: {err}");
    let (code, _, _) = server
        .micro(&with_ns(&["kv", "delete", "greeting"]), None)
        .await;
    assert_eq!(code, 1);

    // A bad namespace is a usage error.
    let (code, _, _) = server
        .micro(&["kv", "get", "x", "--database", "bad name"], None)
        .await;
    assert_eq!(code, 2);

    server.stop().await;
}

/// `--ttl 1h`, copied from the README, is an hour: the flag uses micro's one duration parser,
/// the one behind `MICRO_REGISTER_TTL=1h` and a `1h` in config (tested in micro-core's
/// `service::env`). It used to fail with `unknown unit "h"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_put_ttl_takes_hours_days_and_names_a_bad_unit() {
    let server = Server::start().await;
    let ns = ["--database", "clitest", "--table", "ttl"];
    for (key, ttl, want_ms) in [("hour", "1h", 3_600_000), ("day", "1d", 86_400_000)] {
        let mut args = vec!["kv", "put", key, "v", "--ttl", ttl];
        args.extend_from_slice(&ns);
        let (code, _, err) = server.micro(&args, None).await;
        assert_eq!(code, 0, "--ttl {ttl}: stderr: {err}");
        let mut args = vec!["kv", "get", key, "--output", "json"];
        args.extend_from_slice(&ns);
        let (code, out, err) = server.micro(&args, None).await;
        assert_eq!(code, 0, "stderr: {err}");
        let record: serde_json::Value = serde_json::from_str(&out).unwrap();
        let left = record["expiry"]["ttl_ms"].as_u64().expect("a TTL");
        // Above the next smaller unit's worth: an hour is not read as a minute.
        assert!(
            left > want_ms - 60_000 && left <= want_ms,
            "--ttl {ttl}: ttl_ms {left}"
        );
    }
    let mut args = vec!["kv", "put", "week", "v", "--ttl", "3w"];
    args.extend_from_slice(&ns);
    let (code, _, err) = server.micro(&args, None).await;
    assert_eq!(code, 2, "stderr: {err}");
    assert!(
        err.contains("\"3w\"") && err.contains("unknown unit \"w\""),
        "stderr: {err}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_get_delete_and_watch() {
    let server = Server::start().await;

    let (code, _, err) = server
        .micro(&["config", "set", "db.pool", "20", "--env", "prod"], None)
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    let (code, _, err) = server
        .micro(
            &["config", "set", "db.host", r#""db.local""#, "--env", "prod"],
            None,
        )
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    let (code, out, err) = server
        .micro(&["config", "get", "db.pool", "--env", "prod"], None)
        .await;
    assert_eq!((code, out.as_str()), (0, "20\n"), "stderr: {err}");
    let (code, out, _) = server
        .micro(&["config", "get", "--env", "prod"], None)
        .await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"db": {"pool": 20, "host": "db.local"}})
    );
    // A path above the values set prints their subtree.
    let (code, out, err) = server
        .micro(&["config", "get", "db", "--env", "prod"], None)
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"pool": 20, "host": "db.local"})
    );

    // A value that does not parse is bad input; nothing is written.
    let (code, _, err) = server
        .micro(&["config", "set", "db.pool", "{bad", "--env", "prod"], None)
        .await;
    assert_eq!(code, 2, "stderr: {err}");

    // Environments are apart.
    let (code, _, err) = server.micro(&["config", "get", "db.pool"], None).await;
    assert_eq!(code, 1, "stderr: {err}");

    // Watch prints the value, then each change.
    let mut watch = Proc::spawn(
        Path::new(env!("CARGO_BIN_EXE_micro")),
        &["config", "watch", "db.pool", "--env", "prod"],
        &[("MICRO_REGISTRY", &server.registry_url)],
    );
    assert_eq!(watch.next_line(Duration::from_secs(30)).await, "20");
    let (code, _, err) = server
        .micro(
            &["config", "set", "db.pool", "{max: 30}", "--env", "prod"],
            None,
        )
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(
        watch.next_line(Duration::from_secs(30)).await,
        r#"{"max":30}"#
    );
    watch.signal(Signal::SIGINT);
    assert!(watch.wait(Duration::from_secs(30)).await.success());

    let (code, _, err) = server
        .micro(&["config", "delete", "db", "--env", "prod"], None)
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    let (code, _, _) = server
        .micro(&["config", "get", "db.host", "--env", "prod"], None)
        .await;
    assert_eq!(code, 1);

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_works_on_any_store_url() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("store.redb").display());
    let kv = |args: &'static [&'static str], store: String| async move {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_micro"))
            .arg("kv")
            .args(args)
            .args(["--store", &store])
            .output()
            .await
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, _, err) = kv(&["put", "a", "1"], store.clone()).await;
    assert_eq!(code, Some(0), "stderr: {err}");
    let (code, out, err) = kv(&["put", "a", "2", "--output", "json"], store.clone()).await;
    assert_eq!(code, Some(0), "stderr: {err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"key": "a", "version": 2})
    );
    let (code, out, err) = kv(&["get", "a"], store.clone()).await;
    assert_eq!((code, out.as_str()), (Some(0), "2\n"), "stderr: {err}");

    let (code, _, err) = kv(&["get", "a"], "nosuch://x".to_owned()).await;
    assert_eq!(code, Some(2), "an unknown store is a usage error: {err}");
}
