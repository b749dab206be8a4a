//! [`ResponseFuture`] of [`Conformance`](super::Conformance).

use std::{
    future::Future,
    pin::Pin,
    task::{Context as TaskContext, Poll, ready},
};

use http::Response;
use pin_project_lite::pin_project;

use super::{Held, ResponseBody, limit};
use crate::context::Trailers;

pin_project! {
    /// The inner service's response, or the answer to a call rejected from its headers.
    #[project = ResponseFutureProj]
    pub(crate) enum ResponseFuture<F> {
        Inner { #[pin] future: F, held: Option<Held> },
        Rejected { response: Option<Response<()>> },
    }
}

// === impl ResponseFuture ===

impl<F> ResponseFuture<F> {
    pub(super) fn inner(future: F, held: Option<Held>) -> Self {
        Self::Inner { future, held }
    }

    pub(super) fn rejected(response: Response<()>) -> Self {
        Self::Rejected {
            response: Some(response),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Inner { future, held } => {
                let mut response = ready!(future.poll(cx))?;
                // A trailers-only answer carries its status in the headers.
                limit::rewrite(response.headers_mut());
                let held = held.take();
                let trailers = response.extensions_mut().remove::<Trailers>();
                Poll::Ready(Ok(response.map(|body| ResponseBody::Inner {
                    body,
                    held,
                    trailers,
                })))
            }
            ResponseFutureProj::Rejected { response } => {
                // Polled again after Ready would be a caller's bug: answer the same way.
                let response = response.take().unwrap_or_default();
                Poll::Ready(Ok(response.map(|()| ResponseBody::Empty)))
            }
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
