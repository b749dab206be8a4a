//! [`Store`] for [`PartitionedStore`]: each operation on its key's owner, batches split by
//! owner, listing merged from every node.

use std::{cmp::Reverse, collections::BinaryHeap};

use async_trait::async_trait;
use futures_util::{StreamExt, future};
use micro_core::store::{
    Condition, ListOptions, Namespace, Page, Put, Record, Store, StoreError, condition_holds,
    validate_delete, validate_key, validate_keys, validate_list, validate_put, validate_puts,
};

use super::{PartitionedStore, topology::Topology};

// === impl PartitionedStore ===

impl PartitionedStore {
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
