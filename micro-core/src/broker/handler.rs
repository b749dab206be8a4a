//! What a service runs for each delivery of a subscribed topic.

use std::{future::Future, pin::Pin};

use super::Delivery;

/// The future a [`Handler`] returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>>;

/// Handles the deliveries of one subscription, as given to
/// [`ServiceBuilder::subscribe`](crate::ServiceBuilder::subscribe).
///
/// Implemented for every `Fn(Delivery) -> impl Future<Output = Result<(), Status>>`, so an
/// async closure is a handler:
///
/// ```
/// use micro_core::broker::{Delivery, Handler};
///
/// fn is_handler(_: impl Handler) {}
/// is_handler(|delivery: Delivery| async move {
///     tracing::info!(topic = %delivery.topic, bytes = delivery.message.body.len(), "got one");
///     Ok(())
/// });
/// ```
///
/// `Ok` acknowledges the delivery (for manually acked subscriptions); an error is logged
/// and asks for redelivery (nack) where the broker supports it.
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery.
    fn call(&self, delivery: Delivery) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    fn call(&self, delivery: Delivery) -> HandlerFuture {
        Box::pin(self(delivery))
    }
}
