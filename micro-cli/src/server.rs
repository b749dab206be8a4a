//! `micro server`: the platform services in one process, on one gRPC port.

use std::{
    error::Error,
    path::{Path, PathBuf},
};

use micro_core::{
    Service,
    broker::{self, SharedBroker},
    registry::{self, SharedRegistry},
    store::{self, SharedStore},
    sync::{self as core_sync},
};
use micro_platform::{
    auth::{self as platform_auth, AuthOptions, AuthService},
    config::{self as platform_config, ConfigService},
    event::{self as platform_event, EventService},
    kv::{self, KvService},
    proto,
    registry::{self as platform_registry, RegistryService},
    sync::{self as platform_sync, SyncService},
};
use tokio::signal::unix::{SignalKind, signal};

use crate::{aliases::Aliases, dev_tls::DevTls};

type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// The address `micro server` listens on unless told otherwise.
pub(crate) const DEFAULT_ADDRESS: &str = "127.0.0.1:7700";

/// The name the server as a whole registers as (every platform service also registers
/// under its own name).
const SERVER_NAME: &str = "micro.server";

pub(crate) const LONG_ABOUT: &str = "\
Runs the micro platform in one process, on one gRPC port (default 127.0.0.1:7700):

  micro.registry  the registry service (micro.registry.v1.Registry) over the server's
                  registry (--registry, default `local`): clients elsewhere use it with
                  MICRO_REGISTRY=service://<address>
  micro.kv        the kv service (micro.kv.v1.Kv) over the store (--store, default a store
                  under the data directory): clients use it with MICRO_STORE=service
                  (found through the registry) or MICRO_STORE=service://<address>
  micro.config    the config service (micro.config.v1.Config): values per environment,
                  kept in the same store (database `config`, one table per environment);
                  clients read it with micro_platform::config::ConfigClient as a config
                  source, which follows changes
  micro.sync      the sync service (micro.sync.v1.Sync): locks and leader election over
                  the sync backend (--sync, default `memory`); clients use it with
                  MICRO_SYNC=service or MICRO_SYNC=service://<address>. A lock or
                  leadership held through it is released when its holder's call ends
  micro.event     the event service (micro.event.v1.Event): publish/subscribe over the
                  broker (--broker, default `local`: the local broker on the server's
                  registry, so local services' subscriptions and the service's meet);
                  clients use it with MICRO_BROKER=service or
                  MICRO_BROKER=service://<address>. Topics as micro's broker (dot-separated
                  A-Z a-z 0-9 _ - tokens), bodies up to 1 MiB, at most once delivery
  micro.auth      the auth service (micro.auth.v1.Auth): accounts, access tokens (EdDSA
                  JWTs) and refresh tokens, the JWK Set and the access rules, kept in its
                  own store (--auth-store, default a store under the data directory, never
                  the kv service's, so kv clients cannot read secrets or keys). Every
                  platform service of the server enforces its rules (one AuthLayer: the
                  resource is the service's registered name, e.g. micro.kv; health is
                  public). On a first start (empty auth store) it seeds the service account
                  `admin` (scope admin; secret from MICRO_AUTH_ADMIN_SECRET, else generated
                  into <data-dir>/auth/admin.secret, mode 0600, printed as `auth admin
                  id=admin secret_file=<path>`) and the rules: Auth.Token and Auth.Jwks
                  public (priority 100), all of micro.auth for scope admin (99), the rest of
                  micro.auth denied (98), and `default` granting everyone everything else
                  (0): delete it (micro auth rules delete default) to require tokens
  grpc.health.v1.Health and gRPC reflection (v1 and v1alpha), for grpcurl and friends

With them, on its own port (--api-address, default 127.0.0.1:8080; `off` disables it), the
HTTP API gateway of `micro api`: every service in the server's registry as JSON over HTTP
(POST /{service}/{Service}/{Method}, GET /openapi.json, POST /event/{topic} on the
server's broker); see `micro api --help`.

Each service registers under its own name in the server's registry, and the server as a
whole as `micro.server`. On start it prints one line per service, `api addr=<address>`
(unless the gateway is off) and then `ready addr=<address> node=<id>`; on SIGINT or SIGTERM it ends watch streams, event
subscriptions and sync holdings (releasing the locks and leaderships), reports
NOT_SERVING, deregisters, drains calls in flight and exits 0.

Registration follows micro's service settings: MICRO_SERVER_ADVERTISE (address to
register instead of the bound one), MICRO_REGISTER_TTL and MICRO_REGISTER_INTERVAL (the
`micro.server` record), MICRO_MESSAGE_BUDGET (bytes of large request messages buffered at
once, default 64M; `off` for no limit). Logs go to stderr; RUST_LOG sets the level (default info).";

/// Flags of `micro server`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServerArgs {
    /// Address to listen on: host:port (port 0 picks a free port)
    #[arg(long, env = "MICRO_SERVER_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: String,

    /// Directory for the server's data [default: $XDG_DATA_HOME/micro, else
    /// ~/.local/share/micro]
    #[arg(long, env = "MICRO_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Store behind the kv service: `memory`, or another store URL [default: the
    /// persistent store under the data directory]
    #[arg(long, env = "MICRO_STORE", value_name = "URL")]
    store: Option<String>,

    /// Registry the server keeps and serves: `local`, `local:///dir` or `memory`
    #[arg(
        long,
        env = "MICRO_REGISTRY",
        value_name = "URL",
        default_value = "local"
    )]
    registry: String,

    /// Sync backend behind the sync service: `memory`, or another sync URL (`etcd://…`
    /// in builds with the etcd feature)
    #[arg(long, env = "MICRO_SYNC", value_name = "URL", default_value = "memory")]
    sync: String,

    /// Broker behind the event service: `local` (the local broker on the server's
    /// registry), `memory`, or `nats://host:port[,host:port…]` (NATS core pub/sub; builds
    /// with feature `nats`)
    #[arg(
        long,
        env = "MICRO_BROKER",
        value_name = "URL",
        default_value = "local"
    )]
    broker: String,

    /// Store of the auth service: `memory`, or another store URL [default: the persistent
    /// store `auth/auth.redb` under the data directory]
    #[arg(long, env = "MICRO_AUTH_STORE", value_name = "URL")]
    auth_store: Option<String>,

    /// Address of the HTTP API gateway: host:port (port 0 picks a free port), or `off`
    #[arg(
        long,
        env = "MICRO_API_ADDRESS",
        value_name = "ADDRESS",
        default_value = crate::api::DEFAULT_ADDRESS
    )]
    api_address: String,

    /// Development only, never in production: serve TLS with a development CA and node
    /// certificate (localhost, 127.0.0.1, ::1) made under <data-dir>/tls on first start
    /// and reused afterwards; clients trust <data-dir>/tls/ca.crt (MICRO_TLS_CA)
    #[arg(long)]
    dev_tls: bool,
}

