//! [`Defaults`]: the default trace and metrics layers as one, for the channel's and the
//! server's own stacks.
//!
//! It behaves exactly as [`TraceLayer`] outside [`MetricsLayer`] (the metrics are recorded
//! inside the span), but watches each call once: one deadline lookup, one status parse and
//! one wrapper around the response future and body instead of two of each.

use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use tonic::Code;
use tower_service::Service;

use super::{
    MetricsLayer, TraceLayer,
    metrics::MetricsObserver,
    observe::{self, ObservedBody, ObservedFuture, OnStatus},
    trace::SpanObserver,
};

/// The default layers around `inner`: a span (outside) and metrics (inside) per call.
#[derive(Debug, Clone)]
pub(crate) struct Defaults<S> {
    inner: S,
    trace: TraceLayer,
    metrics: MetricsLayer,
}

/// The span and the metrics of one call.
#[derive(Debug)]
pub(crate) struct DefaultObserver {
    span: Option<SpanObserver>,
    metrics: Option<MetricsObserver>,
}

// === impl Defaults ===

impl<S> Defaults<S> {
    pub(crate) fn new(inner: S, trace: TraceLayer, metrics: MetricsLayer) -> Self {
        Self {
            inner,
            trace,
            metrics,
        }
    }
}

impl<S, B, ResB> Service<Request<B>> for Defaults<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: 'static,
{
    type Response = Response<ObservedBody<ResB, DefaultObserver>>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future, DefaultObserver>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let span = self
            .trace
            .is_enabled()
            .then(|| self.trace.start(&mut request));
        let metrics = span.as_ref().map_or_else(
            || self.metrics.start(&request),
            |span| span.in_scope(|| self.metrics.start(&request)),
        );
        if span.is_none() && metrics.is_none() {
            return ObservedFuture::new(self.inner.call(request), None, None);
        }
        // A server's context (set just outside) already read the call's deadline.
        let deadline = if self.trace.is_server() {
            crate::context::current_deadline().or_else(|| observe::deadline_of(&request))
        } else {
            observe::deadline_of(&request)
        };
        let observer = DefaultObserver { span, metrics };
        let future = observer.in_scope(|| self.inner.call(request));
        ObservedFuture::new(future, Some(observer), deadline)
    }
}

// === impl DefaultObserver ===

impl OnStatus for DefaultObserver {
    fn on_response<B>(&mut self, response: &Response<B>) {
        if let Some(span) = &mut self.span {
            span.on_response(response);
        }
        if let Some(metrics) = &mut self.metrics {
            metrics.on_response(response);
        }
    }

    fn on_status(self, code: Code) {
        // Inner first, as two layers would: the metrics are recorded inside the span.
        match (self.span, self.metrics) {
            (Some(span), Some(metrics)) => {
                span.in_scope(|| metrics.on_status(code));
                span.on_status(code);
            }
            (Some(span), None) => span.on_status(code),
            (None, Some(metrics)) => metrics.on_status(code),
            (None, None) => {}
        }
    }

    fn in_scope<R>(&self, poll: impl FnOnce() -> R) -> R {
        match &self.span {
            Some(span) => span.in_scope(poll),
            None => poll(),
        }
    }
}
