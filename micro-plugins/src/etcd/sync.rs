//! [`EtcdSync`]: micro-core's [`Sync`] (locks with fencing tokens,
//! leader election) on an etcd v3 cluster.
//!
//! ```no_run
//! # async fn demo() -> Result<(), micro_core::sync::SyncError> {
//! use micro_core::sync::{LockOptions, Sync as _};
//! use micro_plugins::etcd::EtcdSync;
//!
//! let sync = EtcdSync::connect(["127.0.0.1:2379"]).await?;
//! let lock = sync.lock("nightly-report", LockOptions::default()).await?;
//! // … write with lock.token() as the fencing token …
//! lock.release().await?;
//! # Ok(()) }
//! ```
//!
//! # Leases
//!
//! Every lock and every leadership (and every acquisition still waiting) has **its own
//! lease** of the requested TTL (rounded up to whole seconds, as etcd counts them; etcd may
//! raise it to its minimum), renewed by one task over one `LeaseKeepAlive` stream every
//! TTL/3. The holder stops claiming the lock ([`Lock::is_held`] turns false,
//! [`Lock::lost`] resolves) at the first of:
//!
//! - etcd answers that the lease is gone (expired or revoked);
//! - the requested TTL has passed since the *sending* of the last renewal etcd confirmed,
//!   measured on the local clock. etcd counts its TTL from when it *received* that renewal,
//!   so the local claim always ends no later than etcd's lease.
//!
//! A failing stream is reopened (which is itself a renewal) until that deadline. Releasing
//! (or dropping) a lock or leadership revokes its lease, which deletes its key at once.
//! One lease per holding keeps the failure of one independent of the others, at the cost
//! of one keepalive stream each.
//!
//! # Key layout
//!
//! Names are escaped (`%` → `%25`, `/` → `%2F`) so that no name is a prefix of another's
//! keys; `<lease>` is the lease id in lower-case hex, as etcd's own lock and election
//! recipes write it.
//!
//! ```text
//! /micro/sync/locks/<name>/<lease>      →  ""            (one key per holder or waiter)
//! /micro/sync/elections/<name>/<lease>  →  candidate id  (one key per candidate)
//! ```
//!
//! **Locks** use the classic create-revision queue: an acquirer puts its key, and holds the
//! lock when no key of the lock has a lower create revision; otherwise it watches the key
//! just ahead of it until that is deleted. A bounded wait ([`LockOptions::wait`]) that runs
//! out revokes the lease, so nothing is left behind. A waiter whose lease runs out while it
//! queues (its process or etcd stalled past the TTL) held nothing: it queues again, at the
//! back, with a new lease, until its wait ends. The **fencing token** is the create
//! revision of the holder's key: etcd revisions are global and only grow, and holders
//! acquire in create-revision order, so tokens strictly increase per lock.
//!
//! **Elections** use etcd's election API (`Campaign`, `Resign`), whose keys are the same
//! queue with the candidate id as value. The **term** is the leader key's create revision.
//! [`leader`](micro_core::sync::Sync::leader) reads the first-created key (the query etcd's
//! `Leader` RPC runs, but "no leader" is an empty answer rather than an error), and
//! [`observe`](micro_core::sync::Sync::observe) watches the election's prefix and reads the
//! leader again after every change, so it also reports `None` when nobody leads (etcd's
//! `Observe` RPC never does).

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, LeaderKey, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, ResignOptions, SortOrder, SortTarget, WatchOptions,
};
use micro_core::sync::{
    Leader, Leadership, Lock, LockOptions, Release, Sync, SyncError, validate_name, validate_ttl,
};
use tokio::{sync::watch, time::Instant};

use super::lease::is_lease_not_found;

/// The prefix of lock keys: `/micro/sync/locks/<escaped name>/<lease hex>`.
pub const LOCK_PREFIX: &str = "/micro/sync/locks/";
/// The prefix of election keys: `/micro/sync/elections/<escaped name>/<lease hex>`.
pub const ELECTION_PREFIX: &str = "/micro/sync/elections/";

