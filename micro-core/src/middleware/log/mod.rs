//! [`Log`]: one `tracing` event per call, when it ends.
//!
//! HTTP level. The event carries `side` (`client` or `server`), `path`, `code` (the
//! canonical status name) and `duration`, at a level chosen by the code:
//!
//! | code | level |
//! |---|---|
//! | `OK` | `DEBUG` |
//! | `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS` (the server's or the network's fault) | `WARN` |
//! | any other (the caller's doing: `CANCELLED`, `INVALID_ARGUMENT`, `NOT_FOUND`, ...) | `INFO` |
//!
//! Inside [`TraceLayer`](super::trace::TraceLayer) the event belongs to the call's span
//! and so carries its trace id.

mod layer;

pub use layer::LogLayer;

use std::{
    task::{Context as TaskContext, Poll},
    time::Instant,
};

use http::{Request, Response, uri::PathAndQuery};
use tonic::Code;
use tower_service::Service;

use super::observe::{self, ObservedFuture, OnStatus, code_name};

/// The response future of [`Log`].
pub type ResponseFuture<F> = ObservedFuture<F, LogObserver>;

/// Logs each call when it ends; made by [`LogLayer`].
#[derive(Debug, Clone)]
pub struct Log<S> {
    inner: S,
    side: &'static str,
}

/// Logs a call's outcome when it ends.
#[derive(Debug)]
pub struct LogObserver {
    side: &'static str,
    path: Option<PathAndQuery>,
    start: Instant,
}

// === impl Log ===

impl<S> Log<S> {
    fn new(inner: S, side: &'static str) -> Self {
        Self { inner, side }
    }
}

impl<S, B, ResB> Service<Request<B>> for Log<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: 'static,
{
    type Response = Response<observe::ObservedBody<ResB, LogObserver>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let observer = LogObserver {
            side: self.side,
            // A reference count, not a copy, for paths received or generated.
            path: request.uri().path_and_query().cloned(),
            start: Instant::now(),
        };
        let deadline = observe::deadline_of(&request);
        ObservedFuture::new(self.inner.call(request), Some(observer), deadline)
    }
}

// === impl LogObserver ===

impl OnStatus for LogObserver {
    fn on_status(self, code: Code) {
        let duration = self.start.elapsed();
        let path = self.path.as_ref().map_or("", PathAndQuery::path);
        let side = self.side;
        let level = level(code);
        let code = code_name(code);
        match level {
            tracing::Level::DEBUG => {
                tracing::debug!(side, path, code, ?duration, "call finished");
            }
            tracing::Level::INFO => {
                tracing::info!(side, path, code, ?duration, "call failed");
            }
            _ => tracing::warn!(side, path, code, ?duration, "call failed"),
        }
    }
}

fn level(code: Code) -> tracing::Level {
    match code {
        Code::Ok => tracing::Level::DEBUG,
        Code::Unknown
        | Code::DeadlineExceeded
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => tracing::Level::WARN,
        _ => tracing::Level::INFO,
    }
}

#[cfg(test)]
mod tests;
