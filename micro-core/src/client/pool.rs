//! One lazily connected HTTP/2 connection per node.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use http::uri::Authority;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::body::Body;

use super::connector::Connector;
use crate::registry::Node;

/// How long a node that could not be connected to is tried only after the others.
const CONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// A node and its HTTP/2 connection, shared by every call that picks the node.
///
/// The connection is opened on first use and reopened on the first use after it closed.
/// Dropping the last reference closes it once its in-flight calls finish.
pub(crate) struct NodeConn {
    pub(crate) node: Arc<Node>,
    pub(crate) authority: Authority,
    sender: ArcSwapOption<SendRequest<Body>>,
    connecting: tokio::sync::Mutex<()>,
    /// Milliseconds since `epoch` until which the node is tried last, 0 when healthy.
    failed_until_ms: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for NodeConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConn")
            .field("node", &self.node.id)
            .field("address", &self.node.address)
            .finish_non_exhaustive()
    }
}

// === impl NodeConn ===

impl NodeConn {
    pub(crate) fn new(node: Arc<Node>) -> Self {
        // Unix socket paths are no valid authority; HTTP/2 needs one all the same.
        let authority = Authority::try_from(node.address.as_str())
            .unwrap_or_else(|_| Authority::from_static("localhost"));
        Self {
            node,
            authority,
            sender: ArcSwapOption::const_empty(),
            connecting: tokio::sync::Mutex::new(()),
            failed_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether a recent connection failure puts this node at the back of the line.
    pub(crate) fn is_backing_off(&self) -> bool {
        let until = self.failed_until_ms.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }

    pub(crate) fn mark_failed(&self) {
        self.sender.store(None);
        let until = self.now_ms() + CONNECT_BACKOFF.as_millis() as u64;
        self.failed_until_ms.store(until.max(1), Ordering::Relaxed);
    }

    /// Returns a sender on an open connection, connecting first if there is none; `fresh`
    /// is true when this call opened the connection.
    pub(crate) async fn sender(
        &self,
        connector: &dyn Connector,
    ) -> Result<(SendRequest<Body>, bool), ConnectError> {
        if let Some(sender) = self.open_sender() {
            return Ok((sender, false));
        }
        let _guard = self.connecting.lock().await;
        // Another call may have connected while this one waited for the lock.
        if let Some(sender) = self.open_sender() {
            return Ok((sender, false));
        }
        match self.connect(connector).await {
            Ok(sender) => {
                self.failed_until_ms.store(0, Ordering::Relaxed);
                self.sender.store(Some(Arc::new(sender.clone())));
                Ok((sender, true))
            }
            Err(err) => {
                self.mark_failed();
                Err(err)
            }
        }
    }

    fn open_sender(&self) -> Option<SendRequest<Body>> {
        let guard = self.sender.load();
        let sender = guard.as_ref()?;
        if sender.is_closed() {
            return None;
        }
        Some(SendRequest::clone(sender))
    }

    async fn connect(&self, connector: &dyn Connector) -> Result<SendRequest<Body>, ConnectError> {
        let io = connector
            .connect(&self.node.address)
            .await
            .map_err(|err| ConnectError(err.to_string()))?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|err| ConnectError(format!("HTTP/2 handshake failed: {err}")))?;
        let node = Arc::clone(&self.node);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(node = %node.id, address = %node.address, error = %err, "connection closed");
            }
        });
        Ok(sender)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// A node could not be connected to; the request was not sent.
#[derive(Debug, Clone)]
pub(crate) struct ConnectError(pub(crate) String);