const BACKEND: &str = "etcd";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before reopening a failed keepalive stream or watch.
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// Locks and leader election on etcd; see the [module documentation](self) for leases, key
/// layout and tokens. Clones share the connection.
#[derive(Clone)]
pub struct EtcdSync {
    inner: Arc<Inner>,
}

/// How a wait in a lock's queue ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// No key ahead: the lock is ours.
    Acquired,
    /// The wait's deadline passed first.
    TimedOut,
    /// The lease (and with it the key, our place in the queue) ran out first.
    LeaseLost,
}

struct Inner {
    client: Client,
    /// The endpoints, for error messages.
    endpoints: String,
}

impl fmt::Debug for EtcdSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSync")
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

// === impl EtcdSync ===

impl EtcdSync {
    /// Connects to the etcd cluster at `endpoints` (`host:port`, or `http://host:port`).
    ///
    /// # Errors
    /// [`SyncError::InvalidArgument`] for no endpoints; [`SyncError::Unavailable`] naming
    /// etcd and the endpoints when no connection could be set up.
    pub async fn connect<E: AsRef<str>>(
        endpoints: impl IntoIterator<Item = E>,
    ) -> Result<Self, SyncError> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.as_ref().trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(SyncError::InvalidArgument(
                "etcd sync needs at least one endpoint".to_owned(),
            ));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(H2_KEEPALIVE_INTERVAL, H2_KEEPALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let joined = endpoints.join(",");
        let client =
            tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(&endpoints, Some(options)))
                .await
                .map_err(|_| unavailable(&joined, "connecting", "timed out"))?
                .map_err(|err| failed(&joined, "connecting", err))?;
        Ok(Self::new(client, joined))
    }

    /// Uses an existing etcd client (its timeouts and TLS settings apply).
    pub fn from_client(client: Client) -> Self {
        Self::new(client, "(existing client)".to_owned())
    }

    fn new(client: Client, endpoints: String) -> Self {
        Self {
            inner: Arc::new(Inner { client, endpoints }),
        }
    }

    fn error(&self, what: &str, err: impl fmt::Display) -> SyncError {
        unavailable(&self.inner.endpoints, what, err)
    }

    fn failed(&self, what: &str, err: etcd_client::Error) -> SyncError {
        failed(&self.inner.endpoints, what, err)
    }

    /// Runs one request with [`REQUEST_TIMEOUT`], mapping failures to `Unavailable`.
    async fn call<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, SyncError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(self.failed(what, err)),
            Err(_) => Err(self.error(what, format!("no answer within {REQUEST_TIMEOUT:?}"))),
        }
    }

    /// Grants a lease of `ttl` and starts renewing it.
    async fn grant(&self, ttl: Duration, what: String) -> Result<LeaseHandle, SyncError> {
        let seconds = i64::try_from(ttl.as_millis().div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1);
        let sent = Instant::now();
        let mut client = self.inner.client.clone();
        let granted = self
            .call("granting a lease", client.lease_grant(seconds, None))
            .await?;
        let id = granted.id();
        let held = Arc::new(watch::channel(true).0);
        let task = tokio::spawn(keep_alive(
            self.inner.client.clone(),
            id,
            ttl,
            sent + ttl,
            Arc::clone(&held),
            what,
        ))
        .abort_handle();
        tracing::debug!(lease = %format_args!("{id:x}"), ?ttl, "granted lease");
        Ok(LeaseHandle {
            client: self.inner.client.clone(),
            id,
            held,
            task,
            key_watch: None,
            revoked: false,
        })
    }

    /// Puts the lock key `key` under `lease`: its place in the lock's queue. Returns the
    /// key's creation revision, which becomes the lock's token.
    async fn enqueue(&self, key: &str, lease: &LeaseHandle) -> Result<i64, SyncError> {
        let mut client = self.inner.client.clone();
        let put = self
            .call(
                "putting a lock key",
                client.put(key, "", Some(PutOptions::new().with_lease(lease.id))),
            )
            .await?;
        match put.header().map(|h| h.revision()) {
            Some(revision) if revision > 0 => Ok(revision),
            _ => Err(self.error("putting a lock key", "etcd answered without a revision")),
        }
    }

    /// Waits until no key under `prefix` was created before `revision` ([`Turn::Acquired`]),
    /// until `deadline` ([`Turn::TimedOut`]), or until the lease is lost meanwhile
    /// ([`Turn::LeaseLost`]).
    async fn wait_turn(
        &self,
        prefix: &str,
        revision: i64,
        deadline: Option<Instant>,
        lease: &LeaseHandle,
    ) -> Result<Turn, SyncError> {
        let mut held = lease.held.subscribe();
        loop {
            let mut client = self.inner.client.clone();
            let options = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(revision - 1)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1)
                .with_keys_only();
            let ahead = self
                .call("reading a lock queue", client.get(prefix, Some(options)))
                .await?;
            let Some(kv) = ahead.kvs().first() else {
                return Ok(Turn::Acquired);
            };
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Ok(Turn::TimedOut);
            }
            let key = kv.key().to_vec();
            let from = ahead.header().map_or(0, |h| h.revision()) + 1;
            let watched = self.call(
                "watching a lock queue",
                client.watch(key, Some(WatchOptions::new().with_start_revision(from))),
            );
            let mut stream = watched.await?;
            let deleted = async {
                loop {
                    match stream.message().await {
                        Ok(Some(response)) => {
                            if response.canceled()
                                || response
                                    .events()
                                    .iter()
                                    .any(|e| e.event_type() == EventType::Delete)
                            {
                                return Ok(());
                            }
                        }
                        Ok(None) => return Err(self.error("watching a lock queue", "ended")),
                        Err(err) => return Err(self.failed("watching a lock queue", err)),
                    }
                }
            };
            let until_deadline = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = deleted => result?,
                () = until_deadline => return Ok(Turn::TimedOut),
                () = async { let _ = held.wait_for(|held| !held).await; } => {
                    return Ok(Turn::LeaseLost);
                }
            }
        }
    }

    async fn current_leader(&self, prefix: &str) -> Result<(Option<Leader>, i64), SyncError> {
        let mut client = self.inner.client.clone();
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let response = self
            .call("reading an election", client.get(prefix, Some(options)))
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let leader = response.kvs().first().map(|kv| Leader {
            id: String::from_utf8_lossy(kv.value()).into_owned(),
            term: u64::try_from(kv.create_revision()).unwrap_or(0),
        });
        Ok((leader, revision))
    }
}

