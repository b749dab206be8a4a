//! Watching the local registry: filesystem notifications plus expiry deadlines trigger
//! rescans, and the differences between snapshots become events.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    LocalInner,
    store::{self, Snapshot},
};
use crate::registry::{Event, EventKind, RegistryError, Watcher};

/// Events buffered for a slow consumer before the diff loop waits for it.
const EVENT_BUFFER: usize = 256;

/// Added to expiry deadlines so the rescan reliably sees the record as expired.
const EXPIRY_SLACK: Duration = Duration::from_millis(5);

/// Which services need a rescan, filled by the notify thread.
#[derive(Debug, Default)]
struct Dirty {
    all: bool,
    services: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Signal {
    dirty: Mutex<Dirty>,
    wake: Notify,
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
    let signal = Arc::new(Signal::default());

    // Watch before the first snapshot, so no change falls between the two.
    let root = inner.dir.clone();
    let handler_signal = signal.clone();
    let mut fs_watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        on_fs_event(&root, &handler_signal, res);
    })
    .map_err(|e| inner.error(format!("cannot watch {}", inner.dir.display()), e))?;
    fs_watcher
        .watch(&inner.dir, RecursiveMode::Recursive)
        .map_err(|e| inner.error(format!("cannot watch {}", inner.dir.display()), e))?;

    let initial = match &filter {
        None => Scope::All,
        Some(name) => Scope::Services(BTreeSet::from([name.clone()])),
    };
    let mut snapshot = Snapshot::new();
    // Events are dropped: the watch reports changes from now on.
    rescan(&inner, &mut snapshot, initial).await?;

    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    tokio::spawn(async move {
        // Owned by the task: dropping it stops the notify thread.
        let _fs_watcher = fs_watcher;
        if let Err(err) = run(&inner, filter, &signal, snapshot, &tx).await {
            tracing::warn!(registry = %inner.name, error = %err, "local registry watch failed");
            let _ = tx.send(Err(err)).await;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Runs on notify's thread: marks what needs a rescan and wakes the diff loop.
fn on_fs_event(root: &Path, signal: &Signal, res: notify::Result<notify::Event>) {
    {
        let mut dirty = signal
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match res {
            Ok(event) if !event.need_rescan() => {
                for path in &event.paths {
                    match service_of(root, path) {
                        Some(Some(name)) => {
                            dirty.services.insert(name);
                        }
                        Some(None) => {}
                        None => dirty.all = true,
                    }
                }
            }
            Ok(_) => dirty.all = true,
            Err(e) => {
                tracing::debug!(error = %e, "local registry watch error, rescanning");
                dirty.all = true;
            }
        }
    }
    signal.wake.notify_one();
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
    signal: &Signal,
    mut snapshot: Snapshot,
    tx: &mpsc::Sender<Result<Event, RegistryError>>,
) -> Result<(), RegistryError> {
    loop {
        let next_expiry = snapshot.values().map(|(_, exp)| *exp).min();
        let deadline = next_expiry.map(|exp| {
            let wait = Duration::from_millis(exp.saturating_sub(store::now_ms()));
            tokio::time::Instant::now() + wait + EXPIRY_SLACK
        });
        tokio::select! {
            () = tx.closed() => return Ok(()),
            () = signal.wake.notified() => {}
            () = sleep_until(deadline) => {}
        }

        let dirty = std::mem::take(
            &mut *signal
                .dirty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
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
