//! [`ObservedFuture`]: a response future that reports how the call ended.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::{ObservedBody, OnStatus, Pending, error_code, head_code};

pin_project! {
    /// A response future whose call's end is reported to an [`OnStatus`]: an error or a
    /// trailers-only response when it completes, otherwise through the [`ObservedBody`] it
    /// wraps the response body in. Dropped before completion, the call is reported as
    /// cancelled (or as past its deadline).
    #[derive(Debug)]
    pub struct ObservedFuture<F, O: OnStatus> {
        #[pin]
        inner: F,
        pending: Pending<O>,
    }
}

// === impl ObservedFuture ===

impl<F, O: OnStatus> ObservedFuture<F, O> {
    /// Observes `inner` with `observer`; with `None` it only passes through.
    pub fn new(inner: F, observer: Option<O>, deadline: Option<Instant>) -> Self {
        Self {
            inner,
            pending: Pending::new(observer, deadline),
        }
    }
}

impl<F, O, B, E> Future for ObservedFuture<F, O>
where
    F: Future<Output = Result<Response<B>, E>>,
    O: OnStatus,
    E: 'static,
{
    type Output = Result<Response<ObservedBody<B, O>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let result = ready!(this.pending.in_scope(|| inner.poll(cx)));
        let pending = this.pending;
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(observer) = &mut pending.observer {
                    observer.on_response(&response);
                }
                if let Some(code) = head_code(&response) {
                    pending.report(code);
                }
                let rest = Pending::new(pending.observer.take(), pending.deadline);
                Ok(response.map(|body| ObservedBody::new(body, rest)))
            }
            Err(error) => {
                pending.report(error_code(&error));
                Err(error)
            }
        })
    }
}
