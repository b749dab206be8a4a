//! [`Metrics`]: request counts, latency and in-flight calls through the `metrics` facade.
//!
//! HTTP level: reads the path and watches the status. Recorded through whatever recorder
//! the application installs (Prometheus, StatsD, ...):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | [`CLIENT_REQUESTS_TOTAL`] | counter | `service`, `method`, `node`, `code` |
//! | [`CLIENT_REQUEST_DURATION_SECONDS`] | histogram | `service`, `method`, `node` |
//! | [`CLIENT_REQUESTS_IN_FLIGHT`] | gauge | `service`, `method` |
//! | [`SERVER_REQUESTS_TOTAL`] | counter | `service`, `method`, `code` |
//! | [`SERVER_REQUEST_DURATION_SECONDS`] | histogram | `service`, `method` |
//! | [`SERVER_REQUESTS_IN_FLIGHT`] | gauge | `service`, `method` |
//!
//! - `service` and `method` come from the path `/pkg.Service/Method`; `code` is the
//!   canonical name of the final status (`OK`, `UNAVAILABLE`, ...); `node` is the id of the
//!   node that answered (from the response's [`NodeInfo`]), `none` when
//!   no node did.
//! - A call ends, and is counted and timed, when its status is known: with the trailers
//!   (so a stream is timed to its end), or when it fails or is dropped (see
//!   [`observe`] for the codes).
//! - Cardinality is bounded: at most [`MAX_METHODS`] distinct paths per layer, later ones
//!   are recorded as `service="other", method="other"`; at most [`MAX_NODES`] node handles
//!   are kept per method.
//!
//! Metric handles are registered once per method (and node) and cached in the layer, so
//! a call costs a map lookup and atomic updates. They are registered with the recorder in
//! force when a method is first called: install the recorder before serving.

mod handles;
mod layer;

pub use layer::MetricsLayer;

use std::{
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Instant,
};

use http::{Request, Response};
use tonic::Code;
use tower_service::Service;

use super::observe::{self, ObservedFuture, OnStatus};
use crate::node::NodeInfo;
use handles::MethodMetrics;

/// Counter of calls a client made.
pub const CLIENT_REQUESTS_TOTAL: &str = "micro_client_requests_total";
/// Histogram of client call durations, in seconds.
pub const CLIENT_REQUEST_DURATION_SECONDS: &str = "micro_client_request_duration_seconds";
/// Gauge of client calls in flight.
pub const CLIENT_REQUESTS_IN_FLIGHT: &str = "micro_client_requests_in_flight";
/// Counter of calls a server served.
pub const SERVER_REQUESTS_TOTAL: &str = "micro_server_requests_total";
/// Histogram of server call durations, in seconds.
pub const SERVER_REQUEST_DURATION_SECONDS: &str = "micro_server_request_duration_seconds";
/// Gauge of server calls in flight.
pub const SERVER_REQUESTS_IN_FLIGHT: &str = "micro_server_requests_in_flight";

/// At most this many paths get their own `service`/`method` labels per layer.
pub const MAX_METHODS: usize = 1024;
/// At most this many nodes' handles are cached per method; past it the cache restarts.
pub const MAX_NODES: usize = 256;

/// The response future of [`Metrics`].
pub type ResponseFuture<F> = ObservedFuture<F, MetricsObserver>;

/// Records metrics per call; made by [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    layer: MetricsLayer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// Records a call's count and duration when it ends.
#[derive(Debug)]
pub struct MetricsObserver {
    method: Arc<MethodMetrics>,
    start: Instant,
    node: Option<NodeInfo>,
}

// === impl Metrics ===

impl<S> Metrics<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, layer: MetricsLayer) -> Self {
        Self { inner, layer }
    }
}

impl<S, B, ResB> Service<Request<B>> for Metrics<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: 'static,
{
    type Response = Response<observe::ObservedBody<ResB, MetricsObserver>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(observer) = self.layer.start(&request) else {
            return ObservedFuture::new(self.inner.call(request), None, None);
        };
        let deadline = observe::deadline_of(&request);
        ObservedFuture::new(self.inner.call(request), Some(observer), deadline)
    }
}

impl MetricsLayer {
    /// Counts one call in flight and starts its clock; `None` when the layer is disabled.
    pub(crate) fn start<B>(&self, request: &Request<B>) -> Option<MetricsObserver> {
        let method = self.cache.as_ref()?.method(request.uri().path());
        method.in_flight.increment(1.0);
        Some(MetricsObserver {
            method,
            start: Instant::now(),
            node: None,
        })
    }
}

// === impl MetricsObserver ===

impl OnStatus for MetricsObserver {
    fn on_response<B>(&mut self, response: &Response<B>) {
        if self.method.side == Side::Client {
            self.node = response.extensions().get::<NodeInfo>().cloned();
        }
    }

    fn on_status(self, code: Code) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let method = &self.method;
        method.in_flight.decrement(1.0);
        let node = self.node.as_ref().map(NodeInfo::id);
        method.record(node, code, elapsed);
    }
}

#[cfg(test)]
mod tests;
