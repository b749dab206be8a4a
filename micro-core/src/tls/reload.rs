//! A TLS configuration rebuilt from its files when they change, swapped atomically.

use std::{
    fmt,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock, Weak},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::{TlsError, pem};
use crate::lock::lock;

/// Builds a configuration from the contents of its files, in the order they were given.
pub(super) type Build<T> = dyn Fn(&[Vec<u8>]) -> Result<T, TlsError> + Send + Sync;

/// A configuration built from files and rebuilt when they change. Clones share it.
pub(super) struct Reloading<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    /// `server` or `client`, for logs.
    side: &'static str,
    files: Vec<(&'static str, PathBuf)>,
    build: Box<Build<T>>,
    current: ArcSwap<T>,
    /// The contents the configuration was last built from, or last failed to build from:
    /// a poll that reads them again does nothing.
    seen: Mutex<Seen>,
    generation: watch::Sender<u64>,
    interval: Option<Duration>,
    polling: OnceLock<()>,
}

#[derive(Default)]
struct Seen {
    contents: Vec<Vec<u8>>,
    /// The last error logged by a poll, so a file that stays broken is reported once.
    error: Option<String>,
}

// === impl Reloading ===

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Reads `files` and builds the first configuration; polls the files every `interval`
    /// once [`current`](Self::current) is first called inside a tokio runtime.
    pub(super) fn load(
        side: &'static str,
        files: Vec<(&'static str, PathBuf)>,
        interval: Option<Duration>,
        build: Box<Build<T>>,
    ) -> Result<Self, TlsError> {
        let contents = read_all(&files)?;
        let config = build(&contents)?;
        Ok(Self {
            inner: Arc::new(Inner {
                side,
                files,
                build,
                current: ArcSwap::from_pointee(config),
                seen: Mutex::new(Seen {
                    contents,
                    error: None,
                }),
                generation: watch::Sender::new(0),
                interval: interval.filter(|interval| !interval.is_zero()),
                polling: OnceLock::new(),
            }),
        })
    }

    /// The configuration in use; starts polling the files if it has not started yet.
    pub(super) fn current(&self) -> Arc<T> {
        self.start_polling();
        self.inner.current.load_full()
    }

    /// Reads the files and rebuilds now; on error the configuration in use stays.
    pub(super) fn reload(&self) -> Result<(), TlsError> {
        // Under the lock, so a poll cannot swap in what it read before this.
        let mut seen = self.inner.lock();
        let contents = read_all(&self.inner.files)?;
        let config = (self.inner.build)(&contents)?;
        seen.contents = contents;
        seen.error = None;
        self.inner.swap(config);
        Ok(())
    }

    pub(super) fn generation(&self) -> u64 {
        *self.inner.generation.borrow()
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    pub(super) fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.inner.files.iter().map(|(_, path)| path)
    }

    pub(super) fn interval(&self) -> Option<Duration> {
        self.inner.interval
    }

    /// Starts the polling task on the current runtime, once; outside a runtime it waits
    /// for a later call.
    pub(super) fn start_polling(&self) {
        let Some(interval) = self.inner.interval else {
            return;
        };
        if self.inner.polling.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.inner.polling.get_or_init(|| {
            runtime.spawn(poll(Arc::downgrade(&self.inner), interval));
        });
    }
}

impl<T> Clone for Reloading<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.inner.files)
            .field("interval", &self.inner.interval)
            .field("generation", &*self.inner.generation.borrow())
            .finish_non_exhaustive()
    }
}

// === impl Inner ===

impl<T> Inner<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        lock(&self.seen)
    }

    fn swap(&self, config: T) {
        self.current.store(Arc::new(config));
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// One poll: rebuilds when the files' contents differ from the ones seen last.
    fn poll_once(&self) {
        let mut seen = self.lock();
        let failed = match read_all(&self.files) {
            Ok(contents) if contents == seen.contents => return,
            Ok(contents) => {
                let built = (self.build)(&contents);
                seen.contents = contents;
                match built {
                    Ok(config) => {
                        seen.error = None;
                        self.swap(config);
                        tracing::info!(
                            side = self.side,
                            files = ?self.paths(),
                            generation = *self.generation.borrow(),
                            "TLS certificates reloaded; new handshakes use them"
                        );
                        return;
                    }
                    Err(err) => err,
                }
            }
            Err(err) => err,
        };
        let message = failed.to_string();
        if seen.error.as_deref() != Some(message.as_str()) {
            tracing::error!(
                side = self.side,
                error = %message,
                "TLS certificates not reloaded; the ones in use stay until the files are fixed"
            );
            seen.error = Some(message);
        }
    }

    fn paths(&self) -> Vec<&PathBuf> {
        self.files.iter().map(|(_, path)| path).collect()
    }
}

fn read_all(files: &[(&'static str, PathBuf)]) -> Result<Vec<Vec<u8>>, TlsError> {
    files
        .iter()
        .map(|(what, path)| pem::read(what, path))
        .collect()
}

/// Polls the files every `interval` until the configuration is dropped.
async fn poll<T: Send + Sync + 'static>(inner: Weak<Inner<T>>, interval: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        // File reads block: off the runtime's workers.
        if tokio::task::spawn_blocking(move || inner.poll_once())
            .await
            .is_err()
        {
            return;
        }
    }
}
