//! [`HedgePolicy`]: sending a second copy of a slow idempotent call to another node.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// The wait before a hedged copy while the method has not answered yet (no latency to
/// learn from), and the fallback of an adaptive policy. Default is 50 ms.
pub const DEFAULT_HEDGE_DELAY: Duration = Duration::from_millis(50);

/// The shortest adaptive hedge delay: below it, a second copy rarely beats the first and
/// only adds load. Default is 1 ms.
pub const MIN_HEDGE_DELAY: Duration = Duration::from_millis(1);

/// The latency quantile an adaptive policy waits for before hedging: 0.99, so about one
/// call in a hundred gets a second copy while nodes are healthy.
pub const DEFAULT_HEDGE_QUANTILE: f64 = 0.99;

/// Copies of a hedged call in flight at most, the first included. Default is 2.
pub const DEFAULT_HEDGE_MAX_ATTEMPTS: u8 = 2;

/// The most copies a hedge policy allows, the first included: 5, as for retries.
pub const HEDGE_MAX_ATTEMPTS_LIMIT: u8 = 5;

/// Hedging: when a call has not answered after the hedge delay, the same request is sent to
/// another node as well; the first answer wins and the other attempts are cancelled.
///
/// **On by default for idempotent methods** (proto `idempotency_level` `NO_SIDE_EFFECTS`
/// or `IDEMPOTENT`, or [`ClientBuilder::idempotent`](crate::ClientBuilder::idempotent)),
/// with an *adaptive* delay: the method's observed 99th-percentile latency (at least
/// [`MIN_HEDGE_DELAY`]; [`DEFAULT_HEDGE_DELAY`] until it has answered). Non-idempotent
/// methods are never hedged: every copy may run on its server.
///
/// Hedging trades load for tail latency, so it is budgeted: each copy beyond the first
/// draws on the client's hedge budget (5 % of the hedged calls plus 5 per second, see
/// [`ClientBuilder::hedge_budget`](crate::ClientBuilder::hedge_budget)) and on its
/// [`RetryBudget`](super::RetryBudget); when either is spent the call waits for its first
/// copy. Only requests whose body could be buffered (unary, up to the buffer limit) are
/// hedged, and never a call with a consistent-hashing key (its key pins it to one node).
/// Turn it off per method with [`HedgePolicy::disabled`] or for a whole client
/// with [`ClientBuilder::hedging`](crate::ClientBuilder::hedging).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use micro_core::client::retry::HedgePolicy;
///
/// let fixed = HedgePolicy::default().delay(Duration::from_millis(20)).max_attempts(3);
/// assert_eq!(fixed.attempts(), 3);
/// assert_eq!(fixed.fixed_delay(), Some(Duration::from_millis(20)));
/// assert_eq!(HedgePolicy::default().fixed_delay(), None); // adaptive
/// assert!(!HedgePolicy::disabled().is_enabled());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct HedgePolicy {
    delay: Option<Duration>,
    quantile: f64,
    max_attempts: u8,
}

// === impl HedgePolicy ===

impl HedgePolicy {
    /// No hedging: the method's calls are sent once (and retried as the retry policy says).
    pub fn disabled() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Waits a fixed `delay` for an answer before sending the next copy, instead of the
    /// method's observed latency quantile.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Waits for the method's observed latency quantile `quantile` (0.5–0.999, default
    /// [`DEFAULT_HEDGE_QUANTILE`]) before sending the next copy; lower hedges more calls.
    /// Replaces a fixed [`delay`](Self::delay).
    pub fn quantile(mut self, quantile: f64) -> Self {
        self.delay = None;
        self.quantile = if quantile.is_nan() {
            DEFAULT_HEDGE_QUANTILE
        } else {
            quantile.clamp(0.5, 0.999)
        };
        self
    }

    /// Sets the most copies of a call in flight, the first included. Default is
    /// [`DEFAULT_HEDGE_MAX_ATTEMPTS`]. Values above [`HEDGE_MAX_ATTEMPTS_LIMIT`] are clamped
    /// to it; `0` and `1` mean no hedging.
    pub fn max_attempts(mut self, attempts: u8) -> Self {
        self.max_attempts = attempts.clamp(1, HEDGE_MAX_ATTEMPTS_LIMIT);
        self
    }

    /// The fixed wait before each further copy; `None` when it adapts to the method's
    /// latency.
    pub fn fixed_delay(&self) -> Option<Duration> {
        self.delay
    }

    /// The latency quantile an adaptive policy waits for.
    pub fn get_quantile(&self) -> f64 {
        self.quantile
    }

    /// The most copies of a call in flight, the first included.
    pub fn attempts(&self) -> u8 {
        self.max_attempts
    }

    /// Whether calls are hedged at all (more than one copy allowed).
    pub fn is_enabled(&self) -> bool {
        self.max_attempts > 1
    }
}

