//! [`OpenLoop`]: a fixed-rate load generator, and the [`Report`] of what each call did.
//!
//! Open loop: calls start on a clock, whatever the previous calls are doing, so a slow or
//! failing node cannot slow the load down and hide its own failures, and every outcome is
//! countable: sent, succeeded, failed by code.

use std::{
    collections::BTreeMap,
    future::Future,
    time::{Duration, Instant},
};

use tokio::{task::JoinHandle, time::MissedTickBehavior};
use tonic::{Code, Response, Status};

/// The finest tick the generator uses; faster rates send several calls per tick.
const MIN_TICK: Duration = Duration::from_millis(1);

/// Fires calls at a fixed rate for a fixed duration, each call in its own task.
///
/// Ticks come from a `tokio::time::interval` with [`MissedTickBehavior::Burst`]: when the
/// generator falls behind (a busy machine), it sends the missed calls at once to catch up,
/// so the number of calls is always `rate × duration` and the average rate holds; the
/// lateness shows as [`Report::max_lag`] and in [`Report::achieved_rate`].
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    rate: u32,
    duration: Duration,
}

/// What one call did.
pub type Outcome = Result<String, Failure>;

/// A failed call: its status code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The gRPC status code.
    pub code: Code,
    /// The status message.
    pub message: String,
}

/// One call of a run.
#[derive(Debug, Clone)]
pub struct Record {
    /// The call's number, from 0, in start order.
    pub seq: u64,
    /// When the call started.
    pub start: Instant,
    /// When its outcome was known.
    pub end: Instant,
    /// The id of the node that answered, or the failure.
    pub outcome: Outcome,
}

/// The records of a run, in start order, with summaries.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every call.
    pub records: Vec<Record>,
    /// When the first call was due.
    pub started: Instant,
    /// The rate asked for, in calls per second.
    pub rate: u32,
    /// The most a call started after it was due.
    pub max_lag: Duration,
}

// === impl OpenLoop ===

impl OpenLoop {
    /// `rate` calls per second for `duration`.
    ///
    /// # Panics
    /// When `rate` is 0.
    pub fn new(rate: u32, duration: Duration) -> Self {
        assert!(rate > 0, "the rate must be at least one call per second");
        Self { rate, duration }
    }

    /// How many calls a run makes: `rate × duration`.
    pub fn calls(&self) -> u64 {
        let calls = u128::from(self.rate) * self.duration.as_millis() / 1000;
        u64::try_from(calls).unwrap_or(u64::MAX)
    }

    /// Runs the load: `call(seq)` makes the future of call `seq`, which is spawned as its
    /// own task. Returns once every call has finished.
    pub async fn run<F, Fut>(self, mut call: F) -> Report
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let total = self.calls();
        let per_tick = u64::from(self.rate).div_ceil(1000).max(1);
        let tick = Duration::from_secs_f64(per_tick as f64 / f64::from(self.rate)).max(MIN_TICK);
        let started = tokio::time::Instant::now();
        let mut ticks = tokio::time::interval_at(started, tick);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut tasks: Vec<JoinHandle<Record>> = Vec::with_capacity(total.try_into().unwrap_or(0));
        let mut max_lag = Duration::ZERO;
        let mut seq = 0;
        while seq < total {
            let due = ticks.tick().await;
            max_lag = max_lag.max(due.elapsed());
            for _ in 0..per_tick.min(total - seq) {
                let future = call(seq);
                let start = Instant::now();
                tasks.push(tokio::spawn(async move {
                    let outcome = future.await;
                    Record {
                        seq,
                        start,
                        end: Instant::now(),
                        outcome,
                    }
                }));
                seq += 1;
            }
        }
        let mut records = Vec::with_capacity(tasks.len());
        for task in tasks {
            match task.await {
                Ok(record) => records.push(record),
                Err(err) => panic!("a load task failed: {err}"),
            }
        }
        Report {
            records,
            started: started.into_std(),
            rate: self.rate,
            max_lag,
        }
    }

    /// [`OpenLoop::run`] in a task of its own, so the test can inject faults meanwhile.
    pub fn spawn<F, Fut>(self, call: F) -> JoinHandle<Report>
    where
        F: FnMut(u64) -> Fut + Send + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        tokio::spawn(self.run(call))
    }
}

