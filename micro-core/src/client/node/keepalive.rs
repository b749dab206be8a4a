//! HTTP/2 keepalive while calls are outstanding: a connection that stops answering (a hung
//! process whose kernel still accepts and acknowledges bytes) is found by PINGs that get no
//! answer, its unanswered calls fail (retried where the method allows) and its node is
//! ejected.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use super::ClientNode;
use crate::{client::Connector, node::OutlierConfig, tls::ClientTls};

/// How long a connection with calls outstanding may stay silent before the client sends an
/// HTTP/2 PING. Default is 2 seconds.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);

/// The least time a PING is given to be answered. Default is 4 seconds: a client or server
/// starved of CPU on a busy host can be late by a second or more, and a false alarm fails
/// the calls on the connection. Idempotent calls do not wait for it: hedging sends them
/// elsewhere after the method's p99.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(4);

/// A node's PING timeout is this many times its latency estimate, when that is longer than
/// the floor: a node whose answers take 1 s is not declared dead after 4 s of silence.
const TIMEOUT_LATENCIES: u32 = 10;

/// The longest PING timeout derived from a node's latency.
const MAX_TIMEOUT: Duration = Duration::from_secs(20);

/// The longest interval after servers asked for fewer PINGs (gRFC A8's doubling stops here).
const MAX_INTERVAL: Duration = Duration::from_secs(300);

/// HTTP/2 keepalive settings of a [`Client`](crate::Client)'s connections.
///
/// While a connection has calls outstanding (a health watch counts) and has read nothing
/// for [`interval`](Self::interval), the client sends a PING; when no answer comes within
/// the timeout, the connection is closed: the calls on it that were not answered fail
/// (idempotent ones are retried on another node, as after any send failure; a
/// non-idempotent call is never sent twice) and the node leaves the picks as if it reported
/// NOT_SERVING. It returns when its health service answers SERVING again: the client
/// reconnects every second (the base ejection of its
/// [`OutlierConfig`](crate::node::OutlierConfig)) and watches its health on the new
/// connection, so no call is risked on a node that may still hang. An idle connection is
/// never pinged.
///
/// The timeout is [`timeout`](Self::timeout) or ten times the node's latency estimate,
/// whichever is longer (at most 20 s), taken when the connection opens. A server that
/// answers PINGs with GOAWAY `ENHANCE_YOUR_CALM` (grpc-go does when PINGs come more often
/// than its policy allows) gets its interval doubled for later connections, as gRFC A8 asks.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use micro_core::client::KeepAlive;
///
/// let keepalive = KeepAlive::default().interval(Duration::from_secs(5));
/// assert_eq!(keepalive.get_interval(), Some(Duration::from_secs(5)));
/// assert_eq!(KeepAlive::disabled().get_interval(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct KeepAlive {
    interval: Option<Duration>,
    timeout: Duration,
}

impl KeepAlive {
    /// No PINGs: a silent connection is only noticed by the calls' deadlines.
    pub fn disabled() -> Self {
        Self {
            interval: None,
            ..Self::default()
        }
    }

    /// Sets the silence after which a PING is sent. Default is
    /// [`DEFAULT_KEEPALIVE_INTERVAL`]; at least 10 ms.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval.max(Duration::from_millis(10)));
        self
    }

    /// Sets the least time a PING is given to be answered. Default is
    /// [`DEFAULT_KEEPALIVE_TIMEOUT`]; at least 10 ms.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// The silence after which a PING is sent; `None` when keepalive is off.
    pub fn get_interval(&self) -> Option<Duration> {
        self.interval
    }

    /// The least time a PING is given to be answered.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The interval and timeout for a new connection to a node whose latency estimate is
    /// `latency`, after the node asked `doublings` times for fewer PINGs.
    pub(crate) fn for_node(
        &self,
        latency: Option<Duration>,
        doublings: u32,
    ) -> Option<(Duration, Duration)> {
        let interval = self.interval?;
        let interval = interval
            .checked_mul(1 << doublings.min(16))
            .unwrap_or(MAX_INTERVAL)
            .min(MAX_INTERVAL.max(interval));
        let derived = latency
            .and_then(|latency| latency.checked_mul(TIMEOUT_LATENCIES))
            .unwrap_or(Duration::ZERO)
            .min(MAX_TIMEOUT);
        Some((interval, self.timeout.max(derived)))
    }
}

impl Default for KeepAlive {
    fn default() -> Self {
        Self {
            interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            timeout: DEFAULT_KEEPALIVE_TIMEOUT,
        }
    }
}

