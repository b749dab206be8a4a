//! Watching the local registry: filesystem notifications plus expiry deadlines trigger
//! rescans, and the differences between snapshots become events.
//!
//! All watches on one [`LocalRegistry`](super::LocalRegistry) (and its clones) share one
//! filesystem watcher, a [`Hub`]: one inotify instance and one notify thread, however many
//! services are watched. The per-user limit on inotify instances
//! (`fs.inotify.max_user_instances`, often 128) counts every process of the user, so one
//! instance per watch would run out after a few dozen cached services. The hub broadcasts
//! which service directory changed; each watch's diff task rescans what concerns it.

use std::{
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Weak},
    time::Duration,
};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{
    broadcast::{self, error::RecvError, error::TryRecvError},
    mpsc,
};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    LocalInner,
    store::{self, Snapshot},
};
use crate::lock::lock;
use crate::registry::{Event, EventKind, RegistryError, Watcher};

/// Events buffered for a slow consumer before the diff loop waits for it.
const EVENT_BUFFER: usize = 256;

/// Changes the hub buffers for a slow diff task; one that falls further behind rescans
/// everything.
const CHANGE_BUFFER: usize = 1024;

/// Added to expiry deadlines so the rescan reliably sees the record as expired.
const EXPIRY_SLACK: Duration = Duration::from_millis(5);

/// What the filesystem watcher saw, as broadcast to every watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// Something in this service's directory changed.
    Service(String),
    /// Unsure what changed (an overflowed or failed notification): rescan everything.
    All,
}

/// The one filesystem watcher of a registry, shared by its watches.
///
/// [`LocalInner`] keeps only a weak reference, and each watch's diff task a strong one: the
/// hub is created by the first watch and dropped (closing its inotify instance and ending
/// its notify thread) when the last watch ends.
pub(super) struct Hub {
    changes: broadcast::Sender<Change>,
    /// Dropping it stops the notify thread, which drops its clone of `changes`.
    _fs_watcher: notify::RecommendedWatcher,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("watches", &self.changes.receiver_count())
            .finish_non_exhaustive()
    }
}

// === impl Hub ===

impl Hub {
    /// The registry's hub, started if no watch holds one.
    pub(super) fn get(inner: &LocalInner) -> Result<Arc<Self>, RegistryError> {
        let mut slot = lock(&inner.hub);
        if let Some(hub) = slot.upgrade() {
            return Ok(hub);
        }
        let hub = Arc::new(Self::start(inner)?);
        *slot = Arc::downgrade(&hub);
        Ok(hub)
    }

    fn start(inner: &LocalInner) -> Result<Self, RegistryError> {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        let root = inner.dir.clone();
        let sender = changes.clone();
        // A symlink in the directory must not pull the whole tree it points to into the
        // watch (a link to `/` would add a watch per directory of the machine).
        let config = notify::Config::default().with_follow_symlinks(false);
        let mut fs_watcher = notify::RecommendedWatcher::new(
            move |res: notify::Result<notify::Event>| {
                on_fs_event(&root, &sender, res);
            },
            config,
        )
        .map_err(|e| inner.error(format!("cannot watch {}", inner.dir.display()), e))?;
        fs_watcher
            .watch(&inner.dir, RecursiveMode::Recursive)
            .map_err(|e| inner.error(format!("cannot watch {}", inner.dir.display()), e))?;
        Ok(Self {
            changes,
            _fs_watcher: fs_watcher,
        })
    }
}

