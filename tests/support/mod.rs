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
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

#[allow(unreachable_pub, missing_docs)]
pub mod pb {
    micro::include_proto!("greeter.v1");
}

/// How long a child may take to print its ready line: generous, for a loaded CI machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A child process that is killed and reaped when dropped, also when a test panics.
pub struct Proc {
    pub name: String,
    child: Child,
    pub lines: Lines<BufReader<ChildStdout>>,
}

/// What a server printed on its ready line.
#[derive(Debug, Clone)]
pub struct Ready {
    pub addr: String,
    pub node: String,
}

impl Proc {
    /// Starts `bin` with `args` and `env`, stdout piped for reading, stderr inherited.
    pub fn spawn(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(bin);
        command
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            name: bin
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next stdout line, failing the test after `timeout` or at end of output.
    pub async fn next_line(&mut self, timeout: Duration) -> String {
        match tokio::time::timeout(timeout, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!("{} closed its output", self.name),
            Ok(Err(err)) => panic!("reading {} output: {err}", self.name),
            Err(_) => panic!("{} printed nothing for {timeout:?}", self.name),
        }
    }

    /// Reads lines until the `ready addr=… node=…` line.
    pub async fn ready(&mut self) -> Ready {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self.next_line(left).await;
            if let Some(rest) = line.strip_prefix("ready ") {
                let field = |key: &str| {
                    rest.split_whitespace()
                        .find_map(|kv| kv.strip_prefix(key))
                        .unwrap_or_else(|| panic!("ready line without {key}: {line}"))
                        .to_owned()
                };
                return Ready {
                    addr: field("addr="),
                    node: field("node="),
                };
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("child still running") as i32
    }

    /// Sends `signal` (SIGTERM, SIGSTOP, …).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal)
            .expect("signal child");
    }

    /// `kill -9`, then reap.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill child");
    }

    /// Waits for the child to exit, failing the test after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {timeout:?}", self.name))
            .expect("wait for child")
    }
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
