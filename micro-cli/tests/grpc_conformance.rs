//! The gRPC over HTTP/2 rules every micro `Service` enforces before a handler runs, checked
//! with raw HTTP/2 requests (hyper's client, any headers and bytes) against a real
//! `micro server`: a request that breaks them must not write to the kv service.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use micro::{
    platform::{kv::KvClient, proto::kv::v1 as kv},
    store::{Namespace, Store},
};
use prost::Message;
use support::server::MicroServer;

const PUT: &str = "/micro.kv.v1.Kv/Put";

/// What came back: the HTTP status, and the gRPC status and message from the trailers (or
/// the headers of a trailers-only answer).
#[derive(Debug)]
struct Answer {
    http: StatusCode,
    grpc_status: Option<String>,
    grpc_message: String,
}

/// `POST path` over a fresh HTTP/2 connection, with `headers` and exactly `body`.
async fn raw(addr: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = Request::post(format!("http://{addr}{path}")).header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let http = response.status();
    let head = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let field = |map: &HeaderMap, name: &str| {
        map.get(name)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
    };
    Answer {
        http,
        grpc_status: field(&trailers, "grpc-status").or_else(|| field(&head, "grpc-status")),
        grpc_message: field(&trailers, "grpc-message")
            .or_else(|| field(&head, "grpc-message"))
            .unwrap_or_default(),
    }
}

/// A gRPC message: the 5-byte prefix and `message` encoded.
fn framed(message: &impl Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

fn put(key: &str) -> kv::PutRequest {
    kv::PutRequest {
        namespace: Some(kv::Namespace {
            database: "conformance".to_owned(),
            table: "raw".to_owned(),
        }),
        write: Some(kv::Write {
            key: key.to_owned(),
            value: b"written".to_vec(),
            ..Default::default()
        }),
    }
}

const GRPC: (&str, &str) = ("content-type", "application/grpc");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_breaking_the_grpc_spec_are_refused_before_the_handler() {
    let server = MicroServer::builder().start().await;
    let addr = server.addr.as_str();
    let store = KvClient::connect(addr).unwrap();
    let ns = Namespace::new("conformance", "raw").unwrap();

    // The raw client is right: a well-formed request writes.
    let answer = raw(addr, PUT, &[GRPC], framed(&put("control"))).await;
    assert_eq!(
        (answer.http, answer.grpc_status.as_deref()),
        (StatusCode::OK, Some("0")),
        "{answer:?}"
    );
    assert!(store.get(&ns, "control").await.unwrap().is_some());

    // Not gRPC: HTTP 415 (PROTOCOL-HTTP2.md), nothing written.
    for content_type in ["text/plain", "application/json", "application/grpc-web"] {
        let key = format!("content-type {content_type}");
        let answer = raw(
            addr,
            PUT,
            &[("content-type", content_type)],
            framed(&put(&key)),
        )
        .await;
        assert_eq!(
            answer.http,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{answer:?}"
        );
        assert!(
            answer.grpc_message.contains(content_type),
            "the message names the content-type: {answer:?}"
        );
        assert!(
            store.get(&ns, &key).await.unwrap().is_none(),
            "{key} was written"
        );
    }
    let answer = raw(addr, PUT, &[], framed(&put("no content-type"))).await;
    assert_eq!(
        answer.http,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{answer:?}"
    );
    assert!(store.get(&ns, "no content-type").await.unwrap().is_none());

    // Two messages to a unary method: UNIMPLEMENTED (a request cardinality violation in
    // doc/statuscodes.md), neither written.
    let mut two = framed(&put("first of two"));
    two.extend(framed(&put("second of two")));
    let answer = raw(addr, PUT, &[GRPC], two).await;
    assert_eq!(answer.grpc_status.as_deref(), Some("12"), "{answer:?}");
    assert!(answer.grpc_message.contains("cardinality"), "{answer:?}");
    for key in ["first of two", "second of two"] {
        assert!(
            store.get(&ns, key).await.unwrap().is_none(),
            "{key} was written"
        );
    }
    // None at all: the same.
    let answer = raw(addr, PUT, &[GRPC], Vec::new()).await;
    assert_eq!(answer.grpc_status.as_deref(), Some("12"), "{answer:?}");

    // A server-streaming method takes one request too.
    let check = framed(&tonic_health::pb::HealthCheckRequest::default());
    let mut two = check.clone();
    two.extend(&check);
    let answer = raw(addr, "/grpc.health.v1.Health/Watch", &[GRPC], two).await;
    assert_eq!(answer.grpc_status.as_deref(), Some("12"), "{answer:?}");

    // A malformed grpc-timeout: INTERNAL, nothing written (tonic ignored it and wrote).
    for timeout in ["garbage", "10", "123456789S", "1s", "-5S"] {
        let key = format!("timeout {timeout}");
        let answer = raw(
            addr,
            PUT,
            &[GRPC, ("grpc-timeout", timeout)],
            framed(&put(&key)),
        )
        .await;
        assert_eq!(
            (answer.http, answer.grpc_status.as_deref()),
            (StatusCode::OK, Some("13")),
            "{answer:?}"
        );
        assert!(answer.grpc_message.contains("grpc-timeout"), "{answer:?}");
        assert!(
            store.get(&ns, &key).await.unwrap().is_none(),
            "{key} was written"
        );
    }
    // A good one still writes.
    let answer = raw(
        addr,
        PUT,
        &[
            ("content-type", "application/grpc+proto"),
            ("grpc-timeout", "5S"),
        ],
        framed(&put("timeout ok")),
    )
    .await;
    assert_eq!(answer.grpc_status.as_deref(), Some("0"), "{answer:?}");
    assert!(store.get(&ns, "timeout ok").await.unwrap().is_some());

    server.stop().await;
}
