//! Core NATS: the [`NatsBroker`] itself, its [`Broker`] implementation, publishing with the
//! three [`PublishConfirm`] modes and core subscriptions.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use async_nats::{Client, HeaderMap, Subject, jetstream};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use micro_core::{
    broker::{
        AckMode, Broker, BrokerError, Delivery, Message, SubscribeOptions, Subscription,
        validate_topic,
    },
    lock::{read, write},
};
use tokio::time::Instant;

use super::{
    NatsBrokerBuilder, PublishConfirm,
    confirm::{Confirmer, TryPublish, Window},
    error::{backend, backend_msg},
    handover::{Deadline, hand_over, sent},
    wire::{from_nats, to_nats_headers, validate_name},
};

/// How many topics' subjects a broker keeps formatted and validated.
const SUBJECT_CACHE: usize = 1024;

/// A [`Broker`] on NATS and JetStream. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct NatsBroker {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) name: String,
    pub(super) client: Client,
    pub(super) js: jetstream::Context,
    pub(super) config: NatsBrokerBuilder,
    pub(super) confirmer: Arc<Confirmer>,
    pub(super) window: Arc<Window>,
    pub(super) subjects: RwLock<HashMap<String, Subject, foldhash::fast::RandomState>>,
    pub(super) streams: Mutex<HashSet<String>>,
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
        let cached = read(&self.inner.subjects).get(topic).cloned();
        if let Some(subject) = cached {
            return Ok(subject);
        }
        validate_topic(topic)?;
        let subject = Subject::from(self.subject(topic));
        let mut subjects = write(&self.inner.subjects);
        if subjects.len() < SUBJECT_CACHE {
            subjects.insert(topic.to_owned(), subject.clone());
        }
        Ok(subject)
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
// === helpers ===

/// The future of a publish that completed when it was called: zero-sized, so boxing it
/// does not allocate.
pub(super) struct Published;

impl Future for Published {
    type Output = Result<(), BrokerError>;

    fn poll(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(Ok(()))
    }
}
