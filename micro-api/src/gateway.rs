//! [`Gateway`] and its builder, and serving it over HTTP/1.1 and h2c.

use std::{future::Future, sync::Arc, time::Duration};

use http::{HeaderName, HeaderValue, Method};
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use micro_core::{
    Client,
    auth::AuthLayer,
    broker::SharedBroker,
    registry::{self, SharedRegistry},
    transport::{self, ConnectionConfig, ConnectionInfo},
};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use super::{
    handler,
    schemas::Schemas,
    state::{Config, Inner, OAuth, Peer},
};

/// The call timeout used when a request sets none, and the most one may set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request body accepted (4 MiB).
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;
/// The largest request head (request line and headers) accepted (64 KiB).
pub const DEFAULT_MAX_HEADER_SIZE: usize = 64 * 1024;
/// How long a client may take to send its request head.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its request body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The request headers passed on as gRPC metadata of the same name, besides
/// `grpc-metadata-<key>` ones.
pub const DEFAULT_HEADERS: [&str; 4] =
    ["authorization", "x-request-id", "traceparent", "tracestate"];
/// How long calls in flight may finish after a shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a served gateway lists the registry to learn new services' REST routes.
const PRELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// Neither a client nor a registry was given, and `MICRO_REGISTRY` names none usable.
    #[error("cannot open the registry: {0}")]
    Registry(#[from] micro_core::RegistryError),
    /// A header name of the allow-list is not a valid header name.
    #[error("{0:?} is not a valid header name")]
    Header(String),
    /// A CORS origin is not a valid header value.
    #[error("CORS origin {0:?} is not a valid origin")]
    Origin(String),
}

/// The HTTP API gateway: JSON over HTTP to every service in a registry, with schemas read
/// by gRPC reflection. See the [module docs](super) for the routes.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = micro_core::registry::from_url("local")?;
/// let gateway = micro_api::Gateway::builder().registry(registry).build()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// gateway.serve(listener).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

/// Configures a [`Gateway`]. Made by [`Gateway::builder`].
#[derive(Debug)]
#[must_use]
pub struct GatewayBuilder {
    registry: Option<SharedRegistry>,
    client: Option<Client>,
    broker: Option<SharedBroker>,
    timeout: Duration,
    max_body: usize,
    max_header_size: usize,
    header_read_timeout: Duration,
    body_read_timeout: Duration,
    headers: Vec<String>,
    cors_origins: Vec<String>,
    title: String,
    auth: Option<AuthLayer>,
    public_openapi: bool,
    connections: ConnectionConfig,
}

// === impl Gateway ===

impl Gateway {
    /// Starts configuring a gateway.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The gateway as an axum router, to serve with other routes or middleware. CORS is
    /// applied when configured; the header size limit and read timeouts are the server's
    /// and apply only with [`Gateway::serve`].
    pub fn into_router(self) -> axum::Router {
        let cors = cors_layer(&self.inner.config.cors_origins);
        let router = axum::Router::new()
            .fallback(handler::handle)
            .with_state(self.inner);
        match cors {
            Some(cors) => router.layer(cors),
            None => router,
        }
    }

    /// Serves the gateway on `listener` until the process ends.
    ///
    /// # Errors
    /// Never, today: connection errors are logged and the gateway keeps serving.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        self.serve_with_shutdown(listener, std::future::pending())
            .await
    }

    /// Serves the gateway on `listener` until `signal` completes, then stops accepting
    /// connections and lets requests in flight finish (for up to 10 s).
    ///
    /// Serves HTTP/1.1 and HTTP/2 without TLS (h2c, by prior knowledge); a request head
    /// larger than [`GatewayBuilder::max_header_size`] gets 431, one not sent within
    /// [`GatewayBuilder::header_read_timeout`] has its connection closed. Connections
    /// follow [`GatewayBuilder::connections`]: a silent one is closed after the first-byte
    /// timeout, an idle one after the idle timeout, the idlest one is shed at the limit.
    ///
    /// # Errors
    /// Never, today: connection errors are logged and the gateway keeps serving.
    pub async fn serve_with_shutdown<F>(
        self,
        listener: TcpListener,
        signal: F,
    ) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        let config = self.inner.config.clone();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_size.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(config.max_header_size).unwrap_or(u32::MAX));
        let preload = tokio::spawn(preload(self.inner.clone()));
        let router = self.into_router();
        let make_service = move |info: &ConnectionInfo| {
            // Calls tell services who is asking: `x-forwarded-for` is this peer's address.
            let peer = info.remote_addr();
            TowerToHyperService::new(tower::ServiceExt::map_request(
                router.clone(),
                move |mut request: http::Request<hyper::body::Incoming>| {
                    if let Some(peer) = peer {
                        request.extensions_mut().insert(Peer(peer));
                    }
                    request
                },
            ))
        };
        // The drain after `signal` is bounded: dropping the serving future closes the
        // connections still open.
        let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            signal.await;
            let _ = draining.send(());
        };
        let serving = transport::serve(listener, builder, config.connections, make_service, signal);
        tokio::pin!(serving);
        let drain_timeout = async move {
            match drain_started.await {
                Ok(()) => tokio::time::sleep(DRAIN_TIMEOUT).await,
                Err(_) => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            result = &mut serving => result,
            () = drain_timeout => {
                tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; closing them");
                Ok(())
            }
        };
        preload.abort();
        result
    }
}

/// Loads every registered service's schemas now and then, so their REST routes are known
/// before a first RPC-form call.
async fn preload(inner: Arc<Inner>) {
    let mut interval = tokio::time::interval(PRELOAD_INTERVAL);
    loop {
        interval.tick().await;
        inner.schemas.all().await;
    }
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(Any)
            .expose_headers(Any),
    )
}

