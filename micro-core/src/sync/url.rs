//! Choosing a [`Sync`](super::Sync) backend by URL, from code or from `MICRO_SYNC`.

use std::{future::Future, pin::Pin, sync::Arc};

use super::{MemorySync, SharedSync, SyncError};
use crate::engine::{self, Kind, Schemes};

/// The environment variable that selects the backend: `memory` (the default) or a scheme
/// added with [`register_scheme`] (`etcd://host:port` once `micro_plugins::install()` ran).
pub const SYNC_ENV: &str = "MICRO_SYNC";

/// Opens a backend from its full URL; connecting may take a while, so it is async.
pub type Opener =
    fn(String) -> Pin<Box<dyn Future<Output = Result<SharedSync, SyncError>> + Send + 'static>>;

static SCHEMES: Schemes<Opener> = Schemes::new();

/// Teaches [`from_url`] and [`from_env`] a backend from another crate; registering a scheme
/// again replaces its opener.
pub fn register_scheme(scheme: &'static str, opener: Opener) {
    SCHEMES.register(scheme, opener);
}

/// Opens the backend named by `url`: `memory` (or empty) for a new [`MemorySync`], or a
/// scheme added with [`register_scheme`].
///
/// # Errors
/// [`SyncError::InvalidArgument`] for an unknown URL, listing the known ones; the opener's
/// error.
pub async fn from_url(url: &str) -> Result<SharedSync, SyncError> {
    let url = url.trim();
    if url.is_empty() || url == "memory" {
        return Ok(Arc::new(MemorySync::new()));
    }
    match SCHEMES.opener(url) {
        Some(open) => open(url.to_owned()).await,
        None => Err(SyncError::InvalidArgument(format!(
            "unknown sync backend {url:?}; known: {}{}",
            SCHEMES.known(&["memory"]),
            engine::not_installed_hint(Kind::Sync, url)
        ))),
    }
}

/// Opens the backend named by `MICRO_SYNC`, `memory` when it is unset.
///
/// # Errors
/// As [`from_url`].
pub async fn from_env() -> Result<SharedSync, SyncError> {
    from_url(&std::env::var(SYNC_ENV).unwrap_or_default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_and_unknown() {
        assert_eq!(from_url("memory").await.unwrap().name(), "memory");
        assert_eq!(from_url("").await.unwrap().name(), "memory");
        let error = from_url("zookeeper://x").await.err().unwrap();
        assert!(error.to_string().contains("known: memory"), "{error}");
    }
}
