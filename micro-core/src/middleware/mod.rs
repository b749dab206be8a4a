#![doc = include_str!("README.md")]

pub(crate) mod conformance;
pub mod context;
pub(crate) mod defaults;
pub mod interceptor;
pub mod log;
pub mod metrics;
pub mod observe;
pub(crate) mod routes;
pub(crate) mod stack;
pub mod trace;

pub use interceptor::interceptor_fn;
pub use log::LogLayer;
pub use metrics::MetricsLayer;
pub use observe::code_name;
pub use stack::BoxRoutes;
pub use trace::TraceLayer;
