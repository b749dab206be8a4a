//! Key-value storage: the [`Store`] trait, its embedded [`MemoryStore`] and (feature `redb`)
//! persistent `FileStore`, and choosing a store by URL.
//!
//! A store keeps records in namespaces ([`Namespace`]: a database and a table). Each record
//! has a key, an opaque value, a version and an optional expiry:
//!
//! - [`Store::put`] writes a value, optionally with a TTL and a [`Condition`]
//!   (compare-and-set on the version, or create-only), and returns the new version. Versions
//!   of a key start at 1 and grow by one with every write; deleting a key and writing it
//!   again starts over at 1.
//! - [`Store::get`] reads a record; expired records are gone.
//! - [`Store::delete`] removes a key, optionally only at a given version.
//! - [`Store::list`] pages through keys with a prefix in byte order.
//! - [`Store::get_many`], [`Store::put_many`] and [`Store::delete_many`] work on several
//!   keys at once. Every operation of a batch is checked before anything is written, so bad
//!   input writes nothing; whether a batch is applied atomically depends on the backend (see
//!   [`Store::atomic_batches`]).
//!
//! # Limits
//!
//! Checked by [`validate_key`], [`validate_value`] and [`Namespace::new`] in every backend, so
//! data moves between backends unchanged; a violation is [`StoreError::InvalidArgument`]
//! naming what was wrong:
//!
//! | what | limit |
//! |---|---|
//! | database, table | 1 to [`MAX_NAME_LEN`] bytes of `A-Z a-z 0-9 _ - .` |
//! | key | 1 to [`MAX_KEY_LEN`] bytes of UTF-8, no control characters |
//! | value | at most [`MAX_VALUE_LEN`] bytes |
//! | batch | at most [`MAX_BATCH`] operations |
//! | page | at most [`MAX_PAGE`] keys ([`ListOptions::limit`] 0 means [`DEFAULT_PAGE`]) |
//! | TTL | at least 1 ms, at most [`MAX_TTL`] |
//!
//! # Choosing a store
//!
//! [`from_url`] and [`from_env`] (`MICRO_STORE`, default `memory`) open a store by URL:
//!
//! | `MICRO_STORE` | store | from | atomic batches |
//! |---|---|---|---|
//! | `memory` (or unset) | [`MemoryStore`]: this process only | micro-core | yes |
//! | `file:///abs/path/store.redb` | `FileStore`: one redb file, persistent, nothing to install | micro-core, feature `redb` | yes |
//! | `redis://host:port[/db]` | `micro_plugins::redis::RedisStore` | micro-plugins, feature `redis` | yes |
//! | `memcached://host:port` | `micro_plugins::memcached::MemcachedStore`: a cache, data may be evicted | micro-plugins, feature `memcached` | no |
//!
//! The plugin schemes are known once `micro_plugins::install()` ran; other crates add theirs
//! with [`register_scheme`].

#[cfg(feature = "redb")]
pub mod file;
mod memory;
mod url;

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;

#[cfg(feature = "redb")]
pub use file::FileStore;
pub use memory::MemoryStore;
pub use url::{Opener, STORE_ENV, from_env, from_url, register_scheme};

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;

/// The underlying error of a [`StoreError`].
type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A shared, type-erased store.
pub type SharedStore = Arc<dyn Store>;

/// Longest database or table name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Largest value, in bytes (512 KiB).
pub const MAX_VALUE_LEN: usize = 512 * 1024;
/// Most operations in one batch.
pub const MAX_BATCH: usize = 1_000;
/// Most keys in one page of [`Store::list`].
pub const MAX_PAGE: usize = 1_000;
/// Keys in a page when [`ListOptions::limit`] is 0.
pub const DEFAULT_PAGE: usize = 100;
/// Longest TTL: 10 years.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A database and a table: stores keep namespaces apart, so the same key can hold different
/// values in different namespaces.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace {
    database: Arc<str>,
    table: Arc<str>,
}

/// A key's record: value, version and expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: String,
    /// The value, as written.
    pub value: Bytes,
    /// 1 for the first write of the key, one more for every write after it.
    pub version: u64,
    /// Time left before the record expires, when it was written with a TTL (rounded to
    /// whole milliseconds by some backends).
    pub ttl: Option<Duration>,
}

