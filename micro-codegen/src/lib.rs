//! Code generation for micro: `.proto` files to prost messages, tonic clients and servers,
//! and the micro descriptors `micro::Service` uses to register and reflect services.
//!
//! Parsing is done by [protox](https://docs.rs/protox) in pure Rust: no `protoc` is needed.
//!
//! # In a build script
//!
//! ```rust,no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     micro_codegen::compile_protos(&["proto/greeter.proto"], &["proto"])?;
//!     Ok(())
//! }
//! ```
//!
//! with `micro-codegen` under `[build-dependencies]`. This writes one file per proto package
//! to `OUT_DIR`, named after the package (`greeter.v1.rs`); include it where you want the
//! module:
//!
//! ```rust,ignore
//! pub mod greeter {
//!     pub mod v1 {
//!         micro::include_proto!("greeter.v1");
//!     }
//! }
//! ```
//!
//! `micro::include_proto!("greeter.v1")` is
//! `include!(concat!(env!("OUT_DIR"), "/greeter.v1.rs"))`. As with prost, types of other
//! packages are named by relative paths (`super::super::common::v1::Page`), so nest the
//! modules like the package names, siblings at the same level. Use [`configure`] for options
//! (client or server only, output directory, `extern_path`, the path to micro).
//!
//! # What is generated
//!
//! For each package, prost's messages and enums; for each service `Greeter`, tonic's
//! `greeter_client` and `greeter_server` modules, plus:
//!
//! ```rust,ignore
//! /// micro descriptor of the gRPC service `greeter.v1.Greeter`.
//! pub const GREETER_DESCRIPTOR: ::micro::codegen::ServiceDescriptor = /* name, endpoints
//!     with request/response types, streaming and idempotency, FILE_DESCRIPTOR_SET */;
//! impl<T> ::micro::codegen::DescribedService for greeter_server::GreeterServer<T> {
//!     const DESCRIPTOR: &'static ::micro::codegen::ServiceDescriptor = &GREETER_DESCRIPTOR;
//! }
//! /// Encoded `google.protobuf.FileDescriptorSet` of the package's files and imports.
//! pub const FILE_DESCRIPTOR_SET: &[u8] = b"...";
//! ```
//!
//! The generated code names `tonic`, `tonic_prost` and `prost` (and `prost_types` for
//! well-known types), so the crate including it needs them as dependencies.
//!
//! # With protoc or buf
//!
//! The `protoc-gen-micro` binary of this crate is a protoc plugin producing the very same
//! files (`cargo install micro-codegen` puts it on the `PATH`):
//!
//! ```text
//! protoc -I proto --micro_out=src/gen proto/greeter.proto
//! protoc -I proto --micro_opt=micro_path=::micro_core,client=false --micro_out=src/gen proto/greeter.proto
//! ```
//!
//! (pass options with `--micro_opt`: protoc would split `--micro_out=micro_path=::x:DIR`
//! at its first `:`), or, in `buf.gen.yaml`:
//!
//! ```yaml
//! version: v2
//! plugins:
//!   - local: protoc-gen-micro
//!     out: src/gen
//!     opt: [micro_path=::micro_core]
//! ```
//!
//! protoc writes the packages of the files named on its command line only, so name the
//! imported local files too. Parameters are listed in [`plugin::run`].
//!
//! # Contents
//!
//! - [`compile_protos`], [`configure`] and [`Builder`]: the build script front end;
//! - [`plugin`]: the protoc plugin front end;
//! - [`GeneratedFile`]: one output file, from [`Builder::generate`];
//! - [`Error`]: what can go wrong; parse errors read `file:line:column: message`.

mod builder;
mod error;
mod extras;
mod generator;
pub mod plugin;

use std::path::Path;

pub use builder::Builder;
pub use error::Error;
pub use generator::GeneratedFile;

/// A [`Builder`] with the defaults, to change some before compiling.
pub fn configure() -> Builder {
    Builder::default()
}

/// Compiles `protos`, finding imports under `includes`, into `OUT_DIR` with the defaults
/// of [`configure`]: client and server, micro at `::micro`.
///
/// # Errors
///
/// [`Error::Parse`] when a file is missing or invalid, with the location as
/// `file:line:column`; [`Error::Io`] when writing fails; [`Error::MissingOutDir`] outside a
/// build script.
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), Error> {
    configure().compile(protos, includes)
}
