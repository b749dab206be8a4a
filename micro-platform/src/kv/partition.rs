//! [`PartitionedStore`]: one [`Store`] over several kv service nodes, each key on the node
//! its consistent hash picks.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use futures_util::{StreamExt, future};
use micro_core::{
    registry::{CacheRegistry, Service, SharedRegistry},
    store::{
        Condition, ListOptions, MAX_BATCH, MAX_PAGE, Namespace, Page, Put, Record, Store,
        StoreError, condition_holds, validate_delete, validate_key, validate_keys, validate_list,
        validate_put, validate_puts,
    },
};
use tokio::sync::watch;

use super::{
    KvClient, SERVICE_NAME,
    ring::{Fnv, Ring},
};

/// Node metadata naming a node's place on the ring. Nodes without it are placed by their
/// address. Set it (`ServiceBuilder::node_metadata`) to a name that survives restarts and
/// address changes when the node's backend is persistent, so the node keeps its keys.
pub const PARTITION_METADATA: &str = "kv.partition";

/// A [`Store`] partitioned across the nodes of the kv service by consistent hashing.
///
/// The nodes are those of the service [`SERVICE_NAME`] (`micro.kv`, or another name given to
/// [`PartitionedStoreBuilder::service`]) in a registry, followed through a
/// [`CacheRegistry`] watch, so nodes joining and leaving change the ring without a restart.
/// Every key's operation goes straight to its owner, through one [`KvClient`] per node at the
/// node's fixed address (with micro's retries of reads, deadlines, tracing and metrics).
///
/// # Placement
///
/// - Each node owns [`DEFAULT_VIRTUAL_NODES`](Self::DEFAULT_VIRTUAL_NODES) points (160, as in
///   ketama) on a 64-bit ring, placed by hashing its ring id: the node metadata
///   [`PARTITION_METADATA`] when set, otherwise its address. Node ids are not used: a
///   restarted process registers with a new id but usually the same address.
/// - A key's hash covers the namespace and the key (`database 0x00 table 0x00 key`; names and
///   keys cannot contain NUL), so each table spreads over the nodes on its own and the same
///   key in different tables lands on different nodes. Nothing needs a whole namespace on
///   one node: listing asks every node anyway.
/// - The hash is FNV-1a with MurmurHash3's finalizer, written out in micro so it never
///   changes: every client agrees on each key's owner. Adding a node to N moves about
///   1/(N+1) of the keys, all to the new node; removing one moves only its keys.
///
/// # Moving data: [`rebalance`](Self::rebalance)
///
/// After the node set changed, keys whose owner changed are still on their previous node.
/// Two mechanisms bring them over:
///
/// - **On access** (until the next complete rebalance): an operation that finds no record
///   on the key's owner looks on the nodes that owned the key in the earlier rings (newest
///   first, up to 8 rings) and, when found, moves that record to the owner first (copy
///   create-only, delete the old one at its version), then runs against the owner. This
///   covers reads, deletes (so a deleted key is not brought back later) and conditional
///   writes (so a condition sees the record); an unconditional write goes straight to the
///   owner (the newer record wins over the old copy). It costs one more call on a miss, and
///   a read of the owner before each delete and conditional write, while earlier rings are
///   remembered. Listing does not look back: a moved key is listed from wherever it is.
/// - **In bulk**: [`rebalance`](Self::rebalance) (call it after a change;
///   [`needs_rebalance`](Self::needs_rebalance) says whether one is due) with the
///   namespaces to repair: it lists every node (and the nodes that left the ring since,
///   while they still answer), copies each key that is not on its owner there
///   (create-only, with its remaining TTL) and deletes it from the old node at the version
///   it read. A key written to its new owner in the meantime keeps the new value (the
///   newer write wins).
///
/// A moved record starts over at version 1 on its new node, like a deleted and re-created
/// one: a compare-and-set holding a version read before the move fails (and reads again)
/// unless the moved record has meanwhile been written back up to that same version, when
/// it succeeds against a record it never read; read again after a ring change. To remove a
/// node without losing its keys, deregister it while it still serves, rebalance, then stop
/// it.
///
/// # Batches and listing
///
/// - `get_many`, `put_many`, `delete_many` are split by owner and sent to the nodes at once.
/// - `put_many` is **not atomic** ([`atomic_batches`](Store::atomic_batches) is `false`):
///   when it spans several nodes and has conditions, every condition is first checked with
///   one `get_many` per node, and nothing is written when one fails; then each node's part
///   is written as one batch with its conditions. Between the check and the writes another
///   client may change a key: that node's part then fails with `ConditionFailed` while other
///   nodes' parts may already be written; a node failing (`Unavailable`) likewise leaves the
///   other parts written. A batch whose keys all live on one node is that node's batch.
/// - `list` asks every node for a page with the same options and merges them in byte order
///   (a k-way merge, keys found twice counted once), so paging with `start_after` works as
///   on one store; a node's short page (it may stop early) bounds the merged page, which may
///   then hold fewer keys than the limit but never skips one.
#[derive(Clone)]
pub struct PartitionedStore {
    inner: Arc<Inner>,
}

