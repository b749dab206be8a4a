//! Acceptance tests of issue 3 ("Resilient client"): real `micro-testsrv` processes on
//! loopback, faults by signal and by Control RPC, load from an open-loop generator.
//!
//! Every test takes [`exclusive`] first: load tests measure shares and latencies and must
//! not share the 2 cores with each other.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use micro_testkit::{
    Cluster, OpenLoop, RecordingConnector, exclusive, outcome,
    pb::{self, probe_client::ProbeClient},
    scenario::{self, Method},
};
use tonic::{Code, Request};

type Probe = ProbeClient<micro::Channel>;

const TESTSRV: &str = env!("CARGO_BIN_EXE_micro-testsrv");
/// The timeout of each load call: far above any healthy latency, so a hung call shows as
/// DEADLINE_EXCEEDED instead of hanging the test. Generous because a starved machine
/// (a CI box shared with other builds) once stretched p50 to 0.8 s and some calls past 5 s:
/// a call the client mishandles hangs until this deadline and still fails the test.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

fn probe(client: &micro::Client, service: &str) -> Probe {
    ProbeClient::new(client.channel(service))
}

fn work(delay_ms: u32) -> Request<pb::WorkRequest> {
    let mut request = Request::new(pb::WorkRequest {
        delay_ms,
        payload: Vec::new(),
    });
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// One Work call as a load call.
fn work_call(probe: &Probe) -> impl Future<Output = micro_testkit::Outcome> + Send + use<> {
    let mut probe = probe.clone();
    async move { outcome(probe.work(work(0)).await) }
}

/// Calls Work until every node in `ids` has answered: the client's registry view holds
/// them all and their connections are up. A readiness wait, bounded by 10 s.
async fn warm_up(probe: &Probe, ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = HashSet::new();
    while !ids.iter().all(|id| seen.contains(*id)) {
        assert!(
            Instant::now() < deadline,
            "only {seen:?} of {ids:?} answered within 10 s"
        );
        if let Ok(node) = outcome(probe.clone().work(work(0)).await) {
            seen.insert(node);
        }
    }
}

fn ids(cluster: &Cluster, nodes: &[usize]) -> Vec<String> {
    nodes
        .iter()
        .map(|&i| cluster.node(i).node.clone())
        .collect()
}

fn refs(ids: &[String]) -> Vec<&str> {
    ids.iter().map(String::as_str).collect()
}

/// Sum of `calls` over the given nodes' Stats.
async fn total_calls(cluster: &Cluster, nodes: &[usize]) -> u64 {
    let mut total = 0;
    for &i in nodes {
        total += cluster.control(i).await.stats().await.calls;
    }
    total
}

/// Sleeps until `at`: the subject of a scenario ("fail for 10 s"), never a readiness wait.
async fn until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}

fn share(shares: &BTreeMap<String, f64>, node: &str) -> f64 {
    shares.get(node).copied().unwrap_or(0.0)
}

// === 1. kill -9 under load ===

/// 3 nodes, 1,000 req/s for 10 s, kill -9 one node mid-run: 0 failed idempotent calls,
/// and nothing is sent to the dead address more than 1 s after the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_kill_9_under_load_fails_no_idempotent_call() {
    let _serial = exclusive().await;
    let mut cluster = Cluster::start(TESTSRV, 3).await;
    let connector = RecordingConnector::new();
    let client = cluster
        .client_builder()
        .connector(connector.clone())
        .build()
        .unwrap();
    let probe = probe(&client, "probe");
    let nodes = ids(&cluster, &[0, 1, 2]);
    warm_up(&probe, &refs(&nodes)).await;

    let start = Instant::now();
    let load = OpenLoop::new(1000, Duration::from_secs(10)).spawn({
        let probe = probe.clone();
        move |_| work_call(&probe)
    });
    until(start + Duration::from_secs(4)).await;
    let dead = cluster.kill(0).await;
    let killed = Instant::now();
    let report = load.await.unwrap();
    eprintln!("s01: {}", report.summary());

    assert_eq!(
        report.failed(),
        0,
        "{}\n{}",
        report.summary(),
        report.sample_failures(10)
    );
    let late = killed + Duration::from_secs(1);
    let dials = connector.attempts_to_after(&dead.addr, late);
    assert!(
        dials.is_empty(),
        "{} connection attempts to the dead node {} more than 1 s after the kill: {dials:?}",
        dials.len(),
        dead.addr
    );
    assert!(report.answered_by_after(&dead.node, late).is_empty());
    assert!(
        report.failures_naming_after(&dead.addr, late).is_empty(),
        "calls still tried the dead node"
    );
}

