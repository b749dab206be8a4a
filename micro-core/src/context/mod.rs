//! The context of a call: its deadline, trace and propagated metadata, task-local to the
//! handler serving it and passed on to the calls the handler makes.
//!
//! A [`Service`](crate::Service) installs [`ContextLayer`] outermost, so every handler runs
//! inside a [`Context`] built from the incoming request:
//!
//! | from the request | into the context |
//! |---|---|
//! | `grpc-timeout` | [`Context::deadline`]: arrival time + timeout |
//! | `traceparent` | [`Context::trace`]: a child of the caller's span (a new root without one) |
//! | `tracestate` | [`Context::trace_state`], passed through unchanged |
//! | `x-micro-*` headers | [`Context::metadata`], propagated to every downstream call |
//!
//! A [`Channel`](crate::Channel) used inside the handler (on the handler's task) then sends
//! the remaining deadline as its `grpc-timeout` (the shorter of it and the call's own
//! timeout), the trace as `traceparent` and the metadata as headers, unless the call set
//! them itself.
//!
//! # Propagated metadata
//!
//! Only headers whose name starts with [`PROPAGATE_PREFIX`] (`x-micro-`) travel on, in the
//! way go-micro propagates `Micro-*` metadata: a tenant or request id set once at the edge
//! reaches every service of the call chain. Other headers (`authorization`, cookies,
//! `content-type`) stay with the hop they were sent on.
//!
//! # Tasks
//!
//! The context is task-local: a task the handler spawns starts without it. Carry it over
//! explicitly:
//!
//! ```
//! use micro_core::context::Context;
//!
//! # async fn handler() {
//! let context = Context::current().unwrap_or_default();
//! tokio::spawn(context.scope(async {
//!     // Calls made here keep the caller's deadline and trace.
//! }));
//! # }
//! ```
//!
//! # Trailers
//!
//! The other way, a handler sends trailing metadata with its reply through [`Trailers`]
//! attached to the response (grpc-go's `grpc.SetTrailer`; tonic has no way to).
//!
//! Cancellation needs no context: when the caller cancels or its deadline passes, the
//! server drops the handler's future, and with it every call the handler was awaiting.

pub(crate) mod grpc_timeout;
pub(crate) mod set;
mod trace;
mod trailers;

pub(crate) use grpc_timeout::{GRPC_TIMEOUT, parse as parse_grpc_timeout};
pub use trace::{TRACEPARENT, TRACESTATE, TraceContext, TraceParentError};

pub use set::ContextLayer;
pub use trailers::Trailers;

use std::{
    future::Future,
    sync::{Arc, LazyLock},
    time::Duration,
};

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

/// Headers whose name starts with this prefix are copied from an incoming call into its
/// [`Context`] and from there into every outgoing call.
pub const PROPAGATE_PREFIX: &str = "x-micro-";

tokio::task_local! {
    static CONTEXT: Context;
}

/// The deadline, trace and propagated metadata of the call being served.
///
/// Cloning is cheap: the metadata is shared.
#[derive(Clone, Debug, Default)]
pub struct Context {
    deadline: Option<Instant>,
    trace: Option<TraceContext>,
    /// The caller's span id, when `trace` is the child of an incoming `traceparent`.
    parent_span: Option<[u8; 8]>,
    trace_state: Option<HeaderValue>,
    /// `None` when empty, which is the common case: no allocation per call.
    metadata: Option<Arc<HeaderMap>>,
}

// === impl Context ===

impl Context {
    /// An empty context: no deadline, no trace, no metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// The context of the call being served on this task, `None` outside a handler (or
    /// outside [`Context::scope`]).
    pub fn current() -> Option<Context> {
        CONTEXT.try_with(Context::clone).ok()
    }

    /// Runs `f` with `self` as the current context.
    pub async fn scope<F: Future>(self, f: F) -> F::Output {
        CONTEXT.scope(self, f).await
    }

    /// When the call must be answered by; `None` when the caller set no timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The time left until the deadline, zero once it passed; `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// The trace position of the call: the server's own span in the caller's trace.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }

    /// The caller's span id, when [`trace`](Self::trace) continues an incoming
    /// `traceparent`.
    pub(crate) fn parent_span(&self) -> Option<[u8; 8]> {
        self.parent_span
    }

    /// The caller's `tracestate`, passed on unchanged.
    pub fn trace_state(&self) -> Option<&HeaderValue> {
        self.trace_state.as_ref()
    }

    /// The headers propagated to downstream calls (see [`PROPAGATE_PREFIX`]).
    pub fn metadata(&self) -> &HeaderMap {
        static EMPTY: LazyLock<HeaderMap> = LazyLock::new(HeaderMap::new);
        self.metadata.as_deref().unwrap_or(&EMPTY)
    }

