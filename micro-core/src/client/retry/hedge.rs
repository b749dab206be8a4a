//! [`HedgePolicy`]: sending a second copy of a slow idempotent call to another node.

use std::time::Duration;

/// The wait before each hedged attempt when none is set. Default is 50 ms.
pub const DEFAULT_HEDGE_DELAY: Duration = Duration::from_millis(50);

/// Copies of a hedged call in flight at most, the first included. Default is 2.
pub const DEFAULT_HEDGE_MAX_ATTEMPTS: u8 = 2;

/// The most copies a hedge policy allows, the first included: 5, as for retries.
pub const HEDGE_MAX_ATTEMPTS_LIMIT: u8 = 5;

/// Hedging: when a call has not answered after [`delay`](Self::delay), the same request is
/// sent to another node as well; the first answer wins and the other attempts are
/// cancelled.
///
/// Opt-in, and only for methods declared idempotent: every copy may run on its server.
/// Hedging trades load for tail latency, so each hedged copy beyond the first draws on the
/// [`RetryBudget`](super::RetryBudget) like a retry, and only requests whose body could be
/// buffered are hedged.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use micro_core::client::retry::HedgePolicy;
///
/// let hedge = HedgePolicy::default().delay(Duration::from_millis(20)).max_attempts(3);
/// assert_eq!(hedge.attempts(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct HedgePolicy {
    delay: Duration,
    max_attempts: u8,
}

// === impl HedgePolicy ===

impl HedgePolicy {
    /// Sets how long to wait for an answer before sending the next copy. Default is
    /// [`DEFAULT_HEDGE_DELAY`]. Pick about the method's p95 latency: lower hedges more calls.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the most copies of a call in flight, the first included. Default is
    /// [`DEFAULT_HEDGE_MAX_ATTEMPTS`]. Values above [`HEDGE_MAX_ATTEMPTS_LIMIT`] are clamped
    /// to it; `0` and `1` mean no hedging.
    pub fn max_attempts(mut self, attempts: u8) -> Self {
        self.max_attempts = attempts.clamp(1, HEDGE_MAX_ATTEMPTS_LIMIT);
        self
    }

    /// The wait before each further copy.
    pub fn hedge_delay(&self) -> Duration {
        self.delay
    }

    /// The most copies of a call in flight, the first included.
    pub fn attempts(&self) -> u8 {
        self.max_attempts
    }
}

impl Default for HedgePolicy {
    fn default() -> Self {
        Self {
            delay: DEFAULT_HEDGE_DELAY,
            max_attempts: DEFAULT_HEDGE_MAX_ATTEMPTS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_clamping() {
        let hedge = HedgePolicy::default();
        assert_eq!(hedge.hedge_delay(), DEFAULT_HEDGE_DELAY);
        assert_eq!(hedge.attempts(), 2);
        assert_eq!(hedge.max_attempts(9).attempts(), 5);
        assert_eq!(hedge.max_attempts(0).attempts(), 1);
        let hedge = hedge.delay(Duration::from_millis(5));
        assert_eq!(hedge.hedge_delay(), Duration::from_millis(5));
    }
}
