//! The server's TLS accept loop: TCP accepts in one task, each handshake in its own.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::ServerTls;

/// Handshaken connections waiting for the server to take them.
const QUEUE: usize = 128;
/// The pause after an accept error that is not about one connection (out of file
/// descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A TLS connection as tonic serves it. Its connect info is the TCP one, so
/// `Request::remote_addr` works in handlers as over plaintext.
#[derive(Debug)]
pub(crate) struct TlsIo {
    stream: TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

/// Accepts on `listener` until the returned stream is dropped or the task aborted; each
/// handshake runs in its own task within the handshake timeout, so a slow or silent client
/// holds up nobody else.
pub(crate) fn spawn_acceptor(
    listener: TcpListener,
    tls: ServerTls,
) -> (ReceiverStream<io::Result<TlsIo>>, JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(QUEUE);
    tls.start_polling();
    let task = tokio::spawn(accept(listener, tls, sender));
    (ReceiverStream::new(receiver), task)
}

async fn accept(listener: TcpListener, tls: ServerTls, sender: mpsc::Sender<io::Result<TlsIo>>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = sender.closed() => return,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let info = tcp.connect_info();
        let acceptor = tls.acceptor();
        let timeout = tls.handshake_timeout();
        let sender = sender.clone();
        tokio::spawn(async move {
            let remote = info.remote_addr;
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = sender.send(Ok(TlsIo { stream, info })).await;
                }
                Ok(Err(err)) => {
                    tracing::info!(?remote, error = %err, "TLS handshake failed");
                }
                Err(_) => {
                    tracing::info!(
                        ?remote,
                        ?timeout,
                        "TLS handshake timed out; connection closed"
                    );
                }
            }
        });
    }
}

/// Errors about one connection (reset before accept): the next accept is fine.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

// === impl TlsIo ===

impl Connected for TlsIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