/// Runs the server until SIGINT or SIGTERM.
pub(crate) async fn run(args: ServerArgs) -> Result<(), BoxError> {
    for (flag, url) in [
        ("--store", args.store.as_deref()),
        ("--registry", Some(&args.registry)),
        ("--sync", Some(&args.sync)),
        ("--broker", Some(&args.broker)),
    ] {
        if let Some(url) = url
            && (url.trim() == "service" || url.trim().starts_with("service://"))
        {
            return Err(format!(
                "{flag} {url:?}: the server's own backends cannot be platform services \
                 (MICRO_STORE / MICRO_REGISTRY / MICRO_SYNC / MICRO_BROKER set for clients?); use local or memory, or \
                 pass {flag} explicitly"
            )
            .into());
        }
    }
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    std::fs::create_dir_all(&data_dir)
        .map_err(|err| format!("cannot create data directory {}: {err}", data_dir.display()))?;

    let dev_tls = args
        .dev_tls
        .then(|| DevTls::ensure(&data_dir))
        .transpose()?;
    let registry: SharedRegistry = registry::from_url(&args.registry)?;
    // An empty MICRO_STORE counts as unset.
    let (store, store_note) = match args.store.as_deref().filter(|url| !url.trim().is_empty()) {
        Some(url) => (store::from_url(url)?, String::new()),
        None => default_store(&data_dir)?,
    };
    let store_name = store.name().to_owned();
    let sync = core_sync::from_url(&args.sync).await?;
    let sync_name = sync.name().to_owned();
    // An empty MICRO_BROKER counts as `local`.
    let broker: SharedBroker = open_broker(&args.broker, registry.clone()).await?;
    let broker_name = broker.name().to_owned();

    let (auth, auth_note, admin_line) = start_auth(args.auth_store.as_deref(), &data_dir).await?;

    let registry_service = RegistryService::new(registry.clone());
    let config_service = ConfigService::new(store.clone());
    let sync_service = SyncService::new(sync);
    let event_service = EventService::new(broker.clone());
    let mut builder = Service::builder(SERVER_NAME)
        .version(env!("CARGO_PKG_VERSION"))
        .address(args.address)
        .registry(registry.clone())
        .layer(auth_layer(&auth))
        .add_service(registry_service.clone().into_server())
        .add_service(KvService::new(store).into_server())
        .add_service(config_service.clone().into_server())
        .add_service(sync_service.clone().into_server())
        .add_service(event_service.clone().into_server())
        .add_service(auth.clone().into_server());
    if let Some(dev_tls) = &dev_tls {
        builder = builder.tls(dev_tls.server()?);
    }
    let running = builder.build()?.start().await?;
    // Installed before the ready line: a SIGTERM after it always deregisters the names.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;

    let address = running.advertised_address().to_owned();
    let records = vec![
        Aliases::record(
            &running,
            platform_registry::SERVICE_NAME,
            &proto::registry::v1::REGISTRY_DESCRIPTOR,
        ),
        Aliases::record(&running, kv::SERVICE_NAME, &proto::kv::v1::KV_DESCRIPTOR),
        Aliases::record(
            &running,
            platform_config::SERVICE_NAME,
            &proto::config::v1::CONFIG_DESCRIPTOR,
        ),
        Aliases::record(
            &running,
            platform_sync::SERVICE_NAME,
            &proto::sync::v1::SYNC_DESCRIPTOR,
        ),
        Aliases::record(
            &running,
            platform_event::SERVICE_NAME,
            &proto::event::v1::EVENT_DESCRIPTOR,
        ),
        Aliases::record(
            &running,
            platform_auth::SERVICE_NAME,
            &proto::auth::v1::AUTH_DESCRIPTOR,
        ),
    ];
    let mut aliases = match Aliases::start(registry.clone(), records).await {
        Ok(aliases) => aliases,
        Err(err) => {
            let _ = running.shutdown().await;
            return Err(err.into());
        }
    };

    // The gateway, on the server's own registry and broker: bound before the ready line,
    // so a busy port fails the start.
    let gateway_auth = auth.layer(micro::api::GATEWAY_NAME);
    // The gateway dials the server's own services: with the development CA, else with
    // MICRO_TLS_CA & co. as the server's own client does.
    let api_tls = match &dev_tls {
        Some(dev_tls) => Some(dev_tls.client()?),
        None => micro_core::tls::ClientTls::from_env()?,
    };
    let api = match start_api(
        &args.api_address,
        registry.clone(),
        broker,
        gateway_auth,
        api_tls,
    )
    .await
    {
        Ok(api) => api,
        Err(err) => {
            aliases.stop().await;
            let _ = running.shutdown().await;
            return Err(err);
        }
    };

    println!(
        "micro server {} data_dir={}",
        env!("CARGO_PKG_VERSION"),
        data_dir.display()
    );
    println!(
        "service name={} addr={address} registry={}",
        platform_registry::SERVICE_NAME,
        registry.name()
    );
    println!(
        "service name={} addr={address} store={store_name}{store_note}",
        kv::SERVICE_NAME
    );
    println!(
        "service name={} addr={address} store={store_name} database={}",
        platform_config::SERVICE_NAME,
        platform_config::DATABASE
    );
    println!(
        "service name={} addr={address} sync={sync_name}",
        platform_sync::SERVICE_NAME
    );
    println!(
        "service name={} addr={address} broker={broker_name}",
        platform_event::SERVICE_NAME
    );
    println!(
        "service name={} addr={address}{auth_note}",
        platform_auth::SERVICE_NAME
    );
    println!("service name=grpc.health.v1.Health addr={address}");
    println!("service name=grpc.reflection.v1.ServerReflection addr={address}");
    if let Some(api) = &api {
        println!("api addr={}", api.address);
    }
    if let Some(line) = admin_line {
        println!("{line}");
    }
    if let Some(dev_tls) = &dev_tls {
        tracing::warn!("--dev-tls: development certificates, never for production");
        println!(
            "tls ca={} cert={} key={} created={}",
            dev_tls.ca.display(),
            dev_tls.cert.display(),
            dev_tls.key.display(),
            dev_tls.created
        );
    }
    println!("ready addr={address} node={}", running.node_id());

    let run = running.run_until_signal();
    tokio::pin!(run);
    // The service itself handles the signal too (NOT_SERVING, deregister, drain); here the
    // platform names are deregistered, and registry and config watches, event
    // subscriptions, sync holdings and observations ended (the holdings released), so the
    // drain does not wait for streams that never end.
    let close_streams = || {
        registry_service.close_watches();
        config_service.close_watches();
        sync_service.close();
        event_service.close();
    };
    let result = tokio::select! {
        result = &mut run => result,
        _ = interrupt.recv() => { close_streams(); aliases.stop().await; run.await }
        _ = terminate.recv() => { close_streams(); aliases.stop().await; run.await }
    };
    aliases.stop().await;
    if let Some(api) = api {
        api.stop().await;
    }
    result?;
    Ok(())
}

