//! [`Channel`]: a tower service that sends gRPC requests to the nodes of a named service.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, header::USER_AGENT};
use tokio::{
    sync::{OnceCell, watch},
    time::Instant,
};
use tonic::{Status, body::Body};

use super::{
    AddressError, CallOptions, Client, ClientCore,
    deadline::{self, DeadlineBody},
    limit::ReceiveLimit,
    node::ClientNode,
    proxy,
    resolve::{self, Resolver},
    retry::{Hedge, Outcome},
};
use crate::{
    lock::lock,
    middleware::defaults::Defaults,
    node::NodeHandle,
    registry::{Registry, RegistryError, Service},
    selector::Selector,
};

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How long a call waits for the registry cache to show nodes that the registry itself
/// already lists: a registration the cache's watch has not delivered yet.
const CATCH_UP: Duration = Duration::from_secs(1);

/// The `user-agent` of micro's calls, structured as gRPC's PROTOCOL-HTTP2.md asks
/// (`grpc-<language>-<implementation>/<version>`); constant, so HPACK sends it as one byte.
const MICRO_USER_AGENT: &str = concat!("grpc-rust-micro/", env!("CARGO_PKG_VERSION"));

/// A channel to every node of one named service; any tonic-generated client runs on it.
///
/// Each call resolves the name through the client's cached, watched registry (or takes
/// the fixed nodes the channel was made with: [`Channel::from_addresses`],
/// [`ClientBuilder::static_nodes`](super::ClientBuilder::static_nodes)), lets the
/// selector order the nodes, and sends the request over the first eligible node's HTTP/2
/// connection (one per node, opened on first use, closed when the node leaves the
/// registry). Failures are retried on other nodes as the client's retry policy allows;
/// see [`retry`](super::retry).
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
    /// This channel value's receive limit, when it has its own.
    receive_limit: Option<ReceiveLimit>,
    /// The default client layers around the core: one span and one count per call.
    stack: Defaults<Core>,
}

/// The channel without its layers: deadline, node order, attempts.
#[derive(Clone)]
struct Core(Arc<Shared>);

pub(super) struct Shared {
    pub(super) service: Arc<str>,
    pub(super) client: Arc<ClientCore>,
    pub(super) selector: Arc<dyn Selector>,
    pub(super) nodes: ArcSwap<NodeSet>,
    pub(super) resolver: Resolver,
    /// The registry's view of the service, subscribed on first use.
    updates: OnceCell<Mutex<watch::Receiver<Arc<Vec<Service>>>>>,
}

/// The nodes of the service at one moment, and what the registry says of its methods.
#[derive(Default)]
pub(super) struct NodeSet {
    /// 0 until the first registry answer is applied.
    pub(super) generation: u64,
    /// What selectors see of each node.
    pub(super) nodes: Vec<Arc<NodeHandle>>,
    /// The client side of each node (its connection and health watch), at the same index.
    pub(super) clients: Vec<Arc<ClientNode>>,
    /// gRPC paths (`/pkg.Service/Method`) whose `idempotency_level` allows retrying more
    /// than UNAVAILABLE.
    pub(super) idempotent: HashSet<String>,
    /// The hedged methods by gRPC path: idempotent ones whose policy allows a second copy.
    /// Each keeps its latency estimate across node-set updates.
    pub(super) hedges: HashMap<String, Arc<Hedge>>,
}

/// The core's future: the response body is boxed once, by the channel, after the layers.
type CoreFuture =
    Pin<Box<dyn Future<Output = Result<Response<DeadlineBody>, BoxError>> + Send + 'static>>;

type Layered = <Defaults<Core> as tower_service::Service<Request<Body>>>::Future;

