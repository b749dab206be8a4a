//! A [`Store`] on Redis (feature `redis`): `MICRO_STORE=redis://host:port[/db]`.
//!
//! # Layout
//!
//! Every key of a namespace `database/table` starts with `micro:store:{database/table}:`;
//! the braces are a Redis Cluster hash tag, so a namespace lives in one slot and one script
//! may touch all its keys.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `micro:store:{db/table}:r:<key>` | hash | `value` (bytes) and `version` (decimal); a TTL is the key's `PEXPIRE` |
//! | `micro:store:{db/table}:keys` | sorted set | every key of the namespace, all at score 0 |
//!
//! The sorted set is the index behind [`Store::list`]: with equal scores, `ZRANGEBYLEX`
//! walks members in byte order from the prefix (or after `start_after`) to the prefix
//! followed by `0xFF` (no UTF-8 key contains that byte), a page at a time, without `SCAN`.
//! A record that expired leaves its member behind; listing skips it and removes it
//! (lazily, in the same script).
//!
//! # Atomicity
//!
//! Every operation is one Lua script (`scripts.rs`): a write checks its condition, writes the
//! hash, sets or clears the expiry and updates the index with nothing in between, and a batch
//! checks every condition before its first write, so batches are atomic
//! ([`Store::atomic_batches`] is `true`).
//!
//! # Failures
//!
//! The connection is a redis-rs `ConnectionManager`, made on first use, which reconnects in
//! the background after redis-server goes away. An operation that fails or takes longer than
//! the request timeout is [`StoreError::Unavailable`]; the next one after redis-server is
//! back succeeds. Scripts are loaded again by `EVALSHA` → `NOSCRIPT` → `SCRIPT LOAD`.

mod scripts;

use std::{sync::Arc, time::Duration};

use ::redis::{
    Client, Script, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use async_trait::async_trait;
use bytes::Bytes;
use micro_core::store::{
    self, Condition, ListOptions, Namespace, Page, Put, Record, SharedStore, Store, StoreError,
    validate_delete, validate_key, validate_keys, validate_list, validate_put, validate_puts,
};
use tokio::sync::OnceCell;

/// The URL scheme of the Redis store.
pub const SCHEME: &str = "redis";
/// The backend's name in errors.
const NAME: &str = "redis";

/// A [`Store`] on Redis; see the [module docs](self) for layout and atomicity.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), micro_core::store::StoreError> {
/// use micro_core::store::{Namespace, Put, Store};
/// use micro_plugins::redis::RedisStore;
///
/// let store = RedisStore::new("redis://127.0.0.1:6379/0")?;
/// store.put(&Namespace::default(), Put::new("greeting", "hello")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    client: Client,
    conn: OnceCell<ConnectionManager>,
    request_timeout: Duration,
    put: Script,
    delete: Script,
    get: Script,
    list: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .field("request_timeout", &self.inner.request_timeout)
            .finish_non_exhaustive()
    }
}

// === impl Inner ===

impl Inner {
    fn new(url: String, client: Client, request_timeout: Duration) -> Self {
        Self {
            url,
            client,
            conn: OnceCell::new(),
            request_timeout,
            put: Script::new(scripts::PUT),
            delete: Script::new(scripts::DELETE),
            get: Script::new(scripts::GET),
            list: Script::new(scripts::LIST),
        }
    }
}

/// Key names of one namespace.
struct Keys {
    index: String,
    record_prefix: String,
}

// === impl RedisStore ===

impl RedisStore {
    /// How long one operation may take, connecting included: 5 s.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

