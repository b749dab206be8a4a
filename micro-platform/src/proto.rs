//! The generated messages, tonic stubs and micro descriptors of the platform's protos, for
//! callers that want the raw gRPC API (other languages use the `.proto` files under
//! `proto/micro/`).

/// `micro.auth.v1`, from `proto/micro/auth/v1/auth.proto`.
pub mod auth {
    /// Version 1.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/micro.auth.v1.rs"));
    }
}

/// `micro.config.v1`, from `proto/micro/config/v1/config.proto`.
pub mod config {
    /// Version 1.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/micro.config.v1.rs"));
    }
}

/// `micro.event.v1`, from `proto/micro/event/v1/event.proto`.
pub mod event {
    /// Version 1.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/micro.event.v1.rs"));
    }
}

/// `micro.kv.v1`, from `proto/micro/kv/v1/kv.proto`.
pub mod kv {
    /// Version 1.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/micro.kv.v1.rs"));
    }
}

/// `micro.registry.v1`, from `proto/micro/registry/v1/registry.proto`.
pub mod registry {
    /// Version 1.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/micro.registry.v1.rs"));
    }
}

/// `micro.sync.v1`, from `proto/micro/sync/v1/sync.proto`.
pub mod sync {
    /// Version 1.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/micro.sync.v1.rs"));
    }
}
