//! Accepted connections under rules: what keeps silent, idle and surplus connections from
//! holding a server's file descriptors.
//!
//! Every [`Service`](crate::Service) serves its gRPC port with this module's accept loop
//! (the one [`serve`] runs), and so does the `micro` HTTP gateway; both take a
//! [`ConnectionConfig`].
//!
//! | rule | default | setting |
//! |---|---|---|
//! | a new connection that sends nothing (no TLS ClientHello, no HTTP/2 preface, no HTTP/1 request) is closed | after [`DEFAULT_FIRST_BYTE_TIMEOUT`] (5 s) | [`ConnectionConfig::first_byte_timeout`] |
//! | a connection with no request in flight is closed gracefully: HTTP/2 GOAWAY (gRPC's `MAX_CONNECTION_IDLE`), HTTP/1.1 closed between requests (the keep-alive limit) | after [`DEFAULT_IDLE_TIMEOUT`] (2 min) | [`ConnectionConfig::idle_timeout`] |
//! | HTTP/2 keep-alive: a PING when nothing was received for a while; no answer closes the connection | every [`DEFAULT_KEEPALIVE_INTERVAL`] (1 min), answer within [`DEFAULT_KEEPALIVE_TIMEOUT`] (20 s) | [`ConnectionConfig::keepalive_interval`], [`ConnectionConfig::keepalive_timeout`] |
//! | open connections are capped; a connection accepted over the cap waits while the one idle the longest is shed (closed at once when it never had a request, else with a GOAWAY and 100 ms to pass it on); when all are busy, the new one is closed | one budget per process: the soft `RLIMIT_NOFILE` less a reserve of [`DEFAULT_FD_RESERVE`] (128) or an eighth, whichever is more | [`ConnectionConfig::max_connections`], [`ConnectionConfig::limit`] |
//! | accept errors (out of file descriptors) pause accepting, from 5 ms doubling to 1 s, and log one warning per burst (a reminder every 10 s, a count at the end); out of descriptors also sheds the idlest connection | always | — |
//!
//! The process' budget ([`ConnectionLimit::process`]) raises the soft open-file limit to
//! the hard one when first used, as Go's runtime does at start ([`raise_nofile_limit`]).
//! The reserve keeps descriptors free for the process' own registry and store files and its
//! outgoing connections while its listeners are flooded.
//!
//! A call or stream in flight keeps its connection open however long it runs; a connection
//! closing gracefully finishes the requests it has (a GOAWAY tells the client which it
//! will not serve, so they can go elsewhere). A peer that does not complete the GOAWAY
//! exchange within a second (100 ms when shed) of its last request ending is closed
//! outright.
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo() -> Result<(), micro_core::ServiceError> {
//! use std::time::Duration;
//! use micro_core::{Service, transport::ConnectionConfig};
//!
//! Service::builder("greeter")
//!     .connections(
//!         ConnectionConfig::new()
//!             .idle_timeout(Duration::from_secs(600))
//!             .max_connections(20_000),
//!     )
//!     .run()
//!     .await
//! # }
//! ```

mod accept;
mod config;
mod io;
mod limit;
mod serve;
mod track;

pub use config::{
    ConnectionConfig, DEFAULT_FIRST_BYTE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_KEEPALIVE_TIMEOUT,
};
pub use io::ConnectionInfo;
pub use limit::{ConnectionLimit, DEFAULT_FD_RESERVE, raise_nofile_limit};
pub use serve::serve;

pub(crate) use io::Listener;
pub(crate) use serve::run;