#[async_trait]
impl Sync for EtcdSync {
    fn name(&self) -> &str {
        BACKEND
    }

    async fn lock(&self, name: &str, options: LockOptions) -> Result<Lock, SyncError> {
        validate_name("lock", name)?;
        validate_ttl(options.ttl)?;
        let started = Instant::now();
        let deadline = options.wait.map(|wait| started + wait);
        let prefix = format!("{LOCK_PREFIX}{}/", escape(name));
        loop {
            let lease = self.grant(options.ttl, format!("lock {name:?}")).await?;
            let key = format!("{prefix}{:x}", lease.id);
            let revision = self.enqueue(&key, &lease).await;
            let revision = match revision {
                Ok(revision) => revision,
                Err(err) => {
                    lease.revoke().await;
                    return Err(err);
                }
            };
            match self.wait_turn(&prefix, revision, deadline, &lease).await {
                Ok(Turn::Acquired) => {
                    tracing::debug!(lock = %name, %key, token = revision, "lock acquired");
                    let mut lease = lease;
                    lease.watch_key(key.into_bytes(), revision);
                    let held = lease.held.subscribe();
                    return Ok(Lock::new(
                        name,
                        u64::try_from(revision).unwrap_or(0),
                        held,
                        Box::new(EtcdRelease {
                            lease,
                            leader: None,
                        }),
                    ));
                }
                Ok(Turn::TimedOut) => {
                    lease.revoke().await;
                    return Err(SyncError::Timeout {
                        what: "lock",
                        name: name.to_owned(),
                        waited: started.elapsed(),
                    });
                }
                // The waiter's lease ran out while it only queued (this process or etcd
                // stalled past the TTL): it held nothing, so nothing is unsafe, but its
                // place in the queue is gone. Queue again with a new lease: the caller
                // asked to wait `options.wait`, and a stall is no reason to give up early.
                Ok(Turn::LeaseLost) => {
                    lease.revoke().await;
                    if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                        return Err(SyncError::Timeout {
                            what: "lock",
                            name: name.to_owned(),
                            waited: started.elapsed(),
                        });
                    }
                    tracing::info!(lock = %name, %key, "lease lost while waiting for the lock; queueing again");
                }
                Err(err) => {
                    lease.revoke().await;
                    return Err(err);
                }
            }
        }
    }

    async fn campaign(
        &self,
        election: &str,
        candidate: &str,
        ttl: Duration,
    ) -> Result<Leadership, SyncError> {
        validate_name("election", election)?;
        validate_ttl(ttl)?;
        let lease = self.grant(ttl, format!("election {election:?}")).await?;
        let name = format!("{ELECTION_PREFIX}{}", escape(election));
        let mut client = self.inner.client.clone();
        let mut held = lease.held.subscribe();
        let lost = async {
            let _ = held.wait_for(|held| !held).await;
        };
        let campaign = tokio::select! {
            campaign = client.campaign(name, candidate, lease.id) => Some(campaign),
            () = lost => None,
        };
        let Some(campaign) = campaign else {
            lease.revoke().await;
            return Err(self.error("campaigning", "the lease was lost while waiting"));
        };
        let leader = match campaign {
            Ok(mut response) => response.take_leader(),
            Err(err) => {
                lease.revoke().await;
                return Err(self.failed("campaigning", err));
            }
        };
        let Some(leader) = leader else {
            lease.revoke().await;
            return Err(self.error("campaigning", "etcd answered without a leader key"));
        };
        let term = u64::try_from(leader.rev()).unwrap_or(0);
        tracing::info!(%election, %candidate, term, "leading the election");
        let mut lease = lease;
        lease.watch_key(leader.key().to_vec(), leader.rev());
        let held = lease.held.subscribe();
        Ok(Leadership::new(
            Lock::new(
                election,
                term,
                held,
                Box::new(EtcdRelease {
                    lease,
                    leader: Some(leader),
                }),
            ),
            candidate,
        ))
    }

    async fn leader(&self, election: &str) -> Result<Option<Leader>, SyncError> {
        validate_name("election", election)?;
        let prefix = format!("{ELECTION_PREFIX}{}/", escape(election));
        Ok(self.current_leader(&prefix).await?.0)
    }

    async fn observe(&self, election: &str) -> Result<watch::Receiver<Option<Leader>>, SyncError> {
        validate_name("election", election)?;
        let prefix = format!("{ELECTION_PREFIX}{}/", escape(election));
        let (leader, revision) = self.current_leader(&prefix).await?;
        let (sender, receiver) = watch::channel(leader);
        tokio::spawn(observe(
            self.clone(),
            election.to_owned(),
            prefix,
            revision,
            sender,
        ));
        Ok(receiver)
    }
}

