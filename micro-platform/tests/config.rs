//! The config service end to end: `Config` on a `ConfigClient` → gRPC over loopback →
//! `ConfigService` → `MemoryStore`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{sync::Arc, time::Duration};

use micro_core::{
    Service,
    config::Config,
    registry::MemoryRegistry,
    service::RunningService,
    store::{MemoryStore, Namespace, Store},
};
use micro_platform::config::{ConfigClient, ConfigService};
use serde_json::json;

/// A config service over `store`; `stop` ends it.
struct Running {
    service: ConfigService,
    running: RunningService,
}

async fn start(store: Arc<MemoryStore>) -> Running {
    let service = ConfigService::new(store);
    let running = Service::builder("micro.config")
        .address("127.0.0.1:0")
        .registry(Arc::new(MemoryRegistry::new()))
        .add_service(service.clone().into_server())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    Running { service, running }
}

impl Running {
    fn local_address(&self) -> &str {
        self.running.local_address()
    }

    /// Ends the watches first, or the drain would wait for them.
    async fn shutdown(self) -> Result<(), micro_core::ServiceError> {
        self.service.close_watches();
        tokio::time::timeout(Duration::from_secs(2), self.running.shutdown())
            .await
            .expect("no call left open")
    }
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(1), future)
        .await
        .unwrap_or_else(|_| panic!("{what} within 1 s"))
}

#[tokio::test]
async fn a_config_follows_the_service_in_order() {
    let store = Arc::new(MemoryStore::new());
    let running = start(store.clone()).await;
    let client = ConfigClient::connect(running.local_address(), "prod").unwrap();
    client.set("db.pool", "5").await.unwrap();
    client.set("db.host", "db.internal").await.unwrap();
    client
        .set("features", "{a: true, b: [1, 2]}")
        .await
        .unwrap();

    // Stored as written, one record per path.
    let record = store
        .get(&Namespace::new("config", "prod").unwrap(), "db.host")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.value.as_ref(), b"db.internal");
    assert_eq!(client.get("db.pool").await.unwrap(), Some(json!(5)));
    assert_eq!(client.get("db").await.unwrap(), None);
    assert_eq!(
        client.list().await.unwrap(),
        json!({"db": {"pool": 5, "host": "db.internal"}, "features": {"a": true, "b": [1, 2]}})
    );

    let config = Config::builder()
        .environment("prod")
        .source(client.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(config.get::<u32>("db.pool").unwrap(), 5);
    assert_eq!(config.get::<Vec<u32>>("features.b").unwrap(), vec![1, 2]);

    let mut pool = config.watch::<u32>("db.pool").unwrap();
    let writer = ConfigClient::connect(running.local_address(), "prod").unwrap();
    for n in 6..=10u32 {
        writer.set("db.pool", &n.to_string()).await.unwrap();
        // Every value arrives, in order (each write waits for the previous one to be seen).
        let seen = within("the set value", async {
            loop {
                let value = pool.changed().await;
                if value >= n {
                    return value;
                }
            }
        })
        .await;
        assert_eq!(seen, n, "in order");
    }

    // Deleting a parent deletes what is below it.
    assert_eq!(writer.delete("db").await.unwrap(), 2);
    let mut merged = config.subscribe();
    within(
        "the delete",
        merged.wait_for(|tree| tree.get("db").is_none()),
    )
    .await
    .unwrap();
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_malformed_set_is_rejected_and_the_config_keeps_its_value() {
    let running = start(Arc::new(MemoryStore::new())).await;
    let client = ConfigClient::connect(running.local_address(), "dev").unwrap();
    client.set("db.pool", "5").await.unwrap();
    let config = Config::builder()
        .environment("dev")
        .source(client.clone())
        .build()
        .await
        .unwrap();

    let status = client.set("db.pool", "[unclosed").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("db.pool"), "{status:?}");
    assert!(
        status.message().contains("line"),
        "the parse error: {status:?}"
    );
    for bad_path in ["", "db..pool", "a\nb"] {
        let status = client.set(bad_path, "1").await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    let status = ConfigClient::connect(running.local_address(), "no/such")
        .unwrap()
        .set("a", "1")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // Nothing was written: the next good write is the next thing the config sees.
    assert_eq!(client.get("db.pool").await.unwrap(), Some(json!(5)));
    let mut merged = config.subscribe();
    client.set("db.pool", "6").await.unwrap();
    within("the good write", merged.changed()).await.unwrap();
    assert_eq!(config.get::<u32>("db.pool").unwrap(), 6);
    assert_eq!(config.last_error(), None);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn environments_are_separate() {
    let running = start(Arc::new(MemoryStore::new())).await;
    let prod = ConfigClient::connect(running.local_address(), "prod").unwrap();
    let dev = ConfigClient::connect(running.local_address(), "dev").unwrap();
    prod.set("name", "p").await.unwrap();
    dev.set("name", "d").await.unwrap();
    let prod_config = Config::builder()
        .source(prod.clone())
        .build()
        .await
        .unwrap();
    let dev_config = Config::builder().source(dev.clone()).build().await.unwrap();
    assert_eq!(prod_config.get::<String>("name").unwrap(), "p");
    assert_eq!(dev_config.get::<String>("name").unwrap(), "d");

    let prod_changes = prod_config.subscribe();
    let mut dev_changes = dev_config.subscribe();
    dev.set("only.dev", "1").await.unwrap();
    within("the dev change", dev_changes.changed())
        .await
        .unwrap();
    assert_eq!(dev_config.get::<u32>("only.dev").unwrap(), 1);
    assert!(prod_config.value("only.dev").is_none());
    assert!(!prod_changes.has_changed().unwrap());
    assert_eq!(prod.get("only.dev").await.unwrap(), None);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_watch_is_opened_again_after_the_service_returns() {
    // The service goes away and comes back on the same port: the source reloads.
    let store = Arc::new(MemoryStore::new());
    let first = start(store.clone()).await;
    let address = first.local_address().to_owned();
    let client = ConfigClient::connect(&address, "prod").unwrap();
    client.set("n", "1").await.unwrap();
    let config = Config::builder()
        .source(client.clone())
        .build()
        .await
        .unwrap();
    first.shutdown().await.unwrap();
    // Written while no service runs (straight into the store): seen after the reopen.
    store
        .put(
            &Namespace::new("config", "prod").unwrap(),
            micro_core::store::Put::new("n", "2"),
        )
        .await
        .unwrap();
    let service = ConfigService::new(store.clone());
    let second = Running {
        running: Service::builder("micro.config")
            .address(address.as_str())
            .registry(Arc::new(MemoryRegistry::new()))
            .add_service(service.clone().into_server())
            .build()
            .unwrap()
            .start()
            .await
            .unwrap(),
        service,
    };
    let mut merged = config.subscribe();
    tokio::time::timeout(
        Duration::from_secs(10),
        merged.wait_for(|tree| tree.get("n") == Some(&json!(2))),
    )
    .await
    .expect("reloaded after the watch came back")
    .unwrap();
    second.shutdown().await.unwrap();
}
