//! [`ResponseFuture`] of [`Interceptor`](super::Interceptor).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tonic::Status;
use tower_service::Service;

use super::Reject;

pin_project! {
    /// Awaits the interceptor, then calls the inner service or answers with the rejection.
    pub struct ResponseFuture<Fut, S, F> {
        #[pin]
        state: State<Fut, S, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut, S, F> {
        Intercepting {
            #[pin]
            interceptor: Fut,
            inner: Option<S>,
        },
        Calling {
            #[pin]
            call: F,
        },
    }
}

// === impl ResponseFuture ===

impl<Fut, S, F> ResponseFuture<Fut, S, F> {
    pub(super) fn new(interceptor: Fut, inner: S) -> Self {
        Self {
            state: State::Intercepting {
                interceptor,
                inner: Some(inner),
            },
        }
    }
}

impl<Fut, S, B, ResB> Future for ResponseFuture<Fut, S, S::Future>
where
    Fut: Future<Output = Result<Request<B>, Status>>,
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Reject,
    ResB: Default,
{
    type Output = Result<Response<ResB>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut state = self.as_mut().project().state;
            match state.as_mut().project() {
                StateProj::Intercepting { interceptor, inner } => {
                    let request = match ready!(interceptor.poll(cx)) {
                        Ok(request) => request,
                        Err(status) => return Poll::Ready(S::Error::reject(status)),
                    };
                    let Some(mut inner) = inner.take() else {
                        return Poll::Ready(S::Error::reject(Status::internal(
                            "interceptor future polled after completion",
                        )));
                    };
                    let call = inner.call(request);
                    state.set(State::Calling { call });
                }
                StateProj::Calling { call } => return call.poll(cx),
            }
        }
    }
}

impl<Fut, S, F> fmt::Debug for ResponseFuture<Fut, S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