pin_project_lite::pin_project! {
    /// The future returned by [`Channel`]'s `call`: the layered call, its response body
    /// boxed once into a `tonic::body::Body`.
    pub struct ResponseFuture {
        #[pin]
        inner: Layered,
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = std::task::ready!(self.project().inner.poll(cx))?;
        Poll::Ready(Ok(response.map(Body::new)))
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

// === impl Channel ===

impl Channel {
    pub(super) fn new(service: &str, client: Arc<ClientCore>) -> Self {
        let (trace, metrics) = (client.trace, client.metrics.clone());
        let resolver = if client.statics.contains_key(service) {
            Resolver::Static
        } else {
            Resolver::Registry
        };
        let shared = Arc::new(Shared {
            service: Arc::from(service),
            selector: client.selector.fresh(),
            client,
            nodes: ArcSwap::from_pointee(NodeSet::default()),
            resolver,
            updates: OnceCell::new(),
        });
        if let Some(records) = shared.client.statics.get(service) {
            shared.update(records);
        }
        let core = Core(Arc::clone(&shared));
        let stack = Defaults::new(core, trace, metrics);
        Self {
            shared,
            receive_limit: None,
            stack,
        }
    }

    /// A channel to `service` at fixed `addresses` (`host:port` or `unix:/path`), with no
    /// registry: the default client settings, the default selector balancing over the
    /// addresses, retries, deadlines and layers as for any channel. For other settings use
    /// [`ClientBuilder::static_nodes`](super::ClientBuilder::static_nodes).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn demo() -> Result<(), micro_core::client::AddressError> {
    /// let channel = micro_core::Channel::from_addresses("greeter", ["127.0.0.1:7700"])?;
    /// assert_eq!(channel.service(), "greeter");
    /// // let mut greeter = GreeterClient::new(channel);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`AddressError`] when an address is empty or not `host:port` / `unix:/path` (a URL
    /// such as `http://host:port`, say).
    pub fn from_addresses<I>(service: &str, addresses: I) -> Result<Self, AddressError>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self::from_service(resolve::record(
            service,
            addresses.into_iter().map(Into::into),
        ))
    }

    /// Like [`from_addresses`](Self::from_addresses) with a whole registry record: its
    /// endpoints say which methods are idempotent, and node metadata such as
    /// `transport=tls` applies as for registered nodes.
    ///
    /// # Errors
    /// [`AddressError`] when a node's address is empty or not `host:port` / `unix:/path`.
    pub fn from_service(service: Service) -> Result<Self, AddressError> {
        resolve::check(&service)?;
        let name = service.name.clone();
        let client = Client::builder().static_service(service).build_static();
        Ok(client.channel(&name))
    }

    /// The name of the service this channel calls.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// This channel with its own receive limit: a reply message longer than `bytes` ends
    /// the call with RESOURCE_EXHAUSTED naming the size and the limit. Other clones of the
    /// channel keep theirs. Default is the client's
    /// ([`ClientBuilder::max_receive_message_size`](super::ClientBuilder::max_receive_message_size)).
    ///
    /// A tonic stub has its own limit too (`max_decoding_message_size`, 4 MiB by default,
    /// answered with OUT_OF_RANGE): the lower applies, so raise both.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn demo() -> Result<(), micro_core::client::AddressError> {
    /// const LIMIT: usize = 64 * 1024 * 1024;
    /// let channel = micro_core::Channel::from_addresses("store", ["127.0.0.1:7700"])?
    ///     .max_receive_message_size(LIMIT);
    /// // let kv = KvClient::new(channel).max_decoding_message_size(LIMIT);
    /// # let _ = channel;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        self.receive_limit = Some(ReceiveLimit(bytes));
        self
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("service", &self.shared.service)
            .field("resolver", &self.shared.resolver)
            .field("nodes", &self.shared.nodes.load().nodes.len())
            .finish()
    }
}

impl tower_service::Service<Request<Body>> for Channel {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Always ready: readiness depends on the node, known only once the call is made.
        self.stack.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        if let Some(limit) = self.receive_limit {
            request.extensions_mut().insert(limit);
        }
        ResponseFuture {
            inner: self.stack.call(request),
        }
    }
}

