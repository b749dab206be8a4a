//! `micro api`: the HTTP API gateway (`micro::api`) on its own.

use std::{error::Error, path::PathBuf, sync::Arc, time::Duration};

use micro::{
    Client,
    api::Gateway,
    auth::{AuthLayer, KeySet, Rule, RuleSet, Verifier},
    broker::{self, SharedBroker},
    platform::auth::{self as platform_auth, AuthClient, AuthSync},
    registry::{self, SharedRegistry},
};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};

use crate::duration::parse as parse_duration;

type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// The address `micro api` listens on unless told otherwise.
pub(crate) const DEFAULT_ADDRESS: &str = "127.0.0.1:8080";

pub(crate) const LONG_ABOUT: &str = "\
Serves every service in the registry as JSON over HTTP (default 127.0.0.1:8080), with
schemas read from the services by gRPC reflection:

  POST /{service}/{Service}/{Method}   calls a method: {Service} short (Greeter) or full
                                       (greeter.v1.Greeter); body and reply are protobuf
                                       JSON; a client-streaming method takes an array
  POST /{service}/{Method}             the same, when one service has that method
  REST routes                          from google.api.http annotations, tried first
  GET /openapi.json                    the OpenAPI 3 document of all of it
  POST /event/{topic}                  publishes the JSON body on the broker (202)
  POST /oauth/token                    OAuth2 token endpoint of the auth service micro.auth
  GET /.well-known/jwks.json           its public keys

With --auth service (the keys, rules and revocations of micro.auth, kept current) or
--auth-jwks (with --auth-rules, --auth-issuer, --auth-audience: from files) every call is
decided at the gateway first: 401 without a valid bearer token where the rules want one,
403 when they forbid the call.

Server-streaming methods reply NDJSON, or server-sent events with
`Accept: text/event-stream`. Errors are JSON {\"code\", \"message\", \"details\"} with the
HTTP status of the gRPC code. `x-micro-timeout: 2s` (or `grpc-timeout`) sets a call's
deadline, at most --timeout. Allow-listed headers and `grpc-metadata-<key>` headers become
gRPC metadata; reply metadata comes back as `grpc-metadata-<key>`. See docs/api-gateway.md.

Once listening it prints `ready addr=<host:port>`; on SIGINT or SIGTERM it stops accepting,
lets requests in flight finish and exits 0. Logs go to stderr; RUST_LOG sets the level
(default info).";

/// Flags of `micro api`.
#[derive(Debug, clap::Args)]
pub(crate) struct ApiArgs {
    /// Address to listen on: host:port (port 0 picks a free port)
    #[arg(long, env = "MICRO_API_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: String,

    /// Registry to find services in: `local`, `local:///dir`, `memory`,
    /// `service://host:port`, `etcd://…` (builds with feature etcd)
    #[arg(
        long,
        env = "MICRO_REGISTRY",
        value_name = "URL",
        default_value = "local"
    )]
    registry: String,

    /// Broker `POST /event/{topic}` publishes to: `service` (the event service of
    /// `micro server`, found through the registry), `service://host:port`, `local`, or
    /// `off`
    #[arg(
        long,
        env = "MICRO_BROKER",
        value_name = "URL",
        default_value = "service"
    )]
    broker: String,

    #[command(flatten)]
    options: GatewayArgs,

    #[command(flatten)]
    auth: AuthArgs,
}

/// Enforcement at the gateway, with keys and rules from files (until the gateway follows
/// the auth service itself).
#[derive(Debug, Clone, clap::Args)]
struct AuthArgs {
    /// Enforce auth at the gateway: `service` follows the auth service micro.auth found
    /// in the registry (its keys, rules and revocations, polled every 2 s); `off` leaves it
    /// to the services. See also --auth-jwks
    #[arg(long, env = "MICRO_API_AUTH", value_name = "MODE", default_value = "off",
          value_parser = ["off", "service"], conflicts_with = "auth_jwks")]
    auth: String,

    /// Enforce auth with the public keys of this JWK Set file (`{"keys":[…]}`, as served
    /// at /.well-known/jwks.json); requires --auth-rules, --auth-issuer, --auth-audience
    #[arg(long, env = "MICRO_API_AUTH_JWKS", value_name = "FILE")]
    auth_jwks: Option<PathBuf>,

    /// The access rules: a JSON array of {id, scope, resource: {kind, name, endpoint},
    /// access: grant|deny, priority}
    #[arg(
        long,
        env = "MICRO_API_AUTH_RULES",
        value_name = "FILE",
        requires = "auth_jwks"
    )]
    auth_rules: Option<PathBuf>,

    /// The issuer (`iss`) tokens must name
    #[arg(
        long,
        env = "MICRO_API_AUTH_ISSUER",
        value_name = "URL",
        requires = "auth_jwks"
    )]
    auth_issuer: Option<String>,

    /// The audience (`aud`) tokens must name
    #[arg(
        long,
        env = "MICRO_API_AUTH_AUDIENCE",
        value_name = "NAME",
        requires = "auth_jwks"
    )]
    auth_audience: Option<String>,

    /// Whether GET /openapi.json is served without a token when auth is on
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    public_openapi: bool,
}

