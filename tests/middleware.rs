//! Call context and middleware in-process: the deadline and metadata a handler sees,
//! `traceparent` from a client span to the server's span and context, metrics by method,
//! node and code, interceptors on both sides, and the order of the server stack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use micro::{
    Client, Service,
    registry::{MemoryRegistry, SharedRegistry},
    service::RunningService,
};
use micro_core::{
    context::{Context, TraceContext},
    middleware::interceptor_fn,
};
use support::{
    hello,
    pb::{
        HelloReply, HelloRequest, StreamHellosRequest,
        greeter_client::GreeterClient,
        greeter_server::{Greeter, GreeterServer},
    },
};
use tonic::{Code, Status, body::Body};
use tracing::{
    Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{layer::Context as LayerContext, prelude::*, registry::LookupSpan};

/// What a handler saw of its call.
#[derive(Debug, Clone, Default)]
struct Seen {
    remaining: Option<Duration>,
    trace: Option<TraceContext>,
    traceparent: Option<TraceContext>,
    tenant: Option<String>,
}

/// A greeter that records the context of each call; "fail" is NOT_FOUND.
#[derive(Clone, Default)]
struct ContextGreeter {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl ContextGreeter {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl Greeter for ContextGreeter {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, Status> {
        let context = Context::current().expect("handlers run inside a context");
        self.seen.lock().unwrap().push(Seen {
            remaining: context.remaining(),
            trace: context.trace().copied(),
            traceparent: request
                .metadata()
                .get("traceparent")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok()),
            tenant: context
                .metadata()
                .get("x-micro-tenant")
                .map(|value| value.to_str().unwrap().to_owned()),
        });
        let request = request.into_inner();
        if request.name == "fail" {
            return Err(Status::not_found("no such friend"));
        }
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(request.delay_ms.into())).await;
        }
        Ok(tonic::Response::new(HelloReply {
            message: format!("Hello, {}!", request.name),
        }))
    }

    type StreamHellosStream =
        Pin<Box<dyn futures_util::Stream<Item = Result<HelloReply, Status>> + Send>>;

    /// Each message says whether the context was there when the stream produced it.
    async fn stream_hellos(
        &self,
        request: tonic::Request<StreamHellosRequest>,
    ) -> Result<tonic::Response<Self::StreamHellosStream>, Status> {
        let count = request.into_inner().count;
        let replies = futures_util::stream::iter(0..count).map(|_| {
            let tenant = Context::current().and_then(|context| {
                context
                    .metadata()
                    .get("x-micro-tenant")
                    .map(|value| value.to_str().unwrap().to_owned())
            });
            Ok(HelloReply {
                message: tenant.unwrap_or_default(),
            })
        });
        Ok(tonic::Response::new(Box::pin(replies)))
    }
}

fn memory() -> SharedRegistry {
    Arc::new(MemoryRegistry::new())
}