impl tower_service::Service<Request<Body>> for Core {
    type Response = Response<DeadlineBody>;
    type Error = BoxError;
    type Future = CoreFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Box::pin(Arc::clone(&self.0).call(request))
    }
}

// === impl Shared ===

impl Shared {
    /// Sets the call's deadline, then sends it; the deadline also bounds the response body.
    async fn call(
        self: Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<DeadlineBody>, BoxError> {
        // The specification's structured user agent; a call may set its own.
        request
            .headers_mut()
            .entry(USER_AGENT)
            .or_insert(HeaderValue::from_static(MICRO_USER_AGENT));
        let options = request
            .extensions_mut()
            .remove::<CallOptions>()
            .unwrap_or_default();
        let receive_limit = request
            .extensions_mut()
            .remove::<ReceiveLimit>()
            .map_or(self.client.receive_limit, |ReceiveLimit(limit)| limit);
        let requested = options.timeout.or_else(|| {
            request
                .headers()
                .get(deadline::GRPC_TIMEOUT)
                .and_then(deadline::parse)
        });
        let mut timeout = requested.unwrap_or(self.client.timeout);
        // Inside a handler: pass on its trace and `x-micro-*` metadata, and never outlive
        // the call being handled.
        if let Some(handler_deadline) = crate::context::outgoing(request.headers_mut()) {
            timeout = timeout.min(handler_deadline.saturating_duration_since(Instant::now()));
        }
        let deadline = Instant::now() + timeout;
        // One timer for the whole call: it bounds the request here, then the response body.
        let mut sleep = Box::pin(tokio::time::sleep_until(deadline));
        let send = self.send(request, &options, deadline);
        tokio::pin!(send);
        let result = tokio::select! {
            biased;
            result = &mut send => result,
            () = &mut sleep => return Err(deadline::exceeded(&self.service, timeout).into()),
        };
        match result {
            // The server's own timer (tonic answers CANCELLED) can beat ours by a hair: a call
            // whose deadline has passed failed with DEADLINE_EXCEEDED, whatever came back.
            Ok(response)
                if Instant::now() >= deadline
                    && matches!(Outcome::of_response(&response), Outcome::Status(_)) =>
            {
                Err(deadline::exceeded(&self.service, timeout).into())
            }
            Ok(mut response) => {
                let not_grpc = proxy::answer_not_grpc(&mut response, &self.service);
                let service = Arc::clone(&self.service);
                Ok(response.map(|body| {
                    let body = DeadlineBody::new(body, sleep, timeout, service, receive_limit);
                    if not_grpc { body.ended() } else { body }
                }))
            }
            Err(status) => Err(status.into()),
        }
    }

    /// The current node set, subscribing to the registry on first use and applying any
    /// change the registry cache published since. An unchanged registry costs one atomic
    /// check.
    pub(super) async fn node_set(&self) -> Result<Arc<NodeSet>, Status> {
        if self.resolver == Resolver::Static {
            return Ok(self.nodes.load_full());
        }
        let updates = self
            .updates
            .get_or_try_init(|| {
                // Boxed: this runs once per channel, and its state would grow every call's
                // future.
                Box::pin(async {
                    self.client
                        .registry
                        .subscribe(&self.service)
                        .await
                        .map(Mutex::new)
                        .map_err(|err| self.registry_error(err))
                })
            })
            .await?;
        {
            let mut updates = lock(updates);
            // An error means the cache is gone; keep serving the last known nodes.
            if updates.has_changed().unwrap_or(false) || self.nodes.load().generation == 0 {
                let services = Arc::clone(&updates.borrow_and_update());
                // Updated under the lock, so two refreshing calls cannot store out of order.
                self.update(&services);
            }
        }
        Ok(self.nodes.load_full())
    }

    /// The node set after [`node_set`](Self::node_set) came back empty. The cache learns of
    /// a registration a moment after it happened (when its watch delivers it), so a call
    /// right after a service started could find no node although the node is registered:
    /// the registry itself is asked, and when it lists nodes the call waits (up to
    /// [`CATCH_UP`]) for the cache to show them. When it lists none, the empty set stands at
    /// once. Only calls that would fail anyway pay for the read.
    pub(super) async fn catch_up(&self) -> Result<Arc<NodeSet>, Status> {
        if self.resolver == Resolver::Static {
            return Ok(self.nodes.load_full());
        }
        let registered = match self
            .client
            .registry
            .inner()
            .get_service(&self.service)
            .await
        {
            Ok(services) => services.iter().any(|s| !s.nodes.is_empty()),
            Err(err) => {
                tracing::debug!(service = %self.service, error = %err, "cannot re-read an empty service");
                false
            }
        };
        let updates = self.updates.get().map(|updates| lock(updates).clone());
        if let (true, Some(mut updates)) = (registered, updates) {
            let shown = updates.wait_for(|services| services.iter().any(|s| !s.nodes.is_empty()));
            // A cache that does not catch up within the bound serves what it has.
            let _ = tokio::time::timeout(CATCH_UP, shown).await;
        }
        self.node_set().await
    }

    fn update(&self, services: &[Service]) {
        let current = self.nodes.load();
        let mut next = NodeSet {
            generation: current.generation + 1,
            ..NodeSet::default()
        };
        for service in services {
            for endpoint in &service.endpoints {
                if endpoint.metadata.contains_key("idempotency") {
                    next.idempotent.insert(grpc_path(&endpoint.name));
                }
            }
            for node in &service.nodes {
                if next.nodes.iter().any(|known| known.id() == node.id) {
                    continue;
                }
                // Keep the handle (connection, load, health, outlier state) of a node whose
                // record did not change.
                let client = current
                    .clients
                    .iter()
                    .find(|known| known.node() == node && known.version() == service.version)
                    .map(Arc::clone)
                    .unwrap_or_else(|| {
                        let handle = Arc::new(NodeHandle::new(node.clone(), &service.version));
                        Arc::new(ClientNode::new(handle))
                    });
                next.nodes.push(Arc::clone(client.handle()));
                next.clients.push(client);
            }
        }
        next.hedges = self.hedges(&current, &next.idempotent);
        tracing::debug!(service = %self.service, nodes = next.nodes.len(), "nodes updated");
        self.nodes.store(Arc::new(next));
    }

    /// The hedged methods among `idempotent` (the registry's) and the client's own
    /// idempotent methods, keeping the state of those `current` already hedges.
    fn hedges(
        &self,
        current: &NodeSet,
        idempotent: &HashSet<String>,
    ) -> HashMap<String, Arc<Hedge>> {
        let core = &self.client;
        let Some(default) = core.hedge_default else {
            return HashMap::new();
        };
        idempotent
            .iter()
            .chain(&core.idempotent)
            .filter_map(|path| {
                let policy = core.hedging.get(path).copied().unwrap_or(default);
                if !policy.is_enabled() {
                    return None;
                }
                let hedge = current
                    .hedges
                    .get(path)
                    .filter(|hedge| hedge.policy == policy)
                    .map(Arc::clone)
                    .unwrap_or_else(|| Arc::new(Hedge::new(policy)));
                Some((path.clone(), hedge))
            })
            .collect()
    }

    fn registry_error(&self, err: RegistryError) -> Status {
        Status::unavailable(format!(
            "service {}: registry {} failed: {err}",
            self.service,
            self.client.registry.name()
        ))
    }
}

/// `/pkg.Service/Method` from the registry's `pkg.Service.Method`.
fn grpc_path(endpoint: &str) -> String {
    match endpoint.rsplit_once('.') {
        Some((service, method)) => format!("/{service}/{method}"),
        None => format!("/{endpoint}"),
    }
}
