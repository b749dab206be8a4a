//! [`MessageBudget`]: the bytes of large request messages a server buffers at once.

use std::{fmt, sync::Arc};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// Messages this long or longer count against the budget; shorter ones cost too little to
/// be worth the bookkeeping.
pub(crate) const LARGE: u32 = 64 * 1024;

/// A server's budget for large request messages, shared by all its connections: each large
/// message takes its length when its 5-byte prefix arrives, before tonic buffers it, and
/// gives it back when its call's answer is done.
///
/// A message that does not fit is refused at once with RESOURCE_EXHAUSTED ("server
/// temporarily out of resources" in gRPC's status code table), never queued: a queued
/// message would leave its unread bytes in the HTTP/2 connection window it shares with the
/// messages holding the budget (hyper's connection and stream windows are both 1 MiB), so
/// those could stop receiving and never give the budget back.
#[derive(Clone)]
pub(crate) struct MessageBudget {
    semaphore: Arc<Semaphore>,
    total: usize,
}

// === impl MessageBudget ===

impl MessageBudget {
    /// A budget of `total` bytes (at most [`Semaphore::MAX_PERMITS`]).
    pub(crate) fn new(total: usize) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS);
        Self {
            semaphore: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Takes `len` bytes for a message of that length: `None` for a small message.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED when the budget has less than `len` bytes left.
    pub(crate) fn try_take(&self, len: u32) -> Result<Option<OwnedSemaphorePermit>, Status> {
        if len < LARGE {
            return Ok(None);
        }
        match self.semaphore.clone().try_acquire_many_owned(len) {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                let in_use = self.total - self.semaphore.available_permits().min(self.total);
                tracing::debug!(len, in_use, total = self.total, "large message refused");
                Err(Status::resource_exhausted(format!(
                    "the server is receiving {in_use} of its {} bytes of large messages and \
                     cannot take this message of {len} bytes now; retry later",
                    self.total
                )))
            }
        }
    }
}

impl fmt::Debug for MessageBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageBudget")
            .field("total", &self.total)
            .field("available", &self.semaphore.available_permits())
            .finish()
    }
}
