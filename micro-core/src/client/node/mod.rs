//! The client's per-node machinery: each node's HTTP/2 connection and the health watch on
//! it, next to the [`NodeHandle`] that selectors see.

mod conn;
mod health;
mod keepalive;

pub(crate) use conn::ConnectError;
pub use keepalive::{DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT, KeepAlive};

use std::sync::{Arc, Mutex, atomic::AtomicU32};

use http::{
    Request, Uri,
    uri::{self, Authority},
};
use hyper::client::conn::http2::SendRequest;
use tokio::task::AbortHandle;
use tonic::body::Body;

use super::Connector;
use crate::{
    lock::{get_mut, lock},
    node::{NodeHandle, OutlierConfig},
    tls::ClientTls,
};
use conn::{ConnSettings, NodeConn};
use keepalive::{OnClose, Revive};

/// One node as the client uses it: the handle selectors see, its lazily opened connection
/// and the task watching its health over that connection.
///
/// Shared by every call to the node; lives as long as the node stays in the registry.
pub(crate) struct ClientNode {
    handle: Arc<NodeHandle>,
    conn: NodeConn,
    /// The task watching the node's health over its current connection.
    health_watch: Mutex<Option<AbortHandle>>,
    /// How often the node closed a connection because of our PINGs.
    ping_doublings: Arc<AtomicU32>,
}

// === impl ClientNode ===

impl ClientNode {
    /// The client side of `handle`, not yet connected.
    pub(crate) fn new(handle: Arc<NodeHandle>) -> Self {
        Self {
            conn: NodeConn::new(Arc::clone(handle.node_arc())),
            handle,
            health_watch: Mutex::new(None),
            ping_doublings: Arc::new(AtomicU32::new(0)),
        }
    }

    /// What selectors see of the node.
    pub(crate) fn handle(&self) -> &Arc<NodeHandle> {
        &self.handle
    }

    /// The authority requests to the node carry.
    pub(crate) fn authority(&self) -> &Authority {
        &self.conn.authority
    }

    /// A sender on the node's connection, connecting first if needed. Each new connection
    /// gets a health watch, so NOT_SERVING takes the node out of the picks at once.
    pub(crate) async fn sender(
        self: &Arc<Self>,
        connector: &Arc<dyn Connector>,
        tls: Option<&ClientTls>,
        keepalive: &KeepAlive,
        outlier: &OutlierConfig,
    ) -> Result<SendRequest<Body>, ConnectError> {
        let settings = || {
            let doublings = self
                .ping_doublings
                .load(std::sync::atomic::Ordering::Relaxed);
            let pings = keepalive.for_node(self.handle.load().latency(), doublings);
            ConnSettings {
                keepalive: pings,
                on_close: OnClose {
                    node: Arc::downgrade(self),
                    doublings: Arc::clone(&self.ping_doublings),
                    timeout: pings.map(|(_, timeout)| timeout),
                    revive: Revive {
                        connector: Arc::clone(connector),
                        tls: tls.cloned(),
                        keepalive: *keepalive,
                        outlier: outlier.clone(),
                    },
                },
            }
        };
        let (sender, fresh) = self.conn.sender(connector.as_ref(), tls, settings).await?;
        if fresh {
            let task = tokio::spawn(health::watch(
                Arc::downgrade(&self.handle),
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
}

impl std::ops::Deref for ClientNode {
    type Target = NodeHandle;

    fn deref(&self) -> &NodeHandle {
        &self.handle
    }
}

impl Drop for ClientNode {
    fn drop(&mut self) {
        // The watch holds a sender, which would keep the connection open.
        let watch = get_mut(&mut self.health_watch).take();
        if let Some(watch) = watch {
            watch.abort();
        }
    }
}

/// Points `request` at `authority` over plain HTTP/2 (TLS, when the node has it, is below).
pub(crate) fn set_origin(request: &mut Request<Body>, authority: &uri::Authority) {
    let mut parts = uri::Parts::default();
    parts.scheme = Some(uri::Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = request.uri().path_and_query().cloned();
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

impl std::fmt::Debug for ClientNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientNode")
            .field("handle", &self.handle)
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}
