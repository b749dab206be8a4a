//! Observing how a call ends: the final gRPC status of a call, wherever it shows up.
//!
//! A gRPC call's status arrives in one of four places, and [`ObservedFuture`] with
//! [`ObservedBody`] watch all of them, reporting to an [`OnStatus`] exactly once:
//!
//! | how the call ends | reported code |
//! |---|---|
//! | trailers with `grpc-status` (a normal response) | that code |
//! | response headers with `grpc-status` (trailers-only, e.g. an error) | that code |
//! | the inner service fails (client side: connect error, deadline) | the `Status` in the error's source chain, else `UNKNOWN` |
//! | the body fails | the `Status` error's code, else `UNKNOWN` |
//! | the body ends without trailers | `UNKNOWN` |
//! | the future or body is dropped first (caller cancelled, server deadline) | `DEADLINE_EXCEEDED` once the deadline passed, else `CANCELLED` |
//! | a non-200 HTTP status without `grpc-status` | mapped per the gRPC HTTP status mapping |
//!
//! The tracing, metrics and log middleware are built on these; a custom layer that needs
//! the final status can be too.

mod body;
mod future;

pub use body::ObservedBody;
pub use future::ObservedFuture;

use std::{any::Any, error::Error as StdError, time::Duration};

use http::{HeaderMap, Request, Response, StatusCode};
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::context::{self, GRPC_TIMEOUT};

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Told how a call ended; see the [module docs](self).
pub trait OnStatus: Send + 'static {
    /// Called once the response head arrived, before the body is read.
    fn on_response<B>(&mut self, response: &Response<B>) {
        let _ = response;
    }

    /// Called exactly once, with the call's final status code.
    fn on_status(self, code: Code);

    /// Runs `poll`, which polls the inner future or body, e.g. inside a span.
    fn in_scope<R>(&self, poll: impl FnOnce() -> R) -> R {
        poll()
    }
}

/// An [`OnStatus`] with a deadline: a call dropped after it is reported as
/// `DEADLINE_EXCEEDED` instead of `CANCELLED`.
#[derive(Debug)]
pub(crate) struct Pending<O: OnStatus> {
    observer: Option<O>,
    deadline: Option<Instant>,
}

// === impl Pending ===

impl<O: OnStatus> Pending<O> {
    pub(crate) fn new(observer: Option<O>, deadline: Option<Instant>) -> Self {
        Self { observer, deadline }
    }

    fn report(&mut self, code: Code) {
        if let Some(observer) = self.observer.take() {
            observer.on_status(code);
        }
    }

    fn is_done(&self) -> bool {
        self.observer.is_none()
    }

    fn in_scope<R>(&self, poll: impl FnOnce() -> R) -> R {
        match &self.observer {
            Some(observer) => observer.in_scope(poll),
            None => poll(),
        }
    }
}

/// How early a drop may come and still count as the deadline's: tonic's own deadline
/// timer starts a little before this layer reads the deadline, and timers fire on
/// millisecond ticks.
const DEADLINE_SLACK: Duration = Duration::from_millis(5);

impl<O: OnStatus> Drop for Pending<O> {
    fn drop(&mut self) {
        if self.observer.is_some() {
            let expired = self
                .deadline
                .is_some_and(|deadline| Instant::now() + DEADLINE_SLACK >= deadline);
            self.report(if expired {
                Code::DeadlineExceeded
            } else {
                Code::Cancelled
            });
        }
    }
}

/// The deadline of a request: its `grpc-timeout` from now, else the current context's.
pub(crate) fn deadline_of<B>(request: &Request<B>) -> Option<Instant> {
    request
        .headers()
        .get(GRPC_TIMEOUT)
        .and_then(crate::context::parse_grpc_timeout)
        .and_then(|timeout| Instant::now().checked_add(timeout))
        .or_else(context::current_deadline)
}

/// The status code of a response head: `grpc-status` if present (trailers-only), a code
/// mapped from a non-200 HTTP status, else `None` (the status follows in the trailers).
pub(crate) fn head_code<B>(response: &Response<B>) -> Option<Code> {
    if let Some(code) = header_code(response.headers()) {
        return Some(code);
    }
    // https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md
    Some(match response.status() {
        StatusCode::OK => return None,
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    })
}

/// The `grpc-status` in `headers`, if any.
pub(crate) fn header_code(headers: &HeaderMap) -> Option<Code> {
    headers
        .get(Status::GRPC_STATUS)
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// The status code of an error from an inner service or a body, as tonic would map it:
/// a `Status` itself, or the first one in a boxed error's source chain.
pub(crate) fn error_code<E: 'static>(error: &E) -> Code {
    let any: &dyn Any = error;
    if let Some(status) = any.downcast_ref::<Status>() {
        return status.code();
    }
    if let Some(error) = any.downcast_ref::<BoxError>() {
        let mut source: Option<&(dyn StdError + 'static)> = Some(error.as_ref());
        while let Some(error) = source {
            if let Some(status) = error.downcast_ref::<Status>() {
                return status.code();
            }
            if error.is::<tonic::TimeoutExpired>() {
                return Code::Cancelled;
            }
            if error.is::<tonic::ConnectError>() {
                return Code::Unavailable;
            }
            source = error.source();
        }
    }
    Code::Unknown
}

/// The service and method of a gRPC path `/pkg.Service/Method`; `None` for other paths.
pub(crate) fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

/// The canonical name of a code as gRPC spells it (`NOT_FOUND`): metric labels, logs, the
/// CLI's messages and the HTTP gateway's error bodies.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests;