/// Keeps `sender` up to date with the leader under `prefix`, from `revision`; ends when no
/// receiver is left.
async fn observe(
    sync: EtcdSync,
    election: String,
    prefix: String,
    mut revision: i64,
    sender: watch::Sender<Option<Leader>>,
) {
    loop {
        let followed = async {
            let mut client = sync.inner.client.clone();
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision + 1);
            let mut stream = sync
                .call(
                    "watching an election",
                    client.watch(prefix.as_str(), Some(options)),
                )
                .await?;
            loop {
                let response = match stream.message().await {
                    Ok(Some(response)) => response,
                    Ok(None) => return Err(sync.error("watching an election", "ended")),
                    Err(err) => return Err(sync.error("watching an election", err)),
                };
                if response.canceled() {
                    return Err(sync.error("watching an election", "the watch was canceled"));
                }
                if response.events().is_empty() {
                    continue;
                }
                let (leader, at) = sync.current_leader(&prefix).await?;
                revision = revision.max(at);
                sender.send_if_modified(|current| {
                    let changed = *current != leader;
                    *current = leader;
                    changed
                });
            }
        };
        let result: Result<(), SyncError> = tokio::select! {
            result = followed => result,
            () = sender.closed() => return,
        };
        if let Err(error) = result {
            tracing::warn!(%election, %error, "observing the election failed; watching again");
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY_DELAY) => {}
            () = sender.closed() => return,
        }
        // Read the leader again: changes during the gap are not missed.
        match sync.current_leader(&prefix).await {
            Ok((leader, at)) => {
                revision = at;
                sender.send_if_modified(|current| {
                    let changed = *current != leader;
                    *current = leader;
                    changed
                });
            }
            Err(error) => {
                tracing::warn!(%election, %error, "reading the election failed; retrying");
            }
        }
    }
}

