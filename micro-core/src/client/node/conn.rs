//! One lazily connected HTTP/2 connection per node.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::uri::Authority;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioIo, TokioTimer};
use tonic::body::Body;

use super::keepalive::OnClose;
use crate::client::Connector;
use crate::{registry::Node, tls::ClientTls};

/// A new connection's PING interval and timeout (none: no keepalive), and what to do when it
/// closes.
pub(crate) struct ConnSettings {
    pub(crate) keepalive: Option<(std::time::Duration, std::time::Duration)>,
    pub(crate) on_close: OnClose,
}

/// A node and its HTTP/2 connection, shared by every call that picks the node.
///
/// The connection is opened on first use and reopened on the first use after it closed.
/// Dropping the last reference closes it once its in-flight calls finish.
pub(crate) struct NodeConn {
    pub(crate) node: Arc<Node>,
    pub(crate) authority: Authority,
    sender: ArcSwapOption<SendRequest<Body>>,
    connecting: tokio::sync::Mutex<()>,
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
        }
    }

    /// Returns a sender on an open connection, connecting first if there is none; `fresh`
    /// is true when this call opened the connection.
    pub(crate) async fn sender(
        &self,
        connector: &dyn Connector,
        tls: Option<&ClientTls>,
        settings: impl FnOnce() -> ConnSettings,
    ) -> Result<(SendRequest<Body>, bool), ConnectError> {
        if let Some(sender) = self.open_sender() {
            return Ok((sender, false));
        }
        let _guard = self.connecting.lock().await;
        // Another call may have connected while this one waited for the lock.
        if let Some(sender) = self.open_sender() {
            return Ok((sender, false));
        }
        // Boxed: connecting is rare, and its state would grow every call's future.
        match Box::pin(self.connect(connector, tls, settings())).await {
            Ok(sender) => {
                self.sender.store(Some(Arc::new(sender.clone())));
                Ok((sender, true))
            }
            Err(err) => {
                self.sender.store(None);
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

    async fn connect(
        &self,
        connector: &dyn Connector,
        tls: Option<&ClientTls>,
        settings: ConnSettings,
    ) -> Result<SendRequest<Body>, ConnectError> {
        let tls = if crate::tls::is_tls_node(&self.node.metadata) {
            match tls {
                Some(tls) => Some(tls),
                None => {
                    #[cfg(feature = "tls")]
                    let how = "configure it with ClientBuilder::tls(ClientTls), e.g. from \
                               MICRO_TLS_CA";
                    #[cfg(not(feature = "tls"))]
                    let how = "this build of micro has no TLS: enable the \"tls\" feature \
                               of micro (micro = { features = [\"tls\"] }) and set MICRO_TLS_CA";
                    return Err(ConnectError(
                        format!(
                            "node {} at {} requires TLS (registry metadata transport=tls) \
                             and this client has none: {how}",
                            self.node.id, self.node.address
                        ),
                        None,
                    ));
                }
            }
        } else {
            None
        };
        let io = connector
            .connect(&self.node.address)
            .await
            .map_err(|err| ConnectError(err.to_string(), Some(err.kind())))?;
        let io = match tls {
            Some(tls) => tls
                .connect(io, &self.node.address)
                .await
                .map_err(|err| ConnectError(err.to_string(), None))?,
            None => io,
        };
        let mut builder = http2::Builder::new(BoxExecutor);
        builder.timer(TokioTimer::new());
        if let Some((interval, timeout)) = settings.keepalive {
            // Only while calls are outstanding: an idle connection is never pinged.
            builder
                .keep_alive_interval(interval)
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(false);
        }
        let (sender, connection) = builder
            .handshake(TokioIo::new(io))
            .await
            .map_err(|err| ConnectError(format!("HTTP/2 handshake failed: {err}"), None))?;
        let on_close = settings.on_close;
        tokio::spawn(async move {
            on_close.closed(connection.await.err().as_ref());
        });
        Ok(sender)
    }
}

/// Spawns hyper's per-request tasks on tokio, each boxed first.
///
/// hyper spawns two futures per HTTP/2 request (the request body's pipe and the response's
/// hand-off); unboxed, each large future is copied into the task cell and again when the
/// task finishes. Boxing moves it once and leaves a pointer in the cell, which measured
/// ~2,300 fewer instructions per call (callgrind, `benches/load.rs`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BoxExecutor;

impl<F> hyper::rt::Executor<F> for BoxExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Box::pin(future));
    }
}

/// A node could not be connected to; the request was not sent.
#[derive(Debug, Clone)]
pub(crate) struct ConnectError(pub(crate) String, pub(crate) Option<std::io::ErrorKind>);

impl ConnectError {
    /// Whether nothing listens at the node's address: its process is gone.
    pub(crate) fn is_refused(&self) -> bool {
        self.1 == Some(std::io::ErrorKind::ConnectionRefused)
    }
}
