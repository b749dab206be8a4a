//! Configuration: values loaded from [`Source`]s, merged in order, read typed, reloaded live.
//!
//! ```no_run
//! # async fn demo() -> Result<(), micro_core::config::ConfigError> {
//! use micro_core::config::Config;
//!
//! let config = Config::builder()
//!     .file("config.yaml")        // and config.<env>.yaml when it exists
//!     .env("APP")                 // APP_DB__POOL=20 → db.pool = 20
//!     .build()
//!     .await?;
//! let pool: u32 = config.get("db.pool")?;
//! let mut live = config.watch::<u32>("db.pool")?; // follows reloads
//! live.changed().await;
//! # Ok(()) }
//! ```
//!
//! # Merging
//!
//! Each source yields a tree of values (a JSON object). Trees are merged in the order the
//! sources were added: a later source's value replaces an earlier one's at the same path,
//! and objects merge key by key. Paths are dot-separated keys (`db.pool`); array items are
//! addressed by index (`servers.0.host`).
//!
//! # Environments
//!
//! [`ConfigBuilder::environment`] (default: `MICRO_ENV`, else `dev`) namespaces the sources
//! that support it: a file source also reads `name.<env>.ext` over `name.ext` when that file
//! exists, and the etcd and config-service sources read under the environment's prefix.
//!
//! # Reloading
//!
//! Sources that can change (files are watched with inotify; the etcd source watches its
//! prefix) are reloaded when they do, in the order the changes arrive, and the merged
//! values are published to [`Config::subscribe`] and [`Config::watch`] receivers. An update
//! that does not parse (bad YAML, JSON or TOML) is **rejected**: the source keeps its last
//! good values, the error is logged and kept in [`Config::last_error`]. A typed watcher whose
//! new value has the wrong type keeps its last good value the same way.

mod env;
mod file;
mod merge;

pub use env::EnvSource;
pub use file::{FileSource, Format};

use std::{
    fmt,
    pin::Pin,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use futures_core::Stream;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use tokio::{sync::watch, task::JoinHandle};

use crate::lock::lock;

/// A configuration tree.
pub type Value = serde_json::Value;

/// Wakes when a source may have changed.
pub type Changes = Pin<Box<dyn Stream<Item = ()> + Send + 'static>>;

/// The environment variable naming the environment (`dev`, `staging`, `prod`, …).
pub const ENV_VAR: &str = "MICRO_ENV";

/// Why configuration could not be loaded or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A source's content does not parse; its last good values stay in force.
    #[error("config source {source_name}: {message}")]
    Malformed {
        /// The source, e.g. `file config.yaml`.
        source_name: String,
        /// What the parser said, with the line and column when it gave them.
        message: String,
    },
    /// A source cannot be read.
    #[error("config source {source_name} unavailable: {message}")]
    Unavailable {
        /// The source.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// Nothing is set at the path.
    #[error("config path {path:?} is not set")]
    Missing {
        /// The path.
        path: String,
    },
    /// The value at the path does not have the type asked for.
    #[error("config path {path:?}: {message}")]
    WrongType {
        /// The path.
        path: String,
        /// What did not fit.
        message: String,
    },
}

/// Where configuration values come from; see [`FileSource`], [`EnvSource`].
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// A name for errors and logs, e.g. `file /etc/app/config.yaml`.
    fn name(&self) -> String;

    /// Reads the source's current values: a tree, usually an object.
    async fn load(&self) -> Result<Value, ConfigError>;

    /// A stream that yields whenever the source may have changed; `None` for a source
    /// that never changes.
    async fn changes(&self) -> Result<Option<Changes>, ConfigError>;
}

/// Loaded configuration; cheap to clone, clones share the values and the reloads.
#[derive(Clone)]
pub struct Config {
    shared: Arc<Shared>,
}

struct Shared {
    merged: watch::Sender<Arc<Value>>,
    layers: Mutex<Vec<Value>>,
    last_error: Mutex<Option<ConfigError>>,
    environment: String,
    reloaders: Mutex<Vec<JoinHandle<()>>>,
}

