//! The kv service end to end: `KvClient` → gRPC over loopback → `KvService` → `MemoryStore`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use micro_core::{
    Client, Service,
    registry::{MemoryRegistry, SharedRegistry},
    service::RunningService,
    store::{self, MemoryStore, Namespace, Put, SharedStore, Store, StoreError},
};
use micro_platform::{
    kv::{KvClient, KvService},
    proto::kv::v1 as pb,
};

/// A kv service over a fresh memory store, registered in `registry`.
async fn start(registry: SharedRegistry) -> RunningService {
    Service::builder("micro.kv")
        .address("127.0.0.1:0")
        .registry(registry)
        .add_service(KvService::new(Arc::new(MemoryStore::new())).into_server())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn conformance_over_a_fixed_address() {
    let running = start(Arc::new(MemoryRegistry::new())).await;
    let kv: SharedStore = Arc::new(KvClient::connect(running.local_address()).unwrap());
    store::conformance::run(kv).await;
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn found_by_name_and_through_micro_store() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let running = start(registry.clone()).await;
    let by_name = KvClient::from_client(&Client::new(registry));
    let ns = Namespace::default();
    assert_eq!(by_name.put(&ns, Put::new("k", "v")).await.unwrap(), 1);

    micro_platform::install();
    let url = format!("service://{}", running.local_address());
    let by_url = store::from_url(&url).unwrap();
    assert_eq!(by_url.name(), url);
    let record = by_url.get(&ns, "k").await.unwrap().unwrap();
    assert_eq!((record.value.as_ref(), record.version), (&b"v"[..], 1));
    assert!(matches!(
        store::from_url("service://"),
        Err(StoreError::InvalidArgument(_))
    ));
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let running = start(Arc::new(MemoryRegistry::new())).await;
    let mut raw = pb::kv_client::KvClient::connect(format!("http://{}", running.local_address()))
        .await
        .unwrap();
    let ns = |database: &str, table: &str| {
        Some(pb::Namespace {
            database: database.into(),
            table: table.into(),
        })
    };
    let write = |key: &str| pb::Write {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    let cases: Vec<(tonic::Status, &str)> = vec![
        (
            raw.get(pb::GetRequest {
                namespace: None,
                key: "k".into(),
            })
            .await
            .unwrap_err(),
            "namespace is missing",
        ),
        (
            raw.get(pb::GetRequest {
                namespace: ns("db", "a/b"),
                key: "k".into(),
            })
            .await
            .unwrap_err(),
            "table name",
        ),
        (
            raw.put(pb::PutRequest {
                namespace: ns("db", "t"),
                write: Some(write("")),
            })
            .await
            .unwrap_err(),
            "key is empty",
        ),
        (
            raw.put(pb::PutRequest {
                namespace: ns("db", "t"),
                write: None,
            })
            .await
            .unwrap_err(),
            "write is missing",
        ),
        (
            raw.put(pb::PutRequest {
                namespace: ns("db", "t"),
                write: Some(pb::Write {
                    ttl: Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    }),
                    ..write("k")
                }),
            })
            .await
            .unwrap_err(),
            "ttl of key \"k\"",
        ),
        (
            raw.delete(pb::DeleteRequest {
                namespace: ns("db", "t"),
                key: "k".into(),
                condition: Some(pb::Condition {
                    condition: Some(pb::condition::Condition::Absent(pb::Absent {})),
                }),
            })
            .await
            .unwrap_err(),
            "condition Absent",
        ),
        (
            raw.list(pb::ListRequest {
                namespace: ns("db", "t"),
                limit: 5000,
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "limit 5000",
        ),
        (
            raw.put_many(pb::PutManyRequest {
                namespace: ns("db", "t"),
                writes: vec![write("a"), write("a")],
            })
            .await
            .unwrap_err(),
            "appears twice",
        ),
    ];
    for (status, want) in cases {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(want), "{want:?} in {status:?}");
    }
    // Nothing of it reached the store.
    let listed = raw
        .list(pb::ListRequest {
            namespace: ns("db", "t"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.keys.is_empty(), "{listed:?}");
    running.shutdown().await.unwrap();
}