/// The auth service on `--auth-store` (default `<data_dir>/auth/auth.redb`), seeded on a
/// first start; the note for its start-up line and the admin's line.
async fn start_auth(
    url: Option<&str>,
    data_dir: &Path,
) -> Result<(AuthService, String, Option<String>), BoxError> {
    let dir = data_dir.join("auth");
    let (store, note): (SharedStore, String) = match url.filter(|url| !url.trim().is_empty()) {
        Some(url) => {
            let store = store::from_url(url)?;
            let note = format!(" store={}", store.name());
            (store, note)
        }
        None => {
            std::fs::create_dir_all(&dir)
                .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
            let path = dir.join("auth.redb");
            let store = store::FileStore::open(&path)?;
            (
                std::sync::Arc::new(store),
                format!(" store=file at {}", path.display()),
            )
        }
    };
    let auth = AuthService::new(store, AuthOptions::new()).await?;
    let from_env = std::env::var("MICRO_AUTH_ADMIN_SECRET")
        .ok()
        .filter(|secret| !secret.is_empty());
    let secret_file = dir.join("admin.secret");
    if let Some(secret) = auth.seed(from_env.clone()).await? {
        tracing::info!("auth: first start, seeded the admin account and the default rules");
        if from_env.is_none() {
            write_secret(&secret_file, &secret)?;
        }
    }
    let admin_line = if from_env.is_some() {
        Some(format!(
            "auth admin id={} secret_env=MICRO_AUTH_ADMIN_SECRET",
            platform_auth::ADMIN_ID
        ))
    } else if secret_file.exists() {
        Some(format!(
            "auth admin id={} secret_file={}",
            platform_auth::ADMIN_ID,
            secret_file.display()
        ))
    } else {
        None
    };
    Ok((auth, note, admin_line))
}

