//! [`MemoryStore`]: records in a map in this process.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    sync::Mutex,
};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{
    Condition, ListOptions, Namespace, Page, Put, Record, Store, StoreError, condition_holds,
    validate_delete, validate_keys, validate_list, validate_put, validate_puts,
};
use crate::lock::lock;

/// Records in a map in this process: fast, gone when the process ends. Batches are atomic.
///
/// Expired records are dropped when read or listed, and swept on writes.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<HashMap<Namespace, BTreeMap<String, Entry>>>,
}

#[derive(Debug, Clone)]
struct Entry {
    value: bytes::Bytes,
    version: u64,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|expires| expires > now)
    }

    fn record(&self, key: &str, now: Instant) -> Record {
        Record {
            key: key.to_owned(),
            value: self.value.clone(),
            version: self.version,
            ttl: self
                .expires
                .map(|expires| expires.saturating_duration_since(now)),
        }
    }
}

// === impl MemoryStore ===

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_table<R>(
        &self,
        namespace: &Namespace,
        f: impl FnOnce(&mut BTreeMap<String, Entry>, Instant) -> R,
    ) -> R {
        let mut tables = lock(&self.tables);
        let table = tables.entry(namespace.clone()).or_default();
        f(table, Instant::now())
    }
}

fn current(table: &BTreeMap<String, Entry>, key: &str, now: Instant) -> Option<u64> {
    table
        .get(key)
        .filter(|entry| entry.live(now))
        .map(|entry| entry.version)
}

fn write(table: &mut BTreeMap<String, Entry>, put: Put, now: Instant) -> u64 {
    let version = current(table, &put.key, now).map_or(1, |version| version + 1);
    let expires = put.ttl.and_then(|ttl| now.checked_add(ttl));
    table.insert(
        put.key,
        Entry {
            value: put.value,
            version,
            expires,
        },
    );
    version
}

#[async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &str {
        "memory"
    }

    fn atomic_batches(&self) -> bool {
        true
    }

    async fn get(&self, namespace: &Namespace, key: &str) -> Result<Option<Record>, StoreError> {
        super::validate_key(key)?;
        Ok(self.with_table(namespace, |table, now| {
            table
                .get(key)
                .filter(|entry| entry.live(now))
                .map(|entry| entry.record(key, now))
        }))
    }

    async fn put(&self, namespace: &Namespace, put: Put) -> Result<u64, StoreError> {
        validate_put(&put)?;
        self.with_table(namespace, |table, now| {
            let found = current(table, &put.key, now);
            if !condition_holds(put.condition, found) {
                return Err(StoreError::condition_failed(&put.key, put.condition, found));
            }
            Ok(write(table, put, now))
        })
    }

    async fn delete(
        &self,
        namespace: &Namespace,
        key: &str,
        condition: Condition,
    ) -> Result<bool, StoreError> {
        validate_delete(key, condition)?;
        self.with_table(namespace, |table, now| {
            let found = current(table, key, now);
            if !condition_holds(condition, found) {
                return Err(StoreError::condition_failed(key, condition, found));
            }
            Ok(table.remove(key).is_some_and(|entry| entry.live(now)))
        })
    }

    async fn list(&self, namespace: &Namespace, options: ListOptions) -> Result<Page, StoreError> {
        let limit = validate_list(&options)?;
        Ok(self.with_table(namespace, |table, now| {
            let start = match &options.start_after {
                Some(after) if after.as_str() >= options.prefix.as_str() => {
                    Bound::Excluded(after.clone())
                }
                _ => Bound::Included(options.prefix.clone()),
            };
            let mut keys = Vec::with_capacity(limit.min(64));
            let mut more = false;
            for (key, entry) in table.range((start, Bound::Unbounded)) {
                if !key.starts_with(&options.prefix) {
                    break;
                }
                if !entry.live(now) {
                    continue;
                }
                if keys.len() == limit {
                    more = true;
                    break;
                }
                keys.push(key.clone());
            }
            let next = if more { keys.last().cloned() } else { None };
            Page { keys, next }
        }))
    }

    async fn get_many(
        &self,
        namespace: &Namespace,
        keys: &[String],
    ) -> Result<Vec<Option<Record>>, StoreError> {
        validate_keys(keys)?;
        Ok(self.with_table(namespace, |table, now| {
            keys.iter()
                .map(|key| {
                    table
                        .get(key)
                        .filter(|entry| entry.live(now))
                        .map(|entry| entry.record(key, now))
                })
                .collect()
        }))
    }

    async fn put_many(
        &self,
        namespace: &Namespace,
        puts: Vec<Put>,
    ) -> Result<Vec<u64>, StoreError> {
        validate_puts(&puts)?;
        self.with_table(namespace, |table, now| {
            for put in &puts {
                let found = current(table, &put.key, now);
                if !condition_holds(put.condition, found) {
                    return Err(StoreError::condition_failed(&put.key, put.condition, found));
                }
            }
            table.retain(|_, entry| entry.live(now));
            Ok(puts.into_iter().map(|put| write(table, put, now)).collect())
        })
    }

    async fn delete_many(
        &self,
        namespace: &Namespace,
        keys: &[String],
    ) -> Result<Vec<bool>, StoreError> {
        validate_keys(keys)?;
        Ok(self.with_table(namespace, |table, now| {
            keys.iter()
                .map(|key| table.remove(key).is_some_and(|entry| entry.live(now)))
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MemoryStore;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::store::conformance::run(Arc::new(MemoryStore::new())).await;
    }
}
