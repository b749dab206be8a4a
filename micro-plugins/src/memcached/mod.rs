//! A [`Store`] on memcached (feature `memcached`): `MICRO_STORE=memcached://host:port`.
//!
//! memcached is a cache: it may evict any item under memory pressure and forgets everything
//! on restart. Use it for data that can be lost (sessions, caches), not as the system of
//! record. The store speaks memcached's meta protocol (memcached ≥ 1.6) itself, over pooled
//! tokio TCP connections (see `proto.rs`): the requests it needs are few, and its
//! compare-and-set and pipelining need the meta commands' flags.
//!
//! # Layout
//!
//! | item | holds |
//! |---|---|
//! | `micro:store:{db}/{table}:k:<key>` | a record, when the key is printable ASCII without spaces and the item key fits memcached's 250 bytes |
//! | `micro:store:{db}/{table}:h:<hex>` | a record of any other key, under the FNV-1a 128 hash of the key |
//! | `micro:store:{db}/{table}:index` | the namespace's keys, one per line: what [`Store::list`] reads |
//!
//! A record item holds a format byte, the version, the absolute expiry (ms since the Unix
//! epoch, 0 for none), the key itself (so a hash collision is detected, never read as the
//! other key) and the value. Versions live in the record: a write reads the item with its
//! CAS token (`mg`), checks the condition, and stores the next version only if the token is
//! unchanged (`ms C<cas>`, or `ms ME` — add — when there is no item); a lost race reads
//! again. memcached's exptime is the TTL in whole seconds rounded up, plus one (its clock
//! ticks once a second); reads use the record's millisecond expiry, so a record expires on
//! time and memcached drops it a moment later.
//!
//! The index is one item updated by compare-and-set. A write stores its record first, then
//! adds the key to the index; a delete (or a listing that met a record that is gone)
//! removes keys from the index, then reads them again and puts back any that was written in
//! between. So a live record is always listed once both sides finish; a listing skips index
//! entries whose record is gone. The index is one memcached item: a namespace holds at most
//! ~1 MB of key names (memcached's item size limit, `-I`), and an evicted index hides keys
//! from [`Store::list`] (not from [`Store::get`]) until they are written again.
//!
//! # Batches
//!
//! Not atomic ([`Store::atomic_batches`] is `false`). A batch is validated, then every item
//! is read and every condition checked before anything is written, so a failed condition or
//! bad input writes nothing. The writes then go out pipelined, each guarded by the CAS token
//! that was read: a key written by someone else in between is read and checked again on its
//! own. That is the race window: a key whose condition no longer holds then fails the batch
//! with [`StoreError::ConditionFailed`] after other keys of it were written, as does a lost
//! connection half-way ([`StoreError::Unavailable`]).

mod layout;
mod proto;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use micro_core::store::{
    self, Condition, ListOptions, Namespace, Page, Put, Record, SharedStore, Store, StoreError,
    condition_holds, validate_delete, validate_key, validate_keys, validate_list, validate_put,
    validate_puts,
};

use layout::{Entry, Keys, decode_index, encode_index, expiry, now_ms};
use proto::{Conn, Item, Mode, Outcome, Pool};

/// The URL scheme of the memcached store.
pub const SCHEME: &str = "memcached";
/// The backend's name in errors.
const NAME: &str = "memcached";
/// memcached's port when the URL names none.
const DEFAULT_PORT: u16 = 11211;
/// How often one key's write is retried after losing a CAS race before giving up.
const MAX_ATTEMPTS: usize = 100;

/// A [`Store`] on memcached; see the [module docs](self) for layout, listing and batches.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), micro_core::store::StoreError> {
/// use micro_core::store::{Namespace, Put, Store};
/// use micro_plugins::memcached::MemcachedStore;
///
/// let store = MemcachedStore::new("memcached://127.0.0.1:11211")?;
/// store.put(&Namespace::default(), Put::new("greeting", "hello")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MemcachedStore {
    inner: Arc<Inner>,
    /// Per handle, not in `inner`: a clone may set its own, and setting it never depends on
    /// whether other clones exist.
    request_timeout: Duration,
}

