//! The ring: who owns which key, built from the registry's records of the kv service, and
//! the rings it replaced (where a key missing on its owner may still be).

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
};

use micro_core::{
    lock::lock,
    registry::Service,
    store::{Namespace, StoreError},
};

use super::{MAX_HISTORY, PARTITION_METADATA, PartitionedStore};
use crate::kv::{
    KvClient,
    ring::{Fnv, Ring},
};

/// One ring: the members and who owns which hash.
pub(super) struct Topology {
    /// The registry records it was built from.
    pub(super) source: Arc<Vec<Service>>,
    pub(super) members: Vec<Member>,
    pub(super) ring: Ring,
}

#[derive(Clone)]
pub(super) struct Member {
    /// Place on the ring: [`PARTITION_METADATA`] or the address.
    pub(super) id: String,
    pub(super) address: String,
    pub(super) client: KvClient,
}

// === impl PartitionedStore ===

impl PartitionedStore {
    /// The current topology, rebuilt first when the registry's records changed.
    pub(super) fn topology(&self) -> Arc<Topology> {
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

    pub(super) fn earlier_rings(&self) -> Vec<Arc<Topology>> {
        lock(&self.inner.history).clone()
    }

    pub(super) fn remembers_rings(&self) -> bool {
        !lock(&self.inner.history).is_empty()
    }
    /// The current topology, or `Unavailable` when it has no node.
    pub(super) fn live_topology(&self) -> Result<Arc<Topology>, StoreError> {
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

// === impl Topology ===

impl Topology {
    /// The members of `source`, reusing the clients of `previous` members at the same
    /// address.
    pub(super) fn build(
        source: Arc<Vec<Service>>,
        previous: &[Member],
        virtual_nodes: u32,
    ) -> Self {
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

    pub(super) fn owner(&self, namespace: &Namespace, key: &str) -> Result<usize, StoreError> {
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

    pub(super) fn client(&self, namespace: &Namespace, key: &str) -> Result<&KvClient, StoreError> {
        Ok(&self.members[self.owner(namespace, key)?].client)
    }

    /// Indexes into `items` grouped by the owner of each one's key.
    pub(super) fn split<'a, T>(
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