/// What a conditional write or delete requires of the key's current state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    /// No requirement.
    #[default]
    None,
    /// The key must not exist (create-only).
    Absent,
    /// The key must exist at exactly this version (compare-and-set).
    Version(u64),
}

/// One write: a key, its new value, an optional TTL and condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put {
    /// The key.
    pub key: String,
    /// The new value.
    pub value: Bytes,
    /// Expire the record this long after the write; `None` keeps it until deleted.
    pub ttl: Option<Duration>,
    /// What the key's current state must be for the write to happen.
    pub condition: Condition,
}

/// Which keys [`Store::list`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys starting with this (empty: all keys).
    pub prefix: String,
    /// Only keys after this one in byte order: the previous page's [`Page::next`].
    pub start_after: Option<String>,
    /// Most keys to return; 0 means [`DEFAULT_PAGE`], more than [`MAX_PAGE`] is an error.
    pub limit: usize,
}

/// One page of keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Keys in byte order.
    pub keys: Vec<String>,
    /// Set when more keys may follow: pass it as [`ListOptions::start_after`].
    pub next: Option<String>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The request itself is wrong: a bad key, value, name, TTL or limit. Nothing was
    /// written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A [`Condition`] did not hold. Nothing was written.
    #[error("condition failed for key {key:?}: expected {expected}, found {}", found.map_or_else(|| "no record".to_owned(), |v| format!("version {v}")))]
    ConditionFailed {
        /// The key whose condition failed.
        key: String,
        /// What the condition required, e.g. `version 3` or `no record`.
        expected: String,
        /// The key's current version; `None` when it does not exist.
        found: Option<u64>,
    },
    /// The backend cannot be reached or failed; the operation may or may not have happened.
    #[error("store {store} unavailable: {message}")]
    Unavailable {
        /// The backend's name.
        store: String,
        /// What went wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Source>,
    },
    /// No store is known by this URL.
    #[error("unknown store {url:?}; known: {known}")]
    UnknownStore {
        /// The URL asked for.
        url: String,
        /// The stores this process knows.
        known: String,
    },
}

impl StoreError {
    /// A condition failure for `key`.
    pub fn condition_failed(key: &str, condition: Condition, found: Option<u64>) -> Self {
        let expected = match condition {
            Condition::None => "anything".to_owned(),
            Condition::Absent => "no record".to_owned(),
            Condition::Version(version) => format!("version {version}"),
        };
        Self::ConditionFailed {
            key: key.to_owned(),
            expected,
            found,
        }
    }

    /// The backend `store` failed with `message`, no underlying error.
    pub fn unavailable(store: &str, message: impl fmt::Display) -> Self {
        Self::Unavailable {
            store: store.to_owned(),
            message: message.to_string(),
            source: None,
        }
    }

    /// The backend `store` failed with `message` because of `source`, which
    /// [`Error::source`](std::error::Error::source) returns. The message is what the
    /// error displays (and what crosses the wire), so let it name the cause too.
    pub fn unavailable_with(
        store: &str,
        message: impl fmt::Display,
        source: impl Into<Source>,
    ) -> Self {
        Self::Unavailable {
            store: store.to_owned(),
            message: message.to_string(),
            source: Some(source.into()),
        }
    }
}

impl From<StoreError> for tonic::Status {
    /// INVALID_ARGUMENT, ABORTED (a failed condition: read again and retry the
    /// read-modify-write), UNAVAILABLE, or NOT_FOUND for an unknown store.
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match error {
            StoreError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            StoreError::ConditionFailed { .. } => tonic::Status::aborted(message),
            StoreError::Unavailable { .. } => tonic::Status::unavailable(message),
            StoreError::UnknownStore { .. } => tonic::Status::not_found(message),
        }
    }
}

