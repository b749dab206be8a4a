//! The client's view: a cache over the local registry, fed by another instance.

use std::time::Duration;

use micro_core::registry::{CacheRegistry, Node, RegisterOptions, Registry, Service, from_url};

const WAIT: Duration = Duration::from_secs(5);

fn greeter(id: &str, port: u16) -> Service {
    Service {
        name: "greeter".into(),
        version: "1.0.0".into(),
        nodes: vec![Node {
            id: id.into(),
            address: format!("127.0.0.1:{port}"),
            ..Node::default()
        }],
        ..Service::default()
    }
}

#[tokio::test]
async fn cache_over_local_sees_registrations_and_expiry() {
    let tmp = tempfile::TempDir::new().unwrap();
    let url = format!("local://{}", tmp.path().join("registry").display());
    let server = from_url(&url).unwrap();
    let client = CacheRegistry::new(from_url(&url).unwrap());
    assert_eq!(client.name(), url);

    let mut nodes = client.subscribe("greeter").await.unwrap();
    assert!(nodes.borrow_and_update().is_empty());

    let ttl = Duration::from_millis(300);
    server
        .register(&greeter("g-1", 5001), RegisterOptions { ttl })
        .await
        .unwrap();
    server
        .register(&greeter("g-2", 5002), RegisterOptions::default())
        .await
        .unwrap();
    let both = |s: &Vec<Service>| s.len() == 1 && s[0].nodes.len() == 2;
    tokio::time::timeout(WAIT, nodes.wait_for(|s| both(s)))
        .await
        .unwrap()
        .unwrap();

    // g-1 stops renewing, as a crashed process would: the cache drops it after its TTL.
    let one = |s: &Vec<Service>| s.len() == 1 && s[0].nodes.len() == 1;
    tokio::time::timeout(WAIT, nodes.wait_for(|s| one(s)))
        .await
        .unwrap()
        .unwrap();
    let left = client.get_service("greeter").await.unwrap();
    assert_eq!(left[0].nodes[0].id, "g-2");

    server.deregister(&greeter("g-2", 0)).await.unwrap();
    tokio::time::timeout(WAIT, nodes.wait_for(|s| s.is_empty()))
        .await
        .unwrap()
        .unwrap();
}
