//! Outlier detection: ejecting nodes that keep failing, then probing them.
//!
//! Envoy-style consecutive-failure ejection. A node that fails
//! [`consecutive_failures`](OutlierConfig::consecutive_failures) calls in a row is ejected for
//! a backoff; when the backoff ends it returns *on probation*: one success heals it (its
//! backoff starts over), one failure ejects it again for twice as long, up to
//! [`max_ejection`](OutlierConfig::max_ejection).
//!
//! [`Outlier`] is pure logic: every method that depends on time takes `now`, so the state
//! machine is tested without sleeping. The channel decides whether another ejection is allowed
//! ([`may_eject`]) and falls back to all nodes when none is eligible (panic mode).

use std::{
    fmt,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::lock::lock;

/// Outlier-detection settings.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use micro_core::node::OutlierConfig;
///
/// let config = OutlierConfig::default()
///     .consecutive_failures(3)
///     .max_ejection(Duration::from_secs(10));
/// assert_eq!(config.get_consecutive_failures(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    consecutive_failures: u32,
    base_ejection: Duration,
    max_ejection: Duration,
    max_ejected_percent: u8,
}

/// Why [`OutlierConfig::new`] refused its settings.
// Until `balance` re-exports it, it is reachable only through `OutlierConfig::new`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutlierConfigError {
    /// `consecutive_failures` was 0; a node needs at least one failure to be ejected.
    #[error("outlier detection: consecutive_failures must be at least 1, got 0")]
    ZeroFailures,
    /// `max_ejected_percent` was above 100.
    #[error("outlier detection: max_ejected_percent must be at most 100, got {0}")]
    PercentAbove100(u8),
    /// `base_ejection` was longer than `max_ejection`.
    #[error("outlier detection: base_ejection ({base:?}) must not exceed max_ejection ({max:?})")]
    BaseAboveMax {
        /// The base ejection given.
        base: Duration,
        /// The maximum ejection given.
        max: Duration,
    },
}

/// A node's outlier-detection state, shared by every call to the node.
pub struct Outlier {
    state: Mutex<State>,
    /// True while the state is the default (no failure in a row, no ejection): every call's
    /// success and eligibility check then skips the lock. Written only under the lock.
    healthy: AtomicBool,
}

impl Default for Outlier {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            healthy: AtomicBool::new(true),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    consecutive_failures: u32,
    // Ejections since the node was last healthy; sets the next backoff.
    ejections: u32,
    // The end of the current or last ejection, until a success heals the node. Past it, the
    // node is on probation.
    ejected_until: Option<Instant>,
}

// === impl OutlierConfig ===

impl OutlierConfig {
    /// Failures in a row that eject a node: 5.
    pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
    /// The first ejection of a node: 1 s.
    pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(1);
    /// The longest ejection: 30 s.
    pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(30);
    /// The largest share of a service's nodes ejected at once: 50 %.
    pub const DEFAULT_MAX_EJECTED_PERCENT: u8 = 50;

    /// Settings checked for consistency.
    ///
    /// # Errors
    ///
    /// When `consecutive_failures` is 0, `max_ejected_percent` is above 100, or
    /// `base_ejection` exceeds `max_ejection`.
    pub fn new(
        consecutive_failures: u32,
        base_ejection: Duration,
        max_ejection: Duration,
        max_ejected_percent: u8,
    ) -> Result<Self, OutlierConfigError> {
        if consecutive_failures == 0 {
            return Err(OutlierConfigError::ZeroFailures);
        }
        if max_ejected_percent > 100 {
            return Err(OutlierConfigError::PercentAbove100(max_ejected_percent));
        }
        if base_ejection > max_ejection {
            return Err(OutlierConfigError::BaseAboveMax {
                base: base_ejection,
                max: max_ejection,
            });
        }
        Ok(Self {
            consecutive_failures,
            base_ejection,
            max_ejection,
            max_ejected_percent,
        })
    }