/// Writes the admin secret, readable by the owner only (mode 0600).
fn write_secret(path: &Path, secret: &str) -> Result<(), BoxError> {
    use std::{
        io::Write as _, os::unix::fs::OpenOptionsExt as _, os::unix::fs::PermissionsExt as _,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    // An older file keeps its mode on open: set it again.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}

/// One layer enforcing the auth rules on every platform service of the server, each under
/// its registered name (`/micro.kv.v1.Kv/Get` is the resource `micro.kv`, `Kv.Get`).
fn auth_layer(auth: &AuthService) -> micro_core::auth::AuthLayer {
    [
        (
            &proto::registry::v1::REGISTRY_DESCRIPTOR,
            platform_registry::SERVICE_NAME,
        ),
        (&proto::kv::v1::KV_DESCRIPTOR, kv::SERVICE_NAME),
        (
            &proto::config::v1::CONFIG_DESCRIPTOR,
            platform_config::SERVICE_NAME,
        ),
        (
            &proto::sync::v1::SYNC_DESCRIPTOR,
            platform_sync::SERVICE_NAME,
        ),
        (
            &proto::event::v1::EVENT_DESCRIPTOR,
            platform_event::SERVICE_NAME,
        ),
        (
            &proto::auth::v1::AUTH_DESCRIPTOR,
            platform_auth::SERVICE_NAME,
        ),
    ]
    .into_iter()
    .fold(auth.layer(SERVER_NAME), |layer, (descriptor, name)| {
        layer.service_name(descriptor.name, name)
    })
}

/// The gateway running inside the server.
struct Api {
    address: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Api {
    /// Stops accepting and waits for requests in flight.
    async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "API gateway failed"),
            Err(err) => tracing::warn!(error = %err, "API gateway task failed"),
        }
    }
}

