//! A [`Broker`] on NATS: core pub/sub with queue groups, and JetStream for durable,
//! at-least-once subscriptions with ack, redelivery and de-duplication by message id.
//!
//! ```no_run
//! # async fn demo() -> Result<(), micro_core::broker::BrokerError> {
//! use micro_core::broker::{AckMode, Broker, Message, SubscribeOptions};
//! use micro_plugins::nats::NatsBroker;
//!
//! // Core NATS: fast; a publish that returned Ok arrives at least once (see below).
//! let broker = NatsBroker::connect("nats://127.0.0.1:4222").await?;
//! broker.publish("orders.created", Message::default()).await?;
//!
//! // JetStream: publishes are stored and acknowledged by the server.
//! let durable = NatsBroker::builder("nats://127.0.0.1:4222").jetstream(true).connect().await?;
//! let options = SubscribeOptions {
//!     durable: Some("billing".into()),
//!     ack: AckMode::Manual,
//!     ..SubscribeOptions::default()
//! };
//! let mut deliveries = durable.subscribe("orders.created", options).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Wire format
//!
//! Everything a non-Rust NATS client needs to publish to, or read from, a micro topic:
//!
//! - **Subject**: `<prefix>.<topic>`, prefix `micro` unless set with
//!   [`NatsBrokerBuilder::prefix`]. Topic `orders.created` is subject `micro.orders.created`.
//!   Topics are dot-separated tokens of `[A-Za-z0-9_-]` (see
//!   [`validate_topic`]), so a subject maps back to exactly one topic.
//! - **Body**: the [`Message::body`] bytes as they are, no framing or envelope.
//! - **Headers**: each entry of [`Message::headers`] is one NATS header with the same name
//!   and value (names and values as given, case preserved). A message without headers is
//!   sent as a plain `PUB` (no `HPUB`). Received NATS headers become message headers; of a
//!   header with several values the last wins. Conventional headers:
//!   - `content-type`: how the body is encoded, for example `application/protobuf` (the
//!     typed helpers) or `application/json`. Absent means opaque bytes.
//!   - `micro-id`: the message id. Publishing through JetStream, micro also sets
//!     `Nats-Msg-Id` to it, so the stream drops a second copy published within the
//!     duplicate window. A non-Rust publisher to a JetStream topic sets `Nats-Msg-Id`
//!     itself (and `micro-id` too, if micro subscribers should see the id).
//! - **Confirmation echoes**: a broker publishing on core NATS with
//!   [`PublishConfirm::Resend`] or [`PublishConfirm::Server`] also publishes 8-byte tokens
//!   on its own subject `_MICRO.confirm.<unique id>` and subscribes to it; nothing else needs
//!   to read them. With the default [`PublishConfirm::Resend`] a message may be published
//!   twice (after a reconnect, identical headers and body), so a consumer that must not
//!   handle a message twice dedupes by `micro-id`.
//! - **Queue groups**: [`SubscribeOptions::queue`] is the NATS queue group name, so a
//!   non-Rust subscriber in the same group shares the messages.
//! - **JetStream**: the stream of topic `t` is named `<PREFIX>_<t with '.' replaced by
//!   '_'>` (for example `MICRO_orders_created`; the prefix upper-cased, its dots also
//!   replaced), captures exactly the subject `<prefix>.<t>`, file storage, duplicate window
//!   [`NatsBrokerBuilder::duplicate_window`] (2 minutes by default). A durable subscription
//!   is a pull consumer on that stream named after [`SubscribeOptions::durable`], explicit
//!   ack. A message delivered from JetStream also carries the headers
//!   `micro-stream-seq` (the stream sequence) and `micro-delivery-count` (1 on the first
//!   delivery); they are added on delivery and are not on the wire.
//!
//! # Publishing, outages and the bounded buffer
//!
//! A core NATS publish is never lost silently; how that is kept depends on
//! [`PublishConfirm`] ([`NatsBrokerBuilder::confirm`]). Every wait is bounded by
//! [`NatsBrokerBuilder::publish_timeout`] (5 s by default), after which `publish` fails.
//!
//! - [`PublishConfirm::Resend`] (the default): `publish` returns once the message is handed
//!   to the client, and the broker keeps it in a window of unconfirmed messages. When
//!   nothing has to wait, this happens as `publish` is called and the returned future is
//!   already complete (so dropping it unawaited does not cancel the publish). A
//!   background task confirms the window in batches: one echo (a small message on a
//!   private `_MICRO.confirm.*` subject this client subscribes to) coming back on the same
//!   connection proves that the server processed everything handed over before it. If the
//!   connection was replaced first (async-nats drops its write buffer on a reconnect
//!   without telling the publisher), the unconfirmed messages are handed over again on the
//!   new connection, as they were (same subject, headers and body). So every publish that
//!   returned `Ok` arrives **at least once** while the broker lives: a subscriber may see a
//!   message twice, and re-sent messages arrive after newer ones. Dedupe by `micro-id` where
//!   that matters (JetStream does it by `Nats-Msg-Id`). The window is bounded by
//!   [`NatsBrokerBuilder::max_unconfirmed`] ([`DEFAULT_MAX_UNCONFIRMED`] messages): when it
//!   is full (an outage, or a server slower than the publisher), `publish` waits for room
//!   and fails after the publish timeout with "the window is full". During an outage,
//!   `publish` keeps accepting until the client's buffer
//!   ([`NatsBrokerBuilder::client_capacity`]) or the window is full. [`NatsBroker::flush`]
//!   waits until everything published before it is confirmed: call it before shutting down,
//!   since messages still in the window when the process exits are not delivered.
//! - [`PublishConfirm::Server`]: `publish` returns `Ok` only once a round trip (shared by
//!   concurrent publishes) confirmed the message, and an error if the connection was
//!   re-established between the hand-over and the confirmation (the message may still have
//!   arrived: at most a duplicate, never a silent loss). While the client is disconnected,
//!   `publish` waits for the reconnect up to the publish timeout. Slowest: each publish
//!   waits a round trip.
//! - [`PublishConfirm::Buffered`]: returns once the message is in the client's bounded
//!   buffer ([`NatsBrokerBuilder::client_capacity`] messages, 1024 by default; publishers
//!   wait for room up to the timeout). A message in flight when the connection drops can be
//!   lost silently.
//! - Core NATS delivers to the subscribers connected at that moment: a subscriber that is
//!   itself reconnecting misses messages published meanwhile. Use JetStream for
//!   at-least-once.
//! - JetStream ([`NatsBrokerBuilder::jetstream`]): the broker creates the topic's stream if
//!   missing and publishes with an ack from the server; an error means the stream may or
//!   may not have the message, and publishing again with the same `micro-id` is safe.
//!
//! # Subscriptions and reconnects
//!
//! - `ack: Auto` and no durable name: a core NATS subscription (queue subscription with a
//!   queue group). async-nats subscribes again after a reconnect; the stream does not end.
//! - `durable: Some(name)` or `ack: Manual`: a JetStream pull consumer. The consumer is
//!   named `durable`, or the queue group for `Manual` without a durable name (so the group's
//!   members share it), or is ephemeral. Members with the same consumer name share its
//!   messages, each to one member. `Manual` acks explicitly, with
//!   [`SubscribeOptions::ack_wait`] (30 s by default) before an unacked message is
//!   delivered again; `Auto` takes no acks. Transient errors (missed heartbeats, a
//!   disconnect, a deleted consumer) are logged and the pull loop recreates what it needs
//!   and continues: the subscription stream only ends when it is dropped.
//! - [`Delivery::ack`] sends the ack without waiting for the server's confirmation; an
//!   ack that is lost means one more delivery (at least once).

