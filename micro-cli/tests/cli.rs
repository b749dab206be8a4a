//! The `micro` client commands against a real greeter process (micro-testkit's
//! `greeter-fixture`): `services`, `describe`, `call` (unary, server-streaming, bad input,
//! unknown names) and `health`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Proc, RegistryDir, fixture_bin, server::run_micro};

/// The greeter fixture registered in a private registry.
struct Greeter {
    registry: RegistryDir,
    _server: Proc,
}

impl Greeter {
    async fn start() -> Self {
        let registry = RegistryDir::new();
        let mut server = Proc::spawn(
            &fixture_bin("greeter-fixture"),
            &[],
            &[("MICRO_REGISTRY", registry.url())],
        );
        server.ready().await;
        Self {
            registry,
            _server: server,
        }
    }

    /// Runs `micro args…` with this registry; `(exit code, stdout, stderr)`.
    async fn micro(&self, args: &[&str]) -> (i32, String, String) {
        micro(self.registry.url(), args, None).await
    }
}

async fn micro(registry: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    run_micro(registry, args, &[], &[], stdin.map(str::as_bytes)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_describe_and_health() {
    let greeter = Greeter::start().await;

    let (code, out, err) = greeter.micro(&["services"]).await;
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.lines().any(|line| line.starts_with("greeter ")),
        "services lists greeter: {out}"
    );
    let (code, out, err) = greeter.micro(&["services", "--output", "json"]).await;
    assert_eq!(code, 0, "stderr: {err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("JSON list");
    assert_eq!(list[0]["name"], "greeter", "{out}");
    assert_eq!(list[0]["nodes"], 1, "{out}");

    let (code, out, err) = greeter.micro(&["describe", "greeter"]).await;
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.contains(
            "rpc greeter.v1.Greeter.SayHello(greeter.v1.HelloRequest) returns (greeter.v1.HelloReply)"
        ),
        "{out}"
    );
    assert!(
        out.contains("rpc greeter.v1.Greeter.StreamHellos(greeter.v1.StreamHellosRequest) returns (stream greeter.v1.HelloReply)"),
        "{out}"
    );
    assert!(out.contains("message greeter.v1.HelloRequest {"), "{out}");
    assert!(out.contains("string name = 1;"), "{out}");
    assert!(out.contains("uint32 delay_ms = 2;"), "{out}");
    assert!(
        !out.contains("grpc.health"),
        "infrastructure left out: {out}"
    );

    let (code, out, err) = greeter
        .micro(&["describe", "greeter", "--output", "json"])
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    let described: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let say_hello = described["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "greeter.v1.Greeter.SayHello")
        .unwrap_or_else(|| panic!("SayHello in {out}"));
    let fields: Vec<&str> = say_hello["request"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "delay_ms"]);
    assert_eq!(described["nodes"].as_array().unwrap().len(), 1);

    let (code, out, err) = greeter.micro(&["health", "greeter"]).await;
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.lines().nth(1).unwrap_or("").ends_with("SERVING"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_unary_and_server_streaming() {
    let greeter = Greeter::start().await;

    let (code, out, err) = greeter
        .micro(&[
            "call",
            "greeter",
            "greeter.v1.Greeter.SayHello",
            r#"{"name":"x"}"#,
        ])
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "{\"message\":\"Hello, x!\"}\n");

    // Short method names, the body from stdin and from a file.
    let (code, out, err) = micro(
        greeter.registry.url(),
        &["call", "greeter", "SayHello", "-d", "-"],
        Some(r#"{"name":"stdin"}"#),
    )
    .await;
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "{\"message\":\"Hello, stdin!\"}\n");
    let file = greeter.registry.path().join("body.json");
    std::fs::write(&file, r#"{"name":"file"}"#).unwrap();
    let data = format!("@{}", file.display());
    let (code, out, err) = greeter
        .micro(&["call", "greeter", "Greeter.SayHello", "-d", &data])
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "{\"message\":\"Hello, file!\"}\n");

    let (code, out, err) = greeter
        .micro(&[
            "call",
            "greeter",
            "greeter.v1.Greeter.StreamHellos",
            r#"{"name":"s","count":3}"#,
        ])
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"message":"Hello #1, s!"}"#,
            r#"{"message":"Hello #2, s!"}"#,
            r#"{"message":"Hello #3, s!"}"#
        ]
    );

    // The server's own refusal: a gRPC status, exit 1.
    let (code, out, err) = greeter
        .micro(&["call", "greeter", "SayHello", r#"{"name":""}"#])
        .await;
    assert_eq!(code, 1, "stdout: {out}");
    assert_eq!(err.trim(), "INVALID_ARGUMENT: name must not be empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_unknown_names() {
    let greeter = Greeter::start().await;

    let (code, _, err) = greeter
        .micro(&["call", "greeter", "SayHello", r#"{"name":"#])
        .await;
    assert_eq!(code, 2, "bad JSON: {err}");
    assert!(err.contains("not valid JSON"), "{err}");

    let (code, _, err) = greeter
        .micro(&["call", "greeter", "SayHello", r#"{"name":5}"#])
        .await;
    assert_eq!(code, 2, "wrong type: {err}");
    assert!(err.contains("field \"name\" (string)"), "{err}");

    let (code, _, err) = greeter
        .micro(&["call", "greeter", "SayHello", r#"{"nmae":"x"}"#])
        .await;
    assert_eq!(code, 2, "unknown field: {err}");
    assert!(err.contains("unknown field \"nmae\""), "{err}");

    let (code, _, err) = greeter
        .micro(&["call", "greeter", "greeter.v1.Greeter.SayGoodbye", "{}"])
        .await;
    assert_eq!(code, 2, "unknown method: {err}");
    assert!(err.contains("unknown method"), "{err}");
    assert!(
        err.contains("greeter.v1.Greeter.SayHello"),
        "lists methods: {err}"
    );

    let (code, _, err) = greeter
        .micro(&["call", "nosuchservice", "SayHello", "{}"])
        .await;
    assert_eq!(code, 3, "unknown service: {err}");
    assert!(err.contains("nosuchservice not found"), "{err}");
    let (code, _, err) = greeter.micro(&["health", "nosuchservice"]).await;
    assert_eq!(code, 3, "unknown service: {err}");

    // clap's usage errors.
    let (code, _, _) = greeter.micro(&["call", "greeter"]).await;
    assert_eq!(code, 2);
    let (code, _, _) = greeter
        .micro(&["call", "greeter", "SayHello", "--timeout", "soon"])
        .await;
    assert_eq!(code, 2);

    let (code, out, _) = greeter.micro(&["call", "--help"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("Exit codes:"), "{out}");
}

/// `micro server` serves several registered names on one port: each name shows and
/// resolves to its own methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_services_by_their_registered_names() {
    let registry = RegistryDir::new();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let mut server = Proc::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_micro")),
        &[
            "server",
            "--address",
            "127.0.0.1:0",
            "--api-address",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir,
            "--registry",
            registry.url(),
        ],
        &[
            ("MICRO_STORE", ""),
            ("MICRO_SYNC", ""),
            ("MICRO_BROKER", ""),
            ("MICRO_SERVER_ADDRESS", ""),
        ],
    );
    server.ready().await;

    let (code, out, err) = micro(registry.url(), &["describe", "micro.kv"], None).await;
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("rpc micro.kv.v1.Kv.Put("), "{out}");
    assert!(!out.contains("micro.config.v1"), "only kv's methods: {out}");
    // Nested messages and well-known imports (google.protobuf.Duration) resolve.
    assert!(out.contains("google.protobuf.Duration ttl = 3;"), "{out}");

    let put = r#"{"namespace":{"database":"micro","table":"cli"},"write":{"key":"k","value":"dg==","ttl":"60s"}}"#;
    let (code, out, err) = micro(registry.url(), &["call", "micro.kv", "Put", put], None).await;
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out.trim(), r#"{"version":"1"}"#);
    // `Get` is kv's and config's: the registered name settles it.
    let get = r#"{"namespace":{"database":"micro","table":"cli"},"key":"k"}"#;
    let (code, out, err) = micro(registry.url(), &["call", "micro.kv", "Get", get], None).await;
    assert_eq!(code, 0, "stderr: {err}");
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply["record"]["value"], "dg==", "{out}");
    // A nested value of the wrong type is named by its path.
    let (code, _, err) = micro(
        registry.url(),
        &["call", "micro.kv", "Get", r#"{"namespace":{"table":7}}"#],
        None,
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("field \"namespace.table\" (string)"), "{err}");

    let (code, out, err) = micro(registry.url(), &["health", "micro.server"], None).await;
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("SERVING"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_scripts_for_every_shell() {
    let registry = RegistryDir::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = micro(registry.url(), &["completion", shell], None).await;
        assert_eq!(code, 0, "{shell}: {err}");
        for command in ["call", "publish", "kv", "config", "completion"] {
            assert!(
                out.contains(command),
                "{shell} script names {command}: {out}"
            );
        }
        if shell == "bash" {
            let script = registry.path().join("micro.bash");
            std::fs::write(&script, &out).unwrap();
            let check = tokio::process::Command::new("bash")
                .arg("-n")
                .arg(&script)
                .output()
                .await
                .expect("run bash -n");
            assert!(
                check.status.success(),
                "bash -n: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
    let (code, _, _) = micro(registry.url(), &["completion", "tcsh"], None).await;
    assert_eq!(code, 2, "an unknown shell is a usage error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_counts_every_call() {
    let greeter = Greeter::start().await;
    let (code, out, err) = greeter
        .micro(&[
            "bench",
            "greeter",
            "SayHello",
            r#"{"name": "bench"}"#,
            "-n",
            "200",
            "-c",
            "4",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(code, 0, "stderr: {err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(report["calls"], 200, "{report}");
    assert_eq!(report["ok"], 200, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["codes"]["OK"], 200, "{report}");
    let latency = &report["latency_ms"];
    assert!(
        latency["min"].as_f64() <= latency["p50"].as_f64()
            && latency["p50"].as_f64() <= latency["max"].as_f64(),
        "{report}"
    );
    let histogram: u64 = report["histogram"]
        .as_array()
        .expect("histogram buckets")
        .iter()
        .map(|bucket| bucket["count"].as_u64().unwrap())
        .sum();
    assert_eq!(histogram, 200, "{report}");

    // Failing calls are counted by code, and exit 1.
    let (code, out, err) = greeter
        .micro(&[
            "bench", "greeter", "SayHello", "{}", "-n", "10", "-c", "2", "--output", "json",
        ])
        .await;
    assert_eq!(code, 1, "stderr: {err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(report["codes"]["INVALID_ARGUMENT"], 10, "{report}");
    assert!(err.contains("10 of 10 calls failed"), "stderr: {err}");

    // Unknown service: exit 3, as for call.
    let (code, _, _) = greeter
        .micro(&["bench", "nosuch", "SayHello", "{}", "-n", "1"])
        .await;
    assert_eq!(code, 3);
}
