//! Publish/subscribe: the [`Broker`] trait and its embedded defaults.
//!
//! Messages are published to a *topic* and delivered to every subscription of it; a
//! subscription with a *queue group* shares the topic's messages with the other members of
//! its group, each message going to one member.
//!
//! | broker | selected by (`MICRO_BROKER`) | scope |
//! |---|---|---|
//! | [`LocalBroker`] | `local` (the default) | processes on one machine, through the registry and gRPC; nothing to install |
//! | [`MemoryBroker`] | `memory` | one broker value and its clones, in one process |
//! | brokers of other crates | their scheme, once added with [`register_scheme`] (for example `service` or `service://host:port`, the event service, by `micro_platform::install()`) | as the broker says |
//!
//! The first two deliver at most once and refuse durable subscriptions and manual acks
//! ([`BrokerError::Unsupported`]); the NATS broker (micro-plugins, feature `nats`) adds
//! JetStream for durable, at-least-once subscriptions.
//!
//! # Topics and headers
//!
//! Topics are dot-separated tokens of `[A-Za-z0-9_-]` ([`validate_topic`]), so a topic is
//! also a valid NATS subject. Headers are free-form; micro sets and reads:
//!
//! | header | meaning |
//! |---|---|
//! | `content-type` | how the body is encoded: `application/protobuf` from [`publish_proto`] |
//! | `micro-type` | the full protobuf name of the body's message, for example `orders.v1.OrderCreated` |
//! | `micro-id` | a message id, used by durable brokers to drop duplicates |
//!
//! # Typed messages
//!
//! [`publish_proto`] encodes a protobuf message and sets its headers;
//! [`Delivery::decode`] decodes it on the other side.
//!
//! # Subscribing in a service
//!
//! [`ServiceBuilder::subscribe`](crate::ServiceBuilder::subscribe) runs a [`Handler`] for
//! each delivery of a topic for as long as the service runs.

mod handler;
mod lazy;
pub mod local;
pub mod memory;
pub mod proto;
mod typed;
mod url;

pub use handler::{Handler, HandlerFuture};
pub use lazy::{Connect, LazyBroker};
pub use local::{LocalBroker, LocalBrokerBuilder};
pub use memory::MemoryBroker;
pub use typed::{
    CONTENT_TYPE_PROTOBUF, HEADER_CONTENT_TYPE, HEADER_ID, HEADER_TYPE, publish_proto,
};
pub use url::{
    BROKER_ENV, Opener, from_env, from_env_with_registry, from_url, from_url_with_registry,
    register_scheme,
};

use std::{collections::BTreeMap, fmt, pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;

/// A message: headers and an opaque body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Free-form headers. `content-type` says how the body is encoded; `micro-id` is the
    /// message id used for de-duplication by durable brokers.
    pub headers: BTreeMap<String, String>,
    /// The payload.
    pub body: Bytes,
}

/// How a subscriber acknowledges messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// Messages count as handled once delivered (at most once).
    #[default]
    Auto,
    /// The subscriber acks each message with [`Delivery::ack`]; an unacked message is
    /// delivered again after the ack wait (at least once). Needs a durable broker.
    Manual,
}

/// Options for [`Broker::subscribe`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Share the topic's messages with the other subscribers of this group: each message
    /// goes to one member. Default is none: every subscription gets every message.
    pub queue: Option<String>,
    /// A durable subscription keeps its position across restarts under this name (durable
    /// brokers only). Default is none.
    pub durable: Option<String>,
    /// How messages are acknowledged. Default is [`AckMode::Auto`].
    pub ack: AckMode,
    /// How long a manually acked message may stay unacked before it is redelivered.
    /// Default is the broker's.
    pub ack_wait: Option<Duration>,
}

/// One delivered message, with a way to acknowledge it.
pub struct Delivery {
    /// The topic it was published to. Shared by the deliveries of a subscription: cloning
    /// it is a reference count, not a copy.
    pub topic: Arc<str>,
    /// The message.
    pub message: Message,
    acker: Option<Box<dyn Acker>>,
}

/// Acknowledges one delivery; implemented by durable brokers.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Marks the delivery handled.
    async fn ack(self: Box<Self>) -> Result<(), BrokerError>;
    /// Asks for redelivery.
    async fn nack(self: Box<Self>) -> Result<(), BrokerError>;
}

/// A stream of deliveries for one subscription. Dropping it unsubscribes.
pub type Subscription = Pin<Box<dyn Stream<Item = Result<Delivery, BrokerError>> + Send>>;

