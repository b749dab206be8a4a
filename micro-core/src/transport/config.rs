//! [`ConnectionConfig`]: how long an accepted connection may stay silent or idle, and the
//! budget it counts against.

use std::time::Duration;

use super::ConnectionLimit;

/// How long a new connection may stay silent before it is closed: no TLS ClientHello, no
/// HTTP/2 preface, no HTTP/1 request line. Default is 5 seconds.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may go without a request in flight before it is closed
/// gracefully (HTTP/2 GOAWAY; HTTP/1.1 closed between requests): gRPC's
/// `MAX_CONNECTION_IDLE`, and the HTTP/1.1 keep-alive limit. Default is 2 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often an HTTP/2 connection that received nothing is probed with a PING. Default is
/// 1 minute.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// How long the answer to a keep-alive PING may take before the connection is closed as
/// dead. Default is 20 seconds.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a connection closed gracefully (idle, shed, shutdown) with nothing in flight
/// may take to finish its GOAWAY exchange before it is closed outright: a peer that does
/// not answer (or reads nothing) cannot keep its socket.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The rules for connections a server accepts: the first-byte deadline, the idle limit,
/// HTTP/2 keep-alive, and the [`ConnectionLimit`] they count against. Used by every
/// [`Service`](crate::Service) (see
/// [`ServiceBuilder::connections`](crate::ServiceBuilder::connections)) and by the
/// `micro` HTTP gateway; see [the module docs](super).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use micro_core::transport::ConnectionConfig;
///
/// let config = ConnectionConfig::new()
///     .first_byte_timeout(Duration::from_secs(3))
///     .idle_timeout(Duration::from_secs(300))
///     .max_connections(10_000);
/// # drop(config);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ConnectionConfig {
    first_byte_timeout: Duration,
    idle_timeout: Option<Duration>,
    keepalive_interval: Option<Duration>,
    keepalive_timeout: Duration,
    limit: Option<ConnectionLimit>,
}

// === impl ConnectionConfig ===

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            limit: None,
        }
    }
}

impl ConnectionConfig {
    /// The defaults: the `DEFAULT_*` constants of [this module](super), and the process'
    /// [`ConnectionLimit::process`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how long a new connection may stay silent (not one byte received) before it
    /// is closed. Default is [`DEFAULT_FIRST_BYTE_TIMEOUT`].
    pub fn first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.first_byte_timeout = timeout;
        self
    }

    /// Sets how long a connection may go without a request in flight before it is closed
    /// gracefully; `None` keeps idle connections open (they are still shed first when the
    /// [limit](Self::limit) is reached). A call, or a stream, in flight keeps its
    /// connection open however long it runs. Default is [`DEFAULT_IDLE_TIMEOUT`].
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = timeout.into();
        self
    }

    /// Sets how often an HTTP/2 connection that received nothing is probed with a PING;
    /// `None` sends none. Default is [`DEFAULT_KEEPALIVE_INTERVAL`].
    pub fn keepalive_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.keepalive_interval = interval.into();
        self
    }

    /// Sets how long the answer to a keep-alive PING may take before the connection is
    /// closed as dead. Default is [`DEFAULT_KEEPALIVE_TIMEOUT`].
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.keepalive_timeout = timeout;
        self
    }

    /// Counts the connections against `limit`, which other servers may share. Default is
    /// [`ConnectionLimit::process`], shared by every server of the process that was given
    /// no other, since file descriptors are the process'.
    pub fn limit(mut self, limit: ConnectionLimit) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Counts the connections against a limit of their own, `max` open at once (see
    /// [`ConnectionLimit::new`]). Keep it under the open-file limit less what the process
    /// needs for itself, or accepts fail for want of descriptors (they are then retried with
    /// back-off). Default is [`ConnectionLimit::process`].
    pub fn max_connections(self, max: usize) -> Self {
        self.limit(ConnectionLimit::new(max))
    }

    pub(crate) fn first_byte(&self) -> Duration {
        self.first_byte_timeout
    }

    pub(crate) fn idle(&self) -> Option<Duration> {
        self.idle_timeout.filter(|idle| !idle.is_zero())
    }

    pub(crate) fn keepalive(&self) -> (Option<Duration>, Duration) {
        (self.keepalive_interval, self.keepalive_timeout)
    }

    /// The limit in force: the one given, else the process'.
    pub(crate) fn connection_limit(&self) -> ConnectionLimit {
        self.limit.clone().unwrap_or_else(ConnectionLimit::process)
    }

    /// Applies the HTTP/2 keep-alive settings to `http`.
    pub(crate) fn apply_keepalive(
        &self,
        http: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    ) {
        let (interval, timeout) = self.keepalive();
        http.http2()
            .keep_alive_interval(interval)
            .keep_alive_timeout(timeout);
    }
}
