//! Retries and hedging: the building blocks the [`Channel`](super::Channel) retries calls
//! with.
//!
//! # The retry model
//!
//! A call is made of *attempts*, each on a different node (the selector's picks are an
//! ordered list of distinct nodes), all inside the call's one deadline: a retry never
//! extends it, and no attempt starts once it has passed.
//!
//! - **Transparent retries.** An attempt whose request never reached a server application
//!   (no connection, the connection closed before the request was dispatched, e.g. after a
//!   GOAWAY, or the server refused the stream with `REFUSED_STREAM`) is always sent again at
//!   once on the next node, whatever the method. It costs no attempt, no backoff and no
//!   budget: it adds no load to any server. It is bounded by the number of nodes.
//! - **Status-based retries.** An attempt answered with a trailers-only error status (or a
//!   non-200 HTTP status, mapped per the gRPC specification) is retried when
//!   [`RetryPolicy::should_retry`] says so: `UNAVAILABLE` for every method, and more codes
//!   (`ABORTED`, `INTERNAL`, `UNKNOWN`, `RESOURCE_EXHAUSTED`) for methods declared
//!   idempotent. `DEADLINE_EXCEEDED`, `CANCELLED`, `INVALID_ARGUMENT` and the other
//!   client-error codes are never retried. A status that arrives in the trailers, after the
//!   response headers were handed to the caller, is never retried.
//! - **Send failures.** A request that was sent but whose stream or connection then failed
//!   without a status may have run: it is retried only for idempotent methods
//!   ([`RetryPolicy::retry_after_send_failure`]).
//! - **Idempotency** comes from the proto method option `idempotency_level`
//!   (`IDEMPOTENT` or `NO_SIDE_EFFECTS`), read by micro-codegen into the registry record,
//!   or from a client option.
//! - **Attempts** are capped at [`RetryPolicy::max_attempts`] (default
//!   [`DEFAULT_MAX_ATTEMPTS`], at most [`MAX_ATTEMPTS_LIMIT`]), the first try included.
//! - **Backoff.** Before retry *n* the call waits a random time in
//!   `[0, min(max_backoff, initial_backoff × multiplier^(n-1))]` ([`RetryPolicy::backoff`]);
//!   a retry whose wait would end past the deadline is not made.
//! - **Budget.** Every call deposits into the client's shared [`RetryBudget`]; every
//!   status-based or send-failure retry (and every hedged copy) must withdraw from it, so
//!   retries stay under 20% of requests plus 10 per second and a failing service does not
//!   get a retry storm. Transparent retries do not use the budget. Hedged copies also draw
//!   on a separate, smaller hedge budget (5 % of hedged calls plus 5 per second).
//! - **Buffering.** Only a request whose body is complete and at most
//!   [`DEFAULT_BUFFER_LIMIT`] bytes when the call starts (a unary request) is kept to be
//!   replayed. Larger and client-streaming requests are sent once: they are still sent
//!   again transparently while they were not sent, but never retried once sent.
//! - **Hedging** ([`HedgePolicy`]) is on by default for idempotent methods: when the first
//!   copy has not answered within the method's observed 99th-percentile latency, another
//!   copy goes to the next node, the first answer wins and the others are cancelled. Off
//!   per method ([`HedgePolicy::disabled`]), per call (`CallOptions::idempotent(false)`) or
//!   per client (`ClientBuilder::hedging(false)`).

// The crate-internal pieces are used by the channel once it integrates them; remove this
// then, so dead code shows again.

mod body;
mod budget;
mod classify;
mod hedge;
mod policy;

pub use body::DEFAULT_BUFFER_LIMIT;
pub use budget::{
    DEFAULT_BUDGET_MIN_PER_SEC, DEFAULT_BUDGET_RETRY_PERCENT, DEFAULT_BUDGET_TTL, RetryBudget,
};
pub use hedge::{
    DEFAULT_HEDGE_DELAY, DEFAULT_HEDGE_MAX_ATTEMPTS, DEFAULT_HEDGE_QUANTILE,
    HEDGE_MAX_ATTEMPTS_LIMIT, HedgePolicy, MIN_HEDGE_DELAY,
};
pub use policy::{
    DEFAULT_BACKOFF_MULTIPLIER, DEFAULT_IDEMPOTENT_CODES, DEFAULT_INITIAL_BACKOFF,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF, DEFAULT_RETRYABLE_CODES, MAX_ATTEMPTS_LIMIT,
    NEVER_RETRYABLE_CODES, RetryPolicy,
};

pub(crate) use body::{ReplayableRequest, buffer};
pub(crate) use classify::{Outcome, http_status_to_code};
pub(crate) use hedge::Hedge;
pub(crate) use policy::Decision;
