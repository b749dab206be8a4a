//! [`RequestBody`], which follows the gRPC messages of a request as they stream by, and
//! [`ResponseBody`].

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context as TaskContext, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

use super::{budget::MessageBudget, limit};
use crate::{context::Trailers, lock::lock};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The length of a gRPC message's prefix: a compression flag and a 4-byte length.
const PREFIX: usize = 5;

/// The budget held for the request's current large message, shared with the response so that
/// it is kept until the call's answer is done (the handler holds the decoded message).
pub(crate) type Held = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

pin_project! {
    /// A request body read through: it reads only the 5-byte prefixes of the messages.
    ///
    /// - `single`: fails with UNIMPLEMENTED ("request cardinality violation") as soon as a
    ///   byte follows the first message, or when the body ends with none.
    /// - `budget`: each message of [`LARGE`](super::budget::LARGE) bytes or more takes its
    ///   length from the budget when its prefix arrives, before tonic buffers it, or fails
    ///   with RESOURCE_EXHAUSTED; it keeps it in `held` until the next message or the end
    ///   of the call.
    #[derive(Debug)]
    pub(crate) struct RequestBody<B> {
        #[pin]
        inner: B,
        single: bool,
        budget: Option<(MessageBudget, Held)>,
        // The current message's prefix, while it is incomplete.
        prefix: [u8; PREFIX],
        prefix_len: usize,
        // Bytes of the current message still to come, once its prefix is read.
        remaining: u64,
        // Messages whose prefix was read.
        messages: u64,
        failed: bool,
    }
}

pin_project! {
    /// The response of [`Conformance`](super::Conformance): the inner service's, its
    /// trailers corrected (see [`limit`]) and given the handler's [`Trailers`], or nothing for a call answered from its headers
    /// (the status is in the headers).
    #[project = ResponseBodyProj]
    #[derive(Debug)]
    pub(crate) enum ResponseBody<B> {
        Inner {
            #[pin]
            body: B,
            // Released when the answer is done (or dropped).
            held: Option<Held>,
            // The handler's, added to the trailers.
            trailers: Option<Trailers>,
        },
        Empty,
    }
}

// === impl RequestBody ===

impl<B> RequestBody<B> {
    pub(crate) fn new(inner: B, single: bool, budget: Option<(MessageBudget, Held)>) -> Self {
        Self {
            inner,
            single,
            budget,
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
            messages: 0,
            failed: false,
        }
    }
}

/// The messages' state, apart from the pinned body.
struct Follow<'a> {
    single: bool,
    budget: &'a Option<(MessageBudget, Held)>,
    prefix: &'a mut [u8; PREFIX],
    prefix_len: &'a mut usize,
    remaining: &'a mut u64,
    messages: &'a mut u64,
}

impl Follow<'_> {
    /// Follows `data` through the messages.
    fn data(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if *self.remaining > 0 {
                let take = data
                    .len()
                    .min(usize::try_from(*self.remaining).unwrap_or(usize::MAX));
                *self.remaining -= take as u64;
                data = &data[take..];
                continue;
            }
            if *self.prefix_len == 0 && self.single && *self.messages == 1 {
                return Err(Status::unimplemented(
                    "request cardinality violation: this method takes one request message, \
                     and a second one followed it",
                ));
            }
            let take = (PREFIX - *self.prefix_len).min(data.len());
            self.prefix[*self.prefix_len..*self.prefix_len + take].copy_from_slice(&data[..take]);
            *self.prefix_len += take;
            data = &data[take..];
            if *self.prefix_len == PREFIX {
                *self.prefix_len = 0;
                *self.messages += 1;
                let [_, a, b, c, d] = *self.prefix;
                let len = u32::from_be_bytes([a, b, c, d]);
                *self.remaining = u64::from(len);
                self.take_budget(len)?;
            }
        }
        Ok(())
    }

    fn take_budget(&mut self, len: u32) -> Result<(), Status> {
        let Some((budget, held)) = self.budget else {
            return Ok(());
        };
        // The previous message was decoded before this one's bytes are read: its share goes
        // back first.
        let mut held = lock(held);
        held.take();
        *held = budget.try_take(len)?;
        Ok(())
    }

    /// The body ended: `Err` when a single-request body had no message.
    fn end(&self) -> Result<(), Status> {
        if self.single && *self.messages == 0 && *self.prefix_len == 0 {
            return Err(Status::unimplemented(
                "request cardinality violation: this method takes one request message, and the \
                 request had none",
            ));
        }
        // A truncated message is tonic's to report ("Unexpected EOF").
        Ok(())
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let frame = ready!(this.inner.poll_frame(cx));
        let mut follow = Follow {
            single: *this.single,
            budget: this.budget,
            prefix: this.prefix,
            prefix_len: this.prefix_len,
            remaining: this.remaining,
            messages: this.messages,
        };
        let checked = match &frame {
            Some(Ok(frame)) => frame.data_ref().map_or(Ok(()), |data| follow.data(data)),
            Some(Err(_)) => Ok(()),
            None => follow.end(),
        };
        if let Err(status) = checked {
            *this.failed = true;
            return Poll::Ready(Some(Err(status.into())));
        }
        Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        // An empty single-request body still has its error to give.
        self.failed || (!(self.single && self.messages == 0) && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl ResponseBody ===

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project() {
            ResponseBodyProj::Inner {
                body,
                held,
                trailers,
            } => {
                let mut frame = ready!(body.poll_frame(cx));
                match &mut frame {
                    Some(Ok(frame)) => {
                        if let Some(sent) = frame.trailers_mut() {
                            limit::rewrite(sent);
                            if let Some(trailers) = trailers.take() {
                                trailers.add_to(sent);
                            }
                        }
                    }
                    // The answer is done: the request's budget goes back now.
                    None => drop(held.take()),
                    Some(Err(_)) => {}
                }
                Poll::Ready(frame)
            }
            ResponseBodyProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body, .. } => body.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body, .. } => body.size_hint(),
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}
