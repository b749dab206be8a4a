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

mod call;
mod channel;
mod connector;
mod deadline;
mod limit;
mod node;
mod options;
mod proxy;
mod resolve;
pub mod retry;

pub use call::KEY_HEADER;
pub use channel::{Channel, ResponseFuture};
pub use connector::{
    BoxIo, ConnectFuture, Connector, DEFAULT_CONNECT_TIMEOUT, FnConnector, Io, TcpConnector,
    connector_fn,
};
pub use limit::DEFAULT_MAX_RECEIVE_MESSAGE_SIZE;
pub use node::{DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT, KeepAlive};
pub use options::{CallOptions, RequestExt};
pub use resolve::AddressError;

pub use crate::node::NodeInfo;

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    middleware::{MetricsLayer, TraceLayer},
    node::OutlierConfig,
    registry::{self, CacheRegistry, MemoryRegistry, Registry, RegistryError, SharedRegistry},
    selector::{NodeFilter, PeakEwma, Selector},
    tls::ClientTls,
};
use resolve::StaticServices;
use retry::{DEFAULT_BUDGET_TTL, DEFAULT_BUFFER_LIMIT, HedgePolicy, RetryBudget, RetryPolicy};

/// Hedged copies allowed per hedged call, as a fraction. Default is 0.05 (5 %).
pub const DEFAULT_HEDGE_BUDGET_PERCENT: f32 = 0.05;

/// Hedged copies allowed per second regardless of traffic (and a reserve of 10 s of
/// them for bursts, as a hung node causes). Default is 5.
pub const DEFAULT_HEDGE_BUDGET_MIN_PER_SEC: u32 = 5;

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

struct ClientInner {
    core: Arc<ClientCore>,
    /// Channels by service name. Channels point at the core, never back here, so dropping
    /// the last `Client` (and channel clone) frees channels, connections and watches.
    channels: Mutex<HashMap<String, Channel>>,
}

/// What every channel of a client shares.
pub(crate) struct ClientCore {
    registry: CacheRegistry,
    selector: Arc<dyn SelectorPrototype>,
    connector: Arc<dyn Connector>,
    pub(crate) tls: Option<ClientTls>,
    timeout: Duration,
    receive_limit: usize,
    retry: RetryPolicy,
    budget: RetryBudget,
    buffer_limit: usize,
    outlier: OutlierConfig,
    keepalive: KeepAlive,
    filter: Option<NodeFilter>,
    pub(crate) idempotent: HashSet<String>,
    /// Policies set per method with `ClientBuilder::hedge`.
    pub(crate) hedging: HashMap<String, HedgePolicy>,
    /// The policy of idempotent methods without one of their own; `None`: no hedging.
    pub(crate) hedge_default: Option<HedgePolicy>,
    pub(crate) hedge_budget: RetryBudget,
    /// Services whose channels go to fixed nodes instead of the registry.
    statics: StaticServices,
    trace: TraceLayer,
    metrics: MetricsLayer,
}

/// Makes each channel its own selector, so selector state (a round-robin position, a hash
/// ring) belongs to one service.
trait SelectorPrototype: fmt::Debug + Send + Sync + 'static {
    fn fresh(&self) -> Arc<dyn Selector>;
}

impl<S: Selector + Clone> SelectorPrototype for S {
    fn fresh(&self) -> Arc<dyn Selector> {
        Arc::new(self.clone())
    }
}