// === 2. kill -9 with a non-idempotent method ===

/// The same with a method that counts executions: 0 duplicate executions over 10,000
/// calls, counted across all nodes (the killed one included) from their journals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s02_kill_9_never_executes_a_non_idempotent_call_twice() {
    let _serial = exclusive().await;
    let mut cluster = Cluster::start(TESTSRV, 3).await;
    let client = cluster.client();
    let probe = probe(&client, "probe");
    let nodes = ids(&cluster, &[0, 1, 2]);
    warm_up(&probe, &refs(&nodes)).await;

    let start = Instant::now();
    let load = OpenLoop::new(1000, Duration::from_secs(10)).spawn({
        let probe = probe.clone();
        move |seq| {
            let mut probe = probe.clone();
            async move {
                let mut request = Request::new(pb::CountRequest {
                    id: format!("call-{seq}"),
                });
                request.set_timeout(CALL_TIMEOUT);
                outcome(probe.count(request).await)
            }
        }
    });
    until(start + Duration::from_secs(4)).await;
    cluster.kill(0).await;
    let report = load.await.unwrap();
    eprintln!("s02: {}", report.summary());

    assert_eq!(report.total(), 10_000);
    let executions = cluster.executions();
    let duplicates: Vec<(&String, &u32)> = executions.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "{} ids executed more than once, e.g. {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(5)]
    );
    // Every successful call executed, and nothing executed that was never sent.
    let succeeded = report.total() - report.failed();
    assert!(
        executions.len() >= succeeded,
        "{} executions for {succeeded} successes",
        executions.len()
    );
    for i in [1, 2] {
        assert_eq!(
            cluster.control(i).await.stats().await.duplicate_executions,
            0
        );
    }
}

// === 3. retry code matrix ===

/// The codes a status-based retry may retry: UNAVAILABLE for every method, more for
/// idempotent ones, never DEADLINE_EXCEEDED, CANCELLED, INVALID_ARGUMENT.
const NEVER_RETRIED: [Code; 3] = [
    Code::DeadlineExceeded,
    Code::Cancelled,
    Code::InvalidArgument,
];
/// Codes retried for idempotent methods only (the channel owner may widen this list).
const IDEMPOTENT_RETRIED: [Code; 3] = [Code::Internal, Code::Unknown, Code::Aborted];
/// The default attempt cap.
const MAX_ATTEMPTS: u64 = 3;
/// An upper bound for the backoff of all retries of one call together (the channel's
/// backoff settings decide the exact value).
const MAX_TOTAL_BACKOFF: Duration = Duration::from_secs(1);

/// Only the codes above are retried; attempts never exceed the cap; backoff within bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s03_retries_only_the_retryable_codes_within_the_cap() {
    let _serial = exclusive().await;
    let cluster = Cluster::start(TESTSRV, 3).await;
    // Executions count attempts here: no hedged copies (a loaded machine makes answers late
    // enough to hedge one now and then; hedging has its own tests, s11 and hung_node.rs).
    let client = cluster.client_builder().hedging(false).build().unwrap();
    let probe = probe(&client, "probe");
    let all = [0, 1, 2];
    warm_up(&probe, &refs(&ids(&cluster, &all))).await;
    let controls = [
        cluster.control(0).await,
        cluster.control(1).await,
        cluster.control(2).await,
    ];
    const CALLS: u64 = 10;

    let mut matrix = Vec::new();
    for code in [Code::Unavailable]
        .into_iter()
        .chain(IDEMPOTENT_RETRIED)
        .chain(NEVER_RETRIED)
    {
        for control in &controls {
            control.fail_with(code).await;
        }
        for idempotent in [true, false] {
            let before = total_calls(&cluster, &all).await;
            let mut slowest = Duration::ZERO;
            for seq in 0..CALLS {
                let started = Instant::now();
                let result = if idempotent {
                    probe.clone().work(work(0)).await.map(|_| ())
                } else {
                    probe
                        .clone()
                        .count(pb::CountRequest {
                            id: format!("{code:?}-{seq}"),
                        })
                        .await
                        .map(|_| ())
                };
                slowest = slowest.max(started.elapsed());
                let status = result.expect_err("every node fails");
                assert_eq!(status.code(), code, "the caller sees the node's code");
            }
            let attempts = total_calls(&cluster, &all).await - before;
            let expected = if code == Code::Unavailable
                || (idempotent && IDEMPOTENT_RETRIED.contains(&code))
            {
                MAX_ATTEMPTS
            } else {
                1
            };
            matrix.push(format!(
                "{code:?} idempotent={idempotent}: {attempts} attempts for {CALLS} calls, slowest {slowest:?}"
            ));
            assert_eq!(
                attempts,
                expected * CALLS,
                "{code:?} (idempotent: {idempotent}): {attempts} attempts for {CALLS} calls"
            );
            assert!(
                slowest <= MAX_TOTAL_BACKOFF + Duration::from_millis(200),
                "{code:?}: a call took {slowest:?}: backoff out of bounds"
            );
        }
    }
    eprintln!("s03:\n{}", matrix.join("\n"));
}

