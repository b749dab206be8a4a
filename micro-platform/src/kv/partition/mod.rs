//! [`PartitionedStore`]: one [`Store`] over several kv service nodes, each key on the node
//! its consistent hash picks.
//!
//! - `topology`: the ring built from the registry's records, and the rings it replaced;
//! - `rebalance`: moving keys to their owner, in bulk and on access;
//! - `store`: the `Store` operations, split by owner.

mod rebalance;
mod store;
mod topology;

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, atomic::AtomicBool},
};

use micro_core::{
    registry::{CacheRegistry, Service, SharedRegistry},
    store::{Namespace, StoreError, validate_key},
};
use tokio::sync::watch;

pub use self::rebalance::Rebalance;
use self::topology::{Member, Topology};
use super::SERVICE_NAME;

/// Node metadata naming a node's place on the ring. Nodes without it are placed by their
/// address. Set it (`ServiceBuilder::node_metadata`) to a name that survives restarts and
/// address changes when the node's backend is persistent, so the node keeps its keys.
pub const PARTITION_METADATA: &str = "kv.partition";

/// A [`Store`](micro_core::Store) partitioned across the nodes of the kv service by consistent hashing.
///
/// The nodes are those of the service [`SERVICE_NAME`] (`micro.kv`, or another name given to
/// [`PartitionedStoreBuilder::service`]) in a registry, followed through a
/// [`CacheRegistry`] watch, so nodes joining and leaving change the ring without a restart.
/// Every key's operation goes straight to its owner, through one [`KvClient`](super::KvClient) per node at the
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
/// - `put_many` is **not atomic** ([`atomic_batches`](micro_core::Store::atomic_batches) is `false`):
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
            .map_err(|err| StoreError::unavailable_with(&name, err.to_string(), err))?;
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
