//! [`SetContext`]: runs each call of a server inside its [`Context`](crate::context::Context).
//!
//! The layer lives with the context it sets, in [`crate::context`]; it is re-exported here
//! next to the other server layers.

pub use crate::context::set::{ContextBody, ContextLayer, ResponseFuture, SetContext};
