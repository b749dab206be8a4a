//! [`LazyBroker`]: a broker opened on first use, for engines whose connection is async but
//! whose URL is opened from synchronous code (`MICRO_BROKER` read by
//! [`ServiceBuilder::build`](crate::ServiceBuilder::build)).

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::{Broker, BrokerError, Message, SharedBroker, SubscribeOptions, Subscription};

/// Connects the broker behind a [`LazyBroker`].
pub type Connect = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<SharedBroker, BrokerError>> + Send>>
        + Send
        + Sync,
>;

/// A broker that connects on its first publish or subscribe, then forwards to the broker it
/// connected. A failed connection is not kept: the next call tries again, and each failing
/// call returns the connection's error.
pub struct LazyBroker {
    name: String,
    connect: Connect,
    inner: OnceCell<SharedBroker>,
}

impl LazyBroker {
    /// A broker named `name` (what [`Broker::name`] answers before and after connecting)
    /// that connects with `connect` when first used.
    pub fn new(name: impl Into<String>, connect: Connect) -> Self {
        Self {
            name: name.into(),
            connect,
            inner: OnceCell::new(),
        }
    }

    /// The connected broker, connecting it first if no call has yet.
    ///
    /// # Errors
    /// The connection's error.
    pub async fn connected(&self) -> Result<&SharedBroker, BrokerError> {
        self.inner.get_or_try_init(|| (self.connect)()).await
    }

    /// Whether a call has connected it.
    pub fn is_connected(&self) -> bool {
        self.inner.initialized()
    }
}

impl fmt::Debug for LazyBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyBroker")
            .field("name", &self.name)
            .field("connected", &self.inner.get())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Broker for LazyBroker {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), BrokerError> {
        self.connected().await?.publish(topic, message).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, BrokerError> {
        self.connected().await?.subscribe(topic, options).await
    }
}

impl From<LazyBroker> for SharedBroker {
    fn from(broker: LazyBroker) -> Self {
        Arc::new(broker)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::StreamExt;

    use super::*;
    use crate::broker::MemoryBroker;

    #[tokio::test]
    async fn connects_once_on_first_use_and_retries_after_a_failure() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&attempts);
        let broker = LazyBroker::new(
            "lazy-test",
            Box::new(move || {
                let attempt = counted.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    if attempt == 0 {
                        Err(BrokerError::Invalid {
                            what: "broker",
                            value: "lazy-test".to_owned(),
                            reason: "first attempt refused".to_owned(),
                        })
                    } else {
                        Ok(Arc::new(MemoryBroker::new()) as SharedBroker)
                    }
                })
            }),
        );
        assert_eq!(broker.name(), "lazy-test");
        assert!(!broker.is_connected());
        let message = |body: &'static [u8]| Message {
            body: body.into(),
            ..Message::default()
        };
        let err = broker
            .publish("t", message(b"x"))
            .await
            .expect_err("the first connection fails");
        assert!(err.to_string().contains("first attempt refused"), "{err}");
        let mut subscription = broker
            .subscribe("t", SubscribeOptions::default())
            .await
            .expect("the second attempt connects");
        broker
            .publish("t", message(b"hello"))
            .await
            .expect("published");
        let delivery = subscription
            .next()
            .await
            .expect("a delivery")
            .expect("delivered");
        assert_eq!(delivery.message.body.as_ref(), b"hello");
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            2,
            "connected once after the failure"
        );
        assert!(broker.is_connected());
    }
}
