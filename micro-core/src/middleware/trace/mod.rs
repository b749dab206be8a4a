//! [`Trace`]: a `tracing` span per call, linked across services by W3C `traceparent`.
//!
//! HTTP level: reads and writes headers, watches the status.
//!
//! - **Server** ([`TraceLayer::server`]): opens `grpc.server` with the call's
//!   [`TraceContext`]: the one [`ContextLayer`](crate::context::ContextLayer) put in the
//!   [`Context`](crate::context::Context) (a child of the caller's `traceparent`, or a new root), so the span ids
//!   and the ids the handler passes downstream agree. Outside a context (a plain tonic
//!   server) it reads `traceparent` itself.
//! - **Client** ([`TraceLayer::client`]): opens `grpc.client` as a child of the current
//!   context's trace (a new root outside one) and sends it as `traceparent`, with the
//!   context's `tracestate`. A `traceparent` the call set itself is taken as the parent.
//!   A call outside any trace (no context, no `traceparent` of its own) whose span no
//!   subscriber would record sends no `traceparent`, as OpenTelemetry does without a
//!   recording span: the server then starts the trace. Inside a handler the trace is always
//!   passed on.
//!
//! Span fields: `rpc.system = "grpc"`, `rpc.service`, `rpc.method`, `trace_id`, `span_id`,
//! `parent_span_id` (when there is a parent), `rpc.grpc.status_code` once known, and on the
//! client `node` and `server.address` from the [`NodeInfo`] of the
//! response. The span is entered whenever the call is polled, so the handler's (or
//! inner layers') events are inside it, and closes when the call ends.
//!
//! Spans are at `INFO` level; a subscriber filtering them out makes the client layer cost
//! next to nothing outside a trace, and one random span id per call inside one.

mod layer;

pub use layer::TraceLayer;

use std::task::{Context as TaskContext, Poll};

use http::{HeaderValue, Request, Response};
use tonic::Code;
use tower_service::Service;
use tracing::{Span, field};

use super::observe::{self, ObservedFuture, OnStatus};
use crate::{
    context::{self, TRACEPARENT, TRACESTATE, TraceContext},
    node::NodeInfo,
};

/// The response future of [`Trace`].
pub type ResponseFuture<F> = ObservedFuture<F, SpanObserver>;

/// Opens a span per call; made by [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    layer: TraceLayer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// Records a call's status in its span and closes the span when the call ends.
#[derive(Debug)]
pub struct SpanObserver {
    span: Span,
    side: Side,
}

// === impl Trace ===

impl<S> Trace<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, layer: TraceLayer) -> Self {
        Self { inner, layer }
    }
}

impl<S, B, ResB> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: 'static,
{
    type Response = Response<observe::ObservedBody<ResB, SpanObserver>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if !self.layer.enabled {
            return ObservedFuture::new(self.inner.call(request), None, None);
        }
        let observer = self.layer.start(&mut request);
        let deadline = observe::deadline_of(&request);
        let future = observer.in_scope(|| self.inner.call(request));
        ObservedFuture::new(future, Some(observer), deadline)
    }
}

impl TraceLayer {
    /// Opens the span of one call (writing `traceparent` on a client); the layer must be
    /// enabled.
    pub(crate) fn start<B>(&self, request: &mut Request<B>) -> SpanObserver {
        let side = self.side;
        let (trace, parent) = match side {
            Side::Server => server_trace(request),
            Side::Client => match client_trace(request) {
                Some(trace) => trace,
                // Nothing records the span and there is no trace to continue.
                None => {
                    return SpanObserver {
                        span: Span::none(),
                        side,
                    };
                }
            },
        };
        let span = open_span(side, request.uri().path(), &trace, parent.as_ref());
        SpanObserver { span, side }
    }

    /// Whether the layer opens spans.
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the layer is a server's.
    pub(crate) fn is_server(&self) -> bool {
        self.side == Side::Server
    }
}

/// The server span's trace and its parent span: from the context, else from the headers.
fn server_trace<B>(request: &Request<B>) -> (TraceContext, Option<[u8; 8]>) {
    // The context already parsed the caller's `traceparent`: no second parse.
    if let Some((trace, Some(parent))) = context::with_current(|current| {
        current.trace().map(|trace| (*trace, current.parent_span()))
    })
    .flatten()
    {
        return (trace, Some(parent));
    }
    let parent = request
        .headers()
        .get(TRACEPARENT)
        .and_then(TraceContext::from_header);
    let trace = context::with_current(|current| current.trace().copied())
        .flatten()
        .or_else(|| parent.map(|parent| parent.child()))
        .unwrap_or_else(TraceContext::new_root);
    let parent = parent
        .filter(|parent| parent.trace_id == trace.trace_id)
        .map(|parent| parent.span_id);
    (trace, parent)
}

/// The client span's trace, written into the request; and its parent span. `None` for a
/// call with no trace to continue (no `traceparent` set, no context trace) whose span no
/// subscriber records: as OpenTelemetry's propagators do without a recording span, it
/// sends no `traceparent`, and the server starts the trace.
fn client_trace<B>(request: &mut Request<B>) -> Option<(TraceContext, Option<[u8; 8]>)> {
    let headers = request.headers_mut();
    let explicit = headers.get(TRACEPARENT).and_then(TraceContext::from_header);
    let (parent, state): (Option<TraceContext>, Option<HeaderValue>) = match explicit {
        Some(parent) => (Some(parent), None),
        None => context::with_current(|current| {
            (current.trace().copied(), current.trace_state().cloned())
        })
        .unwrap_or_default(),
    };
    if parent.is_none() && !tracing::enabled!(tracing::Level::INFO) {
        return None;
    }
    let trace = parent.map_or_else(TraceContext::new_root, |parent| parent.child());
    headers.insert(TRACEPARENT, trace.to_header_value());
    if let Some(state) = state
        && !headers.contains_key(TRACESTATE)
    {
        headers.insert(TRACESTATE, state);
    }
    Some((trace, parent.map(|parent| parent.span_id)))
}

fn open_span(side: Side, path: &str, trace: &TraceContext, parent: Option<&[u8; 8]>) -> Span {
    let (service, method) = observe::split_path(path).unwrap_or(("", path));
    let parent_span_id = parent.map(|id| TraceContext {
        trace_id: trace.trace_id,
        span_id: *id,
        flags: trace.flags,
    });
    let parent_span_id = parent_span_id
        .as_ref()
        .map(|p| field::display(p.span_id_hex()));
    match side {
        Side::Server => tracing::info_span!(
            "grpc.server",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            trace_id = %trace.trace_id_hex(),
            span_id = %trace.span_id_hex(),
            parent_span_id,
            rpc.grpc.status_code = field::Empty,
        ),
        Side::Client => tracing::info_span!(
            "grpc.client",
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            trace_id = %trace.trace_id_hex(),
            span_id = %trace.span_id_hex(),
            parent_span_id,
            node = field::Empty,
            server.address = field::Empty,
            rpc.grpc.status_code = field::Empty,
        ),
    }
}

// === impl SpanObserver ===

impl OnStatus for SpanObserver {
    fn on_response<B>(&mut self, response: &Response<B>) {
        if self.side == Side::Client
            && let Some(node) = response.extensions().get::<NodeInfo>()
        {
            self.span.record("node", node.id());
            self.span.record("server.address", node.address());
        }
    }

    fn on_status(self, code: Code) {
        self.span.record("rpc.grpc.status_code", code as i32);
    }

    fn in_scope<R>(&self, poll: impl FnOnce() -> R) -> R {
        self.span.in_scope(poll)
    }
}
