//! [`AuthSync`]: keeps a service's [`AuthLayer`] in step with the auth service by polling.

use std::{sync::Arc, time::Duration};

use micro_core::auth::{AuthLayer, KeySet, MemoryRevocations, RuleSet, Verifier};
use tokio::{sync::watch, task::JoinHandle};
use tonic::Status;

use super::{AuthClient, client::Revocation};

/// How often an [`AuthSync`] polls unless [`AuthSync::start_with_interval`] says otherwise:
/// 2 s.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// An [`AuthLayer`] for a service elsewhere, kept current with the auth service: every
/// interval it fetches the keys (`Jwks`), the rules (`ListRules`) and the revocations
/// (`ListRevocations`) and swaps them in. A revocation at the service therefore reaches the
/// layer within **the interval plus one call** (2 s + a round trip by default). When a poll
/// fails, the layer keeps the last state it got and a warning is logged; the next poll
/// tries again.
///
/// The task stops when the `AuthSync` is dropped (or [`stop`](Self::stop)ped); the layer
/// then keeps its last state.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use micro_core::Service;
/// use micro_platform::auth::{AuthClient, AuthSync};
///
/// let sync = AuthSync::start(AuthClient::connect("127.0.0.1:7700")?, "greeter").await?;
/// Service::builder("greeter").layer(sync.layer()) /* .add_service(…) */;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AuthSync {
    layer: AuthLayer,
    /// (polls done, whether the last one succeeded).
    polls: watch::Receiver<(u64, bool)>,
    task: JoinHandle<()>,
}

impl AuthSync {
    /// Fetches the keys, rules and revocations once and keeps them current every
    /// [`DEFAULT_SYNC_INTERVAL`]; the layer decides calls to the service named `name`.
    ///
    /// # Errors
    /// The status of the first fetch (the issuer and audience to verify come from it).
    pub async fn start(client: AuthClient, name: impl Into<String>) -> Result<Self, Status> {
        Self::start_with_interval(client, name, DEFAULT_SYNC_INTERVAL).await
    }

    /// [`AuthSync::start`] polling every `interval`.
    ///
    /// # Errors
    /// As [`AuthSync::start`].
    pub async fn start_with_interval(
        client: AuthClient,
        name: impl Into<String>,
        interval: Duration,
    ) -> Result<Self, Status> {
        let jwks = client.jwks().await?;
        let keys = KeySet::from_json(&jwks.jwks).map_err(|error| {
            Status::internal(format!("the auth service's JWKS does not parse: {error}"))
        })?;
        let revocations = Arc::new(MemoryRevocations::new());
        let verifier = Arc::new(
            Verifier::new(keys, jwks.issuer, jwks.audience).with_revocations(revocations.clone()),
        );
        let layer = AuthLayer::new(name, verifier.clone(), RuleSet::default());
        let mut state = State {
            client,
            layer: layer.clone(),
            verifier,
            revocations,
            jwks: jwks.jwks,
        };
        // Rules and revocations now, so the layer starts complete.
        state.poll().await?;
        let (polled, polls) = watch::channel((0u64, true));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let ok = match state.poll().await {
                    Ok(()) => true,
                    Err(status) => {
                        tracing::warn!(code = ?status.code(), message = status.message(), "auth sync: poll failed; keeping the last keys, rules and revocations");
                        false
                    }
                };
                polled.send_modify(|(n, last)| {
                    *n += 1;
                    *last = ok;
                });
            }
        });
        Ok(Self { layer, polls, task })
    }

    /// The layer to add to the service (clones stay current).
    pub fn layer(&self) -> AuthLayer {
        self.layer.clone()
    }

    /// Waits for the next poll to end after this call (for tests and tools); returns
    /// whether it succeeded.
    pub async fn next_poll(&mut self) -> bool {
        self.polls.mark_unchanged();
        if self.polls.changed().await.is_err() {
            return false;
        }
        self.polls.borrow().1
    }

    /// Stops polling; the layer keeps its last state.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for AuthSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    client: AuthClient,
    layer: AuthLayer,
    verifier: Arc<Verifier>,
    revocations: Arc<MemoryRevocations>,
    /// The last JWKS text, so unchanged keys do not empty the layer's token cache.
    jwks: String,
}

impl State {
    async fn poll(&mut self) -> Result<(), Status> {
        // Each fetched before anything is applied: a failure changes nothing.
        let (jwks, rules, revocations) = tokio::try_join!(
            self.client.jwks(),
            self.client.list_rules(),
            self.client.list_revocations()
        )?;
        let rules = RuleSet::new(rules).map_err(|error| {
            Status::internal(format!("the auth service's rules do not compile: {error}"))
        })?;
        if jwks.jwks != self.jwks {
            let keys = KeySet::from_json(&jwks.jwks).map_err(|error| {
                Status::internal(format!("the auth service's JWKS does not parse: {error}"))
            })?;
            self.verifier.set_keys(keys);
            self.jwks = jwks.jwks;
        }
        self.layer.set_rules(rules);
        let (mut tokens, mut accounts) = (Vec::new(), Vec::new());
        for revocation in revocations {
            match revocation {
                Revocation::Token { id, expires } => tokens.push((id, expires)),
                Revocation::Account {
                    id,
                    issued_before,
                    expires,
                } => accounts.push((id, issued_before, expires)),
            }
        }
        self.revocations.replace(tokens, accounts);
        Ok(())
    }
}
