//! `ServiceBuilder::subscribe` end to end over the local broker.

use std::{sync::Arc, time::Duration};

use micro_core::{
    Service,
    broker::{Broker, Delivery, LocalBroker, publish_proto},
    registry::{LocalRegistry, SharedRegistry},
};
use tokio::sync::mpsc;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn wait_for_subscribers(publisher: &LocalBroker, topic: &str, count: usize) -> TestResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while publisher.subscribers(topic).await?.len() != count {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{topic} never had {count} subscribers").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_handles_messages_published_by_another_process() -> TestResult {
    let dir = tempfile::tempdir()?;
    let service_registry: SharedRegistry =
        Arc::new(LocalRegistry::with_dir(dir.path().to_owned())?);
    let publisher_registry: SharedRegistry =
        Arc::new(LocalRegistry::with_dir(dir.path().to_owned())?);
    let publisher = LocalBroker::new(publisher_registry);

    let (tx, mut rx) = mpsc::channel(8);
    let running = Service::builder("billing")
        .registry(service_registry.clone())
        .broker(Arc::new(LocalBroker::new(service_registry)))
        .subscribe("orders.created", move |delivery: Delivery| {
            let tx = tx.clone();
            async move {
                let order: prost_types::Timestamp = delivery
                    .decode()
                    .map_err(|err| tonic::Status::invalid_argument(err.to_string()))?;
                tx.send(order)
                    .await
                    .map_err(|_| tonic::Status::internal("test gone"))?;
                Ok(())
            }
        })
        .shutdown_delay(Duration::ZERO)
        .build()?
        .start()
        .await?;
    wait_for_subscribers(&publisher, "orders.created", 1).await?;

    let order = prost_types::Timestamp {
        seconds: 1234,
        nanos: 5,
    };
    publish_proto(&publisher, "orders.created", &order).await?;
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await?;
    assert_eq!(got, Some(order));

    // Shutdown stops the subscription: it leaves the registry.
    running.shutdown().await?;
    wait_for_subscribers(&publisher, "orders.created", 0).await?;
    publisher
        .publish("orders.created", Default::default())
        .await?;
    Ok(())
}
