//! The registry service: micro's [`Registry`](micro_core::Registry) over gRPC
//! (`micro.registry.v1.Registry`, from `proto/micro/registry/v1/registry.proto`).
//!
//! - [`RegistryService`] serves any [`SharedRegistry`](micro_core::registry::SharedRegistry)
//!   and validates every record before the backend sees it.
//! - [`RegistryClient`] is a [`Registry`](micro_core::Registry) again, over a micro
//!   [`Channel`](micro_core::Channel) to a fixed address:
//!   `MICRO_REGISTRY=service://host:port` once [`crate::install`] ran. Watches stream the
//!   server's events.
//!
//! Errors: an invalid record is INVALID_ARGUMENT with the registry's message and comes
//! back as [`RegistryError::InvalidRecord`](micro_core::RegistryError::InvalidRecord) with
//! the same message; a backend failure is UNAVAILABLE; every failure of the call itself
//! comes back as [`RegistryError::Backend`](micro_core::RegistryError::Backend) carrying the
//! status as its source.

pub(crate) mod client;
mod server;
mod wire;

pub use client::{RegistryClient, WATCH_TIMEOUT};
pub use server::RegistryService;
pub use wire::status_from_error;

/// The name the registry service registers as.
pub const SERVICE_NAME: &str = "micro.registry";

/// The `MICRO_REGISTRY` scheme of the registry service: `service://host:port`.
pub const SCHEME: &str = "service";
