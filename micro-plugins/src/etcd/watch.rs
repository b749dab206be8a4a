//! Watching a key prefix: etcd events translated into micro events against what the
//! watcher has reported, with relisting after compaction.

use std::collections::{BTreeMap, VecDeque};

use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchResponse, WatchStream};
use micro_core::registry::{Event, EventKind, RegistryError, Service, Watcher};

use super::decode;

/// The state behind one [`Watcher`].
struct State {
    registry: String,
    client: Client,
    prefix: String,
    /// key → the record last reported for it.
    known: BTreeMap<String, Service>,
    /// Every change up to this revision is reflected in `known`.
    revision: i64,
    stream: WatchStream,
    /// Events derived but not yet yielded.
    pending: VecDeque<Event>,
}

/// Watches `prefix` from `revision + 1`, where `known` is what the caller has already seen
/// (the listing at `revision`).
pub(super) async fn start(
    registry: String,
    client: Client,
    prefix: String,
    known: BTreeMap<String, Service>,
    revision: i64,
) -> Result<Watcher, RegistryError> {
    let stream = open(&registry, &client, &prefix, revision).await?;
    let state = State {
        registry,
        client,
        prefix,
        known,
        revision,
        stream,
        pending: VecDeque::new(),
    };
    Ok(Box::pin(futures_util::stream::unfold(
        Some(state),
        |state| async move {
            let mut state = state?;
            match state.next().await {
                Ok(event) => Some((Ok(event), Some(state))),
                Err(err) => Some((Err(err), None)),
            }
        },
    )))
}

async fn open(
    registry: &str,
    client: &Client,
    prefix: &str,
    revision: i64,
) -> Result<WatchStream, RegistryError> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    client
        .watch_client()
        .watch(prefix, Some(options))
        .await
        .map_err(|err| RegistryError::backend(registry, "cannot watch records", err))
}

// === impl State ===

impl State {
    /// The next event; an error ends the watch.
    async fn next(&mut self) -> Result<Event, RegistryError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let response = match self.stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return Err(RegistryError::backend_msg(
                        &self.registry,
                        "etcd ended the watch",
                    ));
                }
                Err(err) => {
                    return Err(RegistryError::backend(
                        &self.registry,
                        "watch failed",
                        err,
                    ));
                }
            };
            if response.canceled() {
                if response.compact_revision() > 0 {
                    self.resync(response.compact_revision()).await?;
                    continue;
                }
                return Err(RegistryError::backend_msg(
                    &self.registry,
                    format!("etcd canceled the watch: {}", response.cancel_reason()),
                ));
            }
            self.apply(&response);
        }
    }

    /// Derives events from one response. etcd never splits a revision across responses, so
    /// events at or below the last complete revision are old news and skipped.
    fn apply(&mut self, response: &WatchResponse) {
        let mut newest = self.revision;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            if revision <= self.revision {
                tracing::debug!(
                    registry = %self.registry, revision, seen = self.revision,
                    "skipping an event at an old revision"
                );
                continue;
            }
            newest = newest.max(revision);
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match event.event_type() {
                EventType::Put => {
                    let Some((key, record)) = decode(&self.registry, kv.key(), kv.value()) else {
                        continue;
                    };
                    let kind = match self.known.get(&key) {
                        None => EventKind::Create,
                        Some(previous) if *previous == record => continue,
                        Some(_) => EventKind::Update,
                    };
                    self.known.insert(key, record.clone());
                    self.pending.push_back(Event {
                        kind,
                        service: record,
                    });
                }
                EventType::Delete => {
                    if let Some(record) = self.known.remove(&key) {
                        self.pending.push_back(Event {
                            kind: EventKind::Delete,
                            service: record,
                        });
                    }
                }
            }
        }
        self.revision = newest;
    }

    /// The revision this watcher needs was compacted away: list again, report the
    /// difference against what was reported, and watch on from the listing.
    async fn resync(&mut self, compacted: i64) -> Result<(), RegistryError> {
        tracing::info!(
            registry = %self.registry, prefix = %self.prefix, seen = self.revision, compacted,
            "watch revision compacted; listing again"
        );
        let mut client = self.client.clone();
        let response = client
            .get(self.prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|err| {
                RegistryError::backend(&self.registry, "cannot list records after compaction", err)
            })?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut fresh = BTreeMap::new();
        for kv in response.kvs() {
            if let Some((key, record)) = decode(&self.registry, kv.key(), kv.value()) {
                fresh.insert(key, record);
            }
        }
        for (key, record) in &self.known {
            if !fresh.contains_key(key) {
                self.pending.push_back(Event {
                    kind: EventKind::Delete,
                    service: record.clone(),
                });
            }
        }
        for (key, record) in &fresh {
            let kind = match self.known.get(key) {
                None => EventKind::Create,
                Some(previous) if previous == record => continue,
                Some(_) => EventKind::Update,
            };
            self.pending.push_back(Event {
                kind,
                service: record.clone(),
            });
        }
        self.known = fresh;
        // Revisions only move forward.
        self.revision = self.revision.max(revision);
        self.stream = open(&self.registry, &self.client, &self.prefix, self.revision).await?;
        Ok(())
    }
}