#[derive(Debug)]
struct Inner {
    url: String,
    pool: Pool,
}

/// Why an operation stopped: the connection broke, or the store said no.
enum Fail {
    Io(std::io::Error),
    Store(StoreError),
}

impl From<std::io::Error> for Fail {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

impl From<StoreError> for Fail {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// A key's item as read: its CAS token and, when the record is live, its version.
struct Current {
    cas: Option<u64>,
    version: Option<u64>,
}

// === impl MemcachedStore ===

impl MemcachedStore {
    /// How long one operation may take, connecting included: 5 s.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

    /// A store on the memcached at `url` (`memcached://host[:port]`, port 11211 by default).
    /// Does not connect: operations do.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for another scheme, a path or a query.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| {
            StoreError::InvalidArgument(format!(
                "store URL {url:?}: {why}; expected memcached://host:port"
            ))
        };
        let rest = url
            .strip_prefix("memcached://")
            .ok_or_else(|| bad("not a memcached URL"))?;
        let host = rest.strip_suffix('/').unwrap_or(rest);
        if host.is_empty() || host.contains(['/', '?', '@']) {
            return Err(bad("expected only a host and a port"));
        }
        let addr = match host.rsplit_once(':') {
            Some((_, port)) if !host.ends_with(']') => {
                port.parse::<u16>().map_err(|_| bad("bad port"))?;
                host.to_owned()
            }
            _ => format!("{host}:{DEFAULT_PORT}"),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                pool: Pool::new(addr),
            }),
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// How long one operation may take before it fails with [`StoreError::Unavailable`].
    /// Default is [`Self::DEFAULT_REQUEST_TIMEOUT`]. Applies to the returned store (and
    /// the clones made of it later), at any time; clones made before keep theirs. All of
    /// them share one connection pool.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> StoreError {
        StoreError::unavailable(NAME, format!("{}: {what}", self.inner.url))
    }

    /// Runs `op` on a pooled connection within the request timeout. The connection goes back
    /// to the pool only when `op` succeeded (a failed one may have replies in flight).
    async fn with_conn<T>(
        &self,
        op: impl AsyncFnOnce(&mut Conn) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let inner = &self.inner;
        let work = async {
            let mut conn = inner.pool.get(self.request_timeout).await?;
            let result = op(&mut conn).await;
            if result.is_ok() {
                inner.pool.put(conn).await;
            }
            result
        };
        match tokio::time::timeout(self.request_timeout, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Fail::Store(error))) => Err(error),
            Ok(Err(Fail::Io(error))) => {
                inner.pool.clear().await;
                tracing::debug!(%error, url = %inner.url, "memcached store operation failed");
                let message = format!("{}: {error}", inner.url);
                Err(StoreError::unavailable_with(NAME, message, error))
            }
            Err(_) => Err(self.unavailable(format!("no answer within {:?}", self.request_timeout))),
        }
    }
}

/// Reads the items of `keys`, pipelined.
async fn read_items(
    conn: &mut Conn,
    keys: &Keys,
    user_keys: &[&str],
) -> Result<Vec<Option<Item>>, Fail> {
    for key in user_keys {
        conn.queue_get(&keys.item(key));
    }
    conn.flush().await?;
    let mut items = Vec::with_capacity(user_keys.len());
    for _ in user_keys {
        items.push(conn.read_get().await?);
    }
    Ok(items)
}

/// The live entry in `item`, if any.
fn live(key: &str, item: Option<&Item>, now: u64) -> Result<Option<Entry>, StoreError> {
    match item {
        Some(item) => Ok(Some(Entry::decode(key, &item.data)?).filter(|e| e.live(now))),
        None => Ok(None),
    }
}

fn current(key: &str, item: Option<&Item>, now: u64) -> Result<Current, StoreError> {
    Ok(Current {
        cas: item.map(|item| item.cas),
        version: live(key, item, now)?.map(|entry| entry.version),
    })
}

