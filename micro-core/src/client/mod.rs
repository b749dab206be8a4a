//! The client side: [`Channel`]s that resolve a service name and balance over its nodes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use micro_core::Client;
//!
//! // The registry comes from MICRO_REGISTRY, `local` when unset.
//! let client = Client::from_env()?;
//! let channel = client.channel("greeter");
//! // let mut greeter = GreeterClient::new(channel);
//! # let _ = channel;
//! # Ok(())
//! # }
//! ```

mod channel;
mod connector;
mod deadline;
pub(crate) mod pool;
pub mod retry;

pub use channel::{Channel, ResponseFuture};
pub use connector::{
    BoxIo, ConnectFuture, Connector, DEFAULT_CONNECT_TIMEOUT, FnConnector, Io, TcpConnector,
    connector_fn,
};

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    registry::{self, CacheRegistry, Node, Registry, RegistryError, SharedRegistry},
    selector::{RoundRobin, Selector},
};

/// The timeout of a call that sets none. Default is 30 seconds.
///
/// A call sets its own with tonic's `Request::set_timeout`; either way the timeout is sent to
/// the server as `grpc-timeout` and enforced on the client.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Hands out [`Channel`]s to named services, sharing one registry cache, selector and
/// connection pool.
///
/// Cloning is cheap; clones share everything.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    registry: CacheRegistry,
    selector: Arc<dyn Selector>,
    connector: Arc<dyn Connector>,
    timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

/// Configures a [`Client`].
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder {
    registry: Option<SharedRegistry>,
    selector: Arc<dyn Selector>,
    connector: Arc<dyn Connector>,
    timeout: Duration,
}

/// The node that answered a call: found in the extensions of every response that came
/// through a [`Channel`].
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

// === impl Client ===

impl Client {
    /// A client on `registry` with the default selector, connector and timeout.
    pub fn new(registry: SharedRegistry) -> Self {
        Self::with_registry(Self::builder(), registry)
    }

    /// A client on the registry named by `MICRO_REGISTRY` (`local` when unset).
    ///
    /// # Errors
    /// When `MICRO_REGISTRY` names no known registry or the local registry's directory
    /// cannot be used.
    pub fn from_env() -> Result<Self, RegistryError> {
        Self::builder().build()
    }

    fn with_registry(builder: ClientBuilder, registry: SharedRegistry) -> Self {
        Client {
            inner: Arc::new(ClientInner {
                registry: CacheRegistry::new(registry),
                selector: builder.selector,
                connector: builder.connector,
                timeout: builder.timeout,
                channels: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            registry: None,
            selector: Arc::new(RoundRobin::new()),
            connector: Arc::new(TcpConnector::new()),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A channel to the service registered as `service`. Channels to the same name share
    /// their connections.
    pub fn channel(&self, service: &str) -> Channel {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        channels
            .entry(service.to_owned())
            .or_insert_with(|| Channel::new(service.to_owned(), Arc::clone(&self.inner)))
            .clone()
    }

    /// The cached registry this client resolves names through.
    pub fn registry(&self) -> &CacheRegistry {
        &self.inner.registry
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("registry", &self.inner.registry.name())
            .field("selector", &self.inner.selector)
            .field("connector", &self.inner.connector)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

// === impl ClientBuilder ===

impl ClientBuilder {
    /// Sets the registry names are resolved through. Default is the one named by
    /// `MICRO_REGISTRY`, `local` when unset.
    pub fn registry(mut self, registry: SharedRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Sets how a node is chosen for each call. Default is [`RoundRobin`].
    pub fn selector(mut self, selector: impl Selector) -> Self {
        self.selector = Arc::new(selector);
        self
    }

    /// Sets how connections to nodes are opened. Default is [`TcpConnector`].
    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.connector = Arc::new(connector);
        self
    }

    /// Sets the timeout of calls that set none. Default is [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// When no registry was set and `MICRO_REGISTRY` names no usable registry.
    pub fn build(mut self) -> Result<Client, RegistryError> {
        let registry = match self.registry.take() {
            Some(registry) => registry,
            None => registry::from_env()?,
        };
        Ok(Client::with_registry(self, registry))
    }
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
