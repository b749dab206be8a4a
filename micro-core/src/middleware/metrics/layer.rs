//! [`MetricsLayer`].

use std::sync::Arc;

use tower::Layer;

use super::{
    CLIENT_REQUEST_DURATION_SECONDS, CLIENT_REQUESTS_IN_FLIGHT, CLIENT_REQUESTS_TOTAL, Metrics,
    SERVER_REQUEST_DURATION_SECONDS, SERVER_REQUESTS_IN_FLIGHT, SERVER_REQUESTS_TOTAL, Side,
    handles::Cache,
};

/// Records request counts, durations and in-flight calls; see the [module docs](super).
///
/// Clones share their cache of metric handles.
///
/// # Order
///
/// On a server, inside [`TraceLayer`](crate::middleware::trace::TraceLayer), outside the
/// user's layers, so a call a user layer rejects is counted too. On a client, outside the
/// channel and any retry layer: one count per call, with the node of the final attempt.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    pub(super) cache: Option<Arc<Cache>>,
}

// === impl MetricsLayer ===

impl MetricsLayer {
    /// Metrics of calls a client makes: `micro_client_*`.
    pub fn client() -> Self {
        Self {
            cache: Some(Arc::new(Cache::new(Side::Client))),
        }
    }

    /// Metrics of calls a server serves: `micro_server_*`.
    pub fn server() -> Self {
        Self {
            cache: Some(Arc::new(Cache::new(Side::Server))),
        }
    }

    /// A layer that passes calls through untouched, for a server stack with its default
    /// layers turned off.
    pub(crate) fn disabled() -> Self {
        Self { cache: None }
    }

    /// Describes every metric (help text and unit) to the installed recorder; call it once
    /// after installing an exporter that shows descriptions.
    pub fn describe() {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(
            CLIENT_REQUESTS_TOTAL,
            Unit::Count,
            "gRPC calls made, by final status code"
        );
        describe_histogram!(
            CLIENT_REQUEST_DURATION_SECONDS,
            Unit::Seconds,
            "Duration of gRPC calls made, to the end of the response"
        );
        describe_gauge!(
            CLIENT_REQUESTS_IN_FLIGHT,
            Unit::Count,
            "gRPC calls made and not yet ended"
        );
        describe_counter!(
            SERVER_REQUESTS_TOTAL,
            Unit::Count,
            "gRPC calls served, by final status code"
        );
        describe_histogram!(
            SERVER_REQUEST_DURATION_SECONDS,
            Unit::Seconds,
            "Duration of gRPC calls served, to the end of the response"
        );
        describe_gauge!(
            SERVER_REQUESTS_IN_FLIGHT,
            Unit::Count,
            "gRPC calls being served"
        );
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics::new(inner, self.clone())
    }
}