mod confirm;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use async_nats::{
    Client, ConnectOptions, HeaderMap, HeaderName, HeaderValue, Subject,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, DeliverPolicy, pull},
        stream::{self, StorageType},
    },
};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use micro_core::broker::{
    AckMode, Acker, Broker, BrokerError, Delivery, Message, SubscribeOptions, Subscription,
    validate_topic,
};
use tokio::{
    sync::Notify,
    time::{Instant, timeout_at},
};

use self::confirm::{Confirmer, TryPublish, Window};

/// The default subject prefix: topic `t` is subject `micro.t`.
pub const DEFAULT_PREFIX: &str = "micro";
/// The header holding a message's id.
pub const MESSAGE_ID_HEADER: &str = "micro-id";
/// Added to JetStream deliveries: the stream sequence of the message.
pub const STREAM_SEQ_HEADER: &str = "micro-stream-seq";
/// Added to JetStream deliveries: how many times the message was delivered, 1 the first time.
pub const DELIVERY_COUNT_HEADER: &str = "micro-delivery-count";

/// Default of [`NatsBrokerBuilder::max_unconfirmed`].
pub const DEFAULT_MAX_UNCONFIRMED: usize = 16_384;
/// How many topics' subjects a broker keeps formatted and validated.
const SUBJECT_CACHE: usize = 1024;