/// A key-value store; see the [module docs](self) for the semantics every backend keeps.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name, for errors and logs (`memory`, `redis`, …).
    fn name(&self) -> &str;

    /// Whether [`put_many`](Self::put_many) and [`delete_many`](Self::delete_many) apply all
    /// operations or none. When `false`, a batch is still checked before anything is written,
    /// but a backend failure half-way can leave part of it applied.
    fn atomic_batches(&self) -> bool;

    /// The record of `key`, `None` if there is none (or it expired).
    async fn get(&self, namespace: &Namespace, key: &str) -> Result<Option<Record>, StoreError>;

    /// Writes one record; returns its new version.
    async fn put(&self, namespace: &Namespace, put: Put) -> Result<u64, StoreError>;

    /// Deletes `key` if `condition` holds; returns whether a record was deleted.
    /// [`Condition::Absent`] is an invalid argument here.
    async fn delete(
        &self,
        namespace: &Namespace,
        key: &str,
        condition: Condition,
    ) -> Result<bool, StoreError>;

    /// A page of keys; see [`ListOptions`].
    async fn list(&self, namespace: &Namespace, options: ListOptions) -> Result<Page, StoreError>;

    /// The records of `keys`, in the same order.
    async fn get_many(
        &self,
        namespace: &Namespace,
        keys: &[String],
    ) -> Result<Vec<Option<Record>>, StoreError>;

    /// Writes every record (a key at most once per batch) if every condition holds; returns
    /// the new versions in order. A failed condition fails the whole batch before anything
    /// is written.
    async fn put_many(&self, namespace: &Namespace, puts: Vec<Put>)
    -> Result<Vec<u64>, StoreError>;

    /// Deletes `keys`; returns for each whether a record was deleted.
    async fn delete_many(
        &self,
        namespace: &Namespace,
        keys: &[String],
    ) -> Result<Vec<bool>, StoreError>;
}

// === impl Namespace ===

impl Namespace {
    /// The database used when none is named.
    pub const DEFAULT_DATABASE: &'static str = "micro";
    /// The table used when none is named.
    pub const DEFAULT_TABLE: &'static str = "default";

    /// A namespace; both names must be 1 to [`MAX_NAME_LEN`] bytes of `A-Z a-z 0-9 _ - .`.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] naming the bad name.
    pub fn new(database: &str, table: &str) -> Result<Self, StoreError> {
        validate_name("database", database)?;
        validate_name("table", table)?;
        Ok(Self {
            database: Arc::from(database),
            table: Arc::from(table),
        })
    }

    /// The database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The table.
    pub fn table(&self) -> &str {
        &self.table
    }
}

impl Default for Namespace {
    /// `micro` / `default`.
    fn default() -> Self {
        Self {
            database: Arc::from(Self::DEFAULT_DATABASE),
            table: Arc::from(Self::DEFAULT_TABLE),
        }
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.database, self.table)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.database, self.table)
    }
}

// === impl Put ===

impl Put {
    /// An unconditional write without TTL.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            ttl: None,
            condition: Condition::None,
        }
    }

    /// Expires the record `ttl` after the write.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Writes only if `condition` holds.
    #[must_use]
    pub fn condition(mut self, condition: Condition) -> Self {
        self.condition = condition;
        self
    }
}

// === validation ===

fn validate_name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(StoreError::InvalidArgument(format!(
            "{what} name must be 1 to {MAX_NAME_LEN} bytes, got {}",
            name.len()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(StoreError::InvalidArgument(format!(
            "{what} name {name:?} contains {bad:?}; allowed: A-Z a-z 0-9 _ - ."
        )));
    }
    Ok(())
}

/// Checks a key against the [limits](self#limits).
///
/// # Errors
/// [`StoreError::InvalidArgument`] naming what is wrong with it.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument("key is empty".to_owned()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::InvalidArgument(format!(
            "key of {} bytes is longer than {MAX_KEY_LEN} bytes",
            key.len()
        )));
    }
    if let Some(bad) = key.chars().find(|c| c.is_control()) {
        return Err(StoreError::InvalidArgument(format!(
            "key {key:?} contains the control character {bad:?}"
        )));
    }
    Ok(())
}

/// Checks a value against the [limits](self#limits).
///
/// # Errors
/// [`StoreError::InvalidArgument`] for `key`'s oversized value.
pub fn validate_value(key: &str, value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(StoreError::InvalidArgument(format!(
            "value of key {key:?} is {} bytes, more than the limit of {MAX_VALUE_LEN} bytes",
            value.len()
        )));
    }
    Ok(())
}

