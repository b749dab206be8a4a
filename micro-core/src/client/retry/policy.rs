//! [`RetryPolicy`]: how many attempts a call gets, how long to wait between them and which
//! status codes are worth another attempt.

use std::{fmt, time::Duration};

use rand::Rng as _;
use tonic::Code;

use super::classify::Outcome;

/// Attempts a call gets when its policy sets none, the first try included. Default is 3.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The most attempts any policy allows, the first try included: 5, as in gRFC A6.
pub const MAX_ATTEMPTS_LIMIT: u32 = 5;

/// The ceiling of the backoff before the first retry. Default is 25 ms.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(25);

/// The largest backoff ceiling. Default is 1 second.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The factor the backoff ceiling grows by per retry. Default is 2.0.
pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;

/// Codes retried for every method: only `UNAVAILABLE`, which means the server did not start
/// processing the call (it was shutting down, overloaded before dispatch, or unreachable).
pub const DEFAULT_RETRYABLE_CODES: &[Code] = &[Code::Unavailable];

/// Codes retried for methods declared idempotent.
///
/// Running an idempotent method twice has the effect of running it once, so any code that
/// may be transient is worth another attempt, even if the first attempt did some work:
/// - `UNAVAILABLE`: the node is down, draining or unreachable.
/// - `ABORTED`: a concurrency conflict (e.g. a failed transaction) that a retry may win.
/// - `INTERNAL` and `UNKNOWN`: often a crashing or misbehaving node; another node may be fine.
/// - `RESOURCE_EXHAUSTED`: a node-local quota or overload; another node may have room. The
///   retry budget keeps this from amplifying a global overload.
pub const DEFAULT_IDEMPOTENT_CODES: &[Code] = &[
    Code::Unavailable,
    Code::Aborted,
    Code::Internal,
    Code::Unknown,
    Code::ResourceExhausted,
];

/// Codes no policy retries, whatever it is configured with.
///
/// `DEADLINE_EXCEEDED` and `CANCELLED` mean the caller's time or interest is gone; the
/// others describe the request itself (bad, unauthorised, not found, unimplemented), so
/// another node would answer the same. `OK` is success.
pub const NEVER_RETRYABLE_CODES: &[Code] = &[
    Code::Ok,
    Code::Cancelled,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::Unauthenticated,
    Code::FailedPrecondition,
    Code::OutOfRange,
    Code::Unimplemented,
];

/// When and how a failed call is tried again.
///
/// A call gets at most [`max_attempts`](Self::max_attempts) attempts, the first included,
/// always within its overall deadline; before each retry it waits a random
/// [`backoff`](Self::backoff). A failed attempt is retried when its status code is in
/// [`retryable_codes`](Self::retryable_codes), or, for a method declared idempotent, in
/// [`idempotent_codes`](Self::idempotent_codes). Codes in [`NEVER_RETRYABLE_CODES`] are
/// never retried.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use micro_core::client::retry::RetryPolicy;
/// use tonic::Code;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(4)
///     .initial_backoff(Duration::from_millis(10));
/// assert!(policy.should_retry(Code::Unavailable, false));
/// assert!(!policy.should_retry(Code::Internal, false));
/// assert!(policy.should_retry(Code::Internal, true));
/// assert!(!policy.should_retry(Code::DeadlineExceeded, true));
/// ```
#[derive(Clone, PartialEq)]
#[must_use]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    retryable: CodeSet,
    idempotent: CodeSet,
}

/// What to do after an attempt, as decided by [`RetryPolicy::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Return the attempt's result to the caller.
    Done,
    /// Send the request again on another node at once: it never reached a server. Costs no
    /// attempt, no backoff and no budget.
    Transparent,
    /// Send the request again on another node after [`RetryPolicy::backoff`], if an attempt
    /// is left, the deadline allows and the budget grants it.
    Retry,
}

/// A set of status codes as a bit mask over the 17 gRPC codes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct CodeSet(u32);

// === impl RetryPolicy ===

