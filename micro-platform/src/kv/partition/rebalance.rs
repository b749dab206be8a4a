//! Moving keys to their owner after the ring changed: in bulk ([`PartitionedStore::rebalance`])
//! and one key at a time on access (`settle`).

use std::{collections::BTreeMap, sync::atomic::Ordering, time::Duration};

use futures_util::{StreamExt, future};
use micro_core::{
    lock::lock,
    store::{Condition, ListOptions, MAX_BATCH, MAX_PAGE, Namespace, Put, Store, StoreError},
};

use super::{
    PartitionedStore,
    topology::{Member, Topology},
};

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

// === impl PartitionedStore ===

impl PartitionedStore {
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
    /// Moves `key`, known to be missing on its owner, from the node that owned it in an
    /// earlier ring (newest first) to its owner, if it is found there.
    pub(super) async fn settle(
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
    pub(super) async fn settle_missing(
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