/// A granted lease with its keepalive task.
struct LeaseHandle {
    client: Client,
    id: i64,
    /// True while the lease is held, as far as the local clock and etcd's answers tell.
    held: Arc<watch::Sender<bool>>,
    task: tokio::task::AbortHandle,
    /// Watches the holding's key; see [`LeaseHandle::watch_key`].
    key_watch: Option<tokio::task::AbortHandle>,
    revoked: bool,
}

impl LeaseHandle {
    /// Marks the holding lost as soon as its `key` (created at `revision`) is deleted: a
    /// revoked lease deletes it at once, before the next renewal would notice. If the watch
    /// fails, the keepalive still ends the holding by the lease's deadline.
    fn watch_key(&mut self, key: Vec<u8>, revision: i64) {
        let (mut client, held) = (self.client.clone(), Arc::clone(&self.held));
        let name = String::from_utf8_lossy(&key).into_owned();
        let task = tokio::spawn(async move {
            let options = WatchOptions::new().with_start_revision(revision);
            let Ok(Ok(mut stream)) =
                tokio::time::timeout(REQUEST_TIMEOUT, client.watch(key, Some(options))).await
            else {
                tracing::debug!(key = %name, "cannot watch the key; the keepalive still guards it");
                return;
            };
            while let Ok(Some(response)) = stream.message().await {
                if response
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    if held.send_replace(false) {
                        tracing::warn!(key = %name, "key deleted (lease revoked or key removed): lost");
                    }
                    return;
                }
                if response.canceled() {
                    return;
                }
            }
        });
        self.key_watch = Some(task.abort_handle());
    }

    /// Stops renewing and revokes the lease (deleting its keys), ignoring failures: the
    /// lease then runs out.
    async fn revoke(mut self) {
        let _ = self.try_revoke().await;
    }

    async fn try_revoke(&mut self) -> Result<(), etcd_client::Error> {
        self.revoked = true;
        self.task.abort();
        if let Some(key_watch) = &self.key_watch {
            key_watch.abort();
        }
        self.held.send_replace(false);
        let mut client = self.client.clone();
        match tokio::time::timeout(REQUEST_TIMEOUT, client.lease_revoke(self.id)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) if is_lease_not_found(&err) => Ok(()),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(etcd_client::Error::LeaseKeepAliveError(format!(
                "no answer to the revoke within {REQUEST_TIMEOUT:?}"
            ))),
        }
    }
}

impl Drop for LeaseHandle {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(key_watch) = &self.key_watch {
            key_watch.abort();
        }
        self.held.send_replace(false);
        if !self.revoked
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (mut client, id) = (self.client.clone(), self.id);
            runtime.spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_revoke(id)).await;
            });
        }
    }
}

/// Releases a lock or leadership: resigns (for a leadership) and revokes the lease.
struct EtcdRelease {
    lease: LeaseHandle,
    leader: Option<LeaderKey>,
}

