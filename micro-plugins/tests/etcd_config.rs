//! Configuration from etcd: values under the environment's prefix reach a running
//! configuration within 1 s, in order; a malformed value is rejected and the last good
//! configuration stays; the watch survives an etcd restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use etcd_client::Client;
use micro_core::config::{Config, ConfigError};
use micro_plugins::etcd::EtcdConfigSource;
use micro_test_engines::EtcdServer;
use tokio::time::Instant;

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_values_reload_in_order_and_bad_ones_are_rejected() {
    let mut etcd = EtcdServer::start().await;
    let endpoint = etcd.endpoint();
    let mut raw = Client::connect([endpoint.clone()], None).await.unwrap();
    raw.put("/micro/config/test/db/pool", "5", None)
        .await
        .unwrap();
    raw.put("/micro/config/test/db/host", "db.local", None)
        .await
        .unwrap();
    raw.put("/micro/config/other/db/pool", "99", None)
        .await
        .unwrap();

    let source = EtcdConfigSource::new([endpoint.clone()], "test");
    assert_eq!(source.prefix(), "/micro/config/test/");
    let config = Config::builder()
        .environment("test")
        .source(source)
        .build()
        .await
        .unwrap();
    assert_eq!(
        config.get::<u32>("db.pool").unwrap(),
        5,
        "this environment only"
    );
    assert_eq!(config.get::<String>("db.host").unwrap(), "db.local");
    let mut pool = config.watch::<u32>("db.pool").unwrap();

    // A new value reaches the running configuration within 1 s.
    let written = Instant::now();
    raw.put("/micro/config/test/db/pool", "6", None)
        .await
        .unwrap();
    let value = tokio::time::timeout(Duration::from_secs(1), pool.changed())
        .await
        .expect("a change within 1 s");
    assert_eq!(value, 6);
    assert!(written.elapsed() < Duration::from_secs(1));

    // Changes in a row: applied in order, the last one stays.
    for n in 10..30 {
        raw.put("/micro/config/test/db/pool", n.to_string(), None)
            .await
            .unwrap();
    }
    eventually("the last of 20 changes", Duration::from_secs(1), || {
        pool.get() == 29
    })
    .await;

    // A malformed value: rejected, the last good configuration stays.
    raw.put("/micro/config/test/db/extra", "[unclosed", None)
        .await
        .unwrap();
    eventually("the malformed update is seen", Duration::from_secs(1), || {
        matches!(config.last_error(), Some(ConfigError::Malformed { ref message, .. }) if message.contains("db/extra"))
    })
    .await;
    assert_eq!(config.get::<u32>("db.pool").unwrap(), 29);
    assert_eq!(config.value("db.extra"), None);
    raw.delete("/micro/config/test/db/extra", None)
        .await
        .unwrap();

    // etcd restarts: the watch comes back and later changes still arrive.
    etcd.stop().await;
    etcd.restart().await;
    let mut raw = Client::connect([endpoint], None).await.unwrap();
    raw.put("/micro/config/test/db/pool", "42", None)
        .await
        .unwrap();
    eventually(
        "a change after an etcd restart",
        Duration::from_secs(10),
        || pool.get() == 42,
    )
    .await;
}