/// How [`Broker::publish`] on core NATS decides that a message was accepted; see
/// [Publishing, outages and the bounded buffer](self#publishing-outages-and-the-bounded-buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PublishConfirm {
    /// Returns once the message is handed to the client; the broker keeps it in a bounded
    /// window until a round trip through the server (one for everything published before
    /// it) confirms it, and hands it over again if the connection was replaced first. At
    /// least once: never lost silently, possibly delivered twice. The default.
    #[default]
    Resend,
    /// Returns after a round trip through the server on the same connection (shared by
    /// concurrent publishes), or an error if the connection was replaced meanwhile: `Ok`
    /// means the server has the message. Slowest: each publish waits a round trip.
    Server,
    /// Returns once the message is in the client's bounded buffer: a message in flight
    /// when the connection drops is lost silently.
    Buffered,
}

/// Builds a [`NatsBroker`]; see the [module docs](self) for what each option means on the
/// wire.
#[derive(Debug, Clone)]
pub struct NatsBrokerBuilder {
    servers: Vec<String>,
    prefix: String,
    jetstream: bool,
    confirm: PublishConfirm,
    publish_timeout: Duration,
    client_capacity: usize,
    max_unconfirmed: usize,
    subscription_capacity: usize,
    duplicate_window: Duration,
    ack_wait: Duration,
    pull_batch: usize,
    max_reconnect_delay: Duration,
    connection_name: Option<String>,
}

/// A [`Broker`] on NATS and JetStream. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    client: Client,
    js: jetstream::Context,
    config: NatsBrokerBuilder,
    confirmer: Arc<Confirmer>,
    window: Arc<Window>,
    subjects: RwLock<HashMap<String, Subject, foldhash::fast::RandomState>>,
    streams: Mutex<HashSet<String>>,
}

// === impl NatsBrokerBuilder ===

impl NatsBrokerBuilder {
    /// A builder for the servers in `servers`: comma-separated `nats://host:port` URLs.
    pub fn new(servers: &str) -> Self {
        Self {
            servers: servers
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            prefix: DEFAULT_PREFIX.to_owned(),
            jetstream: false,
            confirm: PublishConfirm::Resend,
            publish_timeout: Duration::from_secs(5),
            client_capacity: 1024,
            max_unconfirmed: DEFAULT_MAX_UNCONFIRMED,
            subscription_capacity: 8192,
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(30),
            pull_batch: 128,
            max_reconnect_delay: Duration::from_millis(500),
            connection_name: None,
        }
    }

    /// The subject prefix (default `micro`): topic `t` is subject `<prefix>.t`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Publish through JetStream: create each topic's stream if missing and wait for the
    /// server's ack (default off: core NATS).
    pub fn jetstream(mut self, on: bool) -> Self {
        self.jetstream = on;
        self
    }

    /// How core NATS publishes are confirmed (default [`PublishConfirm::Resend`]).
    pub fn confirm(mut self, confirm: PublishConfirm) -> Self {
        self.confirm = confirm;
        self
    }

    /// How long a publish may take, waiting for a reconnect, for room in the buffer and for
    /// the confirmation included (default 5 s).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Bound of the client's outgoing command buffer, in messages (default 1024).
    pub fn client_capacity(mut self, capacity: usize) -> Self {
        self.client_capacity = capacity.max(1);
        self
    }

    /// With [`PublishConfirm::Resend`], how many published messages the broker keeps until
    /// the server confirms them (default [`DEFAULT_MAX_UNCONFIRMED`]). A publish waits
    /// while the window is full and fails after the publish timeout, so this bounds the
    /// memory held during an outage.
    pub fn max_unconfirmed(mut self, messages: usize) -> Self {
        self.max_unconfirmed = messages.max(1);
        self
    }

