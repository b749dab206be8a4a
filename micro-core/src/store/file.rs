//! [`FileStore`]: the embedded persistent store, one [redb](https://docs.rs/redb) file on
//! disk (feature `redb`).
//!
//! # Layout
//!
//! One redb table per namespace, named `store/{database}/{table}` (names cannot contain `/`,
//! so table names never collide), mapping the key (`&str`, so redb's order is byte order and
//! [`Store::list`] is a range scan) to a record: the version (`u64` little-endian), the
//! absolute expiry in milliseconds since the Unix epoch (`u64` little-endian, 0 for none),
//! then the value. Expiry is wall-clock time, so a TTL keeps running while the process is
//! down; expired records read as absent and are removed by the next write that touches them.
//!
//! # Atomicity
//!
//! Every write, condition checks included, runs in one redb write transaction; redb runs one
//! write transaction at a time and commits it durably, so conditions, batches and concurrent
//! compare-and-set are atomic. redb's calls block: they run on tokio's blocking pool.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::{
    Condition, ListOptions, Namespace, Page, Put, Record, Store, StoreError, condition_holds,
    validate_delete, validate_key, validate_keys, validate_list, validate_put, validate_puts,
};

/// The backend's name in errors.
const NAME: &str = "file";
/// Bytes before the value: version and expiry.
const HEADER: usize = 16;

/// The embedded persistent store: one redb file, durable across restarts, nothing to
/// install. Batches are atomic. Select it with `MICRO_STORE=file:///abs/path/store.redb`.
///
/// See the [module docs](self) for the layout.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), micro_core::store::StoreError> {
/// use micro_core::store::{FileStore, Namespace, Put, Store};
///
/// let store = FileStore::open("/var/lib/micro/store.redb")?;
/// let ns = Namespace::default();
/// store.put(&ns, Put::new("greeting", "hello")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FileStore {
    db: Arc<Database>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A stored record, decoded.
struct Entry {
    version: u64,
    /// Milliseconds since the Unix epoch; 0: never.
    expires: u64,
    value: Bytes,
}

// === impl FileStore ===

impl FileStore {
    /// Opens the store file at `path`, creating it (not its directory) if it does not exist.
    /// Blocks while redb opens the file: call it at start-up. One process at a time may hold
    /// a file open.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] naming the path when it cannot be created or opened (no
    /// such directory, no permission, not a redb file, open in another process).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let db = Database::create(path).map_err(|e| {
            StoreError::unavailable_with(
                NAME,
                format!(
                    "cannot open store file {}: {e}; check that its directory exists and is \
                     writable",
                    path.display()
                ),
                e,
            )
        })?;
        tracing::debug!(path = %path.display(), "file store opened");
        Ok(Self {
            db: Arc::new(db),
            path: Arc::new(path.to_path_buf()),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the store named by a `file:///abs/path` URL, for
    /// [`register_scheme`](super::register_scheme).
    pub(crate) fn open_url(url: &str) -> Result<super::SharedStore, StoreError> {
        let path = url
            .strip_prefix("file://")
            .filter(|path| path.starts_with('/'))
            .ok_or_else(|| {
                StoreError::InvalidArgument(format!(
                    "store URL {url:?}: expected file:///absolute/path/to/store.redb"
                ))
            })?;
        Ok(Arc::new(Self::open(path)?))
    }

    /// Runs `f` with the database on tokio's blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::unavailable_with(NAME, format!("store task failed: {e}"), e))?
    }
}

fn db_error(error: impl Into<redb::Error>) -> StoreError {
    let error: redb::Error = error.into();
    tracing::warn!(%error, "file store failed");
    StoreError::unavailable_with(NAME, error.to_string(), error)
}