/// Queues the write of `put` over the item read as `current`; returns its version.
fn queue_write(conn: &mut Conn, keys: &Keys, put: &Put, current: &Current, now: u64) -> u64 {
    let version = current.version.map_or(1, |v| v + 1);
    let (expires, exptime) = expiry(put.ttl, now);
    let data = Entry::encode(&put.key, version, expires, &put.value);
    let mode = current.cas.map_or(Mode::Add, Mode::Cas);
    conn.queue_set(&keys.item(&put.key), &data, mode, exptime);
    version
}

/// Writes one key: read, check, compare-and-set; again after a lost race.
async fn put_one(conn: &mut Conn, keys: &Keys, put: &Put) -> Result<u64, Fail> {
    for _ in 0..MAX_ATTEMPTS {
        let items = read_items(conn, keys, &[&put.key]).await?;
        let now = now_ms();
        let current = current(&put.key, items[0].as_ref(), now)?;
        if !condition_holds(put.condition, current.version) {
            return Err(
                StoreError::condition_failed(&put.key, put.condition, current.version).into(),
            );
        }
        let version = queue_write(conn, keys, put, &current, now);
        conn.flush().await?;
        if conn.read_outcome().await? == Outcome::Done {
            return Ok(version);
        }
    }
    Err(contended(&put.key))
}

fn contended(key: &str) -> Fail {
    Fail::Store(StoreError::unavailable(
        NAME,
        format!("key {key:?} changed {MAX_ATTEMPTS} times while being written; try again"),
    ))
}

/// Deletes one key if `condition` holds; returns whether a live record was deleted.
async fn delete_one(
    conn: &mut Conn,
    keys: &Keys,
    key: &str,
    condition: Condition,
) -> Result<bool, Fail> {
    for _ in 0..MAX_ATTEMPTS {
        let items = read_items(conn, keys, &[key]).await?;
        let current = current(key, items[0].as_ref(), now_ms())?;
        if !condition_holds(condition, current.version) {
            return Err(StoreError::condition_failed(key, condition, current.version).into());
        }
        let Some(cas) = current.cas else {
            return Ok(false);
        };
        conn.queue_delete(&keys.item(key), cas);
        conn.flush().await?;
        if conn.read_outcome().await? == Outcome::Done {
            return Ok(current.version.is_some());
        }
    }
    Err(contended(key))
}

/// Changes the index by compare-and-set; `change` returns whether it changed anything.
async fn update_index(
    conn: &mut Conn,
    keys: &Keys,
    mut change: impl FnMut(&mut BTreeSet<String>) -> bool,
) -> Result<(), Fail> {
    let index = keys.index();
    for _ in 0..MAX_ATTEMPTS {
        conn.queue_get(&index);
        conn.flush().await?;
        let item = conn.read_get().await?;
        let mut set = decode_index(item.as_ref().map(|item| &item.data));
        if !change(&mut set) {
            return Ok(());
        }
        let mode = item.map_or(Mode::Add, |item| Mode::Cas(item.cas));
        conn.queue_set(&index, &encode_index(&set), mode, 0);
        conn.flush().await?;
        if conn.read_outcome().await? == Outcome::Done {
            return Ok(());
        }
    }
    Err(contended("(index)"))
}

async fn index_add(conn: &mut Conn, keys: &Keys, added: &[&str]) -> Result<(), Fail> {
    update_index(conn, keys, |set| {
        added.iter().fold(false, |changed, key| {
            set.insert((*key).to_owned()) | changed
        })
    })
    .await
}

