use std::{collections::HashMap, time::Duration};

use futures_util::StreamExt;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn msg(n: u32) -> Message {
    Message {
        headers: BTreeMap::from([("n".to_owned(), n.to_string())]),
        body: Bytes::from(n.to_string()),
    }
}

async fn next(sub: &mut Subscription) -> Result<Delivery, Box<dyn std::error::Error>> {
    match tokio::time::timeout(Duration::from_secs(5), sub.next()).await? {
        Some(delivery) => Ok(delivery?),
        None => Err("subscription ended".into()),
    }
}

fn queue(name: &str) -> SubscribeOptions {
    SubscribeOptions {
        queue: Some(name.to_owned()),
        ..SubscribeOptions::default()
    }
}

#[tokio::test]
async fn memory_fans_out_to_every_plain_subscriber() -> TestResult {
    let broker = MemoryBroker::new();
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(
            broker
                .subscribe("orders.created", SubscribeOptions::default())
                .await?,
        );
    }
    // A clone shares the subscriptions.
    broker.clone().publish("orders.created", msg(7)).await?;
    for sub in &mut subs {
        let delivery = next(sub).await?;
        assert_eq!(&*delivery.topic, "orders.created");
        assert_eq!(delivery.message, msg(7));
    }
    Ok(())
}

#[tokio::test]
async fn memory_queue_group_gets_each_message_exactly_once() -> TestResult {
    let broker = MemoryBroker::new();
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(broker.subscribe("jobs", queue("workers")).await?);
    }
    let mut plain = broker
        .subscribe("jobs", SubscribeOptions::default())
        .await?;
    for n in 0..300 {
        broker.publish("jobs", msg(n)).await?;
    }
    // Round-robin: 100 each; together every message exactly once; nothing left over.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for member in &mut members {
        for _ in 0..100 {
            let delivery = next(member).await?;
            *seen
                .entry(delivery.message.headers["n"].clone())
                .or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 300, "every message reached the group");
    assert!(seen.values().all(|&c| c == 1), "no message twice");
    for member in &mut members {
        tokio::task::yield_now().await;
        assert!(
            member.next().now_or_never().is_none(),
            "a message left over"
        );
    }
    for n in 0..300 {
        assert_eq!(
            next(&mut plain).await?.message,
            msg(n),
            "plain subscriber gets all, in order"
        );
    }
    Ok(())
}

#[tokio::test]
async fn memory_dropped_subscription_stops_receiving() -> TestResult {
    let broker = MemoryBroker::new();
    let kept = broker.subscribe("a", queue("g")).await?;
    let dropped = broker.subscribe("a", queue("g")).await?;
    drop(dropped);
    let mut kept = kept;
    for n in 0..4 {
        broker.publish("a", msg(n)).await?;
        assert_eq!(next(&mut kept).await?.message, msg(n));
    }
    // No subscribers at all is fine.
    drop(kept);
    broker.publish("a", msg(9)).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn memory_full_buffer_makes_publish_wait_then_fail() -> TestResult {
    let broker = MemoryBroker::with_limits(2, Duration::from_secs(1));
    let mut sub = broker.subscribe("t", SubscribeOptions::default()).await?;
    broker.publish("t", msg(0)).await?;
    broker.publish("t", msg(1)).await?;
    // Waits for room: freed by the subscriber.
    let publish = broker.publish("t", msg(2));
    let (published, first) = tokio::join!(publish, async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        next(&mut sub).await.map(|d| d.message)
    });
    published?;
    assert_eq!(first.map_err(|e| e.to_string())?, msg(0));
    // Stays full: fails after the timeout, naming the topic.
    let err = broker
        .publish("t", msg(3))
        .await
        .err()
        .ok_or("publish succeeded")?;
    assert!(
        err.to_string().contains("\"t\"") && err.to_string().contains("full"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_topics_and_queues_are_rejected_naming_the_problem() -> TestResult {
    let broker = MemoryBroker::new();
    for (topic, problem) in [
        ("", "empty"),
        ("a..b", "empty tokens"),
        (".a", "empty tokens"),
        ("orders.*", "wildcards"),
        ("orders.>", "wildcards"),
        ("has space", "ASCII letters"),
    ] {
        let err = broker.publish(topic, msg(0)).await.err().ok_or(topic)?;
        let text = err.to_string();
        assert!(
            text.contains(problem) && text.contains(&format!("{topic:?}")),
            "{text}"
        );
        let err = broker
            .subscribe(topic, SubscribeOptions::default())
            .await
            .err()
            .ok_or(topic)?;
        assert!(
            matches!(err, BrokerError::Invalid { what: "topic", .. }),
            "{err}"
        );
    }
    let long = "a".repeat(256);
    assert!(
        validate_topic(&long)
            .err()
            .ok_or("long")?
            .to_string()
            .contains("255")
    );
    let err = broker
        .subscribe("ok", queue("bad queue"))
        .await
        .err()
        .ok_or("queue")?;
    assert!(
        matches!(err, BrokerError::Invalid { what: "queue", .. }),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn memory_refuses_durable_and_manual_ack() -> TestResult {
    let broker = MemoryBroker::new();
    let durable = SubscribeOptions {
        durable: Some("billing".to_owned()),
        ..SubscribeOptions::default()
    };
    let manual = SubscribeOptions {
        ack: AckMode::Manual,
        ..SubscribeOptions::default()
    };
    for options in [durable, manual] {
        let err = broker
            .subscribe("t", options)
            .await
            .err()
            .ok_or("accepted")?;
        assert!(matches!(err, BrokerError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("memory"), "{err}");
    }
    Ok(())
}

#[tokio::test]
async fn proto_messages_round_trip_with_headers() -> TestResult {
    let broker = MemoryBroker::new();
    let mut sub = broker
        .subscribe("clock", SubscribeOptions::default())
        .await?;
    let tick = prost_types::Timestamp {
        seconds: 42,
        nanos: 7,
    };
    publish_proto(&broker, "clock", &tick).await?;
    let delivery = next(&mut sub).await?;
    assert_eq!(
        delivery.message.headers[HEADER_CONTENT_TYPE],
        CONTENT_TYPE_PROTOBUF
    );
    assert_eq!(
        delivery.message.headers[HEADER_TYPE],
        "google.protobuf.Timestamp"
    );
    assert_eq!(delivery.decode::<prost_types::Timestamp>()?, tick);

    let json = Delivery::new(
        "clock",
        Message {
            headers: BTreeMap::from([(
                HEADER_CONTENT_TYPE.to_owned(),
                "application/json".to_owned(),
            )]),
            body: Bytes::from_static(b"{}"),
        },
        None,
    );
    let err = json
        .decode::<prost_types::Timestamp>()
        .err()
        .ok_or("decoded json")?;
    assert!(err.to_string().contains("application/json"), "{err}");
    Ok(())
}

use futures_util::FutureExt as _;
