//! Per-node load: calls in flight and a peak-EWMA latency estimate.
//!
//! The estimate follows Finagle's and linkerd's peak EWMA: a sample above the estimate raises
//! it at once, though at most to double (so a node that turns slow is avoided within a few
//! answers, and one pause on a busy host does not starve a node), a sample below it pulls it down
//! with weight `1 - exp(-elapsed / decay)` (so a node that recovers wins traffic back over
//! about `decay`). Reads decay the estimate towards zero by the same rule, so a node that was
//! slow and then got no traffic is tried again instead of being shunned forever.
//!
//! A node that stops answering gives no samples, so the estimate alone would call it fast
//! (and decay towards zero). The cost therefore also weighs the *age* of the node's
//! outstanding calls: the mean time its timed calls (those of [`Load::guard`]) have been
//! waiting. A healthy node's outstanding calls are younger than its latency, so the age
//! changes nothing there; a hung node's grows with the wait of its oldest call, and after a
//! few times the usual latency the node loses every comparison.

use std::{
    fmt,
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::lock::lock;

// `estimate_ns` holds no sample until the first `end(Some(_))`.
const NO_SAMPLE: u64 = u64::MAX;

/// A node's load, shared by every call to it and read by load-aware selectors.
///
/// Calls bracket each attempt with [`begin`](Load::begin) and [`end`](Load::end), or hold
/// the guard of [`guard`](Load::guard). Reads are lock-free; a latency sample takes a short
/// lock.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use micro_core::node::Load;
///
/// let load = Load::new();
/// load.begin();
/// assert_eq!(load.in_flight(), 1);
/// load.end(Some(Duration::from_millis(5)));
/// assert_eq!(load.in_flight(), 0);
/// assert_eq!(load.latency(), Some(Duration::from_millis(5)));
/// ```
pub struct Load {
    in_flight: AtomicUsize,
    // Calls counted by a guard, and the sum of their start times (nanoseconds since
    // `epoch`): their mean age is `now - sum / timed`. The two are separate atomics, so a
    // read racing a call's start or end can misjudge one pick; it never drifts.
    timed: AtomicUsize,
    start_sum_ns: AtomicU64,
    // Mirrors of `ewma` for lock-free reads: nanoseconds, and nanoseconds since `epoch`.
    estimate_ns: AtomicU64,
    updated_ns: AtomicU64,
    ewma: Mutex<Ewma>,
    epoch: Instant,
    default_rtt_ns: f64,
    decay_ns: f64,
}

/// Counts one call in flight on a [`Load`] until dropped or [`observe`](LoadGuard::observe)d.
// Until `balance` re-exports it, it is reachable only as the return type of `Load::guard`.
#[must_use = "the call counts as in flight only while the guard lives"]
#[derive(Debug)]
pub struct LoadGuard<'a> {
    load: &'a Load,
    started: Instant,
    started_ns: u64,
}

#[derive(Debug)]
struct Ewma {
    estimate_ns: f64,
    updated: Instant,
    sampled: bool,
}

// === impl Load ===

impl Load {
    /// The latency assumed for a node that has answered nothing yet: 30 ms, as in linkerd.
    ///
    /// Low enough that a fresh node is tried soon, high enough that a fast warm node still
    /// wins over it; a fresh node that is then flooded grows expensive through its in-flight
    /// count.
    pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

    /// How long a latency sample takes to fade: the decay constant `tau`, 1 s.
    ///
    /// Finagle and linkerd use 10 s. With a peak estimate, one slow answer (a pause on a
    /// busy host) makes a node lose every comparison until its estimate decays, and with
    /// 10 s that starves healthy nodes for many seconds; 1 s still keeps a steadily slow node
    /// at a few calls per second.
    pub const DEFAULT_DECAY: Duration = Duration::from_millis(300);

    /// No calls, no latency yet; [`DEFAULT_RTT`](Self::DEFAULT_RTT) and
    /// [`DEFAULT_DECAY`](Self::DEFAULT_DECAY).
    pub fn new() -> Self {
        Self::with_settings(Self::DEFAULT_RTT, Self::DEFAULT_DECAY)
    }

