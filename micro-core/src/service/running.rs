//! A started service: serving, registered, heartbeating; and its graceful shutdown.

use std::{future::Future, net::SocketAddr, time::Duration};

use tokio::{
    net::{TcpListener, UnixListener},
    signal::unix::{Signal, SignalKind, signal},
    sync::oneshot,
    task::JoinHandle,
};
use tower::Layer;

use super::{Service, ServiceError, grpc, health::HealthState, reflection, subscribe};
use crate::middleware::{conformance::Rules, stack::ServerStack};
use crate::registry::{Endpoint, Node, RegisterOptions, Service as Record, SharedRegistry};
use crate::transport::{self, ConnectionInfo, Listener};

/// A service that is serving and registered; made by [`Service::start`].
///
/// Dropping it without [`RunningService::shutdown`] stops heartbeats and the server
/// abruptly; the node then expires from the registry after its TTL.
#[derive(Debug)]
pub struct RunningService {
    record: Record,
    local_address: String,
    registry: SharedRegistry,
    health: HealthState,
    grace_period: Duration,
    shutdown_delay: Duration,
    stop: Option<oneshot::Sender<()>>,
    /// The accept loop and, owned by it, every connection: aborting it closes them all.
    server: JoinHandle<std::io::Result<()>>,
    heartbeat: JoinHandle<()>,
    heartbeat_stop: Option<oneshot::Sender<()>>,
    subscriptions: subscribe::Running,
    signals: Signals,
}

#[derive(Debug)]
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

