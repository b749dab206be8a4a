//! Choosing a store by URL, from code or from `MICRO_STORE`.

use std::sync::Arc;

use super::{MemoryStore, SharedStore, StoreError};
use crate::engine::{self, Kind, Schemes};

/// The environment variable that selects the store: `memory` (the default), `file:///path`
/// (feature `redb`) or a scheme added with [`register_scheme`].
pub const STORE_ENV: &str = "MICRO_STORE";

/// Opens a store from its full URL (scheme included), for [`register_scheme`].
pub type Opener = fn(&str) -> Result<SharedStore, StoreError>;

static SCHEMES: Schemes<Opener> = Schemes::new();

/// Teaches [`from_url`] and [`from_env`] a store that lives outside micro-core (Redis,
/// memcached, the kv service…): after `register_scheme("redis", open)`,
/// `from_url("redis://127.0.0.1:6379")` calls `open` with the whole URL. Registering a
/// scheme again replaces its opener; `memory` cannot be replaced.
pub fn register_scheme(scheme: &'static str, opener: Opener) {
    SCHEMES.register(scheme, opener);
}

/// Opens the store named by `url`: `memory` (or empty) for a new [`MemoryStore`],
/// `file:///abs/path/store.redb` for a `FileStore` (feature `redb`), or a scheme added with
/// [`register_scheme`].
///
/// # Errors
/// [`StoreError::UnknownStore`] listing the known schemes; the opener's error.
pub fn from_url(url: &str) -> Result<SharedStore, StoreError> {
    let url = url.trim();
    if url.is_empty() || url == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    #[cfg(feature = "redb")]
    if engine::scheme_of(url) == "file" {
        return super::FileStore::open_url(url);
    }
    if let Some(open) = SCHEMES.opener(url) {
        return open(url);
    }
    let builtin: &[&str] = if cfg!(feature = "redb") {
        &["memory", "file://…"]
    } else {
        &["memory"]
    };
    Err(StoreError::UnknownStore {
        url: url.to_owned(),
        known: format!(
            "{}{}",
            SCHEMES.known(builtin),
            engine::not_installed_hint(Kind::Store, url)
        ),
    })
}

/// Opens the store named by `MICRO_STORE`, `memory` when it is unset.
///
/// # Errors
/// As [`from_url`].
pub fn from_env() -> Result<SharedStore, StoreError> {
    from_url(&std::env::var(STORE_ENV).unwrap_or_default())
}
