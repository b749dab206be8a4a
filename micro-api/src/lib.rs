//! micro-api: the HTTP API gateway (`micro api`): JSON over HTTP to any micro service, with
//! schemas read by gRPC reflection, no compiled stubs. `micro` re-exports it as `micro::api`
//! with feature `api`; the `micro` CLI (package `micro-cli`) serves it.
//!
//! [`Gateway`] finds services in a registry, fetches each one's schemas once by gRPC
//! reflection (again when the versions it registered change), and turns HTTP requests into
//! gRPC calls through a [`Client`](micro_core::Client):
//!
//! | request | does |
//! |---|---|
//! | `POST /{service}/{Service}/{Method}` | calls the method; `{Service}` short (`Greeter`) or full (`greeter.v1.Greeter`) |
//! | `POST /{service}/{Method}` | the same, when one service of `{service}` has a method of that name (also `{Service}.{Method}`) |
//! | REST routes | from `google.api.http` annotations, tried first |
//! | `GET /openapi.json` | the OpenAPI 3 document of every service's methods |
//! | `POST /event/{topic}` | publishes the JSON body on the broker (202) |
//! | `POST /oauth/token` | the OAuth2 token endpoint (RFC 6749) of the auth service `micro.auth` |
//! | `GET /.well-known/jwks.json` | the auth service's public keys (JWK Set) |
//!
//! With [`GatewayBuilder::auth`] every request that would call a service is decided by an
//! [`AuthLayer`](micro_core::auth::AuthLayer) first (401 / 403 with a JSON body and
//! `WWW-Authenticate: Bearer`), before its body is read; only the two OAuth2 paths, CORS
//! preflights and (unless turned off) `/openapi.json` are open.
//!
//! Bodies are protobuf's canonical JSON mapping; a client-streaming method takes a JSON
//! array. Server-streaming replies are NDJSON, or server-sent events with
//! `Accept: text/event-stream`, written as each message arrives. Errors are JSON
//! `{"code": "NOT_FOUND", "message": "…", "details": […]}` with the HTTP status of the
//! gRPC code; a client's mistake is always a 4xx. The full mapping (headers, deadlines,
//! limits, CORS) is in `docs/api-gateway.md`.
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = micro_core::registry::from_url("local")?;
//! let gateway = micro_api::Gateway::builder()
//!     .registry(registry)
//!     .timeout(std::time::Duration::from_secs(5))
//!     .cors_origin("https://app.example")
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! gateway
//!     .serve_with_shutdown(listener, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

mod auth;
pub mod dynamic;
mod error;
mod gateway;
mod handler;
mod metadata;
mod oauth;
// Being filled in (REST routes and the OpenAPI document); parts are not used yet.
#[allow(dead_code)]
pub(crate) mod openapi;
#[allow(dead_code)]
pub(crate) mod rest;
mod schemas;
mod state;

pub use gateway::{
    DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_HEADERS, DEFAULT_MAX_BODY,
    DEFAULT_MAX_HEADER_SIZE, DEFAULT_TIMEOUT, Gateway, GatewayBuilder, GatewayError,
};
pub use state::GATEWAY_NAME;

use prost_reflect::{DescriptorPool, ServiceDescriptor};

/// What the gateway knows of one registered service: its schemas, fetched by reflection.
#[derive(Debug)]
pub(crate) struct ServiceSchema {
    /// The registered name (`greeter`).
    pub(crate) name: String,
    /// The versions of the records the schemas were fetched for, sorted, joined by `,`;
    /// a change means the schemas are fetched again.
    pub(crate) version: String,
    /// Every file the service serves, with imports.
    pub(crate) pool: DescriptorPool,
    /// The gRPC services it serves, without health and reflection.
    pub(crate) services: Vec<ServiceDescriptor>,
    /// Its REST routes from `google.api.http` annotations (empty without any).
    pub(crate) rest: rest::RestRoutes,
}