// === impl GatewayBuilder ===

impl Default for GatewayBuilder {
    fn default() -> Self {
        Self {
            registry: None,
            client: None,
            broker: None,
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            headers: DEFAULT_HEADERS
                .iter()
                .map(|&name| name.to_owned())
                .collect(),
            cors_origins: Vec::new(),
            title: "micro API".to_owned(),
            auth: None,
            public_openapi: true,
            connections: ConnectionConfig::default(),
        }
    }
}

impl GatewayBuilder {
    /// Sets the registry services are found in. Default is the one named by
    /// `MICRO_REGISTRY` (`local` when unset); ignored when a [`client`](Self::client) is
    /// given.
    pub fn registry(mut self, registry: SharedRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Sets the client calls go through (its registry, selector, retries, middleware).
    /// Default is a client on the [`registry`](Self::registry).
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Sets the broker `POST /event/{topic}` publishes to. Default is none: those requests
    /// get 503.
    pub fn broker(mut self, broker: SharedBroker) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Sets the timeout of calls whose request sets none (`x-micro-timeout`,
    /// `grpc-timeout`), and the most a request may set. Default is [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest request body accepted; larger ones get 413. Default is
    /// [`DEFAULT_MAX_BODY`].
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets the largest request head accepted (at least 8 KiB); larger ones get 431.
    /// Default is [`DEFAULT_MAX_HEADER_SIZE`].
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.max_header_size = bytes;
        self
    }

    /// Sets how long a client may take to send its request head. Default is
    /// [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets how long a client may take to send its request body; slower ones get 408.
    /// Default is [`DEFAULT_BODY_READ_TIMEOUT`].
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Adds a request header passed on as gRPC metadata of the same name. Default is
    /// [`DEFAULT_HEADERS`]; `grpc-metadata-<key>` headers always pass, as `<key>`.
    pub fn allow_header(mut self, name: impl Into<String>) -> Self {
        self.headers.push(name.into());
        self
    }

    /// Replaces the headers passed on as metadata (see [`allow_header`](Self::allow_header)).
    pub fn allowed_headers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.headers = names.into_iter().map(Into::into).collect();
        self
    }

    /// Allows cross-origin requests from `origin` (`https://app.example`, or `*` for any).
    /// Default is none: no CORS headers.
    pub fn cors_origin(mut self, origin: impl Into<String>) -> Self {
        self.cors_origins.push(origin.into());
        self
    }

    /// Sets the title of the OpenAPI document. Default is `micro API`.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Enforces `auth` on every request that would call a service (all RPC forms, REST
    /// routes, streaming, `POST /event/{topic}`): the request is decided with
    /// [`AuthLayer::check_as`] for the registered name of the service and the gRPC path of
    /// the method its route names, before its body is read and before anything reaches the
    /// service. No token or a refused one answers 401 with `WWW-Authenticate: Bearer`, a
    /// rule's refusal 403, both with the JSON error body. `POST /event/{topic}` is decided
    /// as the endpoint `Event.Publish` of `micro.event`.
    ///
    /// Unauthenticated paths: `POST /oauth/token`, `GET /.well-known/jwks.json`, CORS
    /// preflights, and `GET /openapi.json` unless [`public_openapi(false)`](Self::public_openapi).
    /// Default is no auth: the services enforce their own rules, if any.
    pub fn auth(mut self, auth: AuthLayer) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Whether `GET /openapi.json` is served to anyone when [`auth`](Self::auth) is on;
    /// when not, it is decided as the endpoint `Gateway.OpenAPI` of `micro.api`. Default
    /// is `true`.
    pub fn public_openapi(mut self, public: bool) -> Self {
        self.public_openapi = public;
        self
    }

    /// Sets the rules for the connections the gateway accepts: how long a new one may stay
    /// silent, how long one may stay idle between requests (the HTTP/1.1 keep-alive limit;
    /// HTTP/2 gets a GOAWAY), HTTP/2 keep-alive, and the connection limit they count
    /// against; see [`micro_core::transport`]. Default is [`ConnectionConfig::default`]:
    /// 5 s to the first byte, 2 min idle, and the process' connection limit (the
    /// open-file limit less a reserve), shared with the process' services.
    pub fn connections(mut self, config: ConnectionConfig) -> Self {
        self.connections = config;
        self
    }

    /// Builds the gateway.
    ///
    /// # Errors
    /// When no client or registry was given and `MICRO_REGISTRY` names no usable one, or a
    /// header name or CORS origin is invalid.
    pub fn build(self) -> Result<Gateway, GatewayError> {
        let headers = self
            .headers
            .iter()
            .map(|name| {
                HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                    .map_err(|_| GatewayError::Header(name.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for origin in &self.cors_origins {
            if origin != "*" && HeaderValue::from_str(origin).is_err() {
                return Err(GatewayError::Origin(origin.clone()));
            }
        }
        let client = match self.client {
            Some(client) => client,
            None => {
                let registry = match self.registry {
                    Some(registry) => registry,
                    None => registry::from_env()?,
                };
                Client::builder()
                    .registry(registry)
                    .timeout(self.timeout)
                    .build()?
            }
        };
        let config = Config {
            timeout: self.timeout,
            max_body: self.max_body,
            max_header_size: self.max_header_size,
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            headers,
            cors_origins: self.cors_origins,
            title: self.title,
            public_openapi: self.public_openapi,
            connections: self.connections,
        };
        Ok(Gateway {
            inner: Arc::new(Inner {
                oauth: OAuth::new(&client, self.timeout),
                schemas: Schemas::new(client, self.timeout),
                broker: self.broker,
                config,
                auth: self.auth,
            }),
        })
    }
}
