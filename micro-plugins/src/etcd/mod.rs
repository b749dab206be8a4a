//! The etcd registry: service discovery across machines, on an etcd v3 cluster; and
//! [`EtcdSync`], locks and leader election on etcd (see [`sync`] for the design).
//!
//! ```no_run
//! # async fn demo() -> Result<(), micro_core::RegistryError> {
//! use micro_plugins::etcd::EtcdRegistry;
//!
//! let registry = EtcdRegistry::builder(["127.0.0.1:2379", "127.0.0.1:22379"])
//!     .namespace("dev")
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! or by URL, with `MICRO_REGISTRY=etcd://127.0.0.1:2379,127.0.0.1:22379?namespace=dev` once
//! [`install`] (or [`crate::install`]) has taught micro-core the `etcd` scheme, or directly
//! with [`from_url`].
//!
//! # Key layout
//!
//! Each node is one key, attached to a lease:
//!
//! ```text
//! <prefix><namespace>/<service>/<node-id>  →  JSON of a micro_core Service with exactly one node
//! /micro/registry/default/greeter/greeter-4b0c6d1e-…  →  {"name":"greeter","version":"1.0.0",…,"nodes":[{"id":"greeter-4b0c6d1e-…","address":"10.0.0.7:50051",…}]}
//! ```
//!
//! The prefix is `/micro/registry/` unless [`EtcdRegistryBuilder::prefix`] says otherwise;
//! the namespace is `default` unless [`EtcdRegistryBuilder::namespace`] says otherwise.
//! Namespaces keep environments (`dev`, `staging`) apart on one etcd: a registry sees only
//! its own namespace. Service names and node ids never contain `/` (micro-core validates
//! them), so `<prefix><namespace>/<service>/` lists exactly one service. The value is the
//! same serde encoding as micro-core's [`Service`], so any JSON-speaking tool can read it.
//!
//! # Leases and keepalive
//!
//! Records live as long as a lease. A registry instance holds one lease per distinct
//! registration TTL (a [`Service`](micro_core::Service) uses one TTL, so in practice one
//! lease), granted on the first `register` and kept alive by one long-lived `LeaseKeepAlive`
//! stream that sends a keepalive every TTL/3 and reads the answers. When the lease is lost
//! (etcd answers TTL 0 because it expired or was revoked, or no answer came for a whole TTL
//! and reopening the stream reports the lease gone) the registry grants a new lease and puts
//! every record registered through this instance again; it retries forever, with
//! exponential backoff from 100 ms up to TTL/3 (at most 10 s), and logs every loss and
//! recovery. A broken stream whose lease still exists (etcd restarted: it keeps leases) is
//! simply reopened. Calling `register` again (a service's heartbeat) re-puts the record with
//! the current lease.
//!
//! `deregister` deletes the keys; when no record of a TTL is left, the registry revokes that
//! lease and stops its keepalive. Dropping the registry stops the keepalives without
//! deregistering: the records expire after their TTL, as for a crashed process.
//!
//! # Watch
//!
//! A watch lists the prefix, then watches it from the listing's revision + 1, so no change
//! falls in between. Events are derived against what the watcher has seen: a put of a new
//! key is `Create`, of a changed record `Update`, an identical put (a heartbeat) is no event;
//! a delete (deregistration or lease expiry) is `Delete` with the last record. Revisions only
//! move forward: anything at or below the last revision seen is skipped. When etcd has
//! compacted the revision the watch needs, the watcher lists again, emits the difference
//! against what it has reported, and watches on from the new listing. When the watch stream
//! fails (its member died), the watcher opens it again at once from the last revision seen,
//! once per endpoint, so a cluster that lost a member keeps the watch going without a gap
//! or a duplicate. When that fails too (etcd is unreachable), the watch yields one `Err` and
//! ends;
//! [`CacheRegistry`](micro_core::registry::CacheRegistry) then keeps serving the last known
//! nodes and watches again with backoff.
//!
//! # Connection
//!
//! Nothing connects until the first operation (so [`from_url`] is synchronous and cheap).
//! The registry keeps one client per endpoint and uses one endpoint at a time, like etcd's
//! own clients: when a request, the keepalive or a watch fails because that member is
//! unavailable, it moves on to the next endpoint. (etcd-client's balanced channel keeps
//! sending a share of the requests to a dead member.) Each request times out after
//! [`EtcdRegistryBuilder::request_timeout`] (5 s by default) and is tried again, up to once
//! per endpoint, when an attempt fails with an unavailable member. A watch whose member
//! fails resumes on another member from the last revision it saw (see above).

