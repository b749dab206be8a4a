//! [`Track`]: counts a connection's requests in flight, from the request's head to the end
//! of its response body, so the connection knows when it is idle.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::limit::{InFlight, Slot};

/// Wraps a connection's hyper service.
#[derive(Clone)]
pub(crate) struct Track<S> {
    inner: S,
    slot: Arc<Slot>,
}

pin_project! {
    /// The response future of [`Track`].
    pub(crate) struct TrackFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

pin_project! {
    /// A response body that holds its request's place in flight until dropped.
    pub(crate) struct TrackBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

// === impl Track ===

impl<S> Track<S> {
    pub(crate) fn new(inner: S, slot: Arc<Slot>) -> Self {
        Self { inner, slot }
    }
}

impl<S, R, B> hyper::service::Service<Request<R>> for Track<S>
where
    S: hyper::service::Service<Request<R>, Response = Response<B>>,
{
    type Response = Response<TrackBody<B>>;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn call(&self, request: Request<R>) -> Self::Future {
        let in_flight = Some(self.slot.begin());
        TrackFuture {
            inner: self.inner.call(request),
            in_flight,
        }
    }
}

impl<F, B, E> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|inner| TrackBody { inner, in_flight })))
    }
}

impl<B: Body> Body for TrackBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
