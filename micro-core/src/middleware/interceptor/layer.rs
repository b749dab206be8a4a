//! [`InterceptorLayer`] and [`interceptor_fn`].

use std::fmt;

use tower::Layer;

use super::Interceptor;

/// Wraps services in an [`Interceptor`] running `f`; made by [`interceptor_fn`].
#[derive(Clone)]
pub struct InterceptorLayer<F> {
    f: F,
}

/// A layer that runs the async closure `f` on each request: it returns the request to
/// send on (possibly changed) or a [`Status`](tonic::Status) to reject the call with.
///
/// See the [module docs](super) for an example and when to write a layer instead.
pub fn interceptor_fn<F>(f: F) -> InterceptorLayer<F> {
    InterceptorLayer { f }
}

impl<S, F: Clone> Layer<S> for InterceptorLayer<F> {
    type Service = Interceptor<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Interceptor::new(inner, self.f.clone())
    }
}

impl<F> fmt::Debug for InterceptorLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterceptorLayer")
            .field("f", &std::any::type_name::<F>())
            .finish()
    }
}