fn table_name(namespace: &Namespace) -> String {
    format!("store/{}/{}", namespace.database(), namespace.table())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Entry {
    fn decode(raw: &[u8]) -> Result<Self, StoreError> {
        let (Some(version), Some(expires)) = (raw.get(..8), raw.get(8..HEADER)) else {
            return Err(StoreError::unavailable(
                NAME,
                format!("corrupt record of {} bytes", raw.len()),
            ));
        };
        let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        Ok(Self {
            version: u64_of(version),
            expires: u64_of(expires),
            value: Bytes::copy_from_slice(&raw[HEADER..]),
        })
    }

    fn encode(version: u64, expires: u64, value: &[u8]) -> Vec<u8> {
        let mut raw = Vec::with_capacity(HEADER + value.len());
        raw.extend_from_slice(&version.to_le_bytes());
        raw.extend_from_slice(&expires.to_le_bytes());
        raw.extend_from_slice(value);
        raw
    }

    fn live(&self, now: u64) -> bool {
        self.expires == 0 || self.expires > now
    }

    fn record(self, key: &str, now: u64) -> Record {
        Record {
            key: key.to_owned(),
            value: self.value,
            version: self.version,
            ttl: (self.expires != 0)
                .then(|| Duration::from_millis(self.expires.saturating_sub(now))),
        }
    }
}

/// The live entry of `key` in `table`.
fn live_entry(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    now: u64,
) -> Result<Option<Entry>, StoreError> {
    match table.get(key).map_err(db_error)? {
        Some(raw) => Ok(Some(Entry::decode(raw.value())?).filter(|entry| entry.live(now))),
        None => Ok(None),
    }
}

/// Reads `keys` of `namespace` in one read transaction.
fn read(
    db: &Database,
    namespace: &Namespace,
    keys: &[String],
) -> Result<Vec<Option<Record>>, StoreError> {
    let name = table_name(namespace);
    let txn = db.begin_read().map_err(db_error)?;
    let table = match txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
        Err(e) => return Err(db_error(e)),
    };
    let now = now_ms();
    keys.iter()
        .map(|key| Ok(live_entry(&table, key, now)?.map(|entry| entry.record(key, now))))
        .collect()
}

/// Checks every condition, then writes every put, in one write transaction.
fn write(db: &Database, namespace: &Namespace, puts: Vec<Put>) -> Result<Vec<u64>, StoreError> {
    let name = table_name(namespace);
    let txn = db.begin_write().map_err(db_error)?;
    let versions = {
        let mut table = txn
            .open_table(TableDefinition::<&str, &[u8]>::new(&name))
            .map_err(db_error)?;
        let now = now_ms();
        let mut versions = Vec::with_capacity(puts.len());
        for put in &puts {
            let found = live_entry(&table, &put.key, now)?.map(|entry| entry.version);
            if !condition_holds(put.condition, found) {
                return Err(StoreError::condition_failed(&put.key, put.condition, found));
            }
            versions.push(found.map_or(1, |version| version + 1));
        }
        for (put, version) in puts.iter().zip(&versions) {
            let expires = put.ttl.map_or(0, |ttl| {
                now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                    .max(1)
            });
            let raw = Entry::encode(*version, expires, &put.value);
            table
                .insert(put.key.as_str(), raw.as_slice())
                .map_err(db_error)?;
        }
        versions
    };
    txn.commit().map_err(db_error)?;
    Ok(versions)
}

/// Deletes `keys` if `condition` holds for each, in one write transaction.
fn remove(
    db: &Database,
    namespace: &Namespace,
    keys: &[String],
    condition: Condition,
) -> Result<Vec<bool>, StoreError> {
    let name = table_name(namespace);
    let txn = db.begin_write().map_err(db_error)?;
    let deleted = {
        let mut table = txn
            .open_table(TableDefinition::<&str, &[u8]>::new(&name))
            .map_err(db_error)?;
        let now = now_ms();
        let mut deleted = Vec::with_capacity(keys.len());
        for key in keys {
            let found = live_entry(&table, key, now)?.map(|entry| entry.version);
            if !condition_holds(condition, found) {
                return Err(StoreError::condition_failed(key, condition, found));
            }
            // An expired record is removed too, but did not count as present.
            let existed = table.remove(key.as_str()).map_err(db_error)?.is_some();
            deleted.push(existed && found.is_some());
        }
        deleted
    };
    txn.commit().map_err(db_error)?;
    Ok(deleted)
}

