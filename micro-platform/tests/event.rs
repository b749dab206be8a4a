//! The event service end to end: `EventClient` → gRPC over loopback → `EventService` →
//! a broker.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures_util::StreamExt;
use micro_core::{
    Service,
    broker::{
        self, AckMode, Broker, BrokerError, MemoryBroker, Message, SharedBroker, SubscribeOptions,
        Subscription,
    },
    registry::MemoryRegistry,
    service::RunningService,
};
use micro_platform::{
    event::{EventClient, EventService, MAX_BODY_SIZE},
    proto::event::v1::{self as pb, event_client::EventClient as Stub},
};

/// How long a test waits for anything that should happen.
const WAIT: Duration = Duration::from_secs(10);

async fn start() -> (EventService, RunningService) {
    let service = EventService::new(Arc::new(MemoryBroker::new()));
    let running = Service::builder("micro.event")
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

async fn stop(service: EventService, running: RunningService) {
    service.close();
    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .expect("no call left open")
        .unwrap();
}

fn message(body: &str) -> Message {
    Message {
        headers: BTreeMap::from([
            ("content-type".to_owned(), "text/plain".to_owned()),
            ("x-order".to_owned(), body.to_owned()),
        ]),
        body: body.to_owned().into(),
    }
}

async fn next(subscription: &mut Subscription) -> broker::Delivery {
    tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("a delivery in time")
        .expect("the subscription goes on")
        .expect("a delivery, not an error")
}

#[tokio::test]
async fn a_published_message_reaches_a_subscriber_with_its_headers() {
    let (service, running) = start().await;
    let publisher = EventClient::connect(running.local_address()).unwrap();
    let subscriber = EventClient::connect(running.local_address()).unwrap();
    // Returns once the service confirmed the subscription: no wait needed.
    let mut subscription = subscriber
        .subscribe("orders.created", SubscribeOptions::default())
        .await
        .unwrap();
    publisher
        .publish("orders.created", message("42"))
        .await
        .unwrap();
    let delivery = next(&mut subscription).await;
    assert_eq!(&*delivery.topic, "orders.created");
    assert_eq!(delivery.message, message("42"));
    // Typed messages travel with their headers too.
    broker::publish_proto(
        &publisher,
        "orders.created",
        &prost_types::Duration {
            seconds: 7,
            nanos: 0,
        },
    )
    .await
    .unwrap();
    let delivery = next(&mut subscription).await;
    assert_eq!(
        delivery
            .message
            .headers
            .get(broker::HEADER_TYPE)
            .map(String::as_str),
        Some("google.protobuf.Duration")
    );
    let decoded: prost_types::Duration = delivery.decode().unwrap();
    assert_eq!(decoded.seconds, 7);

    // Dropping the subscription ends its call; publishing still works.
    drop(subscription);
    publisher
        .publish("orders.created", message("43"))
        .await
        .unwrap();
    stop(service, running).await;
}

#[tokio::test]
async fn a_queue_group_gets_each_message_exactly_once() {
    let (service, running) = start().await;
    let address = running.local_address().to_owned();
    let group = SubscribeOptions {
        queue: Some("workers".to_owned()),
        ..SubscribeOptions::default()
    };
    let mut members = Vec::new();
    for _ in 0..2 {
        let client = EventClient::connect(&address).unwrap();
        members.push(client.subscribe("jobs", group.clone()).await.unwrap());
    }
    // A plain subscriber next to the group gets everything.
    let everything = EventClient::connect(&address).unwrap();
    let mut all = everything
        .subscribe("jobs", SubscribeOptions::default())
        .await
        .unwrap();

    let publisher = EventClient::connect(&address).unwrap();
    const COUNT: usize = 40;
    for i in 0..COUNT {
        publisher
            .publish("jobs", message(&i.to_string()))
            .await
            .unwrap();
    }
    for i in 0..COUNT {
        assert_eq!(next(&mut all).await.message, message(&i.to_string()));
    }

    let mut seen = vec![0_usize; COUNT];
    let mut per_member = [0_usize; 2];
    let mut received = 0;
    let merged = futures_util::stream::select_all(
        members
            .into_iter()
            .enumerate()
            .map(|(member, subscription)| subscription.map(move |item| (member, item))),
    );
    tokio::pin!(merged);
    while received < COUNT {
        let (member, item) = tokio::time::timeout(WAIT, merged.next())
            .await
            .expect("every message in time")
            .expect("the subscriptions go on");
        let delivery = item.unwrap();
        let body = std::str::from_utf8(&delivery.message.body).unwrap();
        seen[body.parse::<usize>().unwrap()] += 1;
        per_member[member] += 1;
        received += 1;
    }
    assert!(seen.iter().all(|&n| n == 1), "each message once: {seen:?}");
    assert!(
        per_member.iter().all(|&n| n > 0),
        "both members got messages: {per_member:?}"
    );
    // A marker published after everything reaches the group once too, and nothing else
    // came in between: no duplicates arrived late.
    publisher.publish("jobs", message("end")).await.unwrap();
    let (_, marker) = tokio::time::timeout(WAIT, merged.next())
        .await
        .expect("the marker in time")
        .expect("the subscriptions go on");
    assert_eq!(marker.unwrap().message, message("end"));
    stop(service, running).await;
}

#[tokio::test]
async fn bad_topics_and_bodies_are_invalid_argument() {
    let (service, running) = start().await;
    let address = running.local_address().to_owned();

    // Raw gRPC: the service checks, whoever calls.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut stub = Stub::new(channel);
    for topic in ["", "orders..created", "orders.*", "orders.>", "a b"] {
        let status = stub
            .publish(pb::PublishRequest {
                topic: topic.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{topic:?}: {status:?}"
        );
        assert!(
            status.message().contains(&format!("{topic:?}")),
            "names the topic: {status:?}"
        );
        let status = stub
            .subscribe(pb::SubscribeRequest {
                topic: topic.to_owned(),
                queue: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{topic:?}: {status:?}"
        );
        assert!(
            status.message().contains(&format!("{topic:?}")),
            "{status:?}"
        );
    }
    let status = stub
        .subscribe(pb::SubscribeRequest {
            topic: "jobs".to_owned(),
            queue: "no spaces".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("no spaces"), "{status:?}");
    let status = stub
        .publish(pb::PublishRequest {
            topic: "jobs".to_owned(),
            body: vec![0; MAX_BODY_SIZE + 1],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("1 MiB"), "{status:?}");

    // The client: the same errors, as broker errors, before anything is sent.
    let events = EventClient::connect(&address).unwrap();
    let error = events
        .publish("orders..created", Message::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, BrokerError::Invalid { what: "topic", value, .. } if value == "orders..created"),
        "{error:?}"
    );
    let error = events
        .publish(
            "jobs",
            Message {
                body: vec![0; MAX_BODY_SIZE + 1].into(),
                ..Message::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, BrokerError::Invalid { what: "body", .. }),
        "{error:?}"
    );
    // The limit itself is fine.
    events
        .publish(
            "jobs",
            Message {
                body: vec![0; MAX_BODY_SIZE].into(),
                ..Message::default()
            },
        )
        .await
        .unwrap();
    // Durable and manual-ack subscriptions are not offered.
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
        let Err(error) = events.subscribe("jobs", options).await else {
            panic!("accepted");
        };
        assert!(
            matches!(error, BrokerError::Unsupported { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("at most once"), "{error}");
    }
    stop(service, running).await;
}

#[tokio::test]
async fn through_micro_broker_urls() {
    let (service, running) = start().await;
    micro_platform::install();
    let url = format!("service://{}", running.local_address());
    let events: SharedBroker = broker::from_url(&url).unwrap();
    assert_eq!(events.name(), url);
    let mut subscription = events
        .subscribe("by-url", SubscribeOptions::default())
        .await
        .unwrap();
    events.publish("by-url", message("hello")).await.unwrap();
    assert_eq!(next(&mut subscription).await.message, message("hello"));

    // `service` alone: found as `micro.event` through the registry given.
    let registry = Arc::new(MemoryRegistry::new());
    let record = micro_core::registry::Service {
        name: micro_platform::event::SERVICE_NAME.to_owned(),
        endpoints: pb::EVENT_DESCRIPTOR
            .endpoints
            .iter()
            .map(|e| micro_core::registry::Endpoint::from_descriptor(pb::EVENT_DESCRIPTOR.name, e))
            .collect(),
        nodes: vec![micro_core::registry::Node {
            id: "event-1".to_owned(),
            address: running.local_address().to_owned(),
            ..Default::default()
        }],
        ..Default::default()
    };
    micro_core::Registry::register(registry.as_ref(), &record, Default::default())
        .await
        .unwrap();
    let by_name = broker::from_url_with_registry("service", registry).unwrap();
    by_name.publish("by-url", message("by name")).await.unwrap();
    assert_eq!(next(&mut subscription).await.message, message("by name"));

    assert!(matches!(
        broker::from_url("service://"),
        Err(BrokerError::Invalid { .. })
    ));
    stop(service, running).await;
}

#[tokio::test]
async fn closing_ends_streams_and_the_server_stops() {
    let (service, running) = start().await;
    let events = EventClient::connect(running.local_address()).unwrap();
    let mut subscription = events
        .subscribe("closing", SubscribeOptions::default())
        .await
        .unwrap();
    service.close();
    // The client reports the broken stream (and would subscribe again).
    let item = tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("the end in time")
        .expect("an error item");
    assert!(item.is_err(), "{item:?}");
    // No new subscription while closed.
    assert!(
        events
            .subscribe("closing", SubscribeOptions::default())
            .await
            .is_err()
    );
    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .expect("no call left open")
        .unwrap();
}

/// A TCP proxy whose connections can be cut while it keeps accepting new ones.
struct Proxy {
    address: String,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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

    /// Drops every open connection (both ends close).
    fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[tokio::test]
async fn a_subscription_survives_a_broken_connection() {
    let (service, running) = start().await;
    let proxy = Proxy::start(running.local_address().to_owned()).await;
    let subscriber = EventClient::connect(&proxy.address).unwrap();
    let publisher = EventClient::connect(running.local_address()).unwrap();
    let mut subscription = subscriber
        .subscribe("survivor", SubscribeOptions::default())
        .await
        .unwrap();
    publisher
        .publish("survivor", message("before"))
        .await
        .unwrap();
    assert_eq!(next(&mut subscription).await.message, message("before"));

    proxy.cut();
    // The break is reported once...
    let item = tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("the break in time")
        .expect("the subscription goes on");
    assert!(item.is_err(), "{item:?}");
    // ...then the client subscribes again by itself: publish until a message arrives
    // (messages published before it re-subscribed are lost: at most once).
    let deadline = tokio::time::Instant::now() + WAIT;
    let delivery = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never subscribed again"
        );
        publisher
            .publish("survivor", message("after"))
            .await
            .unwrap();
        if let Ok(item) =
            tokio::time::timeout(Duration::from_millis(100), subscription.next()).await
        {
            break item.expect("the subscription goes on");
        }
    };
    assert_eq!(delivery.unwrap().message, message("after"));
    drop(subscription);
    stop(service, running).await;
}
