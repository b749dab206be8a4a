//! Service discovery: the [`Registry`] trait, its record types and the embedded registries.
//!
//! A registry maps a service *name* to the nodes that serve it. Services register
//! themselves with a time-to-live and re-register before it runs out; a node that stops
//! re-registering (a crashed process) disappears when its TTL expires.
//!
//! | registry | selected by | scope |
//! |---|---|---|
//! | [`LocalRegistry`] | `local` (the default), `local:///some/dir` | processes of one user on one machine, no network |
//! | [`MemoryRegistry`] | `memory` | one registry value and its clones, in one process: each `memory` opened is a new, empty registry |
//! | registries of other crates | their scheme, once added with [`register_scheme`] (for example `etcd://` by `micro_plugins::install()`) | as the registry says |
//!
//! [`CacheRegistry`] wraps any registry, serves lookups from memory, keeps them fresh with a
//! watch and keeps serving the last known nodes while the backend fails.

mod cache;
mod common;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
mod error;
mod local;
mod memory;
mod record;
mod url;

pub use cache::CacheRegistry;
pub use common::{group, single, validate_deregister, validate_register};
pub use error::RegistryError;
pub use local::LocalRegistry;
pub use memory::MemoryRegistry;
pub use record::{Endpoint, Event, EventKind, Node, Service};
pub use url::{Opener, REGISTRY_ENV, from_env, from_url, register_scheme};

use std::{fmt, pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_core::Stream;

/// The TTL a registration gets when none is given. Default is 30 seconds.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// A stream of registry changes, as returned by [`Registry::watch`].
///
/// The stream ends only when the registry is dropped or fails; an `Err` item reports a
/// backend failure, after which the stream ends.
pub type Watcher = Pin<Box<dyn Stream<Item = Result<Event, RegistryError>> + Send + 'static>>;

/// A shared, type-erased registry.
pub type SharedRegistry = Arc<dyn Registry>;

/// Options for [`Registry::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterOptions {
    /// How long the registration stays valid unless renewed. Default is [`DEFAULT_TTL`].
    pub ttl: Duration,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        Self { ttl: DEFAULT_TTL }
    }
}

/// Options for [`Registry::watch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Only report changes to this service. Default is every service.
    pub service: Option<String>,
}

/// Service discovery: where the nodes of a named service are.
///
/// Records are keyed by service name and node id; the version is part of a node's record
/// (re-registering a node under another version updates it). Registering a [`Service`]
/// upserts each of its nodes (with the service's version, metadata and endpoints) and
/// (re)starts their TTL; deregistering removes the listed nodes. Service names and node ids
/// are limited to `[A-Za-z0-9._-]` (they name files in the local registry).
#[async_trait]
pub trait Registry: fmt::Debug + Send + Sync + 'static {
    /// A short description of the registry for messages, for example `local` or
    /// `etcd://127.0.0.1:2379`.
    fn name(&self) -> &str;

    /// Adds or refreshes the nodes of `service`, valid for `options.ttl`.
    ///
    /// # Errors
    /// [`RegistryError`] when the record is invalid (empty name, no nodes) or the backend
    /// fails.
    async fn register(
        &self,
        service: &Service,
        options: RegisterOptions,
    ) -> Result<(), RegistryError>;

    /// Removes the nodes of `service`. Removing a node that is not registered is not an
    /// error.
    ///
    /// # Errors
    /// [`RegistryError`] when the backend fails.
    async fn deregister(&self, service: &Service) -> Result<(), RegistryError>;

    /// Returns the live records of the service called `name`, one per version, each with
    /// its nodes. An unknown service gives an empty list.
    ///
    /// # Errors
    /// [`RegistryError`] when the backend fails.
    async fn get_service(&self, name: &str) -> Result<Vec<Service>, RegistryError>;

    /// Returns every live service, one record per name and version, each with its nodes.
    ///
    /// # Errors
    /// [`RegistryError`] when the backend fails.
    async fn list_services(&self) -> Result<Vec<Service>, RegistryError>;

    /// Streams changes from now on: one [`Event`] per node created, updated or deleted
    /// (expiry included), in the order they happened.
    ///
    /// # Errors
    /// [`RegistryError`] when the watch cannot be started.
    async fn watch(&self, options: WatchOptions) -> Result<Watcher, RegistryError>;
}