async fn start(registry: &SharedRegistry, builder: micro::ServiceBuilder) -> RunningService {
    builder
        .registry(registry.clone())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

fn greeter_service(greeter: &ContextGreeter) -> micro::ServiceBuilder {
    Service::builder("greeter").add_service(GreeterServer::new(greeter.clone()))
}

fn call(name: &str, timeout: Option<Duration>) -> tonic::Request<HelloRequest> {
    let mut request = tonic::Request::new(hello(name));
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
}

#[tokio::test]
async fn handler_sees_the_callers_deadline_and_metadata() {
    let registry = memory();
    let greeter = ContextGreeter::default();
    let running = start(&registry, greeter_service(&greeter)).await;
    let mut client = GreeterClient::new(Client::new(registry.clone()).channel("greeter"));

    let mut request = call("micro", Some(Duration::from_millis(800)));
    request
        .metadata_mut()
        .insert("x-micro-tenant", "acme".parse().unwrap());
    request
        .metadata_mut()
        .insert("x-other", "stays".parse().unwrap());
    client.say_hello(request).await.unwrap();

    let seen = greeter.seen();
    let remaining = seen[0].remaining.expect("a deadline from grpc-timeout");
    assert!(
        remaining <= Duration::from_millis(800) && remaining > Duration::from_millis(500),
        "{remaining:?}"
    );
    assert_eq!(seen[0].tenant.as_deref(), Some("acme"));
    assert!(
        seen[0].trace.is_some(),
        "a new root trace without traceparent"
    );

    // A streaming handler's stream runs as the body is sent, still inside the context.
    let mut request = tonic::Request::new(StreamHellosRequest {
        name: String::new(),
        count: 3,
        interval_ms: 0,
    });
    request
        .metadata_mut()
        .insert("x-micro-tenant", "streamed".parse().unwrap());
    let replies: Vec<_> = client
        .stream_hellos(request)
        .await
        .unwrap()
        .into_inner()
        .map(|reply| reply.unwrap().message)
        .collect()
        .await;
    assert_eq!(replies, ["streamed", "streamed", "streamed"]);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn traceparent_flows_from_the_client_span_to_the_server_span_and_context() {
    let spans = Spans::default();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let registry = memory();
    let greeter = ContextGreeter::default();
    let running = start(&registry, greeter_service(&greeter)).await;
    // Client tracing is one of the channel's default layers.
    let channel = Client::new(registry.clone()).channel("greeter");
    let mut client = GreeterClient::new(channel);

    let caller = TraceContext::new_root();
    Context::new()
        .with_trace(caller)
        .scope(client.say_hello(call("traced", None)))
        .await
        .unwrap();

    let seen = greeter.seen().pop().unwrap();
    let sent = seen.traceparent.expect("the client sent traceparent");
    let server = seen.trace.expect("the server context has a trace");
    assert_eq!(
        sent.trace_id, caller.trace_id,
        "the client span is in the caller's trace"
    );
    assert_ne!(
        sent.span_id, caller.span_id,
        "the client span is a new span"
    );
    assert_eq!(
        server.trace_id, caller.trace_id,
        "the server is in the caller's trace"
    );
    assert_ne!(
        server.span_id, sent.span_id,
        "the server span is a new span"
    );

    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let client_span = spans.named("grpc.client");
    assert_eq!(client_span["trace_id"], hex(&caller.trace_id));
    assert_eq!(client_span["span_id"], hex(&sent.span_id));
    assert_eq!(client_span["parent_span_id"], hex(&caller.span_id));
    assert_eq!(client_span["rpc.service"], "greeter.v1.Greeter");
    assert_eq!(client_span["rpc.method"], "SayHello");
    assert_eq!(client_span["node"], running.node_id());
    assert_eq!(client_span["rpc.grpc.status_code"], "0");
    let server_span = spans.named("grpc.server");
    assert_eq!(server_span["rpc.system"], "grpc");
    assert_eq!(server_span["trace_id"], hex(&caller.trace_id));
    assert_eq!(server_span["span_id"], hex(&server.span_id));
    assert_eq!(server_span["parent_span_id"], hex(&sent.span_id));
    assert_eq!(server_span["rpc.grpc.status_code"], "0");

    // An error status is recorded too.
    let status = client.say_hello(call("fail", None)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(spans.named("grpc.server")["rpc.grpc.status_code"], "5");
    assert_eq!(spans.named("grpc.client")["rpc.grpc.status_code"], "5");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_root_call_sends_traceparent_only_when_its_span_is_recorded() {
    let registry = memory();
    let greeter = ContextGreeter::default();
    let running = start(&registry, greeter_service(&greeter)).await;
    let mut client = GreeterClient::new(Client::new(registry.clone()).channel("greeter"));

    // No subscriber and no trace to continue: nothing to propagate; the server starts one.
    client.say_hello(call("untraced", None)).await.unwrap();
    let seen = greeter.seen().pop().unwrap();
    assert!(seen.traceparent.is_none(), "{:?}", seen.traceparent);
    assert!(seen.trace.is_some(), "the server starts a trace");

    // Inside a trace, it is always passed on.
    let caller = TraceContext::new_root();
    Context::new()
        .with_trace(caller)
        .scope(client.say_hello(call("in a trace", None)))
        .await
        .unwrap();
    let seen = greeter.seen().pop().unwrap();
    assert_eq!(
        seen.traceparent.map(|sent| sent.trace_id),
        Some(caller.trace_id)
    );

    // A recorded client span starts a trace the server continues.
    let spans = Spans::default();
    let subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    client.say_hello(call("recorded", None)).await.unwrap();
    drop(subscriber);
    let seen = greeter.seen().pop().unwrap();
    let sent = seen
        .traceparent
        .expect("a recorded root span sends traceparent");
    assert_eq!(seen.trace.map(|trace| trace.trace_id), Some(sent.trace_id));
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_count_calls_by_method_node_and_code() {
    let recorder = DebuggingRecorder::new();
    let metrics = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let registry = memory();
    let greeter = ContextGreeter::default();
    let running = start(&registry, greeter_service(&greeter)).await;
    // Client metrics are one of the channel's default layers.
    let channel = Client::new(registry.clone()).channel("greeter");
    let mut client = GreeterClient::new(channel);

    client.say_hello(call("a", None)).await.unwrap();
    client.say_hello(call("b", None)).await.unwrap();
    client.say_hello(call("fail", None)).await.unwrap_err();
    let stream = client
        .stream_hellos(StreamHellosRequest {
            name: String::new(),
            count: 2,
            interval_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.count().await, 2);

    let snapshot = Snapshot::take(&metrics);
    let node = running.node_id();
    fn with<'a>(
        base: &[(&'a str, &'a str)],
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut labels = base.to_vec();
        labels.extend_from_slice(extra);
        labels
    }
    let say = [("service", "greeter.v1.Greeter"), ("method", "SayHello")];
    let stream = [
        ("service", "greeter.v1.Greeter"),
        ("method", "StreamHellos"),
    ];
    let server_total = "micro_server_requests_total";
    assert_eq!(
        snapshot.get(server_total, &with(&say, &[("code", "OK")])),
        Some(2.0)
    );
    assert_eq!(
        snapshot.get(server_total, &with(&say, &[("code", "NOT_FOUND")])),
        Some(1.0)
    );
    assert_eq!(
        snapshot.get(server_total, &with(&stream, &[("code", "OK")])),
        Some(1.0)
    );
    assert_eq!(
        snapshot.get("micro_server_request_duration_seconds", &say),
        Some(3.0)
    );
    assert_eq!(
        snapshot.get("micro_server_requests_in_flight", &say),
        Some(0.0)
    );

    let client_total = "micro_client_requests_total";
    let ok = with(&say, &[("node", node), ("code", "OK")]);
    assert_eq!(snapshot.get(client_total, &ok), Some(2.0));
    let not_found = with(&say, &[("node", node), ("code", "NOT_FOUND")]);
    assert_eq!(snapshot.get(client_total, &not_found), Some(1.0));
    let streamed = with(&stream, &[("node", node), ("code", "OK")]);
    assert_eq!(snapshot.get(client_total, &streamed), Some(1.0));
    let timed = with(&say, &[("node", node)]);
    assert_eq!(
        snapshot.get("micro_client_request_duration_seconds", &timed),
        Some(3.0)
    );
    assert_eq!(
        snapshot.get("micro_client_requests_in_flight", &say),
        Some(0.0)
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_handler_past_its_deadline_is_counted_as_deadline_exceeded() {
    let recorder = DebuggingRecorder::new();
    let metrics = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let registry = memory();
    let greeter = ContextGreeter::default();
    let running = start(&registry, greeter_service(&greeter)).await;
    let mut client = GreeterClient::new(Client::new(registry.clone()).channel("greeter"));

    let mut slow = call("slow", Some(Duration::from_millis(100)));
    slow.get_mut().delay_ms = 5_000;
    let status = client.say_hello(slow).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);

    // The server ends the call on its own timer, at about the same time as the client.
    let labels = [
        ("service", "greeter.v1.Greeter"),
        ("method", "SayHello"),
        ("code", "DEADLINE_EXCEEDED"),
    ];
    let mut counted = 0.0;
    for _ in 0..200 {
        counted += Snapshot::take(&metrics)
            .get("micro_server_requests_total", &labels)
            .unwrap_or(0.0);
        if counted > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counted, 1.0);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn interceptors_reject_on_either_side_inside_the_default_layers() {
    let recorder = DebuggingRecorder::new();
    let metrics = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let registry = memory();
    let greeter = ContextGreeter::default();
    let layer_saw_deadline = Arc::new(Mutex::new(Vec::new()));
    let saw = Arc::clone(&layer_saw_deadline);
    let auth = interceptor_fn(move |request: http::Request<Body>| {
        let saw = Arc::clone(&saw);
        async move {
            // micro's client also watches each node's health: not a call of this test.
            if !request.uri().path().starts_with("/grpc.health.") {
                let context = Context::current();
                saw.lock()
                    .unwrap()
                    .push(context.and_then(|context| context.deadline()).is_some());
            }
            match request.headers().get("authorization") {
                Some(token) if token == "Bearer ok" => Ok(request),
                _ => Err(Status::unauthenticated("missing or wrong token")),
            }
        }
    });
    let running = start(&registry, greeter_service(&greeter).layer(auth)).await;
    let channel = Client::new(registry.clone()).channel("greeter");

    let mut anonymous = GreeterClient::new(channel.clone());
    let status = anonymous
        .say_hello(call("anonymous", None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "missing or wrong token");
    assert!(
        greeter.seen().is_empty(),
        "a rejected call never reaches the handler"
    );

    // A client interceptor adds the token.
    let with_token = tower::ServiceBuilder::new()
        .layer(interceptor_fn(
            |mut request: http::Request<Body>| async move {
                request
                    .headers_mut()
                    .insert("authorization", "Bearer ok".parse().unwrap());
                Ok(request)
            },
        ))
        .service(channel.clone());
    GreeterClient::new(with_token)
        .say_hello(call("authorized", None))
        .await
        .unwrap();
    assert_eq!(greeter.seen().len(), 1);

    // A client interceptor that rejects fails the call without sending it.
    let refusing = tower::ServiceBuilder::new()
        .layer(interceptor_fn(|_request: http::Request<Body>| async {
            Err(Status::permission_denied("not from here"))
        }))
        .service(channel);
    let status = GreeterClient::new(refusing)
        .say_hello(call("refused", None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(greeter.seen().len(), 1);

    // The user layer runs inside the context: it saw the default 30 s deadline.
    assert_eq!(*layer_saw_deadline.lock().unwrap(), [true, true]);
    // And inside the metrics layer: the rejection is counted.
    let snapshot = Snapshot::take(&metrics);
    let say = [("service", "greeter.v1.Greeter"), ("method", "SayHello")];
    let code = |code| [say[0], say[1], ("code", code)];
    let total = "micro_server_requests_total";
    assert_eq!(snapshot.get(total, &code("UNAUTHENTICATED")), Some(1.0));
    assert_eq!(snapshot.get(total, &code("OK")), Some(1.0));
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn default_layers_can_be_turned_off_but_the_context_stays() {
    let recorder = DebuggingRecorder::new();
    let metrics = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let registry = memory();
    let greeter = ContextGreeter::default();
    let running = start(&registry, greeter_service(&greeter).default_layers(false)).await;
    let mut client = GreeterClient::new(Client::new(registry.clone()).channel("greeter"));

    client
        .say_hello(call("plain", Some(Duration::from_secs(5))))
        .await
        .unwrap();
    assert!(greeter.seen()[0].remaining.is_some());
    let snapshot = Snapshot::take(&metrics);
    assert!(
        snapshot
            .0
            .iter()
            .all(|(name, ..)| !name.starts_with("micro_server_")),
        "{:?}",
        snapshot.0
    );
    running.shutdown().await.unwrap();
}

/// One snapshot of a debugging recorder: name, sorted labels, value (counters and gauges
/// as numbers, histograms as their number of samples).
struct Snapshot(Vec<Metric>);

/// A metric's name, sorted labels and value.
type Metric = (String, Vec<(String, String)>, f64);

impl Snapshot {
    fn take(snapshotter: &Snapshotter) -> Self {
        Self(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| {
                    let key = key.key();
                    let mut labels: Vec<_> = key
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    labels.sort_unstable();
                    let value = match value {
                        DebugValue::Counter(count) => count as f64,
                        DebugValue::Gauge(gauge) => gauge.into_inner(),
                        DebugValue::Histogram(samples) => samples.len() as f64,
                    };
                    (key.name().to_owned(), labels, value)
                })
                .collect(),
        )
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels: Vec<_> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort_unstable();
        self.0
            .iter()
            .find(|(n, l, _)| n == name && *l == labels)
            .map(|(.., value)| *value)
    }
}

/// A tracing layer that keeps every span's id, name and fields, in order of creation.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanRecord>>>);

type SpanRecord = (u64, &'static str, BTreeMap<String, String>);

impl Spans {
    /// The fields of the latest span called `name`.
    /// The latest span called `name` of a greeter call (micro's client also watches each
    /// node's health, which makes spans of its own).
    fn named(&self, name: &str) -> BTreeMap<String, String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(_, n, fields)| {
                *n == name
                    && fields.get("rpc.service").map(String::as_str) == Some("greeter.v1.Greeter")
            })
            .map(|(.., fields)| fields.clone())
            .unwrap_or_else(|| panic!("no span {name}"))
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, _ctx: LayerContext<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0
            .lock()
            .unwrap()
            .push((id.into_u64(), attrs.metadata().name(), fields));
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, _ctx: LayerContext<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        // Ids are reused once a span closes: the latest span with this id is the live one.
        if let Some((.., fields)) = spans.iter_mut().rev().find(|(i, ..)| *i == id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}