pub(super) async fn start(service: Service) -> Result<RunningService, ServiceError> {
    // Signal handlers go in before anything is announced, so a SIGTERM that follows the
    // "ready" line is always handled gracefully.
    let signals = Signals::install()?;
    let Service {
        config,
        registry,
        node_id,
        mut routes,
        descriptors,
        file_descriptor_sets,
        layers,
        default_layers,
        broker,
        subscriptions,
        ..
    } = service;

    let health = HealthState::serving(descriptors.iter().map(|d| d.name));
    routes.add_service(health.service());
    reflection::add_reflection(&mut routes, &descriptors, &file_descriptor_sets)?;
    let routes = routes.routes();

    let address = config
        .address
        .clone()
        .unwrap_or_else(|| super::DEFAULT_ADDRESS.to_owned());
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let stack = ServerStack::new(
        default_layers,
        layers,
        Rules::new(descriptors.iter().copied(), config.message_budget.flatten()),
    )
    .layer(routes);
    let make_service = move |info: &ConnectionInfo| grpc::connection_service(stack.clone(), info);
    let (local_address, listener) = if let Some(path) = address.strip_prefix("unix:") {
        remove_stale_socket(path).await;
        let listener = UnixListener::bind(path).map_err(|source| ServiceError::Bind {
            address: address.clone(),
            source,
        })?;
        (address.clone(), Listener::Unix(listener))
    } else {
        let socket: SocketAddr = address.parse().map_err(|err: std::net::AddrParseError| {
            ServiceError::InvalidAddress {
                address: address.clone(),
                reason: format!("{err}; expected host:port or unix:/path"),
            }
        })?;
        let listener = TcpListener::bind(socket)
            .await
            .map_err(|source| ServiceError::Bind {
                address: address.clone(),
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| ServiceError::Bind {
            address: address.clone(),
            source,
        })?;
        (advertisable(bound), Listener::Tcp(listener))
    };
    let server = tokio::spawn(transport::run(
        listener,
        grpc::http(),
        config.connections.clone(),
        config.tls.clone(),
        make_service,
        shutdown,
    ));

    let advertised = config
        .advertise
        .clone()
        .unwrap_or_else(|| local_address.clone());
    let record = Record {
        name: config.name.clone(),
        version: config.version.clone(),
        metadata: config.metadata.clone(),
        endpoints: descriptors
            .iter()
            .flat_map(|d| {
                d.endpoints
                    .iter()
                    .map(|e| Endpoint::from_descriptor(d.name, e))
            })
            .collect(),
        nodes: vec![Node {
            id: node_id,
            address: advertised,
            metadata: config.node_metadata.clone(),
        }],
    };
    // Subscribed before registering: a service that is found also handles its topics.
    let subscriptions = match subscribe::start(broker.as_ref(), subscriptions).await {
        Ok(subscriptions) => subscriptions,
        Err(err) => {
            let _ = stop.send(());
            return Err(err.into());
        }
    };
    let ttl = config.ttl.unwrap_or(super::DEFAULT_REGISTER_TTL);
    let interval = config.interval.unwrap_or(super::DEFAULT_REGISTER_INTERVAL);
    let options = RegisterOptions { ttl };
    if let Err(err) = registry.register(&record, options).await {
        let _ = stop.send(());
        let mut subscriptions = subscriptions;
        subscriptions.abort();
        return Err(err.into());
    }
    tracing::info!(
        service = %record.name,
        node = %record.nodes[0].id,
        address = %record.nodes[0].address,
        registry = %registry.name(),
        tls = config.tls.is_some(),
        "service started"
    );
    let (heartbeat_stop, heartbeat_stopped) = oneshot::channel();
    let heartbeat = tokio::spawn(heartbeat(
        registry.clone(),
        record.clone(),
        options,
        interval,
        heartbeat_stopped,
    ));

    Ok(RunningService {
        record,
        local_address,
        registry,
        health,
        grace_period: config.grace_period,
        shutdown_delay: config.shutdown_delay,
        stop: Some(stop),
        server,
        heartbeat,
        heartbeat_stop: Some(heartbeat_stop),
        subscriptions,
        signals,
    })
}

// === impl RunningService ===

impl RunningService {
    /// The address the server listens on: `host:port` or `unix:/path`.
    pub fn local_address(&self) -> &str {
        &self.local_address
    }

    /// This node's registry record (its `nodes` holds this node alone).
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.node().id.as_str()
    }

    /// The address registered for clients.
    pub fn advertised_address(&self) -> &str {
        self.node().address.as_str()
    }

    fn node(&self) -> &Node {
        // `start` always builds the record with exactly one node.
        &self.record.nodes[0]
    }

    /// Reports SERVING or NOT_SERVING through `grpc.health.v1` for the whole server and
    /// every service on it. Clients that watch health stop picking a NOT_SERVING node.
    pub fn set_serving(&self, serving: bool) {
        self.health.set_all(serving);
    }

    /// Waits for SIGINT or SIGTERM, then shuts down gracefully. A second signal during
    /// the drain cuts it short.
    ///
    /// # Errors
    /// When the server failed before a signal came.
    pub async fn run_until_signal(mut self) -> Result<(), ServiceError> {
        let signal = tokio::select! {
            _ = self.signals.interrupt.recv() => "SIGINT",
            _ = self.signals.terminate.recv() => "SIGTERM",
            result = &mut self.server => {
                self.stop_heartbeat().await;
                self.subscriptions.abort();
                let _ = self.registry.deregister(&self.record).await;
                return match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(err)) => Err(ServiceError::Server(Box::new(err))),
                    Err(join) => Err(server_error(join)),
                };
            }
        };
        tracing::info!(service = %self.record.name, %signal, "shutting down");
        let mut signals = std::mem::replace(&mut self.signals, Signals::install()?);
        let again = async move {
            tokio::select! {
                _ = signals.interrupt.recv() => {}
                _ = signals.terminate.recv() => {}
            }
        };
        self.shutdown_until(again).await
    }

    /// Shuts down gracefully: health NOT_SERVING, deregister, stop the subscriptions (the
    /// handlers in progress finish within the grace period), give clients
    /// [`DEFAULT_SHUTDOWN_DELAY`](super::DEFAULT_SHUTDOWN_DELAY) to notice, stop accepting,
    /// end health watches and drain calls in flight for at most the grace period.
    ///
    /// # Errors
    /// When the server had failed.
    pub async fn shutdown(self) -> Result<(), ServiceError> {
        self.shutdown_until(std::future::pending()).await
    }

    async fn shutdown_until(
        mut self,
        cut_short: impl Future<Output = ()>,
    ) -> Result<(), ServiceError> {
        self.health.set_all(false);
        // The heartbeat must have finished before deregistering: a registration still in
        // flight would bring the record back for a whole TTL.
        self.stop_heartbeat().await;
        if let Err(err) = self.registry.deregister(&self.record).await {
            tracing::warn!(service = %self.record.name, error = %err, "deregistration failed; the node expires with its TTL");
        }
        self.subscriptions.stop(self.grace_period).await;
        tokio::time::sleep(self.shutdown_delay).await;
        self.health.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let drained = tokio::select! {
            drained = tokio::time::timeout(self.grace_period, &mut self.server) => drained,
            () = cut_short => {
                tracing::warn!(service = %self.record.name, "second signal: calls in flight were cut off");
                self.server.abort();
                return Ok(());
            }
        };
        match drained {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(err))) => Err(ServiceError::Server(Box::new(err))),
            Ok(Err(join)) => Err(server_error(join)),
            Err(_) => {
                tracing::warn!(
                    service = %self.record.name,
                    grace_period = ?self.grace_period,
                    "calls still in flight after the grace period were cut off"
                );
                self.server.abort();
                Ok(())
            }
        }
    }

    async fn stop_heartbeat(&mut self) {
        if let Some(stop) = self.heartbeat_stop.take() {
            let _ = stop.send(());
            let _ = (&mut self.heartbeat).await;
        }
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.server.abort();
        self.subscriptions.abort();
    }
}

impl Signals {
    fn install() -> Result<Self, ServiceError> {
        let install = |kind: SignalKind| signal(kind).map_err(ServiceError::Signals);
        Ok(Self {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
        })
    }
}

async fn heartbeat(
    registry: SharedRegistry,
    record: Record,
    options: RegisterOptions,
    every: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stop => return,
        }
        // Not raced against `stop`: a registration always runs to its end.
        if let Err(err) = registry.register(&record, options).await {
            tracing::warn!(service = %record.name, error = %err, "re-registration failed; retrying next interval");
        }
    }
}

/// Removes a socket file left by a crashed run, which would make bind fail; never a live
/// service's socket, nor anything that is not a socket.
async fn remove_stale_socket(path: &str) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !metadata.file_type().is_socket() {
        return;
    }
    if tokio::net::UnixStream::connect(path).await.is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// The address to register for a bound socket: a wildcard bind is registered as loopback,
/// the one address every local client can reach.
fn advertisable(bound: SocketAddr) -> String {
    if bound.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if bound.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        tracing::warn!(%bound, "bound to a wildcard address; advertising loopback (set an advertise address for other hosts)");
        return SocketAddr::new(loopback, bound.port()).to_string();
    }
    bound.to_string()
}

fn server_error(join: tokio::task::JoinError) -> ServiceError {
    ServiceError::Server(Box::new(join))
}
