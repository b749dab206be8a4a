//! Call deadlines on the client: a response body that ends the call when its deadline
//! passes (or when a message is over the receive limit, see [`super::limit`]). The
//! `grpc-timeout` header itself lives in [`crate::context::grpc_timeout`].

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tonic::Status;

use super::limit::MessageLimit;

pub(crate) use crate::context::grpc_timeout::{GRPC_TIMEOUT, encode, parse};

pin_project! {
    /// A response body cut off with DEADLINE_EXCEEDED when the call's deadline passes: a
    /// deadline covers the whole call, streamed responses included. A message over the
    /// receive limit cuts it off with RESOURCE_EXHAUSTED.
    pub(crate) struct DeadlineBody {
        #[pin]
        inner: Incoming,
        // The call's own timer, handed over from the request phase: one timer per call.
        sleep: Pin<Box<Sleep>>,
        service: std::sync::Arc<str>,
        timeout: Duration,
        limit: MessageLimit,
        // A message over the limit, reported after the messages before it.
        over_limit: Option<Status>,
        // Ended early: the deadline passed, or a message was over the limit.
        expired: bool,
    }
}

impl DeadlineBody {
    pub(crate) fn new(
        inner: Incoming,
        sleep: Pin<Box<Sleep>>,
        timeout: Duration,
        service: std::sync::Arc<str>,
        limit: usize,
    ) -> Self {
        Self {
            inner,
            sleep,
            service,
            timeout,
            limit: MessageLimit::new(limit),
            over_limit: None,
            expired: false,
        }
    }
}

impl DeadlineBody {
    /// This body ended at once, unread: the answer is all in the headers.
    pub(crate) fn ended(mut self) -> Self {
        self.expired = true;
        self
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut this = self.project();
        if *this.expired {
            return Poll::Ready(None);
        }
        // The deadline first: once it has passed, the call failed, whatever the server sends.
        if this.sleep.as_mut().poll(cx).is_ready() {
            *this.expired = true;
            return Poll::Ready(Some(Err(exceeded(this.service, *this.timeout))));
        }
        if let Some(status) = this.over_limit.take() {
            *this.expired = true;
            return Poll::Ready(Some(Err(status)));
        }
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && let Err((at, status)) = this.limit.data(data, this.service)
        {
            // The rest is never read: the stub drops the body, which resets this stream
            // only; the connection goes on serving other calls. The messages before the
            // long one go first.
            if at == 0 {
                *this.expired = true;
                return Poll::Ready(Some(Err(status)));
            }
            *this.over_limit = Some(status);
            return Poll::Ready(Some(Ok(Frame::data(data.slice(..at)))));
        }
        Poll::Ready(frame.map(|frame| frame.map_err(|err| Status::from_error(Box::new(err)))))
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The status of a call to `service` whose `timeout` ran out.
pub(crate) fn exceeded(service: &str, timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "call to service {service} exceeded its deadline of {timeout:?}"
    ))
}
