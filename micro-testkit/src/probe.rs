//! [`Probe`]: the handler of the `testkit.v1.Probe` service that `micro-testsrv` serves.

use std::{
    collections::HashMap,
    fs::File,
    io::Write,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;
use tonic::{Code, Request, Response, Status};

use crate::pb::{
    ControlReply, ControlRequest, CountReply, CountRequest, RelayRequest, StatsReply, StatsRequest,
    WorkReply, WorkRequest, probe_client::ProbeClient, probe_server,
};

/// The longest `delay_ms` a Work call may ask for.
pub const MAX_DELAY_MS: u32 = 60_000;

/// The probe service's handler: counts calls and executions, fails or slows down on
/// command ([`ControlRequest`]) and relays calls through the node's micro client.
///
/// Cloning is cheap; clones share their state.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    node: OnceLock<String>,
    client: OnceLock<micro::Client>,
    seq: AtomicU64,
    calls: AtomicU64,
    duplicates: AtomicU64,
    cancelled: AtomicU64,
    unavailable_sent: AtomicU64,
    last_work_timeout_ms: AtomicU64,
    fail_unavailable: AtomicBool,
    fail_code: AtomicI32,
    extra_latency_ms: AtomicU32,
    executions: Mutex<HashMap<String, u32>>,
    /// One line per Count execution (`<id>`), shared by all nodes of a test so that a
    /// duplicate across nodes shows, also when a node was killed.
    journal: Option<Mutex<File>>,
    serving: OnceLock<watch::Sender<bool>>,
}

/// Counts a Work call as cancelled unless it completed.
struct CancelGuard<'a> {
    cancelled: &'a AtomicU64,
    done: bool,
}

// === impl Probe ===

impl Probe {
    /// A probe that writes each Count execution to `journal` when given.
    pub fn new(journal: Option<File>) -> Self {
        Self {
            inner: Arc::new(Inner {
                journal: journal.map(Mutex::new),
                ..Inner::default()
            }),
        }
    }

    /// Takes the node id and the client for Relay from the built service; call it before
    /// [`micro::Service::start`].
    pub fn attach(&self, service: &micro::Service) {
        let _ = self.inner.node.set(service.node_id().to_owned());
        let _ = self.inner.client.set(service.client());
    }

    /// The health state Control asks for: `true` for SERVING. The binary applies it with
    /// `RunningService::set_serving`.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.inner
            .serving
            .get_or_init(|| watch::Sender::new(true))
            .subscribe()
    }

    fn node(&self) -> String {
        self.inner.node.get().cloned().unwrap_or_default()
    }

    /// Counts the call, then answers the failure Control switched on, if any.
    fn admit(&self) -> Result<(), Status> {
        let inner = &self.inner;
        inner.calls.fetch_add(1, Ordering::Relaxed);
        let code = if inner.fail_unavailable.load(Ordering::Relaxed) {
            Code::Unavailable
        } else {
            match inner.fail_code.load(Ordering::Relaxed) {
                0 => return Ok(()),
                code => Code::from_i32(code),
            }
        };
        inner.unavailable_sent.fetch_add(1, Ordering::Relaxed);
        Err(Status::new(
            code,
            format!("node {} fails on purpose (Control)", self.node()),
        ))
    }

    async fn delay(&self, delay_ms: u32) {
        let total = self
            .inner
            .extra_latency_ms
            .load(Ordering::Relaxed)
            .saturating_add(delay_ms);
        if total > 0 {
            tokio::time::sleep(Duration::from_millis(total.into())).await;
        }
    }

    fn execute(&self, id: &str) -> u32 {
        let executions = {
            let mut executions = micro::lock::lock(&self.inner.executions);
            let count = executions.entry(id.to_owned()).or_insert(0);
            *count += 1;
            *count
        };
        if executions > 1 {
            self.inner.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(journal) = &self.inner.journal {
            let mut journal = micro::lock::lock(journal);
            // One write per line: O_APPEND keeps lines of concurrent nodes whole.
            if let Err(err) = journal.write_all(format!("{id}\n").as_bytes()) {
                tracing::error!(error = %err, "cannot write the Count journal");
            }
        }
        executions
    }
}

#[tonic::async_trait]
impl probe_server::Probe for Probe {
    async fn work(&self, request: Request<WorkRequest>) -> Result<Response<WorkReply>, Status> {
        let timeout_ms = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map_or(0, |timeout| {
                u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
            });
        self.inner
            .last_work_timeout_ms
            .store(timeout_ms, Ordering::Relaxed);
        self.admit()?;
        let request = request.into_inner();
        if request.delay_ms > MAX_DELAY_MS {
            return Err(Status::invalid_argument(format!(
                "delay_ms {} is over the limit of {MAX_DELAY_MS}",
                request.delay_ms
            )));
        }
        let mut guard = CancelGuard {
            cancelled: &self.inner.cancelled,
            done: false,
        };
        self.delay(request.delay_ms).await;
        guard.done = true;
        Ok(Response::new(WorkReply {
            node: self.node(),
            seq: self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1,
        }))
    }

    async fn count(&self, request: Request<CountRequest>) -> Result<Response<CountReply>, Status> {
        self.admit()?;
        let id = request.into_inner().id;
        if id.is_empty() {
            return Err(Status::invalid_argument("id must not be empty"));
        }
        let executions = self.execute(&id);
        self.delay(0).await;
        Ok(Response::new(CountReply {
            node: self.node(),
            executions,
        }))
    }

    async fn relay(&self, request: Request<RelayRequest>) -> Result<Response<WorkReply>, Status> {
        let request = request.into_inner();
        let client = self
            .inner
            .client
            .get()
            .ok_or_else(|| Status::failed_precondition("probe is not attached to a service"))?;
        let mut next = ProbeClient::new(client.channel(&request.service));
        let reply = next
            .work(WorkRequest {
                delay_ms: request.delay_ms,
                payload: Vec::new(),
            })
            .await?;
        Ok(Response::new(reply.into_inner()))
    }

    async fn control(
        &self,
        request: Request<ControlRequest>,
    ) -> Result<Response<ControlReply>, Status> {
        let request = request.into_inner();
        let inner = &self.inner;
        inner
            .fail_unavailable
            .store(request.fail_unavailable, Ordering::Relaxed);
        inner.fail_code.store(request.fail_code, Ordering::Relaxed);
        inner
            .extra_latency_ms
            .store(request.extra_latency_ms, Ordering::Relaxed);
        if let Some(serving) = inner.serving.get() {
            serving.send_replace(!request.not_serving);
        }
        tracing::info!(node = %self.node(), ?request, "control");
        Ok(Response::new(ControlReply {}))
    }

    async fn stats(&self, _request: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        let inner = &self.inner;
        Ok(Response::new(StatsReply {
            calls: inner.calls.load(Ordering::Relaxed),
            duplicate_executions: inner.duplicates.load(Ordering::Relaxed),
            cancelled: inner.cancelled.load(Ordering::Relaxed),
            unavailable_sent: inner.unavailable_sent.load(Ordering::Relaxed),
            last_work_timeout_ms: inner.last_work_timeout_ms.load(Ordering::Relaxed),
        }))
    }
}

// === impl CancelGuard ===

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_grpc_timeout("1500000u"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
