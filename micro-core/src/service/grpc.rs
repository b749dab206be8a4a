//! The gRPC port: HTTP/2 settings and each connection's service, as tonic's `Server` makes
//! them, served through [`crate::transport`] so idle and surplus connections are closed.
//!
//! Per request, outermost first: connect info into the extensions → tonic's
//! `RecoverError` (an error carrying a `Status` becomes that status) → [`GrpcTimeout`]
//! (the `grpc-timeout` header bounds the call; `CANCELLED` "Timeout expired" like tonic)
//! → the server stack (context, trace, metrics, user layers, routes).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::Request;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tonic::{
    body::Body,
    service::{RecoverError, RecoverErrorLayer},
};
use tower::Layer;
use tower_service::Service;

use crate::{
    context::{GRPC_TIMEOUT, parse_grpc_timeout},
    middleware::stack::ServerService,
    transport::ConnectionInfo,
};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// HTTP/2 only, with tonic's server settings (hyper's defaults, unlimited concurrent
/// streams); keep-alive comes from the service's connection settings.
pub(super) fn http() -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new()).http2_only();
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(None)
        .adaptive_window(false);
    http
}

/// The service of one connection.
pub(super) type ConnectionService =
    TowerToHyperService<WithInfo<RecoverError<GrpcTimeout<ServerService>>>>;

/// The service of the connection `info` describes.
pub(super) fn connection_service(stack: ServerService, info: &ConnectionInfo) -> ConnectionService {
    TowerToHyperService::new(WithInfo {
        inner: RecoverErrorLayer::new().layer(GrpcTimeout { inner: stack }),
        info: info.clone(),
    })
}

/// Turns hyper's request into tonic's, with the connection's connect info in its
/// extensions (`tonic::Request::remote_addr`).
#[derive(Clone, Debug)]
pub(super) struct WithInfo<S> {
    inner: S,
    info: ConnectionInfo,
}

impl<S> Service<Request<Incoming>> for WithInfo<S>
where
    S: Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let mut request = request.map(Body::new);
        self.info.insert_into(request.extensions_mut());
        self.inner.call(request)
    }
}

/// Bounds a call by its `grpc-timeout` header; a malformed one is ignored, as tonic does.
#[derive(Clone, Debug)]
pub(super) struct GrpcTimeout<S> {
    inner: S,
}

pin_project! {
    /// The response future of [`GrpcTimeout`].
    pub(super) struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<S, B> Service<Request<B>> for GrpcTimeout<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let timeout: Option<Duration> = request
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(parse_grpc_timeout);
        TimeoutFuture {
            inner: self.inner.call(request),
            sleep: timeout.map(tokio::time::sleep),
        }
    }
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(tonic::TimeoutExpired(()).into())),
            _ => Poll::Pending,
        }
    }
}