// === impl Failure ===

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Self {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// The outcome of a call through a micro channel: the answering node's id from the
/// response's [`micro::NodeInfo`], or the failure.
pub fn outcome<T>(result: Result<Response<T>, Status>) -> Outcome {
    match result {
        Ok(response) => Ok(response
            .extensions()
            .get::<micro::NodeInfo>()
            .map(|node| node.id().to_owned())
            .unwrap_or_default()),
        Err(status) => Err(status.into()),
    }
}

// === impl Record ===

impl Record {
    /// How long the call took.
    pub fn latency(&self) -> Duration {
        self.end.saturating_duration_since(self.start)
    }

    /// The node that answered, if the call succeeded.
    pub fn node(&self) -> Option<&str> {
        self.outcome.as_deref().ok()
    }
}

// === impl Report ===

impl Report {
    /// How many calls were made.
    pub fn total(&self) -> usize {
        self.records.len()
    }

    /// The failed calls.
    pub fn failures(&self) -> Vec<&Record> {
        self.records.iter().filter(|r| r.outcome.is_err()).collect()
    }

    /// How many calls failed.
    pub fn failed(&self) -> usize {
        self.failures().len()
    }

    /// Failed calls by status code.
    pub fn failed_by_code(&self) -> BTreeMap<String, usize> {
        let mut by_code = BTreeMap::new();
        for failure in self.records.iter().filter_map(|r| r.outcome.as_ref().err()) {
            *by_code.entry(format!("{:?}", failure.code)).or_insert(0) += 1;
        }
        by_code
    }

    /// The rate calls were actually started at, in calls per second: from the first
    /// call's start to the last one's.
    pub fn achieved_rate(&self) -> f64 {
        match (self.records.first(), self.records.last()) {
            (Some(first), Some(last)) if self.records.len() > 1 => {
                let span = last.start.saturating_duration_since(first.start);
                (self.records.len() - 1) as f64 / span.as_secs_f64().max(f64::EPSILON)
            }
            _ => 0.0,
        }
    }

    /// Each node's share of all calls (failed ones count in the total, under no node).
    pub fn share_per_node(&self) -> BTreeMap<String, f64> {
        shares(self.records.iter())
    }

    /// Each node's share of the calls started in `[from, to)`.
    pub fn share_per_node_between(&self, from: Instant, to: Instant) -> BTreeMap<String, f64> {
        shares(
            self.records
                .iter()
                .filter(|r| r.start >= from && r.start < to),
        )
    }

    /// The most calls in flight at once (started, outcome not yet known) at any moment
    /// between `from` and `to`: how many a client had sent that it could not yet have
    /// learnt anything from.
    pub fn max_in_flight_between(&self, from: Instant, to: Instant) -> usize {
        // +1 when a call starts (or at `from` if it started before), -1 when it ends; ends
        // sort before starts at the same instant.
        let mut changes: Vec<(Instant, i32)> = self
            .records
            .iter()
            .filter(|r| r.start <= to && r.end >= from)
            .flat_map(|r| [(r.start.max(from), 1), (r.end, -1)])
            .collect();
        changes.sort_unstable();
        let (mut now, mut most) = (0_i32, 0_i32);
        for (_, change) in changes {
            now += change;
            most = most.max(now);
        }
        usize::try_from(most).unwrap_or(0)
    }

    /// The calls answered by `node` that started after `after`.
    pub fn answered_by_after(&self, node: &str, after: Instant) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| r.start > after && r.node() == Some(node))
            .collect()
    }

    /// The calls started after `after` that failed with a message naming `address` (the
    /// client names the addresses it tried).
    pub fn failures_naming_after(&self, address: &str, after: Instant) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| {
                r.start > after
                    && r.outcome
                        .as_ref()
                        .is_err_and(|failure| failure.message.contains(address))
            })
            .collect()
    }

    /// The `q` quantile (0.0 to 1.0) of successful calls' latency.
    pub fn latency_quantile(&self, q: f64) -> Duration {
        let mut latencies: Vec<Duration> = self
            .records
            .iter()
            .filter(|r| r.outcome.is_ok())
            .map(Record::latency)
            .collect();
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        latencies.sort_unstable();
        let index = ((latencies.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        latencies[index]
    }

    /// A one-line summary for assertion messages and logs.
    pub fn summary(&self) -> String {
        let shares: Vec<String> = self
            .share_per_node()
            .iter()
            .map(|(node, share)| format!("{node}={:.1}%", share * 100.0))
            .collect();
        format!(
            "{} calls at {:.0}/s (asked {}/s, max lag {:?}), {} failed {:?}, p50 {:?}, p99 {:?}, shares [{}]",
            self.total(),
            self.achieved_rate(),
            self.rate,
            self.max_lag,
            self.failed(),
            self.failed_by_code(),
            self.latency_quantile(0.5),
            self.latency_quantile(0.99),
            shares.join(", ")
        )
    }

    /// Up to `n` failures, for assertion messages.
    pub fn sample_failures(&self, n: usize) -> String {
        self.failures()
            .iter()
            .take(n)
            .map(|r| {
                let failure = r.outcome.as_ref().err();
                format!(
                    "#{} +{:?} (took {:?}): {:?} {}",
                    r.seq,
                    r.start.saturating_duration_since(self.started),
                    r.end.saturating_duration_since(r.start),
                    failure.map(|f| f.code),
                    failure.map_or("", |f| f.message.as_str())
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn shares<'a>(records: impl Iterator<Item = &'a Record>) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0usize;
    for record in records {
        total += 1;
        if let Some(node) = record.node() {
            *counts.entry(node.to_owned()).or_insert(0) += 1;
        }
    }
    counts
        .into_iter()
        .map(|(node, count)| (node, count as f64 / total.max(1) as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sends_rate_times_duration_calls() {
        let report = OpenLoop::new(2000, Duration::from_millis(500))
            .run(|seq| async move {
                if seq % 10 == 0 {
                    Err(Failure {
                        code: Code::Unavailable,
                        message: "down".into(),
                    })
                } else {
                    Ok(format!("node-{}", seq % 2))
                }
            })
            .await;
        assert_eq!(report.total(), 1000);
        assert_eq!(report.failed(), 100);
        assert_eq!(report.failed_by_code().get("Unavailable"), Some(&100));
        let shares = report.share_per_node();
        assert!((shares["node-1"] - 0.5).abs() < 1e-9, "{shares:?}");
        assert!((shares["node-0"] - 0.4).abs() < 1e-9, "{shares:?}");
    }

    #[test]
    fn counts_the_most_calls_in_flight_at_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let record = |seq: u64, start: u64, end: u64| Record {
            seq,
            start: at(start),
            end: at(end),
            outcome: Ok("n".into()),
        };
        let report = Report {
            // 0-10 alone; 20-50 overlaps 30-40 and 35-60; 60-70 starts as 35-60 ends.
            records: vec![
                record(0, 0, 10),
                record(1, 20, 50),
                record(2, 30, 40),
                record(3, 35, 60),
                record(4, 60, 70),
            ],
            started: t0,
            rate: 100,
            max_lag: Duration::ZERO,
        };
        assert_eq!(report.max_in_flight_between(at(0), at(100)), 3);
        assert_eq!(report.max_in_flight_between(at(0), at(15)), 1);
        assert_eq!(report.max_in_flight_between(at(41), at(100)), 2);
        assert_eq!(report.max_in_flight_between(at(55), at(100)), 1);
        assert_eq!(report.max_in_flight_between(at(80), at(100)), 0);
    }
}