/// Builds a [`Config`]: sources in order, later ones win.
#[must_use]
pub struct ConfigBuilder {
    sources: Vec<Box<dyn Source>>,
    pending_files: Vec<(std::path::PathBuf, bool)>,
    environment: Option<String>,
}

/// A typed value at one path that follows reloads; made by [`Config::watch`].
#[derive(Debug)]
pub struct Watched<T> {
    receiver: watch::Receiver<T>,
    _task: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// === impl ConfigBuilder ===

impl ConfigBuilder {
    /// Adds a file (YAML, JSON or TOML, by extension) that must exist, and its
    /// environment overlay `name.<env>.ext` when that exists. Watched for changes.
    pub fn file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.pending_files.push((path.into(), true));
        self
    }

    /// Like [`file`](Self::file), but a missing file is empty instead of an error.
    pub fn optional_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.pending_files.push((path.into(), false));
        self
    }

    /// Adds the environment variables starting with `prefix_`; see [`EnvSource`].
    pub fn env(self, prefix: &str) -> Self {
        self.source(EnvSource::new(prefix))
    }

    /// Adds any source.
    pub fn source(mut self, source: impl Source) -> Self {
        self.flush_files();
        self.sources.push(Box::new(source));
        self
    }

    /// Sets the environment (default: `MICRO_ENV`, else `dev`).
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// The environment this builder will use.
    pub fn current_environment(&self) -> String {
        self.environment.clone().unwrap_or_else(default_environment)
    }

    fn flush_files(&mut self) {
        let environment = self.current_environment();
        for (path, required) in std::mem::take(&mut self.pending_files) {
            let overlay = FileSource::environment_overlay(&path, &environment);
            self.sources
                .push(Box::new(FileSource::new(path).required(required)));
            if let Some(overlay) = overlay {
                self.sources
                    .push(Box::new(FileSource::new(overlay).required(false)));
            }
        }
    }

    /// Loads every source, merges them and starts watching the ones that change.
    ///
    /// # Errors
    /// The first source that cannot be loaded or does not parse, named in the error.
    pub async fn build(mut self) -> Result<Config, ConfigError> {
        self.flush_files();
        let environment = self.current_environment();
        // Watch first, then load: a change between the two is seen by the watch instead of
        // falling into a gap.
        let mut changes = Vec::with_capacity(self.sources.len());
        for source in &self.sources {
            changes.push(source.changes().await?);
        }
        let mut layers = Vec::with_capacity(self.sources.len());
        for source in &self.sources {
            layers.push(source.load().await?);
        }
        let merged = merge::merge_all(&layers);
        let shared = Arc::new(Shared {
            merged: watch::channel(Arc::new(merged)).0,
            layers: Mutex::new(layers),
            last_error: Mutex::new(None),
            environment,
            reloaders: Mutex::new(Vec::new()),
        });
        let config = Config { shared };
        for (index, (source, changes)) in self.sources.into_iter().zip(changes).enumerate() {
            if let Some(changes) = changes {
                let weak = Arc::downgrade(&config.shared);
                let task = tokio::spawn(reload(weak, index, source, changes));
                lock(&config.shared.reloaders).push(task);
            }
        }
        Ok(config)
    }
}

impl fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigBuilder")
            .field(
                "sources",
                &self.sources.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("files", &self.pending_files)
            .field("environment", &self.environment)
            .finish()
    }
}

fn default_environment() -> String {
    std::env::var(ENV_VAR)
        .ok()
        .filter(|env| !env.is_empty())
        .unwrap_or_else(|| "dev".to_owned())
}

/// Reloads source `index` whenever it changes, in order, until the config is dropped.
async fn reload(
    shared: std::sync::Weak<Shared>,
    index: usize,
    source: Box<dyn Source>,
    mut changes: Changes,
) {
    while changes.next().await.is_some() {
        let loaded = source.load().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match loaded {
            Ok(value) => {
                let merged = {
                    let mut layers = lock(&shared.layers);
                    if layers.get(index) == Some(&value) {
                        continue;
                    }
                    if let Some(layer) = layers.get_mut(index) {
                        *layer = value;
                    }
                    merge::merge_all(&layers)
                };
                tracing::info!(source = %source.name(), "configuration reloaded");
                shared.merged.send_replace(Arc::new(merged));
            }
            Err(error) => {
                tracing::warn!(source = %source.name(), %error, "configuration update rejected; the last good values stay");
                *lock(&shared.last_error) = Some(error);
            }
        }
    }
}

