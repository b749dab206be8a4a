//! [`TraceLayer`].

use tower::Layer;

use super::{Side, Trace};

/// Opens a `tracing` span per call and propagates W3C `traceparent`; see the
/// [module docs](super).
///
/// # Order
///
/// On a server, inside [`ContextLayer`](crate::context::ContextLayer) (whose trace it
/// uses) and outside the metrics and user layers, so their events fall in the span. On a
/// client, outside the channel and any retry layer: one span per call, around all
/// attempts.
#[derive(Debug, Clone, Copy)]
pub struct TraceLayer {
    pub(super) side: Side,
    pub(super) enabled: bool,
}

// === impl TraceLayer ===

impl TraceLayer {
    /// Spans for calls a client makes: `grpc.client`.
    pub fn client() -> Self {
        Self {
            side: Side::Client,
            enabled: true,
        }
    }

    /// Spans for calls a server serves: `grpc.server`.
    pub fn server() -> Self {
        Self {
            side: Side::Server,
            enabled: true,
        }
    }

    /// A client layer that passes calls through untouched, for a client with its default
    /// layers turned off.
    pub(crate) fn client_disabled() -> Self {
        Self {
            side: Side::Client,
            enabled: false,
        }
    }

    /// A server layer that passes calls through untouched, for a server stack with its
    /// default layers turned off.
    pub(crate) fn server_disabled() -> Self {
        Self {
            side: Side::Server,
            enabled: false,
        }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace::new(inner, *self)
    }
}
