//! [`ObservedBody`]: a response body that reports the status in its trailers.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;

use super::{OnStatus, Pending, error_code, header_code};

pin_project! {
    /// A response body that reports the `grpc-status` of its trailers to an [`OnStatus`];
    /// made by [`ObservedFuture`](super::ObservedFuture).
    #[derive(Debug)]
    pub struct ObservedBody<B, O: OnStatus> {
        #[pin]
        inner: B,
        pending: Pending<O>,
    }
}

// === impl ObservedBody ===

impl<B, O: OnStatus> ObservedBody<B, O> {
    pub(super) fn new(inner: B, pending: Pending<O>) -> Self {
        Self { inner, pending }
    }
}

impl<B, O> Body for ObservedBody<B, O>
where
    B: Body,
    B::Error: 'static,
    O: OnStatus,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if this.pending.is_done() {
            return this.inner.poll_frame(cx);
        }
        let inner = this.inner;
        let polled = this.pending.in_scope(|| inner.poll_frame(cx));
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.pending
                        .report(header_code(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(error))) => this.pending.report(error_code(error)),
            Poll::Ready(None) => this.pending.report(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
