//! The local broker across "processes": separate broker and registry instances on one
//! registry directory, delivering over real gRPC on loopback.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use micro_core::{
    broker::{AckMode, Broker, BrokerError, LocalBroker, Message, SubscribeOptions, Subscription},
    registry::{LocalRegistry, SharedRegistry},
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One simulated process: its own registry instance on the shared directory, its own broker.
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

fn queue(name: &str) -> SubscribeOptions {
    SubscribeOptions {
        queue: Some(name.to_owned()),
        ..SubscribeOptions::default()
    }
}

/// Waits until `publisher` sees exactly `count` subscribers of `topic`.
async fn wait_for_subscribers(publisher: &LocalBroker, topic: &str, count: usize) -> TestResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = publisher.subscribers(topic).await?.len();
        if seen == count {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(
                format!("publisher sees {seen} subscribers of {topic}, expected {count}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next(sub: &mut Subscription) -> Result<Message, Box<dyn std::error::Error>> {
    match tokio::time::timeout(Duration::from_secs(5), sub.next()).await? {
        Some(delivery) => Ok(delivery?.message),
        None => Err("subscription ended".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_process() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (a, b, publisher) = (process(&dir)?, process(&dir)?, process(&dir)?);
    let mut sub_a = a
        .subscribe("orders.created", SubscribeOptions::default())
        .await?;
    let mut sub_b = b
        .subscribe("orders.created", SubscribeOptions::default())
        .await?;
    let mut sub_b2 = b
        .subscribe("orders.created", SubscribeOptions::default())
        .await?;
    wait_for_subscribers(&publisher, "orders.created", 3).await?;

    for n in 0..20 {
        publisher.publish("orders.created", msg(n)).await?;
    }
    for sub in [&mut sub_a, &mut sub_b, &mut sub_b2] {
        for n in 0..20 {
            assert_eq!(
                next(sub).await?,
                msg(n),
                "every subscription, in publish order"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_group_shares_messages_across_processes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (a, b, publisher) = (process(&dir)?, process(&dir)?, process(&dir)?);
    let mut members = vec![
        a.subscribe("jobs", queue("workers")).await?,
        b.subscribe("jobs", queue("workers")).await?,
        b.subscribe("jobs", queue("workers")).await?,
    ];
    let mut plain = a.subscribe("jobs", SubscribeOptions::default()).await?;
    wait_for_subscribers(&publisher, "jobs", 4).await?;

    for n in 0..90 {
        publisher.publish("jobs", msg(n)).await?;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for member in &mut members {
        // Round-robin over the group: 30 each.
        for _ in 0..30 {
            *seen
                .entry(next(member).await?.headers["n"].clone())
                .or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 90, "every message reached the group");
    assert!(
        seen.values().all(|&c| c == 1),
        "each message to exactly one member"
    );
    for member in &mut members {
        tokio::task::yield_now().await;
        assert!(
            member.next().now_or_never().is_none(),
            "a member got more than its share"
        );
    }
    for n in 0..90 {
        assert_eq!(
            next(&mut plain).await?,
            msg(n),
            "plain subscriber still gets everything"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_subscriber_is_deregistered_and_stops_receiving() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (a, b, publisher) = (process(&dir)?, process(&dir)?, process(&dir)?);
    let mut kept = a.subscribe("news", SubscribeOptions::default()).await?;
    let dropped = b.subscribe("news", SubscribeOptions::default()).await?;
    let mut member = a.subscribe("news", queue("g")).await?;
    let dropped_member = b.subscribe("news", queue("g")).await?;
    wait_for_subscribers(&publisher, "news", 4).await?;

    drop(dropped);
    drop(dropped_member);
    // Before the deregistration is seen, deliveries to the dropped ones answer NOT_FOUND,
    // which does not fail the publish; the group falls back to its live member.
    for n in 0..10 {
        publisher.publish("news", msg(n)).await?;
    }
    wait_for_subscribers(&publisher, "news", 2).await?;
    for n in 10..20 {
        publisher.publish("news", msg(n)).await?;
    }
    for n in 0..20 {
        assert_eq!(next(&mut kept).await?, msg(n));
        assert_eq!(
            next(&mut member).await?,
            msg(n),
            "the group's live member gets all"
        );
    }
    Ok(())
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
