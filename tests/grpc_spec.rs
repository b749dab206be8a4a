//! Where the gRPC specification and tonic disagree, micro follows the specification; real
//! gRPC over loopback between a `Service` and a micro `Client` (docs/grpc-conformance.md
//! lists every item):
//!
//! - a message over a receive limit, on the server or on the client, ends the call with
//!   RESOURCE_EXHAUSTED naming the limit (tonic: OUT_OF_RANGE), and the next call goes over
//!   the same connection;
//! - a handler sends trailing metadata with its reply (`micro::context::Trailers`), unary
//!   and server-streaming.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures_util::{Stream, StreamExt};
use micro::{
    Client, Service,
    client::{BoxIo, connector_fn},
    context::Trailers,
    registry::MemoryRegistry,
    service::RunningService,
};
use support::pb::{
    HelloReply, HelloRequest, StreamHellosRequest,
    greeter_client::GreeterClient,
    greeter_server::{Greeter, GreeterServer},
};
use tonic::{Code, Request, Response, Status, metadata::MetadataValue};

/// The error of a SayHello to `details`: a message that needs percent-encoding, and
/// binary details.
const DETAILS_MESSAGE: &str = "h\u{e9}llo 100% \u{2713} \"q\"\n";
const DETAILS: &[u8] = b"\x00\x01details\xff";

/// The greeter of these tests: `big:N` is answered with a message of N bytes; trailers are
/// not sent unless the request's name starts with `trailers`; `details` fails with
/// details; `user-agent` is answered with the request's; a request with `x-data-bin` is
/// answered with its bytes in hex.
#[derive(Debug, Default, Clone)]
struct SpecGreeter;

fn reply_for(name: &str) -> HelloReply {
    let message = match name.strip_prefix("big:") {
        Some(len) => "x".repeat(len.parse().unwrap()),
        None => format!("Hello, {name}!"),
    };
    HelloReply { message }
}

#[tonic::async_trait]
impl Greeter for SpecGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        if let Some(data) = request.metadata().get_bin("x-data-bin") {
            // Echoes the decoded bytes of a binary header, in hex.
            let bytes = data
                .to_bytes()
                .map_err(|_| Status::invalid_argument("x-data-bin is not base64"))?;
            let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            let mut reply = Response::new(HelloReply { message: hex });
            // Reserved: tonic never sends a handler's grpc-status as a header.
            reply
                .metadata_mut()
                .insert("grpc-status", "13".parse().unwrap());
            return Ok(reply);
        }
        let user_agent = request.metadata().get("user-agent").cloned();
        let name = request.into_inner().name;
        if name == "user-agent" {
            let agent = user_agent.map(|value| value.to_str().unwrap_or("?").to_owned());
            return Ok(Response::new(HelloReply {
                message: agent.unwrap_or_default(),
            }));
        }
        if name == "details" {
            return Err(Status::with_details(
                Code::FailedPrecondition,
                DETAILS_MESSAGE,
                tonic::codegen::Bytes::from_static(DETAILS),
            ));
        }
        let mut reply = Response::new(reply_for(&name));
        if name.starts_with("trailers") {
            Trailers::of(&mut reply).with(|trailers| {
                trailers.insert("x-greeted", name.parse().unwrap());
                trailers.insert_bin("x-greeted-bin", MetadataValue::from_bytes(b"\x00\xffok"));
                // Reserved: never sent, the call stays OK.
                trailers.insert("grpc-status", "13".parse().unwrap());
            });
        }
        Ok(reply)
    }

    type StreamHellosStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

    async fn stream_hellos(
        &self,
        request: Request<StreamHellosRequest>,
    ) -> Result<Response<Self::StreamHellosStream>, Status> {
        let request = request.into_inner();
        // `count` greetings, then the named reply.
        let mut replies: Vec<_> = (1..=request.count)
            .map(|i| HelloReply {
                message: format!("Hello #{i}!"),
            })
            .collect();
        replies.push(reply_for(&request.name));
        // The stream counts what it sent into the trailers, as it goes.
        let trailers = Trailers::new();
        let counted = trailers.clone();
        let replies =
            futures_util::stream::iter(replies.into_iter().enumerate()).map(move |(i, reply)| {
                counted.with(|map| map.insert("x-sent", (i + 1).into()));
                Ok(reply)
            });
        let mut reply: Response<Self::StreamHellosStream> = Response::new(Box::pin(replies));
        if request.name.starts_with("trailers") {
            trailers.attach(&mut reply);
        }
        Ok(reply)
    }
}

