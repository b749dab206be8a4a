//! Leases: one per registration TTL, kept alive by one long-lived KeepAlive stream, granted
//! again (and every record put again) whenever it is lost.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use micro_core::RegistryError;
use tokio::{
    sync::Notify,
    task::AbortHandle,
    time::{Instant, MissedTickBehavior},
};

use super::{Inner, State, pool::Pool};

/// First delay before retrying a failed keepalive or grant.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between retries, whatever the TTL.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The lease of one TTL.
pub(crate) struct Slot {
    /// The current lease; `None` until granted and after it was lost.
    pub(crate) lease: Option<i64>,
    /// Tells the keepalive task that `register` replaced the lease.
    replaced: Arc<Notify>,
    task: AbortHandle,
}

/// How a keepalive stream ended.
enum Outcome {
    /// etcd says the lease no longer exists.
    Lost,
    /// The stream failed; the lease may still exist.
    Broken(String),
    /// `register` granted a new lease.
    Replaced,
}

// === impl Slot ===

impl Slot {
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Inner ===

impl Inner {
    /// The lease for `ttl` seconds, granting it (and putting every record of that TTL with
    /// it) when there is none. Starts the keepalive of a new TTL.
    pub(super) async fn ensure_lease(
        self: &Arc<Self>,
        client: &Pool,
        state: &mut State,
        ttl: i64,
    ) -> Result<i64, RegistryError> {
        let mut created = false;
        let slot = state.leases.entry(ttl).or_insert_with(|| {
            created = true;
            let replaced = Arc::new(Notify::new());
            let task =
                tokio::spawn(maintain(Arc::downgrade(self), ttl, replaced.clone())).abort_handle();
            Slot {
                lease: None,
                replaced,
                task,
            }
        });
        if let Some(id) = slot.lease {
            return Ok(id);
        }
        let id = self.grant_and_put(client, state, ttl).await?;
        if let Some(slot) = state.leases.get_mut(&ttl) {
            slot.lease = Some(id);
            // A keepalive may still run on the lease this one replaces; a new slot's task
            // has not started one yet and reads the lease when it does.
            if !created {
                slot.replaced.notify_one();
            }
        }
        Ok(id)
    }

