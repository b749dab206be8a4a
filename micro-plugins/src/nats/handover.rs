//! Handing a message to the NATS client within a publish deadline: the leaf that the core
//! broker, JetStream and the confirmation window all use.

use std::time::Duration;

use micro_core::broker::BrokerError;
use tokio::time::{Instant, timeout_at};

use super::error::{backend, backend_msg};

/// A publish deadline that reads the clock only once something has to wait: a publish
/// with room everywhere never does.
pub(super) struct Deadline {
    timeout: Duration,
    at: Option<Instant>,
}

impl Deadline {
    pub(super) fn after(timeout: Duration) -> Self {
        Self { timeout, at: None }
    }

    pub(super) fn fixed(at: Instant) -> Self {
        Self {
            timeout: Duration::ZERO,
            at: Some(at),
        }
    }

    pub(super) fn at(&mut self) -> Instant {
        let timeout = self.timeout;
        *self.at.get_or_insert_with(|| Instant::now() + timeout)
    }
}

/// `fut` with a deadline; a future that is ready at once (a publish with room in the
/// buffer) skips the timer and the clock. Takes the future pinned by the caller so it is
/// not moved (copied) again on every call.
pub(super) async fn ready_or_deadline<F: std::future::Future>(
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
                $crate::nats::handover::ready_or_deadline($deadline, fut).await
            }
            None => {
                let fut = std::pin::pin!($client.publish($subject, $body));
                $crate::nats::handover::ready_or_deadline($deadline, fut).await
            }
        }
    };
}
pub(super) use hand_over;

/// The outcome of [`hand_over!`] as a broker result.
pub(super) fn sent(
    name: &str,
    sent: Result<Result<(), async_nats::PublishError>, tokio::time::error::Elapsed>,
) -> Result<(), BrokerError> {
    match sent {
        Err(_) => Err(backend_msg(name, "publish timed out: the buffer is full")),
        Ok(Err(e)) => Err(backend(name, "publish", e)),
        Ok(Ok(())) => Ok(()),
    }
}
