//! micro: a gRPC-first microservice framework for Rust.

pub use micro_core::*;
