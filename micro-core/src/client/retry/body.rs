//! Replayable request bodies: a unary request is buffered, up to a bound, so it can be sent
//! again on another node; anything else is sent once.

use std::{
    collections::VecDeque,
    future::poll_fn,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, request::Parts};
use http_body::{Body as _, Frame, SizeHint};
use tonic::{Status, body::Body};

/// The largest request body buffered for replay. Default is 64 KiB.
pub const DEFAULT_BUFFER_LIMIT: usize = 64 * 1024;

/// A request after [`buffer`]: either replayable on any number of attempts, or good for
/// one attempt only.
#[derive(Debug)]
pub(crate) enum Buffered {
    /// The whole body was read within the limit.
    Replayable(ReplayableRequest),
    /// The body is larger than the limit, still streaming, or failed: it can be sent once,
    /// and is not retried once sent.
    OneShot(Request<Body>),
}

/// A request whose head and whole body are kept, so each attempt gets a fresh copy.
///
/// The head keeps the request's extensions: in http 1.x every extension is `Clone`, so
/// each attempt sees all of them (tonic's `GrpcMethod`, the user's).
#[derive(Debug, Clone)]
pub(crate) struct ReplayableRequest {
    parts: Parts,
    data: Bytes,
    trailers: Option<HeaderMap>,
}

/// A body that yields frames already read, then an error read with them, then the rest of
/// the original body.
#[derive(Debug)]
struct Resumed {
    frames: VecDeque<Frame<Bytes>>,
    error: Option<Status>,
    rest: Option<Body>,
}

/// Reads `request`'s body while its frames are ready at once, and keeps it for replay if
/// it ended within `limit` bytes of data.
///
/// Never waits: a unary tonic request yields its one encoded message and ends without
/// pending, while a streaming request waits on the caller's stream, and is returned as
/// [`Buffered::OneShot`] at its first pending frame, with what was read put back in front.
/// An error read from the body is put back in its place too.
pub(crate) async fn buffer(request: Request<Body>, limit: usize) -> Buffered {
    let (parts, mut body) = request.into_parts();
    let mut first = None;
    let mut frames = VecDeque::new();
    let mut len = 0usize;
    let mut error = None;
    let mut ended = body.is_end_stream();
    let mut trailers_seen = false;
    if body.size_hint().lower() > limit as u64 {
        return Buffered::OneShot(Request::from_parts(parts, body));
    }
    while !ended && len <= limit && !trailers_seen {
        match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Pending => break,
            Poll::Ready(None) => ended = true,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    len = len.saturating_add(data.len());
                } else if frame.is_trailers() {
                    trailers_seen = true;
                }
                // The usual unary body is one frame: keep it out of the deque (no allocation).
                if first.is_none() && frames.is_empty() {
                    first = Some(frame);
                } else {
                    frames.push_back(frame);
                }
                ended = body.is_end_stream();
            }
            Poll::Ready(Some(Err(status))) => {
                error = Some(status);
                break;
            }
        }
    }
    // Trailers end a body; http_body does not require `is_end_stream` to say so.
    if (ended || trailers_seen) && error.is_none() && len <= limit {
        let mut data = BytesMut::with_capacity(len);
        let mut single = None;
        let mut trailers = None;
        let count = first
            .iter()
            .chain(&frames)
            .filter(|frame| frame.is_data())
            .count();
        for frame in first.into_iter().chain(frames) {
            match frame.into_data() {
                Ok(bytes) if count == 1 => single = Some(bytes),
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => {
                    if let Ok(map) = frame.into_trailers() {
                        trailers = Some(map);
                    }
                }
            }
        }
        return Buffered::Replayable(ReplayableRequest {
            parts,
            data: single.unwrap_or_else(|| data.freeze()),
            trailers,
        });
    }
    let rest = (!ended && error.is_none()).then_some(body);
    if let Some(first) = first {
        frames.push_front(first);
    }
    let body = Body::new(Resumed {
        frames,
        error,
        rest,
    });
    Buffered::OneShot(Request::from_parts(parts, body))
}

// === impl Buffered ===