    /// Failures in a row that eject a node; 0 counts as 1. Default is 5.
    #[must_use]
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures.max(1);
        self
    }

    /// The first ejection of a node; each further ejection before the node heals doubles
    /// it. Default is 1 s.
    #[must_use]
    pub fn base_ejection(mut self, ejection: Duration) -> Self {
        self.base_ejection = ejection;
        self
    }

    /// The longest ejection, jitter included. Default is 30 s.
    #[must_use]
    pub fn max_ejection(mut self, ejection: Duration) -> Self {
        self.max_ejection = ejection;
        self
    }

    /// The largest share of a service's nodes ejected at once, in percent; above 100 counts
    /// as 100. Default is 50.
    #[must_use]
    pub fn max_ejected_percent(mut self, percent: u8) -> Self {
        self.max_ejected_percent = percent.min(100);
        self
    }

    /// Failures in a row that eject a node.
    pub fn get_consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The first ejection of a node.
    pub fn get_base_ejection(&self) -> Duration {
        self.base_ejection
    }

    /// The longest ejection.
    pub fn get_max_ejection(&self) -> Duration {
        self.max_ejection
    }

    /// The largest share of nodes ejected at once, in percent.
    pub fn get_max_ejected_percent(&self) -> u8 {
        self.max_ejected_percent
    }

    /// Whether one more of `total` nodes may be ejected while `ejected` already are: only if
    /// the ejected share stays within
    /// [`max_ejected_percent`](Self::max_ejected_percent).
    ///
    /// So at the default 50 % a lone node is never ejected, and one of two may be; at 100 %
    /// any node may be. Ejecting every node is harmless anyway: with no eligible node the
    /// channel uses them all (panic mode).
    ///
    /// ```
    /// use micro_core::node::OutlierConfig;
    ///
    /// let config = OutlierConfig::default(); // 50 %
    /// assert!(!config.may_eject(0, 1));
    /// assert!(config.may_eject(0, 2));
    /// assert!(!config.may_eject(1, 2));
    /// assert!(config.may_eject(4, 10));
    /// assert!(!config.may_eject(5, 10));
    /// ```
    pub fn may_eject(&self, ejected: usize, total: usize) -> bool {
        let after = (ejected as u128 + 1) * 100;
        after <= total as u128 * u128::from(self.max_ejected_percent)
    }

    /// The ejection after `ejections` earlier ones: `base × 2^ejections`, times `jitter`,
    /// never above the maximum.
    fn backoff(&self, ejections: u32, jitter: f64) -> Duration {
        let doubled = self.base_ejection.as_secs_f64() * 2f64.powi(ejections.min(64) as i32);
        let max = self.max_ejection.as_secs_f64();
        Duration::try_from_secs_f64((doubled * jitter).min(max)).unwrap_or(self.max_ejection)
    }
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: Self::DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection: Self::DEFAULT_BASE_EJECTION,
            max_ejection: Self::DEFAULT_MAX_EJECTION,
            max_ejected_percent: Self::DEFAULT_MAX_EJECTED_PERCENT,
        }
    }
}

// === impl Outlier ===

impl Outlier {
    /// The random factor each ejection is multiplied by: uniform in `[0.8, 1.2)`, so nodes
    /// ejected together do not all return at the same instant.
    pub const JITTER: (f64, f64) = (0.8, 1.2);

    /// A healthy node.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a successful call: failures in a row start over, and a node on probation is
    /// healed (its next ejection starts again from the base). A success that ends while the
    /// node is still ejected (a call sent before the ejection) does not end the ejection.
    ///
    /// Returns whether the node's eligibility state changed, that is, whether it was healed.
    pub fn record_success(&self) -> bool {
        self.record_success_at(Instant::now())
    }

    /// [`record_success`](Self::record_success) as of `now`.
    pub fn record_success_at(&self, now: Instant) -> bool {
        if self.healthy.load(Ordering::Acquire) {
            return false;
        }
        let mut state = self.lock();
        state.consecutive_failures = 0;
        match state.ejected_until {
            Some(until) if now >= until => {
                state.ejections = 0;
                state.ejected_until = None;
                true
            }
            _ => false,
        }
    }

    /// Records a failed call. Ejects the node when `may_eject` and this failure reaches
    /// [`consecutive_failures`](OutlierConfig::consecutive_failures) in a row, or is the
    /// first failure on probation; returns the end of that ejection.
    ///
    /// A failure while the node is ejected (a call sent before the ejection) changes nothing.
    pub fn record_failure(
        &self,
        now: Instant,
        config: &OutlierConfig,
        may_eject: bool,
    ) -> Option<Instant> {
        let mut state = self.lock();
        if state.ejected_until.is_some_and(|until| now < until) {
            return None;
        }
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        let threshold = if state.ejected_until.is_some() {
            1
        } else {
            config.consecutive_failures.max(1)
        };
        (may_eject && state.consecutive_failures >= threshold)
            .then(|| eject(&mut state, now, config, jitter()))
    }

    /// Ejects the node now, whatever its count of failures (a connection failure, say), with
    /// the same backoff as [`record_failure`](Self::record_failure). A node already ejected
    /// stays ejected as it was. Returns the end of the ejection.
    pub fn eject_now(&self, now: Instant, config: &OutlierConfig) -> Instant {
        let mut state = self.lock();
        match state.ejected_until {
            Some(until) if now < until => until,
            _ => eject(&mut state, now, config, jitter()),
        }
    }

