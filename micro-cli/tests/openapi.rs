//! The gateway's OpenAPI document checked by tools micro did not write, against real
//! processes: greeter-server and bookshelf-server (REST annotations) behind `micro api`.
//!
//! - openapi-spec-validator validates the document;
//! - schemathesis fuzzes the gateway from the document: no 5xx, replies and errors as
//!   documented, schema-violating requests refused.
//!
//! `scripts/test` installs both in its virtualenv and sets `MICRO_TEST_PYTHON` and
//! `MICRO_TEST_SCHEMATHESIS`; without them the tests look in that virtualenv. When the tools
//! are nowhere (plain `cargo test` on a fresh machine) the tests say loudly that they did not
//! run; under CI (`CI=true`) they fail instead (`micro_test_engines::optional_tool`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use support::{Proc, RegistryDir, example_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one tool run may take before the test fails.
const TOOL_TIMEOUT: Duration = Duration::from_secs(600);

/// The registry, the services and the gateway, stopped on drop.
struct Setup {
    _registry: RegistryDir,
    _services: Vec<Proc>,
    _api: Proc,
    addr: String,
}

impl Setup {
    async fn start() -> Self {
        let registry = RegistryDir::new();
        let mut services = Vec::new();
        for name in ["greeter-server", "bookshelf-server"] {
            let mut service = Proc::spawn(
                &example_bin(name),
                &[],
                &[("MICRO_REGISTRY", registry.url())],
            );
            service.ready().await;
            services.push(service);
        }
        // The gateway's own local broker: `POST /event/{topic}` is served and documented
        // (the default, `micro server`'s event service, is not running here: 503).
        let mut api = Proc::spawn(
            Path::new(env!("CARGO_BIN_EXE_micro")),
            // The greeter may take up to 60 s on request (`delayMs`), which the
            // fuzzer does ask for: calls get the time, so they end in replies, not 504.
            &["api", "--address", "127.0.0.1:0", "--timeout", "65s"],
            &[
                ("MICRO_REGISTRY", registry.url()),
                ("MICRO_BROKER", "local"),
                ("MICRO_API_ADDRESS", ""),
            ],
        );
        let line = api.next_line(support::READY_TIMEOUT).await;
        let addr = line
            .strip_prefix("ready addr=")
            .unwrap_or_else(|| panic!("ready line expected, got {line:?}"))
            .to_owned();
        Self {
            _registry: registry,
            _services: services,
            _api: api,
            addr,
        }
    }

    /// `GET /openapi.json`, parsed.
    async fn document(&self) -> Value {
        let mut stream = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let request = format!(
            "GET /openapi.json HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
            .await
            .expect("the document in time")
            .unwrap();
        let response = String::from_utf8(response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        serde_json::from_str(body).unwrap_or_else(|err| panic!("not JSON ({err}): {body}"))
    }
}

/// The tool in `var` or in scripts/test's virtualenv; `None` after a loud `SKIPPED` banner
/// when it is nowhere, a failure instead under CI.
fn tool(name: &str, var: &str) -> Option<PathBuf> {
    micro_test_engines::optional_tool(
        name,
        var,
        "schemathesis and openapi-spec-validator in its virtualenv",
    )
}

/// Runs `command` to completion within [`TOOL_TIMEOUT`]; exit status and output.
async fn run(mut command: tokio::process::Command) -> (std::process::ExitStatus, String) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(TOOL_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} ran longer than {TOOL_TIMEOUT:?}"))
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_openapi() {
    let Some(python) = tool("python", "MICRO_TEST_PYTHON") else {
        return;
    };
    let setup = Setup::start().await;
    let document = setup.document().await;
    let paths = document["paths"].as_object().unwrap();
    // Both services, their RPC routes and the bookshelf's REST routes.
    for path in [
        "/greeter/Greeter/SayHello",
        "/greeter/Greeter/StreamHellos",
        "/bookshelf/Bookshelf/CreateBook",
        "/v1/shelves",
        "/v1/shelves/{name}",
        "/v1/shelves/{name_1}/books/{name_2}",
        "/v1/shelves/{name_1}/books/{name_2}:lend",
        "/v1/shelves/{parent}/books",
        "/v1/shelves/{shelf_id}/books:stream",
        "/v1/books/{name}",
        "/event/{topic}",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing: {:?}",
            paths.keys()
        );
    }
    assert!(!paths.keys().any(|path| path.contains("grpc.")));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, document.to_string()).unwrap();
    let mut command = tokio::process::Command::new(&python);
    command
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .current_dir(dir.path());
    let (status, output) = run(command).await;
    assert!(
        status.success(),
        "openapi-spec-validator refused the document: {output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let Some(schemathesis) = tool("schemathesis", "MICRO_TEST_SCHEMATHESIS") else {
        return;
    };
    let setup = Setup::start().await;
    // Readiness: the document lists both services before the run starts.
    let document = setup.document().await;
    assert!(document["paths"]["/v1/shelves"].is_object(), "{document}");

    // Hypothesis keeps a database in the working directory: a private one.
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(&schemathesis);
    command
        .args(["run", &format!("http://{}/openapi.json", setup.addr)])
        .args(["--checks", "all"])
        // Not applicable: the document is generated from protobuf types, which cannot
        // say what a service accepts beyond its types (the bookshelf's ids are 1 to 32
        // of a-z, 0-9 and '-'; page_size is 0 to 1000). Such schema-valid requests get
        // the service's INVALID_ARGUMENT (400), as they should. Everything else stays
        // on, negative_data_rejection included: schema-violating requests must be 4xx.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "30", "--seed", "20261128"])
        // Up to 60 s of requested delay (greeter's `delayMs`) is a valid reply, not a
        // slow one: the limits sit above it.
        .args([
            "--workers",
            "2",
            "--request-timeout",
            "70",
            "--max-response-time",
            "70",
        ])
        .args(["--generation-database", "none", "--no-color"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1");
    let (status, output) = run(command).await;
    assert!(status.success(), "schemathesis failed:\n{output}");
}
