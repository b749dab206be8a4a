//! [`RecordingConnector`]: micro's TCP connector, recording every connection attempt, so a
//! test can tell whether the client still tries a dead node.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use micro::client::{ConnectFuture, Connector, TcpConnector};

/// One connection attempt of the client.
#[derive(Debug, Clone)]
pub struct ConnectAttempt {
    /// The node address dialled.
    pub address: String,
    /// When the attempt started.
    pub at: Instant,
    /// Whether a connection was established.
    pub connected: bool,
}

/// A [`Connector`] that dials like [`TcpConnector`] and records each attempt.
///
/// Give it to the client with `Client::builder().connector(recorder.clone())`; clones
/// share the record. Calls over an established HTTP/2 connection are not dials: a node's
/// calls show here only when the client (re)connects.
#[derive(Debug, Clone, Default)]
pub struct RecordingConnector {
    tcp: TcpConnector,
    attempts: Arc<Mutex<Vec<ConnectAttempt>>>,
}

impl RecordingConnector {
    /// A recorder with micro's default TCP connector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every attempt so far, oldest first.
    pub fn attempts(&self) -> Vec<ConnectAttempt> {
        micro::lock::lock(&self.attempts).clone()
    }

    /// The attempts to `address` that started after `after`.
    pub fn attempts_to_after(&self, address: &str, after: Instant) -> Vec<ConnectAttempt> {
        self.attempts()
            .into_iter()
            .filter(|attempt| attempt.address == address && attempt.at > after)
            .collect()
    }
}

impl Connector for RecordingConnector {
    fn connect(&self, address: &str) -> ConnectFuture {
        let connect = self.tcp.connect(address);
        let attempts = Arc::clone(&self.attempts);
        let address = address.to_owned();
        let at = Instant::now();
        Box::pin(async move {
            let result = connect.await;
            micro::lock::lock(&attempts).push(ConnectAttempt {
                address,
                at,
                connected: result.is_ok(),
            });
            result
        })
    }
}
