//! Channels over fixed addresses: the static resolver balances, fails over and reports
//! like a registry-backed channel, without a registry.

use std::{collections::BTreeSet, sync::Arc};

use micro_core::{
    Channel, Client, NodeInfo,
    registry::{MemoryRegistry, SharedRegistry},
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A gRPC server with the health service on a free loopback port, bound before it is
/// returned, so calls can go to it at once.
async fn health_server() -> Result<String, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Ok(address)
}

/// An address nothing listens on: connections are refused.
async fn refused_address() -> Result<String, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.to_string())
}

async fn check(channel: &Channel) -> Result<String, tonic::Status> {
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await?;
    let node = response
        .extensions()
        .get::<NodeInfo>()
        .ok_or_else(|| tonic::Status::internal("no NodeInfo on the response"))?;
    Ok(node.id().to_owned())
}

#[tokio::test]
async fn balances_over_fixed_addresses_and_skips_a_dead_one() -> TestResult {
    let dead = refused_address().await?;
    let (a, b) = (health_server().await?, health_server().await?);
    let channel = Channel::from_addresses("probe", [dead, a, b])?;
    assert_eq!(channel.service(), "probe");

    let mut answered = BTreeSet::new();
    for _ in 0..40 {
        // The dead node is never the one that answers, and no call fails because of it.
        answered.insert(check(&channel).await?);
    }
    let want: BTreeSet<String> = ["probe-1".to_owned(), "probe-2".to_owned()].into();
    assert_eq!(answered, want);
    Ok(())
}

#[tokio::test]
async fn every_address_dead_names_them_all() -> TestResult {
    let (dead, other) = (refused_address().await?, refused_address().await?);
    let channel = Channel::from_addresses("probe", [dead.clone(), other.clone()])?;
    let status = check(&channel).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    for address in [&dead, &other] {
        assert!(status.message().contains(address.as_str()), "{status}");
    }
    Ok(())
}

#[tokio::test]
async fn addresses_are_checked_up_front() {
    let err = Channel::from_addresses("probe", ["http://127.0.0.1:7700"]).unwrap_err();
    assert_eq!(err.address(), "http://127.0.0.1:7700");
    assert!(err.to_string().contains("host:port"), "{err}");
    assert!(Channel::from_addresses("probe", [" "]).is_err());
    assert!(Channel::from_addresses("probe", ["unix:/run/probe.sock"]).is_ok());
}

#[tokio::test]
async fn no_addresses_is_unavailable_naming_the_service() -> TestResult {
    let channel = Channel::from_addresses("probe", Vec::<String>::new())?;
    let status = check(&channel).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("probe"), "{status}");
    Ok(())
}

#[tokio::test]
async fn static_nodes_leave_other_names_to_the_registry() -> TestResult {
    let address = health_server().await?;
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let client = Client::builder()
        .registry(registry)
        .static_nodes("probe", [address])
        .build()?;
    assert_eq!(check(&client.channel("probe")).await?, "probe-0");
    let status = check(&client.channel("other")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("not found in registry"),
        "{status}"
    );
    Ok(())
}

#[tokio::test]
async fn a_client_without_registry_knows_only_its_static_services() -> TestResult {
    let address = health_server().await?;
    let client = Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .static_service(micro_core::registry::Service {
            name: "probe".to_owned(),
            version: "2.0.0".to_owned(),
            nodes: vec![micro_core::registry::Node {
                id: "probe-a".to_owned(),
                address,
                ..Default::default()
            }],
            ..Default::default()
        })
        .build_static();
    assert_eq!(check(&client.channel("probe")).await?, "probe-a");
    let status = check(&client.channel("other")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("other"), "{status}");
    Ok(())
}