    /// Bound of each subscription's incoming buffer, in messages (default 8192); a
    /// subscriber that falls further behind is a NATS slow consumer and loses messages
    /// (core) or gets them again (JetStream).
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = capacity.max(1);
        self
    }

    /// The duplicate window of the streams the broker creates (default 2 minutes).
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// The ack wait of consumers when the subscription does not set one (default 30 s).
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// How many messages a JetStream subscription asks for at a time (default 128); at most
    /// these many are in flight unacked per subscription.
    pub fn pull_batch(mut self, batch: usize) -> Self {
        self.pull_batch = batch.max(1);
        self
    }

    /// The longest pause between reconnect attempts (default 500 ms; attempts start at
    /// once and back off exponentially up to this).
    pub fn max_reconnect_delay(mut self, delay: Duration) -> Self {
        self.max_reconnect_delay = delay;
        self
    }

    /// The client connection name shown by the server's monitoring.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Connects.
    ///
    /// # Errors
    /// An invalid prefix or server list, or no server reachable.
    pub async fn connect(self) -> Result<NatsBroker, BrokerError> {
        let name = self
            .servers
            .iter()
            .map(|s| {
                if s.contains("://") {
                    s.clone()
                } else {
                    format!("nats://{s}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        validate_prefix(&self.prefix)?;
        if self.servers.is_empty() {
            return Err(BrokerError::Invalid {
                what: "server list",
                value: String::new(),
                reason: "no server given".to_owned(),
            });
        }
        let max_delay = self.max_reconnect_delay;
        let reconnected = Arc::new(Notify::new());
        let on_connect = Arc::clone(&reconnected);
        let mut options = ConnectOptions::new()
            .client_capacity(self.client_capacity)
            .subscription_capacity(self.subscription_capacity)
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| {
                if attempts <= 1 {
                    Duration::ZERO
                } else {
                    let exp = u32::try_from(attempts.min(16)).unwrap_or(16);
                    (Duration::from_millis(10) * 2u32.saturating_pow(exp)).min(max_delay)
                }
            })
            .event_callback(move |event| {
                let on_connect = Arc::clone(&on_connect);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("nats: connected");
                            on_connect.notify_one();
                        }
                        async_nats::Event::Disconnected => tracing::warn!("nats: disconnected"),
                        async_nats::Event::SlowConsumer(sid) => tracing::warn!(
                            sid,
                            "nats: a subscription fell behind its buffer (subscription_capacity); \
                             core NATS messages were dropped for it"
                        ),
                        other => tracing::debug!(event = %other, "nats: event"),
                    }
                }
            });
        if let Some(connection_name) = &self.connection_name {
            options = options.name(connection_name);
        }
        let servers: Vec<async_nats::ServerAddr> = self
            .servers
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e: std::io::Error| BrokerError::Invalid {
                what: "server list",
                value: self.servers.join(","),
                reason: e.to_string(),
            })?;
        let client = options
            .connect(servers)
            .await
            .map_err(|e| backend(&name, "connect", e))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(self.publish_timeout);
        let confirmer = Confirmer::start(&client, &name, self.publish_timeout, reconnected).await?;
        let window = Window::new(Arc::clone(&confirmer), self.max_unconfirmed);
        Ok(NatsBroker {
            inner: Arc::new(Inner {
                name,
                client,
                js,
                config: self,
                confirmer,
                window,
                subjects: RwLock::new(HashMap::default()),
                streams: Mutex::new(HashSet::new()),
            }),
        })
    }
}

// === impl NatsBroker ===

impl NatsBroker {
    /// Connects to `servers` (comma-separated `nats://host:port` URLs) with the defaults.
    ///
    /// # Errors
    /// No server reachable.
    pub async fn connect(servers: &str) -> Result<Self, BrokerError> {
        NatsBrokerBuilder::new(servers).connect().await
    }

    /// A builder for `servers` (comma-separated `nats://host:port` URLs).
    pub fn builder(servers: &str) -> NatsBrokerBuilder {
        NatsBrokerBuilder::new(servers)
    }

    /// The underlying async-nats client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// A round trip through the server on this broker's connection: once it returns, the
    /// server has processed everything this broker sent before, subscriptions included (so
    /// a publisher on another connection reaches them).
    ///
    /// # Errors
    /// Not connected within the publish timeout, or the connection was re-established
    /// meanwhile.
    pub async fn round_trip(&self) -> Result<(), BrokerError> {
        let deadline = Instant::now() + self.inner.config.publish_timeout;
        self.wait_connected(deadline).await?;
        let epoch = self.inner.confirmer.epoch();
        self.inner.confirmer.confirm(epoch, deadline).await
    }

    /// Waits until every message published before this call through
    /// [`PublishConfirm::Resend`] is confirmed by the server (re-sent as needed after a
    /// reconnect). Call it before shutting down so nothing published is left in the
    /// window. Returns at once with the other confirmation modes.
    ///
    /// # Errors
    /// Not all confirmed within the publish timeout: the messages stay in the window and
    /// are still re-sent after a reconnect while the broker lives.
    pub async fn flush(&self) -> Result<(), BrokerError> {
        let deadline = Instant::now() + self.inner.config.publish_timeout;
        self.inner.window.flush(deadline).await
    }

    /// The NATS subject of `topic`.
    pub fn subject(&self, topic: &str) -> String {
        format!("{}.{topic}", self.inner.config.prefix)
    }

