//! The micro platform services: each a gRPC service defined in `proto/micro/<area>/v1`,
//! served over a micro-core trait (so it runs on any backend) and called through a typed
//! client implementing the same trait (so a service moves from an embedded default to the
//! shared platform service by configuration alone).
//!
//! | area | server | client | core trait | name in the registry |
//! |---|---|---|---|---|
//! | [`auth`] | [`auth::AuthService`] | [`auth::AuthClient`], [`auth::AuthSync`] | [`AuthLayer`](micro_core::auth::AuthLayer) | `micro.auth` |
//! | [`config`] | [`config::ConfigService`] | [`config::ConfigClient`] | [`Source`](micro_core::config::Source) | `micro.config` |
//! | [`event`] | [`event::EventService`] | [`event::EventClient`] | [`Broker`](micro_core::broker::Broker) | `micro.event` |
//! | [`kv`] | [`kv::KvService`] | [`kv::KvClient`] | [`Store`](micro_core::Store) | `micro.kv` |
//! | [`registry`] | [`registry::RegistryService`] | [`registry::RegistryClient`] | [`Registry`](micro_core::Registry) | `micro.registry` |
//! | [`sync`] | [`sync::SyncService`] | [`sync::SyncClient`] | [`Sync`](micro_core::sync::Sync) | `micro.sync` |
//!
//! `micro server` (the `micro` binary) runs them all in one process. Call [`install`] once
//! at start-up to select them by URL:
//!
//! ```no_run
//! micro_platform::install();
//! // MICRO_STORE=service            → KvClient through the registry (`micro.kv`)
//! // MICRO_STORE=service://host:port → KvClient at that address
//! // MICRO_REGISTRY=service://host:port → RegistryClient at that address
//! // MICRO_SYNC=service[://host:port]    → SyncClient (micro_core::sync::from_env().await)
//! // MICRO_BROKER=service[://host:port]  → EventClient (micro_core::broker::from_env())
//! let store = micro_core::store::from_env()?;
//! # Ok::<(), micro_core::StoreError>(())
//! ```
//!
//! The generated messages and stubs are in [`proto`], for raw gRPC use.

pub mod auth;
mod channel;
pub mod config;
pub mod event;
pub mod kv;
pub mod proto;
pub mod registry;
mod stream;
pub mod sync;

/// Teaches micro-core's URL selection the platform services: `MICRO_STORE=service` or
/// `service://host:port` opens a [`kv::KvClient`], `MICRO_REGISTRY=service://host:port` a
/// [`registry::RegistryClient`], `MICRO_SYNC=service` or `service://host:port` a
/// [`sync::SyncClient`], `MICRO_BROKER=service` or `service://host:port` an
/// [`event::EventClient`]. Calling it again is harmless.
pub fn install() {
    micro_core::broker::register_scheme(event::SCHEME, event::client::open);
    micro_core::store::register_scheme(kv::SCHEME, kv::client::open);
    micro_core::registry::register_scheme(registry::SCHEME, registry::client::open);
    micro_core::sync::register_scheme(sync::SCHEME, sync::client::open);
}
