use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::time::Instant;
use tonic::{Code, Status};

use super::*;

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Code>>>);

impl Seen {
    fn codes(&self) -> Vec<Code> {
        self.0.lock().unwrap().clone()
    }
}

impl OnStatus for Seen {
    fn on_status(self, code: Code) {
        self.0.lock().unwrap().push(code);
    }
}

type Frames = Vec<Result<Frame<Bytes>, Status>>;
type TestBody = StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Status>>>>;

fn body(frames: Frames) -> TestBody {
    StreamBody::new(tokio_stream::iter(frames))
}

fn trailers(code: &'static str) -> Frame<Bytes> {
    let mut map = HeaderMap::new();
    map.insert("grpc-status", HeaderValue::from_static(code));
    Frame::trailers(map)
}

async fn run(
    response: Response<impl http_body::Body<Data = Bytes, Error = Status> + Send + Unpin + 'static>,
) -> Vec<Code> {
    let seen = Seen::default();
    let future = ObservedFuture::new(
        async move { Ok::<_, Infallible>(response) },
        Some(seen.clone()),
        None,
    );
    let response = future.await.unwrap();
    let _ = response.into_body().collect().await;
    seen.codes()
}

#[tokio::test]
async fn reports_the_trailers_status_once() {
    let frames = vec![Ok(Frame::data(Bytes::from_static(b"x"))), Ok(trailers("5"))];
    assert_eq!(run(Response::new(body(frames))).await, [Code::NotFound]);
}

#[tokio::test]
async fn reports_a_trailers_only_response_from_its_headers() {
    let mut response = Response::new(body(vec![]));
    response
        .headers_mut()
        .insert("grpc-status", HeaderValue::from_static("16"));
    assert_eq!(run(response).await, [Code::Unauthenticated]);
}

#[tokio::test]
async fn maps_http_statuses_and_missing_trailers() {
    let mut response = Response::new(body(vec![]));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    assert_eq!(run(response).await, [Code::Unavailable]);
    let frames = vec![Ok(Frame::data(Bytes::from_static(b"x")))];
    assert_eq!(run(Response::new(body(frames))).await, [Code::Unknown]);
    let frames = vec![Err(Status::data_loss("torn"))];
    assert_eq!(run(Response::new(body(frames))).await, [Code::DataLoss]);
}

#[tokio::test]
async fn reports_errors_of_the_inner_service() {
    let seen = Seen::default();
    let error: BoxError = Box::new(Status::unavailable("no node"));
    let future = ObservedFuture::new(
        async move { Err::<Response<()>, _>(error) },
        Some(seen.clone()),
        None,
    );
    assert!(future.await.is_err());
    assert_eq!(seen.codes(), [Code::Unavailable]);

    let other: BoxError = "plain".into();
    assert_eq!(error_code(&other), Code::Unknown);
    let timeout: BoxError = Box::new(tonic::TimeoutExpired(()));
    assert_eq!(error_code(&timeout), Code::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn a_drop_is_cancelled_before_the_deadline_and_exceeded_after() {
    let seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(1);
    let pending = std::future::pending::<Result<Response<()>, Infallible>>();
    drop(ObservedFuture::new(
        pending,
        Some(seen.clone()),
        Some(deadline),
    ));
    let pending = std::future::pending::<Result<Response<()>, Infallible>>();
    let future = ObservedFuture::new(pending, Some(seen.clone()), Some(deadline));
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(future);
    assert_eq!(seen.codes(), [Code::Cancelled, Code::DeadlineExceeded]);
}

#[tokio::test]
async fn a_body_dropped_before_its_trailers_is_cancelled() {
    let seen = Seen::default();
    let frames = vec![Ok(Frame::data(Bytes::from_static(b"x"))), Ok(trailers("0"))];
    let response = Response::new(body(frames));
    let future = ObservedFuture::new(
        async move { Ok::<_, Infallible>(response) },
        Some(seen.clone()),
        None,
    );
    let mut body = future.await.unwrap().into_body();
    let _ = body.frame().await;
    assert!(seen.codes().is_empty());
    drop(body);
    assert_eq!(seen.codes(), [Code::Cancelled]);
}

#[test]
fn splits_grpc_paths() {
    assert_eq!(
        split_path("/greeter.v1.Greeter/SayHello"),
        Some(("greeter.v1.Greeter", "SayHello"))
    );
    for bad in ["", "/", "/a", "/a/", "//b", "/a/b/c", "a/b"] {
        assert_eq!(split_path(bad), None, "{bad}");
    }
}