    /// No calls, no latency yet; `default_rtt` stands in for the latency until the first
    /// sample, and samples fade over `decay` (clamped to at least 1 ns).
    pub fn with_settings(default_rtt: Duration, decay: Duration) -> Self {
        let epoch = Instant::now();
        Self {
            in_flight: AtomicUsize::new(0),
            timed: AtomicUsize::new(0),
            start_sum_ns: AtomicU64::new(0),
            estimate_ns: AtomicU64::new(NO_SAMPLE),
            updated_ns: AtomicU64::new(0),
            ewma: Mutex::new(Ewma {
                estimate_ns: 0.0,
                updated: epoch,
                sampled: false,
            }),
            epoch,
            default_rtt_ns: nanos(default_rtt),
            decay_ns: nanos(decay).max(1.0),
        }
    }

    /// Counts a call as in flight; pair with [`end`](Self::end).
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends a call counted by [`begin`](Self::begin). `rtt` is its latency when the node
    /// answered (successfully or with a server status); `None` when it never did.
    pub fn end(&self, rtt: Option<Duration>) {
        // Saturating, so an unpaired `end` cannot wrap the count around.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if let Some(rtt) = rtt {
            self.observe(Instant::now(), rtt);
        }
    }

    /// [`guard`](Self::guard) for a call that started at `now`, for callers that already
    /// read the clock.
    pub fn guard_at(&self, now: Instant) -> LoadGuard<'_> {
        self.begin();
        let started_ns = self.since_epoch(now);
        // The sum first, the count second (and the reverse at the end): a racing read then
        // sees the mean start too late, never too early, so it can only underrate an age.
        self.start_sum_ns.fetch_add(started_ns, Ordering::Relaxed);
        self.timed.fetch_add(1, Ordering::Relaxed);
        LoadGuard {
            load: self,
            started: now,
            started_ns,
        }
    }

    /// Counts a call as in flight until the guard is dropped; its wait counts towards
    /// [`age`](Self::age_at) until then.
    pub fn guard(&self) -> LoadGuard<'_> {
        self.guard_at(Instant::now())
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The peak-EWMA latency as of the last sample; `None` before the first one.
    pub fn latency(&self) -> Option<Duration> {
        match self.estimate_ns.load(Ordering::Relaxed) {
            NO_SAMPLE => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// The mean time the calls counted by a [`guard`](Self::guard) have been outstanding
    /// at `now`; zero when there are none.
    ///
    /// It grows with the wait of the oldest outstanding call: a node that stopped answering
    /// (a hung process, a silent connection) ages here while its latency estimate, fed only
    /// by answers, stands still.
    pub fn age_at(&self, now: Instant) -> Duration {
        let timed = self.timed.load(Ordering::Relaxed) as u64;
        if timed == 0 {
            return Duration::ZERO;
        }
        let mean_start = self.start_sum_ns.load(Ordering::Relaxed) / timed;
        Duration::from_nanos(self.since_epoch(now).saturating_sub(mean_start))
    }

    /// The cost of sending one more call here: the latency estimate in nanoseconds, decayed
    /// to now, or the [age](Self::age_at) of the outstanding calls when that is longer,
    /// times (calls in flight + 1). Lower is better. A node without samples costs
    /// nothing while no call to it is in flight, so every new node gets a first call and a
    /// measurement; then the default RTT ([`Load::DEFAULT_RTT`] unless set) per call until
    /// its first answer.
    pub fn cost(&self) -> f64 {
        self.cost_at(Instant::now())
    }

    /// [`cost`](Self::cost) as of `now`, for selectors that compare several nodes at one
    /// instant.
    pub fn cost_at(&self, now: Instant) -> f64 {
        let in_flight = self.in_flight();
        let estimate = match self.estimate_ns.load(Ordering::Relaxed) {
            NO_SAMPLE if in_flight == 0 => return 0.0,
            NO_SAMPLE => self.default_rtt_ns,
            ns => {
                let updated = self.updated_ns.load(Ordering::Relaxed) as f64;
                let elapsed = (nanos(now.saturating_duration_since(self.epoch)) - updated).max(0.0);
                ns as f64 * (-elapsed / self.decay_ns).exp()
            }
        };
        let estimate = match in_flight {
            0 => estimate,
            _ => estimate.max(nanos(self.age_at(now))),
        };
        estimate * (in_flight as f64 + 1.0)
    }

    fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Ends the timed part of a guard's call: its start no longer counts towards the age.
    fn untime(&self, started_ns: u64) {
        let _ = self
            .timed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.start_sum_ns.fetch_sub(started_ns, Ordering::Relaxed);
    }

    /// A censored sample: the latency was at least `rtt`. Raises the estimate like a higher
    /// sample does; never lowers it.
    fn observe_at_least(&self, now: Instant, rtt: Duration) {
        let estimate = self.estimate_ns.load(Ordering::Relaxed);
        if estimate == NO_SAMPLE || nanos(rtt) > estimate as f64 {
            self.observe(now, rtt);
        }
    }

    fn observe(&self, now: Instant, rtt: Duration) {
        let rtt = nanos(rtt);
        let mut ewma = lock(&self.ewma);
        if !ewma.sampled {
            ewma.estimate_ns = rtt;
        } else if rtt > ewma.estimate_ns {
            // The peak, but at most double per answer: one pause on a busy host must not
            // starve a node, while one that stays slow reaches its latency in a few answers.
            ewma.estimate_ns = rtt.min(ewma.estimate_ns * 2.0);
        } else {
            let elapsed = nanos(now.saturating_duration_since(ewma.updated));
            let weight = (-elapsed / self.decay_ns).exp();
            ewma.estimate_ns = ewma.estimate_ns * weight + rtt * (1.0 - weight);
        }
        ewma.sampled = true;
        ewma.updated = ewma.updated.max(now);
        // Stored under the lock, so the mirrors never go back in time. `NO_SAMPLE` is out of
        // reach: it is 584 years.
        let estimate = (ewma.estimate_ns as u64).min(NO_SAMPLE - 1);
        let updated = ewma
            .updated
            .saturating_duration_since(self.epoch)
            .as_nanos();
        self.estimate_ns.store(estimate, Ordering::Relaxed);
        self.updated_ns.store(
            u64::try_from(updated).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Load")
            .field("in_flight", &self.in_flight())
            .field("latency", &self.latency())
            .finish()
    }
}

// === impl LoadGuard ===

impl LoadGuard<'_> {
    /// Ends the call, recording the time since the guard was taken as its latency. Use this
    /// when the node answered; drop the guard when it never did.
    pub fn observe(self) {
        let rtt = self.started.elapsed();
        self.finish(Some(rtt));
    }

    /// Ends the call as [`observe`](Self::observe) does, with the node's answer at `now`:
    /// one clock read for the latency and the estimate's age.
    pub fn answered_at(self, now: Instant) {
        let rtt = now.saturating_duration_since(self.started);
        self.load.untime(self.started_ns);
        // Saturating, so an unpaired `end` cannot wrap the count around.
        let _ = self
            .load
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.load.observe(now, rtt);
        std::mem::forget(self);
    }

    /// Ends the call with an explicit latency, or none.
    pub fn finish(self, rtt: Option<Duration>) {
        self.load.untime(self.started_ns);
        self.load.end(rtt);
        std::mem::forget(self);
    }
}

impl Drop for LoadGuard<'_> {
    /// A call dropped before its answer (cancelled: a hedge won, the deadline passed, the
    /// caller left) waited at least this long: that is a lower bound of the node's latency.
    /// Without it a node whose calls are always cancelled would never be measured, and
    /// would look untried (free) forever.
    fn drop(&mut self) {
        self.load.untime(self.started_ns);
        let now = Instant::now();
        self.load.end(None);
        self.load
            .observe_at_least(now, now.saturating_duration_since(self.started));
    }
}

