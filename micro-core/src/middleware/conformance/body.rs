//! [`SingleMessage`], the request body of a single-request method, and [`ResponseBody`].

use std::{
    pin::Pin,
    task::{Context as TaskContext, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The length of a gRPC message's prefix: a compression flag and a 4-byte length.
const PREFIX: usize = 5;

pin_project! {
    /// A request body that fails with UNIMPLEMENTED ("request cardinality violation") when
    /// it holds other than exactly one gRPC message: as soon as a byte follows the first
    /// message, or when it ends with none. It only reads the 5-byte prefixes.
    #[derive(Debug)]
    pub(crate) struct SingleMessage<B> {
        #[pin]
        inner: B,
        // The first message's prefix, while it is incomplete.
        prefix: [u8; PREFIX],
        prefix_len: usize,
        // Bytes of the first message still to come, once its prefix is read.
        remaining: u64,
        // Whether the first message's prefix is complete.
        started: bool,
        failed: bool,
    }
}

pin_project! {
    /// The response of [`Conformance`](super::Conformance): the inner service's, or nothing
    /// for a call answered from its headers (the status is in the headers).
    #[project = ResponseBodyProj]
    #[derive(Debug)]
    pub(crate) enum ResponseBody<B> {
        Inner { #[pin] body: B },
        Empty,
    }
}

// === impl SingleMessage ===

impl<B> SingleMessage<B> {
    pub(crate) fn new(inner: B) -> Self {
        Self {
            inner,
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
            started: false,
            failed: false,
        }
    }
}

/// Follows `data` through the first message; `Err` when a byte follows it.
fn follow(
    data: &[u8],
    prefix: &mut [u8; PREFIX],
    prefix_len: &mut usize,
    remaining: &mut u64,
    started: &mut bool,
) -> Result<(), Status> {
    let mut data = data;
    if !*started {
        let take = (PREFIX - *prefix_len).min(data.len());
        prefix[*prefix_len..*prefix_len + take].copy_from_slice(&data[..take]);
        *prefix_len += take;
        data = &data[take..];
        if *prefix_len < PREFIX {
            return Ok(());
        }
        *started = true;
        *remaining = u64::from(u32::from_be_bytes([
            prefix[1], prefix[2], prefix[3], prefix[4],
        ]));
    }
    let len = data.len() as u64;
    if len > *remaining {
        return Err(Status::unimplemented(
            "request cardinality violation: this method takes one request message, and a \
             second one followed it",
        ));
    }
    *remaining -= len;
    Ok(())
}

impl<B> Body for SingleMessage<B>
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
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && let Err(status) = follow(
                        data,
                        this.prefix,
                        this.prefix_len,
                        this.remaining,
                        this.started,
                    )
                {
                    *this.failed = true;
                    return Poll::Ready(Some(Err(status.into())));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => Poll::Ready(Some(Err(err.into()))),
            None if *this.prefix_len == 0 => {
                *this.failed = true;
                Poll::Ready(Some(Err(Status::unimplemented(
                    "request cardinality violation: this method takes one request message, and \
                     the request had none",
                )
                .into())))
            }
            // A truncated message is tonic's to report ("Unexpected EOF").
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        // An empty body still has its error to give.
        self.failed || (self.prefix_len > 0 && self.inner.is_end_stream())
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
            ResponseBodyProj::Inner { body } => body.poll_frame(cx),
            ResponseBodyProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body } => body.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body } => body.size_hint(),
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}