// === 4. every node failing ===

/// All nodes failing for 10 s: attempts ≤ 1.2 × requests + 10/s; success resumes within
/// 2 s after recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s04_all_nodes_failing_retry_budget_and_recovery() {
    let _serial = exclusive().await;
    let cluster = Cluster::start(TESTSRV, 3).await;
    let client = cluster.client();
    let probe = probe(&client, "probe");
    let all = [0, 1, 2];
    warm_up(&probe, &refs(&ids(&cluster, &all))).await;
    let controls = [
        cluster.control(0).await,
        cluster.control(1).await,
        cluster.control(2).await,
    ];
    const FAILING: Duration = Duration::from_secs(10);
    const RATE: u32 = 200;

    let start = Instant::now();
    // The scenario's steps are sleeps plus control RPCs, which a busy machine slows: the
    // load runs well past the recovery window (asserted below) rather than ending at a
    // fixed 14 s, which left no call after healing when the RPCs took a few seconds.
    let load = OpenLoop::new(RATE, Duration::from_secs(18)).spawn({
        let probe = probe.clone();
        move |_| work_call(&probe)
    });
    until(start + Duration::from_secs(1)).await;
    let calls_before = total_calls(&cluster, &all).await;
    let failing_from = Instant::now();
    for control in &controls {
        control.fail_unavailable(true).await;
    }
    until(failing_from + FAILING).await;
    for control in &controls {
        control.fail_unavailable(false).await;
    }
    let healed = Instant::now();
    let calls_failing = total_calls(&cluster, &all).await - calls_before;
    let report = load.await.unwrap();
    eprintln!("s04: {}", report.summary());

    // Baseline: before the failure every call succeeded (calls still in flight when the
    // nodes were switched may fail).
    let baseline_end = failing_from - Duration::from_millis(200);
    let baseline_failures = report
        .records
        .iter()
        .filter(|r| r.start < baseline_end && r.outcome.is_err())
        .count();
    assert_eq!(
        baseline_failures,
        0,
        "baseline failed: {}",
        report.sample_failures(5)
    );

    let requests = report
        .records
        .iter()
        .filter(|r| r.start >= failing_from && r.start < healed)
        .count() as f64;
    let budget = 1.2 * requests + 10.0 * healed.duration_since(failing_from).as_secs_f64();
    // Calls in flight at each switch may land on either side; allow one second of load.
    let slack = f64::from(RATE);
    assert!(
        calls_failing as f64 <= budget + slack,
        "{calls_failing} attempts for {requests} requests while every node failed (budget {budget:.0})"
    );

    let recovered_by = healed + Duration::from_secs(2);
    eprintln!(
        "s04: healed {:?} after the load started; {calls_failing} attempts for {requests} \
         requests while failing",
        healed.duration_since(start)
    );
    assert!(
        report
            .records
            .last()
            .is_some_and(|r| r.start > recovered_by + Duration::from_secs(1)),
        "the load ended before the recovery window did: healed {:?} after it started ({})",
        healed.duration_since(start),
        report.summary()
    );
    let late_failures: Vec<_> = report
        .records
        .iter()
        .filter(|r| r.start >= recovered_by && r.outcome.is_err())
        .collect();
    assert!(
        late_failures.is_empty(),
        "{} calls failed more than 2 s after recovery: {:?}",
        late_failures.len(),
        late_failures.first()
    );
    assert!(
        report
            .records
            .iter()
            .any(|r| r.start >= healed && r.start < recovered_by && r.outcome.is_ok()),
        "no success within 2 s after recovery"
    );
}

