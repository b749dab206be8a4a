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
    registry::MemoryRegistry,
    service::RunningService,
};
use support::pb::{
    HelloReply, HelloRequest, StreamHellosRequest,
    greeter_client::GreeterClient,
    greeter_server::{Greeter, GreeterServer},
};
use tonic::{Code, Request, Response, Status};

/// The greeter of these tests: `big:N` is answered with a message of N bytes; trailers are
/// not sent unless the request's name starts with `trailers`.
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
        let name = request.into_inner().name;
        Ok(Response::new(reply_for(&name)))
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
        let replies = futures_util::stream::iter(replies).map(Ok);
        Ok(Response::new(Box::pin(replies)))
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