    /// The subject of a valid `topic`, formatted once per topic (up to a bound).
    fn publish_subject(&self, topic: &str) -> Result<Subject, BrokerError> {
        let cached = self
            .inner
            .subjects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .cloned();
        if let Some(subject) = cached {
            return Ok(subject);
        }
        validate_topic(topic)?;
        let subject = Subject::from(self.subject(topic));
        let mut subjects = self
            .inner
            .subjects
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if subjects.len() < SUBJECT_CACHE {
            subjects.insert(topic.to_owned(), subject.clone());
        }
        Ok(subject)
    }

    /// The JetStream stream name of `topic`.
    pub fn stream_name(&self, topic: &str) -> String {
        format!(
            "{}_{}",
            self.inner.config.prefix.to_uppercase().replace('.', "_"),
            topic.replace('.', "_")
        )
    }

    fn stream_config(&self, topic: &str) -> stream::Config {
        stream::Config {
            name: self.stream_name(topic),
            subjects: vec![self.subject(topic)],
            storage: StorageType::File,
            duplicate_window: self.inner.config.duplicate_window,
            ..stream::Config::default()
        }
    }

    async fn ensure_stream(&self, topic: &str) -> Result<(), BrokerError> {
        let known = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(topic);
        if !known {
            self.inner
                .js
                .get_or_create_stream(self.stream_config(topic))
                .await
                .map_err(|e| backend(&self.inner.name, "creating the stream", e))?;
            self.inner
                .streams
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(topic.to_owned());
        }
        Ok(())
    }

    async fn wait_connected(&self, deadline: Instant) -> Result<(), BrokerError> {
        let mut pause = Duration::from_millis(1);
        while self.inner.client.connection_state() != async_nats::connection::State::Connected {
            if Instant::now() + pause > deadline {
                return Err(backend_msg(
                    &self.inner.name,
                    "not connected: publish timed out waiting for the reconnect",
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        Ok(())
    }

    /// [`PublishConfirm::Server`]: hands the message over and waits for a round trip.
    async fn publish_confirmed(
        &self,
        subject: Subject,
        headers: Option<HeaderMap>,
        body: Bytes,
        deadline: &mut Deadline,
    ) -> Result<(), BrokerError> {
        let inner = &*self.inner;
        self.wait_connected(deadline.at()).await?;
        let epoch = inner.confirmer.epoch();
        sent(
            &inner.name,
            hand_over!(inner.client, deadline, subject, headers, body),
        )?;
        inner.confirmer.confirm(epoch, deadline.at()).await
    }

    async fn publish_jetstream(
        &self,
        topic: &str,
        subject: Subject,
        headers: Option<HeaderMap>,
        message: Message,
        deadline: &mut Deadline,
    ) -> Result<(), BrokerError> {
        let deadline = deadline.at();
        let name = &self.inner.name;
        timeout_at(deadline, self.ensure_stream(topic))
            .await
            .map_err(|_| backend_msg(name, "publish timed out creating the stream"))??;
        let mut headers = headers.unwrap_or_default();
        if let Some(id) = message.headers.get(MESSAGE_ID_HEADER) {
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                header_value(MESSAGE_ID_HEADER, id)?,
            );
        }
        let ack = timeout_at(
            deadline,
            self.inner
                .js
                .publish_with_headers(subject, headers, message.body),
        )
        .await
        .map_err(|_| backend_msg(name, "publish timed out: the buffer is full"))?
        .map_err(|e| backend(name, "publish", e))?;
        timeout_at(deadline, ack)
            .await
            .map_err(|_| backend_msg(name, "publish timed out waiting for the stream's ack"))?
            .map_err(|e| backend(name, "publish (stream ack)", e))?;
        Ok(())
    }

    async fn subscribe_jetstream(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, BrokerError> {
        let consumer_name = match (&options.durable, options.ack, &options.queue) {
            (Some(durable), _, _) => Some(durable.clone()),
            (None, AckMode::Manual, Some(queue)) => Some(queue.clone()),
            _ => None,
        };
        let ack_policy = match options.ack {
            AckMode::Manual => AckPolicy::Explicit,
            AckMode::Auto => AckPolicy::None,
        };
        let consumer = pull::Config {
            durable_name: consumer_name.clone(),
            name: consumer_name.clone(),
            ack_policy,
            ack_wait: options.ack_wait.unwrap_or(self.inner.config.ack_wait),
            deliver_policy: DeliverPolicy::All,
            filter_subject: self.subject(topic),
            inactive_threshold: if consumer_name.is_some() {
                Duration::ZERO
            } else {
                Duration::from_secs(300)
            },
            ..pull::Config::default()
        };
        let state = PullState {
            broker: self.clone(),
            topic: Arc::from(topic),
            consumer,
            manual: options.ack == AckMode::Manual,
            messages: None,
            failures: 0,
        };
        // Open once up front so configuration errors surface to the caller.
        let mut state = state;
        state.messages = Some(state.open().await?);
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            |mut state| async move {
                let delivery = state.next().await;
                Some((Ok(delivery), state))
            },
        )))
    }
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBroker")
            .field("name", &self.inner.name)
            .field("prefix", &self.inner.config.prefix)
            .field("jetstream", &self.inner.config.jetstream)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Broker for NatsBroker {
    fn name(&self) -> &str {
        &self.inner.name
    }

    // Written out rather than an `async fn`: the future is boxed on every publish, and
    // boxing each mode's future on its own keeps the box as small as that mode needs (the
    // default's is a few hundred bytes, a cheap allocation), the checks run before it.
    fn publish<'a, 'b, 'c>(
        &'a self,
        topic: &'b str,
        message: Message,
    ) -> Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send + 'c>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let prepared = self
            .publish_subject(topic)
            .and_then(|subject| Ok((subject, to_nats_headers(&message.headers)?)));
        let (subject, headers) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let inner = &*self.inner;
        let timeout = inner.config.publish_timeout;
        if inner.config.jetstream {
            return Box::pin(async move {
                let mut deadline = Deadline::after(timeout);
                self.publish_jetstream(topic, subject, headers, message, &mut deadline)
                    .await
            });
        }
        let body = message.body;
        match inner.config.confirm {
            // Handed over when called if nothing has to wait: the future then holds
            // nothing, and boxing a zero-sized future does not allocate.
            PublishConfirm::Resend => match inner.window.try_publish(subject, headers, body) {
                TryPublish::Done(Ok(())) => Box::pin(Published),
                TryPublish::Done(Err(e)) => Box::pin(std::future::ready(Err(e))),
                TryPublish::Wait(waiting) => Box::pin(
                    inner
                        .window
                        .publish_waiting(waiting, Deadline::after(timeout)),
                ),
            },
            PublishConfirm::Buffered => Box::pin(async move {
                let mut deadline = Deadline::after(timeout);
                sent(
                    &inner.name,
                    hand_over!(inner.client, &mut deadline, subject, headers, body),
                )
            }),
            PublishConfirm::Server => Box::pin(async move {
                let mut deadline = Deadline::after(timeout);
                self.publish_confirmed(subject, headers, body, &mut deadline)
                    .await
            }),
        }
    }

    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, BrokerError> {
        validate_topic(topic)?;
        if let Some(queue) = &options.queue {
            validate_name("queue", queue)?;
        }
        if let Some(durable) = &options.durable {
            validate_name("durable name", durable)?;
        }
        if options.durable.is_some() || options.ack == AckMode::Manual {
            return self.subscribe_jetstream(topic, options).await;
        }
        let subject = self.subject(topic);
        let client = &self.inner.client;
        let subscriber = match options.queue {
            Some(queue) => client.queue_subscribe(subject, queue).await,
            None => client.subscribe(subject).await,
        }
        .map_err(|e| backend(&self.inner.name, "subscribe", e))?;
        Ok(Box::pin(CoreDeliveries {
            subscriber,
            topic: Arc::from(topic),
        }))
    }
}