/// What a node's connection task does when the connection ends.
pub(crate) struct OnClose {
    pub(crate) node: Weak<ClientNode>,
    /// How often the node asked for fewer PINGs; shared with the node's later connections.
    pub(crate) doublings: Arc<AtomicU32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) revive: Revive,
}

/// What a node taken out of the picks by a PING timeout needs to be reconnected to.
pub(crate) struct Revive {
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) tls: Option<ClientTls>,
    pub(crate) keepalive: KeepAlive,
    pub(crate) outlier: OutlierConfig,
}

impl OnClose {
    pub(crate) fn closed(self, err: Option<&hyper::Error>) {
        let Some(err) = err else {
            return;
        };
        let Some(node) = self.node.upgrade() else {
            return;
        };
        if err.is_timeout() {
            // hyper's only timeout on a client connection is the keepalive PING's.
            node.set_serving(false);
            tracing::warn!(
                node = %node.id(),
                address = %node.address(),
                ping_timeout_ms = self.timeout.map_or(0, |t| t.as_millis() as u64),
                "node out of the picks: its connection answered no HTTP/2 PING (a hung \
                 process?); back when its health service answers"
            );
            tokio::spawn(self.revive.run(self.node));
        } else if asked_for_fewer_pings(err) {
            let doublings = self.doublings.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                node = %node.id(),
                address = %node.address(),
                doublings,
                "node closed the connection with ENHANCE_YOUR_CALM: keepalive PINGs to it are \
                 now sent less often"
            );
        } else {
            tracing::debug!(node = %node.id(), address = %node.address(), error = %err, "connection closed");
        }
    }
}

impl Revive {
    /// Reconnects to `node` after the base ejection, backing off while it cannot be
    /// reached, until a connection is open: its health watch puts the node back once it
    /// answers SERVING, and its PINGs bring the node here again if it still hangs. Ends
    /// when the node leaves the registry or is serving again.
    async fn run(self, node: Weak<ClientNode>) {
        let mut wait = self.outlier.get_base_ejection();
        loop {
            tokio::time::sleep(wait).await;
            let Some(node) = node.upgrade() else {
                return;
            };
            if node.is_serving() {
                return;
            }
            let connected = node
                .sender(
                    &self.connector,
                    self.tls.as_ref(),
                    &self.keepalive,
                    &self.outlier,
                )
                .await;
            if connected.is_ok() {
                return;
            }
            wait = (wait * 2).min(self.outlier.get_max_ejection());
        }
    }
}

/// Whether the server closed the connection with GOAWAY `ENHANCE_YOUR_CALM`, as grpc-go
/// does for "too_many_pings".
fn asked_for_fewer_pings(err: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2.is_go_away()
                && h2.is_remote()
                && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn timeout_follows_the_latency_above_the_floor() {
        let keepalive = KeepAlive::default();
        assert_eq!(keepalive.for_node(None, 0), Some((2 * S, 4 * S)));
        let fast = Some(Duration::from_micros(300));
        assert_eq!(keepalive.for_node(fast, 0), Some((2 * S, 4 * S)));
        let slow = Some(Duration::from_millis(700));
        assert_eq!(keepalive.for_node(slow, 0), Some((2 * S, 7 * S)));
        let stuck = Some(Duration::from_secs(60));
        assert_eq!(keepalive.for_node(stuck, 0), Some((2 * S, MAX_TIMEOUT)));
        assert_eq!(KeepAlive::disabled().for_node(slow, 0), None);
    }

    #[test]
    fn interval_doubles_up_to_five_minutes() {
        let keepalive = KeepAlive::default().interval(S);
        assert_eq!(keepalive.for_node(None, 1).map(|k| k.0), Some(2 * S));
        assert_eq!(keepalive.for_node(None, 3).map(|k| k.0), Some(8 * S));
        assert_eq!(
            keepalive.for_node(None, 40).map(|k| k.0),
            Some(MAX_INTERVAL)
        );
        let long = KeepAlive::default().interval(600 * S);
        assert_eq!(long.for_node(None, 2).map(|k| k.0), Some(600 * S));
    }

    #[test]
    fn settings_have_floors() {
        let keepalive = KeepAlive::default()
            .interval(Duration::ZERO)
            .timeout(Duration::ZERO);
        assert_eq!(keepalive.get_interval(), Some(Duration::from_millis(10)));
        assert_eq!(keepalive.get_timeout(), Duration::from_millis(10));
    }
}