// === 5. deadline chain ===

/// The chain test → B (Relay) → C (Work sleeping 1 s) with a 300 ms budget.
struct Chain {
    cluster: Cluster,
    front: Probe,
    back: usize,
}

const BUDGET: Duration = Duration::from_millis(300);

async fn chain() -> Chain {
    let mut cluster = Cluster::new(TESTSRV);
    cluster.spawn("front", 1).await;
    let back = cluster.spawn("back", 1).await[0];
    cluster.wait_registered("front", 1).await;
    cluster.wait_registered("back", 1).await;
    let client = cluster.client();
    let front = probe(&client, "front");
    // Connections test → B and B → C up before the budget is measured.
    let mut warm = front.clone();
    warm.relay(pb::RelayRequest {
        service: "back".into(),
        delay_ms: 0,
    })
    .await
    .expect("warm-up relay");
    Chain {
        cluster,
        front,
        back,
    }
}

async fn relay_with_budget(front: &Probe) -> (tonic::Status, Duration) {
    let mut request = Request::new(pb::RelayRequest {
        service: "back".into(),
        delay_ms: 1000,
    });
    request.set_timeout(BUDGET);
    let started = Instant::now();
    let status = front
        .clone()
        .relay(request)
        .await
        .expect_err("C sleeps past the budget");
    (status, started.elapsed())
}

/// A→B→C with a 300 ms budget while C sleeps 1 s: the caller's call ends at 300 ms ± 50 ms
/// and C sees the cancellation. The status code is checked by
/// `s05c_deadline_chain_answers_deadline_exceeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05_deadline_chain_cancels_the_last_hop() {
    let _serial = exclusive().await;
    let Chain {
        cluster,
        front,
        back,
    } = chain().await;
    let c = cluster.control(back).await;
    let (status, elapsed) = relay_with_budget(&front).await;
    let sent = Instant::now() - elapsed;
    eprintln!(
        "s05: {:?} after {elapsed:?}: {}",
        status.code(),
        status.message()
    );
    // Today two timers race at 300 ms: the client's (DEADLINE_EXCEEDED) and B's server-side
    // grpc-timeout, which tonic answers with CANCELLED "Timeout expired".
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status}"
    );
    assert!(
        elapsed >= BUDGET - Duration::from_millis(50)
            && elapsed <= BUDGET + Duration::from_millis(50),
        "the call ended after {elapsed:?}, expected {BUDGET:?} ± 50 ms"
    );
    // C's Work would complete 1 s after the call; a cancellation must come before.
    loop {
        let stats = c.stats().await;
        if stats.cancelled == 1 {
            eprintln!(
                "s05: C saw the cancellation {:?} after the call",
                sent.elapsed()
            );
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_millis(1000),
            "C did not see the cancellation before its sleep ended: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The caller of the chain gets DEADLINE_EXCEEDED, every time: also when B's server-side
/// deadline fires first (tonic answers that with CANCELLED "Timeout expired", which won the
/// race once in about 10 runs on the 2-core machine). 20 tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05c_deadline_chain_answers_deadline_exceeded() {
    let _serial = exclusive().await;
    // Keep the cluster: dropping it stops the servers.
    let Chain {
        front,
        cluster: _cluster,
        ..
    } = chain().await;
    for attempt in 0..20 {
        let (status, elapsed) = relay_with_budget(&front).await;
        assert_eq!(
            status.code(),
            Code::DeadlineExceeded,
            "try {attempt}, after {elapsed:?}: {status}"
        );
    }
}

/// The remaining budget travels with the call: C receives a grpc-timeout of at most the
/// 300 ms the caller set, with no code in B's handler passing it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s05b_deadline_chain_passes_on_the_remaining_budget() {
    let _serial = exclusive().await;
    let Chain {
        cluster,
        front,
        back,
    } = chain().await;
    let (status, _) = relay_with_budget(&front).await;
    assert_eq!(status.code(), Code::DeadlineExceeded);
    let received = cluster
        .control(back)
        .await
        .stats()
        .await
        .last_work_timeout_ms;
    assert!(
        received > 0 && received <= BUDGET.as_millis() as u64,
        "C received a grpc-timeout of {received} ms, expected at most {BUDGET:?}"
    );
}

// === 6. outlier ejection ===

