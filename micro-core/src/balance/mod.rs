//! What the client knows about each node it balances over: identity, load, health and
//! outlier state. Selectors read it through [`NodeHandle`].

mod load;
mod outlier;

pub use load::{Load, LoadGuard};
pub use outlier::{Outlier, OutlierConfig, OutlierConfigError};

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use hyper::client::conn::http2::SendRequest;
use tokio::task::AbortHandle;
use tonic::body::Body;

use crate::lock::{get_mut, lock};
use crate::{
    client::{
        Connector,
        pool::{ConnectError, NodeConn},
    },
    registry::Node,
    tls::ClientTls,
};

/// One node of a service as the client sees it: its registry record, the version of the
/// service it serves, its load, health and outlier state, and its connection.
///
/// Handles are shared by every call to the node and live as long as the node stays in the
/// registry.
pub struct NodeHandle {
    node: Arc<Node>,
    version: String,
    load: Load,
    outlier: Outlier,
    serving: AtomicBool,
    pub(crate) conn: NodeConn,
    /// The task watching the node's health over its current connection.
    health_watch: Mutex<Option<AbortHandle>>,
}

impl NodeHandle {
    /// A handle for `node` of a service at `version`, not yet connected.
    pub fn new(node: Node, version: impl Into<String>) -> Self {
        let node = Arc::new(node);
        Self {
            conn: NodeConn::new(Arc::clone(&node)),
            node,
            version: version.into(),
            load: Load::new(),
            outlier: Outlier::new(),
            serving: AtomicBool::new(true),
            health_watch: Mutex::new(None),
        }
    }

    /// A sender on the node's connection, connecting first if needed. Each new connection
    /// gets a health watch, so NOT_SERVING takes the node out of the picks at once.
    pub(crate) async fn sender(
        self: &Arc<Self>,
        connector: &dyn Connector,
        tls: Option<&ClientTls>,
    ) -> Result<SendRequest<Body>, ConnectError> {
        let (sender, fresh) = self.conn.sender(connector, tls).await?;
        if fresh {
            let task = tokio::spawn(crate::client::watch_health(
                Arc::downgrade(self),
                sender.clone(),
                self.conn.authority.clone(),
            ));
            let previous = lock(&self.health_watch).replace(task.abort_handle());
            if let Some(previous) = previous {
                previous.abort();
            }
        }
        Ok(sender)
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

impl Drop for NodeHandle {
    fn drop(&mut self) {
        // The watch holds a sender, which would keep the connection open.
        let watch = get_mut(&mut self.health_watch).take();
        if let Some(watch) = watch {
            watch.abort();
        }
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