mod config;
mod lease;
mod pool;
pub mod sync;
mod url;
mod watch;

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use etcd_client::{ConnectOptions, DeleteOptions, GetOptions, PutOptions};
use micro_core::registry::{
    self, RegisterOptions, Registry, RegistryError, Service, WatchOptions, Watcher,
};
use tokio::sync::{Mutex, OnceCell};

use pool::Pool;

pub use config::{CONFIG_PREFIX, EtcdConfigSource};
pub use sync::{ELECTION_PREFIX, EtcdSync, LOCK_PREFIX};
pub use url::{SCHEME, from_url, install};

/// The key prefix records live under unless [`EtcdRegistryBuilder::prefix`] changes it.
pub const DEFAULT_PREFIX: &str = "/micro/registry/";

/// The namespace used unless [`EtcdRegistryBuilder::namespace`] changes it.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The endpoint used when a URL names none (`etcd` or `etcd://`).
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:2379";

const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings find a dead connection (a partition) even while streams are idle.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Registry`] on etcd. Clones share the connection, the leases and the records.
///
/// See the [module documentation](self) for the key layout, the lease and watch design.
#[derive(Clone)]
pub struct EtcdRegistry {
    inner: Arc<Inner>,
}

/// Builds an [`EtcdRegistry`]; from [`EtcdRegistry::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct EtcdRegistryBuilder {
    endpoints: Vec<String>,
    namespace: String,
    prefix: String,
    request_timeout: Duration,
    connect_timeout: Duration,
}

pub(crate) struct Inner {
    name: String,
    endpoints: Vec<String>,
    /// `<prefix><namespace>/`.
    root: String,
    options: ConnectOptions,
    pool: OnceCell<Arc<Pool>>,
    state: Mutex<State>,
}

/// What this instance registered, and its leases.
#[derive(Default)]
pub(crate) struct State {
    /// key → record registered through this instance.
    records: BTreeMap<String, Owned>,
    /// TTL in seconds → its lease.
    leases: HashMap<i64, lease::Slot>,
}

/// A record registered through this instance.
#[derive(Debug, Clone)]
struct Owned {
    value: String,
    ttl: i64,
}

// === impl EtcdRegistryBuilder ===

impl EtcdRegistryBuilder {
    /// Keeps this registry's records apart from other environments: only records of the
    /// same namespace are seen. Default `default`. Letters, digits, `.`, `_` and `-`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The key prefix, for example `/micro/registry/` (the default). A missing trailing
    /// `/` is added.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one etcd request may take. Default 5 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long connecting to one endpoint may take. Default 3 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The registry. Connects lazily, on the first operation.
    ///
    /// # Errors
    /// [`RegistryError::Backend`] for a configuration that cannot work: no endpoints, an
    /// empty or invalid namespace, a prefix not starting with `/`.
    pub fn build(self) -> Result<EtcdRegistry, RegistryError> {
        let endpoints: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        let describe = format!("etcd://{}", endpoints.join(","));
        if endpoints.is_empty() {
            return Err(RegistryError::backend_msg(
                describe,
                "no endpoints given; expected host:port[,host:port…]",
            ));
        }
        if self.namespace.is_empty()
            || self.namespace == "."
            || self.namespace == ".."
            || !self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(RegistryError::backend_msg(
                describe,
                format!(
                    "invalid namespace {:?}: use letters, digits, '.', '_' and '-'",
                    self.namespace
                ),
            ));
        }
        let mut prefix = self.prefix;
        if !prefix.starts_with('/') {
            return Err(RegistryError::backend_msg(
                describe,
                format!("invalid key prefix {prefix:?}: it must start with '/'"),
            ));
        }
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let mut name = describe;
        if self.namespace != DEFAULT_NAMESPACE {
            name.push_str("?namespace=");
            name.push_str(&self.namespace);
        }
        let options = ConnectOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(H2_KEEPALIVE_INTERVAL, H2_KEEPALIVE_TIMEOUT);
        Ok(EtcdRegistry {
            inner: Arc::new(Inner {
                name,
                endpoints,
                root: format!("{prefix}{}/", self.namespace),
                options,
                pool: OnceCell::new(),
                state: Mutex::new(State::default()),
            }),
        })
    }
}

// === impl EtcdRegistry ===