/// Checks a whole write: key, value, TTL.
///
/// # Errors
/// [`StoreError::InvalidArgument`] naming what is wrong.
pub fn validate_put(put: &Put) -> Result<(), StoreError> {
    validate_key(&put.key)?;
    validate_value(&put.key, &put.value)?;
    if let Some(ttl) = put.ttl
        && (ttl < Duration::from_millis(1) || ttl > MAX_TTL)
    {
        return Err(StoreError::InvalidArgument(format!(
            "ttl of key {:?} is {ttl:?}; it must be between 1ms and {MAX_TTL:?}",
            put.key
        )));
    }
    if put.condition == Condition::Version(0) {
        return Err(StoreError::InvalidArgument(format!(
            "condition on key {:?}: versions start at 1",
            put.key
        )));
    }
    Ok(())
}

/// Checks a batch of writes: size, every write, no key twice.
///
/// # Errors
/// [`StoreError::InvalidArgument`] naming the first problem.
pub fn validate_puts(puts: &[Put]) -> Result<(), StoreError> {
    validate_batch_len(puts.len())?;
    let mut seen = std::collections::HashSet::with_capacity(puts.len());
    for put in puts {
        validate_put(put)?;
        if !seen.insert(put.key.as_str()) {
            return Err(StoreError::InvalidArgument(format!(
                "key {:?} appears twice in one batch",
                put.key
            )));
        }
    }
    Ok(())
}

/// Checks a batch of keys: size and every key.
///
/// # Errors
/// [`StoreError::InvalidArgument`] naming the first problem.
pub fn validate_keys(keys: &[String]) -> Result<(), StoreError> {
    validate_batch_len(keys.len())?;
    keys.iter().try_for_each(|key| validate_key(key))
}

fn validate_batch_len(len: usize) -> Result<(), StoreError> {
    if len > MAX_BATCH {
        return Err(StoreError::InvalidArgument(format!(
            "batch of {len} operations is larger than {MAX_BATCH}"
        )));
    }
    Ok(())
}

/// Checks list options and returns the effective page size.
///
/// # Errors
/// [`StoreError::InvalidArgument`] for a limit over [`MAX_PAGE`] or a bad prefix.
pub fn validate_list(options: &ListOptions) -> Result<usize, StoreError> {
    if options.limit > MAX_PAGE {
        return Err(StoreError::InvalidArgument(format!(
            "limit {} is larger than {MAX_PAGE}",
            options.limit
        )));
    }
    if options.prefix.len() > MAX_KEY_LEN {
        return Err(StoreError::InvalidArgument(format!(
            "prefix of {} bytes is longer than {MAX_KEY_LEN} bytes",
            options.prefix.len()
        )));
    }
    Ok(if options.limit == 0 {
        DEFAULT_PAGE
    } else {
        options.limit
    })
}

/// Checks a delete's condition.
///
/// # Errors
/// [`StoreError::InvalidArgument`] for [`Condition::Absent`] or version 0.
pub fn validate_delete(key: &str, condition: Condition) -> Result<(), StoreError> {
    validate_key(key)?;
    match condition {
        Condition::Absent => Err(StoreError::InvalidArgument(format!(
            "delete of key {key:?} with condition Absent: there is nothing to delete"
        ))),
        Condition::Version(0) => Err(StoreError::InvalidArgument(format!(
            "condition on key {key:?}: versions start at 1"
        ))),
        _ => Ok(()),
    }
}

/// Whether `condition` holds for a key currently at `current`.
pub fn condition_holds(condition: Condition, current: Option<u64>) -> bool {
    match condition {
        Condition::None => true,
        Condition::Absent => current.is_none(),
        Condition::Version(version) => current == Some(version),
    }
}

#[cfg(test)]
mod tests {
    use std::{error::Error as _, io};

    use super::*;

    #[test]
    fn unavailable_keeps_its_cause() {
        let cause = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let error = StoreError::unavailable_with("redis", "cannot connect: refused", cause);
        assert_eq!(
            error.to_string(),
            "store redis unavailable: cannot connect: refused"
        );
        let cause = error.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(
            cause.map(io::Error::kind),
            Some(io::ErrorKind::ConnectionRefused)
        );
        assert!(StoreError::unavailable("redis", "down").source().is_none());
    }
}
