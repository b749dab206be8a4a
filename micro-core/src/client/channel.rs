//! [`Channel`]: a tower service that sends gRPC requests to the nodes of a named service.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use http::{Request, Response, Uri, uri};
use tokio::{
    sync::{OnceCell, watch},
    time::Instant,
};
use tonic::{Status, body::Body};

use super::{
    ClientCore, NodeInfo,
    deadline::{self, DeadlineBody},
};
use crate::{
    balance::NodeHandle,
    registry::{Registry, RegistryError, Service},
    selector::{CallInfo, Candidates, Selector},
};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A channel to every node of one named service; any tonic-generated client runs on it.
///
/// Each call resolves the name through the client's cached, watched registry, lets the
/// selector pick a node and sends the request over that node's HTTP/2 connection (one per
/// node, opened on first use, closed when the node leaves the registry). A node that cannot
/// be reached before the request is sent is skipped for the next one; the error of a call
/// that no node answered names the service and every address tried.
///
/// Cloning is cheap: clones share the nodes and connections.
///
/// # Examples
///
/// ```no_run
/// # async fn demo(client: micro_core::Client) {
/// let channel = client.channel("greeter");
/// // let mut greeter = GreeterClient::new(channel);
/// # let _ = channel;
/// # }
/// ```
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
}

struct Shared {
    service: Arc<str>,
    client: Arc<ClientCore>,
    selector: Arc<dyn Selector>,
    nodes: ArcSwap<NodeSet>,
    /// The registry's view of the service, subscribed on first use.
    updates: OnceCell<Mutex<watch::Receiver<Arc<Vec<Service>>>>>,
}

/// The nodes of the service at one moment, with their connections.
#[derive(Default)]
struct NodeSet {
    /// 0 until the first registry answer is applied.
    generation: u64,
    nodes: Vec<Arc<NodeHandle>>,
}

/// The future returned by [`Channel`]'s `call`.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send + 'static>>;

// === impl Channel ===

impl Channel {
    pub(super) fn new(service: &str, client: Arc<ClientCore>) -> Self {
        Self {
            shared: Arc::new(Shared {
                service: Arc::from(service),
                selector: client.selector.fresh(),
                client,
                nodes: ArcSwap::from_pointee(NodeSet::default()),
                updates: OnceCell::new(),
            }),
        }
    }

    /// The name of the service this channel calls.
    pub fn service(&self) -> &str {
        &self.shared.service
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("service", &self.shared.service)
            .field("nodes", &self.shared.nodes.load().nodes.len())
            .finish()
    }
}

impl tower_service::Service<Request<Body>> for Channel {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness depends on the node, which is only known once the call is made.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Box::pin(Arc::clone(&self.shared).call(request))
    }
}

// === impl Shared ===

