//! A proxy in front of a node answers a call itself, with an HTTP status other than 200
//! and no gRPC status (a 503 page from a load balancer, a 404 from a misrouted ingress):
//! the client maps the HTTP status to a gRPC code as gRPC's
//! `doc/http-grpc-status-mapping.md` says, and never reads the page as gRPC messages
//! (tonic alone read `<htm` as a message prefix: INTERNAL, or RESOURCE_EXHAUSTED for a
//! "message" of 1.7 GB).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use micro_core::{Channel, Client, client::retry::RetryPolicy};
use tokio::net::TcpListener;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// An HTTP/2 server on a free loopback port answering every request with the status named
/// in its `x-answer` header and an HTML page; bound before it is returned.
async fn proxy() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let service = hyper::service::service_fn(|request: Request<_>| async move {
                let status = request
                    .headers()
                    .get("x-answer")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u16>().ok())
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .unwrap_or(StatusCode::OK);
                let page = format!("<html><body>{status}</body></html>");
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(status)
                        .header("content-type", "text/html")
                        .body(Full::new(Bytes::from(page)))
                        .unwrap(),
                )
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    address
}

async fn check(channel: &Channel, answer: u16) -> tonic::Status {
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request
        .metadata_mut()
        .insert("x-answer", answer.to_string().parse().unwrap());
    HealthClient::new(channel.clone())
        .check(request)
        .await
        .expect_err("a proxy's page is no gRPC answer")
}

#[tokio::test]
async fn http_statuses_of_a_proxy_map_to_grpc_codes() {
    let address = proxy().await;
    // One attempt: the mapping, not the retries, is under test.
    let client = Client::builder()
        .retry_policy(RetryPolicy::default().max_attempts(1))
        .static_nodes("health", [address.as_str()])
        .build_static();
    let channel = client.channel("health");
    for (http, code) in [
        (400, Code::Internal),
        (401, Code::Unauthenticated),
        (403, Code::PermissionDenied),
        (404, Code::Unimplemented),
        (429, Code::Unavailable),
        (502, Code::Unavailable),
        (503, Code::Unavailable),
        (504, Code::Unavailable),
        // "Other: UNKNOWN".
        (500, Code::Unknown),
        (302, Code::Unknown),
        // 200, but an HTML page: not gRPC either.
        (200, Code::Unknown),
    ] {
        let status = check(&channel, http).await;
        assert_eq!(status.code(), code, "HTTP {http}: {status:?}");
        assert!(
            status.message().contains(&http.to_string()),
            "the message names the HTTP status {http}: {status:?}"
        );
    }
}