/// One node answering UNAVAILABLE fast: ejected after at most 7 failures, under 1% of
/// traffic while ejected, back in rotation after it heals: it answers again once the
/// ejection running when it healed ends, and then takes its share back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s06_failing_node_is_ejected_and_returns() {
    let _serial = exclusive().await;
    let cluster = Cluster::start(TESTSRV, 3).await;
    let client = cluster.client();
    let probe = probe(&client, "probe");
    let all = [0, 1, 2];
    let nodes = ids(&cluster, &all);
    warm_up(&probe, &refs(&nodes)).await;
    let bad = cluster.control(0).await;

    let start = Instant::now();
    // Long enough to see the node return after the longest ejection it can be in when it
    // heals (below), and a few seconds of its share after that.
    let load = OpenLoop::new(300, Duration::from_secs(25)).spawn({
        let probe = probe.clone();
        move |_| work_call(&probe)
    });
    until(start + Duration::from_secs(2)).await;
    let switching = Instant::now();
    bad.fail_unavailable(true).await;
    let failing = Instant::now();
    // Ejection is due within the first failures; measure the ejected period after 1 s.
    until(failing + Duration::from_secs(1)).await;
    let first = bad.stats().await;
    let calls_from = total_calls(&cluster, &all).await;
    until(failing + Duration::from_secs(6)).await;
    let bad_calls = bad.stats().await.calls - first.calls;
    let all_calls = total_calls(&cluster, &all).await - calls_from;
    bad.fail_unavailable(false).await;
    let healed = Instant::now();
    let report = load.await.unwrap();
    eprintln!("s06: {}", report.summary());

    // Ejected at the 5th failure in a row (`OutlierConfig`), plus the probe when the first
    // ejection ends, plus one: 7 on a quiet machine. Calls already sent when the 5th
    // failure arrives fail too (nothing can recall them), and a busy machine sends many at
    // once: the load generator catches up on late ticks in bursts (lags of 130-260 ms, 40-80
    // calls at once, were seen beside two busy loops; 13 to 39 failures followed). Every
    // failure past the 5th was sent before the client saw the 5th, so was in flight with it:
    // allow as many as the client had calls in flight at most around the switch.
    let in_flight = report.max_in_flight_between(switching, failing + Duration::from_secs(1));
    assert!(
        first.unavailable_sent <= 7 + in_flight as u64,
        "{} failures before the node was ejected, with at most {in_flight} calls in flight",
        first.unavailable_sent
    );
    assert!(
        (bad_calls as f64) < 0.01 * all_calls as f64,
        "the ejected node got {bad_calls} of {all_calls} calls"
    );
    assert_eq!(report.failed(), 0, "{}", report.sample_failures(5));
    let baseline = share(&report.share_per_node_between(start, failing), &nodes[0]);
    // The node fails for 6 s, ejected for 1 s, then twice as long after each failed probe,
    // each ejection × a jitter in [0.8, 1.2) (`OutlierConfig`, `Outlier::JITTER`). Three
    // short ones (0.8 + 1.6 + 3.2 = 5.6 s) end before it heals, and the probe that follows
    // fails and ejects it for 8 s × jitter: so it can heal at the start of an ejection of
    // up to 9.6 s (a fifth ejection would need 12 s of failures). The test used to expect it
    // back 5 s after healing, and failed whenever the jitter (or a loaded machine delaying
    // the heal) made that fourth ejection happen.
    const LONGEST_EJECTION_AT_HEAL: Duration = Duration::from_millis(9600);
    let returned = report
        .answered_by_after(&nodes[0], healed)
        .first()
        .map(|r| r.start)
        .unwrap_or_else(|| panic!("the healed node answered nothing after it healed"));
    // A second of slack: the probe is the first call after the ejection ends, which a busy
    // machine may start late.
    assert!(
        returned.duration_since(healed) <= LONGEST_EJECTION_AT_HEAL + Duration::from_secs(1),
        "the healed node answered again only {:?} after it healed",
        returned.duration_since(healed)
    );
    eprintln!(
        "s06: {} failures before the ejection (at most {in_flight} calls in flight); back {:?} \
         after healing",
        first.unavailable_sent,
        returned.duration_since(healed)
    );
    let end = report.records.last().unwrap().start;
    let after = share(
        &report.share_per_node_between(returned + Duration::from_secs(3), end),
        &nodes[0],
    );
    // Back in rotation: peak-EWMA brings a healed node's share back gradually (its cost
    // decays), so on a loaded machine the window after its return can hold less than half
    // its old share (0.173 against 0.406 was seen); an ejected node would have ~0.
    assert!(
        after >= 0.35 * baseline,
        "healed node's share {after:.3} vs baseline {baseline:.3}, returned {:?} after healing",
        returned.duration_since(healed)
    );
}

