//! Answers that are not gRPC: a proxy or load balancer in front of a node answering a call
//! itself (a 503 page, a 404 from a misrouted ingress, a login page), with no `grpc-status`.
//!
//! tonic would read such a body as gRPC messages: an HTML page's first bytes make a
//! "compression flag" and a length of gigabytes, and the call fails with INTERNAL, a
//! protocol error, or waits for bytes that never come. gRPC's
//! `doc/http-grpc-status-mapping.md` asks a client to take the code from the HTTP status
//! instead; the channel turns the answer into a trailers-only one with that code and never
//! reads the body. The retry policy already classifies such an attempt by the same table
//! (`retry::classify`), so a 503 is retried like UNAVAILABLE.

use http::{HeaderValue, Response, StatusCode, header::CONTENT_TYPE};
use tonic::Status;

use super::retry::http_status_to_code;
use crate::middleware::conformance::is_grpc;

/// Turns `response` from a node of `service` into a trailers-only gRPC answer when it is
/// not a gRPC answer (no `grpc-status` in its headers, and an HTTP status other than 200
/// or a `content-type` other than gRPC's). Returns whether it did: then its body must not
/// be read.
pub(crate) fn answer_not_grpc<B>(response: &mut Response<B>, service: &str) -> bool {
    let headers = response.headers();
    if headers.contains_key("grpc-status") {
        return false;
    }
    let content_type = headers.get(CONTENT_TYPE);
    let http = response.status();
    if http == StatusCode::OK && content_type.is_none_or(is_grpc) {
        return false;
    }
    let shown = content_type.map_or_else(
        || "none".to_owned(),
        |value| String::from_utf8_lossy(value.as_bytes()).into_owned(),
    );
    let code = if http == StatusCode::OK {
        tonic::Code::Unknown
    } else {
        http_status_to_code(http)
    };
    let status = Status::new(
        code,
        format!(
            "a node of service {service} answered HTTP {http} with content-type {shown}, not \
             gRPC: a proxy or load balancer in between answered for it?"
        ),
    );
    tracing::debug!(service, %http, content_type = %shown, "not a gRPC answer");
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    if status.add_header(headers).is_err() {
        headers.insert("grpc-status", HeaderValue::from(code as i32));
    }
    // tonic reads trailers-only answers from any HTTP status, but say it plainly.
    *response.status_mut() = StatusCode::OK;
    true
}
