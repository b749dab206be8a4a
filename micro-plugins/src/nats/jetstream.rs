//! JetStream: the stream of each topic, publishing with the server's ack, and durable
//! subscriptions as pull consumers that recreate what they need after failures.

use std::{sync::Arc, time::Duration};

use async_nats::{
    HeaderMap, Subject,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, DeliverPolicy, pull},
        stream::{self, StorageType},
    },
};
use async_trait::async_trait;
use futures_util::StreamExt;
use micro_core::{
    broker::{AckMode, Acker, BrokerError, Delivery, Message, SubscribeOptions, Subscription},
    lock::lock,
};
use tokio::time::timeout_at;

use super::{
    DELIVERY_COUNT_HEADER, MESSAGE_ID_HEADER, STREAM_SEQ_HEADER,
    core::NatsBroker,
    error::{backend, backend_boxed, backend_msg},
    handover::Deadline,
    wire::{from_nats, header_value},
};

// === impl NatsBroker ===

impl NatsBroker {
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
        let known = lock(&self.inner.streams).contains(topic);
        if !known {
            self.inner
                .js
                .get_or_create_stream(self.stream_config(topic))
                .await
                .map_err(|e| backend(&self.inner.name, "creating the stream", e))?;
            lock(&self.inner.streams).insert(topic.to_owned());
        }
        Ok(())
    }
    pub(super) async fn publish_jetstream(
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

    pub(super) async fn subscribe_jetstream(
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