// === 7. slow node ===

/// One node with 50 ms extra latency: its share of traffic falls under 10% within 5 s
/// with the default strategy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s07_slow_node_loses_traffic_with_the_default_selector() {
    let _serial = exclusive().await;
    let cluster = Cluster::start(TESTSRV, 3).await;
    let client = cluster.client();
    let probe = probe(&client, "probe");
    let nodes = ids(&cluster, &[0, 1, 2]);
    warm_up(&probe, &refs(&nodes)).await;
    let slow = cluster.control(0).await;

    let start = Instant::now();
    let load = OpenLoop::new(200, Duration::from_secs(9)).spawn({
        let probe = probe.clone();
        move |_| work_call(&probe)
    });
    until(start + Duration::from_secs(2)).await;
    slow.extra_latency(Duration::from_millis(50)).await;
    let slowed = Instant::now();
    let report = load.await.unwrap();
    eprintln!("s07: {}", report.summary());

    let baseline = share(&report.share_per_node_between(start, slowed), &nodes[0]);
    let end = report.records.last().unwrap().start;
    let after = share(
        &report.share_per_node_between(slowed + Duration::from_secs(5), end),
        &nodes[0],
    );
    // Node 0 was in rotation before it slowed. Not "a third": peak-EWMA rightly moves
    // traffic off a node for a while after one slow answer, which a loaded CI machine
    // produces now and then (a baseline of 0.152 over these 2 s was seen).
    assert!(baseline > 0.12, "baseline share {baseline:.3}");
    assert!(
        after < 0.10,
        "slow node's share {after:.3} 5 s after it slowed (baseline {baseline:.3})"
    );
}

// === 8. NOT_SERVING ===

/// A node switched to NOT_SERVING: out of the picks within 200 ms of the update reaching
/// the client's process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s08_not_serving_node_leaves_the_picks() {
    let _serial = exclusive().await;
    let cluster = Cluster::start(TESTSRV, 3).await;
    let client = cluster.client();
    let probe = probe(&client, "probe");
    let nodes = ids(&cluster, &[0, 1, 2]);
    warm_up(&probe, &refs(&nodes)).await;
    let node = cluster.control(0).await;

    // The test's own health watch on node 0, opened before the switch: when NOT_SERVING
    // reaches this process, the client's watch (same process, same runtime) gets it too.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.node(0).addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    assert_eq!(health.message().await.unwrap().unwrap().status, serving);

    let start = Instant::now();
    let load = OpenLoop::new(500, Duration::from_secs(4)).spawn({
        let probe = probe.clone();
        move |_| work_call(&probe)
    });
    until(start + Duration::from_secs(1)).await;
    node.serving(false).await;
    let switched = Instant::now();
    // The node itself reports NOT_SERVING (a check of the test server, not the client).
    let update = tokio::time::timeout(Duration::from_secs(10), health.message())
        .await
        .expect("NOT_SERVING pushed to watchers")
        .unwrap()
        .unwrap();
    assert_eq!(update.status, not_serving);
    let seen = Instant::now();
    let report = load.await.unwrap();
    eprintln!(
        "s08: {}; NOT_SERVING seen by this process {:?} after the switch",
        report.summary(),
        seen.duration_since(switched)
    );

    let baseline = share(&report.share_per_node_between(start, switched), &nodes[0]);
    // In the picks before the switch (1 % of ~500 calls: a handful), so that calls after it
    // would show. Not "a third", nor even 5 %: with calls this short and rarely
    // overlapping, peak-EWMA with two random choices sends little to a node that answers a
    // hair slower than the other two (here the node whose control stream the test holds);
    // 3.0 % was seen on a loaded run, while such a node still takes ~15 calls a second.
    assert!(baseline > 0.01, "baseline share {baseline:.3}");
    // Out of the picks as soon as the update arrives ("at once": client/node/health.rs).
    // Counted from when it reached this process, not from the switch: on a busy machine the
    // push itself (control RPC, the server's health reporter, the stream) can take longer
    // than the 200 ms the test once counted from the switch, which is no fault of the
    // client. 200 ms then covers the client's own watch task running after the test's.
    let late = report.answered_by_after(&nodes[0], seen + Duration::from_millis(200));
    assert!(
        late.is_empty(),
        "{} calls went to the NOT_SERVING node more than 200 ms after this process saw the \
         update ({:?} after the switch)",
        late.len(),
        seen.duration_since(switched)
    );
    assert_eq!(report.failed(), 0, "{}", report.sample_failures(5));
}

