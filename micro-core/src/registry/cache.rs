//! Watch-backed cache in front of any registry.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use tokio::{
    sync::{OnceCell, watch},
    time::Instant,
};

use super::{
    Event, EventKind, RegisterOptions, Registry, RegistryError, Service, SharedRegistry,
    WatchOptions, Watcher, common,
};
use crate::lock::lock;

/// First delay before re-watching a failed backend.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between attempts to re-watch a failed backend.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

type Records = watch::Receiver<Arc<Vec<Service>>>;

/// Serves lookups from memory, kept fresh by a watch on the wrapped registry.
///
/// The first lookup of a name reads it from the backend and starts one background watch
/// for it; later lookups never touch the backend. When the backend's watch fails, the cache
/// keeps serving the last known nodes and re-watches with exponential backoff (100 ms up to
/// 10 s, jittered). Each attempt whose watch cannot be started polls the service instead
/// and serves what that read returns (a failed read keeps the last known nodes), so a
/// backend that can be read but not watched still serves fresh nodes, at most one backoff
/// period late. Once a watch is up again, the cache re-reads the service once to catch up
/// on what it missed and then follows events.
///
/// Writes (`register`, `deregister`), `list_services` and `watch` go straight to the
/// backend. Clones share the cache; its background tasks stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct CacheRegistry {
    inner: SharedRegistry,
    shared: Arc<Shared>,
}

struct Shared {
    /// One cell per looked-up name; filled once, by the first lookup that succeeds.
    entries: Mutex<HashMap<String, Arc<OnceCell<Records>>>>,
    /// Never sent on: background tasks stop when it is dropped with the last clone.
    stop: watch::Sender<()>,
}

// === impl CacheRegistry ===

impl CacheRegistry {
    /// Wraps `inner`.
    pub fn new(inner: SharedRegistry) -> Self {
        let (stop, _) = watch::channel(());
        Self {
            inner,
            shared: Arc::new(Shared {
                entries: Mutex::new(HashMap::new()),
                stop,
            }),
        }
    }

    /// The wrapped registry.
    pub fn inner(&self) -> &SharedRegistry {
        &self.inner
    }

    /// A receiver that always holds the current records of `name` (one per version, as
    /// [`Registry::get_service`] returns them).
    ///
    /// The first call for a name reads it from the backend and starts watching it; later
    /// calls return a clone of the same receiver without touching the backend.
    ///
    /// # Errors
    /// When the first read of `name` from the backend fails. Nothing is cached then, and the
    /// next call tries again.
    pub async fn subscribe(&self, name: &str) -> Result<Records, RegistryError> {
        let cell = {
            let mut entries = lock(&self.shared.entries);
            entries.entry(name.to_owned()).or_default().clone()
        };
        if let Some(records) = cell.get() {
            return Ok(records.clone());
        }
        let records = cell.get_or_try_init(|| self.start(name)).await?;
        Ok(records.clone())
    }

    /// Reads `name` from the backend and starts its background watch.
    async fn start(&self, name: &str) -> Result<Records, RegistryError> {
        // Watch first, so no change falls between the read and the watch. Events already
        // reflected in the read are applied again, which converges to the same state.
        let watcher = match self.inner.watch(watch_options(name)).await {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::warn!(
                    registry = %self.inner.name(), service = %name, error = %err,
                    "cannot watch service; will retry and serve what was read meanwhile"
                );
                None
            }
        };
        let nodes = nodes_of(self.inner.get_service(name).await?);
        let (tx, rx) = watch::channel(Arc::new(common::group(nodes.values())));
        let task = Follow {
            inner: self.inner.clone(),
            name: name.to_owned(),
            nodes,
            tx,
        };
        tokio::spawn(task.run(watcher, self.shared.stop.subscribe()));
        Ok(rx)
    }
}

impl fmt::Debug for CacheRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self
            .shared
            .entries
            .lock()
            .map_or(0, |entries| entries.len());
        f.debug_struct("CacheRegistry")
            .field("inner", &self.inner)
            .field("cached", &cached)
            .finish()
    }
}

#[async_trait]
impl Registry for CacheRegistry {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn register(&self, s: &Service, o: RegisterOptions) -> Result<(), RegistryError> {
        self.inner.register(s, o).await
    }

