//! Interop with a gRPC client micro did not write: Python's grpcio lists the services
//! through reflection (v1alpha, as grpcio-reflection asks), calls SayHello with the
//! descriptors it fetched, sees a gRPC error for bad input, and checks health; and it reads
//! the trailing metadata micro handlers send with their OK replies, unary and streaming,
//! and gets RESOURCE_EXHAUSTED for a request over the server's limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::{Proc, RegistryDir, example_bin, fixture_bin};

/// The Python with grpcio, grpcio-reflection and grpcio-health-checking; `scripts/test`
/// sets this up and exports it.
fn python() -> String {
    // scripts/test's default virtualenv, when the variable is not set.
    let python = std::env::var("MICRO_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/micro/test-venv/bin/python")
    });
    let probe = Command::new(&python)
        .args(["-c", "import grpc, grpc_reflection, grpc_health"])
        .output();
    match probe {
        Ok(out) if out.status.success() => python,
        _ => panic!(
            "{python} cannot import grpc, grpc_reflection and grpc_health: run scripts/test, \
             which installs them, or set MICRO_TEST_PYTHON"
        ),
    }
}

#[tokio::test]
async fn grpcio_reflection_call_and_health() {
    let python = python();
    let registry = RegistryDir::new();
    let mut server = Proc::spawn(
        &example_bin("greeter-server"),
        &[],
        &[("MICRO_REGISTRY", registry.url())],
    );
    let ready = server.ready().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/grpcio_client.py"
    );
    let output = tokio::process::Command::new(&python)
        .args([script, &ready.addr])
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "grpcio client failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "services greeter.v1.Greeter,grpc.health.v1.Health,grpc.reflection.v1.ServerReflection,grpc.reflection.v1alpha.ServerReflection",
            "reply Hello, interop!",
            "empty-name INVALID_ARGUMENT name must not be empty",
            "health (server) SERVING",
            "health greeter.v1.Greeter SERVING",
        ],
        "stderr:\n{stderr}"
    );
}

#[tokio::test]
async fn grpcio_reads_trailers_and_resource_exhausted_over_the_limit() {
    let python = python();
    let registry = RegistryDir::new();
    let mut server = Proc::spawn(
        &fixture_bin("greeter-fixture"),
        &[],
        &[("MICRO_REGISTRY", registry.url())],
    );
    let ready = server.ready().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/grpcio_spec.py");
    let output = tokio::process::Command::new(&python)
        .args([script, &ready.addr])
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "grpcio client failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "unary OK Hello, trailers-py!",
            // grpcio decodes -bin values from base64 into bytes.
            "unary-trailers x-greeted='trailers-py' x-greeted-bin=b'trailers-py'",
            "plain-trailers none",
            "oversized RESOURCE_EXHAUSTED names-limit",
            "after Hello, after!",
            "stream OK 3",
            "stream-trailers x-sent='3'",
        ],
        "stderr:\n{stderr}"
    );
}
