//! Per-machine registry: one JSON file per node in a per-user directory.

use std::{
    ffi::OsString,
    fmt, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{RegisterOptions, Registry, RegistryError, Service, WatchOptions, Watcher, common};

mod store;
mod watch;

/// File operations on the directory that may run at once, per registry (and its clones).
/// A hung file system then holds at most this many blocking threads, however many calls
/// wait.
const MAX_IO_TASKS: usize = 4;

/// How long a call waits for the directory's file I/O (its turn, then the operation) before
/// failing. A scan of a healthy directory takes milliseconds.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Processes of one user on one machine find each other through files: no server, no
/// configuration, no network.
///
/// Each node is a file `<dir>/<service>/<node-id>.json` holding its record and its expiry
/// (wall clock). Writes are atomic (a temp file renamed over the record), reads skip files
/// that do not parse, and expired records are ignored and eventually deleted by readers.
/// [`watch`](Registry::watch) turns filesystem notifications and expiry deadlines into
/// events, so a crashed process' node is reported deleted shortly after its TTL.
///
/// All watches on one registry and its clones share one filesystem watcher (one inotify
/// instance and one thread), started by the first watch and stopped when the last watch
/// ends. Separately opened registries (other [`with_dir`](Self::with_dir) or
/// [`new`](Self::new) calls) have their own; the number of inotify instances per user is
/// limited (`fs.inotify.max_user_instances`, often 128, across all of the user's
/// processes), so share one `LocalRegistry` per process.
///
/// Reads are defensive: only regular files are read (symlinks are not followed, FIFOs and
/// devices never opened for reading), each at most 1 MiB; a bad entry is skipped with one
/// warning. File I/O runs on at most 4 blocking threads per registry and fails after 5 s,
/// so a hung file system fails calls instead of hanging them or piling up threads. (Like the
/// rest of micro, it needs a Tokio runtime with its time driver enabled.)
///
/// The default directory is `$XDG_RUNTIME_DIR/micro/registry`, or
/// `<temp dir>/micro-<uid>/registry` when `XDG_RUNTIME_DIR` is unset. Clones share the
/// directory.
#[derive(Clone)]
pub struct LocalRegistry {
    inner: Arc<LocalInner>,
}

#[derive(Debug)]
struct LocalInner {
    dir: PathBuf,
    /// `local`, or `local://<dir>` for a directory given explicitly.
    name: String,
    /// The filesystem watcher shared by all watches, while any runs.
    hub: watch::HubSlot,
    /// Turns to run file I/O; a blocking task holds its permit until it really ends.
    io_permits: Arc<Semaphore>,
}

// === impl LocalRegistry ===

impl LocalRegistry {
    /// The registry in the per-user runtime directory.
    ///
    /// # Errors
    /// When the directory cannot be created or belongs to another user.
    pub fn new() -> Result<Self, RegistryError> {
        let (dir, private_parent) = default_dir();
        Self::open(dir, private_parent, "local".to_owned())
    }

    /// The registry in `dir`, created (mode 0700) if missing.
    ///
    /// # Errors
    /// When the directory cannot be created or belongs to another user.
    pub fn with_dir(dir: PathBuf) -> Result<Self, RegistryError> {
        let name = format!("local://{}", dir.display());
        Self::open(dir, None, name)
    }

    /// The directory holding the records.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn open(
        dir: PathBuf,
        private_parent: Option<PathBuf>,
        name: String,
    ) -> Result<Self, RegistryError> {
        let inner = LocalInner {
            dir,
            name,
            hub: watch::HubSlot::default(),
            io_permits: Arc::new(Semaphore::new(MAX_IO_TASKS)),
        };
        store::create_private_dir(&inner.dir).map_err(|e| {
            inner.error(
                format!("cannot create registry directory {}", inner.dir.display()),
                e,
            )
        })?;
        if let Some(parent) = &private_parent {
            inner.check_owned(parent)?;
        }
        inner.check_owned(&inner.dir)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }
}

impl fmt::Debug for LocalRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalRegistry")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

#[async_trait]
impl Registry for LocalRegistry {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn register(
        &self,
        service: &Service,
        options: RegisterOptions,
    ) -> Result<(), RegistryError> {
        common::validate_register(service)?;
        let records: Vec<Service> = service
            .nodes
            .iter()
            .map(|node| common::single(service, node))
            .collect();
        let inner = self.inner.clone();
        self.inner
            .blocking(move || {
                let expires_at_ms = store::expiry_ms(options.ttl);
                for record in &records {
                    store::write_record(&inner.dir, record, expires_at_ms).map_err(|e| {
                        let id = record.nodes.first().map_or("", |n| n.id.as_str());
                        io::Error::new(
                            e.kind(),
                            format!("writing node {id} of service {}: {e}", record.name),
                        )
                    })?;
                }
                Ok(())
            })
            .await
    }

