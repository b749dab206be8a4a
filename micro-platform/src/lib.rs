//! The micro platform services.
//!
//! This crate will hold the platform's shared services, each defined in
//! `proto/micro/<area>/v1/<area>.proto` and shipped as a gRPC server over a micro-core trait
//! plus a typed client implementing the same trait: auth, config, kv, monitor, router, sync,
//! trace, event, log, metrics, discovery and db. None is built yet.
