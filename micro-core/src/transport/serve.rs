//! The accept loop and each connection's life: first bytes, TLS, HTTP, idle, shed, drain.

use std::{future::Future, io, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    net::TcpListener,
    sync::watch,
    task::JoinSet,
    time::{Instant, sleep, sleep_until},
};

use super::{
    ConnectionConfig, ConnectionInfo,
    accept::{self, AcceptErrors},
    config::CLOSE_GRACE,
    io::{Io, Listener, Raw},
    limit::Admitted,
    track::Track,
};
use crate::tls::ServerTls;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How long a shed connection (idle, at the limit) may take to pass its GOAWAY on.
const SHED_GRACE: Duration = Duration::from_millis(100);
/// How often a refused connection (budget full, every connection busy) is logged at most.
const REFUSED_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Serves HTTP on `listener` under `config`'s connection rules until `shutdown` completes;
/// then stops accepting, closes every connection gracefully (HTTP/2 GOAWAY; HTTP/1.1
/// after the response in progress) and returns once all are closed. Drop the future to cut
/// the drain short: the connections still open are closed with it.
///
/// `http` carries the protocol settings (HTTP/1.1 and h2c, or HTTP/2 only; header limits
/// and timeouts); its HTTP/2 keep-alive is set from `config`. `make_service` is called once
/// per accepted connection.
///
/// # Errors
/// Never, today: accept errors are retried with back-off and logged once per burst.
pub async fn serve<M, S, B, F>(
    listener: TcpListener,
    http: auto::Builder<TokioExecutor>,
    config: ConnectionConfig,
    make_service: M,
    shutdown: F,
) -> io::Result<()>
where
    M: FnMut(&ConnectionInfo) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    F: Future<Output = ()>,
{
    run(
        Listener::Tcp(listener),
        http,
        config,
        None,
        make_service,
        shutdown,
    )
    .await
}

