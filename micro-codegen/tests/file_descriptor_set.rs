//! The `FILE_DESCRIPTOR_SET` const: the service's file and all its imports, for reflection.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use prost::Message as _;
use prost_types::FileDescriptorSet;

/// The bytes of `pub const FILE_DESCRIPTOR_SET: &[u8] = b"...";` in `code`.
fn embedded_set(code: &str) -> Vec<u8> {
    let file = syn::parse_file(code).unwrap();
    file.items
        .iter()
        .find_map(|item| match item {
            syn::Item::Const(item) if item.ident == "FILE_DESCRIPTOR_SET" => match &*item.expr {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::ByteStr(bytes),
                    ..
                }) => Some(bytes.value()),
                _ => None,
            },
            _ => None,
        })
        .expect("a FILE_DESCRIPTOR_SET byte string const")
}

#[test]
fn holds_the_service_file_and_its_imports_dependencies_first() {
    let files = common::compile_greeter(micro_codegen::configure());
    let bytes = embedded_set(common::content(&files, "greeter.v1.rs"));
    let set = FileDescriptorSet::decode(bytes.as_slice()).unwrap();
    let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    assert_eq!(
        names,
        [
            "google/protobuf/empty.proto",
            "common/v1/types.proto",
            "greeter.proto"
        ]
    );

    let greeter = &set.file[2];
    assert_eq!(greeter.package(), "greeter.v1");
    let service = &greeter.service[0];
    assert_eq!(service.name(), "Greeter");
    assert_eq!(service.method.len(), 6);
    assert_eq!(
        service.method[0]
            .options
            .as_ref()
            .unwrap()
            .idempotency_level(),
        prost_types::method_options::IdempotencyLevel::Idempotent
    );
    assert!(set.file.iter().all(|f| f.source_code_info.is_none()));
}

#[test]
fn is_deterministic_and_independent_of_input_order() {
    let dir = common::protos_dir();
    let a = protox::compile(["greeter.proto", "common/v1/types.proto"], [&dir]).unwrap();
    let mut b = protox::compile(["common/v1/types.proto", "greeter.proto"], [&dir]).unwrap();
    b.file.reverse();
    let builder = micro_codegen::configure();
    let names = ["greeter.proto", "common/v1/types.proto"];
    assert_eq!(
        builder.generate(&a, &names).unwrap(),
        builder.generate(&b, &names).unwrap()
    );
}

#[test]
fn literal_is_plain_ascii() {
    let files = common::compile_greeter(micro_codegen::configure());
    let code = common::content(&files, "greeter.v1.rs");
    let line = code
        .lines()
        .find(|l| l.starts_with("pub const FILE_DESCRIPTOR_SET"))
        .unwrap();
    assert!(line.is_ascii());
    assert!(line.ends_with("\";"));
}

#[test]
fn keeps_custom_options_such_as_google_api_http() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("annotated.proto"),
        r#"
syntax = "proto3";
package annotated.v1;
import "google/protobuf/descriptor.proto";
extend google.protobuf.MethodOptions { string route = 50001; }
// A comment only source info holds.
service Annotated {
  rpc Get(Empty) returns (Empty) { option (route) = "/v1/keep-me-42"; }
}
message Empty {}
"#,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    micro_codegen::configure()
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile(&[dir.path().join("annotated.proto")], &[dir.path()])
        .unwrap();
    let files = common::read_dir(out.path());
    let bytes = embedded_set(common::content(&files, "annotated.v1.rs"));
    // prost_types drops extension options on decoding: the original bytes keep them.
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"/v1/keep-me-42"));
    assert!(!contains(b"A comment only source info holds."));
    let set = FileDescriptorSet::decode(bytes.as_slice()).unwrap();
    let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    assert_eq!(
        names,
        ["google/protobuf/descriptor.proto", "annotated.proto"]
    );
}