    /// A store on the Redis server at `url` (`redis://host:port[/db]`). Does not connect:
    /// the first operation does.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for a URL redis-rs cannot parse.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|e| {
            StoreError::InvalidArgument(format!(
                "store URL {url:?}: {e}; expected redis://host:port[/db]"
            ))
        })?;
        Ok(Self {
            inner: Arc::new(Inner::new(
                url.to_owned(),
                client,
                Self::DEFAULT_REQUEST_TIMEOUT,
            )),
        })
    }

    /// How long one operation may take before it fails with [`StoreError::Unavailable`].
    /// Default is [`Self::DEFAULT_REQUEST_TIMEOUT`]. Applies to the returned store (and
    /// the clones made of it later), at any time; clones made before keep theirs. The
    /// connection is made with this timeout, so a store that shares its connection with
    /// such clones, or has connected already, gets a connection of its own (made on its
    /// first operation).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) if inner.conn.get().is_none() => inner.request_timeout = timeout,
            _ => {
                let inner = Inner::new(self.inner.url.clone(), self.inner.client.clone(), timeout);
                self.inner = Arc::new(inner);
            }
        }
        self
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> StoreError {
        StoreError::unavailable(NAME, format!("{}: {what}", self.inner.url))
    }

    /// As [`unavailable`](Self::unavailable), keeping `error` as the source.
    fn failed(&self, what: impl std::fmt::Display, error: ::redis::RedisError) -> StoreError {
        StoreError::unavailable_with(NAME, format!("{}: {what}", self.inner.url), error)
    }

    /// Runs `op` on the shared connection within the request timeout.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let inner = &self.inner;
        let work = async {
            let conn = inner
                .conn
                .get_or_try_init(|| async {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(inner.request_timeout))
                        .set_response_timeout(Some(inner.request_timeout))
                        .set_number_of_retries(1)
                        .set_max_delay(Duration::from_secs(1));
                    ConnectionManager::new_with_config(inner.client.clone(), config).await
                })
                .await
                .map_err(|e| self.failed(format!("cannot connect: {e}"), e))?;
            op(conn.clone()).await
        };
        match tokio::time::timeout(inner.request_timeout, work).await {
            Ok(result) => result,
            Err(_) => {
                Err(self.unavailable(format!("no answer within {:?}", inner.request_timeout)))
            }
        }
    }

    fn redis_error(&self, error: ::redis::RedisError) -> StoreError {
        tracing::debug!(%error, url = %self.inner.url, "redis store operation failed");
        self.failed(error.to_string(), error)
    }

    async fn write(&self, namespace: &Namespace, puts: &[Put]) -> Result<Vec<u64>, StoreError> {
        let keys = Keys::new(namespace);
        let mut invocation = self.inner.put.key(&keys.index);
        for put in puts {
            invocation.key(keys.record(&put.key));
            let (condition, version) = match put.condition {
                Condition::None => ("n", 0),
                Condition::Absent => ("a", 0),
                Condition::Version(version) => ("v", version),
            };
            let ttl_ms = put.ttl.map_or(0, |ttl| ttl.as_millis().max(1));
            invocation
                .arg(&put.key)
                .arg(put.value.as_ref())
                .arg(condition)
                .arg(version)
                .arg(u64::try_from(ttl_ms).unwrap_or(u64::MAX));
        }
        let reply: Value = self
            .run(|mut conn| async move {
                invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| self.redis_error(e))
            })
            .await?;
        let items = self.array(reply)?;
        match items.first().and_then(int) {
            Some(1) => items[1..]
                .iter()
                .map(|v| {
                    int(v)
                        .and_then(|v| u64::try_from(v).ok())
                        .ok_or_else(|| self.bad_reply("a version"))
                })
                .collect(),
            Some(0) => Err(self.condition_failed(&items, |i| {
                puts.get(i).map(|put| (put.key.as_str(), put.condition))
            })),
            _ => Err(self.bad_reply("a put result")),
        }
    }

    async fn remove(
        &self,
        namespace: &Namespace,
        user_keys: &[String],
        condition: Condition,
    ) -> Result<Vec<bool>, StoreError> {
        let keys = Keys::new(namespace);
        let mut invocation = self.inner.delete.key(&keys.index);
        let want = match condition {
            Condition::Version(version) => version,
            _ => 0,
        };
        invocation.arg(want);
        for key in user_keys {
            invocation.key(keys.record(key)).arg(key);
        }
        let reply: Value = self
            .run(|mut conn| async move {
                invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| self.redis_error(e))
            })
            .await?;
        let items = self.array(reply)?;
        match items.first().and_then(int) {
            Some(1) => Ok(items[1..].iter().map(|v| int(v) == Some(1)).collect()),
            Some(0) => Err(self.condition_failed(&items, |i| {
                user_keys.get(i).map(|key| (key.as_str(), condition))
            })),
            _ => Err(self.bad_reply("a delete result")),
        }
    }

    async fn read(
        &self,
        namespace: &Namespace,
        user_keys: &[String],
    ) -> Result<Vec<Option<Record>>, StoreError> {
        if user_keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = Keys::new(namespace);
        let mut invocation = self.inner.get.prepare_invoke();
        for key in user_keys {
            invocation.key(keys.record(key));
        }
        let reply: Value = self
            .run(|mut conn| async move {
                invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| self.redis_error(e))
            })
            .await?;
        let items = self.array(reply)?;
        if items.len() != user_keys.len() {
            return Err(self.bad_reply("one record per key"));
        }
        items
            .into_iter()
            .zip(user_keys)
            .map(|(item, key)| match item {
                Value::Nil => Ok(None),
                item => {
                    let fields = self.array(item)?;
                    let (Some(value), Some(version), Some(pttl)) = (
                        fields.first().and_then(bytes),
                        fields.get(1).and_then(bytes).and_then(|v| {
                            std::str::from_utf8(&v).ok().and_then(|v| v.parse().ok())
                        }),
                        fields.get(2).and_then(int),
                    ) else {
                        return Err(self.bad_reply("value, version and PTTL"));
                    };
                    Ok(Some(Record {
                        key: key.clone(),
                        value,
                        version,
                        ttl: u64::try_from(pttl).ok().map(Duration::from_millis),
                    }))
                }
            })
            .collect()
    }

    fn array(&self, value: Value) -> Result<Vec<Value>, StoreError> {
        match value {
            Value::Array(items) | Value::Set(items) => Ok(items),
            _ => Err(self.bad_reply("an array")),
        }
    }

    fn bad_reply(&self, expected: &str) -> StoreError {
        self.unavailable(format!(
            "unexpected reply from redis-server; expected {expected}"
        ))
    }

    /// The error for a script's `{0, index, found}`.
    fn condition_failed<'a>(
        &self,
        items: &[Value],
        op: impl FnOnce(usize) -> Option<(&'a str, Condition)>,
    ) -> StoreError {
        let index = items
            .get(1)
            .and_then(int)
            .and_then(|i| usize::try_from(i).ok());
        let found = items
            .get(2)
            .and_then(int)
            .and_then(|v| u64::try_from(v).ok())
            .filter(|v| *v > 0);
        match index.and_then(op) {
            Some((key, condition)) => StoreError::condition_failed(key, condition, found),
            None => self.bad_reply("the index of a failed condition"),
        }
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn bytes(value: &Value) -> Option<Bytes> {
    match value {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        Value::Okay => Some(Bytes::from_static(b"OK")),
        _ => None,
    }
}

// === impl Keys ===

impl Keys {
    fn new(namespace: &Namespace) -> Self {
        let base = format!(
            "micro:store:{{{}/{}}}:",
            namespace.database(),
            namespace.table()
        );
        Self {
            index: format!("{base}keys"),
            record_prefix: format!("{base}r:"),
        }
    }

    fn record(&self, key: &str) -> String {
        format!("{}{key}", self.record_prefix)
    }
}

#[async_trait]
impl Store for RedisStore {
    fn name(&self) -> &str {
        NAME
    }

    fn atomic_batches(&self) -> bool {
        true
    }

    async fn get(&self, namespace: &Namespace, key: &str) -> Result<Option<Record>, StoreError> {
        validate_key(key)?;
        let mut records = self.read(namespace, &[key.to_owned()]).await?;
        Ok(records.pop().flatten())
    }

    async fn put(&self, namespace: &Namespace, put: Put) -> Result<u64, StoreError> {
        validate_put(&put)?;
        let versions = self.write(namespace, std::slice::from_ref(&put)).await?;
        versions
            .first()
            .copied()
            .ok_or_else(|| self.bad_reply("a version"))
    }

    async fn delete(
        &self,
        namespace: &Namespace,
        key: &str,
        condition: Condition,
    ) -> Result<bool, StoreError> {
        validate_delete(key, condition)?;
        let deleted = self.remove(namespace, &[key.to_owned()], condition).await?;
        Ok(deleted.first().copied().unwrap_or_default())
    }

    async fn list(&self, namespace: &Namespace, options: ListOptions) -> Result<Page, StoreError> {
        let limit = validate_list(&options)?;
        let keys = Keys::new(namespace);
        let mut min = format!("[{}", options.prefix);
        if let Some(after) = &options.start_after
            && after.as_str() >= options.prefix.as_str()
        {
            min = format!("({after}");
        }
        let mut max = b"(".to_vec();
        max.extend_from_slice(options.prefix.as_bytes());
        max.push(0xFF);
        let mut invocation = self.inner.list.key(&keys.index);
        invocation
            .arg(&keys.record_prefix)
            .arg(min)
            .arg(max)
            .arg(limit);
        let reply: Value = self
            .run(|mut conn| async move {
                invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| self.redis_error(e))
            })
            .await?;
        let mut items = self.array(reply)?.into_iter();
        let (Some(more), Some(members)) = (items.next(), items.next()) else {
            return Err(self.bad_reply("a page"));
        };
        let keys = self
            .array(members)?
            .iter()
            .map(|member| {
                bytes(member)
                    .and_then(|b| String::from_utf8(b.to_vec()).ok())
                    .ok_or_else(|| self.bad_reply("keys"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next = if int(&more) == Some(1) {
            keys.last().cloned()
        } else {
            None
        };
        Ok(Page { keys, next })
    }

    async fn get_many(
        &self,
        namespace: &Namespace,
        keys: &[String],
    ) -> Result<Vec<Option<Record>>, StoreError> {
        validate_keys(keys)?;
        self.read(namespace, keys).await
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
        self.write(namespace, &puts).await
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
        self.remove(namespace, keys, Condition::None).await
    }
}

fn open(url: &str) -> Result<SharedStore, StoreError> {
    Ok(Arc::new(RedisStore::new(url)?))
}

/// Teaches micro-core's [`store::from_url`] and [`store::from_env`] (so `MICRO_STORE`) the
/// `redis://` scheme. Idempotent; [`crate::install`] calls it.
pub fn install() {
    store::register_scheme(SCHEME, open);
}