impl Buffered {
    /// The request for the first attempt, and the replayable copy if there is one.
    ///
    /// The first attempt gets the original head, extensions included; replays get a copy
    /// of method, URI, version and headers (extensions stay with the first: nothing past
    /// the channel reads them, and copying them costs an allocation per call).
    pub(crate) fn into_first(self) -> (Request<Body>, Option<ReplayableRequest>) {
        match self {
            Buffered::Replayable(replayable) => {
                let first = replayable.body();
                let mut head = Request::new(());
                *head.method_mut() = replayable.parts.method.clone();
                *head.uri_mut() = replayable.parts.uri.clone();
                *head.version_mut() = replayable.parts.version;
                *head.headers_mut() = replayable.parts.headers.clone();
                let (head, ()) = head.into_parts();
                let ReplayableRequest {
                    parts,
                    data,
                    trailers,
                } = replayable;
                let first = Request::from_parts(parts, first);
                (
                    first,
                    Some(ReplayableRequest {
                        parts: head,
                        data,
                        trailers,
                    }),
                )
            }
            Buffered::OneShot(request) => (request, None),
        }
    }
}

// === impl ReplayableRequest ===

impl ReplayableRequest {
    /// A fresh copy of the request for one attempt. Cheap: the body's bytes are shared.
    pub(crate) fn request(&self) -> Request<Body> {
        Request::from_parts(self.parts.clone(), self.body())
    }

    fn body(&self) -> Body {
        Body::new(Replay {
            data: (!self.data.is_empty()).then(|| self.data.clone()),
            trailers: self.trailers.clone(),
        })
    }

    /// The length of the buffered body.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }
}

/// The body of a replayed request: the buffered bytes, then the trailers, if any.
#[derive(Debug)]
struct Replay {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(
            self.trailers
                .take()
                .map(|trailers| Ok(Frame::trailers(trailers))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |data| data.len() as u64))
    }
}

// === impl Resumed ===