// === impl Config ===

impl Config {
    /// A builder with no sources.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            sources: Vec::new(),
            pending_files: Vec::new(),
            environment: None,
        }
    }

    /// Configuration from fixed values, for tests and defaults.
    pub fn from_value(value: Value) -> Self {
        Self {
            shared: Arc::new(Shared {
                merged: watch::channel(Arc::new(value.clone())).0,
                layers: Mutex::new(vec![value]),
                last_error: Mutex::new(None),
                environment: default_environment(),
                reloaders: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The environment the sources were read for.
    pub fn environment(&self) -> &str {
        &self.shared.environment
    }

    /// All values, merged.
    pub fn snapshot(&self) -> Arc<Value> {
        Arc::clone(&self.shared.merged.borrow())
    }

    /// The value at `path`, if set.
    pub fn value(&self, path: &str) -> Option<Value> {
        merge::at(&self.shared.merged.borrow(), path).cloned()
    }

    /// The value at `path` as a `T`.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] when nothing is set there, [`ConfigError::WrongType`] naming
    /// the path and the mismatch.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ConfigError> {
        typed(&self.shared.merged.borrow(), path)
    }

    /// The value at `path` as a `T`, or `default` when nothing is set there.
    ///
    /// # Errors
    /// [`ConfigError::WrongType`] when a value is set but does not fit `T`.
    pub fn get_or<T: DeserializeOwned>(&self, path: &str, default: T) -> Result<T, ConfigError> {
        match self.get(path) {
            Err(ConfigError::Missing { .. }) => Ok(default),
            other => other,
        }
    }

    /// Every reload's merged values.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Value>> {
        self.shared.merged.subscribe()
    }

    /// The value at `path` as a `T` now and after every reload that changes it. A reload
    /// whose value does not fit `T` (or removes it) is rejected for this watcher: it keeps
    /// the last good value, and the error goes to the log and [`Config::last_error`].
    ///
    /// # Errors
    /// As [`get`](Self::get), for the current value.
    pub fn watch<T>(&self, path: &str) -> Result<Watched<T>, ConfigError>
    where
        T: DeserializeOwned + PartialEq + Send + std::marker::Sync + 'static,
    {
        let mut merged = self.shared.merged.subscribe();
        let initial: T = typed(&merged.borrow_and_update(), path)?;
        let (sender, receiver) = watch::channel(initial);
        let path = path.to_owned();
        let shared = Arc::downgrade(&self.shared);
        let task = tokio::spawn(async move {
            while merged.changed().await.is_ok() {
                let next = typed::<T>(&merged.borrow_and_update(), &path);
                match next {
                    Ok(value) => {
                        sender.send_if_modified(|current| {
                            if *current == value {
                                false
                            } else {
                                *current = value;
                                true
                            }
                        });
                    }
                    Err(error) => {
                        tracing::warn!(%path, %error, "configuration update rejected for a typed watcher; the last good value stays");
                        if let Some(shared) = shared.upgrade() {
                            *lock(&shared.last_error) = Some(error);
                        }
                    }
                }
                if sender.is_closed() {
                    return;
                }
            }
        });
        Ok(Watched {
            receiver,
            _task: Arc::new(AbortOnDrop(task)),
        })
    }

    /// The last update that was rejected (a source that stopped parsing, a value of the
    /// wrong type for a watcher), if any.
    pub fn last_error(&self) -> Option<ConfigError> {
        lock(&self.shared.last_error).clone()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        for task in lock(&self.reloaders).drain(..) {
            task.abort();
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("environment", &self.shared.environment)
            .field("values", &self.shared.merged.borrow())
            .finish()
    }
}

fn typed<T: DeserializeOwned>(root: &Value, path: &str) -> Result<T, ConfigError> {
    let value = merge::at(root, path).ok_or_else(|| ConfigError::Missing {
        path: path.to_owned(),
    })?;
    T::deserialize(value).map_err(|error| ConfigError::WrongType {
        path: path.to_owned(),
        message: error.to_string(),
    })
}

// === impl Watched ===

impl<T: Clone> Watched<T> {
    /// The current value.
    pub fn get(&self) -> T {
        self.receiver.borrow().clone()
    }

    /// Waits for the next accepted change; returns the new value.
    pub async fn changed(&mut self) -> T {
        // The sender lives in the task this value keeps alive: `changed` only fails if
        // the task panicked, and then the value simply stays.
        if self.receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.receiver.borrow_and_update().clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn write(path: &std::path::Path, text: &str) {
        // As editors do: a new file renamed over the old one.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(1), future)
            .await
            .unwrap_or_else(|_| panic!("{what} within 1 s"))
    }

    #[tokio::test]
    async fn merges_sources_in_order_with_environment_overlay() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("app.yaml"),
            "db:\n  pool: 5\n  host: a\nname: x\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("app.prod.yaml"), "db:\n  pool: 50\n").unwrap();
        let config = Config::builder()
            .environment("prod")
            .file(dir.path().join("app.yaml"))
            .source(EnvSource::from_vars(
                "APP",
                [("APP_NAME".to_owned(), "from-env".to_owned())],
            ))
            .build()
            .await
            .unwrap();
        assert_eq!(config.environment(), "prod");
        assert_eq!(config.get::<u32>("db.pool").unwrap(), 50);
        assert_eq!(config.get::<String>("db.host").unwrap(), "a");
        assert_eq!(config.get::<String>("name").unwrap(), "from-env");
        assert_eq!(
            config.get::<u32>("db.missing"),
            Err(ConfigError::Missing {
                path: "db.missing".into()
            })
        );
        assert!(matches!(
            config.get::<u32>("db.host"),
            Err(ConfigError::WrongType { .. })
        ));
        assert_eq!(config.get_or("db.timeout", 30u32).unwrap(), 30);
    }

    #[tokio::test]
    async fn a_missing_or_malformed_file_fails_the_build_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Config::builder()
            .file(dir.path().join("nope.yaml"))
            .build()
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("nope.yaml"), "{missing}");
        std::fs::write(dir.path().join("bad.json"), "{\"a\": ").unwrap();
        let bad = Config::builder()
            .file(dir.path().join("bad.json"))
            .build()
            .await
            .unwrap_err();
        assert!(matches!(bad, ConfigError::Malformed { .. }), "{bad}");
        let optional = Config::builder()
            .optional_file(dir.path().join("nope.yaml"))
            .build()
            .await
            .unwrap();
        assert_eq!(*optional.snapshot(), json!({}));
    }

    #[tokio::test]
    async fn a_watched_file_reloads_and_bad_updates_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        write(&path, "db:\n  pool: 5\n");
        let config = Config::builder()
            .environment("test")
            .file(&path)
            .build()
            .await
            .unwrap();
        let mut pool = config.watch::<u32>("db.pool").unwrap();
        assert_eq!(pool.get(), 5);

        write(&path, "db:\n  pool: 7\n");
        assert_eq!(within("a change", pool.changed()).await, 7);

        // Malformed: rejected, the last good value stays.
        let mut merged = config.subscribe();
        write(&path, "db: [unclosed\n");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while !matches!(config.last_error(), Some(ConfigError::Malformed { .. })) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bad update is seen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(config.get::<u32>("db.pool").unwrap(), 7);
        assert!(!merged.has_changed().unwrap());

        // The wrong type for a typed watcher: rejected by that watcher only.
        write(&path, "db:\n  pool: lots\n");
        within("the new raw value", merged.changed()).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while !matches!(config.last_error(), Some(ConfigError::WrongType { .. })) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the wrong type is seen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.get(), 7);

        // Changes in a row: the last one wins.
        for n in [8, 9, 10] {
            write(&path, &format!("db:\n  pool: {n}\n"));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while pool.get() != 10 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the last change applies"
            );
            within("a change", pool.changed()).await;
        }
    }
}
