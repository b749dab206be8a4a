//! The zero-config cross-process broker: subscribers registered in the registry, publishers
//! delivering to them over gRPC.

mod endpoint;
mod publish;

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, atomic::AtomicUsize},
    time::Duration,
};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::{OnceCell, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use self::endpoint::{Endpoint, Route, Routes};
use super::{
    Broker, BrokerError, Delivery, Message, SubscribeOptions, Subscription, memory::check_options,
    validate_topic,
};
use crate::registry::{CacheRegistry, Node, RegisterOptions, Service as Record, SharedRegistry};

/// How many messages a subscription buffers before deliveries wait. Default is 1024.
pub const DEFAULT_BUFFER: usize = 1024;
/// How long a delivery waits for room in a full subscription buffer before the endpoint
/// answers `RESOURCE_EXHAUSTED`, and (plus one second) the deadline of a publisher's
/// `Deliver` call. Default is 5 seconds.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a subscription's registration lives without renewal. Default is 30 seconds.
pub const DEFAULT_TTL: Duration = crate::registry::DEFAULT_TTL;
/// How often a subscription's registration is renewed. Default is 10 seconds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Where the broker endpoint listens. Default is loopback, any free port.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:0";
/// The prefix of the registry service a topic's subscriptions register under.
pub const SERVICE_PREFIX: &str = "micro.broker.";

/// Registry names are at most 200 bytes; the prefix takes 13 of them.
const MAX_TOPIC_LEN: usize = 200 - SERVICE_PREFIX.len();
const NAME: &str = "local";

/// Publish/subscribe between processes on one machine, with nothing to install: the
/// registry says who subscribes, gRPC carries the messages. Selected by `MICRO_BROKER=local`
/// (the default).
///
/// # How it works
///
/// The first subscription of a `LocalBroker` (clones share it) starts its *broker
/// endpoint*: a small gRPC server on [`DEFAULT_ADDRESS`] serving `micro.broker.v1.Broker`.
/// Every subscription registers one node of the registry service
/// `micro.broker.<topic>`, with the endpoint's address, and renews it like a service
/// renews its registration (TTL [`DEFAULT_TTL`], every [`DEFAULT_INTERVAL`]). Dropping the
/// subscription deregisters the node; a crashed process' nodes expire with their TTL.
///
/// A publisher looks `micro.broker.<topic>` up through a [`CacheRegistry`] (a watch keeps
/// it fresh; no registry read per publish) and calls `Deliver` on:
/// - every node whose `queue` is empty (plain subscriptions), and
/// - for each queue group, one of its nodes, picked round-robin; when that delivery fails,
///   the next member of the group is tried.
///
/// Deliveries to the targets run concurrently; `publish` returns `Ok` when every target
/// accepted the message into its buffer, or when there is no subscriber at all (as NATS
/// core does). A subscription that answers `NOT_FOUND` was dropped after its node was
/// read: it no longer counts.
///
/// # Wire format
///
/// Registry record of a subscription (one node of service `micro.broker.<topic>`):
///
/// | field | value |
/// |---|---|
/// | node id | the subscription id, `sub-<uuid v4>` |
/// | node address | the endpoint's `host:port` (plain-text HTTP/2) |
/// | node metadata `queue` | the queue group, empty for a plain subscription |
/// | node metadata `subscription` | the subscription id again |
/// | node metadata `topic` | the topic |
/// | node metadata `protocol` | `grpc` |
///
/// The message travels as a unary gRPC call `/micro.broker.v1.Broker/Deliver` (see
/// `proto/micro/broker/v1/broker.proto`) with `DeliverRequest { topic, headers, body,
/// queue, subscription }`, `subscription` being the target node's id. The body is
/// carried as is; headers are the message's headers (`content-type`, `micro-type`, ... see
/// [the module docs](super)). Answers: `OK` accepted; `NOT_FOUND` no such subscription
/// (dropped); `RESOURCE_EXHAUSTED` its buffer stayed full for the endpoint's publish
/// timeout; `INVALID_ARGUMENT` the topic does not match the subscription's. Any process
/// that can read the registry and speak gRPC, in any language, can publish this way.
///
/// # Guarantees and limits
///
/// - At most once per subscription, no persistence: durable subscriptions and
///   [`AckMode::Manual`](super::AckMode::Manual) are [`BrokerError::Unsupported`].
/// - Backpressure, never a silent drop: a subscription whose buffer is full makes the
///   delivery wait up to the publish timeout, then fail; `publish` then returns an error
///   naming the failed targets. The other targets may have received the message.
/// - A plain subscriber whose process died without deregistering makes publishes to its
///   topic fail (connection refused) until its node expires with the TTL.
/// - A queue group delivery that timed out after the member accepted it is retried on
///   another member, so a message may reach a group twice in that case.
/// - Messages of one publisher to one subscription arrive in publish order when the
///   publisher awaits each `publish`.
/// - Topics are limited to 187 bytes (registry names are at most 200); the endpoint speaks
///   TCP only, and accepts messages up to tonic's default 4 MiB.
#[derive(Clone)]
pub struct LocalBroker {
    inner: Arc<Inner>,
}

/// Configures a [`LocalBroker`]; made by [`LocalBroker::builder`].
#[derive(Debug)]
#[must_use]
pub struct LocalBrokerBuilder {
    registry: SharedRegistry,
    config: Config,
}

#[derive(Debug, Clone)]
struct Config {
    address: String,
    buffer: usize,
    publish_timeout: Duration,
    ttl: Duration,
    interval: Duration,
}

struct Inner {
    registry: SharedRegistry,
    cache: CacheRegistry,
    config: Config,
    /// The broker endpoint, started by the first subscription.
    endpoint: OnceCell<Endpoint>,
    routes: Arc<Routes>,
    /// gRPC clients by endpoint address, shared by publishes.
    clients: Mutex<BTreeMap<String, publish::Client>>,
    /// Round-robin position for queue groups.
    next: AtomicUsize,
}

/// Lives as long as a subscription's stream: removes its route and, through the heartbeat
/// task, deregisters its node.
struct Unsubscribe {
    inner: Arc<Inner>,
    id: String,
    _stop_heartbeat: oneshot::Sender<()>,
}

// === impl LocalBroker ===

impl LocalBroker {
    /// A broker on `registry` with the defaults.
    pub fn new(registry: SharedRegistry) -> Self {
        Self::builder(registry).build()
    }

    /// Starts configuring a broker on `registry`.
    pub fn builder(registry: SharedRegistry) -> LocalBrokerBuilder {
        LocalBrokerBuilder {
            registry,
            config: Config {
                address: DEFAULT_ADDRESS.to_owned(),
                buffer: DEFAULT_BUFFER,
                publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
                ttl: DEFAULT_TTL,
                interval: DEFAULT_INTERVAL,
            },
        }
    }

    /// The nodes this broker's publishes to `topic` currently go to (as its registry cache
    /// sees them), sorted by id.
    ///
    /// # Errors
    /// An invalid topic, or when the registry cannot be read.
    pub async fn subscribers(&self, topic: &str) -> Result<Vec<Node>, BrokerError> {
        check_topic(topic)?;
        self.inner.subscribers(topic).await
    }

    /// The address of this broker's endpoint, once a subscription started it.
    pub fn endpoint_address(&self) -> Option<&str> {
        self.inner.endpoint.get().map(|e| e.address.as_str())
    }
}

impl fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalBroker")
            .field("registry", &self.inner.registry.name())
            .field("config", &self.inner.config)
            .field("endpoint", &self.endpoint_address())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Broker for LocalBroker {
    fn name(&self) -> &str {
        NAME
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), BrokerError> {
        check_topic(topic)?;
        self.inner.publish(topic, message).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, BrokerError> {
        check_topic(topic)?;
        check_options(NAME, &options)?;
        let inner = &self.inner;
        let address = inner
            .endpoint
            .get_or_try_init(|| Endpoint::start(&inner.config, inner.routes.clone()))
            .await?
            .address
            .clone();

        let id = format!("sub-{}", uuid::Uuid::new_v4());
        let queue = options.queue.unwrap_or_default();
        let (tx, rx) = mpsc::channel(inner.config.buffer);
        inner.routes.insert(
            id.clone(),
            Route {
                topic: topic.to_owned(),
                tx,
            },
        );
        let record = Record {
            name: service_name(topic),
            nodes: vec![Node {
                id: id.clone(),
                address,
                metadata: BTreeMap::from([
                    ("queue".to_owned(), queue),
                    ("subscription".to_owned(), id.clone()),
                    ("topic".to_owned(), topic.to_owned()),
                    ("protocol".to_owned(), "grpc".to_owned()),
                ]),
            }],
            ..Record::default()
        };
        let options = RegisterOptions {
            ttl: inner.config.ttl,
        };
        if let Err(err) = inner.registry.register(&record, options).await {
            inner.routes.remove(&id);
            return Err(BrokerError::Backend {
                broker: NAME.to_owned(),
                message: format!(
                    "cannot register the subscription to {topic:?} in registry {}",
                    inner.registry.name()
                ),
                source: Some(Box::new(err)),
            });
        }
        tracing::debug!(%topic, subscription = %id, "subscribed");
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(heartbeat(
            inner.registry.clone(),
            record,
            options,
            inner.config.interval,
            stopped,
        ));
        let guard = Unsubscribe {
            inner: inner.clone(),
            id,
            _stop_heartbeat: stop,
        };
        let topic: Arc<str> = Arc::from(topic);
        Ok(Box::pin(ReceiverStream::new(rx).map(move |message| {
            // The stream owns the guard: dropping the stream unsubscribes.
            let _ = &guard;
            Ok(Delivery::new(Arc::clone(&topic), message, None))
        })))
    }
}

// === impl LocalBrokerBuilder ===

impl LocalBrokerBuilder {
    /// Sets where the broker endpoint listens (`host:port`). Default is
    /// [`DEFAULT_ADDRESS`].
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.config.address = address.into();
        self
    }

    /// Sets how many messages each subscription buffers (at least 1). Default is
    /// [`DEFAULT_BUFFER`].
    pub fn buffer(mut self, messages: usize) -> Self {
        self.config.buffer = messages.max(1);
        self
    }

    /// Sets how long a delivery waits for room in a full buffer. Default is
    /// [`DEFAULT_PUBLISH_TIMEOUT`].
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config.publish_timeout = timeout;
        self
    }

    /// Sets the registration TTL of subscriptions and how often it is renewed (at most a
    /// third of the TTL, so one missed renewal does not expire a subscription). Default is [`DEFAULT_TTL`] and [`DEFAULT_INTERVAL`].
    pub fn ttl(mut self, ttl: Duration, interval: Duration) -> Self {
        self.config.ttl = ttl;
        self.config.interval = interval.min(ttl / 3).max(Duration::from_millis(1));
        self
    }

    /// Builds the broker; its endpoint starts with the first subscription.
    pub fn build(self) -> LocalBroker {
        let cache = CacheRegistry::new(self.registry.clone());
        LocalBroker {
            inner: Arc::new(Inner {
                registry: self.registry,
                cache,
                config: self.config,
                endpoint: OnceCell::new(),
                routes: Arc::new(Routes::default()),
                clients: Mutex::new(BTreeMap::new()),
                next: AtomicUsize::new(0),
            }),
        }
    }
}

