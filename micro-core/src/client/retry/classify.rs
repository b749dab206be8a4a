//! What an attempt's outcome means for a retry: trailers-only statuses, HTTP statuses and
//! refused streams.

use std::error::Error as StdError;

use http::{HeaderMap, StatusCode};
use tonic::Code;

/// The header carrying a call's gRPC status.
const GRPC_STATUS: http::HeaderName = tonic::Status::GRPC_STATUS;

/// How an attempt ended, as far as retrying is concerned.
///
/// Map an attempt to it with [`Outcome::of_response`] or [`Outcome::of_send_error`], then
/// ask [`RetryPolicy::decide`](super::RetryPolicy::decide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The server answered with headers that do not carry an error; the status comes in the
    /// trailers, after the response was handed to the caller, and is never retried.
    Success,
    /// A trailers-only response (or a non-200 HTTP response) with this status.
    Status(Code),
    /// The request never reached a server: connect failure, the connection closed before
    /// the request was dispatched (e.g. after a GOAWAY), or the stream was refused.
    NotSent,
    /// The request was sent, then the connection or stream failed before any response
    /// headers: the server may have run the call.
    SendFailed,
}

// === impl Outcome ===

impl Outcome {
    /// The outcome of an attempt that returned response headers.
    pub(crate) fn of_response<B>(response: &http::Response<B>) -> Self {
        match response_status(response.status(), response.headers()) {
            None | Some(Code::Ok) => Outcome::Success,
            Some(code) => Outcome::Status(code),
        }
    }

    /// The outcome of an attempt whose `try_send_request` failed: `not_sent` is whether
    /// hyper handed the request back (`TrySendError::take_message` returned it).
    pub(crate) fn of_send_error(err: &hyper::Error, not_sent: bool) -> Self {
        if not_sent || is_refused_stream(err) {
            Outcome::NotSent
        } else {
            Outcome::SendFailed
        }
    }
}

/// The status of a response from its headers alone, if they carry one: the `grpc-status`
/// of a trailers-only response, else the gRPC code of a non-200 HTTP status. `None` for a
/// normal response, whose status comes in the trailers.
pub(crate) fn response_status(status: StatusCode, headers: &HeaderMap) -> Option<Code> {
    trailers_only_status(headers)
        .or_else(|| (status != StatusCode::OK).then(|| http_status_to_code(status)))
}

/// The code of a trailers-only response: one whose *headers* carry `grpc-status` (gRPC over
/// HTTP/2). A value that is not a number is `UNKNOWN`, as the specification asks.
pub(crate) fn trailers_only_status(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get(GRPC_STATUS)?;
    let code = std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .map_or(Code::Unknown, Code::from_i32);
    Some(code)
}

/// The gRPC code of a response that has no `grpc-status`, from its HTTP status, per the
/// gRPC specification's table (`doc/http-grpc-status-mapping.md`).
pub(crate) fn http_status_to_code(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// Whether the server refused the stream before processing it (`RST_STREAM` with
/// `REFUSED_STREAM`, RFC 9113 §8.7): the request may be sent again anywhere, transparently.
///
/// Walks `err`'s `source()` chain, so a `hyper::Error` or any error wrapping one works.
///
/// A GOAWAY is deliberately *not* treated the same: h2 hands the same GOAWAY error to
/// streams above the server's last-processed id (not processed) and, when the connection
/// then closes with an error code, to streams below it (maybe processed), so the error
/// alone does not tell them apart. Requests hyper had not dispatched yet when the GOAWAY
/// came are handed back by `try_send_request` and are [`Outcome::NotSent`] anyway.
pub(crate) fn is_refused_stream(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return !h2.is_go_away() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        next = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::{fmt, time::Duration};

    use http::HeaderValue;

    use super::*;

    fn headers(status: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_STATUS, HeaderValue::from_static(status));
        headers
    }

    #[test]
    fn trailers_only_statuses() {
        assert_eq!(trailers_only_status(&HeaderMap::new()), None);
        assert_eq!(trailers_only_status(&headers("0")), Some(Code::Ok));
        assert_eq!(
            trailers_only_status(&headers("14")),
            Some(Code::Unavailable)
        );
        assert_eq!(
            trailers_only_status(&headers("4")),
            Some(Code::DeadlineExceeded)
        );
        assert_eq!(trailers_only_status(&headers("x")), Some(Code::Unknown));
        assert_eq!(trailers_only_status(&headers("99")), Some(Code::Unknown));
    }

    #[test]
    fn http_statuses() {
        for (status, code) in [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (500, Code::Unknown),
            (302, Code::Unknown),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(http_status_to_code(status), code, "{status}");
        }
    }

    #[test]
    fn outcome_of_responses() {
        let ok = http::Response::new(());
        assert_eq!(Outcome::of_response(&ok), Outcome::Success);
        let mut trailers_only = http::Response::new(());
        *trailers_only.headers_mut() = headers("14");
        assert_eq!(
            Outcome::of_response(&trailers_only),
            Outcome::Status(Code::Unavailable)
        );
        *trailers_only.headers_mut() = headers("0");
        assert_eq!(Outcome::of_response(&trailers_only), Outcome::Success);
        let mut proxy_error = http::Response::new(());
        *proxy_error.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(
            Outcome::of_response(&proxy_error),
            Outcome::Status(Code::Unavailable)
        );
        // grpc-status wins over the HTTP status.
        *proxy_error.headers_mut() = headers("8");
        assert_eq!(
            Outcome::of_response(&proxy_error),
            Outcome::Status(Code::ResourceExhausted)
        );
    }

    #[derive(Debug)]
    struct Wrapper(h2::Error);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapper")
        }
    }

    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn refused_stream_in_a_source_chain() {
        let refused = Wrapper(h2::Error::from(h2::Reason::REFUSED_STREAM));
        assert!(is_refused_stream(&refused));
        let cancelled = Wrapper(h2::Error::from(h2::Reason::CANCEL));
        assert!(!is_refused_stream(&cancelled));
        let io = std::io::Error::other("connection reset");
        assert!(!is_refused_stream(&io));
    }

    /// A real HTTP/2 server that refuses or resets the stream; the client is hyper's, as
    /// in the channel.
    async fn hyper_error_from_server(reason: h2::Reason) -> hyper::Error {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(server_io).await.unwrap();
            if let Some(Ok((_request, mut respond))) = conn.accept().await {
                respond.send_reset(reason);
            }
            // Keep the connection open until the client goes.
            while conn.accept().await.is_some() {}
        });
        let (mut sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .handshake(hyper_util::rt::TokioIo::new(client_io))
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = http::Request::post("http://node/pkg.Svc/Method")
            .body(tonic::body::Body::empty())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request));
        response.await.unwrap().unwrap_err()
    }

    #[tokio::test]
    async fn refused_stream_from_hyper() {
        let err = hyper_error_from_server(h2::Reason::REFUSED_STREAM).await;
        assert!(is_refused_stream(&err), "{err:?}");
        assert_eq!(Outcome::of_send_error(&err, false), Outcome::NotSent);
    }

    #[tokio::test]
    async fn other_resets_from_hyper_are_send_failures() {
        let err = hyper_error_from_server(h2::Reason::INTERNAL_ERROR).await;
        assert!(!is_refused_stream(&err), "{err:?}");
        assert_eq!(Outcome::of_send_error(&err, false), Outcome::SendFailed);
        assert_eq!(Outcome::of_send_error(&err, true), Outcome::NotSent);
    }
}