/// [`serve`] on any listener, with TLS when `tls` is set (TCP only).
pub(crate) async fn run<M, S, B, F>(
    listener: Listener,
    mut http: auto::Builder<TokioExecutor>,
    config: ConnectionConfig,
    tls: Option<ServerTls>,
    mut make_service: M,
    shutdown: F,
) -> io::Result<()>
where
    M: FnMut(&ConnectionInfo) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    F: Future<Output = ()>,
{
    config.apply_keepalive(&mut http);
    if let Some(tls) = &tls {
        tls.start_polling();
    }
    let http = Arc::new(http);
    let config = Arc::new(config);
    let limit = config.connection_limit();
    let name = listener.describe();
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut errors = AcceptErrors::default();
    let mut refused = Refused::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (raw, info) = match accepted {
            Ok(accepted) => {
                if let Some(report) = errors.accepted(Instant::now()) {
                    accept::log(report, &name, None);
                }
                accepted
            }
            Err(err) if accept::is_connection_error(&err) => continue,
            Err(err) => {
                if accept::is_out_of_files(&err) {
                    // Frees a descriptor for the process' own files, and for the next
                    // accept.
                    limit.shed_idlest();
                }
                let (pause, report) = errors.failed(Instant::now());
                if let Some(report) = report {
                    accept::log(report, &name, Some(&err));
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = sleep(pause) => continue,
                }
            }
        };
        // Over the budget, the idlest connections make room before this one is served
        // (and before another is accepted), so connections never hold more descriptors
        // than the budget and one per listener.
        let room = tokio::select! {
            biased;
            () = &mut shutdown => break,
            room = limit.room() => room,
        };
        if !room {
            // Full, and every connection busy: this one is closed at once.
            refused.count(&name, limit.max());
            drop(raw);
            continue;
        }
        let admitted = limit.admit();
        let service = make_service(&info);
        connections.spawn(connection(
            raw,
            service,
            http.clone(),
            config.clone(),
            tls.clone(),
            admitted,
            closing_rx.clone(),
        ));
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One connection, from accept to close.
async fn connection<S, B>(
    raw: Raw,
    service: S,
    http: Arc<auto::Builder<TokioExecutor>>,
    config: Arc<ConnectionConfig>,
    tls: Option<ServerTls>,
    admitted: Admitted,
    mut closing: watch::Receiver<bool>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let slot = admitted.slot().clone();
    // A connection that never spoke has no session to close gracefully: it just goes.
    let first_byte = config.first_byte();
    tokio::select! {
        biased;
        _ = closing.wait_for(|closing| *closing) => return,
        () = slot.shed() => return,
        spoke = raw.first_byte() => if spoke.is_err() { return },
        () = sleep(first_byte) => {
            tracing::debug!(timeout = ?first_byte, "closed a connection that sent nothing");
            return;
        }
    }
    let io = match (raw, tls) {
        #[cfg(not(feature = "tls"))]
        (Raw::Tcp(_), Some(tls)) => tls.unreachable(),
        #[cfg(feature = "tls")]
        (Raw::Tcp(tcp), Some(tls)) => {
            let timeout = tls.handshake_timeout();
            let remote = tcp.peer_addr().ok();
            let handshake = tokio::time::timeout(timeout, tls.acceptor().accept(tcp));
            tokio::select! {
                biased;
                _ = closing.wait_for(|closing| *closing) => return,
                () = slot.shed() => return,
                handshake = handshake => match handshake {
                    Ok(Ok(stream)) => Io::Tls(Box::new(stream)),
                    Ok(Err(err)) => {
                        tracing::info!(?remote, error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(?remote, ?timeout, "TLS handshake timed out; connection closed");
                        return;
                    }
                },
            }
        }
        (Raw::Tcp(tcp), None) => Io::Tcp(tcp),
        (Raw::Unix(unix), _) => Io::Unix(unix),
    };

    let conn = http.serve_connection(TokioIo::new(io), Track::new(service, slot.clone()));
    tokio::pin!(conn);
    let idle = config.idle();
    let far = || Instant::now() + Duration::from_secs(86_400 * 365);
    let mut idle_check = idle.map_or_else(far, |idle| slot.idle_since() + idle);
    // Set once the connection is closing gracefully: past it, a connection with nothing in
    // flight is closed outright (a peer that never answers the GOAWAY's PING).
    let mut close_by: Option<Instant> = None;
    loop {
        let graceful = close_by.is_none();
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            () = sleep_until(idle_check), if graceful && idle.is_some() => {
                let idle = idle.unwrap_or_default();
                let now = Instant::now();
                if slot.in_flight() == 0 && slot.idle_since() + idle <= now {
                    tracing::debug!(?idle, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    close_by = Some(now + CLOSE_GRACE);
                } else if slot.in_flight() == 0 {
                    idle_check = slot.idle_since() + idle;
                } else {
                    idle_check = now + idle;
                }
            }
            () = slot.shed(), if graceful => {
                tracing::debug!("shedding an idle connection: connection limit reached");
                if !slot.served() {
                    // No request ever: nothing to tell the peer.
                    return;
                }
                conn.as_mut().graceful_shutdown();
                close_by = Some(Instant::now() + SHED_GRACE);
            }
            _ = closing.wait_for(|closing| *closing), if graceful => {
                conn.as_mut().graceful_shutdown();
                close_by = Some(Instant::now() + CLOSE_GRACE);
            }
            () = sleep_until(close_by.unwrap_or_else(far)), if !graceful => {
                if slot.in_flight() == 0 {
                    return;
                }
                close_by = Some(Instant::now() + CLOSE_GRACE);
            }
        }
    }
}

/// Connections refused because every connection was busy: counted, logged now and then.
#[derive(Debug, Default)]
struct Refused {
    since_report: u64,
    reported: Option<Instant>,
}

impl Refused {
    fn count(&mut self, listener: &str, max: usize) {
        self.since_report += 1;
        let now = Instant::now();
        if self
            .reported
            .is_none_or(|at| now.duration_since(at) >= REFUSED_REPORT_EVERY)
        {
            tracing::warn!(
                %listener,
                max,
                refused = self.since_report,
                "connection limit reached and every connection busy: new connections closed"
            );
            self.reported = Some(now);
            self.since_report = 0;
        }
    }
}