impl AuthArgs {
    /// The auth layer these flags describe, if any.
    fn layer(&self) -> Result<Option<AuthLayer>, BoxError> {
        let Some(jwks) = &self.auth_jwks else {
            return Ok(None);
        };
        let (Some(rules), Some(issuer), Some(audience)) =
            (&self.auth_rules, &self.auth_issuer, &self.auth_audience)
        else {
            return Err(
                "--auth-jwks needs --auth-rules, --auth-issuer and --auth-audience too".into(),
            );
        };
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))
        };
        let keys = KeySet::from_json(&read(jwks)?)
            .map_err(|err| format!("--auth-jwks {}: {err}", jwks.display()))?;
        let list: Vec<Rule> = serde_json::from_str(&read(rules)?).map_err(|err| {
            format!(
                "--auth-rules {}: not a JSON array of rules: {err}",
                rules.display()
            )
        })?;
        let rules =
            RuleSet::new(list).map_err(|err| format!("--auth-rules {}: {err}", rules.display()))?;
        let verifier = Arc::new(Verifier::new(keys, issuer.clone(), audience.clone()));
        tracing::info!("auth enforced with the keys of --auth-jwks and the rules of --auth-rules");
        Ok(Some(AuthLayer::new(
            micro::api::GATEWAY_NAME,
            verifier,
            rules,
        )))
    }
}

/// The gateway's settings, shared by `micro api` and `micro server`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GatewayArgs {
    /// Time limit of a call when the request sets none, and the most it may set
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,

    /// Largest request body in bytes (`K`/`M` suffixes: 4M = 4 MiB)
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = micro_core::size::parse)]
    max_body: usize,

    /// Largest request head (request line and headers) in bytes; larger get 431
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = micro_core::size::parse)]
    max_header_size: usize,

    /// How long a client may take to send its request head
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,

    /// How long a client may take to send its request body (then 408)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    body_read_timeout: Duration,

    /// Allow cross-origin requests from this origin (repeatable; `*` for any)
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,

    /// Another request header to pass on as gRPC metadata (repeatable; besides
    /// authorization, x-request-id, traceparent, tracestate and grpc-metadata-*)
    #[arg(long = "header", value_name = "NAME")]
    headers: Vec<String>,
}

impl GatewayArgs {
    /// The gateway these settings describe.
    pub(crate) fn gateway(
        &self,
        registry: SharedRegistry,
        broker: Option<SharedBroker>,
    ) -> Result<Gateway, BoxError> {
        Ok(self.builder(registry, broker)?.build()?)
    }

    /// The builder of [`gateway`](Self::gateway), to add more settings.
    fn builder(
        &self,
        registry: SharedRegistry,
        broker: Option<SharedBroker>,
    ) -> Result<micro::api::GatewayBuilder, BoxError> {
        let mut builder = Gateway::builder()
            .client(client(registry, self.timeout)?)
            .timeout(self.timeout)
            .max_body(self.max_body)
            .max_header_size(self.max_header_size)
            .header_read_timeout(self.header_read_timeout)
            .body_read_timeout(self.body_read_timeout);
        for origin in &self.cors_origins {
            builder = builder.cors_origin(origin.clone());
        }
        for header in &self.headers {
            builder = builder.allow_header(header.clone());
        }
        if let Some(broker) = broker {
            builder = builder.broker(broker);
        }
        Ok(builder)
    }
}

/// Runs the gateway until SIGINT or SIGTERM.
pub(crate) async fn run(args: ApiArgs) -> Result<(), BoxError> {
    let registry = registry::from_url(&args.registry)
        .map_err(|err| format!("--registry {}: {err}", args.registry))?;
    let broker = match args.broker.trim() {
        "off" | "none" => None,
        "" => Some(broker::from_url_with_registry("service", registry.clone())?),
        url => Some(
            broker::from_url_with_registry(url, registry.clone())
                .map_err(|err| format!("--broker {url}: {err}"))?,
        ),
    };
    let sync = match args.auth.auth.as_str() {
        "service" => {
            let client = AuthClient::from_client(&client(registry.clone(), args.options.timeout)?);
            let sync = AuthSync::start(client, micro::api::GATEWAY_NAME)
                .await
                .map_err(|status| {
                    format!(
                        "--auth service: cannot read keys and rules from {} in registry {}: {}",
                        platform_auth::SERVICE_NAME,
                        args.registry,
                        status.message()
                    )
                })?;
            tracing::info!(
                "auth enforced with the keys and rules of {}",
                platform_auth::SERVICE_NAME
            );
            Some(sync)
        }
        _ => None,
    };
    let auth = match &sync {
        Some(sync) => Some(sync.layer()),
        None => args.auth.layer()?,
    };
    let gateway = match auth {
        Some(auth) => args
            .options
            .builder(registry, broker)?
            .auth(auth)
            .public_openapi(args.auth.public_openapi)
            .build()?,
        None => args.options.gateway(registry, broker)?,
    };
    let listener = TcpListener::bind(&args.address)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.address))?;
    let address = listener.local_addr()?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    println!("ready addr={address}");
    tracing::info!(%address, "API gateway serving");
    gateway
        .serve_with_shutdown(listener, async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
        .await?;
    drop(sync);
    Ok(())
}

/// The gateway's client on `registry`: nodes registered with transport=tls are dialed with
/// TLS from MICRO_TLS_CA & co. (micro_core::tls::ClientTls::from_env).
fn client(registry: SharedRegistry, timeout: Duration) -> Result<Client, BoxError> {
    let mut builder = Client::builder().registry(registry).timeout(timeout);
    if let Some(tls) = micro_core::tls::ClientTls::from_env()? {
        builder = builder.tls(tls);
    }
    Ok(builder.build()?)
}