// === impl Unsubscribe ===

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        // Deliveries for it are answered NOT_FOUND from now on; the heartbeat task sees its
        // stop sender dropped and deregisters the node.
        self.inner.routes.remove(&self.id);
        tracing::debug!(subscription = %self.id, "unsubscribed");
    }
}

/// The registry service of `topic`'s subscriptions.
fn service_name(topic: &str) -> String {
    format!("{SERVICE_PREFIX}{topic}")
}

fn check_topic(topic: &str) -> Result<(), BrokerError> {
    validate_topic(topic)?;
    if topic.len() > MAX_TOPIC_LEN {
        return Err(BrokerError::Invalid {
            what: "topic",
            value: topic.to_owned(),
            reason: format!(
                "must be at most {MAX_TOPIC_LEN} bytes for the local broker \
                 (registry names are at most 200 bytes)"
            ),
        });
    }
    Ok(())
}

/// Renews the subscription's registration until its stop sender is dropped, then
/// deregisters it.
async fn heartbeat(
    registry: SharedRegistry,
    record: Record,
    options: RegisterOptions,
    every: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stop => break,
        }
        if let Err(err) = registry.register(&record, options).await {
            tracing::warn!(topic = %record.name, error = %err, "subscription re-registration failed; retrying next interval");
        }
    }
    if let Err(err) = registry.deregister(&record).await {
        tracing::warn!(topic = %record.name, error = %err, "subscription deregistration failed; it expires with its TTL");
    }
}
