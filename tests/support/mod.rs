//! Shared helpers for the integration tests: child processes with readiness and cleanup,
//! and the greeter fixture (micro-testkit's). micro-cli's tests include this file too
//! (`micro-cli/tests/support/mod.rs`), adding the `micro` binary's helpers.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::{Path, PathBuf};

/// The greeter the in-process tests serve and call: micro-testkit's fixture (examples/greeter's
/// API plus `delay_ms`, a stalling stream, `arrived`), not the teaching example.
#[allow(unused_imports)] // each test binary uses a part
pub use micro_testkit::greeter::{FixtureGreeter, pb};

/// The one child-process runner (also micro-testkit's): readiness by ready lines, kill and
/// reap on drop.
#[allow(unused_imports)] // each test binary uses a part
pub use micro_test_engines::child::{Proc, READY_TIMEOUT, Ready};

/// A private local registry directory (micro-testkit's, as its cluster uses).
#[allow(unused_imports)] // each test binary uses a part
pub use micro_testkit::RegistryDir;

/// The path of an example binary. `cargo test` and `cargo nextest run` build examples
/// next to the test binaries (`target/<profile>/examples`).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test binary");
    // target/<profile>/deps/<test> → target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first (cargo build --examples, which scripts/test does)",
        path.display()
    );
    path
}

/// The path of one of micro-testkit's fixture binaries (`greeter-fixture`). Binaries of
/// another package are not in `CARGO_BIN_EXE_*`; cargo puts them in `target/<profile>/`.
pub fn fixture_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test binary");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build micro-testkit's binaries first (cargo build --workspace --all-targets, which scripts/test does)",
        path.display()
    );
    path
}

/// A [`FixtureGreeter`] as the service `greeter` on 127.0.0.1, registered in `registry`.
pub async fn start_test_greeter(
    registry: micro::registry::SharedRegistry,
) -> micro::service::RunningService {
    micro::Service::builder("greeter")
        .registry(registry)
        .address("127.0.0.1:0")
        .add_service(pb::greeter_server::GreeterServer::new(FixtureGreeter::new()))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

pub fn hello(name: &str) -> pb::HelloRequest {
    pb::HelloRequest {
        name: name.to_owned(),
        delay_ms: 0,
    }
}
