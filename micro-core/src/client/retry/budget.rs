//! [`RetryBudget`]: a token bucket that caps retries at a share of recent requests, so a
//! failing service does not receive a multiple of its normal load.
//!
//! Only status-based retries and retries after a send failure draw on the budget.
//! Transparent retries (the request never reached a server) do not: they add no load to
//! any server and are bounded by the number of nodes.

use std::{fmt, sync::Arc, time::Duration};

use tower::retry::budget::{Budget as _, TpsBudget};

/// How long a request counts towards the budget. Default is 10 seconds.
pub const DEFAULT_BUDGET_TTL: Duration = Duration::from_secs(10);

/// Retries allowed per second regardless of traffic. Default is 10.
pub const DEFAULT_BUDGET_MIN_PER_SEC: u32 = 10;

/// Retries allowed per request, as a fraction. Default is 0.2 (20%).
pub const DEFAULT_BUDGET_RETRY_PERCENT: f32 = 0.2;

/// A retry budget shared by every call of a client: retries are allowed up to
/// `retry_percent` of the requests of the last `ttl`, plus `min_per_sec` per second.
///
/// Each original request [`deposit`](Self::deposit)s; each retry must
/// [`try_withdraw`](Self::try_withdraw) first and is not made when that fails. With the
/// defaults, a client whose every call fails sends at most 1.2 × its requests + 10 per
/// second attempts.
///
/// The reserve of `min_per_sec` × `ttl` retries is available at once, so a client that just
/// started can retry at once, and is replenished as its withdrawals age out of the `ttl`
/// window. Time is tokio's clock: tests can use `tokio::time::pause`.
///
/// Cloning is cheap; clones share the budget. Both operations take a few atomic operations
/// and, at most once per tenth of the `ttl`, a short lock.
///
/// # Examples
///
/// ```
/// use micro_core::client::retry::RetryBudget;
///
/// let budget = RetryBudget::default();
/// budget.deposit(); // for each call
/// if budget.try_withdraw() {
///     // retry
/// }
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<TpsBudget>,
    config: (Duration, u32, f32),
}

// === impl RetryBudget ===

impl RetryBudget {
    /// A budget allowing `retry_percent` retries per request made in the last `ttl`, plus
    /// `min_per_sec` retries per second.
    ///
    /// Out-of-range values are clamped: `ttl` to 1–60 seconds, `retry_percent` to
    /// 0.0–1000.0 (NaN is 0.0), `min_per_sec` to `i32::MAX - 1`.
    pub fn new(ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        // TpsBudget panics outside these ranges.
        let ttl = ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
        let retry_percent = if retry_percent.is_nan() {
            0.0
        } else {
            retry_percent.clamp(0.0, 1000.0)
        };
        let min_per_sec = min_per_sec.min(i32::MAX as u32 - 1);
        Self {
            inner: Arc::new(TpsBudget::new(ttl, min_per_sec, retry_percent)),
            config: (ttl, min_per_sec, retry_percent),
        }
    }

    /// Records an original request (not a retry): it earns `retry_percent` of a retry.
    pub fn deposit(&self) {
        self.inner.deposit();
    }

    /// Takes one retry from the budget; `false` means the budget is spent and the retry
    /// must not be made.
    pub fn try_withdraw(&self) -> bool {
        self.inner.withdraw()
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(
            DEFAULT_BUDGET_TTL,
            DEFAULT_BUDGET_MIN_PER_SEC,
            DEFAULT_BUDGET_RETRY_PERCENT,
        )
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ttl, min_per_sec, retry_percent) = self.config;
        f.debug_struct("RetryBudget")
            .field("ttl", &ttl)
            .field("min_per_sec", &min_per_sec)
            .field("retry_percent", &retry_percent)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `requests` failing calls per second for `seconds`, each wanting up to
    /// `wanted` retries, and returns the retries the budget granted.
    async fn storm(budget: &RetryBudget, seconds: u32, per_sec: u32, wanted: u32) -> u32 {
        let tick = Duration::from_secs(1) / per_sec;
        let mut granted = 0;
        for _ in 0..seconds * per_sec {
            budget.deposit();
            for _ in 0..wanted {
                if !budget.try_withdraw() {
                    break;
                }
                granted += 1;
            }
            tokio::time::advance(tick).await;
        }
        granted
    }

    #[tokio::test(start_paused = true)]
    async fn caps_retries_under_an_all_failing_load() {
        let budget = RetryBudget::default();
        let (seconds, per_sec) = (30, 100);
        let granted = storm(&budget, seconds, per_sec, 4).await;
        let requests = seconds * per_sec;
        // 20% of the requests plus 10/s, with one window's reserve of slack.
        let bound = requests / 5 + 10 * seconds + 10;
        assert!(granted <= bound, "granted {granted} > {bound}");
        // The budget is not stingier than promised either.
        assert!(granted >= requests / 5, "granted {granted}");
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_allows_retries_without_traffic() {
        let budget = RetryBudget::new(Duration::from_secs(1), 5, 0.0);
        let granted = (0..10).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 5);
        // Withdrawals age out of the window and the reserve is available again.
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(budget.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn one_retry_per_five_requests_without_reserve() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.2);
        assert!(!budget.try_withdraw());
        for _ in 0..50 {
            budget.deposit();
        }
        let granted = (0..50).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn out_of_range_config_is_clamped_not_a_panic() {
        let budget = RetryBudget::new(Duration::ZERO, u32::MAX, f32::NAN);
        let _ = budget.try_withdraw();
        let budget = RetryBudget::new(Duration::from_secs(3600), 0, 1e9);
        budget.deposit();
        assert!(budget.try_withdraw());
        assert!(format!("{budget:?}").contains("60s"));
    }
}