/// Configures a [`Client`].
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder {
    registry: Option<SharedRegistry>,
    selector: Arc<dyn SelectorPrototype>,
    connector: Arc<dyn Connector>,
    tls: Option<ClientTls>,
    timeout: Duration,
    receive_limit: usize,
    retry: RetryPolicy,
    budget: RetryBudget,
    buffer_limit: usize,
    outlier: OutlierConfig,
    keepalive: KeepAlive,
    filter: Option<NodeFilter>,
    idempotent: HashSet<String>,
    hedging: HashMap<String, HedgePolicy>,
    hedge_default: Option<HedgePolicy>,
    hedge_budget: RetryBudget,
    statics: StaticServices,
    default_layers: bool,
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
                core: Arc::new(ClientCore {
                    registry: CacheRegistry::new(registry),
                    selector: builder.selector,
                    connector: builder.connector,
                    tls: builder.tls,
                    timeout: builder.timeout,
                    receive_limit: builder.receive_limit,
                    retry: builder.retry,
                    budget: builder.budget,
                    buffer_limit: builder.buffer_limit,
                    outlier: builder.outlier,
                    keepalive: builder.keepalive,
                    filter: builder.filter,
                    idempotent: builder.idempotent,
                    hedging: builder.hedging,
                    hedge_default: builder.hedge_default,
                    hedge_budget: builder.hedge_budget,
                    statics: builder.statics,
                    trace: if builder.default_layers {
                        TraceLayer::client()
                    } else {
                        TraceLayer::client_disabled()
                    },
                    metrics: if builder.default_layers {
                        MetricsLayer::client()
                    } else {
                        MetricsLayer::disabled()
                    },
                }),
                channels: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            registry: None,
            selector: Arc::new(PeakEwma),
            connector: Arc::new(TcpConnector::new()),
            tls: None,
            timeout: DEFAULT_TIMEOUT,
            receive_limit: DEFAULT_MAX_RECEIVE_MESSAGE_SIZE,
            retry: RetryPolicy::default(),
            budget: RetryBudget::default(),
            buffer_limit: DEFAULT_BUFFER_LIMIT,
            outlier: OutlierConfig::default(),
            keepalive: KeepAlive::default(),
            filter: None,
            idempotent: HashSet::new(),
            hedging: HashMap::new(),
            hedge_default: Some(HedgePolicy::default()),
            hedge_budget: RetryBudget::new(
                DEFAULT_BUDGET_TTL,
                DEFAULT_HEDGE_BUDGET_MIN_PER_SEC,
                DEFAULT_HEDGE_BUDGET_PERCENT,
            ),
            statics: HashMap::new(),
            default_layers: true,
        }
    }

    /// A client whose channels all go to fixed nodes (given with
    /// [`ClientBuilder::static_nodes`] or [`ClientBuilder::static_service`]): it has no
    /// registry, so any other name is not found (its registry is an empty
    /// [`MemoryRegistry`]).
    fn without_registry(builder: ClientBuilder) -> Self {
        Self::with_registry(builder, Arc::new(MemoryRegistry::new()))
    }

    /// A channel to the service registered as `service` (or to its fixed nodes, when the
    /// builder gave it some). Channels to the same name share their connections.
    pub fn channel(&self, service: &str) -> Channel {
        let mut channels = crate::lock::lock(&self.inner.channels);
        channels
            .entry(service.to_owned())
            .or_insert_with(|| Channel::new(service, Arc::clone(&self.inner.core)))
            .clone()
    }

    /// The cached registry this client resolves names through.
    pub fn registry(&self) -> &CacheRegistry {
        &self.inner.core.registry
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &self.inner.core;
        f.debug_struct("Client")
            .field("registry", &core.registry.name())
            .field("selector", &core.selector)
            .field("connector", &core.connector)
            .field("tls", &core.tls)
            .field("timeout", &core.timeout)
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

    /// Sets how nodes are ordered for each call. Each service's channel gets its own
    /// clone, so selector state is per service. Default is [`PeakEwma`]: the less loaded
    /// of two random nodes.
    pub fn selector(mut self, selector: impl Selector + Clone) -> Self {
        self.selector = Arc::new(selector);
        self
    }

    /// Sets how connections to nodes are opened. Default is [`TcpConnector`].
    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.connector = Arc::new(connector);
        self
    }

    /// Dials nodes registered with metadata `transport=tls` (see [`crate::tls`]) with TLS:
    /// over the connector's stream, verifying the server's certificate against `tls`'s
    /// CAs for the host of the node's address (or `tls`'s server name), presenting `tls`'s
    /// client certificate when it has one. Other nodes are dialed in plaintext. Default
    /// is none: calls to TLS nodes fail with UNAVAILABLE naming the node and this setting
    /// (build one from the environment with [`ClientTls::from_env`]).
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the timeout of calls that set none. Default is [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest reply message a call receives: a longer one ends the call with
    /// RESOURCE_EXHAUSTED naming its size and the limit, as the gRPC status code table asks
    /// (tonic's stubs answer OUT_OF_RANGE). The connection goes on serving other calls. A
    /// channel can have its own ([`Channel::max_receive_message_size`]); a tonic stub's
    /// `max_decoding_message_size` applies too, so raise both. Default is
    /// [`DEFAULT_MAX_RECEIVE_MESSAGE_SIZE`] (4 MiB).
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        self.receive_limit = bytes;
        self
    }

    /// Sets which failures are retried, how often and how far apart. Default is
    /// [`RetryPolicy::default`]: 3 attempts, UNAVAILABLE for every method and more codes for
    /// idempotent ones.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sets the budget that caps retries across all calls of this client. Default is
    /// [`RetryBudget::default`]: 20 % of requests plus 10 per second.
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Sets the largest request body kept for replay on another node; larger and streaming
    /// requests are not retried once sent. Default is [`DEFAULT_BUFFER_LIMIT`] (64 KiB).
    pub fn buffer_limit(mut self, bytes: usize) -> Self {
        self.buffer_limit = bytes;
        self
    }

    /// Sets when failing nodes are ejected and for how long. Default is
    /// [`OutlierConfig::default`]: after 5 failures in a row, for 1 s doubling to 30 s, at
    /// most half of the nodes.
    pub fn outlier_detection(mut self, config: OutlierConfig) -> Self {
        self.outlier = config;
        self
    }

    /// Sets the HTTP/2 keepalive that finds connections gone silent while calls wait on
    /// them (a hung process). Default is [`KeepAlive::default`]: a PING after 2 s without
    /// a frame while calls are outstanding, answered within 4 s or 10 × the node's latency;
    /// [`KeepAlive::disabled`] turns it off.
    pub fn keepalive(mut self, keepalive: KeepAlive) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// Only nodes matching `filter` serve calls (a call's own filter replaces it). Default
    /// is every node.
    pub fn filter(mut self, filter: NodeFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Declares the method at gRPC path `path` (`/pkg.Service/Method`) idempotent, in
    /// addition to the methods whose `idempotency_level` the registry record carries.
    pub fn idempotent(mut self, path: impl Into<String>) -> Self {
        self.idempotent.insert(path.into());
        self
    }

    /// Turns the default client layers (a `grpc.client` tracing span with W3C
    /// `traceparent` propagation, and `micro_client_*` metrics) on or off. Default is on.
    ///
    /// # Order
    ///
    /// Outermost first: [`TraceLayer::client`] → [`MetricsLayer::client`] → the channel
    /// (deadline → node order → attempts and retries → per-node connection). Layers you
    /// add with `tower::ServiceBuilder` around the channel run outside these.
    pub fn default_layers(mut self, on: bool) -> Self {
        self.default_layers = on;
        self
    }

    /// Sets how calls to the idempotent method at `path` (`/pkg.Service/Method`) are
    /// hedged: [`HedgePolicy::disabled`] opts it out, [`HedgePolicy::delay`] fixes the wait.
    /// Default is the client's default policy ([`hedging`](Self::hedging)). Non-idempotent
    /// methods are never hedged.
    pub fn hedge(mut self, path: impl Into<String>, policy: HedgePolicy) -> Self {
        self.hedging.insert(path.into(), policy);
        self
    }

    /// Turns hedging of idempotent methods on (with [`HedgePolicy::default`]: a second copy
    /// after the method's observed 99th-percentile latency) or off. Methods given a policy
    /// with [`hedge`](Self::hedge) keep it only while this is on. Default is on.
    pub fn hedging(mut self, on: bool) -> Self {
        self.hedge_default = on.then(HedgePolicy::default);
        self
    }

    /// Sets the budget hedged copies draw on, besides the [retry
    /// budget](Self::retry_budget). Default is 5 % of hedged calls plus 5 per second
    /// ([`DEFAULT_HEDGE_BUDGET_PERCENT`], [`DEFAULT_HEDGE_BUDGET_MIN_PER_SEC`]).
    pub fn hedge_budget(mut self, budget: RetryBudget) -> Self {
        self.hedge_budget = budget;
        self
    }

    /// Sends calls to `service` to the nodes at `addresses` (`host:port` or `unix:/path`)
    /// instead of looking the name up in the registry: a static resolver, with the same
    /// node order, retries, deadlines and layers as registry-backed channels. The nodes'
    /// ids are `<service>-<index>`. The nodes never change; other names still
    /// resolve through the registry. Default is none: every name resolves
    /// through the registry.
    ///
    /// An address that is no address fails each call with UNAVAILABLE naming it;
    /// [`Channel::from_addresses`] checks addresses up front.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), micro_core::RegistryError> {
    /// let client = micro_core::Client::builder()
    ///     .static_nodes("greeter", ["127.0.0.1:7700", "127.0.0.1:7701"])
    ///     .build()?;
    /// let channel = client.channel("greeter"); // balances over the two addresses
    /// # let _ = channel;
    /// # Ok(())
    /// # }
    /// ```
    pub fn static_nodes<I>(self, service: &str, addresses: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let record = resolve::record(service, addresses.into_iter().map(Into::into));
        self.static_service(record)
    }

    /// Like [`static_nodes`](Self::static_nodes) with a whole registry record: its
    /// endpoints say which methods are idempotent, its version and metadata are what
    /// [`NodeFilter`]s match, and node metadata such as `transport=tls` applies as it does
    /// for registered nodes. Several records of one name are several versions.
    pub fn static_service(mut self, service: registry::Service) -> Self {
        self.statics
            .entry(service.name.clone())
            .or_default()
            .push(service);
        self
    }

    /// Builds a client with no registry: only the services given with
    /// [`static_nodes`](Self::static_nodes) or [`static_service`](Self::static_service)
    /// resolve, every other name is UNAVAILABLE (not found). A registry set with
    /// [`registry`](Self::registry) is ignored. Nothing is read from the environment.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let client = micro_core::Client::builder()
    ///     .timeout(Duration::from_secs(2))
    ///     .static_nodes("greeter", ["127.0.0.1:7700"])
    ///     .build_static();
    /// let channel = client.channel("greeter");
    /// # let _ = channel;
    /// # }
    /// ```
    pub fn build_static(self) -> Client {
        Client::without_registry(self)
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
