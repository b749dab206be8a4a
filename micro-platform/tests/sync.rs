//! The sync service end to end: `SyncClient` → gRPC over loopback → `SyncService` →
//! `MemorySync`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{sync::Arc, time::Duration};

use micro_core::{
    Service,
    registry::MemoryRegistry,
    service::RunningService,
    sync::{self, LockOptions, MemorySync, SharedSync, Sync, SyncError},
};
use micro_platform::sync::{SyncClient, SyncService};
use tokio::{net::TcpListener, task::JoinHandle};

async fn start() -> (SyncService, RunningService) {
    let service = SyncService::new(Arc::new(MemorySync::new()));
    let running = Service::builder("micro.sync")
        .address("127.0.0.1:0")
        .registry(Arc::new(MemoryRegistry::new()))
        .add_service(service.clone().into_server())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    (service, running)
}

#[tokio::test]
async fn conformance_over_grpc() {
    let (service, running) = start().await;
    let client: SharedSync = Arc::new(SyncClient::connect(running.local_address()).unwrap());
    sync::conformance::run(client).await;
    service.close();
    tokio::time::timeout(Duration::from_secs(2), running.shutdown())
        .await
        .expect("no call left open")
        .unwrap();
}

#[tokio::test]
async fn through_micro_sync_urls() {
    let (service, running) = start().await;
    micro_platform::install();
    let url = format!("service://{}", running.local_address());
    let client = sync::from_url(&url).await.unwrap();
    assert_eq!(client.name(), url);
    let lock = client.lock("by-url", LockOptions::default()).await.unwrap();
    assert!(lock.is_held());
    lock.release().await.unwrap();
    assert!(matches!(
        sync::from_url("service://").await,
        Err(SyncError::InvalidArgument(_))
    ));
    service.close();
    tokio::time::timeout(Duration::from_secs(2), running.shutdown())
        .await
        .expect("no call left open")
        .unwrap();
}

/// A TCP proxy whose connections can all be cut at once.
struct Proxy {
    address: String,
    connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let connections = Arc::clone(&connections);
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let target = target.clone();
                    connections.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    }));
                }
            }
        });
        Self {
            address,
            connections,
            accept,
        }
    }

    /// Drops every connection (both ends close) and stops accepting.
    fn cut(&self) {
        self.accept.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

#[tokio::test]
async fn a_lock_dies_with_its_holders_connection() {
    let (service, running) = start().await;
    let proxy = Proxy::start(running.local_address().to_owned()).await;
    let holder = SyncClient::connect(&proxy.address).unwrap();
    let other = SyncClient::connect(running.local_address()).unwrap();
    let options = LockOptions {
        ttl: Duration::from_secs(30),
        wait: Some(Duration::ZERO),
    };
    let mut lock = holder.lock("cut", options).await.unwrap();
    let leadership = holder
        .campaign("cut-election", "holder", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(
        other.lock("cut", options).await,
        Err(SyncError::Timeout { .. })
    ));
    assert_eq!(
        other.leader("cut-election").await.unwrap().map(|l| l.id),
        Some("holder".to_owned())
    );

    proxy.cut();
    // The holder learns it lost the lock, and the service released it (the lease of 30 s
    // did not have to run out).
    tokio::time::timeout(Duration::from_secs(5), lock.lost())
        .await
        .expect("the holder sees the lock lost");
    assert!(!lock.is_held());
    let taken = other
        .lock(
            "cut",
            LockOptions {
                ttl: Duration::from_secs(30),
                wait: Some(Duration::from_secs(5)),
            },
        )
        .await
        .expect("released for others when the holder's connection dropped");
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        other.campaign("cut-election", "other", Duration::from_secs(30)),
    )
    .await
    .expect("the next candidate leads")
    .unwrap();
    assert!(!leadership.is_leader());
    assert!(next.term() > leadership.term());
    taken.release().await.unwrap();
    next.resign().await.unwrap();
    drop(lock);
    service.close();
    tokio::time::timeout(Duration::from_secs(2), running.shutdown())
        .await
        .expect("no call left open")
        .unwrap();
}

#[tokio::test]
async fn closing_the_service_ends_holdings() {
    let (service, running) = start().await;
    let client = SyncClient::connect(running.local_address()).unwrap();
    let mut lock = client
        .lock("closing", LockOptions::default())
        .await
        .unwrap();
    let mut observed = client.observe("closing-election").await.unwrap();
    assert_eq!(*observed.borrow_and_update(), None);
    service.close();
    tokio::time::timeout(Duration::from_secs(5), lock.lost())
        .await
        .expect("a closed service's holdings are lost");
    // Nothing left open: the drain does not wait.
    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .expect("the shutdown does not wait for holdings")
        .unwrap();
}

#[tokio::test]
async fn a_waiter_that_gives_up_leaves_the_queue() {
    let (service, running) = start().await;
    let client = SyncClient::connect(running.local_address()).unwrap();
    let held = client
        .lock("given-up", LockOptions::default())
        .await
        .unwrap();
    // Waits as long as it takes, but the caller stops waiting.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        client.lock("given-up", LockOptions::default()),
    )
    .await;
    assert!(gave_up.is_err(), "still held");
    let token = held.token();
    held.release().await.unwrap();
    // The next one gets it, not the waiter that gave up (which would hold it for a moment).
    let next = client
        .lock(
            "given-up",
            LockOptions {
                wait: Some(Duration::from_secs(3)),
                ..LockOptions::default()
            },
        )
        .await
        .unwrap();
    // MemorySync counts acquisitions: none happened in between.
    assert_eq!(
        next.token(),
        token + 1,
        "the waiter that gave up never held it"
    );
    next.release().await.unwrap();
    service.close();
    tokio::time::timeout(Duration::from_secs(2), running.shutdown())
        .await
        .expect("no call left open")
        .unwrap();
}
