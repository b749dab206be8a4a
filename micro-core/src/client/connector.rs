//! How the client opens a byte stream to a node: TCP by default, anything by injection.

use std::{fmt, future::Future, io, pin::Pin, time::Duration};

pub use crate::io::{BoxIo, Io};

/// The future returned by [`Connector::connect`].
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send + 'static>>;

/// Opens connections to node addresses.
///
/// The client speaks HTTP/2 over whatever stream the connector returns, so nothing in the
/// client assumes a real socket. [`TcpConnector`] is the default; [`connector_fn`] turns a
/// closure into a connector (for in-memory streams in tests, or a simulated network).
pub trait Connector: fmt::Debug + Send + Sync + 'static {
    /// Opens a stream to `address`, as written in the registry's node record.
    fn connect(&self, address: &str) -> ConnectFuture;
}

/// The default time allowed to establish a connection. Default is 5 seconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects over TCP (`host:port`) or Unix domain sockets (`unix:/path/to/socket`).
///
/// TCP connections have `TCP_NODELAY` set: gRPC messages are small and latency-bound.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    connect_timeout: Duration,
}

impl Default for TcpConnector {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl TcpConnector {
    /// A connector with the default connect timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how long a connection attempt may take. Default is [`DEFAULT_CONNECT_TIMEOUT`].
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

impl Connector for TcpConnector {
    fn connect(&self, address: &str) -> ConnectFuture {
        let address = address.to_owned();
        let timeout = self.connect_timeout;
        Box::pin(async move {
            let connect = async {
                if let Some(path) = address.strip_prefix("unix:") {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    return Ok(Box::new(stream) as BoxIo);
                }
                let stream = tokio::net::TcpStream::connect(address.as_str()).await?;
                stream.set_nodelay(true)?;
                Ok(Box::new(stream) as BoxIo)
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect timed out after {timeout:?}"),
                )),
            }
        })
    }
}

/// A [`Connector`] made from a closure; see [`connector_fn`].
pub struct FnConnector<F> {
    f: F,
}

impl<F> fmt::Debug for FnConnector<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnConnector").finish_non_exhaustive()
    }
}

/// Turns `f(address)` into a [`Connector`].
///
/// # Examples
///
/// An in-memory connection, as tests use:
///
/// ```
/// use micro_core::client::{connector_fn, BoxIo};
///
/// let connector = connector_fn(|_address: String| async move {
///     let (client, _server) = tokio::io::duplex(64 * 1024);
///     Ok(Box::new(client) as BoxIo)
/// });
/// # let _ = connector;
/// ```
pub fn connector_fn<F, Fut>(f: F) -> FnConnector<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<BoxIo>> + Send + 'static,
{
    FnConnector { f }
}

impl<F, Fut> Connector for FnConnector<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<BoxIo>> + Send + 'static,
{
    fn connect(&self, address: &str) -> ConnectFuture {
        Box::pin((self.f)(address.to_owned()))
    }
}
