//! `protoc-gen-micro` under a real `protoc` writes exactly what the build script front end
//! writes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use std::{path::Path, process::Command};

use common::{compile_greeter, protos_dir, read_dir};

/// Runs `protoc` with the plugin built by cargo and `--micro_opt=<opt>` unless empty;
/// panics if protoc is not installed.
fn protoc(out: &Path, opt: &str, files: &[&str]) -> std::process::Output {
    let mut command = Command::new("protoc");
    if !opt.is_empty() {
        // Not `--micro_out=OPT:DIR`: protoc splits that at the first `:`, breaking `::micro_core`.
        command.arg(format!("--micro_opt={opt}"));
    }
    let output = command
        .arg(format!(
            "--plugin=protoc-gen-micro={}",
            env!("CARGO_BIN_EXE_protoc-gen-micro")
        ))
        .arg(format!("--micro_out={}", out.display()))
        .arg("-I")
        .arg(protos_dir())
        .args(files)
        .output();
    match output {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "this test needs `protoc` on the PATH: install it with \
             `apt-get install protobuf-compiler` (or your system's equivalent)"
        ),
        Err(err) => panic!("cannot run protoc: {err}"),
    }
}

#[test]
fn plugin_output_is_byte_identical_to_the_library() {
    let out = tempfile::tempdir().unwrap();
    let output = protoc(out.path(), "", &["greeter.proto", "common/v1/types.proto"]);
    assert!(
        output.status.success(),
        "protoc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let from_plugin = read_dir(out.path());
    let from_library = compile_greeter(micro_codegen::configure());
    assert_eq!(
        common::names(&from_plugin),
        ["common.v1.rs", "greeter.v1.rs"]
    );
    for (plugin, library) in from_plugin.iter().zip(&from_library) {
        assert_eq!(plugin.name, library.name);
        assert!(
            plugin.content == library.content,
            "{} differs between protoc-gen-micro and compile_protos",
            plugin.name
        );
    }
}

#[test]
fn plugin_parameters_match_builder_options() {
    let out = tempfile::tempdir().unwrap();
    let output = protoc(
        out.path(),
        "micro_path=::micro_core,client=false",
        &["greeter.proto", "common/v1/types.proto"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let from_library = compile_greeter(
        micro_codegen::configure()
            .micro_path("::micro_core")
            .build_client(false),
    );
    assert_eq!(read_dir(out.path()), from_library);
}

#[test]
fn only_requested_packages_are_written() {
    let out = tempfile::tempdir().unwrap();
    let output = protoc(out.path(), "", &["greeter.proto"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let files = read_dir(out.path());
    assert_eq!(common::names(&files), ["greeter.v1.rs"]);
    let from_library = compile_greeter(micro_codegen::configure());
    assert_eq!(files[0], from_library[1]);
}

#[test]
fn errors_are_printed_by_protoc() {
    let out = tempfile::tempdir().unwrap();
    let output = protoc(out.path(), "colour=blue", &["greeter.proto"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown parameter `colour`"), "{stderr}");
}
