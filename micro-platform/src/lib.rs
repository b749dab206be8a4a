//! The micro platform services: each a gRPC service defined in `proto/micro/<area>/v1`,
//! served over a micro-core trait (so it runs on any backend) and called through a typed
//! client implementing the same trait (so a service moves from an embedded default to the
//! shared platform service by configuration alone).
//!
//! | area | server | client | core trait | name in the registry |
//! |---|---|---|---|---|
//! | [`kv`] | [`kv::KvService`] | [`kv::KvClient`] | [`Store`](micro_core::Store) | `micro.kv` |
//! | [`registry`] | [`registry::RegistryService`] | [`registry::RegistryClient`] | [`Registry`](micro_core::Registry) | `micro.registry` |
//!
//! `micro server` (the `micro` binary) runs them all in one process. Call [`install`] once
//! at start-up to select them by URL:
//!
//! ```no_run
//! micro_platform::install();
//! // MICRO_STORE=service            → KvClient through the registry (`micro.kv`)
//! // MICRO_STORE=service://host:port → KvClient at that address
//! // MICRO_REGISTRY=service://host:port → RegistryClient at that address
//! let store = micro_core::store::from_env()?;
//! # Ok::<(), micro_core::StoreError>(())
//! ```
//!
//! The generated messages and stubs are in [`proto`], for raw gRPC use.

mod fixed;
pub mod kv;
pub mod proto;
pub mod registry;

/// Teaches micro-core's URL selection the platform services: `MICRO_STORE=service` or
/// `service://host:port` opens a [`kv::KvClient`], `MICRO_REGISTRY=service://host:port` a
/// [`registry::RegistryClient`]. Calling it again is harmless.
pub fn install() {
    micro_core::store::register_scheme(kv::SCHEME, kv::client::open);
    micro_core::registry::register_scheme(registry::SCHEME, registry::client::open);
}