// === 9. rolling restart ===

/// Rolling restart under load (SIGTERM each node in turn, start it again): 0 failed calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s09_rolling_restart_under_load_fails_no_call() {
    let _serial = exclusive().await;
    let mut cluster = Cluster::start(TESTSRV, 3).await;
    let client = cluster.client();
    let probe = probe(&client, "probe");
    warm_up(&probe, &refs(&ids(&cluster, &[0, 1, 2]))).await;

    let start = Instant::now();
    let load = OpenLoop::new(300, Duration::from_secs(10)).spawn({
        let probe = probe.clone();
        move |_| work_call(&probe)
    });
    let mut restarted = Vec::new();
    for i in 0..3 {
        until(start + Duration::from_secs(1 + 2 * i as u64)).await;
        let ready = cluster.restart(i).await;
        // The client has the new node before the next one goes down.
        cluster.wait_registered("probe", 3).await;
        warm_up(&probe, &[ready.node.as_str()]).await;
        restarted.push(ready.node);
    }
    let report = load.await.unwrap();
    eprintln!("s09: {}", report.summary());

    assert_eq!(
        report.failed(),
        0,
        "{}\n{}",
        report.summary(),
        report.sample_failures(10)
    );
    // The load ended on the restarted nodes only.
    let end = report.records.last().unwrap().start;
    let shares = report.share_per_node_between(end - Duration::from_secs(1), end);
    for node in shares.keys() {
        assert!(
            restarted.contains(node),
            "{node} answered after the restarts: {shares:?}"
        );
    }
}

// === 10. consistent hashing ===

/// Sets the consistent-hash key of a call.
fn keyed(key: &str) -> Request<pb::WorkRequest> {
    let mut request = work(0);
    request
        .extensions_mut()
        .insert(micro::client::CallOptions::new().key(key));
    request
}

/// Which node answers each key.
async fn placement(probe: &Probe, keys: &[String]) -> HashMap<String, String> {
    let mut placement = HashMap::new();
    for key in keys {
        let node = outcome(probe.clone().work(keyed(key)).await)
            .unwrap_or_else(|failure| panic!("key {key}: {failure:?}"));
        placement.insert(key.clone(), node);
    }
    placement
}

/// Consistent hashing: a key always lands on the same node; removing one of N nodes moves
/// about 1/N of the keys (and only the keys of the removed node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_consistent_hashing_keeps_keys_and_moves_one_nth() {
    const N: usize = 4;
    let _serial = exclusive().await;
    let mut cluster = Cluster::start(TESTSRV, N).await;
    let client = cluster
        .client_builder()
        .selector(micro::selector::ConsistentHash::default())
        .build()
        .unwrap();
    let probe = probe(&client, "probe");
    let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();

    let first = placement(&probe, &keys).await;
    let again = placement(&probe, &keys).await;
    assert_eq!(first, again, "a key always lands on the same node");
    let used: HashSet<&String> = first.values().collect();
    assert_eq!(used.len(), N, "keys spread over every node");

    let removed = cluster.terminate(N - 1).await;
    cluster.wait_registered("probe", N - 1).await;
    // The client's registry view follows the registry's: wait until no key lands on the
    // removed node (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let after = placement(&probe, &keys).await;
        if !after.values().any(|node| *node == removed.node) {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "keys still land on the removed node"
        );
    };
    let moved: Vec<&String> = keys.iter().filter(|k| first[*k] != after[*k]).collect();
    let share = moved.len() as f64 / keys.len() as f64;
    eprintln!("s10: removing 1 of {N} nodes moved {share:.3} of the keys");
    assert!(
        moved.iter().all(|k| first[*k] == removed.node),
        "only keys of the removed node move"
    );
    let expected = 1.0 / N as f64;
    assert!(
        (share - expected).abs() <= 0.5 * expected,
        "moved {share:.3} of the keys, expected about {expected:.3}"
    );
}

// === 11. a hung node (SIGSTOP) ===

