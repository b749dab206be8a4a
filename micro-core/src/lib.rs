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
//! - [`store`] holds the key-value [`Store`] trait and the embedded [`store::MemoryStore`]
//!   (and, with feature `redb`, the persistent `store::FileStore`); [`config`] loads typed,
//!   live-reloaded configuration; [`sync`] the locks and leader election of [`sync::Sync`]
//!   and [`sync::MemorySync`].
//! - [`auth`] holds accounts, access rules ([`auth::RuleSet`]) and signed access tokens
//!   ([`auth::Issuer`], [`auth::Verifier`], [`auth::KeySet`]).
//! - [`transport`] holds the rules for accepted connections (first-byte and idle
//!   timeouts, keep-alive, a connection limit shedding the idlest) that every server
//!   follows.
//! - [`tls`] holds TLS and mutual TLS for services and clients ([`tls::ServerTls`],
//!   [`tls::ClientTls`]), with certificates reloaded from disk.
//!
//! Most users depend on the `micro` facade crate, which re-exports this crate.
//!
//! # Feature flags
//!
//! | feature | enables |
//! |---|---|
//! | `redb` | `store::FileStore`, the embedded persistent store on redb, and `MICRO_STORE=file:///path` |
//! | `test-util` | the conformance suites `registry::conformance` and `store::conformance`, for backends in other crates |

pub mod auth;
pub mod balance;
pub mod broker;
pub mod client;
pub mod codegen;
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
pub mod store;
pub mod sync;
pub mod tls;
pub mod transport;

pub use client::{Channel, Client, ClientBuilder, Connector, NodeInfo};
pub use registry::{Registry, RegistryError};
pub use selector::Selector;
pub use service::{Service, ServiceBuilder, ServiceError};
pub use store::{Store, StoreError};
