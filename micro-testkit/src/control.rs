//! [`ControlClient`]: talks to one node directly, past micro's client, to switch its
//! behaviour and read its counters.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::pb::{ControlRequest, StatsReply, StatsRequest, probe_client::ProbeClient};

/// How long a control call may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// A plain tonic client on one node's address.
#[derive(Debug, Clone)]
pub struct ControlClient {
    addr: String,
    probe: ProbeClient<Channel>,
}

impl ControlClient {
    /// Connects to the node at `addr` (`host:port`).
    ///
    /// # Panics
    /// When the node cannot be reached.
    pub async fn connect(addr: &str) -> Self {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap_or_else(|err| panic!("bad node address {addr}: {err}"))
            .connect_timeout(CONTROL_TIMEOUT)
            .timeout(CONTROL_TIMEOUT);
        let channel = endpoint
            .connect()
            .await
            .unwrap_or_else(|err| panic!("cannot connect to node {addr}: {err}"));
        Self {
            addr: addr.to_owned(),
            probe: ProbeClient::new(channel),
        }
    }

    /// The node's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sets the node's whole behaviour: what `request` leaves at zero is switched off.
    ///
    /// # Panics
    /// When the call fails.
    pub async fn control(&self, request: ControlRequest) {
        if let Err(status) = self.probe.clone().control(request).await {
            panic!("Control on node {} failed: {status}", self.addr);
        }
    }

    /// Makes Work and Count answer UNAVAILABLE (`true`) or work normally (`false`).
    pub async fn fail_unavailable(&self, fail: bool) {
        self.control(ControlRequest {
            fail_unavailable: fail,
            ..ControlRequest::default()
        })
        .await;
    }

    /// Makes Work and Count answer `code` at once; `tonic::Code::Ok` switches it off.
    pub async fn fail_with(&self, code: tonic::Code) {
        self.control(ControlRequest {
            fail_code: code as i32,
            ..ControlRequest::default()
        })
        .await;
    }

    /// Delays every Work and Count call by `extra`.
    pub async fn extra_latency(&self, extra: Duration) {
        self.control(ControlRequest {
            extra_latency_ms: u32::try_from(extra.as_millis()).unwrap_or(u32::MAX),
            ..ControlRequest::default()
        })
        .await;
    }

    /// Reports SERVING (`true`) or NOT_SERVING through grpc.health.v1.
    pub async fn serving(&self, serving: bool) {
        self.control(ControlRequest {
            not_serving: !serving,
            ..ControlRequest::default()
        })
        .await;
    }

    /// The node's counters.
    ///
    /// # Panics
    /// When the call fails.
    pub async fn stats(&self) -> StatsReply {
        match self.probe.clone().stats(StatsRequest {}).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => panic!("Stats on node {} failed: {status}", self.addr),
        }
    }
}
