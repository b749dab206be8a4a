//! In-process registry.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};

use async_trait::async_trait;
use futures_util::{StreamExt, stream};
use tokio::{
    sync::{Notify, broadcast},
    time::Instant,
};

use super::{
    Event, EventKind, RegisterOptions, Registry, RegistryError, Service, WatchOptions, Watcher,
    common,
};
use crate::lock::lock;

const NAME: &str = "memory";

/// How many events a watcher may fall behind before its stream ends with an error.
const WATCH_BUFFER: usize = 1024;

/// Stands in for "never" when `now + ttl` overflows.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A registry that lives in this process' memory. Clones share the same records.
///
/// Only clones share: every [`MemoryRegistry::new`], and every
/// [`from_url("memory")`](super::from_url) or `MICRO_REGISTRY=memory`
/// [`from_env`](super::from_env), is a separate, empty registry. For a service and a
/// client in one process to find each other, create one registry and give the same
/// [`SharedRegistry`](super::SharedRegistry) to both (for example
/// [`ServiceBuilder::registry`](crate::ServiceBuilder::registry) and
/// [`Client::new`](crate::Client::new)); [`Service::client`](crate::Service::client)
/// already shares the service's registry. A `Client::from_env` next to a service that
/// opened its own memory registry would see nothing.
///
/// Time is [`tokio::time`], so tests can drive TTLs with `tokio::time::pause()` and
/// `advance()`. Expired nodes disappear from reads at once; watchers get their `Delete`
/// events from a sweeper task that runs while anyone watches.
#[derive(Clone)]
pub struct MemoryRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    /// Wakes the sweeper when the earliest expiry may have moved, or when `Inner` is dropped.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct State {
    /// (service name, node id) → record with exactly that node.
    nodes: BTreeMap<(String, String), Entry>,
    sweeper_running: bool,
}

struct Entry {
    record: Service,
    expires_at: Instant,
}

// === impl MemoryRegistry ===

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                events,
                wake: Arc::new(Notify::new()),
            }),
        }
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("MemoryRegistry")
            .field("nodes", &state.nodes.len())
            .field("watchers", &self.inner.events.receiver_count())
            .finish()
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    fn name(&self) -> &str {
        NAME
    }

    async fn register(
        &self,
        service: &Service,
        options: RegisterOptions,
    ) -> Result<(), RegistryError> {
        common::validate_register(service)?;
        let now = Instant::now();
        let expires_at = now
            .checked_add(options.ttl)
            .unwrap_or_else(|| now + FAR_FUTURE);
        let mut state = self.inner.lock();
        self.inner.purge_expired(&mut state, now);
        for node in &service.nodes {
            let record = common::single(service, node);
            let key = (service.name.clone(), node.id.clone());
            let kind = match state.nodes.get_mut(&key) {
                Some(entry) if entry.record == record => {
                    entry.expires_at = expires_at;
                    None
                }
                Some(entry) => {
                    entry.record = record.clone();
                    entry.expires_at = expires_at;
                    Some(EventKind::Update)
                }
                None => {
                    state.nodes.insert(
                        key,
                        Entry {
                            record: record.clone(),
                            expires_at,
                        },
                    );
                    Some(EventKind::Create)
                }
            };
            if let Some(kind) = kind {
                self.inner.emit(kind, record);
            }
        }
        if state.sweeper_running {
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<(), RegistryError> {
        common::validate_deregister(service)?;
        let mut state = self.inner.lock();
        self.inner.purge_expired(&mut state, Instant::now());
        for node in &service.nodes {
            if let Some(entry) = state.nodes.remove(&(service.name.clone(), node.id.clone())) {
                self.inner.emit(EventKind::Delete, entry.record);
            }
        }
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, RegistryError> {
        let mut state = self.inner.lock();
        self.inner.purge_expired(&mut state, Instant::now());
        let records = state
            .nodes
            .range((name.to_owned(), String::new())..)
            .take_while(|((n, _), _)| n == name)
            .map(|(_, entry)| &entry.record);
        Ok(common::group(records))
    }

    async fn list_services(&self) -> Result<Vec<Service>, RegistryError> {
        let mut state = self.inner.lock();
        self.inner.purge_expired(&mut state, Instant::now());
        Ok(common::group(state.nodes.values().map(|e| &e.record)))
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, RegistryError> {
        let receiver = {
            let mut state = self.inner.lock();
            let receiver = self.inner.events.subscribe();
            if !state.sweeper_running {
                state.sweeper_running = true;
                tokio::spawn(sweep(Arc::downgrade(&self.inner), self.inner.wake.clone()));
            }
            receiver
        };
        let filter = options.service;
        let events = stream::unfold(Some(receiver), move |receiver| {
            let filter = filter.clone();
            async move {
                let mut receiver = receiver?;
                loop {
                    match receiver.recv().await {
                        Ok(event) => {
                            if filter
                                .as_ref()
                                .is_none_or(|name| *name == event.service.name)
                            {
                                return Some((Ok(event), Some(receiver)));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            let err = RegistryError::backend_msg(
                                NAME,
                                format!(
                                    "watcher fell behind and missed {missed} events; \
                                     watch again and re-read the services"
                                ),
                            );
                            return Some((Err(err), None));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        // Wakes the sweeper when this watcher goes away, so it can stop when it was the last.
        let guard = WakeOnDrop(self.inner.wake.clone());
        Ok(Box::pin(events.map(move |event| {
            let _ = &guard;
            event
        })))
    }
}

/// Notifies on drop.
struct WakeOnDrop(Arc<Notify>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

// === impl Inner ===

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in a way that
        // matters more than losing the registry, so keep going.
        lock(&self.state)
    }

    fn emit(&self, kind: EventKind, service: Service) {
        // No receivers is fine: nobody watches.
        let _ = self.events.send(Event { kind, service });
    }

    /// Removes expired nodes, emitting a `Delete` for each; returns the next expiry.
    fn purge_expired(&self, state: &mut State, now: Instant) -> Option<Instant> {
        let mut next = None::<Instant>;
        let mut expired = Vec::new();
        for (key, entry) in &state.nodes {
            if entry.expires_at <= now {
                expired.push(key.clone());
            } else {
                next = Some(next.map_or(entry.expires_at, |n| n.min(entry.expires_at)));
            }
        }
        for key in expired {
            if let Some(entry) = state.nodes.remove(&key) {
                tracing::debug!(service = %key.0, node = %key.1, "registry node expired");
                self.emit(EventKind::Delete, entry.record);
            }
        }
        next
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets a sweeper waiting for work notice that the registry is gone.
        self.wake.notify_one();
    }
}

/// Emits `Delete` events for expired nodes while anyone watches.
async fn sweep(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else { return };
            let mut state = inner.lock();
            if inner.events.receiver_count() == 0 {
                state.sweeper_running = false;
                return;
            }
            inner.purge_expired(&mut state, Instant::now())
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests;