impl EtcdRegistry {
    /// A builder for a registry on the etcd members at `endpoints` (`host:port`, or
    /// `http://host:port`).
    pub fn builder<I, S>(endpoints: I) -> EtcdRegistryBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdRegistryBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The keys of this registry's records start with this: `<prefix><namespace>/`.
    pub fn key_prefix(&self) -> &str {
        &self.inner.root
    }

    /// The key of `node_id` of `service`: `<prefix><namespace>/<service>/<node_id>`.
    pub fn key(&self, service: &str, node_id: &str) -> String {
        self.inner.key(service, node_id)
    }

    /// The etcd endpoints this registry uses.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("name", &self.inner.name)
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Registry for EtcdRegistry {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn register(
        &self,
        service: &Service,
        options: RegisterOptions,
    ) -> Result<(), RegistryError> {
        registry::validate_register(service)?;
        let ttl = ttl_secs(options.ttl);
        let mut entries = Vec::with_capacity(service.nodes.len());
        for node in &service.nodes {
            let record = registry::single(service, node);
            let value = serde_json::to_string(&record).map_err(|err| {
                RegistryError::backend(&self.inner.name, "cannot encode the record", err)
            })?;
            entries.push((self.inner.key(&service.name, &node.id), value));
        }
        let client = self.inner.client().await?;
        let mut state = self.inner.state.lock().await;
        for (key, value) in &entries {
            state.records.insert(
                key.clone(),
                Owned {
                    value: value.clone(),
                    ttl,
                },
            );
        }
        // A record that moved to another TTL may leave an old lease without records.
        self.inner.release_idle(&client, &mut state).await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let lease = self.inner.ensure_lease(&client, &mut state, ttl).await?;
            match self.inner.put_all(&client, &entries, lease).await {
                Ok(()) => return Ok(()),
                Err(err) if lease::is_lease_not_found(&err) && attempt < 3 => {
                    // Lost behind our back: grant a new one and put again.
                    tracing::warn!(
                        registry = %self.inner.name, lease = %format_args!("{lease:x}"),
                        "lease gone while registering; granting a new one"
                    );
                    if let Some(slot) = state.leases.get_mut(&ttl)
                        && slot.lease == Some(lease)
                    {
                        slot.lease = None;
                    }
                }
                Err(err) => {
                    return Err(RegistryError::backend(
                        &self.inner.name,
                        format!("cannot register service {:?}", service.name),
                        err,
                    ));
                }
            }
        }
    }

