//! [`ContextLayer`].

use tower::Layer;

use super::SetContext;

/// Runs each call of a server inside its [`Context`](crate::context::Context), built from
/// the request's `grpc-timeout`, `traceparent`, `tracestate` and `x-micro-*` headers.
///
/// # Order
///
/// Outermost, so every other layer and the handler see the context. A
/// [`Service`](crate::Service) installs it itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContextLayer {
    _priv: (),
}

// === impl ContextLayer ===

impl ContextLayer {
    /// A new layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for ContextLayer {
    type Service = SetContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetContext::new(inner)
    }
}
