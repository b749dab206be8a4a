//! [`interceptor_fn`]: an async closure that may rewrite or reject each request.
//!
//! For simple header work (authentication, adding metadata) on a client or a server:
//!
//! ```
//! use micro_core::middleware::interceptor::interceptor_fn;
//! use tonic::Status;
//!
//! let auth = interceptor_fn(|request: http::Request<tonic::body::Body>| async move {
//!     match request.headers().get("authorization") {
//!         Some(token) if token == "Bearer secret" => Ok(request),
//!         _ => Err(Status::unauthenticated("missing or wrong token")),
//!     }
//! });
//! // Service::builder("greeter").layer(auth) or
//! // tower::ServiceBuilder::new().layer(auth).service(client.channel("greeter"))
//! # let _ = auth;
//! ```
//!
//! A rejected call never reaches the inner service. A server answers it with the status
//! (as a trailers-only response); a client fails it with the status, boxed.
//!
//! # When to write a layer instead
//!
//! The closure sees the request head only before the call and nothing after it. Write a
//! full tower layer to look at the response or its status (use
//! [`observe`](super::observe)), to read or transform the message bodies, to hold state
//! across calls with back-pressure (`poll_ready`), or on a hot path where the closure's
//! future should not be awaited before each call.

mod future;
mod layer;

pub use future::ResponseFuture;
pub use layer::{InterceptorLayer, interceptor_fn};

use std::{
    convert::Infallible,
    error::Error as StdError,
    future::Future,
    task::{Context, Poll},
};

use http::{Request, Response};
use tonic::Status;
use tower_service::Service;

/// Runs a closure on each request before the inner service; made by [`interceptor_fn`].
#[derive(Debug, Clone)]
pub struct Interceptor<S, F> {
    inner: S,
    f: F,
}

/// How a service's error type carries an interceptor's rejection.
///
/// Implemented for `Infallible` (servers: the status becomes the response), for boxed
/// errors (clients such as [`Channel`](crate::Channel): the status, boxed) and for
/// [`Status`].
pub trait Reject: Sized {
    /// The result a service returns for a call rejected with `status`.
    ///
    /// # Errors
    /// When the error type can carry the status, it does.
    fn reject<B: Default>(status: Status) -> Result<Response<B>, Self>;
}

// === impl Interceptor ===

impl<S, F> Interceptor<S, F> {
    /// Wraps `inner`.
    pub fn new(inner: S, f: F) -> Self {
        Self { inner, f }
    }
}

impl<S, F, Fut, B, ResB> Service<Request<B>> for Interceptor<S, F>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Reject,
    F: Fn(Request<B>) -> Fut,
    Fut: Future<Output = Result<Request<B>, Status>>,
    ResB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<Fut, S, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The ready service goes with the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new((self.f)(request), inner)
    }
}

// === impl Reject ===

impl Reject for Infallible {
    fn reject<B: Default>(status: Status) -> Result<Response<B>, Self> {
        Ok(status.into_http())
    }
}

impl Reject for Box<dyn StdError + Send + Sync + 'static> {
    fn reject<B: Default>(status: Status) -> Result<Response<B>, Self> {
        Err(Box::new(status))
    }
}

impl Reject for Status {
    fn reject<B: Default>(status: Status) -> Result<Response<B>, Self> {
        Err(status)
    }
}
