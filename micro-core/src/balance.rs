//! The per-node state selectors read, under its former path: moved to [`crate::node`]
//! (the connections that used to live here belong to the client).

pub use crate::node::{Load, LoadGuard, NodeHandle, Outlier, OutlierConfig, OutlierConfigError};