    /// Ejects the node until `now + duration`, without growing its backoff: for a node
    /// whose address refused a connection (no process listens there; a restarted process
    /// registers as a new node), which only the registry or panic mode brings back.
    pub fn eject_for(&self, now: Instant, duration: Duration) -> Instant {
        let mut state = self.lock();
        let until = now + duration;
        state.consecutive_failures = 0;
        state.ejected_until = Some(
            state
                .ejected_until
                .map_or(until, |current| current.max(until)),
        );
        until
    }

    /// Whether the node is ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        if self.healthy.load(Ordering::Acquire) {
            return false;
        }
        self.lock().ejected_until.is_some_and(|until| now < until)
    }

    /// Whether the node is back from an ejection at `now` but not yet healed by a success.
    pub fn is_on_probation(&self, now: Instant) -> bool {
        self.lock().ejected_until.is_some_and(|until| now >= until)
    }

    /// The end of the node's current or last ejection, until a success heals it; `None` for
    /// a healthy node.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.lock().ejected_until
    }

    /// Failures in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.lock().consecutive_failures
    }

    /// Ejections since the node was last healed.
    pub fn ejections(&self) -> u32 {
        self.lock().ejections
    }

    fn lock(&self) -> Guard<'_> {
        // The state is a few integers, consistent after every statement: a panic elsewhere
        // cannot leave it half-written.
        let state = lock(&self.state);
        Guard {
            state,
            healthy: &self.healthy,
        }
    }
}

impl fmt::Debug for Outlier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = *self.lock();
        f.debug_struct("Outlier")
            .field("consecutive_failures", &state.consecutive_failures)
            .field("ejections", &state.ejections)
            .field("ejected_until", &state.ejected_until)
            .finish()
    }
}

fn eject(state: &mut State, now: Instant, config: &OutlierConfig, jitter: f64) -> Instant {
    let until = now + config.backoff(state.ejections, jitter);
    state.ejections = state.ejections.saturating_add(1);
    state.consecutive_failures = 0;
    state.ejected_until = Some(until);
    until
}

fn jitter() -> f64 {
    let (low, high) = Outlier::JITTER;
    rand::random_range(low..high)
}

/// The locked state; on release, publishes whether it is back to the default.
struct Guard<'a> {
    state: std::sync::MutexGuard<'a, State>,
    healthy: &'a AtomicBool,
}

