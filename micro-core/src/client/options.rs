//! Per-call options, carried in the request's extensions.

use std::{sync::Arc, time::Duration};

use crate::selector::{NodeFilter, Selector};

/// Options for one call, overriding the client's settings.
///
/// Put them in the request's extensions; they never travel over the wire.
///
/// ```
/// use std::time::Duration;
/// use micro_core::client::{CallOptions, RequestExt};
///
/// let request = tonic::Request::new(())
///     .with_call_options(CallOptions::new().key("user-42").timeout(Duration::from_secs(2)));
/// # let _ = request;
/// ```
///
/// Per-call metadata goes in tonic's own `Request::metadata_mut`.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_attempts: Option<u8>,
    pub(crate) key: Option<Arc<str>>,
    pub(crate) filter: Option<NodeFilter>,
    pub(crate) idempotent: Option<bool>,
    pub(crate) selector: Option<Arc<dyn Selector>>,
}

impl CallOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// The call's timeout, sent as `grpc-timeout`. Default is the client's timeout (or
    /// tonic's `Request::set_timeout`, or what is left of the calling handler's deadline,
    /// whichever is shortest).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The most attempts this call may make, the first included; at most 5. Default is the
    /// client's retry policy.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u8) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// The call's affinity key for consistent hashing. Default is the `x-micro-key`
    /// request header, if any.
    #[must_use]
    pub fn key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Only nodes matching `filter` may serve this call. Default is the client's filter.
    #[must_use]
    pub fn filter(mut self, filter: NodeFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Declares the method idempotent (or not) for this call, deciding which failures are
    /// retried. Default is the method's `idempotency_level` from the registry record.
    #[must_use]
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Orders nodes with `selector` for this call. Default is the client's selector.
    #[must_use]
    pub fn selector(mut self, selector: impl Selector) -> Self {
        self.selector = Some(Arc::new(selector));
        self
    }
}

/// Attaches [`CallOptions`] to a tonic request.
pub trait RequestExt {
    /// Returns the request carrying `options`.
    #[must_use]
    fn with_call_options(self, options: CallOptions) -> Self;
}

impl<T> RequestExt for tonic::Request<T> {
    fn with_call_options(mut self, options: CallOptions) -> Self {
        self.extensions_mut().insert(options);
        self
    }
}
