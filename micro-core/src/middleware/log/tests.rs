//! What [`LogLayer`] logs: one event per call, its level by code, its fields, its span.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use tonic::{Code, Status};
use tower::{Layer, ServiceExt};
use tower_service::Service as _;
use tracing::{
    Event, Level, Metadata, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};

use super::*;
use crate::middleware::trace::TraceLayer;

// === a subscriber that keeps what it is given ===

/// One event as the subscriber saw it.
#[derive(Debug, Clone)]
struct Logged {
    level: Level,
    target: String,
    fields: BTreeMap<String, String>,
    /// The name and fields of the span the event belongs to.
    span: Option<(String, BTreeMap<String, String>)>,
}

#[derive(Debug, Default)]
struct Kept {
    events: Vec<Logged>,
    spans: Vec<(String, BTreeMap<String, String>)>,
    /// Entered spans, innermost last (the tests run on one thread).
    entered: Vec<u64>,
}

/// Keeps every event and span; set per test with [`tracing::subscriber::set_default`].
#[derive(Debug, Clone, Default)]
struct Capture(Arc<Mutex<Kept>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Capture {
    fn events(&self) -> Vec<Logged> {
        self.kept().events.clone()
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = BTreeMap::new();
        span.record(&mut Fields(&mut fields));
        let mut kept = self.kept();
        kept.spans.push((span.metadata().name().to_owned(), fields));
        Id::from_u64(kept.spans.len() as u64)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut kept = self.kept();
        if let Some((_, fields)) = usize::try_from(span.into_u64() - 1)
            .ok()
            .and_then(|i| kept.spans.get_mut(i))
        {
            values.record(&mut Fields(fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let mut kept = self.kept();
        let parent = match event.parent() {
            Some(id) => Some(id.into_u64()),
            None if event.is_contextual() => kept.entered.last().copied(),
            None => None,
        };
        let span = parent
            .and_then(|id| usize::try_from(id - 1).ok())
            .and_then(|i| kept.spans.get(i).cloned());
        kept.events.push(Logged {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            fields,
            span,
        });
    }

    fn enter(&self, span: &Id) {
        self.kept().entered.push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut kept = self.kept();
        if let Some(at) = kept.entered.iter().rposition(|&id| id == span.into_u64()) {
            kept.entered.remove(at);
        }
    }
}

// === calls ===

type Frames = Vec<Result<Frame<Bytes>, Status>>;
type TestBody = StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Status>>>>;

const PATH: &str = "/shop.Orders/Place";

fn request() -> Request<Empty<Bytes>> {
    Request::builder()
        .uri(PATH)
        .body(Empty::new())
        .unwrap_or_else(|err| panic!("a request to {PATH}: {err}"))
}

/// A reply with a message and `grpc-status` in its trailers.
fn reply(code: Code) -> Response<TestBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code as i32));
    let frames: Frames = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
        Ok(Frame::trailers(trailers)),
    ];
    Response::new(StreamBody::new(tokio_stream::iter(frames)))
}

/// A trailers-only reply: `grpc-status` in the headers, an empty body.
fn trailers_only(code: Code) -> Response<TestBody> {
    let mut response = Response::new(StreamBody::new(tokio_stream::iter(Vec::new())));
    response
        .headers_mut()
        .insert("grpc-status", HeaderValue::from(code as i32));
    response
}

/// Serves one call through `layer` with an inner service answering `answer(code)`, reads
/// the whole body, and returns what was logged.
async fn serve(layer: LogLayer, answer: fn(Code) -> Response<TestBody>, code: Code) -> Vec<Logged> {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.clone());
    let service = layer.layer(tower::service_fn(
        move |_: Request<Empty<Bytes>>| async move { Ok::<_, Infallible>(answer(code)) },
    ));
    let Ok(response) = service.oneshot(request()).await;
    let _ = response.into_body().collect().await;
    capture.events()
}

fn the_one(events: &[Logged]) -> &Logged {
    match events {
        [event] => event,
        _ => panic!("expected exactly one event, got {events:#?}"),
    }
}

// === tests ===