    /// Sets the deadline.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the deadline to `timeout` from now.
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.with_deadline(deadline),
            None => self,
        }
    }

    /// Sets the trace position.
    #[must_use]
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace = Some(trace);
        self.parent_span = None;
        self
    }

    /// Adds a header to propagate downstream. Any name works here, though only
    /// `x-micro-*` names are picked up again by the next server.
    #[must_use]
    pub fn with_metadata(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        Arc::make_mut(self.metadata.get_or_insert_with(Default::default)).append(name, value);
        self
    }

    /// Builds the context of an incoming call from its headers (see the module docs).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let deadline = headers
            .get(GRPC_TIMEOUT)
            .and_then(grpc_timeout::parse)
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let parent = headers.get(TRACEPARENT).and_then(TraceContext::from_header);
        let trace = parent.map_or_else(TraceContext::new_root, |parent| parent.child());
        let trace_state = headers.get(TRACESTATE).cloned();
        let mut metadata: Option<HeaderMap> = None;
        for (name, value) in headers {
            if name.as_str().starts_with(PROPAGATE_PREFIX) {
                metadata
                    .get_or_insert_with(HeaderMap::new)
                    .append(name.clone(), value.clone());
            }
        }
        Self {
            deadline,
            trace: Some(trace),
            parent_span: parent.map(|parent| parent.span_id),
            trace_state,
            metadata: metadata.map(Arc::new),
        }
    }

    /// Writes this context into the headers of an outgoing call: the metadata, and the
    /// trace as `traceparent` / `tracestate`; a header the call already set is kept.
    ///
    /// The deadline is not written here: the channel sends the shorter of the call's own
    /// timeout and [`Context::remaining`] as `grpc-timeout`.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if let Some(metadata) = &self.metadata {
            for name in metadata.keys() {
                if !headers.contains_key(name) {
                    for value in metadata.get_all(name) {
                        headers.append(name.clone(), value.clone());
                    }
                }
            }
        }
        if let Some(trace) = &self.trace
            && !headers.contains_key(TRACEPARENT)
        {
            headers.insert(TRACEPARENT, trace.to_header_value());
            if let Some(state) = &self.trace_state {
                headers.insert(TRACESTATE, state.clone());
            }
        }
    }
}

/// The deadline of the current context, if any.
pub(crate) fn current_deadline() -> Option<Instant> {
    CONTEXT.try_with(|context| context.deadline).ok().flatten()
}

/// Calls `f` with the current context, without cloning it; `None` outside a context.
pub(crate) fn with_current<R>(f: impl FnOnce(&Context) -> R) -> Option<R> {
    CONTEXT.try_with(f).ok()
}

/// Prepares an outgoing call made on this task: writes the current context into `headers`
/// (see [`Context::inject`]) and returns its deadline. The channel sends
/// `min(call timeout, deadline - now)` as `grpc-timeout` and enforces it.
#[allow(
    dead_code,
    reason = "called by the client channel once it adopts the context (issue 3)"
)]
pub(crate) fn outgoing(headers: &mut HeaderMap) -> Option<Instant> {
    with_current(|context| {
        context.inject(headers);
        context.deadline
    })
    .flatten()
}

/// Runs `f` with `context` as the current context: for a service's `call`, which must see
/// the context the future it returns runs in.
pub(crate) fn sync_scope<R>(context: Context, f: impl FnOnce() -> R) -> R {
    CONTEXT.sync_scope(context, f)
}

/// A future that runs inside a context.
pub(crate) type Scoped<F> = tokio::task::futures::TaskLocalFuture<Context, F>;

/// Wraps `f` so it runs inside `context`.
pub(crate) fn scoped<F: Future>(context: Context, f: F) -> Scoped<F> {
    CONTEXT.scope(context, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn reads_deadline_trace_and_prefixed_metadata() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let incoming = headers(&[
            ("grpc-timeout", "250m"),
            ("traceparent", parent),
            ("tracestate", "vendor=1"),
            ("x-micro-tenant", "acme"),
            ("authorization", "secret"),
        ]);
        let context = Context::from_headers(&incoming);
        assert_eq!(context.remaining(), Some(Duration::from_millis(250)));
        let trace = context.trace().unwrap();
        assert_eq!(
            trace.trace_id_hex().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(trace.span_id_hex().to_string(), "00f067aa0ba902b7");
        assert_eq!(context.metadata().len(), 1);
        assert_eq!(context.metadata()["x-micro-tenant"], "acme");

        assert!(Context::current().is_none());
        assert_eq!(outgoing(&mut HeaderMap::new()), None);
        let deadline = context.deadline();
        let expected_trace = trace.to_header_value();
        context
            .scope(async move {
                assert_eq!(current_deadline(), deadline);
                let mut out = headers(&[("x-micro-tenant", "set-by-call")]);
                assert_eq!(outgoing(&mut out), deadline);
                assert_eq!(out["x-micro-tenant"], "set-by-call");
                assert_eq!(out[TRACEPARENT], expected_trace);
                assert_eq!(out[TRACESTATE], "vendor=1");
                assert!(out.get("authorization").is_none());
            })
            .await;
    }

    #[test]
    fn starts_a_root_without_traceparent() {
        let context = Context::from_headers(&headers(&[("traceparent", "garbage")]));
        assert!(context.trace().is_some());
        assert_eq!(context.deadline(), None);
        assert!(context.metadata().is_empty());
    }
}
