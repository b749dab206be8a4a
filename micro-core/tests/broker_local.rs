//! The local broker in one process: what it refuses and a publish without subscribers.
//! Its deliveries across processes (fan-out, queue groups, deregistration) are tested with
//! real OS processes in micro-testkit/tests/broker_local.rs.

use std::sync::Arc;

use bytes::Bytes;
use micro_core::{
    broker::{AckMode, Broker, BrokerError, LocalBroker, Message, SubscribeOptions},
    registry::{LocalRegistry, SharedRegistry},
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A broker with its own registry instance on `dir`.
fn process(dir: &tempfile::TempDir) -> Result<LocalBroker, Box<dyn std::error::Error>> {
    let registry: SharedRegistry = Arc::new(LocalRegistry::with_dir(dir.path().to_owned())?);
    Ok(LocalBroker::new(registry))
}

fn msg(n: u32) -> Message {
    Message {
        headers: [("n".to_owned(), n.to_string())].into_iter().collect(),
        body: Bytes::from(format!("body {n}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_without_subscribers_is_ok() -> TestResult {
    let dir = tempfile::tempdir()?;
    let publisher = process(&dir)?;
    publisher.publish("nobody.listens", msg(1)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_manual_and_long_topics_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let broker = process(&dir)?;
    for options in [
        SubscribeOptions {
            durable: Some("d".to_owned()),
            ..SubscribeOptions::default()
        },
        SubscribeOptions {
            ack: AckMode::Manual,
            ..SubscribeOptions::default()
        },
    ] {
        let err = broker
            .subscribe("t", options)
            .await
            .err()
            .ok_or("accepted")?;
        assert!(matches!(err, BrokerError::Unsupported { .. }), "{err}");
    }
    let long = "a".repeat(190);
    let err = broker
        .publish(&long, msg(0))
        .await
        .err()
        .ok_or("long topic accepted")?;
    assert!(err.to_string().contains("187"), "{err}");
    let err = broker
        .publish("bad topic", msg(0))
        .await
        .err()
        .ok_or("bad topic accepted")?;
    assert!(
        matches!(err, BrokerError::Invalid { what: "topic", .. }),
        "{err}"
    );
    Ok(())
}