#[tokio::test]
async fn an_ok_call_is_logged_once_at_debug_with_its_fields() {
    let events = serve(LogLayer::server(), reply, Code::Ok).await;
    let event = the_one(&events);
    assert_eq!(event.level, Level::DEBUG);
    assert_eq!(event.target, "micro_core::middleware::log");
    assert_eq!(event.fields["message"], "call finished");
    assert_eq!(event.fields["side"], "server");
    assert_eq!(event.fields["path"], PATH);
    assert_eq!(event.fields["code"], "OK");
    // `?duration`: a Debug-formatted Duration such as `12.3µs`.
    let duration = &event.fields["duration"];
    assert!(duration.ends_with('s'), "duration {duration:?}");
}

#[tokio::test]
async fn the_level_follows_whose_fault_the_code_is() {
    use Code::*;
    // The table of the module docs.
    let expected = [
        (Ok, Level::DEBUG),
        (Cancelled, Level::INFO),
        (Unknown, Level::WARN),
        (InvalidArgument, Level::INFO),
        (DeadlineExceeded, Level::WARN),
        (NotFound, Level::INFO),
        (AlreadyExists, Level::INFO),
        (PermissionDenied, Level::INFO),
        (ResourceExhausted, Level::INFO),
        (FailedPrecondition, Level::INFO),
        (Aborted, Level::INFO),
        (OutOfRange, Level::INFO),
        (Unimplemented, Level::WARN),
        (Internal, Level::WARN),
        (Unavailable, Level::WARN),
        (DataLoss, Level::WARN),
        (Unauthenticated, Level::INFO),
    ];
    for (code, level) in expected {
        for answer in [reply, trailers_only] {
            let events = serve(LogLayer::client(), answer, code).await;
            let event = the_one(&events);
            assert_eq!(event.level, level, "{code:?}: {event:?}");
            assert_eq!(event.fields["code"], code_name(code));
            assert_eq!(event.fields["side"], "client");
            let message = if code == Ok {
                "call finished"
            } else {
                "call failed"
            };
            assert_eq!(event.fields["message"], message, "{code:?}");
        }
    }
}

#[tokio::test]
async fn nothing_is_logged_before_the_trailers_arrive() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.clone());
    let service = LogLayer::server().layer(tower::service_fn(|_: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(reply(Code::Unavailable))
    }));
    let Ok(response) = service.oneshot(request()).await;
    let mut body = response.into_body();
    let _ = body.frame().await;
    assert!(capture.events().is_empty(), "{:#?}", capture.events());
    let _ = body.frame().await;
    let event = the_one(&capture.events()).clone();
    assert_eq!(
        (event.level, event.fields["code"].as_str()),
        (Level::WARN, "UNAVAILABLE")
    );
}

#[tokio::test]
async fn a_failing_inner_service_and_a_dropped_call_are_logged() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.clone());

    let failing = LogLayer::client().layer(tower::service_fn(|_: Request<Empty<Bytes>>| async {
        Err::<Response<TestBody>, _>(Status::unavailable("no node of shop.Orders"))
    }));
    assert!(failing.oneshot(request()).await.is_err());

    // Called, then dropped before it answered: the caller gave up.
    let mut hanging = LogLayer::client().layer(tower::service_fn(|_: Request<Empty<Bytes>>| {
        std::future::pending::<Result<Response<TestBody>, Status>>()
    }));
    let call = hanging
        .ready()
        .await
        .unwrap_or_else(|err| panic!("not ready: {err}"))
        .call(request());
    drop(call);

    let events = capture.events();
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.level,
                e.fields["code"].as_str(),
                e.fields["path"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (Level::WARN, "UNAVAILABLE", PATH),
            (Level::INFO, "CANCELLED", PATH),
        ]
    );
}

#[tokio::test]
async fn inside_trace_layer_the_event_carries_the_calls_trace_id() {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.clone());
    let service = TraceLayer::server().layer(LogLayer::server().layer(tower::service_fn(
        |_: Request<Empty<Bytes>>| async { Ok::<_, Infallible>(reply(Code::NotFound)) },
    )));
    let mut request = request();
    request.headers_mut().insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let Ok(response) = service.oneshot(request).await;
    let _ = response.into_body().collect().await;

    let events = capture.events();
    let event = the_one(&events);
    assert_eq!(event.level, Level::INFO);
    let (name, fields) = event
        .span
        .as_ref()
        .unwrap_or_else(|| panic!("the event has no span: {event:#?}"));
    assert_eq!(name, "grpc.server");
    assert_eq!(fields["trace_id"], TRACE_ID);
    assert_eq!(fields["rpc.method"], "Place");
}