impl Shared {
    async fn call(self: Arc<Self>, mut request: Request<Body>) -> Result<Response<Body>, BoxError> {
        let headers = request.headers_mut();
        let timeout = match headers
            .get(deadline::GRPC_TIMEOUT)
            .and_then(deadline::parse)
        {
            Some(timeout) => timeout,
            None => {
                // Unset or unparsable: the default, so client and server agree.
                let timeout = self.client.timeout;
                headers.insert(deadline::GRPC_TIMEOUT, deadline::encode(timeout));
                timeout
            }
        };
        let deadline = Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.send(request)).await {
            Ok(Ok(response)) => Ok(response.map(|body| {
                Body::new(DeadlineBody::new(
                    body,
                    deadline,
                    timeout,
                    Arc::clone(&self.service),
                ))
            })),
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(deadline::exceeded(&self.service, timeout).into()),
        }
    }

    async fn send(self: &Arc<Self>, mut request: Request<Body>) -> Result<Response<Body>, Status> {
        self.refresh().await?;
        let set = self.nodes.load_full();
        if set.nodes.is_empty() {
            return Err(Status::unavailable(format!(
                "service {} not found in registry {}",
                self.service,
                self.client.registry.name()
            )));
        }
        let candidates = Candidates::new(&set.nodes, set.generation);
        let call = CallInfo {
            path: request.uri().path(),
            key: None,
        };
        let picks = self.selector.select(&candidates, &call);
        let mut tried: Vec<String> = Vec::new();
        // Nodes that failed recently go last, so one dead node costs no call a timeout.
        let mut deferred = Vec::new();
        for index in picks {
            let Some(handle) = set.nodes.get(index) else {
                continue;
            };
            if handle.conn.is_backing_off() {
                deferred.push(index);
                continue;
            }
            match self.try_node(handle, request).await {
                Ok(response) => return Ok(response),
                Err(Attempt::Fatal(status)) => return Err(status),
                Err(Attempt::NotSent(returned, reason)) => {
                    request = returned;
                    tried.push(format!("{} ({reason})", handle.address()));
                }
            }
        }
        for index in deferred {
            let handle = &set.nodes[index];
            match self.try_node(handle, request).await {
                Ok(response) => return Ok(response),
                Err(Attempt::Fatal(status)) => return Err(status),
                Err(Attempt::NotSent(returned, reason)) => {
                    request = returned;
                    tried.push(format!("{} ({reason})", handle.address()));
                }
            }
        }
        Err(Status::unavailable(format!(
            "service {}: no node answered; tried {}",
            self.service,
            tried.join(", ")
        )))
    }

    /// Sends `request` to one node. A request that never left is handed back.
    async fn try_node(
        &self,
        handle: &Arc<NodeHandle>,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, Attempt> {
        let conn = &handle.conn;
        let mut sender = match handle.sender(self.client.connector.as_ref()).await {
            Ok(sender) => sender,
            Err(err) => return Err(Attempt::NotSent(request, err.0)),
        };
        if let Err(err) = sender.ready().await {
            conn.mark_failed();
            return Err(Attempt::NotSent(request, err.to_string()));
        }
        set_origin(&mut request, &conn.authority);
        match sender.try_send_request(request).await {
            Ok(response) => {
                let mut response = response.map(Body::new);
                response
                    .extensions_mut()
                    .insert(NodeInfo::new(Arc::clone(&conn.node)));
                Ok(response)
            }
            Err(mut err) => match err.take_message() {
                Some(request) => {
                    conn.mark_failed();
                    Err(Attempt::NotSent(request, err.into_error().to_string()))
                }
                None => Err(Attempt::Fatal(Status::unavailable(format!(
                    "service {}: call to node {} at {} failed: {}",
                    self.service,
                    conn.node.id,
                    conn.node.address,
                    err.into_error()
                )))),
            },
        }
    }

    /// Subscribes to the registry on first use; afterwards applies any change the registry
    /// cache published since the last call. An unchanged registry costs one atomic load.
    async fn refresh(&self) -> Result<(), Status> {
        let updates = self
            .updates
            .get_or_try_init(|| async {
                self.client
                    .registry
                    .subscribe(&self.service)
                    .await
                    .map(Mutex::new)
                    .map_err(|err| self.registry_error(err))
            })
            .await?;
        let mut updates = updates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // An error means the cache is gone; keep serving the last known nodes.
        if updates.has_changed().unwrap_or(false) || self.nodes.load().generation == 0 {
            let services = Arc::clone(&updates.borrow_and_update());
            // Updated under the lock, so two refreshing calls cannot store out of order.
            self.update(&services);
        }
        Ok(())
    }

    fn update(&self, services: &[Service]) {
        let current = self.nodes.load();
        let mut next = NodeSet {
            generation: current.generation + 1,
            ..NodeSet::default()
        };
        for service in services {
            for node in &service.nodes {
                if next.nodes.iter().any(|known| known.id() == node.id) {
                    continue;
                }
                // Keep the handle (connection, load, health) of a node whose record did
                // not change.
                let handle = current
                    .nodes
                    .iter()
                    .find(|known| known.node() == node && known.version() == service.version)
                    .map(Arc::clone)
                    .unwrap_or_else(|| Arc::new(NodeHandle::new(node.clone(), &service.version)));
                next.nodes.push(handle);
            }
        }
        tracing::debug!(service = %self.service, nodes = next.nodes.len(), "nodes updated");
        self.nodes.store(Arc::new(next));
    }

    fn registry_error(&self, err: RegistryError) -> Status {
        Status::unavailable(format!(
            "service {}: registry {} failed: {err}",
            self.service,
            self.client.registry.name()
        ))
    }
}

// Short-lived and moved, never stored: boxing the request would cost an allocation per call.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    /// The request did not leave; try it elsewhere.
    NotSent(Request<Body>, String),
    /// The request may have reached the node; do not try it elsewhere.
    Fatal(Status),
}

pub(super) fn set_origin(request: &mut Request<Body>, authority: &uri::Authority) {
    let mut parts = uri::Parts::default();
    parts.scheme = Some(uri::Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = request.uri().path_and_query().cloned();
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}
