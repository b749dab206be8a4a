//! A node as the client's selectors and layers see it: identity, load, health and outlier
//! state ([`NodeHandle`]), and the node that answered a call ([`NodeInfo`]).
//!
//! Connections are not here: the client owns each node's connection and health watch, and
//! updates the state kept here. Selectors read it through [`NodeHandle`].

mod info;
mod load;
mod outlier;

pub use info::NodeInfo;
pub use load::{Load, LoadGuard};
pub use outlier::{Outlier, OutlierConfig, OutlierConfigError};

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use crate::registry::Node;

/// One node of a service as the client sees it: its registry record, the version of the
/// service it serves, its load, health and outlier state.
///
/// Handles are shared by every call to the node and live as long as the node stays in the
/// registry.
pub struct NodeHandle {
    node: Arc<Node>,
    version: String,
    load: Load,
    outlier: Outlier,
    serving: AtomicBool,
}

impl NodeHandle {
    /// A handle for `node` of a service at `version`: no load, serving, not ejected.
    pub fn new(node: Node, version: impl Into<String>) -> Self {
        Self {
            node: Arc::new(node),
            version: version.into(),
            load: Load::new(),
            outlier: Outlier::new(),
            serving: AtomicBool::new(true),
        }
    }

    /// The node's registry record.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The node's registry record, shared.
    pub fn node_arc(&self) -> &Arc<Node> {
        &self.node
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.node.id
    }

    /// The node's address.
    pub fn address(&self) -> &str {
        &self.node.address
    }

    /// The version of the service this node serves.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The node's load: calls in flight and peak-EWMA latency.
    pub fn load(&self) -> &Load {
        &self.load
    }

    /// The node's outlier-detection state.
    pub fn outlier(&self) -> &Outlier {
        &self.outlier
    }

    /// Whether the node's health service last said SERVING (or never said otherwise).
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// Records what the node's health service said; returns whether that changed anything.
    pub(crate) fn set_serving(&self, serving: bool) -> bool {
        self.serving.swap(serving, Ordering::Relaxed) != serving
    }
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("id", &self.node.id)
            .field("address", &self.node.address)
            .field("version", &self.version)
            .field("load", &self.load)
            .field("serving", &self.is_serving())
            .finish_non_exhaustive()
    }
}