#[async_trait]
impl Release for EtcdRelease {
    async fn release(self: Box<Self>) -> Result<(), SyncError> {
        let Self { mut lease, leader } = *self;
        let mut client = lease.client.clone();
        if let Some(leader) = leader {
            let options = ResignOptions::new().with_leader(leader);
            if let Ok(Err(err)) =
                tokio::time::timeout(REQUEST_TIMEOUT, client.resign(Some(options))).await
            {
                tracing::debug!(error = %err, "resign failed; revoking the lease instead");
            }
        }
        lease.try_revoke().await.map_err(|err| {
            let message = format!("revoking lease {:x}: {err}", lease.id);
            SyncError::unavailable_with(BACKEND, message, err)
        })
    }
}

/// Renews lease `id` every `ttl`/3 until it is lost; sets `held` to false at `expiry` (the
/// sending of the last confirmed renewal + `ttl`) unless a renewal moved it, or as soon as
/// etcd says the lease is gone.
async fn keep_alive(
    client: Client,
    id: i64,
    ttl: Duration,
    mut expiry: Instant,
    held: Arc<watch::Sender<bool>>,
    what: String,
) {
    let period = ttl / 3;
    let mut leases = client.lease_client();
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut next = Instant::now() + period;
    let lease = format!("{id:x}");
    let mut failures: u32 = 0;
    let reason = loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = tokio::time::sleep_until(expiry) => {
                break format!("no renewal confirmed within {ttl:?}");
            }
        }
        let sent = Instant::now();
        let renewal = async {
            let Some((keeper, answers)) = stream.as_mut() else {
                // Opening the stream sends a first keepalive and reads its answer.
                stream = Some(leases.keep_alive(id).await?);
                return Ok(true);
            };
            keeper.keep_alive().await?;
            match answers.message().await? {
                Some(answer) => Ok(answer.ttl() > 0),
                None => Err(etcd_client::Error::LeaseKeepAliveError(
                    "keepalive stream ended".to_owned(),
                )),
            }
        };
        let renewed = tokio::time::timeout_at(expiry, renewal).await;
        match renewed {
            Ok(Ok(true)) => {
                if failures > 0 {
                    tracing::info!(%what, %lease, failures, "lease keepalive works again");
                    failures = 0;
                }
                expiry = sent + ttl;
                next = sent + period;
            }
            Ok(Ok(false)) => break "etcd says the lease is gone".to_owned(),
            Ok(Err(err)) if is_lease_not_found(&err) => {
                break "etcd says the lease is gone".to_owned();
            }
            Ok(Err(err)) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(%what, %lease, error = %err, "lease keepalive failed; retrying until the lease runs out");
                } else {
                    tracing::debug!(%what, %lease, error = %err, failures, "lease keepalive failed again");
                }
                stream = None;
                next = Instant::now() + RETRY_DELAY.saturating_mul(failures.min(5));
            }
            Err(_) => break format!("no renewal confirmed within {ttl:?}"),
        }
    };
    held.send_replace(false);
    tracing::warn!(%what, %lease, %reason, "lease lost");
    // Free the lock for others at once if etcd still has the lease.
    let mut client = client;
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_revoke(id)).await;
}

/// Escapes `%` and `/` so that no name is a prefix of another name's keys.
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

fn unavailable(endpoints: &str, what: &str, detail: impl fmt::Display) -> SyncError {
    SyncError::unavailable(BACKEND, format!("{what} on etcd at {endpoints}: {detail}"))
}

/// As [`unavailable`], keeping `err` as the source.
fn failed(endpoints: &str, what: &str, err: etcd_client::Error) -> SyncError {
    let message = format!("{what} on etcd at {endpoints}: {err}");
    SyncError::unavailable_with(BACKEND, message, err)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn names_are_escaped_so_none_prefixes_another() {
        assert_eq!(escape("a/b%c"), "a%2Fb%25c");
        assert!(!format!("{}/", escape("a/b")).starts_with(&format!("{}/", escape("a"))));
    }
}