/// A shared, type-erased broker.
pub type SharedBroker = Arc<dyn Broker>;

/// An error from a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A topic or queue name cannot be used.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was invalid: `topic`, `queue`, `durable name`.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why.
        reason: String,
    },
    /// The broker does not offer what the subscription asked for.
    #[error("broker {broker} does not support {feature}")]
    Unsupported {
        /// The broker's name.
        broker: String,
        /// What was asked for.
        feature: &'static str,
    },
    /// A delivered message cannot be decoded as the type asked for.
    #[error("cannot decode message on topic {topic:?} as {expected}: {reason}")]
    Decode {
        /// The topic the message came from.
        topic: String,
        /// The type asked for.
        expected: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The broker failed.
    #[error("broker {broker}: {message}")]
    Backend {
        /// The broker's name.
        broker: String,
        /// What failed.
        message: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Publish/subscribe messaging.
#[async_trait]
pub trait Broker: fmt::Debug + Send + Sync + 'static {
    /// A short description for messages, for example `memory` or `nats://127.0.0.1:4222`.
    fn name(&self) -> &str;

    /// Publishes `message` to `topic`. Returns once the broker has accepted it.
    ///
    /// # Errors
    /// An invalid topic, or a broker failure: a message is never dropped silently.
    async fn publish(&self, topic: &str, message: Message) -> Result<(), BrokerError>;

    /// Subscribes to `topic`.
    ///
    /// # Errors
    /// An invalid topic or queue name, options the broker does not support, or a failure.
    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, BrokerError>;
}

// === impl Delivery ===

impl Delivery {
    /// A delivery of `message` on `topic`, acknowledged through `acker` if any.
    pub fn new(
        topic: impl Into<Arc<str>>,
        message: Message,
        acker: Option<Box<dyn Acker>>,
    ) -> Self {
        Self {
            topic: topic.into(),
            message,
            acker,
        }
    }

    /// Takes the acker out, leaving an auto-acked delivery: for runners that hand the
    /// delivery to a handler and ack or nack once it returned.
    pub(crate) fn take_acker(&mut self) -> Option<Box<dyn Acker>> {
        self.acker.take()
    }

    /// Acknowledges the delivery (a no-op for auto-acked subscriptions).
    ///
    /// # Errors
    /// When the broker cannot record the ack; the message will be delivered again.
    pub async fn ack(mut self) -> Result<(), BrokerError> {
        match self.acker.take() {
            Some(acker) => acker.ack().await,
            None => Ok(()),
        }
    }

    /// Asks the broker to deliver the message again (a no-op for auto-acked subscriptions).
    ///
    /// # Errors
    /// When the broker cannot record the request.
    pub async fn nack(mut self) -> Result<(), BrokerError> {
        match self.acker.take() {
            Some(acker) => acker.nack().await,
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.topic)
            .field("message", &self.message)
            .field("ackable", &self.acker.is_some())
            .finish()
    }
}

/// Checks a topic name: dot-separated tokens of `[A-Za-z0-9_-]`, no wildcards, at most
/// 255 bytes (so it maps one-to-one onto a NATS subject).
///
/// # Errors
/// [`BrokerError::Invalid`] naming what is wrong.
pub fn validate_topic(topic: &str) -> Result<(), BrokerError> {
    let invalid = |reason: &str| BrokerError::Invalid {
        what: "topic",
        value: topic.to_owned(),
        reason: reason.to_owned(),
    };
    if topic.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if topic.len() > 255 {
        return Err(invalid("must be at most 255 bytes"));
    }
    for token in topic.split('.') {
        if token.is_empty() {
            return Err(invalid(
                "must not have empty tokens (leading, trailing or double dots)",
            ));
        }
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        {
            return Err(invalid(
                "tokens may only contain ASCII letters, digits, '_' and '-' (no wildcards)",
            ));
        }
    }
    Ok(())
}

/// Checks a queue group name: 1 to 255 bytes of `[A-Za-z0-9._-]`.
///
/// # Errors
/// [`BrokerError::Invalid`] naming what is wrong.
pub fn validate_queue(queue: &str) -> Result<(), BrokerError> {
    let invalid = |reason: &str| BrokerError::Invalid {
        what: "queue",
        value: queue.to_owned(),
        reason: reason.to_owned(),
    };
    if queue.is_empty() {
        return Err(invalid(
            "must not be empty (use no queue for a plain subscription)",
        ));
    }
    if queue.len() > 255 {
        return Err(invalid("must be at most 255 bytes"));
    }
    if !queue
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "may only contain ASCII letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
