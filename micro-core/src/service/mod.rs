//! The server side: [`Service`] runs tonic services and makes them discoverable.
//!
//! Every service serves, next to the user's gRPC services:
//! - `grpc.health.v1.Health`, reporting `SERVING` for each service and for `""`;
//! - server reflection, as both `grpc.reflection.v1` and `grpc.reflection.v1alpha`.
//!
//! # Lifecycle
//!
//! bind → serve → register with a TTL → re-register every interval → on SIGINT/SIGTERM:
//! health `NOT_SERVING` → stop heartbeats → deregister → keep serving for the shutdown
//! delay (clients watching health or the registry stop sending) → stop accepting, end
//! health watches → drain in-flight calls for at most the grace period (a second signal cuts
//! it short) → return `Ok(())`, so `main` exits 0.
//!
//! [`Service::start`] installs the SIGINT/SIGTERM handlers, so a SIGTERM that follows a
//! readiness announcement is always handled; call [`RunningService::run_until_signal`] (or
//! [`RunningService::shutdown`]) on the running service.
//!
//! # Middleware
//!
//! Every call goes through, outermost first: [`ContextLayer`](crate::context::ContextLayer)
//! (always) → [`TraceLayer::server`](crate::middleware::TraceLayer::server) →
//! [`MetricsLayer::server`](crate::middleware::MetricsLayer::server) → the layers added with
//! [`ServiceBuilder::layer`], the first added outermost → the routes (the user's services,
//! health, reflection). Tracing and metrics are on by default; turn them off with
//! [`ServiceBuilder::default_layers`]. See [`crate::middleware`] for details.
//!
//! # Subscriptions
//!
//! [`ServiceBuilder::subscribe`] runs a [`Handler`] for each message
//! published to a topic. The service subscribes through its broker
//! ([`ServiceBuilder::broker`], default `MICRO_BROKER` on the service's registry) when it
//! starts, before it registers; each subscription runs in its own task and handles its
//! deliveries one at a time, in order (a slow handler slows its publishers down through
//! the broker's backpressure). `Ok` acks the delivery (manual-ack subscriptions); an error
//! is logged and nacks it. At shutdown, right after deregistering, the subscriptions stop:
//! the handler in progress finishes (within the grace period), then the subscription is
//! dropped, so messages it had buffered but not yet handled are not handled (at-most-once
//! brokers lose them; durable brokers redeliver them).
//!
//! # Configuration from the environment
//!
//! What the code leaves unset is read from the environment:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `MICRO_REGISTRY` | registry: `local`, `memory`, `local:///dir` | `local` |
//! | `MICRO_BROKER` | broker for subscriptions: `local`, `memory`, or a scheme added with [`broker::register_scheme`] (`service` once `micro_platform::install()` ran) | `local` |
//! | `MICRO_SERVER_ADDRESS` | address to listen on (`host:port`, `unix:/path`) | [`DEFAULT_ADDRESS`] |
//! | `MICRO_SERVER_ADVERTISE` | address to register instead of the bound one | the bound address |
//! | `MICRO_REGISTER_TTL` | registration TTL (`30s`, `500ms`, `2m`) | [`DEFAULT_REGISTER_TTL`] |
//! | `MICRO_REGISTER_INTERVAL` | re-registration interval | [`DEFAULT_REGISTER_INTERVAL`] |
//! | `MICRO_TLS_CERT`, `MICRO_TLS_KEY` | serve TLS with this certificate chain and key; see [`crate::tls`] | plaintext |
//! | `MICRO_TLS_CLIENT_CA`, `MICRO_TLS_CLIENT_AUTH` | accept client certificates of this CA, `required` or `optional` | none |
//! | `MICRO_TLS_CA` (and `MICRO_TLS_CLIENT_CERT`, `MICRO_TLS_CLIENT_KEY`) | TLS for [`Service::client`] | none |

mod env;
mod error;
mod grpc;
mod health;
mod reflection;
mod running;
mod subscribe;

use crate::middleware::routes::RoutesBuilder;

pub use env::{
    MESSAGE_BUDGET_ENV, REGISTER_INTERVAL_ENV, REGISTER_TTL_ENV, SERVER_ADDRESS_ENV,
    SERVER_ADVERTISE_ENV,
};
pub use error::ServiceError;

pub use crate::middleware::BoxRoutes;
pub use running::RunningService;