/// Sets up a [`PartitionedStore`].
#[derive(Debug)]
pub struct PartitionedStoreBuilder {
    registry: SharedRegistry,
    service: String,
    virtual_nodes: u32,
}

/// What [`PartitionedStore::rebalance`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebalance {
    /// Keys listed, over all nodes (a key moved to a node listed later is counted again
    /// there).
    pub scanned: usize,
    /// Keys copied to their owner and deleted from the node they were on.
    pub moved: usize,
    /// Keys found on a node that does not own them while their owner already held a record
    /// (written after the ring changed): the owner's record was kept, the old one deleted.
    pub superseded: usize,
    /// Nodes that left the ring and could not be listed; their keys were not moved. They are
    /// tried again by the next rebalance.
    pub unreachable: Vec<String>,
}

struct Inner {
    service: String,
    name: String,
    virtual_nodes: u32,
    // Keeps the cache's background watch alive.
    _cache: CacheRegistry,
    records: watch::Receiver<Arc<Vec<Service>>>,
    topology: Mutex<Arc<Topology>>,
    /// Nodes that left the ring since the last rebalance, by ring id.
    departed: Mutex<BTreeMap<String, Member>>,
    /// The ring changed since the last successful rebalance.
    unbalanced: AtomicBool,
    /// Rings replaced since the last successful rebalance, oldest first (at most
    /// [`MAX_HISTORY`]): where a key missing on its owner may still be.
    history: Mutex<Vec<Arc<Topology>>>,
}

/// Earlier rings searched for a key missing on its owner.
const MAX_HISTORY: usize = 8;

/// One ring: the members and who owns which hash.
struct Topology {
    /// The registry records it was built from.
    source: Arc<Vec<Service>>,
    members: Vec<Member>,
    ring: Ring,
}

#[derive(Clone)]
struct Member {
    /// Place on the ring: [`PARTITION_METADATA`] or the address.
    id: String,
    address: String,
    client: KvClient,
}

// === impl PartitionedStoreBuilder ===

impl PartitionedStoreBuilder {
    /// The kv service's name in the registry; default [`SERVICE_NAME`].
    #[must_use]
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = name.into();
        self
    }

    /// Points per node on the ring, at least 1; default
    /// [`PartitionedStore::DEFAULT_VIRTUAL_NODES`]. Every client of one set of nodes must
    /// use the same value.
    #[must_use]
    pub fn virtual_nodes(mut self, points: u32) -> Self {
        self.virtual_nodes = points.max(1);
        self
    }

    /// Reads the service's nodes from the registry and starts watching them.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the registry cannot be read. No nodes is not an
    /// error here; operations fail with `Unavailable` until one registers.
    pub async fn build(self) -> Result<PartitionedStore, StoreError> {
        let name = format!("partitioned {}", self.service);
        let cache = CacheRegistry::new(self.registry);
        let records = cache
            .subscribe(&self.service)
            .await
            .map_err(|err| StoreError::unavailable(&name, err))?;
        let source = records.borrow().clone();
        let topology = Topology::build(source, &[], self.virtual_nodes);
        Ok(PartitionedStore {
            inner: Arc::new(Inner {
                service: self.service,
                name,
                virtual_nodes: self.virtual_nodes,
                _cache: cache,
                records,
                topology: Mutex::new(Arc::new(topology)),
                departed: Mutex::new(BTreeMap::new()),
                unbalanced: AtomicBool::new(false),
                history: Mutex::new(Vec::new()),
            }),
        })
    }
}