/// Starts the gateway on `address`, unless it is `off`, enforcing `auth`.
async fn start_api(
    address: &str,
    registry: SharedRegistry,
    broker: SharedBroker,
    auth: micro_core::auth::AuthLayer,
    tls: Option<micro_core::tls::ClientTls>,
) -> Result<Option<Api>, BoxError> {
    let address = address.trim();
    if address.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    // The rules of the server's auth service, decided at the gateway too (with the
    // seeded rules everything but micro.auth's management stays open).
    let mut gateway = micro::api::Gateway::builder().broker(broker).auth(auth);
    gateway = match tls {
        Some(tls) => gateway.client(
            micro_core::Client::builder()
                .registry(registry)
                .timeout(micro::api::DEFAULT_TIMEOUT)
                .tls(tls)
                .build()?,
        ),
        None => gateway.registry(registry),
    };
    let gateway = gateway.build()?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|err| format!("--api-address {address}: cannot listen: {err}"))?;
    let bound = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gateway.serve_with_shutdown(listener, async move {
        let _ = stopped.await;
    }));
    Ok(Some(Api {
        address: bound,
        stop,
        task,
    }))
}

/// `$XDG_DATA_HOME/micro`, else `~/.local/share/micro`.
fn default_data_dir() -> Result<PathBuf, BoxError> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from)
        && dir.is_absolute()
    {
        return Ok(dir.join("micro"));
    }
    match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/micro")),
        None => Err("neither XDG_DATA_HOME nor HOME is set: pass --data-dir".into()),
    }
}

/// The store the kv service keeps when `--store` is not given: the single place that
/// picks it, with a note for the start-up line.
fn default_store(data_dir: &Path) -> Result<(SharedStore, String), BoxError> {
    let path = data_dir.join("kv.redb");
    let store = store::FileStore::open(&path)?;
    Ok((
        std::sync::Arc::new(store),
        format!(" at {}", path.display()),
    ))
}

/// The event service's broker: `nats://…` connects to NATS (feature `nats`), anything else
/// goes through micro-core's broker URLs.
async fn open_broker(url: &str, registry: SharedRegistry) -> Result<SharedBroker, BoxError> {
    if url.trim().starts_with("nats://") {
        #[cfg(feature = "nats")]
        {
            let broker = micro::plugins::nats::NatsBroker::connect(url.trim()).await?;
            return Ok(std::sync::Arc::new(broker));
        }
        #[cfg(not(feature = "nats"))]
        return Err(format!(
            "--broker {url}: this build has no NATS support; build micro with feature `nats` \
             (cargo run -p micro-cli --features nats -- server --broker {url})"
        )
        .into());
    }
    Ok(broker::from_url_with_registry(url, registry)?)
}
