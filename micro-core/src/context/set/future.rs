//! [`ResponseFuture`] of [`SetContext`](super::SetContext).

use std::{
    future::Future,
    pin::Pin,
    task::{Context as TaskContext, Poll, ready},
};

use http::Response;
use pin_project_lite::pin_project;

use super::ContextBody;
use crate::context::{self, Context, Scoped};

pin_project! {
    /// Polls the inner response future inside the call's context, then hands the context
    /// on to the response body.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Scoped<F>,
    }
}

// === impl ResponseFuture ===

impl<F: Future> ResponseFuture<F> {
    pub(super) fn new(call_context: Context, inner: F) -> Self {
        Self {
            inner: context::scoped(call_context, inner),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ContextBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut inner = self.project().inner;
        let result = ready!(inner.as_mut().poll(cx));
        let call_context = inner.take_value();
        Poll::Ready(
            result.map(|response| response.map(|body| ContextBody::new(body, call_context))),
        )
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
