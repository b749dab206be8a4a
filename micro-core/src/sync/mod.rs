//! Distributed coordination: the [`Sync`] trait (locks with leases and fencing tokens, leader
//! election) and its embedded [`MemorySync`].
//!
//! # Locks
//!
//! [`Sync::lock`] acquires a named lock with a lease: the backend renews the lease while the
//! [`Lock`] is held, and if it cannot (the process stalled, the backend is unreachable)
//! the lease runs out, [`Lock::lost`] resolves and another holder may take the lock. Each
//! acquisition carries a **fencing token** that only increases for a lock name: pass it with
//! every write the lock guards, and have the storage reject a token lower than the last one
//! it saw (for a kv store: keep the token in the record and write with compare-and-set), so
//! a holder that lost its lease without noticing cannot overwrite newer data.
//!
//! [`LockOptions::wait`] bounds how long to wait for a held lock ([`Duration::ZERO`]: try
//! once); running out is [`SyncError::Timeout`].
//!
//! # Leader election
//!
//! [`Sync::campaign`] waits until the candidate leads the election, then returns a
//! [`Leadership`] that holds its lease like a lock; [`Leadership::lost`] resolves when
//! leadership is lost, [`Leadership::resign`] steps down. [`Sync::leader`] and
//! [`Sync::observe`] show who leads, with the **term** (a fencing token for the leader).
//!
//! # Choosing a backend
//!
//! [`from_url`] and [`from_env`] (`MICRO_SYNC`) open a backend by URL: `memory` here, and
//! `etcd://host:port[,host:port…]` from micro-plugins (feature `etcd`) after
//! `micro_plugins::install()`.
//!
//! Note the name: this trait is `micro_core::sync::Sync`; refer to it through its module
//! (`sync::Sync`) where `std::marker::Sync` is also in scope.

mod memory;
mod url;

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;

pub use memory::MemorySync;
pub use url::{Opener, SYNC_ENV, from_env, from_url, register_scheme};

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::watch;

/// The underlying error of a [`SyncError`].
type Source = Box<dyn std::error::Error + Send + std::marker::Sync + 'static>;

/// A shared, type-erased [`Sync`].
pub type SharedSync = Arc<dyn Sync>;

/// Shortest lease.
pub const MIN_TTL: Duration = Duration::from_millis(100);
/// Longest lock or election name, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// How to acquire a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOptions {
    /// The lease: how long the lock outlives its holder's last renewal. Default 10 s.
    pub ttl: Duration,
    /// How long to wait for a held lock; `None` waits as long as it takes,
    /// `Some(Duration::ZERO)` tries once.
    pub wait: Option<Duration>,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            wait: None,
        }
    }
}

/// Who leads an election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The candidate id passed to [`Sync::campaign`].
    pub id: String,
    /// Grows with every new leadership of the election: a fencing token.
    pub term: u64,
}

/// Why a coordination call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A bad name or option.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The lock or leadership was not obtained within the wait.
    #[error("{what} {name:?} not acquired within {waited:?}")]
    Timeout {
        /// `lock` or `election`.
        what: &'static str,
        /// The lock or election name.
        name: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The backend cannot be reached or failed.
    #[error("sync {backend} unavailable: {message}")]
    Unavailable {
        /// The backend's name.
        backend: String,
        /// What went wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Source>,
    },
}

impl SyncError {
    /// The backend failed with `message`, no underlying error.
    pub fn unavailable(backend: &str, message: impl fmt::Display) -> Self {
        Self::Unavailable {
            backend: backend.to_owned(),
            message: message.to_string(),
            source: None,
        }
    }

    /// The backend failed with `message` because of `source`, which
    /// [`Error::source`](std::error::Error::source) returns. The message is what the
    /// error displays (and what crosses the wire), so let it name the cause too.
    pub fn unavailable_with(
        backend: &str,
        message: impl fmt::Display,
        source: impl Into<Source>,
    ) -> Self {
        Self::Unavailable {
            backend: backend.to_owned(),
            message: message.to_string(),
            source: Some(source.into()),
        }
    }
}

impl From<SyncError> for tonic::Status {
    /// INVALID_ARGUMENT, DEADLINE_EXCEEDED for a timeout, UNAVAILABLE.
    fn from(error: SyncError) -> Self {
        let message = error.to_string();
        match error {
            SyncError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            SyncError::Timeout { .. } => tonic::Status::deadline_exceeded(message),
            SyncError::Unavailable { .. } => tonic::Status::unavailable(message),
        }
    }
}

/// Locks and leader election; see the [module docs](self).
#[async_trait]
pub trait Sync: Send + std::marker::Sync + 'static {
    /// The backend's name (`memory`, `etcd`, …).
    fn name(&self) -> &str;

    /// Acquires the lock `name`.
    async fn lock(&self, name: &str, options: LockOptions) -> Result<Lock, SyncError>;

    /// Waits until `candidate` leads `election`, holding the leadership with a lease of `ttl`.
    async fn campaign(
        &self,
        election: &str,
        candidate: &str,
        ttl: Duration,
    ) -> Result<Leadership, SyncError>;

    /// The current leader of `election`, if any.
    async fn leader(&self, election: &str) -> Result<Option<Leader>, SyncError>;

    /// The leader of `election` now and after every change.
    async fn observe(&self, election: &str) -> Result<watch::Receiver<Option<Leader>>, SyncError>;
}

