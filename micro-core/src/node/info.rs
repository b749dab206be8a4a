//! [`NodeInfo`]: the node that answered a call.

use std::sync::Arc;

use crate::registry::Node;

/// The node that answered a call: found in the extensions of every response that came
/// through a [`Channel`](crate::Channel).
///
/// ```no_run
/// # fn demo(response: tonic::Response<()>) {
/// if let Some(node) = response.extensions().get::<micro_core::NodeInfo>() {
///     println!("answered by {} at {}", node.id(), node.address());
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct NodeInfo {
    node: Arc<Node>,
}

// === impl NodeInfo ===

impl NodeInfo {
    pub(crate) fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.node.id
    }

    /// The address the call went to.
    pub fn address(&self) -> &str {
        &self.node.address
    }

    /// The node's registry record.
    pub fn node(&self) -> &Node {
        &self.node
    }
}
