//! micro: a gRPC-first microservice framework for Rust.
//!
//! Write a service from a `.proto` file, run it with no configuration, and call it *by
//! name* from any other process: micro registers every service in a registry (the
//! zero-config `local` registry by default), serves health checking and reflection, and
//! balances client calls over the service's nodes.
//!
//! # Hello world
//!
//! `build.rs`:
//!
//! ```no_run
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     micro_codegen::compile_protos(&["proto/greeter/v1/greeter.proto"], &["proto"])?;
//!     Ok(())
//! }
//! ```
//!
//! The server:
//!
//! ```ignore
//! use micro::Service;
//! use tonic::{Request, Response, Status};
//!
//! mod pb {
//!     micro::include_proto!("greeter.v1");
//! }
//! use pb::{greeter_server::{Greeter, GreeterServer}, HelloReply, HelloRequest};
//!
//! struct Hello;
//!
//! #[tonic::async_trait]
//! impl Greeter for Hello {
//!     async fn say_hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
//!         let message = format!("Hello, {}!", req.into_inner().name);
//!         Ok(Response::new(HelloReply { message }))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), micro::ServiceError> {
//!     micro::install(); // lets MICRO_REGISTRY name the engines compiled in (etcd://…)
//!     Service::builder("greeter").add_service(GreeterServer::new(Hello)).run().await
//! }
//! ```
//!
//! A client, in another process:
//!
//! ```ignore
//! let client = micro::Client::from_env()?;
//! let mut greeter = GreeterClient::new(client.channel("greeter"));
//! let reply = greeter.say_hello(HelloRequest { name: "you".into(), ..Default::default() }).await?;
//! ```
//!
//! # Crates
//!
//! | crate | holds |
//! |---|---|
//! | `micro-core` | [`Service`], [`Client`], [`Channel`], [`Registry`], [`Selector`] |
//! | `micro-codegen` | `compile_protos` for build.rs and the `protoc-gen-micro` plugin |
//! | `micro-plugins` | distributed engines behind features, re-exported as `micro::plugins` |
//! | `micro-platform` | platform services ([`platform`]): kv and registry, served by `micro server` |
//!
//! # Choosing an engine by environment
//!
//! The registry comes from `MICRO_REGISTRY` (see [`registry::from_url`]). `local` and
//! `memory` are always there; a distributed engine such as etcd lives in `micro-plugins`,
//! behind a cargo feature of this crate, and joins in two steps:
//!
//! 1. enable its feature: `micro = { version = "0.1", features = ["etcd"] }`;
//! 2. call [`install`] once at the start of `main`, before building a service or client.
//!
//! Then `MICRO_REGISTRY=etcd://127.0.0.1:2379` selects etcd without any other change to
//! the code. [`install`] is always there and does nothing without engine features, so
//! `main` stays the same whichever features a build enables. A URL of an engine this build
//! has not installed fails with [`RegistryError::EngineNotInstalled`], which names the
//! feature to enable.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! micro::install();
//! // MICRO_REGISTRY=etcd://10.0.0.1:2379,10.0.0.2:2379?namespace=dev
//! let client = micro::Client::from_env()?;
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `etcd` | no | the etcd registry: `MICRO_REGISTRY=etcd://host:port[,host:port…][?namespace=…]` after [`install`]; `micro::plugins::etcd` |
//! | `nats` | no | the NATS and JetStream broker, `micro::plugins::nats::NatsBroker` (chosen in code) |
//! | `redis` | no | the Redis store: `MICRO_STORE=redis://host:port[/db]` after [`install`]; `micro::plugins::redis` |
//! | `memcached` | no | the memcached store: `MICRO_STORE=memcached://host:port` after [`install`] |
//! | `mdns` | no | the mDNS registry for LANs: `MICRO_REGISTRY=mdns://[?interface=lo]` after [`install`]; `micro::plugins::mdns` |
//!
//! Without features, micro depends on neither `micro-plugins` nor any engine's client.

mod setup;

pub mod dynamic;

pub mod api;

pub use micro_core::{
    Channel, Client, ClientBuilder, Connector, NodeInfo, Registry, RegistryError, Selector,
    Service, ServiceBuilder, ServiceError, Store, StoreError, auth, balance, broker, client,
    config, context, middleware, registry, selector, service, store, sync, tls, transport,
};

pub use setup::install;

/// The engines of `micro-plugins` this build enables (features `etcd`, `nats`, `mdns`).
#[cfg(any(
    feature = "etcd",
    feature = "nats",
    feature = "mdns",
    feature = "redis",
    feature = "memcached"
))]
pub use micro_plugins as plugins;

/// The platform services (`micro-platform`): the kv and registry services, their typed
/// clients, and [`platform::install`] for `MICRO_STORE=service` and
/// `MICRO_REGISTRY=service://host:port` ([`install`] calls it).
pub use micro_platform as platform;

#[doc(hidden)]
pub use micro_core::codegen;

/// Includes the code `micro-codegen` generated for a proto package, by package name.
///
/// ```ignore
/// mod pb {
///     micro::include_proto!("greeter.v1");
/// }
/// ```
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}
