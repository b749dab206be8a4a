//! The registry service end to end: `RegistryClient` → gRPC over loopback →
//! `RegistryService` → `MemoryRegistry`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use micro_core::{
    RegistryError, Service,
    registry::{self, MemoryRegistry, SharedRegistry, conformance},
    service::RunningService,
};
use micro_platform::registry::{RegistryClient, RegistryService};

/// The registry service over `backend`; the service itself registers elsewhere, so the
/// conformance suite starts from an empty backend.
async fn start(backend: SharedRegistry) -> RunningService {
    Service::builder("micro.registry")
        .address("127.0.0.1:0")
        .registry(Arc::new(MemoryRegistry::new()))
        .add_service(RegistryService::new(backend).into_server())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn conformance() {
    let running = start(Arc::new(MemoryRegistry::new())).await;
    let client: SharedRegistry =
        Arc::new(RegistryClient::connect(running.local_address()).unwrap());
    conformance::run(client).await;
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn selected_by_url_and_errors_name_the_field() {
    let backend: SharedRegistry = Arc::new(MemoryRegistry::new());
    let running = start(backend.clone()).await;
    micro_platform::install();
    let url = format!("service://{}", running.local_address());
    let client = registry::from_url(&url).unwrap();
    assert_eq!(client.name(), url);
    let record = conformance::service("svc", "1", &[conformance::node("n1", "127.0.0.1:1")]);
    client
        .register(&record, registry::RegisterOptions::default())
        .await
        .unwrap();
    assert_eq!(
        backend.get_service("svc").await.unwrap()[0].nodes,
        record.nodes
    );

    let err = client
        .register(
            &conformance::service("svc", "1", &[conformance::node("", "127.0.0.1:1")]),
            registry::RegisterOptions::default(),
        )
        .await
        .unwrap_err();
    match err {
        RegistryError::InvalidRecord(message) => assert!(message.contains("node id"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(registry::from_url("service://").is_err());
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn closing_ends_watches() {
    let backend: SharedRegistry = Arc::new(MemoryRegistry::new());
    let service = RegistryService::new(backend);
    let running = Service::builder("micro.registry")
        .address("127.0.0.1:0")
        .registry(Arc::new(MemoryRegistry::new()))
        .add_service(service.clone().into_server())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = RegistryClient::connect(running.local_address()).unwrap();
    use micro_core::Registry as _;
    let mut watch = client.watch(Default::default()).await.unwrap();
    service.close_watches();
    let item = tokio::time::timeout(
        conformance::EVENT_TIMEOUT,
        futures_util::StreamExt::next(&mut watch),
    )
    .await
    .unwrap();
    assert!(
        matches!(item, Some(Err(RegistryError::Backend { .. }))),
        "{item:?}"
    );
    assert!(
        client.watch(Default::default()).await.is_err(),
        "new watches are refused"
    );
    running.shutdown().await.unwrap();
}
