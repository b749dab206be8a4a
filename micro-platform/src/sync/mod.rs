//! The sync service: micro's coordination [`Sync`](micro_core::sync::Sync) trait (leased
//! locks with fencing tokens, leader election) over gRPC (`micro.sync.v1.Sync`, from
//! `proto/micro/sync/v1/sync.proto`).
//!
//! - [`SyncService`] serves any [`SharedSync`](micro_core::sync::SharedSync) backend.
//! - [`SyncClient`] is a [`Sync`](micro_core::sync::Sync) again, over a micro
//!   [`Channel`](micro_core::Channel) to the service named [`SERVICE_NAME`] (found through
//!   the registry) or at a fixed address: `MICRO_SYNC=service` or
//!   `MICRO_SYNC=service://host:port`, once [`crate::install`] ran.
//!
//! # A holding lives as long as its call
//!
//! `Lock` and `Campaign` are bidirectional streams, one per lock or leadership held. The
//! service acquires from its backend (which renews the lease on the server side), answers
//! with the token, and keeps the stream open while it holds. Releasing (or dropping) the
//! [`Lock`](micro_core::sync::Lock) asks the service to release and waits for its answer;
//! when the stream breaks instead (the client's process died, its connection dropped) the
//! service releases at once, so a lock dies with its holder. On the client, the lock
//! counts as lost ([`Lock::lost`](micro_core::sync::Lock::lost)) as soon as its stream ends
//! or fails. A holding's call runs for at most [`HOLD_TIMEOUT`].
//!
//! # Errors on the wire
//!
//! | [`SyncError`](micro_core::sync::SyncError) | status | back on the client |
//! |---|---|---|
//! | `InvalidArgument(m)` | INVALID_ARGUMENT, `invalid argument: m` | `InvalidArgument(m)` |
//! | `Timeout { .. }` | DEADLINE_EXCEEDED | `Timeout` with the wait asked for |
//! | `Unavailable { .. }` | UNAVAILABLE | `Unavailable` naming the client and the message |
//! | any other status | | `Unavailable` with the code and message |

pub(crate) mod client;
mod server;

pub use client::SyncClient;
pub use server::SyncService;

use std::time::Duration;

/// The name the sync service registers as, and [`SyncClient::from_client`] resolves.
pub const SERVICE_NAME: &str = "micro.sync";

/// The `MICRO_SYNC` scheme of the sync service: `service` (found through the registry) or
/// `service://host:port`.
pub const SCHEME: &str = "service";

/// The longest a lock or leadership is held through one call (the call's deadline): a
/// year. Observing an election reconnects after the same time.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

fn duration_to_pb(duration: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(duration).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

fn duration_from_pb(field: &str, duration: prost_types::Duration) -> Result<Duration, String> {
    Duration::try_from(duration).map_err(|error| format!("{field}: {error}"))
}