    async fn deregister(&self, service: &Service) -> Result<(), RegistryError> {
        common::validate_deregister(service)?;
        let name = service.name.clone();
        let ids: Vec<String> = service.nodes.iter().map(|n| n.id.clone()).collect();
        let inner = self.inner.clone();
        self.inner
            .blocking(move || {
                for id in &ids {
                    store::remove_record(&inner.dir, &name, id)?;
                }
                Ok(())
            })
            .await
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, RegistryError> {
        // Names that cannot be registered cannot be found, and must not become paths.
        if common::validate_deregister(&Service {
            name: name.to_owned(),
            ..Service::default()
        })
        .is_err()
        {
            return Ok(Vec::new());
        }
        let inner = self.inner.clone();
        let name = name.to_owned();
        let live = self
            .inner
            .blocking(move || store::scan_service(&inner.dir, &name))
            .await?;
        Ok(common::group(live.values().map(|(record, _)| record)))
    }

    async fn list_services(&self) -> Result<Vec<Service>, RegistryError> {
        let inner = self.inner.clone();
        let live = self
            .inner
            .blocking(move || store::scan_all(&inner.dir))
            .await?;
        Ok(common::group(live.values().map(|(record, _)| record)))
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, RegistryError> {
        watch::start(self.inner.clone(), options.service).await
    }
}

// === impl LocalInner ===

impl LocalInner {
    fn error(
        &self,
        what: impl fmt::Display,
        err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> RegistryError {
        RegistryError::backend(&self.name, what, err)
    }

    /// Runs blocking file I/O off the async threads: at most [`MAX_IO_TASKS`] at once, and
    /// failing after [`IO_TIMEOUT`] (waiting included). An operation that hangs keeps its
    /// thread and its permit until it ends; the caller gets its error in time.
    async fn blocking<T, F>(&self, f: F) -> Result<T, RegistryError>
    where
        F: FnOnce() -> io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.blocking_within(IO_TIMEOUT, f).await
    }

    async fn blocking_within<T, F>(&self, timeout: Duration, f: F) -> Result<T, RegistryError>
    where
        F: FnOnce() -> io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let stuck = || {
            self.error(
                format!(
                    "file I/O in {} did not finish within {timeout:?} ({} operations still running)",
                    self.dir.display(),
                    MAX_IO_TASKS - self.io_permits.available_permits()
                ),
                io::Error::from(io::ErrorKind::TimedOut),
            )
        };
        let permit =
            match tokio::time::timeout_at(deadline, Arc::clone(&self.io_permits).acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                // The semaphore is never closed.
                Ok(Err(e)) => return Err(self.error("file I/O task failed", e)),
                Err(_) => return Err(stuck()),
            };
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(self.error(format!("in {}", self.dir.display()), e)),
            Ok(Err(e)) => Err(self.error("file I/O task failed", e)),
            Err(_) => Err(stuck()),
        }
    }

    /// Fails unless `path` is a real directory (not a symlink) owned by this user: another
    /// user could otherwise read our records or plant fake ones.
    fn check_owned(&self, path: &Path) -> Result<(), RegistryError> {
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| self.error(format!("cannot inspect {}", path.display()), e))?;
        let uid = nix::unistd::getuid().as_raw();
        if !meta.is_dir() {
            return Err(RegistryError::backend_msg(
                &self.name,
                format!(
                    "{} is not a directory; remove it or choose another registry directory \
                     with MICRO_REGISTRY=local:///some/dir",
                    path.display()
                ),
            ));
        }
        if meta.uid() != uid {
            return Err(RegistryError::backend_msg(
                &self.name,
                format!(
                    "registry directory {} belongs to uid {}, not to this user (uid {uid}); \
                     remove it or choose another directory with MICRO_REGISTRY=local:///some/dir",
                    path.display(),
                    meta.uid()
                ),
            ));
        }
        Ok(())
    }
}

/// The default directory, and the per-user directory above it that must be private.
fn default_dir() -> (PathBuf, Option<PathBuf>) {
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty())
        && Path::new(&runtime).is_dir()
    {
        let micro = PathBuf::from(runtime).join("micro");
        return (micro.join("registry"), Some(micro));
    }
    let mut user_dir = OsString::from("micro-");
    user_dir.push(nix::unistd::getuid().to_string());
    let user_dir = std::env::temp_dir().join(user_dir);
    (user_dir.join("registry"), Some(user_dir))
}

#[cfg(test)]
mod tests;
