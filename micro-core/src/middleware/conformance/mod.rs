//! [`Conformance`]: what the gRPC over HTTP/2 specification asks of a server and tonic leaves
//! to it, checked before a call reaches anything of the user's.
//!
//! - A request whose method is not POST (PROTOCOL-HTTP2.md: "Method → \":method POST\"")
//!   gets HTTP 405 with `allow: POST`, and `grpc-status` INTERNAL; tonic ran it.
//! - A request whose `content-type` is not `application/grpc` or `application/grpc+<codec>`
//!   (parameters allowed) gets HTTP 415 ("If Content-Type does not begin with
//!   `application/grpc`, gRPC servers SHOULD respond with HTTP status of 415"), with
//!   `grpc-status` INTERNAL for gRPC clients. tonic would decode the body anyway.
//! - A malformed `grpc-timeout` (not 1 to 8 digits and one of `H M S m u n`) gets INTERNAL
//!   "malformed grpc-timeout", as grpc-go answers; tonic ignores it and runs the call
//!   without a deadline.
//! - A method that takes one request (unary and server-streaming) and receives another
//!   number of messages fails with UNIMPLEMENTED, the code of the status code table
//!   (`doc/statuscodes.md`: "Request cardinality violation (method requires exactly one
//!   request but client sent some other number of requests) | UNIMPLEMENTED | Server").
//!   tonic reads a unary request to its end before the handler runs, so the handler never
//!   sees such a call; without this check it ran with the first message.
//! - Each request message of 64 KiB or more takes its length from the service's
//!   [`MessageBudget`] when its 5-byte prefix arrives, before tonic buffers it, until the
//!   call's answer is done; one that does not fit fails with RESOURCE_EXHAUSTED. This bounds
//!   the memory of concurrent large messages (100 concurrent 3.9 MB puts peaked at 435 MB; the
//!   length of a compressed message is its compressed length).
//! - A message over a size limit (a request over the method's receive limit, a reply over
//!   its send limit) ends with RESOURCE_EXHAUSTED, naming the size and the limit, as the
//!   status code table asks ("Sent or received message was larger than configured limit")
//!   and grpc-go and grpc's C core answer; tonic answers OUT_OF_RANGE. See [`limit`].
//! - A handler's [`Trailers`](crate::context::Trailers), attached to its reply, are sent in
//!   the reply's trailers; a tonic handler can set headers only.
//!
//! HTTP level: it reads headers, and watches the 5-byte message prefixes of request bodies
//! as they stream by (no copy, no buffering).

mod body;
pub(crate) mod budget;
mod future;
mod limit;

pub(crate) use body::{Held, RequestBody, ResponseBody};
pub(crate) use budget::MessageBudget;
pub(crate) use future::ResponseFuture;

use std::{
    collections::HashSet,
    sync::Arc,
    task::{Context as TaskContext, Poll},
};

use http::{
    HeaderValue, Method, Request, Response, StatusCode,
    header::{ALLOW, CONTENT_TYPE},
};
use tonic::{Status, body::Body};
use tower_service::Service;

use crate::{codegen::ServiceDescriptor, context::grpc_timeout};

/// The methods of the health service, which has no descriptor: `Check` is unary, `Watch`
/// server-streaming.
const HEALTH_SINGLE_REQUEST: [&str; 2] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// What [`Conformance`] checks: the paths (`/pkg.Service/Method`) of the methods that take
/// exactly one request message, and the budget for large messages.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules {
    single: Arc<HashSet<Box<str>>>,
    budget: Option<MessageBudget>,
}

/// Checks each call against the gRPC specification; see [the module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct Conformance<S> {
    inner: S,
    rules: Rules,
}

// === impl Rules ===

