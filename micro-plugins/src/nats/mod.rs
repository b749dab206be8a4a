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
//!
//! [`Broker`]: micro_core::broker::Broker
//! [`validate_topic`]: micro_core::broker::validate_topic
//! [`Message::body`]: micro_core::broker::Message::body
//! [`Message::headers`]: micro_core::broker::Message::headers
//! [`SubscribeOptions::queue`]: micro_core::broker::SubscribeOptions::queue
//! [`SubscribeOptions::durable`]: micro_core::broker::SubscribeOptions::durable
//! [`SubscribeOptions::ack_wait`]: micro_core::broker::SubscribeOptions::ack_wait
//! [`Delivery::ack`]: micro_core::broker::Delivery::ack

mod builder;
mod confirm;
mod core;
mod error;
mod handover;
mod jetstream;
mod url;
mod wire;

pub use self::{
    builder::NatsBrokerBuilder,
    core::NatsBroker,
    url::{SCHEME, builder_from_url, install},
};

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

/// How [`Broker::publish`](micro_core::broker::Broker::publish) on core NATS decides that a message was accepted; see
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
