//! The kv service: micro's [`Store`](micro_core::Store) over gRPC (`micro.kv.v1.Kv`, from
//! `proto/micro/kv/v1/kv.proto`).
//!
//! - [`KvService`] serves any [`SharedStore`](micro_core::store::SharedStore); it checks
//!   every request against the store limits before the backend sees it.
//! - [`KvClient`] is a [`Store`](micro_core::Store) again, over a micro
//!   [`Channel`](micro_core::Channel) to the service named [`SERVICE_NAME`] (found through
//!   the registry) or to a fixed address.
//!
//! - [`PartitionedStore`] is a [`Store`](micro_core::Store) over several kv service nodes:
//!   each key lives on the node its consistent hash picks; see its docs for placement,
//!   [rebalancing](PartitionedStore::rebalance) and what its batches promise.
//!
//! So a service moves from its embedded store to the shared kv service by configuration
//! alone: `MICRO_STORE=service` (through the registry) or `MICRO_STORE=service://host:port`,
//! once [`crate::install`] ran.
//!
//! # Errors on the wire
//!
//! | [`StoreError`](micro_core::StoreError) | status | back on the client |
//! |---|---|---|
//! | `InvalidArgument(m)` | INVALID_ARGUMENT, message `invalid argument: m` | `InvalidArgument(m)` |
//! | `ConditionFailed { key, expected, found }` | ABORTED, with the fields in the details | the same, field for field |
//! | `Unavailable { store, message, .. }` | UNAVAILABLE | `Unavailable` naming the client and the server's message |
//! | any other status (DEADLINE_EXCEEDED, a transport error, …) | | `Unavailable` with the code and message |
//!
//! A failed condition travels losslessly in the status details (`grpc-status-details-bin`):
//! a `google.rpc.Status` whose `details` hold one `micro.kv.v1.ConditionFailure` (type URL
//! [`CONDITION_FAILURE_TYPE_URL`]), so clients in other languages read it with their usual
//! rich-error helpers.
//!
//! # Message size
//!
//! Requests and responses may be up to [`MAX_MESSAGE_SIZE`] encoded. [`KvClient`] refuses a
//! larger request as an invalid argument before sending it (split the batch); a `GetMany`
//! whose answer would be larger fails with the status tonic gives an oversized message
//! (ask for fewer keys per call).

pub(crate) mod client;
mod partition;
mod ring;
mod server;
mod wire;

pub use client::KvClient;
pub use partition::{PARTITION_METADATA, PartitionedStore, PartitionedStoreBuilder, Rebalance};
pub use server::KvService;
pub use wire::{error_from_status, status_from_error};

/// The name the kv service registers as, and [`KvClient`] resolves.
pub const SERVICE_NAME: &str = "micro.kv";

/// The `MICRO_STORE` scheme of the kv service: `service` (found through the registry) or
/// `service://host:port`.
pub const SCHEME: &str = "service";

/// Largest encoded request or response: 64 MiB.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The type URL of the `ConditionFailure` detail of an ABORTED status.
pub const CONDITION_FAILURE_TYPE_URL: &str = "type.googleapis.com/micro.kv.v1.ConditionFailure";
