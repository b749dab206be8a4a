#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use tonic::Code;
use tower::ServiceExt;

use super::*;

/// A message's bytes with its 5-byte prefix.
fn message(payload: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(payload);
    framed
}

/// A body sent as these chunks.
fn chunked(chunks: Vec<Vec<u8>>) -> Body {
    let frames = chunks
        .into_iter()
        .map(|chunk| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(chunk))));
    Body::new(StreamBody::new(futures_util::stream::iter(frames)))
}

/// Reads `body` through [`SingleMessage`]: the bytes, or the status it failed with.
async fn read_single(body: Body) -> Result<Bytes, Status> {
    RequestBody::new(body, true, None)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|err| *err.downcast::<Status>().expect("a Status"))
}

#[tokio::test]
async fn one_message_passes_in_any_chunking() {
    let one = message(b"hello");
    for split in 0..=one.len() {
        let (a, b) = one.split_at(split);
        let read = read_single(chunked(vec![a.to_vec(), b.to_vec()])).await;
        assert_eq!(read.unwrap(), Bytes::from(one.clone()), "split at {split}");
    }
    // An empty message is one message.
    assert!(read_single(chunked(vec![message(b"")])).await.is_ok());
}

#[tokio::test]
async fn a_second_message_or_none_is_a_cardinality_violation() {
    let mut two = message(b"first");
    two.extend(message(b"second"));
    for split in [0, 3, 10, 11, 12, two.len()] {
        let (a, b) = two.split_at(split);
        let status = read_single(chunked(vec![a.to_vec(), b.to_vec()]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "split at {split}");
        assert!(status.message().contains("second"), "{status:?}");
    }
    // One stray byte after the message is a second message begun.
    let mut stray = message(b"x");
    stray.push(0);
    let status = read_single(chunked(vec![stray])).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    let status = read_single(chunked(vec![])).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("none"), "{status:?}");
}

#[test]
fn grpc_content_types() {
    for good in [
        "application/grpc",
        "application/grpc+proto",
        "application/grpc+json",
        "Application/GRPC",
        "application/grpc; charset=utf-8",
        "application/grpc+proto;x=y",
    ] {
        assert!(is_grpc(&HeaderValue::from_static(good)), "{good}");
    }
    for bad in [
        "text/plain",
        "application/json",
        "application/grpc-web",
        "application/grpc-web+proto",
        "application/grpcx",
        "application/grpc+",
        "application/grp",
        "",
    ] {
        assert!(!is_grpc(&HeaderValue::from_static(bad)), "{bad}");
    }
}

/// A service standing in for the routes: counts calls, reads the whole body like tonic's
/// unary path, and answers OK.
#[derive(Clone, Default)]
struct Handler {
    calls: Arc<AtomicUsize>,
}

impl Service<Request<Body>> for Handler {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let calls = self.calls.clone();
        Box::pin(async move {
            match request.into_body().collect().await {
                Ok(_) => {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(Status::ok("").into_http())
                }
                Err(err) => Ok(Status::from_error(err.into()).into_http()),
            }
        })
    }
}

fn grpc_request(path: &str, content_type: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut request = Request::post(path);
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    request
        .body(Body::new(http_body_util::Full::new(Bytes::from(body))))
        .unwrap()
}

fn grpc_status(response: &Response<ResponseBody<Body>>) -> Option<&str> {
    response
        .headers()
        .get("grpc-status")
        .map(|value| value.to_str().unwrap())
}

#[tokio::test]
async fn headers_that_break_the_spec_never_reach_the_handler() {
    let handler = Handler::default();
    let service = Conformance::new(handler.clone(), Rules::new([], None));
    let path = "/grpc.health.v1.Health/Check";

    for content_type in [Some("text/plain"), Some("application/json"), None] {
        let response = service
            .clone()
            .oneshot(grpc_request(path, content_type, message(b"")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(grpc_status(&response), Some("13"));
    }

    for timeout in ["garbage", "5", "123456789S", "1s", "-1S", "1.5S"] {
        let mut request = grpc_request(path, Some("application/grpc"), message(b""));
        request
            .headers_mut()
            .insert("grpc-timeout", HeaderValue::from_static(timeout));
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{timeout}");
        assert_eq!(grpc_status(&response), Some("13"), "{timeout}");
        let message = response.headers().get("grpc-message").unwrap();
        assert!(
            String::from_utf8_lossy(message.as_bytes()).contains("grpc-timeout"),
            "{message:?}"
        );
    }
    for method in [http::Method::GET, http::Method::PUT] {
        let mut request = grpc_request(path, Some("application/grpc"), message(b""));
        *request.method_mut() = method.clone();
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(response.headers()["allow"], "POST");
        assert_eq!(grpc_status(&response), Some("13"), "{method}");
    }
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);

    // And a good call does.
    let mut request = grpc_request(path, Some("application/grpc+proto"), message(b""));
    request
        .headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("99999999H"));
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(grpc_status(&response), Some("0"));
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn only_single_request_methods_are_held_to_one_message() {
    let handler = Handler::default();
    let service = Conformance::new(handler.clone(), Rules::new([], None));
    let mut two = message(b"a");
    two.extend(message(b"b"));

    let response = service
        .clone()
        .oneshot(grpc_request(
            "/grpc.health.v1.Health/Watch",
            Some("application/grpc"),
            two.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(grpc_status(&response), Some("12"));
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);

    // A client-streaming (or unknown) method takes any number.
    let response = service
        .clone()
        .oneshot(grpc_request(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            Some("application/grpc"),
            two,
        ))
        .await
        .unwrap();
    assert_eq!(grpc_status(&response), Some("0"));
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn large_messages_share_a_budget_until_their_answer_is_done() {
    let handler = Handler::default();
    let service = Conformance::new(handler.clone(), Rules::new([], Some(200 * 1024)));
    let large = || message(&vec![7; 120 * 1024]);
    let call = |body: Vec<u8>| {
        service.clone().oneshot(grpc_request(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            Some("application/grpc"),
            body,
        ))
    };

    // The first holds 120 KiB of 200 until its answer's body is done.
    let first = call(large()).await.unwrap();
    assert_eq!(grpc_status(&first), Some("0"));
    let refused = call(large()).await.unwrap();
    assert_eq!(grpc_status(&refused), Some("8"), "{:?}", refused.headers());
    // Small messages do not count.
    let small = call(message(&vec![7; 60 * 1024])).await.unwrap();
    assert_eq!(grpc_status(&small), Some("0"));
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2);

    first.into_body().collect().await.unwrap();
    let again = call(large()).await.unwrap();
    assert_eq!(grpc_status(&again), Some("0"));
    // A dropped answer gives its share back too.
    drop(again);
    let mut two = large();
    two.extend(large());
    // In one stream, a message gives its share back when the next one starts.
    let stream = call(two).await.unwrap();
    assert_eq!(grpc_status(&stream), Some("0"));
    assert_eq!(handler.calls.load(Ordering::SeqCst), 4);

    // One larger than the whole budget can never fit.
    let huge = call(message(&vec![7; 300 * 1024])).await.unwrap();
    assert_eq!(grpc_status(&huge), Some("8"));
}