/// What a backend does when a lock or leadership is given up; implemented by backends.
#[async_trait]
pub trait Release: Send + std::marker::Sync + 'static {
    /// Gives the lock or leadership up (stops renewing, frees it for others).
    async fn release(self: Box<Self>) -> Result<(), SyncError>;
}

/// A held lock. Release it with [`release`](Self::release); dropping it releases it in the
/// background.
pub struct Lock {
    name: String,
    token: u64,
    held: watch::Receiver<bool>,
    release: Option<Box<dyn Release>>,
}

/// A held leadership; like a [`Lock`], with the election's term as its token.
pub struct Leadership {
    lock: Lock,
    candidate: String,
}

// === impl Lock ===

impl Lock {
    /// A held lock, for backends: `held` turns false when the lease is lost.
    pub fn new(
        name: impl Into<String>,
        token: u64,
        held: watch::Receiver<bool>,
        release: Box<dyn Release>,
    ) -> Self {
        Self {
            name: name.into(),
            token,
            held,
            release: Some(release),
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token of this acquisition: higher than every earlier one of this lock.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Whether the lease is still held, as far as this process knows.
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Resolves once the lease is lost (at once if it already is).
    pub async fn lost(&mut self) {
        // An error means the backend's renewer is gone: the lease cannot be held either.
        let _ = self.held.wait_for(|held| !held).await;
    }

    /// Gives the lock up.
    ///
    /// # Errors
    /// [`SyncError::Unavailable`] when the backend could not be told; the lease then runs out.
    pub async fn release(mut self) -> Result<(), SyncError> {
        match self.release.take() {
            Some(release) => release.release().await,
            None => Ok(()),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(release) = self.release.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let name = std::mem::take(&mut self.name);
            runtime.spawn(async move {
                if let Err(error) = release.release().await {
                    tracing::warn!(lock = %name, %error, "releasing a dropped lock failed; its lease will run out");
                }
            });
        }
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("held", &self.is_held())
            .finish()
    }
}

// === impl Leadership ===

impl Leadership {
    /// A held leadership, for backends.
    pub fn new(lock: Lock, candidate: impl Into<String>) -> Self {
        Self {
            lock,
            candidate: candidate.into(),
        }
    }

    /// The election.
    pub fn election(&self) -> &str {
        self.lock.name()
    }

    /// This leader's term: higher than every earlier term of the election.
    pub fn term(&self) -> u64 {
        self.lock.token()
    }

    /// The candidate id that leads.
    pub fn candidate(&self) -> &str {
        &self.candidate
    }

    /// Whether leadership is still held, as far as this process knows.
    pub fn is_leader(&self) -> bool {
        self.lock.is_held()
    }

    /// Resolves once leadership is lost.
    pub async fn lost(&mut self) {
        self.lock.lost().await;
    }

    /// Steps down, letting the next candidate lead.
    ///
    /// # Errors
    /// As [`Lock::release`].
    pub async fn resign(self) -> Result<(), SyncError> {
        self.lock.release().await
    }
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("election", &self.election())
            .field("candidate", &self.candidate)
            .field("term", &self.term())
            .finish()
    }
}

/// Checks a lock or election name: 1 to [`MAX_NAME_LEN`] bytes, no control characters.
///
/// # Errors
/// [`SyncError::InvalidArgument`] naming the problem.
pub fn validate_name(what: &str, name: &str) -> Result<(), SyncError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(SyncError::InvalidArgument(format!(
            "{what} name must be 1 to {MAX_NAME_LEN} bytes, got {}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(SyncError::InvalidArgument(format!(
            "{what} name {name:?} contains a control character"
        )));
    }
    Ok(())
}

/// Checks a lease.
///
/// # Errors
/// [`SyncError::InvalidArgument`] for a lease under [`MIN_TTL`].
pub fn validate_ttl(ttl: Duration) -> Result<(), SyncError> {
    if ttl < MIN_TTL {
        return Err(SyncError::InvalidArgument(format!(
            "lease of {ttl:?} is shorter than {MIN_TTL:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{error::Error as _, io};

    use super::*;

    #[test]
    fn unavailable_keeps_its_cause() {
        let cause = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let error = SyncError::unavailable_with("etcd", "cannot connect: refused", cause);
        assert_eq!(
            error.to_string(),
            "sync etcd unavailable: cannot connect: refused"
        );
        let cause = error.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(
            cause.map(io::Error::kind),
            Some(io::ErrorKind::ConnectionRefused)
        );
        assert!(SyncError::unavailable("etcd", "down").source().is_none());
    }
}
