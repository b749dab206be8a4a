//! The byte streams client connections run on: [`Io`] and [`BoxIo`].
//!
//! A leaf, so that both the client's [`Connector`](crate::client::Connector) and TLS
//! ([`crate::tls`]) can name the stream without naming each other.

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream to a node: a TCP or Unix socket, an in-memory duplex pipe, a
/// simulated network link, ...
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`] stream, as returned by
/// [`Connector::connect`](crate::client::Connector::connect).
pub type BoxIo = Box<dyn Io>;