use std::{collections::BTreeMap, convert::Infallible, fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use tonic::{body::Body, server::NamedService};
use tower::{Layer, ServiceExt};
use tower_service::Service as TowerService;

use crate::{
    broker::{self, Handler, SharedBroker, SubscribeOptions},
    client::Client,
    codegen::{DescribedService, ServiceDescriptor},
    middleware::stack::UserLayer,
    registry::{self, SharedRegistry},
    tls::{ClientTls, ServerTls},
    transport::ConnectionConfig,
};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The address a service listens on unless told otherwise: loopback, any free port.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:0";
/// How long a registration lives without renewal. Default is 30 seconds.
pub const DEFAULT_REGISTER_TTL: Duration = registry::DEFAULT_TTL;
/// How often a service renews its registration. Default is 10 seconds.
pub const DEFAULT_REGISTER_INTERVAL: Duration = Duration::from_secs(10);
/// How long in-flight calls may run on after a shutdown signal. Default is 10 seconds.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// How long a shutting-down service keeps accepting calls after it reported NOT_SERVING and
/// deregistered, so clients stop sending before it stops listening. Default is 100 ms.
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_millis(100);
/// The bytes of large request messages (64 KiB or more each) a service buffers at once: 64 MiB,
/// sixteen messages of tonic's 4 MiB limit. See [`ServiceBuilder::message_budget`].
pub const DEFAULT_MESSAGE_BUDGET: usize = 64 * 1024 * 1024;

/// A micro service: tonic services plus health, reflection and registration.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), micro_core::ServiceError> {
/// use micro_core::Service;
///
/// Service::builder("greeter")
///     .version("1.0.0")
///     // .add_service(GreeterServer::new(MyGreeter))
///     .run()
///     .await
/// # }
/// ```
pub struct Service {
    config: Config,
    registry: SharedRegistry,
    client: Client,
    node_id: String,
    routes: RoutesBuilder,
    descriptors: Vec<&'static ServiceDescriptor>,
    file_descriptor_sets: Vec<Vec<u8>>,
    layers: Vec<UserLayer>,
    default_layers: bool,
    broker: Option<SharedBroker>,
    subscriptions: Vec<subscribe::Subscriber>,
}

/// Configures a [`Service`]; made by [`Service::builder`].
#[must_use]
pub struct ServiceBuilder {
    config: Config,
    registry: Option<SharedRegistry>,
    routes: RoutesBuilder,
    descriptors: Vec<&'static ServiceDescriptor>,
    file_descriptor_sets: Vec<Vec<u8>>,
    layers: Vec<UserLayer>,
    default_layers: bool,
    broker: Option<SharedBroker>,
    subscriptions: Vec<subscribe::Subscriber>,
}

#[derive(Debug, Clone)]
struct Config {
    name: String,
    version: String,
    metadata: BTreeMap<String, String>,
    node_metadata: BTreeMap<String, String>,
    address: Option<String>,
    advertise: Option<String>,
    ttl: Option<Duration>,
    interval: Option<Duration>,
    grace_period: Duration,
    shutdown_delay: Duration,
    tls: Option<ServerTls>,
    connections: ConnectionConfig,
    /// Set by code (`Some`), else resolved from the environment at build.
    message_budget: Option<Option<usize>>,
}

// === impl Service ===

impl Service {
    /// Starts configuring the service registered as `name`.
    pub fn builder(name: impl Into<String>) -> ServiceBuilder {
        ServiceBuilder {
            config: Config {
                name: name.into(),
                version: String::new(),
                metadata: BTreeMap::new(),
                node_metadata: BTreeMap::new(),
                address: None,
                advertise: None,
                ttl: None,
                interval: None,
                grace_period: DEFAULT_GRACE_PERIOD,
                shutdown_delay: DEFAULT_SHUTDOWN_DELAY,
                tls: None,
                connections: ConnectionConfig::default(),
                message_budget: None,
            },
            registry: None,
            routes: RoutesBuilder::default(),
            descriptors: Vec::new(),
            file_descriptor_sets: Vec::new(),
            layers: Vec::new(),
            default_layers: true,
            broker: None,
            subscriptions: Vec::new(),
        }
    }

    /// The name the service registers as.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The id of this process' node, unique per start.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// A client on the same registry, for handlers that call other services.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The broker the service subscribes through, for handlers that publish: the one set
    /// with [`ServiceBuilder::broker`], else the one opened for its subscriptions; `None`
    /// when neither.
    pub fn broker(&self) -> Option<SharedBroker> {
        self.broker.clone()
    }

    /// Binds, serves, registers and heartbeats; returns once the service is reachable.
    ///
    /// # Errors
    /// When the address cannot be bound, the descriptors are broken or the first
    /// registration fails.
    pub async fn start(self) -> Result<RunningService, ServiceError> {
        running::start(self).await
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully and returns `Ok(())`.
    ///
    /// # Errors
    /// As [`Service::start`], or when the server fails while running.
    pub async fn run(self) -> Result<(), ServiceError> {
        self.start().await?.run_until_signal().await
    }
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("config", &self.config)
            .field("registry", &self.registry.name())
            .field("node_id", &self.node_id)
            .field("services", &self.service_names())
            .field("layers", &self.layers.len())
            .field("default_layers", &self.default_layers)
            .field("broker", &self.broker.as_ref().map(|b| b.name().to_owned()))
            .field("subscriptions", &self.subscriptions)
            .finish_non_exhaustive()
    }
}

impl Service {
    fn service_names(&self) -> Vec<&'static str> {
        self.descriptors.iter().map(|d| d.name).collect()
    }
}