// === impl PartitionedStore ===

impl PartitionedStore {
    /// Points per node on the ring: 160, as in ketama.
    pub const DEFAULT_VIRTUAL_NODES: u32 = 160;

    /// A store over the nodes of `micro.kv` in `registry`, with the defaults.
    ///
    /// # Errors
    /// As [`PartitionedStoreBuilder::build`].
    pub async fn new(registry: SharedRegistry) -> Result<Self, StoreError> {
        Self::builder(registry).build().await
    }

    /// A builder over `registry`.
    pub fn builder(registry: SharedRegistry) -> PartitionedStoreBuilder {
        PartitionedStoreBuilder {
            registry,
            service: SERVICE_NAME.to_owned(),
            virtual_nodes: Self::DEFAULT_VIRTUAL_NODES,
        }
    }

    /// The addresses of the nodes on the ring now, in ring-id order.
    pub fn nodes(&self) -> Vec<String> {
        let topology = self.topology();
        let mut members: Vec<&Member> = topology.members.iter().collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        members.iter().map(|m| m.address.clone()).collect()
    }

    /// The address of the node owning `key` in `namespace` now.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for a bad key; [`StoreError::Unavailable`] when no
    /// node is registered.
    pub fn owner(&self, namespace: &Namespace, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        let topology = self.live_topology()?;
        Ok(topology.members[topology.owner(namespace, key)?]
            .address
            .clone())
    }

    /// Moves every key of `namespaces` that is not on its owner to its owner; see
    /// [moving data](Self#moving-data-rebalance). Safe to run while clients read and write
    /// through the current ring, and to run again.
    ///
    /// # Errors
    /// The first failure of a node on the ring (listing, reading or writing); keys moved
    /// before it stay moved, and running it again continues. Nodes that left the ring and
    /// do not answer are reported in [`Rebalance::unreachable`] instead.
    pub async fn rebalance(&self, namespaces: &[Namespace]) -> Result<Rebalance, StoreError> {
        let topology = self.live_topology()?;
        // Cleared first: a ring change during the run sets it again.
        self.inner.unbalanced.store(false, Ordering::Release);
        let earlier = lock(&self.inner.history).len();
        let result = self.rebalance_on(&topology, namespaces).await;
        if result.as_ref().is_ok_and(|r| r.unreachable.is_empty()) {
            // Every key of the rings before the run is on its owner now.
            let mut history = lock(&self.inner.history);
            let done = earlier.min(history.len());
            history.drain(..done);
        } else {
            self.inner.unbalanced.store(true, Ordering::Release);
        }
        result
    }

    /// Whether the ring changed (a node joined or left) since the last rebalance that
    /// completed with every node reachable: keys may then be off their owner.
    pub fn needs_rebalance(&self) -> bool {
        let _ = self.topology();
        self.inner.unbalanced.load(Ordering::Acquire)
    }

    async fn rebalance_on(
        &self,
        topology: &Topology,
        namespaces: &[Namespace],
    ) -> Result<Rebalance, StoreError> {
        let departed: Vec<Member> = lock(&self.inner.departed).values().cloned().collect();
        let mut report = Rebalance::default();
        let mut reachable = Vec::new();
        for member in &departed {
            let mut ok = true;
            for namespace in namespaces {
                if let Err(err) = self
                    .drain(topology, namespace, member, None, &mut report)
                    .await
                {
                    tracing::warn!(
                        store = %self.inner.name, node = %member.address, error = %err,
                        "node that left the ring cannot be drained; its keys stay there"
                    );
                    report.unreachable.push(member.address.clone());
                    ok = false;
                    break;
                }
            }
            if ok {
                reachable.push(member.id.clone());
            }
        }
        for (index, member) in topology.members.iter().enumerate() {
            for namespace in namespaces {
                self.drain(topology, namespace, member, Some(index), &mut report)
                    .await?;
            }
        }
        {
            let mut left = lock(&self.inner.departed);
            for id in reachable {
                left.remove(&id);
            }
        }
        tracing::info!(
            store = %self.inner.name, scanned = report.scanned, moved = report.moved,
            superseded = report.superseded, unreachable = report.unreachable.len(),
            "rebalanced"
        );
        Ok(report)
    }