/// The greeter on 127.0.0.1, receiving requests of at most `limit` bytes.
async fn start(limit: usize) -> RunningService {
    Service::builder("greeter")
        .registry(Arc::new(MemoryRegistry::new()))
        .address("127.0.0.1:0")
        .add_service(GreeterServer::new(SpecGreeter).max_decoding_message_size(limit))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// A client to `server` over TCP, counting the connections it opens.
fn client(server: &RunningService, builder: micro::ClientBuilder) -> (Client, Arc<AtomicUsize>) {
    let dials = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&dials);
    let connector = connector_fn(move |address: String| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let tcp = tokio::net::TcpStream::connect(address).await?;
            Ok(Box::new(tcp) as BoxIo)
        }
    });
    let client = builder
        .connector(connector)
        .static_nodes("greeter", [server.local_address()])
        .build_static();
    (client, dials)
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.to_owned(),
        delay_ms: 0,
    }
}

#[tokio::test]
async fn a_request_over_the_servers_limit_is_resource_exhausted_and_the_connection_lives_on() {
    let server = start(1024).await;
    let (client, dials) = client(&server, Client::builder());
    let mut greeter = GreeterClient::new(client.channel("greeter"));

    let status = greeter
        .say_hello(hello(&"n".repeat(2000)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("limit of 1024 bytes"),
        "{status:?}"
    );
    assert!(status.message().contains("2003 bytes"), "{status:?}");

    // Server-streaming methods read their one request the same way.
    let status = greeter
        .stream_hellos(StreamHellosRequest {
            name: "n".repeat(2000),
            count: 1,
            interval_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let reply = greeter.say_hello(hello("small")).await.unwrap();
    assert_eq!(reply.into_inner().message, "Hello, small!");
    assert_eq!(
        dials.load(Ordering::SeqCst),
        1,
        "one connection for all calls"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reply_over_the_clients_limit_is_resource_exhausted_and_the_connection_lives_on() {
    let server = start(4 * 1024 * 1024).await;
    let (client, dials) = client(&server, Client::builder().max_receive_message_size(1024));
    let mut greeter = GreeterClient::new(client.channel("greeter"));

    // A reply of 1024 bytes of text is 1027 encoded: over.
    let status = greeter.say_hello(hello("big:1024")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("limit of 1024 bytes"),
        "{status:?}"
    );
    assert!(status.message().contains("1027 bytes"), "{status:?}");
    let reply = greeter.say_hello(hello("big:1000")).await.unwrap();
    assert_eq!(reply.into_inner().message.len(), 1000);

    // In a stream, the messages before the long one arrive, then the call fails.
    let mut stream = greeter
        .stream_hellos(StreamHellosRequest {
            name: "big:5000".to_owned(),
            count: 2,
            interval_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stream.message().await.unwrap().unwrap().message,
        "Hello #1!"
    );
    assert_eq!(
        stream.message().await.unwrap().unwrap().message,
        "Hello #2!"
    );
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    drop(stream);

    // A channel of its own with a higher limit receives it, over the same connection.
    let mut roomy = GreeterClient::new(
        client
            .channel("greeter")
            .max_receive_message_size(64 * 1024),
    );
    let reply = roomy.say_hello(hello("big:5000")).await.unwrap();
    assert_eq!(reply.into_inner().message.len(), 5000);
    let reply = greeter.say_hello(hello("small")).await.unwrap();
    assert_eq!(reply.into_inner().message, "Hello, small!");
    assert_eq!(
        dials.load(Ordering::SeqCst),
        1,
        "one connection for all calls"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn handlers_send_trailers_with_an_ok_reply_unary_and_streaming() {
    let server = start(4 * 1024 * 1024).await;
    let (client, _) = client(&server, Client::builder());
    let mut greeter = GreeterClient::new(client.channel("greeter"));

    // tonic merges a unary reply's trailers into its metadata.
    let reply = greeter.say_hello(hello("trailers-unary")).await.unwrap();
    assert_eq!(reply.metadata().get("x-greeted").unwrap(), "trailers-unary");
    assert_eq!(
        reply
            .metadata()
            .get_bin("x-greeted-bin")
            .unwrap()
            .to_bytes()
            .unwrap(),
        &b"\x00\xffok"[..]
    );
    assert_eq!(reply.into_inner().message, "Hello, trailers-unary!");
    // None unless the handler attached them.
    let reply = greeter.say_hello(hello("plain")).await.unwrap();
    assert!(reply.metadata().get("x-greeted").is_none());

    let mut stream = greeter
        .stream_hellos(StreamHellosRequest {
            name: "trailers-stream".to_owned(),
            count: 3,
            interval_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    while stream.message().await.unwrap().is_some() {
        received += 1;
    }
    assert_eq!(received, 4);
    let trailers = stream.trailers().await.unwrap().unwrap();
    // Set by the stream itself, after the handler returned: all 4 counted.
    assert_eq!(trailers.get("x-sent").unwrap(), "4");
    server.shutdown().await.unwrap();
}

/// Records the headers of each answer: a trailers-only error carries its status there.
type Seen = Arc<std::sync::Mutex<Vec<http::HeaderMap>>>;

fn recording(
    channel: micro::Channel,
    headers: Vec<(&'static str, &'static str)>,
) -> (
    impl tonic::client::GrpcService<
        tonic::body::Body,
        ResponseBody = tonic::body::Body,
        Error = Box<dyn std::error::Error + Send + Sync>,
        Future = impl Send,
    > + Clone
    + Send,
    Seen,
) {
    let seen = Seen::default();
    let recorded = Arc::clone(&seen);
    let service = tower::ServiceBuilder::new()
        .map_request(move |mut request: http::Request<tonic::body::Body>| {
            for (name, value) in &headers {
                request
                    .headers_mut()
                    .insert(*name, http::HeaderValue::from_static(value));
            }
            request
        })
        .map_response(move |response: http::Response<tonic::body::Body>| {
            recorded.lock().unwrap().push(response.headers().clone());
            response
        })
        .service(channel);
    (service, seen)
}

#[tokio::test]
async fn status_details_and_messages_pass_through_encoded_as_the_spec_says() {
    let server = start(4 * 1024 * 1024).await;
    let (client, _) = client(&server, Client::builder());
    let (service, seen) = recording(client.channel("greeter"), vec![]);
    let mut greeter = GreeterClient::new(service);

    let status = greeter.say_hello(hello("details")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), DETAILS_MESSAGE);
    assert_eq!(status.details(), DETAILS);

    // On the wire: grpc-message percent-encoded (UTF-8 bytes, `%`, and controls as %XX;
    // only ASCII), grpc-status-details-bin base64.
    let headers = seen.lock().unwrap().pop().unwrap();
    let message = headers.get("grpc-message").unwrap().to_str().unwrap();
    assert!(message.contains("h%C3%A9llo"), "{message}");
    assert!(message.contains("100%25"), "{message}");
    assert!(message.contains("%E2%9C%93"), "{message}");
    assert!(message.ends_with("%0A"), "{message}");
    assert!(headers.get("grpc-status-details-bin").is_some());

    // micro's calls say who they are, as the specification structures it.
    let reply = greeter.say_hello(hello("user-agent")).await.unwrap();
    assert_eq!(
        reply.into_inner().message,
        concat!("grpc-rust-micro/", env!("CARGO_PKG_VERSION"))
    );

    // A plain tonic channel (a client micro did not write) sees the same.
    let address = format!("http://{}", server.local_address());
    let plain = tonic::transport::Endpoint::from_shared(address)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = GreeterClient::new(plain)
        .say_hello(hello("details"))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message(), status.details()),
        (Code::FailedPrecondition, DETAILS_MESSAGE, DETAILS)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn binary_metadata_is_read_with_or_without_base64_padding() {
    let server = start(4 * 1024 * 1024).await;
    let (client, _) = client(&server, Client::builder());
    for (sent, expected) in [
        ("AP8=", "00ff"),
        ("AP8", "00ff"),
        ("AA==", "00"),
        ("AA", "00"),
        ("3q2+7w==", "deadbeef"),
        ("3q2+7w", "deadbeef"),
    ] {
        let (service, seen) = recording(client.channel("greeter"), vec![("x-data-bin", sent)]);
        let reply = GreeterClient::new(service)
            .say_hello(hello("bin"))
            .await
            .unwrap();
        assert_eq!(reply.get_ref().message, expected, "{sent}");
        // The handler's own grpc-status header was not sent: the call is OK.
        let headers = seen.lock().unwrap().pop().unwrap();
        assert!(headers.get("grpc-status").is_none(), "{headers:?}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unsupported_grpc_encoding_is_unimplemented_naming_what_is_accepted() {
    let server = start(4 * 1024 * 1024).await;
    let (client, _) = client(&server, Client::builder());
    let (service, seen) = recording(client.channel("greeter"), vec![("grpc-encoding", "snappy")]);
    let status = GreeterClient::new(service)
        .say_hello(hello("x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("snappy"), "{status:?}");
    let headers = seen.lock().unwrap().pop().unwrap();
    assert!(headers.get("grpc-accept-encoding").is_some(), "{headers:?}");
    server.shutdown().await.unwrap();
}
