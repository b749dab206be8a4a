//! Shared helpers for the integration tests: child processes with readiness and cleanup,
//! and the greeter stubs. micro-cli's tests include this file too
//! (`micro-cli/tests/support/mod.rs`), adding the `micro` binary's helpers.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

#[allow(unreachable_pub, missing_docs)]
pub mod pb {
    micro::include_proto!("greeter.v1");
}

/// The one child-process runner (also micro-testkit's): readiness by ready lines, kill and
/// reap on drop.
#[allow(unused_imports)] // each test binary uses a part
pub use micro_test_engines::child::{Proc, READY_TIMEOUT, Ready};

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

/// A private local registry directory, plus the `MICRO_REGISTRY` value pointing at it.
pub struct RegistryDir {
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl RegistryDir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("local://{}", dir.path().display());
        Self { dir, url }
    }

    pub fn registry(&self) -> micro::registry::SharedRegistry {
        micro::registry::from_url(&self.url).expect("local registry")
    }
}

impl Default for RegistryDir {
    fn default() -> Self {
        Self::new()
    }
}

/// An in-process greeter for tests, answering `Hello, <name>!` after `delay_ms`.
/// `arrived` is notified as each call reaches the handler.
#[derive(Debug, Default, Clone)]
pub struct TestGreeter {
    pub arrived: std::sync::Arc<tokio::sync::Notify>,
}

#[tonic::async_trait]
impl pb::greeter_server::Greeter for TestGreeter {
    async fn say_hello(
        &self,
        request: tonic::Request<pb::HelloRequest>,
    ) -> Result<tonic::Response<pb::HelloReply>, tonic::Status> {
        self.arrived.notify_one();
        let request = request.into_inner();
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(request.delay_ms.into())).await;
        }
        Ok(tonic::Response::new(pb::HelloReply {
            message: format!("Hello, {}!", request.name),
        }))
    }

    type StreamHellosStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::HelloReply, tonic::Status>> + Send>,
    >;

    async fn stream_hellos(
        &self,
        request: tonic::Request<pb::StreamHellosRequest>,
    ) -> Result<tonic::Response<Self::StreamHellosStream>, tonic::Status> {
        let request = request.into_inner();
        let stall = request.name == "stall";
        let replies = (1..=request.count).map(move |i| {
            Ok(pb::HelloReply {
                message: format!("Hello #{i}, {}!", request.name),
            })
        });
        let replies = tokio_stream::iter(replies);
        if stall {
            // The first greetings, then silence: a stream that never ends by itself.
            use tokio_stream::StreamExt;
            return Ok(tonic::Response::new(Box::pin(
                replies.chain(tokio_stream::pending()),
            )));
        }
        Ok(tonic::Response::new(Box::pin(replies)))
    }
}

/// A [`TestGreeter`] as the service `greeter` on 127.0.0.1, registered in `registry`.
pub async fn start_test_greeter(
    registry: micro::registry::SharedRegistry,
) -> micro::service::RunningService {
    micro::Service::builder("greeter")
        .registry(registry)
        .address("127.0.0.1:0")
        .add_service(pb::greeter_server::GreeterServer::new(
            TestGreeter::default(),
        ))
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