/// The deliveries of a core NATS subscription: a stream of its own rather than an adapter,
/// so a message is taken apart where it is received instead of moved through layers.
struct CoreDeliveries {
    subscriber: async_nats::Subscriber,
    topic: Arc<str>,
}

impl futures_util::Stream for CoreDeliveries {
    type Item = Result<Delivery, BrokerError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.subscriber.poll_next_unpin(cx).map(|message| {
            message.map(|message| {
                let message = match message.headers {
                    None => Message {
                        headers: BTreeMap::new(),
                        body: message.payload,
                    },
                    Some(headers) => from_nats(Some(&headers), message.payload),
                };
                Ok(Delivery::new(Arc::clone(&this.topic), message, None))
            })
        })
    }
}

// === JetStream pull loop ===

struct PullState {
    broker: NatsBroker,
    topic: Arc<str>,
    consumer: pull::Config,
    manual: bool,
    messages: Option<pull::Stream>,
    failures: u32,
}

impl PullState {
    async fn open(&self) -> Result<pull::Stream, BrokerError> {
        let inner = &self.broker.inner;
        let stream = inner
            .js
            .get_or_create_stream(self.broker.stream_config(&self.topic))
            .await
            .map_err(|e| backend(&inner.name, "creating the stream", e))?;
        let consumer: jetstream::consumer::PullConsumer = match &self.consumer.durable_name {
            Some(name) => stream
                .get_or_create_consumer(name, self.consumer.clone())
                .await
                .map_err(|e| backend(&inner.name, "creating the consumer", e))?,
            None => stream
                .create_consumer(self.consumer.clone())
                .await
                .map_err(|e| backend(&inner.name, "creating the consumer", e))?,
        };
        consumer
            .stream()
            .max_messages_per_batch(inner.config.pull_batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| backend(&inner.name, "pulling", e))
    }

