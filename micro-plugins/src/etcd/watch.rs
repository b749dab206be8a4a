//! Watching a key prefix: etcd events translated into micro events against what the
//! watcher has reported, with relisting after compaction.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use etcd_client::{EventType, GetOptions, WatchOptions, WatchResponse, WatchStream};
use micro_core::registry::{Event, EventKind, RegistryError, Service, Watcher};

use super::{decode, pool::Pool};

/// What a watch needs besides its position.
pub(super) struct Config {
    /// The registry's name, for errors and logs.
    pub(super) registry: String,
    pub(super) client: Arc<Pool>,
    /// The watched key prefix.
    pub(super) prefix: String,
}

/// The state behind one [`Watcher`].
struct State {
    config: Config,
    /// key → the record last reported for it.
    known: BTreeMap<String, Service>,
    /// Every change up to this revision is reflected in `known`.
    revision: i64,
    stream: WatchStream,
    /// The endpoint `stream` runs on.
    endpoint: usize,
    /// Events derived but not yet yielded.
    pending: VecDeque<Event>,
}

/// Watches `prefix` from `revision + 1`, where `known` is what the caller has already seen
/// (the listing at `revision`).
pub(super) async fn start(
    config: Config,
    known: BTreeMap<String, Service>,
    revision: i64,
) -> Result<Watcher, RegistryError> {
    let (endpoint, stream) = open(&config, revision).await?;
    let state = State {
        config,
        known,
        revision,
        stream,
        endpoint,
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

/// Opens a watch of the prefix from `revision + 1` on the current endpoint, moving on to
/// the next endpoints while members are unavailable.
async fn open(config: &Config, revision: i64) -> Result<(usize, WatchStream), RegistryError> {
    let mut attempts = config.client.len();
    loop {
        attempts -= 1;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let (index, client) = config.client.current();
        match client
            .watch_client()
            .watch(config.prefix.clone(), Some(options))
            .await
        {
            Ok(stream) => return Ok((index, stream)),
            Err(err) => {
                let unavailable = super::is_unavailable(&err);
                if unavailable {
                    config.client.failed(index);
                }
                if !unavailable || attempts == 0 {
                    return Err(RegistryError::backend(
                        &config.registry,
                        "cannot watch records",
                        err,
                    ));
                }
            }
        }
    }
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
                    self.reopen("etcd ended the watch stream".to_owned())
                        .await?;
                    continue;
                }
                Err(err) => {
                    self.reopen(err.to_string()).await?;
                    continue;
                }
            };
            if response.canceled() {
                if response.compact_revision() > 0 {
                    self.resync(response.compact_revision()).await?;
                    continue;
                }
                return Err(RegistryError::backend_msg(
                    &self.config.registry,
                    format!("etcd canceled the watch: {}", response.cancel_reason()),
                ));
            }
            self.apply(&response);
        }
    }

    /// The stream failed (its member died, or etcd is gone): open it again from the last
    /// revision seen, on whichever member the client reaches. Nothing is lost or repeated:
    /// the new stream starts right after what was applied.
    async fn reopen(&mut self, reason: String) -> Result<(), RegistryError> {
        self.config.client.failed(self.endpoint);
        let (endpoint, stream) = open(&self.config, self.revision).await?;
        tracing::info!(
            registry = %self.config.registry, prefix = %self.config.prefix,
            revision = self.revision, %reason, "watch stream failed; resumed"
        );
        self.stream = stream;
        self.endpoint = endpoint;
        Ok(())
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
                    registry = %self.config.registry, revision, seen = self.revision,
                    "skipping an event at an old revision"
                );
                continue;
            }
            newest = newest.max(revision);
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match event.event_type() {
                EventType::Put => {
                    let Some((key, record)) = decode(&self.config.registry, kv.key(), kv.value())
                    else {
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
            registry = %self.config.registry, prefix = %self.config.prefix, seen = self.revision, compacted,
            "watch revision compacted; listing again"
        );
        let (_, mut client) = self.config.client.current();
        let response = client
            .get(
                self.config.prefix.clone(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|err| {
                RegistryError::backend(
                    &self.config.registry,
                    "cannot list records after compaction",
                    err,
                )
            })?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut fresh = BTreeMap::new();
        for kv in response.kvs() {
            if let Some((key, record)) = decode(&self.config.registry, kv.key(), kv.value()) {
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
        (self.endpoint, self.stream) = open(&self.config, self.revision).await?;
        Ok(())
    }
}
