//! Choosing a store by URL, from code or from `MICRO_STORE`.

use std::sync::{Arc, Mutex};

use super::{MemoryStore, SharedStore, StoreError};
use crate::lock::lock;

/// The environment variable that selects the store: `memory` (the default), `file:///path`
/// (feature `redb`) or a scheme added with [`register_scheme`].
pub const STORE_ENV: &str = "MICRO_STORE";

/// Opens a store from its full URL (scheme included), for [`register_scheme`].
pub type Opener = fn(&str) -> Result<SharedStore, StoreError>;

static SCHEMES: Mutex<Vec<(&'static str, Opener)>> = Mutex::new(Vec::new());

/// Teaches [`from_url`] and [`from_env`] a store that lives outside micro-core (Redis,
/// memcached, the kv service…): after `register_scheme("redis", open)`,
/// `from_url("redis://127.0.0.1:6379")` calls `open` with the whole URL. Registering a
/// scheme again replaces its opener; `memory` cannot be replaced.
pub fn register_scheme(scheme: &'static str, opener: Opener) {
    let mut schemes = lock(&SCHEMES);
    match schemes.iter_mut().find(|(known, _)| *known == scheme) {
        Some(entry) => entry.1 = opener,
        None => schemes.push((scheme, opener)),
    }
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
    let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
    #[cfg(feature = "redb")]
    if scheme == "file" {
        return super::FileStore::open_url(url);
    }
    let (opener, known) = {
        let schemes = lock(&SCHEMES);
        let opener = schemes
            .iter()
            .find(|(known, _)| *known == scheme)
            .map(|(_, opener)| *opener);
        let mut builtin = vec!["memory"];
        if cfg!(feature = "redb") {
            builtin.push("file://…");
        }
        let known = builtin
            .into_iter()
            .map(str::to_owned)
            .chain(schemes.iter().map(|(scheme, _)| format!("{scheme}://…")))
            .collect::<Vec<_>>()
            .join(", ");
        (opener, known)
    };
    match opener {
        Some(open) => open(url),
        None => Err(StoreError::UnknownStore {
            url: url.to_owned(),
            known,
        }),
    }
}

/// Opens the store named by `MICRO_STORE`, `memory` when it is unset.
///
/// # Errors
/// As [`from_url`].
pub fn from_env() -> Result<SharedStore, StoreError> {
    from_url(&std::env::var(STORE_ENV).unwrap_or_default())
}