    /// The next delivery; retries forever through transient failures.
    async fn next(&mut self) -> Delivery {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                if self.failures > 0 {
                    let exp = self.failures.min(6);
                    let pause = (Duration::from_millis(20) * 2u32.pow(exp))
                        .min(self.broker.inner.config.max_reconnect_delay);
                    tokio::time::sleep(pause).await;
                }
                match self.open().await {
                    Ok(messages) => self.messages = Some(messages),
                    Err(e) => {
                        self.failures = self.failures.saturating_add(1);
                        tracing::warn!(topic = %self.topic, error = %e, "nats: reopening the consumer failed; retrying");
                    }
                }
                continue;
            };
            match messages.next().await {
                Some(Ok(message)) => {
                    self.failures = 0;
                    return self.delivery(message);
                }
                Some(Err(e)) => {
                    use pull::MessagesErrorKind as K;
                    match e.kind() {
                        K::ConsumerDeleted | K::PushBasedConsumer | K::RequestLimitExceeded => {
                            tracing::warn!(topic = %self.topic, error = %e, "nats: consumer lost; recreating it");
                            self.messages = None;
                            self.failures = self.failures.saturating_add(1);
                        }
                        _ => {
                            tracing::debug!(topic = %self.topic, error = %e, "nats: transient pull error");
                        }
                    }
                }
                None => {
                    tracing::warn!(topic = %self.topic, "nats: pull stream ended; reopening it");
                    self.messages = None;
                    self.failures = self.failures.saturating_add(1);
                }
            }
        }
    }

    fn delivery(&self, message: jetstream::Message) -> Delivery {
        let meta = message
            .info()
            .ok()
            .map(|i| (i.stream_sequence, i.delivered));
        let (message, acker) = message.split();
        let mut decoded = from_nats(message.headers.as_ref(), message.payload);
        if let Some((seq, delivered)) = meta {
            decoded
                .headers
                .insert(STREAM_SEQ_HEADER.to_owned(), seq.to_string());
            decoded
                .headers
                .insert(DELIVERY_COUNT_HEADER.to_owned(), delivered.to_string());
        }
        let acker: Option<Box<dyn Acker>> = if self.manual {
            Some(Box::new(JsAcker {
                acker,
                broker: self.broker.inner.name.clone(),
            }))
        } else {
            None
        };
        Delivery::new(Arc::clone(&self.topic), decoded, acker)
    }
}

struct JsAcker {
    acker: jetstream::message::Acker,
    broker: String,
}

#[async_trait]
impl Acker for JsAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.acker
            .ack()
            .await
            .map_err(|e| backend_boxed(&self.broker, "ack", e))
    }

    async fn nack(self: Box<Self>) -> Result<(), BrokerError> {
        self.acker
            .ack_with(AckKind::Nak(None))
            .await
            .map_err(|e| backend_boxed(&self.broker, "nack", e))
    }
}

// === helpers ===

/// The future of a publish that completed when it was called: zero-sized, so boxing it
/// does not allocate.
struct Published;

impl Future for Published {
    type Output = Result<(), BrokerError>;

