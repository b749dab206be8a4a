//! The generated code: messages, tonic stubs, micro descriptors and impls.

mod common;

use common::{compile_greeter, content, names};

#[test]
fn one_file_per_local_package() {
    let files = compile_greeter(micro_codegen::configure());
    // google/protobuf/empty.proto maps to prost_types: no file of its own.
    assert_eq!(names(&files), ["common.v1.rs", "greeter.v1.rs"]);
    for file in &files {
        syn::parse_file(&file.content)
            .unwrap_or_else(|err| panic!("{} does not parse: {err}", file.name));
    }
}

#[test]
fn descriptor_const_lists_every_endpoint() {
    let files = compile_greeter(micro_codegen::configure());
    let code = content(&files, "greeter.v1.rs");
    let expected = [
        (
            "SayHello",
            "greeter.v1.HelloRequest",
            "greeter.v1.HelloReply",
            false,
            false,
            "Idempotent",
        ),
        (
            "StreamHellos",
            "greeter.v1.HelloRequest",
            "greeter.v1.HelloReply",
            false,
            true,
            "NoSideEffects",
        ),
        (
            "CollectHellos",
            "greeter.v1.HelloRequest",
            "greeter.v1.HelloReply",
            true,
            false,
            "Unknown",
        ),
        (
            "Chat",
            "greeter.v1.HelloRequest",
            "greeter.v1.HelloReply",
            true,
            true,
            "Unknown",
        ),
        (
            "Ping",
            "google.protobuf.Empty",
            "google.protobuf.Empty",
            false,
            false,
            "Unknown",
        ),
        (
            "List",
            "common.v1.Page",
            "greeter.v1.HelloReply",
            false,
            false,
            "Unknown",
        ),
    ];
    let mut endpoints = String::new();
    for (name, request, response, client_streaming, server_streaming, idempotency) in expected {
        endpoints.push_str(&format!(
            "        ::micro::codegen::EndpointDescriptor {{
            name: \"{name}\",
            request: \"{request}\",
            response: \"{response}\",
            client_streaming: {client_streaming},
            server_streaming: {server_streaming},
            idempotency: ::micro::codegen::Idempotency::{idempotency},
        }},
"
        ));
    }
    let descriptor = format!(
        "/// micro descriptor of the gRPC service `greeter.v1.Greeter`.
pub const GREETER_DESCRIPTOR: ::micro::codegen::ServiceDescriptor = ::micro::codegen::ServiceDescriptor {{
    name: \"greeter.v1.Greeter\",
    endpoints: &[
{endpoints}    ],
    file_descriptor_set: FILE_DESCRIPTOR_SET,
}};
impl<T> ::micro::codegen::DescribedService for greeter_server::GreeterServer<T> {{
    const DESCRIPTOR: &'static ::micro::codegen::ServiceDescriptor = &GREETER_DESCRIPTOR;
}}
"
    );
    assert!(
        code.contains(&descriptor),
        "missing\n{descriptor}\nin\n{code}"
    );
    assert!(code.contains("pub const FILE_DESCRIPTOR_SET: &[u8] = b\""));
    // Packages without services get no descriptor set.
    assert!(!content(&files, "common.v1.rs").contains("FILE_DESCRIPTOR_SET"));
}

#[test]
fn tonic_client_and_server_with_transport() {
    let files = compile_greeter(micro_codegen::configure());
    let code = content(&files, "greeter.v1.rs");
    assert!(code.contains("pub mod greeter_client {"));
    assert!(code.contains("pub mod greeter_server {"));
    assert!(code.contains("pub async fn connect<D>(dst: D)"));
    assert!(code.contains("pub struct GreeterServer<T> {"));
    assert!(code.contains("super::super::super::common::v1::Page"));
    // prost maps google.protobuf.Empty to `()`.
    assert!(code.contains("request: tonic::Request<()>,"));
}

#[test]
fn proto_comments_become_doc_comments() {
    let files = compile_greeter(micro_codegen::configure());
    let code = content(&files, "greeter.v1.rs");
    assert!(code.contains("/// A request to be greeted."));
    assert!(code.contains("/// Answers one greeting."));
    assert!(code.contains("/// Says hello in several ways."));
    assert!(content(&files, "common.v1.rs").contains("/// Zero-based page number."));
}

#[test]
fn micro_path_is_configurable() {
    let files = compile_greeter(micro_codegen::configure().micro_path("::micro_core"));
    let code = content(&files, "greeter.v1.rs");
    assert!(
        code.contains("pub const GREETER_DESCRIPTOR: ::micro_core::codegen::ServiceDescriptor")
    );
    assert!(code.contains("impl<T> ::micro_core::codegen::DescribedService for"));
    assert!(!code.contains("::micro::"));
}

#[test]
fn client_only_has_descriptor_but_no_impl() {
    let files = compile_greeter(micro_codegen::configure().build_server(false));
    let code = content(&files, "greeter.v1.rs");
    assert!(code.contains("pub const GREETER_DESCRIPTOR"));
    assert!(!code.contains("DescribedService"));
    assert!(!code.contains("greeter_server"));
    assert!(code.contains("pub mod greeter_client {"));
}

#[test]
fn server_only_has_no_client() {
    let files = compile_greeter(micro_codegen::configure().build_client(false));
    let code = content(&files, "greeter.v1.rs");
    assert!(!code.contains("greeter_client"));
    assert!(code.contains("DescribedService for greeter_server::GreeterServer<T>"));
}

#[test]
fn type_attribute_and_extern_path_reach_prost() {
    let files = compile_greeter(
        micro_codegen::configure()
            .type_attribute(".greeter.v1.HelloReply", "#[derive(Eq)]")
            .extern_path(".common.v1", "::shared::common"),
    );
    assert_eq!(names(&files), ["greeter.v1.rs"]);
    let code = content(&files, "greeter.v1.rs");
    assert!(code.contains("#[derive(Eq)]"));
    assert!(code.contains("::shared::common::Page"));
}

#[test]
fn generate_writes_nothing_and_matches_compile() {
    let dir = common::protos_dir();
    let fds = protox::compile(["greeter.proto", "common/v1/types.proto"], [&dir]).unwrap();
    let generated = micro_codegen::configure()
        .generate(&fds, &["greeter.proto", "common/v1/types.proto"])
        .unwrap();
    assert_eq!(generated, compile_greeter(micro_codegen::configure()));
}

#[test]
fn missing_out_dir_is_reported() {
    if std::env::var_os("OUT_DIR").is_some() {
        return;
    }
    let dir = common::protos_dir();
    let err = micro_codegen::compile_protos(&[dir.join("greeter.proto")], &[&dir]).unwrap_err();
    assert!(matches!(err, micro_codegen::Error::MissingOutDir), "{err}");
}
