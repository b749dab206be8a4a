//! Cached metric handles: registered once per method (and node), updated per call.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, OnceLock},
};

use arc_swap::ArcSwap;
use foldhash::fast::RandomState;
use metrics::{Counter, Gauge, Histogram, Label, SharedString};
use tonic::Code;

use super::{
    CLIENT_REQUEST_DURATION_SECONDS, CLIENT_REQUESTS_IN_FLIGHT, CLIENT_REQUESTS_TOTAL, MAX_METHODS,
    MAX_NODES, SERVER_REQUEST_DURATION_SECONDS, SERVER_REQUESTS_IN_FLIGHT, SERVER_REQUESTS_TOTAL,
    Side,
};
use crate::middleware::observe::{code_name, split_path};

/// The label value of paths past [`MAX_METHODS`] and of non-gRPC paths.
const OTHER: &str = "other";
/// The `node` label of a call no node answered.
const NO_NODE: &str = "none";
/// The number of gRPC status codes.
const CODES: usize = 17;

/// The handles of one layer, by path.
pub(crate) struct Cache {
    side: Side,
    methods: ArcSwap<HashMap<Box<str>, Arc<MethodMetrics>, RandomState>>,
    other: OnceLock<Arc<MethodMetrics>>,
}

/// The handles of one method.
pub(crate) struct MethodMetrics {
    pub(super) side: Side,
    service: SharedString,
    method: SharedString,
    pub(super) in_flight: Gauge,
    /// Server: the only outcome handles. Client: those of calls no node answered.
    unattributed: Outcomes,
    /// Client only: outcome handles per node id.
    nodes: ArcSwap<HashMap<Box<str>, Arc<Outcomes>, RandomState>>,
}

/// Duration and per-code counters for one label set.
struct Outcomes {
    labels: Vec<Label>,
    duration: Histogram,
    requests: [OnceLock<Counter>; CODES],
}

// === impl Cache ===

impl Cache {
    pub(crate) fn new(side: Side) -> Self {
        Self {
            side,
            methods: ArcSwap::default(),
            other: OnceLock::new(),
        }
    }

    /// The handles of `path`: one map lookup once the method was seen.
    pub(crate) fn method(&self, path: &str) -> Arc<MethodMetrics> {
        if let Some(method) = self.methods.load().get(path) {
            return Arc::clone(method);
        }
        let Some((service, method)) = split_path(path) else {
            return self.other();
        };
        if self.methods.load().len() >= MAX_METHODS {
            return self.other();
        }
        let created = Arc::new(MethodMetrics::new(
            self.side,
            SharedString::from_owned(service.to_owned()),
            SharedString::from_owned(method.to_owned()),
        ));
        let mut result = Arc::clone(&created);
        self.methods.rcu(|methods| {
            let mut methods = HashMap::clone(methods);
            // Another call may have registered it meanwhile: keep theirs.
            result = Arc::clone(
                methods
                    .entry(path.into())
                    .or_insert_with(|| Arc::clone(&created)),
            );
            methods
        });
        result
    }

    fn other(&self) -> Arc<MethodMetrics> {
        Arc::clone(self.other.get_or_init(|| {
            Arc::new(MethodMetrics::new(
                self.side,
                SharedString::const_str(OTHER),
                SharedString::const_str(OTHER),
            ))
        }))
    }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("side", &self.side)
            .field("methods", &self.methods.load().len())
            .finish()
    }
}

// === impl MethodMetrics ===

impl MethodMetrics {
    fn new(side: Side, service: SharedString, method: SharedString) -> Self {
        let labels = [
            Label::new("service", service.clone()),
            Label::new("method", method.clone()),
        ];
        let in_flight = match side {
            Side::Client => metrics::gauge!(CLIENT_REQUESTS_IN_FLIGHT, labels.iter()),
            Side::Server => metrics::gauge!(SERVER_REQUESTS_IN_FLIGHT, labels.iter()),
        };
        let unattributed = match side {
            Side::Client => Outcomes::new(side, &service, &method, Some(NO_NODE)),
            Side::Server => Outcomes::new(side, &service, &method, None),
        };
        Self {
            side,
            service,
            method,
            in_flight,
            unattributed,
            nodes: ArcSwap::default(),
        }
    }

    /// Records one finished call.
    pub(crate) fn record(&self, node: Option<&str>, code: Code, seconds: f64) {
        match (self.side, node) {
            (Side::Client, Some(node)) => self.node(node).record(self.side, code, seconds),
            _ => self.unattributed.record(self.side, code, seconds),
        }
    }

    fn node(&self, node: &str) -> Arc<Outcomes> {
        if let Some(outcomes) = self.nodes.load().get(node) {
            return Arc::clone(outcomes);
        }
        let created = Arc::new(Outcomes::new(
            self.side,
            &self.service,
            &self.method,
            Some(node),
        ));
        let mut result = Arc::clone(&created);
        self.nodes.rcu(|nodes| {
            // Node ids change with every restart: start over rather than grow forever.
            let mut nodes = if nodes.len() >= MAX_NODES {
                HashMap::default()
            } else {
                HashMap::clone(nodes)
            };
            result = Arc::clone(
                nodes
                    .entry(node.into())
                    .or_insert_with(|| Arc::clone(&created)),
            );
            nodes
        });
        result
    }
}

impl fmt::Debug for MethodMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodMetrics")
            .field("side", &self.side)
            .field("service", &self.service)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

// === impl Outcomes ===

impl Outcomes {
    fn new(side: Side, service: &SharedString, method: &SharedString, node: Option<&str>) -> Self {
        let mut labels = vec![
            Label::new("service", service.clone()),
            Label::new("method", method.clone()),
        ];
        if let Some(node) = node {
            labels.push(Label::new("node", node.to_owned()));
        }
        let duration = match side {
            Side::Client => metrics::histogram!(CLIENT_REQUEST_DURATION_SECONDS, labels.iter()),
            Side::Server => metrics::histogram!(SERVER_REQUEST_DURATION_SECONDS, labels.iter()),
        };
        Self {
            labels,
            duration,
            requests: Default::default(),
        }
    }

    fn record(&self, side: Side, code: Code, seconds: f64) {
        self.duration.record(seconds);
        let index = (code as usize).min(CODES - 1);
        self.requests[index]
            .get_or_init(|| {
                let mut labels = self.labels.clone();
                labels.push(Label::from_static_parts("code", code_name(code)));
                match side {
                    Side::Client => metrics::counter!(CLIENT_REQUESTS_TOTAL, labels),
                    Side::Server => metrics::counter!(SERVER_REQUESTS_TOTAL, labels),
                }
            })
            .increment(1);
    }
}