    fn poll(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A publish deadline that reads the clock only once something has to wait: a publish
/// with room everywhere never does.
struct Deadline {
    timeout: Duration,
    at: Option<Instant>,
}

impl Deadline {
    fn after(timeout: Duration) -> Self {
        Self { timeout, at: None }
    }

    fn fixed(at: Instant) -> Self {
        Self {
            timeout: Duration::ZERO,
            at: Some(at),
        }
    }

    fn at(&mut self) -> Instant {
        let timeout = self.timeout;
        *self.at.get_or_insert_with(|| Instant::now() + timeout)
    }
}

/// `fut` with a deadline; a future that is ready at once (a publish with room in the
/// buffer) skips the timer and the clock. Takes the future pinned by the caller so it is
/// not moved (copied) again on every call.
async fn ready_or_deadline<F: std::future::Future>(
    deadline: &mut Deadline,
    mut fut: std::pin::Pin<&mut F>,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let first = std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await;
    match first {
        Some(out) => Ok(out),
        // Boxed: the timer is large and only needed when the buffer is full.
        None => Box::pin(timeout_at(deadline.at(), fut)).await,
    }
}

/// Hands a message to the client, waiting for room in its buffer until the deadline:
/// `hand_over!(client, deadline, subject, headers, body)` evaluates to the outcome for
/// [`sent`]. A macro rather than an `async fn` so the caller's future holds the client's
/// publish future directly, without a copy of the arguments per layer: the publish future
/// is boxed (`async_trait`) on every publish, and a small box is a cheap allocation.
macro_rules! hand_over {
    ($client:expr, $deadline:expr, $subject:expr, $headers:expr, $body:expr) => {
        match $headers {
            Some(headers) => {
                let fut = std::pin::pin!($client.publish_with_headers($subject, headers, $body));
                $crate::nats::ready_or_deadline($deadline, fut).await
            }
            None => {
                let fut = std::pin::pin!($client.publish($subject, $body));
                $crate::nats::ready_or_deadline($deadline, fut).await
            }
        }
    };
}
use hand_over;

/// The outcome of [`hand_over!`] as a broker result.
fn sent(
    name: &str,
    sent: Result<Result<(), async_nats::PublishError>, tokio::time::error::Elapsed>,
) -> Result<(), BrokerError> {
    match sent {
        Err(_) => Err(backend_msg(name, "publish timed out: the buffer is full")),
        Ok(Err(e)) => Err(backend(name, "publish", e)),
        Ok(Ok(())) => Ok(()),
    }
}

fn to_nats_headers(headers: &BTreeMap<String, String>) -> Result<Option<HeaderMap>, BrokerError> {
    if headers.is_empty() {
        return Ok(None);
    }
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let header: HeaderName = name.parse().map_err(|_| BrokerError::Invalid {
            what: "header name",
            value: name.clone(),
            reason: "NATS header names are printable ASCII without ':'".to_owned(),
        })?;
        map.insert(header, header_value(name, value)?);
    }
    Ok(Some(map))
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue, BrokerError> {
    value.parse().map_err(|_| BrokerError::Invalid {
        what: "header value",
        value: format!("{name}: {value}"),
        reason: "NATS header values must not contain CR or LF".to_owned(),
    })
}

fn from_nats(headers: Option<&HeaderMap>, body: Bytes) -> Message {
    let mut out = BTreeMap::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            if let Some(value) = values.last() {
                out.insert(name.to_string(), value.as_str().to_owned());
            }
        }
    }
    Message { headers: out, body }
}

fn validate_prefix(prefix: &str) -> Result<(), BrokerError> {
    validate_topic(prefix).map_err(|_| BrokerError::Invalid {
        what: "subject prefix",
        value: prefix.to_owned(),
        reason: "dot-separated tokens of ASCII letters, digits, '_' and '-'".to_owned(),
    })
}

fn validate_name(what: &'static str, name: &str) -> Result<(), BrokerError> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        return Err(BrokerError::Invalid {
            what,
            value: name.to_owned(),
            reason: "1 to 128 ASCII letters, digits, '_' or '-'".to_owned(),
        });
    }
    Ok(())
}

fn backend(
    broker: &str,
    what: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> BrokerError {
    BrokerError::Backend {
        broker: broker.to_owned(),
        message: format!("{what}: {error}"),
        source: Some(Box::new(error)),
    }
}

fn backend_boxed(broker: &str, what: &str, error: async_nats::Error) -> BrokerError {
    BrokerError::Backend {
        broker: broker.to_owned(),
        message: format!("{what}: {error}"),
        source: Some(error),
    }
}

fn backend_msg(broker: &str, message: &str) -> BrokerError {
    BrokerError::Backend {
        broker: broker.to_owned(),
        message: message.to_owned(),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let mut headers = BTreeMap::new();
        headers.insert("content-type".to_owned(), "application/json".to_owned());
        headers.insert("micro-id".to_owned(), "42".to_owned());
        let nats = to_nats_headers(&headers).unwrap_or_default();
        let back = from_nats(nats.as_ref(), Bytes::from_static(b"x"));
        assert_eq!(back.headers, headers);
        assert_eq!(to_nats_headers(&BTreeMap::new()).ok(), Some(None));
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let mut headers = BTreeMap::new();
        headers.insert("a:b".to_owned(), "v".to_owned());
        assert!(to_nats_headers(&headers).is_err());
        let mut headers = BTreeMap::new();
        headers.insert("a".to_owned(), "v\r\nX: y".to_owned());
        assert!(to_nats_headers(&headers).is_err());
    }

    #[test]
    fn names() {
        assert!(validate_name("queue", "workers-1").is_ok());
        assert!(validate_name("queue", "a.b").is_err());
        assert!(validate_name("queue", "").is_err());
        assert!(validate_prefix("micro.dev").is_ok());
        assert!(validate_prefix("micro.>").is_err());
    }
}