    async fn deregister(&self, service: &Service) -> Result<(), RegistryError> {
        registry::validate_deregister(service)?;
        let client = self.inner.client().await?;
        let mut state = self.inner.state.lock().await;
        let mut failed = None;
        for node in &service.nodes {
            let key = self.inner.key(&service.name, &node.id);
            state.records.remove(&key);
            let result = self
                .inner
                .retry(&client, |mut c| {
                    let key = key.clone();
                    async move { c.delete(key, None::<DeleteOptions>).await }
                })
                .await;
            if let Err(err) = result {
                failed.get_or_insert(err);
            }
        }
        self.inner.release_idle(&client, &mut state).await;
        match failed {
            None => Ok(()),
            Some(err) => Err(RegistryError::backend(
                &self.inner.name,
                format!(
                    "cannot deregister service {:?}; its nodes expire with their TTL",
                    service.name
                ),
                err,
            )),
        }
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, RegistryError> {
        let client = self.inner.client().await?;
        let prefix = self.inner.service_prefix(name);
        let (records, _) = self.inner.list(&client, &prefix).await?;
        Ok(registry::group(records.values()))
    }

    async fn list_services(&self) -> Result<Vec<Service>, RegistryError> {
        let client = self.inner.client().await?;
        let (records, _) = self.inner.list(&client, &self.inner.root).await?;
        Ok(registry::group(records.values()))
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, RegistryError> {
        let client = self.inner.client().await?;
        let prefix = match &options.service {
            Some(name) => self.inner.service_prefix(name),
            None => self.inner.root.clone(),
        };
        let (known, revision) = self.inner.list(&client, &prefix).await?;
        watch::start(self.inner.watch_config(client, prefix), known, revision).await
    }
}

// === impl Inner ===

impl Inner {
    fn key(&self, service: &str, node_id: &str) -> String {
        format!("{}{service}/{node_id}", self.root)
    }

    fn watch_config(&self, client: Arc<Pool>, prefix: String) -> watch::Config {
        watch::Config {
            registry: self.name.clone(),
            client,
            prefix,
        }
    }

    fn service_prefix(&self, service: &str) -> String {
        format!("{}{service}/", self.root)
    }

    /// The clients, one per endpoint, created on first use (they connect lazily).
    async fn client(&self) -> Result<Arc<Pool>, RegistryError> {
        let pool = self
            .pool
            .get_or_try_init(|| async {
                Pool::connect(&self.endpoints, &self.options)
                    .await
                    .map(Arc::new)
                    .map_err(|err| {
                        RegistryError::backend(&self.name, "cannot connect to etcd", err)
                    })
            })
            .await?;
        Ok(pool.clone())
    }

    /// Runs `op` on the current endpoint; when it fails because that member is
    /// unavailable, moves on to the next endpoint and tries again, once per endpoint.
    async fn retry<T, F, Fut>(&self, pool: &Pool, op: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(etcd_client::Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempts = pool.len();
        loop {
            attempts -= 1;
            let (index, client) = pool.current();
            match op(client).await {
                Err(err) if is_unavailable(&err) => {
                    pool.failed(index);
                    if attempts == 0 {
                        return Err(err);
                    }
                    tracing::debug!(registry = %self.name, error = %err, "etcd request failed; trying the next endpoint");
                }
                other => return other,
            }
        }
    }

    /// The records under `prefix` by key, and the revision they were read at.
    async fn list(
        &self,
        client: &Pool,
        prefix: &str,
    ) -> Result<(BTreeMap<String, Service>, i64), RegistryError> {
        let response = self
            .retry(client, |mut c| {
                let prefix = prefix.to_owned();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await
            .map_err(|err| RegistryError::backend(&self.name, "cannot read records", err))?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut records = BTreeMap::new();
        for kv in response.kvs() {
            if let Some((key, record)) = decode(&self.name, kv.key(), kv.value()) {
                records.insert(key, record);
            }
        }
        Ok((records, revision))
    }

    async fn put_all(
        &self,
        client: &Pool,
        entries: &[(String, String)],
        lease: i64,
    ) -> Result<(), etcd_client::Error> {
        for (key, value) in entries {
            self.retry(client, |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                        .await
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Revokes the leases whose TTL no record uses any more, and stops their keepalive.
    async fn release_idle(&self, client: &Pool, state: &mut State) {
        let used: Vec<i64> = state.records.values().map(|r| r.ttl).collect();
        let idle: Vec<i64> = state
            .leases
            .keys()
            .copied()
            .filter(|ttl| !used.contains(ttl))
            .collect();
        for ttl in idle {
            let Some(slot) = state.leases.remove(&ttl) else {
                continue;
            };
            if let Some(id) = slot.lease {
                let result = self
                    .retry(client, |mut c| async move { c.lease_revoke(id).await })
                    .await;
                match result {
                    Ok(_) => tracing::debug!(
                        registry = %self.name, lease = %format_args!("{id:x}"),
                        "revoked lease: no records left"
                    ),
                    Err(err) if lease::is_lease_not_found(&err) => {}
                    Err(err) => tracing::warn!(
                        registry = %self.name, lease = %format_args!("{id:x}"), error = %err,
                        "cannot revoke lease; it expires with its TTL"
                    ),
                }
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stops every keepalive; records expire with their TTL.
        for slot in self.state.get_mut().leases.values() {
            slot.stop();
        }
    }
}

/// etcd's longest lease TTL, in seconds.
const MAX_TTL_SECS: u64 = 9_000_000_000;

/// A TTL in whole seconds, rounded up, at least 1 (etcd raises it to its own minimum, about
/// 2 s with default settings) and at most etcd's maximum.
fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0))
        .clamp(1, MAX_TTL_SECS);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// A member or the connection to it is unavailable: worth another try elsewhere.
pub(crate) fn is_unavailable(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ),
        _ => false,
    }
}

/// A record from a key and value; `None` (logged) for values that are not one-node records.
fn decode(registry: &str, key: &[u8], value: &[u8]) -> Option<(String, Service)> {
    let key = String::from_utf8_lossy(key).into_owned();
    match serde_json::from_slice::<Service>(value) {
        Ok(record) if record.nodes.len() == 1 => Some((key, record)),
        Ok(record) => {
            tracing::warn!(
                registry, %key, nodes = record.nodes.len(),
                "ignoring registry record without exactly one node"
            );
            None
        }
        Err(err) => {
            tracing::warn!(registry, %key, error = %err, "ignoring undecodable registry record");
            None
        }
    }
}

#[cfg(test)]
mod tests;