/// Removes `removed` from the index, then puts back those written in the meantime.
async fn index_remove(conn: &mut Conn, keys: &Keys, removed: &[&str]) -> Result<(), Fail> {
    if removed.is_empty() {
        return Ok(());
    }
    update_index(conn, keys, |set| {
        removed
            .iter()
            .fold(false, |changed, key| set.remove(*key) | changed)
    })
    .await?;
    let items = read_items(conn, keys, removed).await?;
    let now = now_ms();
    let mut back = Vec::new();
    for (key, item) in removed.iter().zip(&items) {
        if live(key, item.as_ref(), now)?.is_some() {
            back.push(*key);
        }
    }
    if back.is_empty() {
        return Ok(());
    }
    index_add(conn, keys, &back).await
}

async fn put_many(conn: &mut Conn, keys: &Keys, puts: &[Put]) -> Result<Vec<u64>, Fail> {
    let user_keys: Vec<&str> = puts.iter().map(|put| put.key.as_str()).collect();
    let items = read_items(conn, keys, &user_keys).await?;
    let now = now_ms();
    let mut currents = Vec::with_capacity(puts.len());
    for (put, item) in puts.iter().zip(&items) {
        let current = current(&put.key, item.as_ref(), now)?;
        if !condition_holds(put.condition, current.version) {
            return Err(
                StoreError::condition_failed(&put.key, put.condition, current.version).into(),
            );
        }
        currents.push(current);
    }
    let mut versions: Vec<u64> = puts
        .iter()
        .zip(&currents)
        .map(|(put, current)| queue_write(conn, keys, put, current, now))
        .collect();
    conn.flush().await?;
    let mut raced = Vec::new();
    for (i, _) in puts.iter().enumerate() {
        if conn.read_outcome().await? == Outcome::Raced {
            raced.push(i);
        }
    }
    for i in raced {
        tracing::debug!(key = %puts[i].key, "memcached batch write raced; writing it again");
        match put_one(conn, keys, &puts[i]).await {
            Ok(version) => versions[i] = version,
            Err(error) => {
                // Keys written before the failure stay written: list them.
                let written: Vec<&str> = user_keys
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, k)| *k)
                    .collect();
                index_add(conn, keys, &written).await?;
                return Err(error);
            }
        }
    }
    index_add(conn, keys, &user_keys).await?;
    Ok(versions)
}

async fn delete_many(
    conn: &mut Conn,
    keys: &Keys,
    user_keys: &[String],
) -> Result<Vec<bool>, Fail> {
    let refs: Vec<&str> = user_keys.iter().map(String::as_str).collect();
    let items = read_items(conn, keys, &refs).await?;
    let now = now_ms();
    let mut currents = Vec::with_capacity(items.len());
    for (key, item) in refs.iter().zip(&items) {
        currents.push(current(key, item.as_ref(), now)?);
    }
    let mut sent = Vec::new();
    for (i, current) in currents.iter().enumerate() {
        if let Some(cas) = current.cas {
            conn.queue_delete(&keys.item(refs[i]), cas);
            sent.push(i);
        }
    }
    conn.flush().await?;
    let mut deleted: Vec<bool> = currents.iter().map(|c| c.version.is_some()).collect();
    let mut raced = Vec::new();
    for &i in &sent {
        if conn.read_outcome().await? == Outcome::Raced {
            raced.push(i);
        }
    }
    for i in raced {
        deleted[i] = delete_one(conn, keys, refs[i], Condition::None).await?;
    }
    index_remove(conn, keys, &refs).await?;
    Ok(deleted)
}

