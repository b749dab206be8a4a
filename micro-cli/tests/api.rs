//! The HTTP API gateway against real processes: the greeter fixture (micro-testkit's
//! `greeter-fixture`, which echoes `x-request-id`) and `micro api` (or `micro server` with
//! its gateway), over HTTP on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use support::{
    Proc, RegistryDir, fixture_bin,
    http::{CALL_TIMEOUT, Http, Reply},
    server::{MicroServer, start_micro_api},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// The shared `Reply` (tests/support/http.rs), with the API's error check.
impl Reply {
    /// Asserts the JSON error shape with `status` and `code`; the message.
    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_error_shape(self);
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        body["message"].as_str().unwrap().to_owned()
    }
}

fn assert_error_shape(reply: &Reply) {
    assert_eq!(
        reply.headers.get("content-type").unwrap(),
        "application/json",
        "{reply:?}"
    );
    let body = reply.json();
    assert!(body["code"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(body["details"].is_array(), "{body}");
}

/// The greeter fixture and `micro api` on one private registry.
struct Setup {
    registry: RegistryDir,
    http: Http,
    _greeter: Proc,
    api: Proc,
}

impl Setup {
    async fn start(extra: &[&str]) -> Self {
        let registry = RegistryDir::new();
        let mut greeter = Proc::spawn(
            &fixture_bin("greeter-fixture"),
            &[],
            &[("MICRO_REGISTRY", registry.url())],
        );
        greeter.ready().await;
        let (api, addr) = start_micro_api(registry.url(), extra).await;
        Self {
            http: Http::to(&addr),
            registry,
            _greeter: greeter,
            api,
        }
    }
}

/// `micro call` on `registry`: its stdout.
async fn micro_call(registry: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_micro"))
        .arg("call")
        .args(args)
        .env("MICRO_REGISTRY", registry)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CALL_TIMEOUT, output)
        .await
        .expect("micro call in time")
        .expect("micro call runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answer_as_micro_call_by_every_route_form() {
    let setup = Setup::start(&[]).await;
    let cli = micro_call(
        setup.registry.url(),
        &["greeter", "Greeter.SayHello", r#"{"name":"x"}"#],
    )
    .await;
    let expected: Value = serde_json::from_str(cli.trim()).unwrap();
    assert_eq!(expected, json!({"message": "Hello, x!"}));
    for path in [
        "/greeter/Greeter/SayHello",
        "/greeter/greeter.v1.Greeter/SayHello",
        "/greeter/SayHello",
        "/greeter/Greeter.SayHello",
    ] {
        let reply = setup.http.post(path, r#"{"name":"x"}"#).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        assert_eq!(
            reply.headers.get("content-type").unwrap(),
            "application/json"
        );
        assert_eq!(reply.json(), expected, "{path}");
    }
    // No content type and an empty body are fine: `{}` (the greeter refuses the name).
    let reply = setup
        .http
        .request(Method::POST, "/greeter/SayHello", &[], "")
        .await;
    assert!(reply.error(400, "INVALID_ARGUMENT").contains("name"));

    // Allow-listed headers reach the service as metadata; the reply's metadata comes back
    // as grpc-metadata-* headers (the greeter echoes x-request-id).
    let reply = setup
        .http
        .request(
            Method::POST,
            "/greeter/SayHello",
            &[
                ("x-request-id", "r-42"),
                ("content-type", "application/json"),
            ],
            r#"{"name":"x"}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers.get("grpc-metadata-x-request-id").unwrap(),
        "r-42",
        "{reply:?}"
    );

    // SIGTERM: a graceful exit with 0.
    let mut setup = setup;
    setup.api.signal(nix::sys::signal::Signal::SIGTERM);
    let status = setup.api.wait(CALL_TIMEOUT).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_are_4xx_json_errors() {
    let setup = Setup::start(&[]).await;
    let http = &setup.http;

    let message = http
        .post("/greeter/SayHello", r#"{"name": "x""#)
        .await
        .error(400, "INVALID_ARGUMENT");
    assert!(message.contains("not valid JSON"), "{message}");
    let message = http
        .post("/greeter/SayHello", r#"{"name": {}}"#)
        .await
        .error(400, "INVALID_ARGUMENT");
    assert!(message.contains("\"name\""), "{message}");
    let message = http
        .post("/greeter/SayHello", r#"{"delayMs": "abc"}"#)
        .await
        .error(400, "INVALID_ARGUMENT");
    assert!(message.contains("delayMs"), "{message}");
    let message = http
        .post("/greeter/SayHello", r#"{"nmae": "x"}"#)
        .await
        .error(400, "INVALID_ARGUMENT");
    assert!(message.contains("nmae"), "{message}");

    let message = http
        .post("/nobody/SayHello", "{}")
        .await
        .error(404, "NOT_FOUND");
    assert!(message.contains("nobody"), "{message}");
    http.post("/greeter/Greeter/Nope", "{}")
        .await
        .error(404, "NOT_FOUND");
    http.post("/greeter/Nope", "{}")
        .await
        .error(404, "NOT_FOUND");
    http.post("/greeter/Nobody/SayHello", "{}")
        .await
        .error(404, "NOT_FOUND");
    http.post("/a/b/c/d", "{}").await.error(404, "NOT_FOUND");

    let oversize = format!(r#"{{"name": "{}"}}"#, "x".repeat(5 * 1024 * 1024));
    http.post("/greeter/SayHello", oversize)
        .await
        .error(413, "RESOURCE_EXHAUSTED");

    for (header, value) in [("x-micro-timeout", "soon"), ("grpc-timeout", "5")] {
        let reply = http
            .request(
                Method::POST,
                "/greeter/SayHello",
                &[(header, value), ("content-type", "application/json")],
                r#"{"name":"x"}"#,
            )
            .await;
        // The 400 names the header and the bad value.
        let message = reply.error(400, "INVALID_ARGUMENT");
        assert!(
            message.contains(header) && message.contains(&format!("{value:?}")),
            "{message}"
        );
    }

    let reply = http
        .request(Method::GET, "/greeter/Greeter/SayHello", &[], "")
        .await;
    reply.error(405, "UNIMPLEMENTED");
    assert_eq!(reply.headers.get("allow").unwrap(), "POST");

    http.request(
        Method::POST,
        "/greeter/SayHello",
        &[("content-type", "text/plain")],
        r#"{"name":"x"}"#,
    )
    .await
    .error(415, "INVALID_ARGUMENT");
    http.request(
        Method::POST,
        "/greeter/SayHello",
        &[("accept", "text/html")],
        r#"{"name":"x"}"#,
    )
    .await
    .error(406, "INVALID_ARGUMENT");
    http.post("/event/bad%20topic!", "{}")
        .await
        .error(400, "INVALID_ARGUMENT");

    // Still serving after all that.
    let reply = http.post("/greeter/SayHello", r#"{"name":"x"}"#).await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// Bodies for the fuzz test: valid ones mutated, random bytes, deep nesting, huge numbers,
/// unicode.
fn fuzz_body(rng: &mut StdRng) -> Vec<u8> {
    const SEEDS: [&str; 6] = [
        r#"{"name":"x"}"#,
        r#"{"name":"x","delayMs":1}"#,
        r#"{"name":"ünïcødé ☃ 𝄞"}"#,
        r#"{"name":"x","delay_ms":0}"#,
        r#"{}"#,
        r#"{"name":"a\"b\\c\u0000"}"#,
    ];
    match rng.random_range(0..10) {
        0 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
        1 => {
            let depth = rng.random_range(1..5000);
            let mut text = "{\"name\":".repeat(depth);
            text.push_str("\"x\"");
            text.push_str(&"}".repeat(rng.random_range(0..=depth)));
            text.into_bytes()
        }
        2 => {
            let depth = rng.random_range(1..5000);
            format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
        }
        3 => {
            let number = match rng.random_range(0..4) {
                0 => "1e999999".to_owned(),
                1 => "-0.0".to_owned(),
                2 => "9".repeat(rng.random_range(1..400)),
                _ => format!("{}", rng.random::<f64>() * 1e300),
            };
            format!(r#"{{"name":"x","delayMs":{number}}}"#).into_bytes()
        }
        4 => {
            let name: String = (0..rng.random_range(0..40))
                .map(|_| char::from_u32(rng.random_range(0..0x11_0000)).unwrap_or('\u{fffd}'))
                .collect();
            serde_json::to_vec(&json!({ "name": name })).unwrap()
        }
        _ => {
            let mut bytes = SEEDS[rng.random_range(0..SEEDS.len())].as_bytes().to_vec();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..=bytes.len());
                match rng.random_range(0..3) {
                    0 if at < bytes.len() => bytes[at] ^= 1 << rng.random_range(0..8),
                    1 => bytes.truncate(at),
                    _ => {
                        let insert: &[u8] = match rng.random_range(0..6) {
                            0 => b"\"",
                            1 => b"{",
                            2 => b"]",
                            3 => b",",
                            4 => b"\\u",
                            _ => b"null",
                        };
                        bytes.splice(at..at, insert.iter().copied());
                    }
                }
            }
            bytes
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_bodies_get_json_answers_never_5xx() {
    const REQUESTS: usize = 10_000;
    const IN_FLIGHT: usize = 16;
    let setup = Setup::start(&[]).await;
    let mut rng = StdRng::seed_from_u64(0x6a7e_3a7e);
    let bodies: Vec<Vec<u8>> = (0..REQUESTS).map(|_| fuzz_body(&mut rng)).collect();
    let http = Arc::new(setup.http.clone());
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    futures_util::stream::iter(bodies)
        .for_each_concurrent(IN_FLIGHT, |body| {
            let http = http.clone();
            let ok = ok.clone();
            async move {
                let reply = http.post("/greeter/SayHello", body.clone()).await;
                if reply.status == StatusCode::OK {
                    let json = reply.json();
                    assert!(json["message"].is_string(), "{json}");
                    ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    assert!(
                        reply.status.is_client_error(),
                        "{} for {:?}: {:?}",
                        reply.status,
                        String::from_utf8_lossy(&body),
                        String::from_utf8_lossy(&reply.body)
                    );
                    assert_error_shape(&reply);
                }
            }
        })
        .await;
    let ok = ok.load(std::sync::atomic::Ordering::Relaxed);
    assert!(ok > 100, "some bodies were valid: {ok}");
    let reply = setup
        .http
        .post("/greeter/SayHello", r#"{"name":"x"}"#)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "the gateway is alive");
}

/// Reads a streamed reply frame by frame: each chunk and when it arrived.
async fn stream(http: &Http, accept: &str) -> (StatusCode, HeaderMap, Vec<(Instant, Bytes)>) {
    let request = Request::post(format!("http://{}/greeter/StreamHellos", http.addr))
        .header("content-type", "application/json")
        .header("accept", accept)
        .body(Full::new(Bytes::from(
            r#"{"name":"x","count":3,"intervalMs":300}"#,
        )))
        .unwrap();
    let exchange = async {
        let response = http.client.request(request).await.unwrap();
        let (parts, mut body) = response.into_parts();
        let mut chunks = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                chunks.push((Instant::now(), data));
            }
        }
        (parts.status, parts.headers, chunks)
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streams_arrive_message_by_message() {
    let setup = Setup::start(&[]).await;

    let (status, headers, chunks) = stream(&setup.http, "application/x-ndjson").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("content-type").unwrap(), "application/x-ndjson");
    let text: String = chunks
        .iter()
        .map(|(_, data)| String::from_utf8_lossy(data).into_owned())
        .collect();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            json!({"message": "Hello #1, x!"}),
            json!({"message": "Hello #2, x!"}),
            json!({"message": "Hello #3, x!"}),
        ]
    );
    let gap = chunks.last().unwrap().0 - chunks[0].0;
    assert!(gap >= Duration::from_millis(500), "all at once: {gap:?}");

    let (status, headers, chunks) = stream(&setup.http, "text/event-stream").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("content-type").unwrap(), "text/event-stream");
    let text: String = chunks
        .iter()
        .map(|(_, data)| String::from_utf8_lossy(data).into_owned())
        .collect();
    assert_eq!(
        text,
        "data: {\"message\":\"Hello #1, x!\"}\n\n\
         data: {\"message\":\"Hello #2, x!\"}\n\n\
         data: {\"message\":\"Hello #3, x!\"}\n\n"
    );
    let gap = chunks.last().unwrap().0 - chunks[0].0;
    assert!(gap >= Duration::from_millis(500), "all at once: {gap:?}");

    // An error before the first message is a plain error reply.
    setup
        .http
        .post("/greeter/StreamHellos", r#"{"name":"x","count":0}"#)
        .await
        .error(400, "INVALID_ARGUMENT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_cors_and_header_limits() {
    let setup = Setup::start(&["--cors-origin", "http://a.example"]).await;
    let http = &setup.http;

    let started = Instant::now();
    let reply = http
        .request(
            Method::POST,
            "/greeter/SayHello",
            &[
                ("content-type", "application/json"),
                ("x-micro-timeout", "200ms"),
            ],
            r#"{"name":"x","delayMs":2000}"#,
        )
        .await;
    reply.error(504, "DEADLINE_EXCEEDED");
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );

    let preflight = http
        .request(
            Method::OPTIONS,
            "/greeter/SayHello",
            &[
                ("origin", "http://a.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            "",
        )
        .await;
    assert!(preflight.status.is_success(), "{preflight:?}");
    assert_eq!(
        preflight
            .headers
            .get("access-control-allow-origin")
            .unwrap(),
        "http://a.example"
    );
    let reply = http
        .request(
            Method::POST,
            "/greeter/SayHello",
            &[
                ("origin", "http://a.example"),
                ("content-type", "application/json"),
            ],
            r#"{"name":"x"}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers.get("access-control-allow-origin").unwrap(),
        "http://a.example"
    );
    let other = http
        .request(
            Method::POST,
            "/greeter/SayHello",
            &[
                ("origin", "http://b.example"),
                ("content-type", "application/json"),
            ],
            r#"{"name":"x"}"#,
        )
        .await;
    assert!(other.headers.get("access-control-allow-origin").is_none());

    // A 100 KiB header: hyper answers 431 by itself.
    let mut tcp = tokio::net::TcpStream::connect(&http.addr).await.unwrap();
    let head = format!(
        "POST /greeter/SayHello HTTP/1.1\r\nhost: x\r\nx-big: {}\r\ncontent-length: 2\r\n\r\n{{}}",
        "a".repeat(100 * 1024)
    );
    // The server may answer and close before it has read everything.
    let _ = tcp.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(CALL_TIMEOUT, tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_server_serves_the_gateway_with_kv_and_events() {
    let server = MicroServer::builder().api().start().await;
    let addr = &server.addr;
    let http = Http::to(server.api_addr());

    let put = http
        .post(
            "/micro.kv/Kv/Put",
            r#"{"namespace":{"database":"d","table":"t"},"write":{"key":"k","value":"dg=="}}"#,
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{put:?}");
    let get = http
        .post(
            "/micro.kv/micro.kv.v1.Kv/Get",
            r#"{"namespace":{"database":"d","table":"t"},"key":"k"}"#,
        )
        .await;
    assert_eq!(get.status, StatusCode::OK, "{get:?}");
    assert!(get.json().to_string().contains("dg=="), "{get:?}");

    micro::platform::install();
    let subscriber = micro::broker::from_url(&format!("service://{addr}")).unwrap();
    // Ready once it returned: the service confirmed the subscription.
    let mut orders = subscriber
        .subscribe("api.orders", micro::broker::SubscribeOptions::default())
        .await
        .unwrap();
    let reply = http.post("/event/api.orders", r#"{"order":7}"#).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    assert_eq!(reply.json(), json!({}));
    let delivery = tokio::time::timeout(CALL_TIMEOUT, orders.next())
        .await
        .expect("a delivery in time")
        .expect("the subscription goes on")
        .unwrap();
    assert_eq!(&*delivery.topic, "api.orders");
    assert_eq!(&delivery.message.body[..], br#"{"order":7}"#);
    assert_eq!(
        delivery.message.headers.get("content-type").unwrap(),
        "application/json"
    );

    let document = http.request(Method::GET, "/openapi.json", &[], "").await;
    assert_eq!(document.status, StatusCode::OK);
    assert!(document.json()["openapi"].is_string());
}

/// Sends `head` (a request without its body) on a fresh connection and reads the first
/// answer: its status line, and its body when it has a `content-length`.
async fn first_answer(addr: &str, head: &str) -> (String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tcp = tokio::io::BufReader::new(tcp);
    tcp.get_mut().write_all(head.as_bytes()).await.unwrap();
    tokio::time::timeout(CALL_TIMEOUT, async {
        use tokio::io::AsyncBufReadExt;
        let mut status = String::new();
        tcp.read_line(&mut status).await.unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            tcp.read_line(&mut line).await.unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        tcp.read_exact(&mut body).await.unwrap();
        (status.trim().to_owned(), String::from_utf8(body).unwrap())
    })
    .await
    .expect("an answer while the body is still unsent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_content_length_gets_413_from_the_headers() {
    let registry = RegistryDir::new();
    let (_api, addr) = start_micro_api(registry.url(), &["--max-body", "4M"]).await;
    let eight_mib = 8 * 1024 * 1024;

    // The body is never sent: the answer must come from the headers alone.
    for path in ["/greeter/SayHello", "/event/orders.created", "/nowhere"] {
        let (status, body) = first_answer(
            &addr,
            &format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 content-length: {eight_mib}\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(status, "HTTP/1.1 413 Payload Too Large", "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], "RESOURCE_EXHAUSTED", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("4194304"),
            "{body}"
        );
        assert!(body["details"].is_array(), "{body}");
    }

    // A client that waits for 100 Continue gets the 413 instead.
    let (status, body) = first_answer(
        &addr,
        &format!(
            "POST /greeter/SayHello HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             expect: 100-continue\r\ncontent-length: {eight_mib}\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large", "{body}");

    // Within the limit it gets 100 Continue, then is read as usual.
    let (status, _) = first_answer(
        &addr,
        "POST /event/orders.created HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         expect: 100-continue\r\ncontent-length: 2\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 100 Continue");

    // Exactly at the limit is not too large (the body is not sent; the 408 comes later).
    let (status, _) = first_answer(
        &addr,
        "POST /event/orders.created HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         expect: 100-continue\r\ncontent-length: 4194304\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 100 Continue");
}