impl std::ops::Deref for Guard<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let healthy = self.state.consecutive_failures == 0 && self.state.ejected_until.is_none();
        self.healthy.store(healthy, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn eject_for_holds_without_growing_the_backoff() {
        let outlier = Outlier::new();
        let now = Instant::now();
        let until = outlier.eject_for(now, 30 * SEC);
        assert_eq!(until, now + 30 * SEC);
        assert!(outlier.is_ejected(now + 29 * SEC));
        assert!(!outlier.is_ejected(now + 30 * SEC));
        assert_eq!(
            outlier.ejections(),
            0,
            "a refused address is no outlier backoff step"
        );
        // A shorter ejection never cuts a longer one short.
        outlier.eject_for(now, SEC);
        assert!(outlier.is_ejected(now + 29 * SEC));
    }

    fn fail(outlier: &Outlier, now: Instant, times: u32) -> Option<Instant> {
        let config = OutlierConfig::default();
        (0..times)
            .map(|_| outlier.record_failure(now, &config, true))
            .last()
            .flatten()
    }

    fn assert_within(until: Instant, now: Instant, nominal: Duration, max: Duration) {
        let got = until - now;
        let low = nominal.mul_f64(Outlier::JITTER.0);
        let high = nominal.mul_f64(Outlier::JITTER.1).min(max);
        assert!(
            low <= got && got <= high,
            "{got:?} not in [{low:?}, {high:?}]"
        );
    }

    #[test]
    fn config_validates() {
        assert!(OutlierConfig::new(5, SEC, 30 * SEC, 50).is_ok());
        assert_eq!(
            OutlierConfig::new(0, SEC, 30 * SEC, 50),
            Err(OutlierConfigError::ZeroFailures)
        );
        assert_eq!(
            OutlierConfig::new(5, SEC, 30 * SEC, 101),
            Err(OutlierConfigError::PercentAbove100(101))
        );
        assert!(OutlierConfig::new(5, 31 * SEC, 30 * SEC, 50).is_err());
        let clamped = OutlierConfig::default()
            .consecutive_failures(0)
            .max_ejected_percent(200);
        assert_eq!(clamped.get_consecutive_failures(), 1);
        assert_eq!(clamped.get_max_ejected_percent(), 100);
    }

    #[test]
    fn may_eject_keeps_the_share() {
        let config = OutlierConfig::default();
        assert!(!config.may_eject(0, 0));
        assert!(!config.may_eject(0, 1));
        assert!(config.may_eject(0, 3));
        assert!(!config.may_eject(1, 3));
        let all = config.clone().max_ejected_percent(100);
        assert!(all.may_eject(0, 1));
        assert!(!all.may_eject(1, 1));
        assert!(!config.max_ejected_percent(0).may_eject(0, 100));
    }

    #[test]
    fn consecutive_failures_eject() {
        let outlier = Outlier::new();
        let now = Instant::now();
        assert_eq!(fail(&outlier, now, 4), None);
        assert!(!outlier.is_ejected(now));
        let until = fail(&outlier, now, 1).expect("fifth failure ejects");
        assert_within(until, now, SEC, 30 * SEC);
        assert!(outlier.is_ejected(now));
        assert!(outlier.is_ejected(until - Duration::from_nanos(1)));
        assert!(!outlier.is_ejected(until));
        assert!(outlier.is_on_probation(until));
        assert_eq!(outlier.ejected_until(), Some(until));
    }

    #[test]
    fn success_resets_the_count() {
        let outlier = Outlier::new();
        let now = Instant::now();
        fail(&outlier, now, 4);
        assert!(!outlier.record_success_at(now), "nothing to heal");
        assert_eq!(fail(&outlier, now, 4), None);
        assert!(fail(&outlier, now, 1).is_some());
    }

    #[test]
    fn not_ejected_unless_allowed() {
        let outlier = Outlier::new();
        let config = OutlierConfig::default();
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(outlier.record_failure(now, &config, false), None);
        }
        assert!(!outlier.is_ejected(now));
        // Allowed again: the next failure is past the threshold.
        assert!(outlier.record_failure(now, &config, true).is_some());
    }

    #[test]
    fn failures_while_ejected_change_nothing() {
        let outlier = Outlier::new();
        let now = Instant::now();
        let until = fail(&outlier, now, 5).expect("ejected");
        assert_eq!(fail(&outlier, now, 10), None);
        assert_eq!(outlier.ejected_until(), Some(until));
        assert_eq!(outlier.ejections(), 1);
        // Nor does a success: the call began before the ejection.
        assert!(!outlier.record_success_at(now));
        assert!(outlier.is_ejected(now));
    }

    #[test]
    fn probation_failure_doubles_the_backoff() {
        let outlier = Outlier::new();
        let mut now = Instant::now();
        let mut until = fail(&outlier, now, 5).expect("ejected");
        for nominal in [2, 4, 8, 16, 30, 30] {
            now = until;
            until = fail(&outlier, now, 1).expect("one failure on probation re-ejects");
            assert_within(until, now, nominal * SEC, 30 * SEC);
        }
        assert_eq!(outlier.ejections(), 7);
    }

    #[test]
    fn success_on_probation_heals() {
        let outlier = Outlier::new();
        let now = Instant::now();
        let until = fail(&outlier, now, 5).expect("ejected");
        let until = fail(&outlier, until, 1).expect("re-ejected");
        assert!(outlier.record_success_at(until));
        assert_eq!(outlier.ejected_until(), None);
        assert_eq!(outlier.ejections(), 0);
        // Healthy again: five failures to eject, and the base backoff.
        assert_eq!(fail(&outlier, until, 4), None);
        let again = fail(&outlier, until, 1).expect("ejected");
        assert_within(again, until, SEC, 30 * SEC);
    }

    #[test]
    fn eject_now_follows_the_backoff() {
        let outlier = Outlier::new();
        let config = OutlierConfig::default();
        let now = Instant::now();
        let first = outlier.eject_now(now, &config);
        assert_within(first, now, SEC, 30 * SEC);
        assert_eq!(outlier.eject_now(now, &config), first, "already ejected");
        let second = outlier.eject_now(first, &config);
        assert_within(second, first, 2 * SEC, 30 * SEC);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let config = OutlierConfig::default();
        assert_eq!(config.backoff(0, 1.0), SEC);
        assert_eq!(config.backoff(3, 1.0), 8 * SEC);
        assert_eq!(config.backoff(5, 1.0), 30 * SEC);
        assert_eq!(config.backoff(u32::MAX, 1.2), 30 * SEC);
        assert_eq!(config.backoff(1, 0.8), Duration::from_millis(1600));
        for _ in 0..1000 {
            let factor = jitter();
            assert!((0.8..1.2).contains(&factor), "{factor}");
        }
    }
}
