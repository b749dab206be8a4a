//! Fault scenarios shared by the acceptance tests (which assert on them, in debug builds)
//! and the benchmarks (which report their figures from release builds at higher rates).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use tonic::Request;

use crate::{
    Cluster, OpenLoop, Record, Report, outcome,
    pb::{self, probe_client::ProbeClient},
};

/// The timeout of each call of a scenario: far beyond any wait the scenario expects, so a
/// call the client mishandles shows as DEADLINE_EXCEEDED instead of hanging the run.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Load before the hang, the hang (SIGSTOP … SIGCONT), and load after it.
const BEFORE: Duration = Duration::from_secs(4);
const HANG: Duration = Duration::from_secs(15);
const AFTER: Duration = Duration::from_secs(5);

/// Which method a scenario calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `Work`, declared `IDEMPOTENT`: hedged and retried.
    Idempotent,
    /// `Count`, not idempotent: never sent twice once sent; its executions are journaled.
    NonIdempotent,
}

/// What a run of [`hung_node`] measured.
#[derive(Debug)]
pub struct HungNode {
    /// Every call.
    pub report: Report,
    /// When node 0 was SIGSTOPped and SIGCONTinued.
    pub stopped: Instant,
    /// When node 0 was SIGCONTinued.
    pub resumed: Instant,
    /// The id of the hung node.
    pub hung: String,
    /// Calls the three nodes executed (hedged and retried copies included).
    pub executions: u64,
    /// Count ids executed more than once ([`Method::NonIdempotent`] only).
    pub duplicates: usize,
}

/// 3 `micro-testsrv` nodes on a private local registry, `rate` calls per second through
/// micro's default client for 24 s; node 0 is SIGSTOPped 4 s in (the kernel still accepts
/// its connections; nothing answers) and SIGCONTinued 15 s later.
pub async fn hung_node(testsrv: &Path, rate: u32, method: Method) -> HungNode {
    let mut cluster = Cluster::start(testsrv, 3).await;
    let client = cluster.client();
    let probe = ProbeClient::new(client.channel("probe"));
    let ids: Vec<String> = (0..3).map(|i| cluster.node(i).node.clone()).collect();
    warm_up(&probe, &ids).await;

    let start = Instant::now();
    let load = OpenLoop::new(rate, BEFORE + HANG + AFTER).spawn({
        let probe = probe.clone();
        move |seq| {
            let mut probe = probe.clone();
            async move {
                match method {
                    Method::Idempotent => {
                        let mut request = Request::new(pb::WorkRequest::default());
                        request.set_timeout(CALL_TIMEOUT);
                        outcome(probe.work(request).await)
                    }
                    Method::NonIdempotent => {
                        let mut request = Request::new(pb::CountRequest {
                            id: format!("call-{seq}"),
                        });
                        request.set_timeout(CALL_TIMEOUT);
                        outcome(probe.count(request).await)
                    }
                }
            }
        }
    });
    tokio::time::sleep_until((start + BEFORE).into()).await;
    cluster.proc(0).signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    tokio::time::sleep_until((stopped + HANG).into()).await;
    cluster.proc(0).signal(Signal::SIGCONT);
    let resumed = Instant::now();
    let report = match load.await {
        Ok(report) => report,
        Err(err) => panic!("the load task failed: {err}"),
    };
    let mut executions = 0;
    for i in 0..3 {
        executions += cluster.control(i).await.stats().await.calls;
    }
    let duplicates = match method {
        Method::Idempotent => 0,
        Method::NonIdempotent => cluster.executions().values().filter(|n| **n > 1).count(),
    };
    HungNode {
        report,
        stopped,
        resumed,
        hung: ids[0].clone(),
        executions,
        duplicates,
    }
}

/// Calls Work until every node in `ids` has answered (bounded by 10 s): the client's view
/// holds them all and their connections are up.
async fn warm_up(probe: &ProbeClient<micro::Channel>, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = std::collections::HashSet::new();
    while !ids.iter().all(|id| seen.contains(id)) {
        assert!(
            Instant::now() < deadline,
            "only {seen:?} of {ids:?} answered within 10 s"
        );
        let mut request = Request::new(pb::WorkRequest::default());
        request.set_timeout(CALL_TIMEOUT);
        if let Ok(node) = outcome(probe.clone().work(request).await) {
            seen.insert(node);
        }
    }
}

// === impl HungNode ===

impl HungNode {
    /// Latency quantile `q` of the calls started in the 3 s before the stop.
    pub fn baseline_quantile(&self, q: f64) -> Duration {
        quantile(
            self.report.records.iter().filter(|r| {
                r.start >= self.stopped - Duration::from_secs(3) && r.start < self.stopped
            }),
            q,
        )
    }

    /// Latency quantile `q` of the calls started during the hang.
    pub fn hang_quantile(&self, q: f64) -> Duration {
        quantile(
            self.report
                .records
                .iter()
                .filter(|r| r.start >= self.stopped && r.start < self.resumed),
            q,
        )
    }

    /// Successful calls that ended during the hang, per offered call of the hang.
    pub fn hang_throughput(&self) -> f64 {
        let completed = self
            .report
            .records
            .iter()
            .filter(|r| r.outcome.is_ok() && r.end >= self.stopped && r.end < self.resumed)
            .count() as f64;
        completed
            / (f64::from(self.report.rate)
                * self.resumed.duration_since(self.stopped).as_secs_f64())
    }

    /// The longest call.
    pub fn slowest(&self) -> Duration {
        self.report
            .records
            .iter()
            .map(Record::latency)
            .max()
            .unwrap_or_default()
    }

    /// Executions per call, less one: the share of extra copies (hedges and retries).
    pub fn extra_calls(&self) -> f64 {
        self.executions as f64 / self.report.total() as f64 - 1.0
    }

    /// Whether the hung node answered calls after it was resumed.
    pub fn returned(&self) -> bool {
        !self
            .report
            .answered_by_after(&self.hung, self.resumed)
            .is_empty()
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "{}; slowest {:?}; p99 {:?} before the hang, {:?} during; throughput during the \
             hang {:.1} % of offered; {:.2} % extra executions; {} duplicates; back after \
             SIGCONT: {}",
            self.report.summary(),
            self.slowest(),
            self.baseline_quantile(0.99),
            self.hang_quantile(0.99),
            self.hang_throughput() * 100.0,
            self.extra_calls() * 100.0,
            self.duplicates,
            self.returned()
        )
    }
}

fn quantile<'a>(records: impl Iterator<Item = &'a Record>, q: f64) -> Duration {
    let mut latencies: Vec<Duration> = records.map(Record::latency).collect();
    latencies.sort();
    let index = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
    latencies.get(index).copied().unwrap_or_default()
}
