//! The micro runtime: gRPC services that find each other by name.
//!
//! - [`Service`] runs tonic services with health checking, reflection, registration,
//!   heartbeats and graceful shutdown.
//! - [`Client`] hands out [`Channel`]s that resolve a service *name* through the
//!   [`Registry`] and balance calls over its nodes; any tonic-generated client runs on one.
//! - [`context`] carries a call's deadline, trace and metadata from a handler to the calls it
//!   makes; [`middleware`] holds the tower layers for tracing, metrics, logging and
//!   interceptors, and documents the default stacks.
//! - [`registry`] holds the [`Registry`] trait and the embedded registries (`local`,
//!   `memory`), [`selector`] the node selection strategies.
//! - `store` (feature `store`) holds the key-value `Store` trait and the embedded
//!   `store::MemoryStore` (and, with feature `redb`, the persistent `store::FileStore`);
//!   `config` (feature `config`) loads typed, live-reloaded configuration; `sync` (feature
//!   `sync`) the locks and leader election of `sync::Sync` and `sync::MemorySync`.
//! - `auth` (feature `auth`) holds accounts, access rules (`auth::RuleSet`) and signed
//!   access tokens (`auth::Issuer`, `auth::Verifier`, `auth::KeySet`).
//! - [`transport`] holds the rules for accepted connections (first-byte and idle
//!   timeouts, keep-alive, a connection limit shedding the idlest) that every server
//!   follows.
//! - [`tls`] holds TLS and mutual TLS for services and clients ([`tls::ServerTls`],
//!   [`tls::ClientTls`]), with certificates reloaded from disk (feature `tls`).
//!
//! Most users depend on the `micro` facade crate, which re-exports this crate.
//!
//! # Feature flags
//!
//! The runtime (service, client, registry, selector, balance, broker, context, middleware,
//! transport, codegen) is always compiled. The modules that import nothing else from this
//! crate are features, so a program that only serves or calls services compiles none of
//! their dependencies:
//!
//! | feature | enables | pulls in |
//! |---|---|---|
//! | `auth` | `auth` | ring, ed25519-dalek, base64 |
//! | `config` | `config` | toml, yaml_serde |
//! | `store` | `store`, and `Store`, `StoreError` at the root | nothing more |
//! | `sync` | `sync` | nothing more |
//! | `tls` | the [`tls`] builders and `MICRO_TLS_*` (without it, `MICRO_TLS_*` are refused with an error naming the feature, and `transport=tls` nodes cannot be dialed) | rustls, tokio-rustls, ring |
//! | `redb` | `store` and `store::FileStore`, the embedded persistent store on redb, and `MICRO_STORE=file:///path` | redb |
//! | `test-util` | the conformance suites `registry::conformance`, `store::conformance` and `sync::conformance`, for backends in other crates | |

#[cfg(feature = "auth")]
pub mod auth;
pub mod balance;
pub mod broker;
pub mod client;
pub mod codegen;
#[cfg(feature = "config")]
pub mod config;
pub mod context;
pub mod duration;
pub mod engine;
pub mod io;
pub mod lock;
pub mod middleware;
pub mod node;
pub mod registry;
pub mod selector;
pub mod service;
pub mod size;
#[cfg(feature = "store")]
pub mod store;
#[cfg(feature = "sync")]
pub mod sync;
pub mod tls;
pub mod transport;

pub use client::{Channel, Client, ClientBuilder, Connector, NodeInfo};
pub use registry::{Registry, RegistryError};
pub use selector::Selector;
pub use service::{Service, ServiceBuilder, ServiceError};
#[cfg(feature = "store")]
pub use store::{Store, StoreError};
