//! [`SetContext`]: runs each call of a server inside its [`Context`].
//!
//! HTTP level: it reads headers only. A [`Service`](crate::Service) always installs it
//! outermost; see [`crate::context`] for what goes into the context.

mod body;
mod future;
mod layer;

pub use body::ContextBody;
pub use future::ResponseFuture;
pub use layer::ContextLayer;

use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::context::{self, Context};

/// Runs the inner service's `call`, its response future and its response body inside the
/// call's [`Context`]; made by [`ContextLayer`].
#[derive(Debug, Clone)]
pub struct SetContext<S> {
    inner: S,
}

// === impl SetContext ===

impl<S> SetContext<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, ResB> Service<Request<B>> for SetContext<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = Response<ContextBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let call_context = Context::from_headers(request.headers());
        // Layers below may read the context in `call` already (e.g. to open a span).
        let inner = &mut self.inner;
        let future = context::sync_scope(call_context.clone(), || inner.call(request));
        ResponseFuture::new(call_context, future)
    }
}