impl Rules {
    /// The single-request methods of `descriptors` and of the health service; a budget of
    /// `budget` bytes for large messages (`None`: no limit).
    pub(crate) fn new<'a>(
        descriptors: impl IntoIterator<Item = &'a ServiceDescriptor>,
        budget: Option<usize>,
    ) -> Self {
        let mut paths: HashSet<Box<str>> = HEALTH_SINGLE_REQUEST
            .iter()
            .map(|&path| path.into())
            .collect();
        for descriptor in descriptors {
            for endpoint in descriptor.endpoints {
                if !endpoint.client_streaming {
                    paths.insert(format!("/{}/{}", descriptor.name, endpoint.name).into());
                }
            }
        }
        Self {
            single: Arc::new(paths),
            budget: budget.map(MessageBudget::new),
        }
    }

    fn is_single(&self, path: &str) -> bool {
        self.single.contains(path)
    }
}

// === impl Conformance ===

impl<S> Conformance<S> {
    pub(crate) fn new(inner: S, rules: Rules) -> Self {
        Self { inner, rules }
    }
}

impl<S, ResB> Service<Request<Body>> for Conformance<S>
where
    S: Service<Request<Body>, Response = Response<ResB>>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if let Some(rejected) = reject(&request) {
            return ResponseFuture::rejected(rejected);
        }
        let single = self.rules.is_single(request.uri().path());
        let budget = self
            .rules
            .budget
            .as_ref()
            .map(|budget| (budget.clone(), Held::default()));
        let held = budget.as_ref().map(|(_, held)| held.clone());
        let request = if single || budget.is_some() {
            request.map(|body| Body::new(RequestBody::new(body, single, budget)))
        } else {
            request
        };
        ResponseFuture::inner(self.inner.call(request), held)
    }
}

/// The answer to a request that breaks the specification in its headers.
fn reject<B>(request: &Request<B>) -> Option<Response<()>> {
    if request.method() != Method::POST {
        let method = request.method();
        tracing::debug!(%method, path = request.uri().path(), "not a gRPC request: 405");
        let mut response = Status::internal(format!(
            "invalid gRPC request method {method}: gRPC calls are HTTP POST requests"
        ))
        .into_http::<()>();
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return Some(response);
    }
    let headers = request.headers();
    let content_type = headers.get(CONTENT_TYPE);
    if !content_type.is_some_and(is_grpc) {
        let shown = content_type.map_or_else(
            || "none".to_owned(),
            |value| format!("{:?}", String::from_utf8_lossy(value.as_bytes())),
        );
        tracing::debug!(content_type = %shown, path = request.uri().path(), "not a gRPC request: 415");
        let mut response = Status::internal(format!(
            "invalid gRPC request content-type {shown}: expected application/grpc or \
             application/grpc+<codec>"
        ))
        .into_http::<()>();
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Some(response);
    }
    if let Some(timeout) = headers.get(grpc_timeout::GRPC_TIMEOUT)
        && grpc_timeout::parse(timeout).is_none()
    {
        let shown = String::from_utf8_lossy(timeout.as_bytes());
        tracing::debug!(grpc_timeout = %shown, path = request.uri().path(), "malformed grpc-timeout");
        return Some(
            Status::internal(format!(
                "malformed grpc-timeout {shown:?}: expected 1 to 8 digits and a unit (H, M, S, \
                 m, u or n)"
            ))
            .into_http(),
        );
    }
    None
}

/// `application/grpc`, or `application/grpc+<codec>`, with any parameters; case-insensitive
/// as media types are.
pub(crate) fn is_grpc(value: &HeaderValue) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let bytes = value.as_bytes();
    let media = bytes
        .iter()
        .position(|&b| b == b';')
        .map_or(bytes, |at| &bytes[..at]);
    let media = media.trim_ascii();
    if media.len() < GRPC.len() || !media[..GRPC.len()].eq_ignore_ascii_case(GRPC) {
        return false;
    }
    match &media[GRPC.len()..] {
        [] => true,
        [b'+', codec @ ..] => !codec.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
