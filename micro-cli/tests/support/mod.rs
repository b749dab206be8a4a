//! Helpers for the CLI's and the gateway's integration tests: the root package's
//! (`tests/support/mod.rs`: child processes with readiness and cleanup, the greeter stubs),
//! plus `micro server` / `micro api` as child processes and a small HTTP client.

#![allow(dead_code, unreachable_pub, missing_docs)]

#[path = "../../../tests/support/mod.rs"]
mod common;

pub use common::*;

pub mod http;
pub mod server;