impl Default for HedgePolicy {
    /// Adaptive: the method's observed 99th percentile, 2 copies at most.
    fn default() -> Self {
        Self {
            delay: None,
            quantile: DEFAULT_HEDGE_QUANTILE,
            max_attempts: DEFAULT_HEDGE_MAX_ATTEMPTS,
        }
    }
}

/// One hedged method of a channel: its policy and what its latency has been.
#[derive(Debug)]
pub(crate) struct Hedge {
    pub(crate) policy: HedgePolicy,
    /// The latency quantile estimate in nanoseconds; 0 before the first answer.
    quantile_ns: AtomicU64,
}

// === impl Hedge ===

impl Hedge {
    /// How much an estimate moves per sample, relative to itself: about 5 % up when a
    /// sample is above it (and `1 - quantile` of that down when below).
    const STEP: f64 = 0.05;

    pub(crate) fn new(policy: HedgePolicy) -> Self {
        Self {
            policy,
            quantile_ns: AtomicU64::new(0),
        }
    }

    /// The wait before the next copy.
    pub(crate) fn delay(&self) -> Duration {
        if let Some(delay) = self.policy.delay {
            return delay;
        }
        match self.quantile_ns.load(Ordering::Relaxed) {
            0 => DEFAULT_HEDGE_DELAY,
            ns => Duration::from_nanos(ns).max(MIN_HEDGE_DELAY),
        }
    }

    /// Feeds the latency of an attempt that got an answer into the quantile estimate.
    ///
    /// A stochastic quantile estimate: a sample above the estimate raises it by
    /// `STEP × q`, one below lowers it by `STEP × (1 - q)` (relative), so it settles where a
    /// fraction `1 - q` of samples lies above. One load and one store: racing updates may
    /// lose a step, which only slows the estimate down.
    pub(crate) fn observe(&self, latency: Duration) {
        if self.policy.delay.is_some() {
            return;
        }
        let sample = latency.as_nanos().min(u128::from(u64::MAX >> 1)) as f64;
        let current = self.quantile_ns.load(Ordering::Relaxed);
        let next = if current == 0 {
            sample
        } else {
            let current = current as f64;
            let q = self.policy.quantile;
            if sample > current {
                current * (1.0 + Self::STEP * q)
            } else {
                current * (1.0 - Self::STEP * (1.0 - q))
            }
        };
        self.quantile_ns
            .store((next as u64).max(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn defaults_and_clamping() {
        let hedge = HedgePolicy::default();
        assert_eq!(hedge.fixed_delay(), None);
        assert_eq!(hedge.get_quantile(), DEFAULT_HEDGE_QUANTILE);
        assert_eq!(hedge.attempts(), 2);
        assert!(hedge.is_enabled());
        assert_eq!(hedge.max_attempts(9).attempts(), 5);
        assert_eq!(hedge.max_attempts(0).attempts(), 1);
        assert!(!hedge.max_attempts(1).is_enabled());
        let hedge = hedge.delay(5 * MS);
        assert_eq!(hedge.fixed_delay(), Some(5 * MS));
        let hedge = hedge.quantile(2.0);
        assert_eq!((hedge.fixed_delay(), hedge.get_quantile()), (None, 0.999));
        assert_eq!(hedge.quantile(f64::NAN).get_quantile(), 0.99);
    }

    #[test]
    fn fixed_delay_ignores_latency() {
        let hedge = Hedge::new(HedgePolicy::default().delay(20 * MS));
        hedge.observe(200 * MS);
        assert_eq!(hedge.delay(), 20 * MS);
    }

    #[test]
    fn adaptive_delay_settles_on_the_quantile() {
        let hedge = Hedge::new(HedgePolicy::default());
        assert_eq!(hedge.delay(), DEFAULT_HEDGE_DELAY, "no answer yet");
        // Latencies 1..=100 ms in a fixed scrambled order: the 99th percentile is 99 ms.
        for round in 0..200u64 {
            for i in 0..100u64 {
                let ms = (i * 37 + round * 11) % 100 + 1;
                hedge.observe(Duration::from_millis(ms));
            }
        }
        let delay = hedge.delay().as_secs_f64() * 1e3;
        assert!(
            (94.0..=106.0).contains(&delay),
            "p99 estimate {delay:.1} ms"
        );
    }

    #[test]
    fn adaptive_delay_has_a_floor_and_follows_a_slowdown() {
        let hedge = Hedge::new(HedgePolicy::default());
        for _ in 0..1000 {
            hedge.observe(Duration::from_micros(100));
        }
        assert_eq!(hedge.delay(), MIN_HEDGE_DELAY);
        // Every answer now takes 10 ms: the estimate climbs there within ~100 answers.
        for _ in 0..100 {
            hedge.observe(10 * MS);
        }
        assert!(hedge.delay() >= 9 * MS, "{:?}", hedge.delay());
    }
}