    async fn deregister(&self, s: &Service) -> Result<(), RegistryError> {
        self.inner.deregister(s).await
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, RegistryError> {
        let records = self.subscribe(name).await?;
        let current = records.borrow().as_ref().clone();
        Ok(current)
    }

    async fn list_services(&self) -> Result<Vec<Service>, RegistryError> {
        self.inner.list_services().await
    }

    async fn watch(&self, o: WatchOptions) -> Result<Watcher, RegistryError> {
        self.inner.watch(o).await
    }
}

fn watch_options(name: &str) -> WatchOptions {
    WatchOptions {
        service: Some(name.to_owned()),
    }
}

/// One-node records by node id.
fn nodes_of(services: Vec<Service>) -> BTreeMap<String, Service> {
    let mut nodes = BTreeMap::new();
    for service in services {
        for node in &service.nodes {
            nodes.insert(node.id.clone(), common::single(&service, node));
        }
    }
    nodes
}

/// The background task that keeps one name fresh.
struct Follow {
    inner: SharedRegistry,
    name: String,
    nodes: BTreeMap<String, Service>,
    tx: watch::Sender<Arc<Vec<Service>>>,
}

/// Why [`Follow::reconnect`] failed.
enum Reconnect {
    /// The watch could not be started.
    Watch(RegistryError),
    /// The watch started, but the read after it failed.
    Read(RegistryError),
}

// === impl Follow ===

impl Follow {
    async fn run(mut self, mut watcher: Option<Watcher>, mut stop: watch::Receiver<()>) {
        let mut backoff = MIN_BACKOFF;
        let mut since = Instant::now();
        loop {
            if let Some(mut current) = watcher.take() {
                let reason = tokio::select! {
                    reason = self.follow(&mut current) => reason,
                    _ = stop.changed() => return,
                };
                tracing::warn!(
                    registry = %self.inner.name(), service = %self.name, %reason,
                    "registry watch lost; serving cached nodes while reconnecting"
                );
                // A watch that held for a while earns a fresh start; one that dies at once
                // keeps backing off.
                if since.elapsed() >= MAX_BACKOFF {
                    backoff = MIN_BACKOFF;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(jitter(backoff)) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            let attempt = tokio::select! {
                attempt = self.reconnect() => attempt,
                _ = stop.changed() => return,
            };
            match attempt {
                Ok(fresh) => {
                    tracing::info!(
                        registry = %self.inner.name(), service = %self.name,
                        "registry watch restored"
                    );
                    since = Instant::now();
                    watcher = Some(fresh);
                }
                Err(Reconnect::Watch(err)) => {
                    // Without a watch, poll: reads may work while watches do not.
                    let polled = tokio::select! {
                        polled = self.poll() => polled,
                        _ = stop.changed() => return,
                    };
                    match polled {
                        Ok(()) => tracing::warn!(
                            registry = %self.inner.name(), service = %self.name, error = %err,
                            "cannot re-watch service; polling it instead, retrying the watch in up to {:?}",
                            backoff
                        ),
                        Err(read_err) => tracing::warn!(
                            registry = %self.inner.name(), service = %self.name, error = %err,
                            read_error = %read_err,
                            "cannot re-watch or read service; serving cached nodes, retrying in up to {:?}",
                            backoff
                        ),
                    }
                }
                Err(Reconnect::Read(err)) => tracing::warn!(
                    registry = %self.inner.name(), service = %self.name, error = %err,
                    "cannot re-read service after re-watching; serving cached nodes, retrying in up to {:?}",
                    backoff
                ),
            }
        }
    }

    /// Reads the service and serves what the read returns.
    async fn poll(&mut self) -> Result<(), RegistryError> {
        let services = self.inner.get_service(&self.name).await?;
        self.nodes = nodes_of(services);
        self.publish();
        Ok(())
    }

    /// Applies events until the watch fails or ends; returns why it stopped.
    async fn follow(&mut self, watcher: &mut Watcher) -> String {
        loop {
            let event = match watcher.next().await {
                Some(Ok(event)) => event,
                Some(Err(err)) => return err.to_string(),
                None => return "watch ended".to_owned(),
            };
            self.apply(event);
            // Publish a burst of ready events once.
            let stopped = loop {
                match watcher.next().now_or_never() {
                    Some(Some(Ok(event))) => self.apply(event),
                    Some(Some(Err(err))) => break Some(err.to_string()),
                    Some(None) => break Some("watch ended".to_owned()),
                    None => break None,
                }
            };
            self.publish();
            if let Some(reason) = stopped {
                return reason;
            }
        }
    }

    /// Watches again, then re-reads the service to catch up on missed changes.
    async fn reconnect(&mut self) -> Result<Watcher, Reconnect> {
        let watcher = self
            .inner
            .watch(watch_options(&self.name))
            .await
            .map_err(Reconnect::Watch)?;
        self.poll().await.map_err(Reconnect::Read)?;
        Ok(watcher)
    }

    fn apply(&mut self, event: Event) {
        let Event { kind, service } = event;
        if service.name != self.name {
            return;
        }
        for node in &service.nodes {
            match kind {
                EventKind::Create | EventKind::Update => {
                    self.nodes
                        .insert(node.id.clone(), common::single(&service, node));
                }
                EventKind::Delete => {
                    self.nodes.remove(&node.id);
                }
            }
        }
    }

    fn publish(&self) {
        let grouped = common::group(self.nodes.values());
        self.tx.send_if_modified(|current| {
            if **current == grouped {
                return false;
            }
            *current = Arc::new(grouped);
            true
        });
    }
}

/// `delay` scaled by a random factor in [0.5, 1), so many caches do not retry in lockstep.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

#[cfg(test)]
mod tests;
