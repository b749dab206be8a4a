//! [`LogLayer`].

use tower::Layer;

use super::Log;

/// Emits one `tracing` event per call when it ends; see the [module docs](super).
///
/// # Order
///
/// Inside [`TraceLayer`](crate::middleware::trace::TraceLayer), so the event belongs to
/// the call's span.
#[derive(Debug, Clone, Copy)]
pub struct LogLayer {
    side: &'static str,
}

// === impl LogLayer ===

impl LogLayer {
    /// Logs calls a client makes (`side = "client"`).
    pub fn client() -> Self {
        Self { side: "client" }
    }

    /// Logs calls a server serves (`side = "server"`).
    pub fn server() -> Self {
        Self { side: "server" }
    }
}

impl<S> Layer<S> for LogLayer {
    type Service = Log<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Log::new(inner, self.side)
    }
}
