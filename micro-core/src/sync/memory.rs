//! [`MemorySync`]: locks and elections in this process.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use super::{
    Leader, Leadership, Lock, LockOptions, Release, Sync, SyncError, validate_name, validate_ttl,
};
use crate::lock::lock;

/// Locks and elections shared by the clones of one value in one process; leases are renewed
/// by a task while held. For tests and single-process services: use a distributed backend
/// (etcd) to coordinate processes.
#[derive(Clone, Debug, Default)]
pub struct MemorySync {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    slots: Mutex<HashMap<Key, Slot>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Lock(String),
    Election(String),
}

#[derive(Debug)]
struct Slot {
    holder: Option<Holder>,
    last_token: u64,
    freed: Arc<Notify>,
    leader: watch::Sender<Option<Leader>>,
}

#[derive(Debug)]
struct Holder {
    token: u64,
    expires: Instant,
    held: watch::Sender<bool>,
}

impl Slot {
    fn new() -> Self {
        Self {
            holder: None,
            last_token: 0,
            freed: Arc::new(Notify::new()),
            leader: watch::channel(None).0,
        }
    }

    /// Drops a holder whose lease ran out.
    fn expire(&mut self, now: Instant) {
        if self
            .holder
            .as_ref()
            .is_some_and(|holder| holder.expires <= now)
        {
            self.free();
        }
    }

    fn free(&mut self) {
        if let Some(holder) = self.holder.take() {
            holder.held.send_replace(false);
            self.leader.send_replace(None);
            self.freed.notify_waiters();
        }
    }
}

// === impl MemorySync ===

impl MemorySync {
    /// A new, empty set of locks and elections.
    pub fn new() -> Self {
        Self::default()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        lock(&self.inner.slots)
    }

    async fn acquire(
        &self,
        key: Key,
        candidate: Option<&str>,
        ttl: Duration,
        wait: Option<Duration>,
    ) -> Result<Lock, SyncError> {
        let started = Instant::now();
        let deadline = wait.map(|wait| started + wait);
        loop {
            let (freed, expires) = {
                let now = Instant::now();
                let mut slots = self.slots();
                let slot = slots.entry(key.clone()).or_insert_with(Slot::new);
                slot.expire(now);
                match &slot.holder {
                    None => return Ok(self.take(&key, slot, candidate, ttl, now)),
                    Some(holder) => (Arc::clone(&slot.freed), holder.expires),
                }
            };
            let notified = freed.notified_owned();
            tokio::pin!(notified);
            // Registered before looking again, so a release in between is not missed.
            notified.as_mut().enable();
            if self
                .slots()
                .get(&key)
                .is_some_and(|slot| slot.holder.is_none())
            {
                continue;
            }
            let until = deadline.map_or(expires, |deadline| deadline.min(expires));
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                let (what, name) = match &key {
                    Key::Lock(name) => ("lock", name.clone()),
                    Key::Election(name) => ("election", name.clone()),
                };
                return Err(SyncError::Timeout {
                    what,
                    name,
                    waited: started.elapsed(),
                });
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    fn take(
        &self,
        key: &Key,
        slot: &mut Slot,
        candidate: Option<&str>,
        ttl: Duration,
        now: Instant,
    ) -> Lock {
        slot.last_token += 1;
        let token = slot.last_token;
        let (held, held_rx) = watch::channel(true);
        slot.holder = Some(Holder {
            token,
            expires: now + ttl,
            held,
        });
        if let Some(candidate) = candidate {
            slot.leader.send_replace(Some(Leader {
                id: candidate.to_owned(),
                term: token,
            }));
        }
        // Renews the lease while this acquisition holds it.
        let renewer = self.clone();
        let renew_key = key.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let mut slots = renewer.slots();
                let Some(holder) = slots
                    .get_mut(&renew_key)
                    .and_then(|slot| slot.holder.as_mut())
                    .filter(|holder| holder.token == token)
                else {
                    return;
                };
                holder.expires = Instant::now() + ttl;
            }
        });
        let name = match key {
            Key::Lock(name) | Key::Election(name) => name.clone(),
        };
        Lock::new(
            name,
            token,
            held_rx,
            Box::new(MemoryRelease {
                sync: self.clone(),
                key: key.clone(),
                token,
            }),
        )
    }
}

struct MemoryRelease {
    sync: MemorySync,
    key: Key,
    token: u64,
}

#[async_trait]
impl Release for MemoryRelease {
    async fn release(self: Box<Self>) -> Result<(), SyncError> {
        let mut slots = self.sync.slots();
        if let Some(slot) = slots.get_mut(&self.key)
            && slot
                .holder
                .as_ref()
                .is_some_and(|holder| holder.token == self.token)
        {
            slot.free();
        }
        Ok(())
    }
}

#[async_trait]
impl Sync for MemorySync {
    fn name(&self) -> &str {
        "memory"
    }

    async fn lock(&self, name: &str, options: LockOptions) -> Result<Lock, SyncError> {
        validate_name("lock", name)?;
        validate_ttl(options.ttl)?;
        self.acquire(Key::Lock(name.to_owned()), None, options.ttl, options.wait)
            .await
    }

    async fn campaign(
        &self,
        election: &str,
        candidate: &str,
        ttl: Duration,
    ) -> Result<Leadership, SyncError> {
        validate_name("election", election)?;
        validate_name("candidate", candidate)?;
        validate_ttl(ttl)?;
        let lock = self
            .acquire(
                Key::Election(election.to_owned()),
                Some(candidate),
                ttl,
                None,
            )
            .await?;
        Ok(Leadership::new(lock, candidate))
    }

    async fn leader(&self, election: &str) -> Result<Option<Leader>, SyncError> {
        validate_name("election", election)?;
        let now = Instant::now();
        let mut slots = self.slots();
        Ok(slots
            .get_mut(&Key::Election(election.to_owned()))
            .and_then(|slot| {
                slot.expire(now);
                slot.leader.borrow().clone()
            }))
    }

    async fn observe(&self, election: &str) -> Result<watch::Receiver<Option<Leader>>, SyncError> {
        validate_name("election", election)?;
        let mut slots = self.slots();
        Ok(slots
            .entry(Key::Election(election.to_owned()))
            .or_insert_with(Slot::new)
            .leader
            .subscribe())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MemorySync;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::sync::conformance::run(Arc::new(MemorySync::new())).await;
    }
}