/// 3 nodes at 200 req/s of the idempotent Work; node 0 SIGSTOPped for 15 s (the kernel still
/// accepts its connections, nothing answers), then SIGCONTinued. Issue 14's acceptance: no
/// call fails, none waits 2 s, throughput during the hang ≥ 90 % of offered, p99 during the
/// hang ≤ 3 × the baseline p99 plus the hedge delay, and the node returns. The same at
/// 2,000 req/s runs in release builds: `cargo bench -p micro-testkit --bench hung_node`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s11_hung_node_fails_no_idempotent_call() {
    let _serial = exclusive().await;
    let run = scenario::hung_node(TESTSRV.as_ref(), 200, Method::Idempotent).await;
    eprintln!("s11: {}", run.summary());

    assert_eq!(run.report.failed(), 0, "{}", run.report.sample_failures(5));
    let slow: Vec<String> = run
        .report
        .records
        .iter()
        .filter(|r| r.latency() >= Duration::from_secs(2))
        .map(|r| {
            format!(
                "#{} sent {:?} after the stop, took {:?}",
                r.seq,
                r.start.saturating_duration_since(run.stopped),
                r.latency()
            )
        })
        .collect();
    assert!(slow.is_empty(), "calls waited 2 s or more: {slow:?}");
    assert!(run.hang_throughput() >= 0.9, "{}", run.summary());
    // The hedge delay is the method's observed p99 (at least 1 ms): the baseline p99
    // stands for it.
    let baseline = run.baseline_quantile(0.99);
    let hedge_delay = baseline.max(Duration::from_millis(1));
    assert!(
        run.hang_quantile(0.99) <= 3 * baseline + hedge_delay,
        "{}",
        run.summary()
    );
    assert!(run.returned(), "node 0 answered nothing after SIGCONT");
}

/// The same hang with the non-idempotent Count: only calls in flight on node 0 as it stopped
/// (or sent to it before the client could tell it from a slow node) may fail, none runs
/// twice, and the failed ones end by the keepalive PINGs, long before their deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s12_hung_node_never_runs_a_non_idempotent_call_twice() {
    let _serial = exclusive().await;
    let run = scenario::hung_node(TESTSRV.as_ref(), 200, Method::NonIdempotent).await;
    eprintln!("s12: {}", run.summary());

    assert_eq!(run.duplicates, 0, "ids executed more than once");
    // The client tells a hung node from a slow one once its calls are older than the
    // others' latency: 4 × the baseline p99 (at least 100 ms, far less than the hang).
    let window = run.stopped + (4 * run.baseline_quantile(0.99)).max(Duration::from_millis(100));
    for failure in run.report.failures() {
        assert!(
            failure.start < window,
            "a call sent {:?} after the stop failed: {:?}",
            failure.start.saturating_duration_since(run.stopped),
            failure.outcome
        );
        assert!(
            failure.latency() < Duration::from_secs(10),
            "a failed call took {:?}: the PINGs did not end it",
            failure.latency()
        );
    }
    assert!(run.returned(), "node 0 answered nothing after SIGCONT");
}

/// A node behind a proxy that delays every answer by 200 ms loses its traffic within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s13_node_behind_a_200ms_delaying_proxy_loses_its_traffic() {
    let _serial = exclusive().await;
    let cluster = Cluster::start(TESTSRV, 3).await;
    let mut proxy = micro_testkit::process::Proc::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_delay-proxy")),
        &["--target", &cluster.node(0).addr, "--delay", "200ms"],
        &[],
    );
    let proxied = proxy.ready().await.addr;
    let addresses = [
        proxied,
        cluster.node(1).addr.clone(),
        cluster.node(2).addr.clone(),
    ];
    // Static nodes, so node 0 is reached only through the proxy; Work is not declared
    // idempotent here, so nothing is hedged: the selector alone moves the traffic.
    let client = micro::Client::builder()
        .static_nodes("probe", addresses)
        .build_static();
    let probe = probe(&client, "probe");

    let start = Instant::now();
    let report = OpenLoop::new(200, Duration::from_secs(8))
        .run({
            let probe = probe.clone();
            move |_| work_call(&probe)
        })
        .await;
    eprintln!("s13: {}", report.summary());
    assert_eq!(report.failed(), 0, "{}", report.sample_failures(5));
    let end = report.records.last().unwrap().start;
    let share = share(
        &report.share_per_node_between(start + Duration::from_secs(2), end),
        "probe-0",
    );
    assert!(
        share < 0.05,
        "the delayed node still got {share:.3} of the calls after 2 s"
    );
}