    /// Grants a lease of `ttl` seconds and puts every record of that TTL with it.
    async fn grant_and_put(
        &self,
        client: &Pool,
        state: &State,
        ttl: i64,
    ) -> Result<i64, RegistryError> {
        let granted = self
            .retry(
                client,
                |mut c| async move { c.lease_grant(ttl, None).await },
            )
            .await
            .map_err(|err| RegistryError::backend(&self.name, "cannot grant a lease", err))?;
        let id = granted.id();
        let entries: Vec<(String, String)> = state
            .records
            .iter()
            .filter(|(_, record)| record.ttl == ttl)
            .map(|(key, record)| (key.clone(), record.value.clone()))
            .collect();
        if let Err(err) = self.put_all(client, &entries, id).await {
            // The new lease expires on its own; the next attempt grants another.
            return Err(RegistryError::backend(
                &self.name,
                "cannot put records with the new lease",
                err,
            ));
        }
        tracing::debug!(
            registry = %self.name, lease = %format_args!("{id:x}"), ttl, records = entries.len(),
            "granted lease"
        );
        Ok(id)
    }
}

/// Keeps the lease of `ttl` seconds alive, forever: grants it again and puts the records
/// again when it is lost, with backoff. Ends when the registry or the slot is gone.
async fn maintain(inner: Weak<Inner>, ttl: i64, replaced: Arc<Notify>) {
    let ttl_duration = Duration::from_secs(u64::try_from(ttl).unwrap_or(1));
    let period = ttl_duration / 3;
    let max_backoff = period.clamp(MIN_BACKOFF, MAX_BACKOFF);
    let mut backoff = MIN_BACKOFF;
    let mut lost_since: Option<Instant> = None;
    loop {
        let (client, lease, name) = {
            let Some(inner) = inner.upgrade() else { return };
            let client = match inner.client().await {
                Ok(client) => client,
                Err(err) => {
                    tracing::warn!(registry = %inner.name, error = %err, "cannot connect to etcd");
                    drop(inner);
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(max_backoff);
                    continue;
                }
            };
            let mut state = inner.state.lock().await;
            let Some(slot) = state.leases.get(&ttl) else {
                return;
            };
            let lease = match slot.lease {
                Some(id) => id,
                None => match inner.grant_and_put(&client, &state, ttl).await {
                    Ok(id) => {
                        let records = state.records.values().filter(|r| r.ttl == ttl).count();
                        tracing::info!(
                            registry = %inner.name, lease = %format_args!("{id:x}"), ttl, records,
                            down_for = ?lost_since.map(|t| t.elapsed()),
                            "granted a new lease and registered again"
                        );
                        lost_since = None;
                        if let Some(slot) = state.leases.get_mut(&ttl) {
                            slot.lease = Some(id);
                        }
                        id
                    }
                    Err(err) => {
                        tracing::warn!(
                            registry = %inner.name, ttl, error = %err,
                            "cannot register again; retrying in up to {backoff:?}"
                        );
                        drop(state);
                        drop(inner);
                        tokio::time::sleep(jitter(backoff)).await;
                        backoff = (backoff * 2).min(max_backoff);
                        continue;
                    }
                },
            };
            (client, lease, inner.name.clone())
        };
        match keep_alive(
            &client,
            lease,
            ttl_duration,
            period,
            &replaced,
            &mut backoff,
        )
        .await
        {
            Outcome::Replaced => {}
            Outcome::Lost => {
                tracing::warn!(
                    registry = %name, lease = %format_args!("{lease:x}"), ttl,
                    "lease lost (expired or revoked); granting a new one and registering again"
                );
                lost_since.get_or_insert_with(Instant::now);
                let Some(inner) = inner.upgrade() else { return };
                let mut state = inner.state.lock().await;
                if let Some(slot) = state.leases.get_mut(&ttl)
                    && slot.lease == Some(lease)
                {
                    slot.lease = None;
                }
            }
            Outcome::Broken(reason) => {
                tracing::warn!(
                    registry = %name, lease = %format_args!("{lease:x}"), ttl, %reason,
                    "lease keepalive failed; retrying in up to {backoff:?}"
                );
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// Runs one KeepAlive stream for `lease`: a keepalive every `period`, until etcd reports
/// the lease gone, the stream fails or stalls for a whole TTL, or `register` replaced the
/// lease.
async fn keep_alive(
    client: &Pool,
    lease: i64,
    ttl: Duration,
    period: Duration,
    replaced: &Notify,
    backoff: &mut Duration,
) -> Outcome {
    let (index, current) = client.current();
    let mut leases = current.lease_client();
    let broken = |reason: String| {
        client.failed(index);
        Outcome::Broken(reason)
    };
    let opened = tokio::select! {
        opened = tokio::time::timeout(ttl, leases.keep_alive(lease)) => opened,
        () = replaced.notified() => return Outcome::Replaced,
    };
    let (mut keeper, mut stream) = match opened {
        Ok(Ok(pair)) => pair,
        Ok(Err(err)) if is_lease_not_found(&err) => return Outcome::Lost,
        Ok(Err(err)) => return broken(err.to_string()),
        Err(_) => return broken(format!("no answer to a keepalive within {ttl:?}")),
    };
    *backoff = MIN_BACKOFF;
    let mut last_answer = Instant::now();
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if last_answer.elapsed() >= ttl {
                    return broken(format!("no keepalive answer for {ttl:?}"));
                }
                if let Err(err) = keeper.keep_alive().await {
                    return broken(err.to_string());
                }
            }
            message = stream.message() => match message {
                Ok(Some(answer)) if answer.ttl() > 0 => last_answer = Instant::now(),
                Ok(Some(_)) => return Outcome::Lost,
                Ok(None) => return broken("keepalive stream ended".to_owned()),
                Err(err) if is_lease_not_found(&err) => return Outcome::Lost,
                Err(err) => return broken(err.to_string()),
            },
            () = replaced.notified() => return Outcome::Replaced,
        }
    }
}

/// etcd reports that the lease does not exist (expired or revoked).
pub(crate) fn is_lease_not_found(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::GRpcStatus(status) => status.message().contains("lease not found"),
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}

/// `delay` scaled by a random factor in [0.5, 1), so many processes do not retry in
/// lockstep.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}