fn list(
    db: &Database,
    namespace: &Namespace,
    options: &ListOptions,
    limit: usize,
) -> Result<Page, StoreError> {
    let name = table_name(namespace);
    let txn = db.begin_read().map_err(db_error)?;
    let table = match txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Page::default()),
        Err(e) => return Err(db_error(e)),
    };
    let now = now_ms();
    let range = match &options.start_after {
        Some(after) if after.as_str() >= options.prefix.as_str() => table.range::<&str>((
            std::ops::Bound::Excluded(after.as_str()),
            std::ops::Bound::Unbounded,
        )),
        _ => table.range::<&str>(options.prefix.as_str()..),
    }
    .map_err(db_error)?;
    let mut keys = Vec::with_capacity(limit.min(64));
    let mut more = false;
    for item in range {
        let (key, raw) = item.map_err(db_error)?;
        let key = key.value();
        if !key.starts_with(&options.prefix) {
            break;
        }
        if !Entry::decode(raw.value())?.live(now) {
            continue;
        }
        if keys.len() == limit {
            more = true;
            break;
        }
        keys.push(key.to_owned());
    }
    let next = if more { keys.last().cloned() } else { None };
    Ok(Page { keys, next })
}

#[async_trait]
impl Store for FileStore {
    fn name(&self) -> &str {
        NAME
    }

    fn atomic_batches(&self) -> bool {
        true
    }

    async fn get(&self, namespace: &Namespace, key: &str) -> Result<Option<Record>, StoreError> {
        validate_key(key)?;
        let (namespace, keys) = (namespace.clone(), vec![key.to_owned()]);
        let mut records = self.blocking(move |db| read(db, &namespace, &keys)).await?;
        Ok(records.pop().flatten())
    }

    async fn put(&self, namespace: &Namespace, put: Put) -> Result<u64, StoreError> {
        validate_put(&put)?;
        let namespace = namespace.clone();
        let versions = self
            .blocking(move |db| write(db, &namespace, vec![put]))
            .await?;
        Ok(versions.first().copied().unwrap_or_default())
    }

    async fn delete(
        &self,
        namespace: &Namespace,
        key: &str,
        condition: Condition,
    ) -> Result<bool, StoreError> {
        validate_delete(key, condition)?;
        let (namespace, keys) = (namespace.clone(), vec![key.to_owned()]);
        let deleted = self
            .blocking(move |db| remove(db, &namespace, &keys, condition))
            .await?;
        Ok(deleted.first().copied().unwrap_or_default())
    }

    async fn list(&self, namespace: &Namespace, options: ListOptions) -> Result<Page, StoreError> {
        let limit = validate_list(&options)?;
        let namespace = namespace.clone();
        self.blocking(move |db| list(db, &namespace, &options, limit))
            .await
    }

    async fn get_many(
        &self,
        namespace: &Namespace,
        keys: &[String],
    ) -> Result<Vec<Option<Record>>, StoreError> {
        validate_keys(keys)?;
        let (namespace, keys) = (namespace.clone(), keys.to_vec());
        self.blocking(move |db| read(db, &namespace, &keys)).await
    }

    async fn put_many(
        &self,
        namespace: &Namespace,
        puts: Vec<Put>,
    ) -> Result<Vec<u64>, StoreError> {
        validate_puts(&puts)?;
        if puts.is_empty() {
            return Ok(Vec::new());
        }
        let namespace = namespace.clone();
        self.blocking(move |db| write(db, &namespace, puts)).await
    }

    async fn delete_many(
        &self,
        namespace: &Namespace,
        keys: &[String],
    ) -> Result<Vec<bool>, StoreError> {
        validate_keys(keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (namespace, keys) = (namespace.clone(), keys.to_vec());
        self.blocking(move |db| remove(db, &namespace, &keys, Condition::None))
            .await
    }
}

#[cfg(test)]
mod tests;