// === impl ServiceBuilder ===

impl ServiceBuilder {
    /// Sets the version registered with the service. Default is empty.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.config.version = version.into();
        self
    }

    /// Adds a label to the service's registry record. Default is none.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds a label to this node's registry record. Default is `protocol=grpc` only.
    pub fn node_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.node_metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the address to listen on: `host:port` or `unix:/path/to/socket`.
    /// Default is `MICRO_SERVER_ADDRESS`, else [`DEFAULT_ADDRESS`].
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.config.address = Some(address.into());
        self
    }

    /// Sets the address registered for clients when it differs from the bound one
    /// (containers, NAT). Default is `MICRO_SERVER_ADVERTISE`, else the bound address.
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.config.advertise = Some(address.into());
        self
    }

    /// Sets the registry. Default is the one named by `MICRO_REGISTRY`, `local` when unset.
    pub fn registry(mut self, registry: SharedRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Sets how long a registration lives without renewal. Default is
    /// `MICRO_REGISTER_TTL`, else [`DEFAULT_REGISTER_TTL`].
    pub fn register_ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = Some(ttl);
        self
    }

    /// Sets how often the registration is renewed; must be less than half the TTL.
    /// Default is `MICRO_REGISTER_INTERVAL`, else [`DEFAULT_REGISTER_INTERVAL`], shortened
    /// to a third of the TTL when the TTL is set shorter than its double.
    pub fn register_interval(mut self, interval: Duration) -> Self {
        self.config.interval = Some(interval);
        self
    }

    /// Sets how long in-flight calls may run on after a shutdown signal. Default is
    /// [`DEFAULT_GRACE_PERIOD`].
    pub fn grace_period(mut self, grace_period: Duration) -> Self {
        self.config.grace_period = grace_period;
        self
    }

    /// Sets how long the service keeps accepting calls after reporting NOT_SERVING and
    /// deregistering at shutdown. Default is [`DEFAULT_SHUTDOWN_DELAY`].
    pub fn shutdown_delay(mut self, delay: Duration) -> Self {
        self.config.shutdown_delay = delay;
        self
    }

    /// Sets the bytes of large request messages (64 KiB or more each) the service buffers at
    /// once, over all its connections; `None` for no limit. A message takes its length when
    /// its 5-byte prefix arrives, before it is buffered, and gives it back when its call's
    /// answer is done; one that does not fit fails at once with RESOURCE_EXHAUSTED (it is
    /// not queued: a queued message's unread bytes would hold the HTTP/2 connection window
    /// that the messages holding the budget need). Default is `MICRO_MESSAGE_BUDGET` (bytes,
    /// `64M`, `1G`, or `off`) when set, else [`DEFAULT_MESSAGE_BUDGET`] (64 MiB).
    pub fn message_budget(mut self, bytes: impl Into<Option<usize>>) -> Self {
        self.config.message_budget = Some(bytes.into());
        self
    }

    /// Serves TLS (mutual TLS when `tls` has a client CA) instead of plaintext HTTP/2, and
    /// registers the node with metadata `transport=tls` so that clients dial it with TLS;
    /// see [`crate::tls`]. TCP addresses only. Default is `MICRO_TLS_CERT` and
    /// `MICRO_TLS_KEY` (with `MICRO_TLS_CLIENT_CA`, `MICRO_TLS_CLIENT_AUTH`) when set,
    /// else plaintext.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Sets the rules for the connections the service accepts: how long a new one may stay
    /// silent, how long one may stay idle, HTTP/2 keep-alive, and the connection limit they
    /// count against; see [`crate::transport`] for what each does. Default is
    /// [`ConnectionConfig::default`]: 5 s to the first byte, 2 min idle, a PING after 1 min
    /// of silence answered within 20 s, and the process' [`ConnectionLimit`] (the open-file
    /// limit less a reserve, shared by every server of the process).
    ///
    /// [`ConnectionLimit`]: crate::transport::ConnectionLimit
    pub fn connections(mut self, config: ConnectionConfig) -> Self {
        self.config.connections = config;
        self
    }

    /// Adds a gRPC service generated by `micro-codegen`: it is routed, its endpoints are
    /// registered, its health is reported and its descriptors are served by reflection.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: TowerService<Request<Body>, Response = Response<Body>, Error = Infallible>
            + DescribedService
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.descriptors.push(S::DESCRIPTOR);
        self
    }

    /// Adds a tower layer around every call of the service (the user's services, health
    /// and reflection), at the HTTP level. Layers added first are outermost; all of them
    /// run inside the context, tracing and metrics layers, so they see the call's
    /// [`Context`](crate::context::Context) and their rejections are traced and counted.
    ///
    /// A layer may change the response body type and fail with any error: an error is
    /// answered with the status found in it (`UNKNOWN` when there is none).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn demo(builder: micro_core::ServiceBuilder) {
    /// use micro_core::middleware::{LogLayer, interceptor_fn};
    ///
    /// builder
    ///     .layer(LogLayer::server())
    ///     .layer(interceptor_fn(|request: http::Request<tonic::body::Body>| async move {
    ///         match request.headers().get("authorization") {
    ///             Some(_) => Ok(request),
    ///             None => Err(tonic::Status::unauthenticated("no token")),
    ///         }
    ///     }));
    /// # }
    /// ```
    pub fn layer<L, ResBody, E>(mut self, layer: L) -> Self
    where
        L: Layer<BoxRoutes> + Send + Sync + 'static,
        L::Service: TowerService<Request<Body>, Response = Response<ResBody>, Error = E>
            + Clone
            + Send
            + 'static,
        <L::Service as TowerService<Request<Body>>>::Future: Send + 'static,
        E: Into<BoxError> + 'static,
        ResBody: http_body::Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        self.layers.push(Arc::new(move |inner: BoxRoutes| {
            BoxRoutes::new(
                layer
                    .layer(inner)
                    .map_response(|response| response.map(Body::new))
                    .map_err(Into::into),
            )
        }));
        self
    }

    /// Turns the default tracing and metrics layers on or off; the context layer always
    /// runs. Default is on.
    pub fn default_layers(mut self, enabled: bool) -> Self {
        self.default_layers = enabled;
        self
    }

    /// Sets the broker for [`subscribe`](Self::subscribe) and [`Service::broker`]. Default
    /// is the one named by `MICRO_BROKER` (`local` when unset) on the service's registry,
    /// opened at [`build`](Self::build) only when the service subscribes.
    pub fn broker(mut self, broker: SharedBroker) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Runs `handler` for each message published to `topic` while the service runs; see
    /// [the module docs](self#subscriptions). Every instance of the service gets every
    /// message; use [`subscribe_with`](Self::subscribe_with) and a queue group to share them
    /// between instances.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), micro_core::ServiceError> {
    /// use micro_core::{Service, broker::Delivery};
    ///
    /// Service::builder("billing")
    ///     .subscribe("orders.created", |delivery: Delivery| async move {
    ///         tracing::info!(bytes = delivery.message.body.len(), "order created");
    ///         Ok(())
    ///     })
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn subscribe(self, topic: impl Into<String>, handler: impl Handler) -> Self {
        self.subscribe_with(topic, SubscribeOptions::default(), handler)
    }

    /// As [`subscribe`](Self::subscribe), with options: a queue group (each message to one
    /// instance of the group), a durable name, manual acks (acked when the handler returns
    /// `Ok`). The broker must support them, or [`Service::start`] fails.
    pub fn subscribe_with(
        mut self,
        topic: impl Into<String>,
        options: SubscribeOptions,
        handler: impl Handler,
    ) -> Self {
        self.subscriptions.push(subscribe::Subscriber {
            topic: topic.into(),
            options,
            handler: Arc::new(handler),
        });
        self
    }

    /// Adds an encoded `FileDescriptorSet` to serve through reflection, for services whose
    /// descriptors do not come from `micro-codegen`.
    pub fn file_descriptor_set(mut self, encoded: impl Into<Vec<u8>>) -> Self {
        self.file_descriptor_sets.push(encoded.into());
        self
    }

    /// Checks the configuration and opens the registry.
    ///
    /// # Errors
    /// [`ServiceError`] naming what is wrong: the name, the TTL and interval, an
    /// environment variable, or the registry.
    pub fn build(self) -> Result<Service, ServiceError> {
        let mut config = self.config;
        validate_name(&config.name)?;
        config.address = match config.address {
            Some(address) => Some(address),
            None => env::string(SERVER_ADDRESS_ENV)?,
        };
        config.advertise = match config.advertise {
            Some(address) => Some(address),
            None => env::string(SERVER_ADVERTISE_ENV)?,
        };
        let ttl = match config.ttl {
            Some(ttl) => ttl,
            None => env::duration(REGISTER_TTL_ENV)?.unwrap_or(DEFAULT_REGISTER_TTL),
        };
        let interval = match config.interval {
            Some(interval) => interval,
            None => match env::duration(REGISTER_INTERVAL_ENV)? {
                Some(interval) => interval,
                None => DEFAULT_REGISTER_INTERVAL.min(ttl / 3),
            },
        };
        if interval.is_zero() || interval.saturating_mul(2) >= ttl {
            return Err(ServiceError::InvalidInterval { interval, ttl });
        }
        config.ttl = Some(ttl);
        config.interval = Some(interval);
        if config.message_budget.is_none() {
            config.message_budget =
                Some(env::budget(MESSAGE_BUDGET_ENV)?.unwrap_or(Some(DEFAULT_MESSAGE_BUDGET)));
        }
        config
            .node_metadata
            .entry("protocol".to_owned())
            .or_insert_with(|| "grpc".to_owned());
        if config.tls.is_none() {
            config.tls = ServerTls::from_env()?;
        }
        if let (Some(_), Some(address)) = (&config.tls, &config.address)
            && address.starts_with("unix:")
        {
            return Err(ServiceError::InvalidAddress {
                address: address.clone(),
                reason: "TLS is served on TCP addresses only (a Unix socket is local: protect \
                         it with file permissions)"
                    .to_owned(),
            });
        }
        if config.tls.is_some() {
            config.node_metadata.insert(
                crate::tls::TRANSPORT_KEY.to_owned(),
                crate::tls::TRANSPORT_TLS.to_owned(),
            );
        }

        let registry = match self.registry {
            Some(registry) => registry,
            None => registry::from_env()?,
        };
        for subscriber in &self.subscriptions {
            broker::validate_topic(&subscriber.topic)?;
        }
        let broker = match self.broker {
            Some(broker) => Some(broker),
            None if !self.subscriptions.is_empty() => {
                Some(broker::from_env_with_registry(registry.clone())?)
            }
            None => None,
        };
        let client = match ClientTls::from_env()? {
            Some(tls) => Client::builder()
                .registry(registry.clone())
                .tls(tls)
                .build()?,
            None => Client::new(registry.clone()),
        };
        let node_id = format!("{}-{}", config.name, uuid::Uuid::new_v4());
        Ok(Service {
            config,
            registry,
            client,
            node_id,
            routes: self.routes,
            descriptors: self.descriptors,
            file_descriptor_sets: self.file_descriptor_sets,
            layers: self.layers,
            default_layers: self.default_layers,
            broker,
            subscriptions: self.subscriptions,
        })
    }

    /// Builds, then runs until SIGINT or SIGTERM; see [`Service::run`].
    ///
    /// # Errors
    /// As [`ServiceBuilder::build`] and [`Service::run`].
    pub async fn run(self) -> Result<(), ServiceError> {
        self.build()?.run().await
    }
}

impl fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("config", &self.config)
            .field(
                "services",
                &self.descriptors.iter().map(|d| d.name).collect::<Vec<_>>(),
            )
            .field("layers", &self.layers.len())
            .field("default_layers", &self.default_layers)
            .field("subscriptions", &self.subscriptions)
            .finish_non_exhaustive()
    }
}

/// Node ids are `<name>-<uuid>` and must fit the registries' 200-byte limit.
const MAX_NAME_LEN: usize = 160;

fn validate_name(name: &str) -> Result<(), ServiceError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.len() > MAX_NAME_LEN {
        "must be at most 160 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "may only contain ASCII letters, digits, '.', '_' and '-'"
    } else if name.starts_with('.') {
        "must not start with '.'"
    } else {
        return Ok(());
    };
    Err(ServiceError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}