fn nanos(duration: Duration) -> f64 {
    duration.as_nanos() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(load: &Load) -> f64 {
        load.latency().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    }

    #[tokio::test(start_paused = true)]
    async fn answered_at_measures_from_the_given_start() {
        let load = Load::new();
        let start = Instant::now();
        let guard = load.guard_at(start);
        assert_eq!(load.in_flight(), 1);
        guard.answered_at(start + 7 * MS);
        assert_eq!(load.in_flight(), 0);
        assert_eq!(load.latency(), Some(7 * MS));
    }

    #[test]
    fn counts_in_flight() {
        let load = Load::new();
        load.begin();
        load.begin();
        assert_eq!(load.in_flight(), 2);
        load.end(None);
        load.end(None);
        load.end(None); // unpaired: stays at zero
        assert_eq!(load.in_flight(), 0);
        assert_eq!(load.latency(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn guard_ends_on_drop_with_its_wait_as_a_lower_bound() {
        let load = Load::new();
        {
            let _guard = load.guard();
            assert_eq!(load.in_flight(), 1);
            tokio::time::advance(5 * MS).await;
        }
        assert_eq!(load.in_flight(), 0);
        assert_eq!(load.latency(), Some(5 * MS), "a cancelled call waited 5 ms");
        load.guard().finish(Some(7 * MS));
        assert_eq!(load.in_flight(), 0);
        assert_eq!(load.latency(), Some(7 * MS));
        // A shorter cancelled wait says nothing new: the estimate stays.
        drop(load.guard());
        assert_eq!(load.latency(), Some(7 * MS));
        load.guard().finish(None);
        assert_eq!(load.latency(), Some(7 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn peak_then_decay() {
        let load = Load::new();
        load.end(Some(10 * MS));
        assert_eq!(load.latency(), Some(10 * MS));

        // A higher sample is taken at once, at most doubling the estimate per sample.
        load.end(Some(100 * MS));
        assert_eq!(load.latency(), Some(20 * MS));
        for _ in 0..3 {
            load.end(Some(100 * MS));
        }
        assert_eq!(load.latency(), Some(100 * MS));

        // A lower one after one tau: weight e^-1 on the old estimate.
        tokio::time::advance(Load::DEFAULT_DECAY).await;
        load.end(Some(10 * MS));
        let expected = 100.0 * (-1f64).exp() + 10.0 * (1.0 - (-1f64).exp());
        assert!(
            (ms(&load) - expected).abs() < 0.01,
            "{} vs {expected}",
            ms(&load)
        );

        // A lower one with no time elapsed changes nothing.
        let before = ms(&load);
        load.end(Some(MS));
        assert!((ms(&load) - before).abs() < 0.01);
    }

    #[tokio::test(start_paused = true)]
    async fn guard_observes_elapsed() {
        let load = Load::new();
        let guard = load.guard();
        tokio::time::advance(20 * MS).await;
        guard.observe();
        assert_eq!(load.latency(), Some(20 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn cost_is_latency_times_in_flight_plus_one() {
        let load = Load::new();
        assert_eq!(load.cost(), 0.0, "an untried node is tried first");
        load.begin();
        assert_eq!(load.cost(), 2.0 * nanos(Load::DEFAULT_RTT));
        load.end(Some(4 * MS));
        assert_eq!(load.cost(), nanos(4 * MS));
        load.begin();
        load.begin();
        assert_eq!(load.cost(), 3.0 * nanos(4 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_cost_decays() {
        let load = Load::new();
        load.end(Some(100 * MS));
        tokio::time::advance(2 * Load::DEFAULT_DECAY).await;
        let expected = nanos(100 * MS) * (-2f64).exp();
        assert!((load.cost() - expected).abs() / expected < 1e-6);
        // The stored estimate only moves with samples.
        assert_eq!(load.latency(), Some(100 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_node_ages_until_it_loses_to_a_slower_one() {
        let (fast_then_hung, slow) = (Load::new(), Load::new());
        fast_then_hung.end(Some(MS));
        slow.end(Some(20 * MS));
        let slow_cost = || {
            let _call = slow.guard();
            slow.cost()
        };
        // Answers in 1 ms: cheaper than the 20 ms node even with three calls waiting.
        let hung: Vec<_> = (0..3).map(|_| fast_then_hung.guard()).collect();
        assert_eq!(fast_then_hung.age_at(Instant::now()), Duration::ZERO);
        assert!(fast_then_hung.cost() < slow_cost());
        // Nothing answers: the calls' age overtakes the (decaying) estimate.
        tokio::time::advance(40 * MS).await;
        assert_eq!(fast_then_hung.age_at(Instant::now()), 40 * MS);
        assert!(fast_then_hung.cost() >= nanos(40 * MS) * 4.0);
        assert!(fast_then_hung.cost() > slow_cost());
        // A younger call lowers the mean; ended calls leave it.
        let young = fast_then_hung.guard();
        assert_eq!(fast_then_hung.age_at(Instant::now()), 30 * MS);
        drop(hung);
        assert_eq!(fast_then_hung.age_at(Instant::now()), Duration::ZERO);
        young.answered_at(Instant::now());
        assert_eq!(fast_then_hung.in_flight(), 0);
        assert_eq!(fast_then_hung.age_at(Instant::now()), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn age_does_not_change_a_healthy_nodes_cost() {
        let load = Load::new();
        load.end(Some(10 * MS));
        let call = load.guard();
        tokio::time::advance(5 * MS).await;
        // The age (5 ms) is below the estimate (10 ms, decayed a little): the estimate counts.
        let estimate = nanos(10 * MS) * (-(5.0 / 300.0f64)).exp();
        assert!((load.cost() - 2.0 * estimate).abs() < 1.0);
        call.answered_at(Instant::now());
    }

    #[test]
    fn debug_shows_in_flight_and_latency() {
        let load = Load::new();
        load.begin();
        assert_eq!(format!("{load:?}"), "Load { in_flight: 1, latency: None }");
    }
}