async fn list(
    conn: &mut Conn,
    keys: &Keys,
    options: &ListOptions,
    limit: usize,
) -> Result<Page, Fail> {
    conn.queue_get(&keys.index());
    conn.flush().await?;
    let index = decode_index(conn.read_get().await?.as_ref().map(|item| &item.data));
    let start = match &options.start_after {
        Some(after) if after.as_str() >= options.prefix.as_str() => {
            std::ops::Bound::Excluded(after.as_str())
        }
        _ => std::ops::Bound::Included(options.prefix.as_str()),
    };
    let mut candidates = index
        .range::<str, _>((start, std::ops::Bound::Unbounded))
        .take_while(|key| key.starts_with(&options.prefix))
        .map(String::as_str);
    let mut found: Vec<String> = Vec::new();
    let mut gone: Vec<&str> = Vec::new();
    while found.len() <= limit {
        let chunk: Vec<&str> = candidates
            .by_ref()
            .take((limit + 1 - found.len()).max(16))
            .collect();
        if chunk.is_empty() {
            break;
        }
        let items = read_items(conn, keys, &chunk).await?;
        let now = now_ms();
        for (key, item) in chunk.iter().zip(&items) {
            if live(key, item.as_ref(), now)?.is_some() {
                found.push((*key).to_owned());
            } else {
                gone.push(key);
            }
        }
    }
    index_remove(conn, keys, &gone).await?;
    let more = found.len() > limit;
    found.truncate(limit);
    let next = if more { found.last().cloned() } else { None };
    Ok(Page { keys: found, next })
}

#[async_trait]
impl Store for MemcachedStore {
    fn name(&self) -> &str {
        NAME
    }

    fn atomic_batches(&self) -> bool {
        false
    }

    async fn get(&self, namespace: &Namespace, key: &str) -> Result<Option<Record>, StoreError> {
        validate_key(key)?;
        let mut records = self.get_many(namespace, &[key.to_owned()]).await?;
        Ok(records.pop().flatten())
    }

    async fn put(&self, namespace: &Namespace, put: Put) -> Result<u64, StoreError> {
        validate_put(&put)?;
        let keys = Keys::new(namespace);
        self.with_conn(async |conn| {
            let version = put_one(conn, &keys, &put).await?;
            index_add(conn, &keys, &[&put.key]).await?;
            Ok(version)
        })
        .await
    }

    async fn delete(
        &self,
        namespace: &Namespace,
        key: &str,
        condition: Condition,
    ) -> Result<bool, StoreError> {
        validate_delete(key, condition)?;
        let keys = Keys::new(namespace);
        self.with_conn(async |conn| {
            let deleted = delete_one(conn, &keys, key, condition).await?;
            if deleted {
                index_remove(conn, &keys, &[key]).await?;
            }
            Ok(deleted)
        })
        .await
    }

    async fn list(&self, namespace: &Namespace, options: ListOptions) -> Result<Page, StoreError> {
        let limit = validate_list(&options)?;
        let keys = Keys::new(namespace);
        self.with_conn(async |conn| list(conn, &keys, &options, limit).await)
            .await
    }

    async fn get_many(
        &self,
        namespace: &Namespace,
        user_keys: &[String],
    ) -> Result<Vec<Option<Record>>, StoreError> {
        validate_keys(user_keys)?;
        if user_keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = Keys::new(namespace);
        let refs: Vec<&str> = user_keys.iter().map(String::as_str).collect();
        self.with_conn(async |conn| {
            let items = read_items(conn, &keys, &refs).await?;
            let now = now_ms();
            let mut records = Vec::with_capacity(items.len());
            for (key, item) in refs.iter().zip(&items) {
                records.push(live(key, item.as_ref(), now)?.map(|e| e.record(key, now)));
            }
            Ok(records)
        })
        .await
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
        let keys = Keys::new(namespace);
        self.with_conn(async |conn| put_many(conn, &keys, &puts).await)
            .await
    }

    async fn delete_many(
        &self,
        namespace: &Namespace,
        user_keys: &[String],
    ) -> Result<Vec<bool>, StoreError> {
        validate_keys(user_keys)?;
        if user_keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = Keys::new(namespace);
        self.with_conn(async |conn| delete_many(conn, &keys, user_keys).await)
            .await
    }
}

fn open(url: &str) -> Result<SharedStore, StoreError> {
    Ok(Arc::new(MemcachedStore::new(url)?))
}

/// Teaches micro-core's [`store::from_url`] and [`store::from_env`] (so `MICRO_STORE`) the
/// `memcached://` scheme. Idempotent; [`crate::install`] calls it.
pub fn install() {
    store::register_scheme(SCHEME, open);
}
