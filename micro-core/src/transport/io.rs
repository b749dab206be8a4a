//! The listeners and streams a server serves on, and [`ConnectionInfo`].

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
};
#[cfg(feature = "tls")]
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo, UdsConnectInfo};

/// A bound listener.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// An accepted stream, before TLS.
#[derive(Debug)]
pub(crate) enum Raw {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A stream as HTTP is served on it.
#[derive(Debug)]
pub(crate) enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream<TcpStream>>),
}

/// Who is at the other end of an accepted connection; handed to the function that makes
/// the connection's service.
///
/// Its [`insert_into`](Self::insert_into) puts tonic's connect info in a request's
/// extensions ([`TcpConnectInfo`] or [`UdsConnectInfo`]), so
/// `tonic::Request::remote_addr` works in handlers.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    kind: InfoKind,
}

#[derive(Debug, Clone)]
enum InfoKind {
    Tcp(TcpConnectInfo),
    Unix(UdsConnectInfo),
}

// === impl Listener ===

impl Listener {
    pub(crate) async fn accept(&self) -> io::Result<(Raw, ConnectionInfo)> {
        match self {
            Self::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                // Small gRPC messages go out at once.
                let _ = stream.set_nodelay(true);
                let info = ConnectionInfo {
                    kind: InfoKind::Tcp(stream.connect_info()),
                };
                Ok((Raw::Tcp(stream), info))
            }
            Self::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                let info = ConnectionInfo {
                    kind: InfoKind::Unix(stream.connect_info()),
                };
                Ok((Raw::Unix(stream), info))
            }
        }
    }

    /// The local address, for logs.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|_| "tcp".to_owned(), |addr| addr.to_string()),
            Self::Unix(listener) => listener
                .local_addr()
                .ok()
                .and_then(|addr| addr.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix".to_owned()),
        }
    }
}

// === impl Raw ===

impl Raw {
    /// Completes when the peer sent a byte (left unread), closed, or the socket failed.
    /// On a Unix socket (a local peer, behind file permissions) readiness is taken as is.
    pub(crate) async fn first_byte(&self) -> io::Result<()> {
        match self {
            // Readiness alone may be spurious: wait for a byte, or the end of the stream.
            Self::Tcp(stream) => stream.peek(&mut [0u8; 1]).await.map(drop),
            Self::Unix(stream) => stream.readable().await,
        }
    }
}

// === impl ConnectionInfo ===

impl ConnectionInfo {
    /// The peer's address; `None` on a Unix socket.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        match &self.kind {
            InfoKind::Tcp(info) => info.remote_addr(),
            InfoKind::Unix(_) => None,
        }
    }

    /// The local address the connection was accepted on; `None` on a Unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.kind {
            InfoKind::Tcp(info) => info.local_addr(),
            InfoKind::Unix(_) => None,
        }
    }

    /// Puts tonic's connect info for this connection in `extensions`.
    pub fn insert_into(&self, extensions: &mut http::Extensions) {
        match &self.kind {
            InfoKind::Tcp(info) => {
                extensions.insert(info.clone());
            }
            InfoKind::Unix(info) => {
                extensions.insert(info.clone());
            }
        }
    }
}

// === impl Io ===

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(stream) => stream.is_write_vectored(),
            Self::Unix(stream) => stream.is_write_vectored(),
            #[cfg(feature = "tls")]
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Self::Unix(stream) => Pin::new(stream).poll_flush(cx),
            #[cfg(feature = "tls")]
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