#[cfg(test)]
impl Hub {
    /// What the filesystem watcher reports from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

/// The hub's slot in [`LocalInner`]: empty until the first watch, and again once every
/// watch has ended.
pub(super) type HubSlot = std::sync::Mutex<Weak<Hub>>;

/// Which services need a rescan, gathered from the hub's changes.
#[derive(Debug, Default)]
struct Dirty {
    all: bool,
    services: BTreeSet<String>,
}

impl Dirty {
    /// Adds a change; a diff task that lagged behind the hub rescans everything.
    fn add(
        &mut self,
        change: Result<Change, RecvError>,
        registry: &str,
    ) -> Result<(), RegistryError> {
        match change {
            Ok(Change::Service(name)) => {
                self.services.insert(name);
            }
            Ok(Change::All) | Err(RecvError::Lagged(_)) => self.all = true,
            // The task holds the hub, and the hub a sender: not expected.
            Err(RecvError::Closed) => {
                return Err(RegistryError::backend_msg(
                    registry,
                    "the filesystem watcher stopped",
                ));
            }
        }
        Ok(())
    }
}

/// What a rescan covers.
enum Scope {
    All,
    Services(BTreeSet<String>),
}

/// Starts watching `inner.dir`; only `filter` when given.
pub(super) async fn start(
    inner: Arc<LocalInner>,
    filter: Option<String>,
) -> Result<Watcher, RegistryError> {
    // Subscribe before the first snapshot, so no change falls between the two.
    let hub = Hub::get(&inner)?;
    let mut changes = hub.changes.subscribe();

    let initial = match &filter {
        None => Scope::All,
        Some(name) => Scope::Services(BTreeSet::from([name.clone()])),
    };
    let mut snapshot = Snapshot::new();
    // Events are dropped: the watch reports changes from now on.
    rescan(&inner, &mut snapshot, initial).await?;

    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    tokio::spawn(async move {
        // Held by the task: the last watch to end drops the hub.
        let _hub = hub;
        if let Err(err) = run(&inner, filter, &mut changes, snapshot, &tx).await {
            // A file I/O task is only cancelled when the runtime shuts down (nothing aborts
            // them): nothing failed, and this task is about to be dropped with the runtime.
            // Wait for that instead of ending the stream, so the watcher does not report a
            // lost watch on the way out.
            let cancelled = std::error::Error::source(&err)
                .and_then(|source| source.downcast_ref::<tokio::task::JoinError>())
                .is_some_and(tokio::task::JoinError::is_cancelled);
            if cancelled {
                tracing::debug!(registry = %inner.name, "local registry watch: runtime shutting down");
                std::future::pending::<()>().await;
            }
            tracing::warn!(registry = %inner.name, error = %err, "local registry watch failed");
            let _ = tx.send(Err(err)).await;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Runs on notify's thread: tells every watch what needs a rescan.
fn on_fs_event(
    root: &Path,
    changes: &broadcast::Sender<Change>,
    res: notify::Result<notify::Event>,
) {
    let mut dirty = BTreeSet::new();
    let mut all = false;
    match res {
        // Opening or reading a file changes nothing, and every rescan opens the records:
        // reacting to those would make each rescan trigger the next one, in this process
        // and in every other one watching the directory.
        Ok(event) if !changes_content(&event.kind) => return,
        Ok(event) if !event.need_rescan() => {
            for path in &event.paths {
                match service_of(root, path) {
                    Some(Some(name)) => {
                        dirty.insert(name);
                    }
                    Some(None) => {}
                    None => all = true,
                }
            }
        }
        Ok(_) => all = true,
        Err(e) => {
            tracing::debug!(error = %e, "local registry watch error, rescanning");
            all = true;
        }
    }
    // Sending fails only while no watch is subscribed, when nothing needs to know.
    if all {
        let _ = changes.send(Change::All);
    } else {
        for name in dirty {
            let _ = changes.send(Change::Service(name));
        }
    }
}

/// Whether an event can mean a record was created, replaced, changed or removed. Only
/// creates, writes, renames, deletes, metadata changes (a chmod can make a record
/// unreadable) and a close after writing do; opens and reads never.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

/// The service a changed path belongs to: `Some(Some(name))`, `Some(None)` for paths that
/// do not matter (our temp files), `None` when unsure (rescan everything).
fn service_of(root: &Path, path: &Path) -> Option<Option<String>> {
    let rel = path.strip_prefix(root).ok()?;
    let mut parts = rel.components();
    let name = parts.next()?.as_os_str().to_str()?.to_owned();
    if let Some(file) = parts.next()
        && file
            .as_os_str()
            .to_str()
            .is_some_and(|f| f.starts_with('.') && f.ends_with(".tmp"))
    {
        return Some(None);
    }
    Some(Some(name))
}

async fn run(
    inner: &Arc<LocalInner>,
    filter: Option<String>,
    changes: &mut broadcast::Receiver<Change>,
    mut snapshot: Snapshot,
    tx: &mpsc::Sender<Result<Event, RegistryError>>,
) -> Result<(), RegistryError> {
    loop {
        let next_expiry = snapshot.values().map(|(_, exp)| *exp).min();
        let deadline = next_expiry.map(|exp| {
            let wait = Duration::from_millis(exp.saturating_sub(store::now_ms()));
            tokio::time::Instant::now() + wait + EXPIRY_SLACK
        });
        let mut dirty = Dirty::default();
        tokio::select! {
            () = tx.closed() => return Ok(()),
            change = changes.recv() => dirty.add(change, &inner.name)?,
            () = sleep_until(deadline) => {}
        }
        // Take whatever else is ready, so a burst costs one rescan.
        loop {
            match changes.try_recv() {
                Ok(change) => dirty.add(Ok(change), &inner.name)?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(n)) => {
                    dirty.add(Err(RecvError::Lagged(n)), &inner.name)?
                }
                Err(TryRecvError::Closed) => dirty.add(Err(RecvError::Closed), &inner.name)?,
            }
        }

        let now = store::now_ms();
        let mut scope = if dirty.all {
            Scope::All
        } else {
            let mut services = dirty.services;
            // Services with an expired node: the rescan turns it into a Delete (or finds
            // that it was renewed).
            services.extend(
                snapshot
                    .iter()
                    .filter(|(_, (_, exp))| *exp <= now)
                    .map(|((name, _), _)| name.clone()),
            );
            Scope::Services(services)
        };
        if let Some(name) = &filter {
            scope = match scope {
                Scope::Services(s) if !s.contains(name) => continue,
                _ => Scope::Services(BTreeSet::from([name.clone()])),
            };
        }
        for event in rescan(inner, &mut snapshot, scope).await? {
            if tx.send(Ok(event)).await.is_err() {
                return Ok(());
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Rescans `scope`, updates `snapshot` and returns what changed.
async fn rescan(
    inner: &Arc<LocalInner>,
    snapshot: &mut Snapshot,
    scope: Scope,
) -> Result<Vec<Event>, RegistryError> {
    let dir: PathBuf = inner.dir.clone();
    let (scope, fresh, unreadable) = inner
        .blocking(move || {
            let names = match &scope {
                Scope::All => store::service_names(&dir)?,
                Scope::Services(names) => names.iter().cloned().collect(),
            };
            let mut fresh = Snapshot::new();
            let mut unreadable = BTreeSet::new();
            for name in names {
                match store::scan_service(&dir, &name) {
                    Ok(live) => {
                        fresh.extend(live.into_iter().map(|(id, l)| ((name.clone(), id), l)));
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.join(&name).display(), error = %e, "cannot read registry service directory; keeping its last known nodes");
                        unreadable.insert(name);
                    }
                }
            }
            Ok((scope, fresh, unreadable))
        })
        .await?;
    // What could not be read stays as it was, rather than being reported deleted.
    let mut fresh = fresh;
    for (key, live) in snapshot.iter() {
        if unreadable.contains(&key.0) {
            fresh.insert(key.clone(), live.clone());
        }
    }
    Ok(diff(snapshot, fresh, &scope))
}

/// Applies `fresh` (the live records within `scope`) to `snapshot`, returning the events.
fn diff(snapshot: &mut Snapshot, fresh: Snapshot, scope: &Scope) -> Vec<Event> {
    let in_scope = |name: &str| match scope {
        Scope::All => true,
        Scope::Services(names) => names.contains(name),
    };
    let gone: Vec<_> = snapshot
        .keys()
        .filter(|key| in_scope(&key.0) && !fresh.contains_key(*key))
        .cloned()
        .collect();
    let mut events = Vec::new();
    for key in gone {
        if let Some((record, _)) = snapshot.remove(&key) {
            events.push(Event {
                kind: EventKind::Delete,
                service: record,
            });
        }
    }
    for (key, (record, expires_at_ms)) in fresh {
        let kind = match snapshot.get(&key) {
            None => Some(EventKind::Create),
            Some((old, _)) if *old != record => Some(EventKind::Update),
            Some(_) => None,
        };
        if let Some(kind) = kind {
            events.push(Event {
                kind,
                service: record.clone(),
            });
        }
        snapshot.insert(key, (record, expires_at_ms));
    }
    events
}