impl http_body::Body for Resumed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(error) = self.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .frames
            .iter()
            .filter_map(|frame| frame.data_ref())
            .map(|data| data.len() as u64)
            .sum();
        let rest = match &self.rest {
            Some(rest) => rest.size_hint(),
            None => SizeHint::with_exact(0),
        };
        // Built from scratch: `SizeHint`'s setters assert lower <= upper at every step.
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(buffered));
        }
        hint.set_lower(rest.lower().saturating_add(buffered));
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::StreamExt as _;
    use http_body_util::{BodyExt as _, Full, StreamBody};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;

    fn request(body: Body) -> Request<Body> {
        let mut request = Request::post("http://node/pkg.Svc/Method")
            .header("te", "trailers")
            .body(body)
            .unwrap();
        request.extensions_mut().insert(Marker(7));
        request
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Marker(u32);

    async fn collect(request: Request<Body>) -> Result<(Bytes, Option<HeaderMap>), Status> {
        let collected = request.into_body().collect().await?;
        let trailers = collected.trailers().cloned();
        Ok((collected.to_bytes(), trailers))
    }

    /// A body fed by a channel, like a client-streaming tonic request.
    fn channel_body() -> (mpsc::Sender<Result<Frame<Bytes>, Status>>, Body) {
        let (tx, rx) = mpsc::channel(8);
        (tx, Body::new(StreamBody::new(ReceiverStream::new(rx))))
    }

    #[tokio::test]
    async fn unary_bodies_are_replayable() {
        let message = Bytes::from_static(b"\0\0\0\0\x03abc");
        let buffered = buffer(request(Body::new(Full::new(message.clone()))), 64).await;
        let Buffered::Replayable(replayable) = buffered else {
            panic!("not replayable: {buffered:?}");
        };
        assert_eq!(replayable.len(), message.len());
        for _ in 0..2 {
            let attempt = replayable.request();
            assert_eq!(attempt.uri(), "http://node/pkg.Svc/Method");
            assert_eq!(attempt.headers()["te"], "trailers");
            assert_eq!(attempt.extensions().get(), Some(&Marker(7)));
            assert_eq!(
                attempt.body().size_hint().exact(),
                Some(message.len() as u64)
            );
            assert_eq!(collect(attempt).await.unwrap(), (message.clone(), None));
        }
    }

    #[tokio::test]
    async fn empty_and_multi_frame_bodies_with_trailers_are_replayable() {
        let buffered = buffer(request(Body::empty()), 64).await;
        let Buffered::Replayable(replayable) = buffered else {
            panic!("not replayable: {buffered:?}");
        };
        assert!(replayable.request().body().is_end_stream());

        let (tx, body) = channel_body();
        let mut trailers = HeaderMap::new();
        trailers.insert("x-check", "1".parse().unwrap());
        tx.send(Ok(Frame::data(Bytes::from_static(b"ab"))))
            .await
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"cd"))))
            .await
            .unwrap();
        tx.send(Ok(Frame::trailers(trailers.clone())))
            .await
            .unwrap();
        drop(tx);
        let (first, replayable) = buffer(request(body), 64).await.into_first();
        assert!(replayable.is_some());
        let expected = (Bytes::from_static(b"abcd"), Some(trailers));
        assert_eq!(collect(first).await.unwrap(), expected);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_sent_once_unchanged() {
        let chunks: Vec<Result<Frame<Bytes>, Infallible>> = (0..10u8)
            .map(|i| Ok(Frame::data(Bytes::from(vec![i; 10]))))
            .collect();
        let original: Vec<u8> = (0..10u8).flat_map(|i| vec![i; 10]).collect();
        let body = Body::new(StreamBody::new(futures_util::stream::iter(chunks)));
        let buffered = buffer(request(body), 25).await;
        let Buffered::OneShot(sent) = buffered else {
            panic!("replayable: {buffered:?}");
        };
        assert_eq!(sent.extensions().get(), Some(&Marker(7)));
        assert_eq!(collect(sent).await.unwrap().0, original);

        // A body known to be too large is not read at all.
        let large = Body::new(Full::new(Bytes::from(vec![1; 100])));
        let Buffered::OneShot(sent) = buffer(request(large), 25).await else {
            panic!("replayable");
        };
        assert_eq!(sent.body().size_hint().exact(), Some(100));
    }

    #[tokio::test]
    async fn streaming_bodies_are_not_waited_for() {
        let (tx, body) = channel_body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"one"))))
            .await
            .unwrap();
        // The sender stays open: the next frame is pending, and `buffer` must not wait.
        let buffered =
            tokio::time::timeout(std::time::Duration::from_secs(5), buffer(request(body), 64))
                .await
                .unwrap();
        let Buffered::OneShot(request) = buffered else {
            panic!("replayable: {buffered:?}");
        };
        assert!(!request.body().is_end_stream());
        let mut frames = request.into_body().into_data_stream();
        assert_eq!(frames.next().await.unwrap().unwrap(), "one");
        tx.send(Ok(Frame::data(Bytes::from_static(b"two"))))
            .await
            .unwrap();
        assert_eq!(frames.next().await.unwrap().unwrap(), "two");
        tx.send(Ok(Frame::data(Bytes::from_static(b"three"))))
            .await
            .unwrap();
        drop(tx);
        assert_eq!(frames.next().await.unwrap().unwrap(), "three");
        assert!(frames.next().await.is_none());
    }

    #[tokio::test]
    async fn errors_are_kept_in_place() {
        let (tx, body) = channel_body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"one"))))
            .await
            .unwrap();
        tx.send(Err(Status::internal("encoding failed")))
            .await
            .unwrap();
        drop(tx);
        let buffered = buffer(request(body), 64).await;
        let Buffered::OneShot(request) = buffered else {
            panic!("replayable: {buffered:?}");
        };
        let mut body = request.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "one");
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(error.message(), "encoding failed");
        assert!(body.frame().await.is_none());
    }

    /// Writes each message's bytes as they are.
    struct RawEncoder;

    impl tonic::codec::Encoder for RawEncoder {
        type Item = Bytes;
        type Error = Status;

        fn encode(
            &mut self,
            item: Bytes,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), Status> {
            bytes::BufMut::put_slice(dst, &item);
            Ok(())
        }
    }

    #[tokio::test]
    async fn encoded_tonic_unary_requests_are_replayable() {
        // The body tonic's generated clients send for a unary call: one message from
        // `tokio_stream::once`, encoded with the 5-byte gRPC prefix.
        let stream = tokio_stream::once(Ok(Bytes::from_static(b"hello")));
        let body = tonic::codec::EncodeBody::new_client(RawEncoder, stream, None, None);
        let buffered = buffer(request(Body::new(body)), DEFAULT_BUFFER_LIMIT).await;
        let Buffered::Replayable(replayable) = buffered else {
            panic!("not replayable: {buffered:?}");
        };
        let (bytes, _) = collect(replayable.request()).await.unwrap();
        assert_eq!(bytes, &b"\0\0\0\0\x05hello"[..]);
    }
}