    /// Moves the keys of `namespace` on `member` (at ring index `index`, `None` for a node
    /// that left) that `topology` gives to other nodes.
    async fn drain(
        &self,
        topology: &Topology,
        namespace: &Namespace,
        member: &Member,
        index: Option<usize>,
        report: &mut Rebalance,
    ) -> Result<(), StoreError> {
        let mut start_after = None;
        loop {
            let page = member
                .client
                .list(
                    namespace,
                    ListOptions {
                        prefix: String::new(),
                        start_after: start_after.take(),
                        limit: MAX_PAGE,
                    },
                )
                .await?;
            report.scanned += page.keys.len();
            let mut by_owner: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for key in page.keys {
                let owner = topology.owner(namespace, &key)?;
                if Some(owner) != index {
                    by_owner.entry(owner).or_default().push(key);
                }
            }
            for (owner, keys) in by_owner {
                let target = &topology.members[owner];
                move_keys(namespace, member, target, &keys, report).await?;
            }
            match page.next {
                Some(next) => start_after = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// The current topology, rebuilt first when the registry's records changed.
    fn topology(&self) -> Arc<Topology> {
        let current = self.inner.records.borrow().clone();
        let mut topology = lock(&self.inner.topology);
        if !Arc::ptr_eq(&topology.source, &current) {
            let next = Topology::build(current, &topology.members, self.inner.virtual_nodes);
            let mut departed = lock(&self.inner.departed);
            for member in &topology.members {
                if !next.members.iter().any(|m| m.id == member.id) {
                    departed.insert(member.id.clone(), member.clone());
                }
            }
            for member in &next.members {
                departed.remove(&member.id);
            }
            drop(departed);
            let ids = |t: &Topology| {
                let mut ids: Vec<String> = t.members.iter().map(|m| m.id.clone()).collect();
                ids.sort();
                ids
            };
            // A heartbeat or a metadata change keeps the ring as it was.
            if ids(&topology) != ids(&next) {
                self.inner.unbalanced.store(true, Ordering::Release);
                let mut history = lock(&self.inner.history);
                history.push(Arc::clone(&topology));
                if history.len() > MAX_HISTORY {
                    history.remove(0);
                }
                drop(history);
                tracing::info!(
                    store = %self.inner.name, nodes = next.members.len(),
                    "kv nodes changed; keys whose owner changed need a rebalance"
                );
            }
            *topology = Arc::new(next);
        }
        Arc::clone(&topology)
    }

    fn earlier_rings(&self) -> Vec<Arc<Topology>> {
        lock(&self.inner.history).clone()
    }

    fn remembers_rings(&self) -> bool {
        !lock(&self.inner.history).is_empty()
    }

    /// Moves `key`, known to be missing on its owner, from the node that owned it in an
    /// earlier ring (newest first) to its owner, if it is found there.
    async fn settle(
        &self,
        topology: &Topology,
        namespace: &Namespace,
        key: &str,
    ) -> Result<(), StoreError> {
        let earlier = self.earlier_rings();
        let owner = &topology.members[topology.owner(namespace, key)?];
        let mut tried = vec![owner.address.as_str()];
        for ring in earlier.iter().rev() {
            let member = &ring.members[ring.owner(namespace, key)?];
            if tried.contains(&member.address.as_str()) {
                continue;
            }
            tried.push(&member.address);
            match member.client.get(namespace, key).await {
                Ok(Some(_)) => {
                    let mut report = Rebalance::default();
                    let keys = [key.to_owned()];
                    return move_keys(namespace, member, owner, &keys, &mut report).await;
                }
                Ok(None) => {}
                Err(err) => tracing::debug!(
                    store = %self.inner.name, node = %member.address, error = %err,
                    "an earlier owner does not answer; not looking there"
                ),
            }
        }
        Ok(())
    }

    /// [`settle`](Self::settle)s those of `keys` missing on their owner, while earlier
    /// rings are remembered.
    async fn settle_missing(
        &self,
        topology: &Topology,
        namespace: &Namespace,
        keys: &[&str],
    ) -> Result<(), StoreError> {
        if !self.remembers_rings() {
            return Ok(());
        }
        let mut checks = Vec::with_capacity(keys.len());
        for &key in keys {
            checks.push(async move {
                let client = topology.client(namespace, key)?;
                if client.get(namespace, key).await?.is_none() {
                    self.settle(topology, namespace, key).await?;
                }
                Ok::<(), StoreError>(())
            });
        }
        let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(checks)
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// The records of `keys` from their owners.
    async fn fetch_many(
        &self,
        topology: &Topology,
        namespace: &Namespace,
        keys: &[String],
    ) -> Result<Vec<Option<Record>>, StoreError> {
        let groups = topology.split(namespace, keys, String::as_str)?;
        let answers = future::try_join_all(groups.into_iter().map(|(owner, at)| {
            let client = &topology.members[owner].client;
            let part: Vec<String> = at.iter().map(|&i| keys[i].clone()).collect();
            async move {
                let records = client.get_many(namespace, &part).await?;
                Ok::<_, StoreError>((at, records))
            }
        }))
        .await?;
        let mut out = vec![None; keys.len()];
        for (at, records) in answers {
            for (i, record) in at.into_iter().zip(records) {
                out[i] = record;
            }
        }
        Ok(out)
    }

    /// The current topology, or `Unavailable` when it has no node.
    fn live_topology(&self) -> Result<Arc<Topology>, StoreError> {
        let topology = self.topology();
        if topology.members.is_empty() {
            return Err(StoreError::unavailable(
                &self.inner.name,
                format!("no node of {} in the registry", self.inner.service),
            ));
        }
        Ok(topology)
    }
}

/// Copies `keys` from `source` to `target` (create-only) and deletes them from `source` at
/// the version read.
async fn move_keys(
    namespace: &Namespace,
    source: &Member,
    target: &Member,
    keys: &[String],
    report: &mut Rebalance,
) -> Result<(), StoreError> {
    for chunk in keys.chunks(MAX_BATCH) {
        let (records, existing) = future::try_join(
            source.client.get_many(namespace, chunk),
            target.client.get_many(namespace, chunk),
        )
        .await?;
        let mut copies = Vec::new();
        let mut delete = Vec::new();
        for (record, existing) in records.into_iter().zip(existing) {
            let Some(record) = record else { continue };
            delete.push((record.key.clone(), record.version));
            if existing.is_some() {
                report.superseded += 1;
                continue;
            }
            let mut put = Put::new(record.key, record.value).condition(Condition::Absent);
            if let Some(ttl) = record.ttl {
                put = put.ttl(ttl.max(Duration::from_millis(1)));
            }
            copies.push(put);
        }
        let copied = copies.len();
        match target.client.put_many(namespace, copies.clone()).await {
            Ok(_) => report.moved += copied,
            // Someone wrote one of the keys to its owner since: copy one by one, keeping
            // the owner's newer records.
            Err(StoreError::ConditionFailed { .. }) => {
                for put in copies {
                    match target.client.put(namespace, put).await {
                        Ok(_) => report.moved += 1,
                        Err(StoreError::ConditionFailed { .. }) => report.superseded += 1,
                        Err(err) => return Err(err),
                    }
                }
            }
            Err(err) => return Err(err),
        }
        let mut deletes = Vec::with_capacity(delete.len());
        for (key, version) in &delete {
            deletes.push(
                source
                    .client
                    .delete(namespace, key, Condition::Version(*version)),
            );
        }
        let results: Vec<Result<bool, StoreError>> = futures_util::stream::iter(deletes)
            .buffer_unordered(16)
            .collect()
            .await;
        for result in results {
            match result {
                // Written on the old node after it was read (a client with an outdated
                // ring): left there for the next rebalance.
                Ok(_) | Err(StoreError::ConditionFailed { .. }) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(())
}

// === impl Topology ===

impl Topology {
    /// The members of `source`, reusing the clients of `previous` members at the same
    /// address.
    fn build(source: Arc<Vec<Service>>, previous: &[Member], virtual_nodes: u32) -> Self {
        let mut nodes: Vec<_> = source.iter().flat_map(|s| s.nodes.iter()).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut members: Vec<Member> = Vec::with_capacity(nodes.len());
        for node in nodes {
            let id = node
                .metadata
                .get(PARTITION_METADATA)
                .cloned()
                .unwrap_or_else(|| node.address.clone());
            if members.iter().any(|m| m.id == id) {
                tracing::warn!(
                    node = %node.id, ring_id = %id,
                    "two kv nodes share a place on the ring; using the first"
                );
                continue;
            }
            let client = match previous.iter().find(|m| m.address == node.address) {
                Some(member) => member.client.clone(),
                None => match KvClient::connect(&node.address) {
                    Ok(client) => client,
                    Err(err) => {
                        tracing::warn!(
                            node = %node.id, address = %node.address, error = %err,
                            "kv node with an unusable address left off the ring"
                        );
                        continue;
                    }
                },
            };
            members.push(Member {
                id,
                address: node.address.clone(),
                client,
            });
        }
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        let ring = Ring::new(&ids, virtual_nodes);
        Self {
            source,
            members,
            ring,
        }
    }

    fn owner(&self, namespace: &Namespace, key: &str) -> Result<usize, StoreError> {
        let hash = Fnv::new()
            .write(namespace.database().as_bytes())
            .write(&[0])
            .write(namespace.table().as_bytes())
            .write(&[0])
            .write(key.as_bytes())
            .finish();
        self.ring
            .owner(hash)
            .ok_or_else(|| StoreError::unavailable("partitioned kv", "no kv node"))
    }

    fn client(&self, namespace: &Namespace, key: &str) -> Result<&KvClient, StoreError> {
        Ok(&self.members[self.owner(namespace, key)?].client)
    }

    /// Indexes into `items` grouped by the owner of each one's key.
    fn split<'a, T>(
        &self,
        namespace: &Namespace,
        items: &'a [T],
        key: impl Fn(&'a T) -> &'a str,
    ) -> Result<BTreeMap<usize, Vec<usize>>, StoreError> {
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (at, item) in items.iter().enumerate() {
            groups
                .entry(self.owner(namespace, key(item))?)
                .or_default()
                .push(at);
        }
        Ok(groups)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for PartitionedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionedStore")
            .field("service", &self.inner.service)
            .field("virtual_nodes", &self.inner.virtual_nodes)
            .field("nodes", &self.nodes())
            .finish_non_exhaustive()
    }
}

/// Merges sorted pages of several nodes into one page of at most `limit` keys: a k-way
/// merge on a heap of the pages' heads, keys found on two nodes (during a rebalance) once.
fn merge_pages(pages: Vec<Page>, limit: usize) -> Page {
    // A node that may have more keys only vouches for keys up to its last one (or its
    // `next`): the merged page must stop there, or it could skip that node's later keys.
    let horizon = pages
        .iter()
        .filter_map(|page| {
            page.next.as_ref()?;
            page.keys.last().or(page.next.as_ref()).cloned()
        })
        .min();
    let mut rests: Vec<std::vec::IntoIter<String>> = pages
        .into_iter()
        .map(|page| page.keys.into_iter())
        .collect();
    let mut heads = BinaryHeap::with_capacity(rests.len());
    for (at, rest) in rests.iter_mut().enumerate() {
        if let Some(key) = rest.next() {
            heads.push(Reverse((key, at)));
        }
    }
    let mut keys: Vec<String> = Vec::with_capacity(limit.min(256));
    while let Some(Reverse((key, at))) = heads.pop() {
        if let Some(following) = rests[at].next() {
            heads.push(Reverse((following, at)));
        }
        if horizon.as_ref().is_some_and(|horizon| key > *horizon) {
            break;
        }
        if keys.last() == Some(&key) {
            continue;
        }
        if keys.len() == limit {
            // Another key follows: the page is full.
            let next = keys.last().cloned();
            return Page { keys, next };
        }
        keys.push(key);
    }
    // Every key up to the horizon is in the page.
    Page {
        keys,
        next: horizon,
    }
}

#[async_trait]
impl Store for PartitionedStore {
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// `false`: a batch spanning several nodes is written node by node; see
    /// [batches](PartitionedStore#batches-and-listing).
    fn atomic_batches(&self) -> bool {
        false
    }

    async fn get(&self, namespace: &Namespace, key: &str) -> Result<Option<Record>, StoreError> {
        validate_key(key)?;
        let topology = self.live_topology()?;
        let client = topology.client(namespace, key)?;
        let record = client.get(namespace, key).await?;
        if record.is_some() || !self.remembers_rings() {
            return Ok(record);
        }
        self.settle(&topology, namespace, key).await?;
        client.get(namespace, key).await
    }

    async fn put(&self, namespace: &Namespace, put: Put) -> Result<u64, StoreError> {
        validate_put(&put)?;
        let topology = self.live_topology()?;
        if put.condition != Condition::None {
            self.settle_missing(&topology, namespace, &[&put.key])
                .await?;
        }
        topology
            .client(namespace, &put.key)?
            .put(namespace, put)
            .await
    }

    async fn delete(
        &self,
        namespace: &Namespace,
        key: &str,
        condition: Condition,
    ) -> Result<bool, StoreError> {
        validate_delete(key, condition)?;
        let topology = self.live_topology()?;
        self.settle_missing(&topology, namespace, &[key]).await?;
        topology
            .client(namespace, key)?
            .delete(namespace, key, condition)
            .await
    }

    async fn list(&self, namespace: &Namespace, options: ListOptions) -> Result<Page, StoreError> {
        let limit = validate_list(&options)?;
        let topology = self.live_topology()?;
        let options = ListOptions { limit, ..options };
        let pages = future::try_join_all(
            topology
                .members
                .iter()
                .map(|m| m.client.list(namespace, options.clone())),
        )
        .await?;
        Ok(merge_pages(pages, limit))
    }

    async fn get_many(
        &self,
        namespace: &Namespace,
        keys: &[String],
    ) -> Result<Vec<Option<Record>>, StoreError> {
        validate_keys(keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let topology = self.live_topology()?;
        let mut out = self.fetch_many(&topology, namespace, keys).await?;
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| out[i].is_none()).collect();
        if missing.is_empty() || !self.remembers_rings() {
            return Ok(out);
        }
        let mut settles = Vec::with_capacity(missing.len());
        for &i in &missing {
            settles.push(self.settle(&topology, namespace, &keys[i]));
        }
        let settled: Vec<Result<(), StoreError>> = futures_util::stream::iter(settles)
            .buffer_unordered(16)
            .collect()
            .await;
        settled.into_iter().collect::<Result<(), StoreError>>()?;
        let again: Vec<String> = missing.iter().map(|&i| keys[i].clone()).collect();
        let records = self.fetch_many(&topology, namespace, &again).await?;
        for (i, record) in missing.into_iter().zip(records) {
            out[i] = record;
        }
        Ok(out)
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
        let topology = self.live_topology()?;
        let conditioned: Vec<&str> = puts
            .iter()
            .filter(|p| p.condition != Condition::None)
            .map(|p| p.key.as_str())
            .collect();
        self.settle_missing(&topology, namespace, &conditioned)
            .await?;
        let groups = topology.split(namespace, &puts, |p: &Put| p.key.as_str())?;
        if groups.len() == 1
            && let Some(&owner) = groups.keys().next()
        {
            // One node: its own batch, atomic if its backend's are.
            return topology.members[owner]
                .client
                .put_many(namespace, puts)
                .await;
        }
        // Every condition first: a failed one writes nothing anywhere.
        let checks = future::try_join_all(groups.iter().filter_map(|(&owner, at)| {
            let conditioned: Vec<usize> = at
                .iter()
                .copied()
                .filter(|&i| puts[i].condition != Condition::None)
                .collect();
            if conditioned.is_empty() {
                return None;
            }
            let client = &topology.members[owner].client;
            let keys: Vec<String> = conditioned.iter().map(|&i| puts[i].key.clone()).collect();
            Some(async move {
                let records = client.get_many(namespace, &keys).await?;
                Ok::<_, StoreError>((conditioned, records))
            })
        }))
        .await?;
        let failed = checks
            .into_iter()
            .flat_map(|(at, records)| at.into_iter().zip(records))
            .filter_map(|(i, record)| {
                let found = record.map(|r| r.version);
                (!condition_holds(puts[i].condition, found)).then_some((i, found))
            })
            .min_by_key(|(i, _)| *i);
        if let Some((i, found)) = failed {
            return Err(StoreError::condition_failed(
                &puts[i].key,
                puts[i].condition,
                found,
            ));
        }
        let mut slots: Vec<Option<Put>> = puts.into_iter().map(Some).collect();
        let parts: Vec<(usize, Vec<usize>, Vec<Put>)> = groups
            .into_iter()
            .map(|(owner, at)| {
                let part = at.iter().filter_map(|&i| slots[i].take()).collect();
                (owner, at, part)
            })
            .collect();
        let results = future::join_all(parts.into_iter().map(|(owner, at, part)| {
            let client = &topology.members[owner].client;
            async move { (at, client.put_many(namespace, part).await) }
        }))
        .await;
        let mut versions = vec![0; slots.len()];
        let mut first_error = None;
        let mut written = 0;
        let nodes = results.len();
        for (at, result) in results {
            match result {
                Ok(part) => {
                    written += 1;
                    for (i, version) in at.into_iter().zip(part) {
                        versions[i] = version;
                    }
                }
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            if written > 0 {
                tracing::warn!(
                    store = %self.inner.name, nodes, written, error = %err,
                    "batch partly written: some nodes applied their part"
                );
            }
            return Err(err);
        }
        Ok(versions)
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
        let topology = self.live_topology()?;
        let all: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.settle_missing(&topology, namespace, &all).await?;
        let groups = topology.split(namespace, keys, String::as_str)?;
        let answers = future::try_join_all(groups.into_iter().map(|(owner, at)| {
            let client = &topology.members[owner].client;
            let part: Vec<String> = at.iter().map(|&i| keys[i].clone()).collect();
            async move {
                let deleted = client.delete_many(namespace, &part).await?;
                Ok::<_, StoreError>((at, deleted))
            }
        }))
        .await?;
        let mut out = vec![false; keys.len()];
        for (at, deleted) in answers {
            for (i, deleted) in at.into_iter().zip(deleted) {
                out[i] = deleted;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(keys: &[&str], next: Option<&str>) -> Page {
        Page {
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            next: next.map(str::to_owned),
        }
    }

    #[test]
    fn merges_in_byte_order_up_to_the_limit() {
        let merged = merge_pages(
            vec![page(&["a", "c", "e"], Some("e")), page(&["b", "d"], None)],
            3,
        );
        assert_eq!(merged, page(&["a", "b", "c"], Some("c")));
        let merged = merge_pages(vec![page(&["a", "b"], None), page(&["b", "c"], None)], 10);
        assert_eq!(
            merged,
            page(&["a", "b", "c"], None),
            "a key on two nodes once"
        );
        let merged = merge_pages(vec![page(&["x"], None), page(&[], None)], 1);
        assert_eq!(merged, page(&["x"], None), "exactly full, nothing more");
    }

    #[test]
    fn a_short_page_with_more_bounds_the_merge() {
        // The first node stopped early after "b": its keys after "b" are unknown, so the
        // merged page must not pass "b" even though it has room.
        let merged = merge_pages(
            vec![page(&["a", "b"], Some("b")), page(&["c", "d"], None)],
            10,
        );
        assert_eq!(merged, page(&["a", "b"], Some("b")));
        let merged = merge_pages(vec![page(&[], Some("m")), page(&["c", "x"], None)], 10);
        assert_eq!(merged, page(&["c"], Some("m")));
    }
}
