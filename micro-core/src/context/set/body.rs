//! [`ContextBody`]: a response body polled inside the call's context.

use std::{
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::context::{self, Context};

pin_project! {
    /// A response body polled inside the call's [`Context`], so a streaming handler's
    /// stream (which runs as the body is read) sees the context too.
    #[derive(Debug)]
    pub struct ContextBody<B> {
        #[pin]
        inner: B,
        context: Option<Context>,
    }
}

// === impl ContextBody ===

impl<B> ContextBody<B> {
    pub(super) fn new(inner: B, context: Option<Context>) -> Self {
        Self { inner, context }
    }
}

impl<B: Body> Body for ContextBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.context {
            // A clone per frame: a few reference counts, no allocation.
            Some(call_context) => {
                let inner = this.inner;
                context::sync_scope(call_context.clone(), || inner.poll_frame(cx))
            }
            None => this.inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
