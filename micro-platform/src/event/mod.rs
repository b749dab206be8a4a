//! The event service: micro's publish/subscribe [`Broker`](micro_core::broker::Broker)
//! trait over gRPC (`micro.event.v1.Event`, from `proto/micro/event/v1/event.proto`).
//!
//! - [`EventService`] serves any [`SharedBroker`](micro_core::broker::SharedBroker).
//! - [`EventClient`] is a [`Broker`](micro_core::broker::Broker) again, over a micro
//!   [`Channel`](micro_core::Channel) to the service named [`SERVICE_NAME`] (found through
//!   the registry) or at a fixed address: `MICRO_BROKER=service` or
//!   `MICRO_BROKER=service://host:port`, once [`crate::install`] ran.
//!
//! # A subscription lives as long as its call
//!
//! `Subscribe` is server-streaming: the service subscribes to its broker, answers
//! `subscribed` once the subscription is in place, then forwards every delivery. When the
//! call ends (the client dropped its [`Subscription`](micro_core::broker::Subscription), its
//! process died) the service drops the broker subscription. [`EventClient`]'s `subscribe`
//! returns once it read `subscribed`, so every message published after it returned is
//! delivered. If the stream breaks (the service restarted, the connection dropped), the
//! client reports one error item and subscribes again, with backoff (100 ms doubling to
//! 5 s); messages published in between are not delivered (at most once, like the local
//! broker).
//!
//! Queue groups pass through to the service's broker. Durable subscriptions and manual
//! acknowledgement are [`BrokerError::Unsupported`](micro_core::broker::BrokerError) (the
//! wire does not carry acks). Bodies are at most [`MAX_BODY_SIZE`].
//!
//! # Errors on the wire
//!
//! | [`BrokerError`] | status | back on the client |
//! |---|---|---|
//! | `Invalid` (topic, queue, body) | INVALID_ARGUMENT, naming the value | `Invalid` |
//! | `Unsupported` | UNIMPLEMENTED | `Backend` with the message |
//! | `Backend`, anything else | UNAVAILABLE | `Backend` with the code and message |

pub(crate) mod client;
mod server;

pub use client::EventClient;
pub use server::EventService;

use std::time::Duration;

use micro_core::broker::BrokerError;

/// The name the event service registers as, and [`EventClient::from_client`] resolves.
pub const SERVICE_NAME: &str = "micro.event";

/// The `MICRO_BROKER` scheme of the event service: `service` (found through the registry)
/// or `service://host:port`.
pub const SCHEME: &str = "service";

/// The largest message body the service accepts: 1 MiB. A larger one is INVALID_ARGUMENT
/// (refused by [`EventClient`] before it is sent).
pub const MAX_BODY_SIZE: usize = 1024 * 1024;

/// The largest gRPC message either side decodes: room for a body of [`MAX_BODY_SIZE`] and
/// its headers (deliveries of messages published to the broker by other means may be
/// larger; up to this size they still arrive).
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// The deadline of one `Subscribe` call: a year (a subscription is meant to last).
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Checks a body's size against [`MAX_BODY_SIZE`].
fn check_body(size: usize) -> Result<(), BrokerError> {
    if size > MAX_BODY_SIZE {
        return Err(BrokerError::Invalid {
            what: "body",
            value: format!("{size} bytes"),
            reason: format!("must be at most {MAX_BODY_SIZE} bytes (1 MiB)"),
        });
    }
    Ok(())
}