impl RetryPolicy {
    /// Sets the most attempts a call gets, the first try included; `1` disables retries.
    /// Default is [`DEFAULT_MAX_ATTEMPTS`].
    ///
    /// Like gRFC A6, values above [`MAX_ATTEMPTS_LIMIT`] are clamped to it, and `0` is
    /// treated as `1`.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.clamp(1, MAX_ATTEMPTS_LIMIT);
        self
    }

    /// Sets the ceiling of the backoff before the first retry. Default is
    /// [`DEFAULT_INITIAL_BACKOFF`].
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// Sets the largest backoff ceiling. Default is [`DEFAULT_MAX_BACKOFF`].
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// Sets the factor the backoff ceiling grows by per retry. Default is
    /// [`DEFAULT_BACKOFF_MULTIPLIER`]. Values below 1.0, and NaN, are treated as 1.0.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        // `max` returns the other operand for NaN.
        self.multiplier = multiplier.max(1.0);
        self
    }

    /// Sets the codes retried for every method. Default is [`DEFAULT_RETRYABLE_CODES`].
    ///
    /// Codes in [`NEVER_RETRYABLE_CODES`] are left out (with a warning in the log): retrying
    /// them is never right.
    pub fn retryable_codes(mut self, codes: impl IntoIterator<Item = Code>) -> Self {
        self.retryable = CodeSet::retryable(codes);
        self
    }

    /// Sets the codes retried for methods declared idempotent, in addition to
    /// [`retryable_codes`](Self::retryable_codes). Default is [`DEFAULT_IDEMPOTENT_CODES`].
    ///
    /// Codes in [`NEVER_RETRYABLE_CODES`] are left out (with a warning in the log).
    pub fn idempotent_codes(mut self, codes: impl IntoIterator<Item = Code>) -> Self {
        self.idempotent = CodeSet::retryable(codes);
        self
    }

    /// The most attempts a call gets, the first try included.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether a call that failed with `code` is worth another attempt; `idempotent` says
    /// whether its method is declared idempotent.
    pub fn should_retry(&self, code: Code, idempotent: bool) -> bool {
        self.retryable.contains(code) || (idempotent && self.idempotent.contains(code))
    }

    /// Whether a call whose request was sent but whose connection failed before any status
    /// came back (reset mid-call, connection lost) is worth another attempt: only for an
    /// idempotent method, since the server may have run it.
    pub fn retry_after_send_failure(&self, idempotent: bool) -> bool {
        idempotent
    }

    /// A random wait before retry number `retry` (1 before the second attempt, 2 before the
    /// third, …): uniform in `[0, min(max_backoff, initial_backoff × multiplier^(retry-1))]`,
    /// the "full jitter" of gRFC A6. `0` is treated as `1`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff_ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// The upper bound of [`backoff`](Self::backoff) for retry number `retry`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let ceiling = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        let max = self.max_backoff.as_secs_f64();
        // `min` also turns an infinite product into `max`.
        Duration::try_from_secs_f64(ceiling.min(max)).unwrap_or(self.max_backoff)
    }

    /// The wait before the next attempt of a call that made `attempts_made` attempts and has
    /// `remaining` time before its deadline, or `None` when no retry may be made: the
    /// attempts are used up, or the wait would not end before the deadline.
    ///
    /// Draw on the [`RetryBudget`](super::RetryBudget) only after this returns `Some`, so a
    /// retry that is not made costs no budget.
    #[cfg(test)]
    pub(crate) fn retry_delay(&self, attempts_made: u32, remaining: Duration) -> Option<Duration> {
        self.retry_delay_within(attempts_made, self.max_attempts, remaining)
    }

    /// [`retry_delay`](Self::retry_delay) for a call allowed `max_attempts` (a per-call
    /// override, at most [`MAX_ATTEMPTS_LIMIT`]).
    pub(crate) fn retry_delay_within(
        &self,
        attempts_made: u32,
        max_attempts: u32,
        remaining: Duration,
    ) -> Option<Duration> {
        if attempts_made >= max_attempts.min(MAX_ATTEMPTS_LIMIT) {
            return None;
        }
        let wait = self.backoff(attempts_made);
        (wait < remaining).then_some(wait)
    }

    /// What to do after an attempt that ended in `outcome`: the one place the retry rules
    /// are applied. Whether an attempt is left, the deadline allows a retry and the budget
    /// grants one is the caller's to check.
    pub(crate) fn decide(&self, outcome: Outcome, idempotent: bool) -> Decision {
        match outcome {
            Outcome::Success => Decision::Done,
            Outcome::NotSent => Decision::Transparent,
            Outcome::Status(code) if self.should_retry(code, idempotent) => Decision::Retry,
            Outcome::Status(_) => Decision::Done,
            Outcome::SendFailed if self.retry_after_send_failure(idempotent) => Decision::Retry,
            Outcome::SendFailed => Decision::Done,
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            multiplier: DEFAULT_BACKOFF_MULTIPLIER,
            retryable: CodeSet::retryable(DEFAULT_RETRYABLE_CODES.iter().copied()),
            idempotent: CodeSet::retryable(DEFAULT_IDEMPOTENT_CODES.iter().copied()),
        }
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("multiplier", &self.multiplier)
            .field("retryable_codes", &self.retryable)
            .field("idempotent_codes", &self.idempotent)
            .finish()
    }
}

// === impl CodeSet ===

impl CodeSet {
    /// The retryable codes among `codes`.
    fn retryable(codes: impl IntoIterator<Item = Code>) -> Self {
        let mut set = CodeSet(0);
        for code in codes {
            if NEVER_RETRYABLE_CODES.contains(&code) {
                tracing::warn!(?code, "status code {code:?} is never retried; ignored");
                continue;
            }
            set.0 |= Self::bit(code);
        }
        set
    }

    fn contains(self, code: Code) -> bool {
        self.0 & Self::bit(code) != 0
    }

    fn bit(code: Code) -> u32 {
        // Codes are 0..=16; `Code` is a fieldless enum with those discriminants.
        1u32 << ((code as i32) & 31)
    }
}

