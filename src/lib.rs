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
//! | `micro-plugins` | distributed engines behind features (to come) |
//! | `micro-platform` | platform services ([`platform`]): kv and registry, served by `micro server` |

pub use micro_core::{
    Channel, Client, ClientBuilder, Connector, NodeInfo, Registry, RegistryError, Selector,
    Service, ServiceBuilder, ServiceError, Store, StoreError, balance, client, context, middleware,
    registry, selector, service, store,
};

/// The platform services (`micro-platform`): the kv and registry services, their typed
/// clients, and [`platform::install`] for `MICRO_STORE=service` and
/// `MICRO_REGISTRY=service://host:port`.
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