impl fmt::Debug for CodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(
                (0..=16)
                    .map(Code::from_i32)
                    .filter(|code| self.contains(*code)),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_CODES: std::ops::RangeInclusive<i32> = 0..=16;

    #[test]
    fn defaults() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.attempts(), DEFAULT_MAX_ATTEMPTS);
        for code in ALL_CODES.map(Code::from_i32) {
            assert_eq!(
                policy.should_retry(code, false),
                code == Code::Unavailable,
                "{code:?}"
            );
            assert_eq!(
                policy.should_retry(code, true),
                DEFAULT_IDEMPOTENT_CODES.contains(&code),
                "{code:?}"
            );
        }
    }

    #[test]
    fn never_retryable_codes_cannot_be_configured() {
        let all: Vec<Code> = ALL_CODES.map(Code::from_i32).collect();
        let policy = RetryPolicy::default()
            .retryable_codes(all.clone())
            .idempotent_codes(all);
        for code in ALL_CODES.map(Code::from_i32) {
            let never = NEVER_RETRYABLE_CODES.contains(&code);
            assert_eq!(policy.should_retry(code, false), !never, "{code:?}");
            assert_eq!(policy.should_retry(code, true), !never, "{code:?}");
        }
        for code in [
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::InvalidArgument,
        ] {
            assert!(!policy.should_retry(code, true), "{code:?}");
        }
    }

    #[test]
    fn idempotent_codes_only_for_idempotent_methods() {
        let policy = RetryPolicy::default()
            .retryable_codes([])
            .idempotent_codes([Code::Aborted]);
        assert!(!policy.should_retry(Code::Unavailable, true));
        assert!(!policy.should_retry(Code::Aborted, false));
        assert!(policy.should_retry(Code::Aborted, true));
    }

    #[test]
    fn attempts_are_clamped() {
        assert_eq!(RetryPolicy::default().max_attempts(9).attempts(), 5);
        assert_eq!(RetryPolicy::default().max_attempts(0).attempts(), 1);
        assert_eq!(RetryPolicy::default().max_attempts(4).attempts(), 4);
    }

    #[test]
    fn backoff_ceiling_grows_and_caps() {
        let policy = RetryPolicy::default();
        let ms = Duration::from_millis;
        assert_eq!(policy.backoff_ceiling(0), ms(25));
        assert_eq!(policy.backoff_ceiling(1), ms(25));
        assert_eq!(policy.backoff_ceiling(2), ms(50));
        assert_eq!(policy.backoff_ceiling(3), ms(100));
        assert_eq!(policy.backoff_ceiling(7), ms(1000));
        assert_eq!(policy.backoff_ceiling(u32::MAX), ms(1000));
        let flat = RetryPolicy::default().multiplier(f64::NAN);
        assert_eq!(flat.backoff_ceiling(4), ms(25));
    }

    #[test]
    fn backoff_stays_within_bounds_and_is_jittered() {
        let policy = RetryPolicy::default();
        for retry in 1..=8 {
            let ceiling = policy.backoff_ceiling(retry);
            let samples: Vec<Duration> = (0..200).map(|_| policy.backoff(retry)).collect();
            assert!(samples.iter().all(|wait| *wait <= ceiling), "{retry}");
            // Full jitter: the waits spread over the whole range, not just near the top.
            assert!(samples.iter().any(|wait| *wait < ceiling / 2), "{retry}");
            assert!(samples.iter().any(|wait| *wait > ceiling / 2), "{retry}");
        }
        let none = RetryPolicy::default().initial_backoff(Duration::ZERO);
        assert_eq!(none.backoff(3), Duration::ZERO);
    }

    #[test]
    fn retry_delays_respect_attempts_and_deadline() {
        let policy = RetryPolicy::default();
        let long = Duration::from_secs(10);
        assert!(policy.retry_delay(1, long).unwrap() <= Duration::from_millis(25));
        assert!(policy.retry_delay(2, long).unwrap() <= Duration::from_millis(50));
        assert_eq!(policy.retry_delay(3, long), None);
        assert_eq!(policy.retry_delay(1, Duration::ZERO), None);
        let five = policy.max_attempts(5);
        assert!(five.retry_delay(4, long).is_some());
        assert_eq!(five.retry_delay(5, long), None);
    }

    #[test]
    fn decisions() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.decide(Outcome::Success, false), Decision::Done);
        assert_eq!(
            policy.decide(Outcome::NotSent, false),
            Decision::Transparent
        );
        assert_eq!(policy.decide(Outcome::SendFailed, false), Decision::Done);
        assert_eq!(policy.decide(Outcome::SendFailed, true), Decision::Retry);
        let unavailable = Outcome::Status(Code::Unavailable);
        assert_eq!(policy.decide(unavailable, false), Decision::Retry);
        let internal = Outcome::Status(Code::Internal);
        assert_eq!(policy.decide(internal, false), Decision::Done);
        assert_eq!(policy.decide(internal, true), Decision::Retry);
        let deadline = Outcome::Status(Code::DeadlineExceeded);
        assert_eq!(policy.decide(deadline, true), Decision::Done);
    }
}
