//! A Service in-process: what it registers, health, reflection (v1 and v1alpha),
//! configuration errors, graceful drain; the client's errors, deadlines and transports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use micro::{
    Client, Service, ServiceError,
    client::{BoxIo, connector_fn},
    registry::{MemoryRegistry, Node, RegisterOptions, Service as Record, SharedRegistry},
};
use support::{
    FixtureGreeter, hello,
    pb::{greeter_client::GreeterClient, greeter_server::GreeterServer},
};
use tonic::Code;

/// A plain tonic channel straight to one address, as a client we did not write would use.
async fn connect(address: String) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(address)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn memory() -> SharedRegistry {
    Arc::new(MemoryRegistry::new())
}

fn greeter(registry: &SharedRegistry) -> micro::ServiceBuilder {
    Service::builder("greeter")
        .version("1.2.3")
        .metadata("team", "core")
        .registry(registry.clone())
        .add_service(GreeterServer::new(FixtureGreeter::new()))
}

#[tokio::test]
async fn registers_name_version_metadata_endpoints_and_node() {
    let registry = memory();
    let running = greeter(&registry).build().unwrap().start().await.unwrap();
    let records = registry.get_service("greeter").await.unwrap();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.version, "1.2.3");
    assert_eq!(record.metadata["team"], "core");
    assert_eq!(record.nodes.len(), 1);
    assert_eq!(record.nodes[0].id, running.node_id());
    assert_eq!(record.nodes[0].address, running.local_address());
    assert!(record.nodes[0].address.starts_with("127.0.0.1:"));
    assert_eq!(record.nodes[0].metadata["protocol"], "grpc");
    let endpoints: Vec<_> = record
        .endpoints
        .iter()
        .map(|e| (e.name.as_str(), e.request.as_str(), e.response.as_str()))
        .collect();
    assert_eq!(
        endpoints,
        [
            (
                "greeter.v1.Greeter.SayHello",
                "greeter.v1.HelloRequest",
                "greeter.v1.HelloReply"
            ),
            (
                "greeter.v1.Greeter.StreamHellos",
                "greeter.v1.StreamHellosRequest",
                "greeter.v1.HelloReply"
            ),
        ]
    );
    assert_eq!(
        record.endpoints[0]
            .metadata
            .get("idempotency")
            .map(String::as_str),
        Some("no_side_effects")
    );
    assert_eq!(
        record.endpoints[1]
            .metadata
            .get("stream")
            .map(String::as_str),
        Some("server")
    );
    running.shutdown().await.unwrap();
    assert!(
        registry.get_service("greeter").await.unwrap().is_empty(),
        "deregistered"
    );
}

#[tokio::test]
async fn calls_by_name_and_reports_the_node() {
    let registry = memory();
    let running = greeter(&registry).build().unwrap().start().await.unwrap();
    let client = Client::new(registry.clone());
    let mut greeter = GreeterClient::new(client.channel("greeter"));
    let response = greeter.say_hello(hello("micro")).await.unwrap();
    let node = response.extensions().get::<micro::NodeInfo>().unwrap();
    assert_eq!(node.id(), running.node_id());
    assert_eq!(response.into_inner().message, "Hello, micro!");

    let mut stream = greeter
        .stream_hellos(support::pb::StreamHellosRequest {
            name: "s".into(),
            count: 3,
            interval_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    while let Some(reply) = stream.next().await {
        messages.push(reply.unwrap().message);
    }
    assert_eq!(messages, ["Hello #1, s!", "Hello #2, s!", "Hello #3, s!"]);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_serving_then_not_serving_on_shutdown() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let registry = memory();
    let running = greeter(&registry).build().unwrap().start().await.unwrap();
    let address = format!("http://{}", running.local_address());
    let mut health = HealthClient::new(connect(address).await);
    for service in ["", "greeter.v1.Greeter"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, 1, "SERVING for {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let mut watch = health
        .watch(HealthCheckRequest {
            service: "greeter.v1.Greeter".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().status, 1);
    let shutdown = tokio::spawn(running.shutdown());
    let next = watch.next().await.unwrap().unwrap();
    assert_eq!(next.status, 2, "NOT_SERVING before the server stops");
    // The watch is a call in flight: the drain waits for it to end (or the grace period).
    drop(watch);
    drop(health);
    shutdown.await.unwrap().unwrap();
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_and_resolve() {
    use tonic_reflection::pb::{v1, v1alpha};
    let registry = memory();
    let running = greeter(&registry).build().unwrap().start().await.unwrap();
    let address = format!("http://{}", running.local_address());
    let expected = [
        "greeter.v1.Greeter",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];

    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(connect(address.clone()).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("not a list: {reply:?}");
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, expected);

    let mut alpha =
        v1alpha::server_reflection_client::ServerReflectionClient::new(connect(address).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "greeter.v1.HelloRequest".into(),
            ),
        ),
    };
    let mut replies = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        reply.message_response
    else {
        panic!("no file: {reply:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn interval_of_half_the_ttl_or_more_is_rejected() {
    let err = greeter(&memory())
        .register_ttl(Duration::from_secs(10))
        .register_interval(Duration::from_secs(5))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::InvalidInterval { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("5s") && message.contains("10s"),
        "{message}"
    );

    let err = Service::builder("bad name!")
        .registry(memory())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("bad name!"), "{err}");
}

#[tokio::test]
async fn unknown_service_names_service_and_registry() {
    let client = Client::new(memory());
    let mut greeter = GreeterClient::new(client.channel("nosuch"));
    let status = greeter.say_hello(hello("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.message(),
        "service nosuch not found in registry memory"
    );
}

#[tokio::test]
async fn unreachable_nodes_are_named_and_a_live_one_still_answers() {
    let registry = memory();
    // Two nodes whose ports refuse connections: bind, read the port, close.
    let mut dead = Vec::new();
    for i in 0..2 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        dead.push(address.clone());
        let record = Record {
            name: "greeter".into(),
            nodes: vec![Node {
                id: format!("dead-{i}"),
                address,
                ..Node::default()
            }],
            ..Record::default()
        };
        registry
            .register(&record, RegisterOptions::default())
            .await
            .unwrap();
    }
    let client = Client::new(registry.clone());
    let mut greeter = GreeterClient::new(client.channel("greeter"));
    let status = greeter.say_hello(hello("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let message = status.message();
    assert!(
        message.starts_with("service greeter: no node answered; tried "),
        "{message}"
    );
    for address in &dead {
        assert!(
            message.contains(address.as_str()),
            "{message} names {address}"
        );
    }

    // A live node joins: every call now succeeds, the dead ones are skipped before sending.
    let running = greeter_on(&registry).await;
    let mut view = client.registry().subscribe("greeter").await.unwrap();
    view.wait_for(|services| services.iter().map(|s| s.nodes.len()).sum::<usize>() == 3)
        .await
        .unwrap();
    let mut live = 0;
    for _ in 0..6 {
        let response = greeter.say_hello(hello("x")).await.unwrap();
        let node = response.extensions().get::<micro::NodeInfo>().unwrap();
        live += usize::from(node.id() == running.node_id());
    }
    assert_eq!(live, 6);
    running.shutdown().await.unwrap();
}

async fn greeter_on(registry: &SharedRegistry) -> micro::service::RunningService {
    greeter(registry).build().unwrap().start().await.unwrap()
}

#[tokio::test]
async fn client_timeout_is_sent_and_enforced() {
    let registry = memory();
    let running = greeter_on(&registry).await;
    let client = Client::builder()
        .registry(registry.clone())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut greeter = GreeterClient::new(client.channel("greeter"));
    let mut slow = hello("slow");
    slow.delay_ms = 5_000;
    let status = greeter.say_hello(slow.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    // A per-call timeout from tonic's Request::set_timeout wins over the default.
    let mut request = tonic::Request::new(slow);
    request.set_timeout(Duration::from_millis(50));
    let started = tokio::time::Instant::now();
    let status = greeter.say_hello(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn deadline_covers_a_stalled_response_stream() {
    let registry = memory();
    let running = greeter_on(&registry).await;
    let client = Client::builder()
        .registry(registry.clone())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut greeter = GreeterClient::new(client.channel("greeter"));
    let request = support::pb::StreamHellosRequest {
        name: "stall".into(),
        count: 1,
        interval_ms: 0,
    };
    let mut stream = greeter.stream_hellos(request).await.unwrap().into_inner();
    assert_eq!(
        stream.next().await.unwrap().unwrap().message,
        "Hello #1, stall!"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the deadline ends the stream")
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    drop(stream);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn dropping_the_client_releases_its_registry_watch() {
    let registry = Arc::new(MemoryRegistry::new());
    let shared: SharedRegistry = registry.clone();
    let running = greeter_on(&shared).await;
    let client = Client::new(shared.clone());
    let mut greeter = GreeterClient::new(client.channel("greeter"));
    greeter.say_hello(hello("x")).await.unwrap();
    assert!(
        format!("{registry:?}").contains("watchers: 1"),
        "{registry:?}"
    );
    drop(greeter);
    drop(client);
    // The cache's watch task notices its owner is gone and drops its watcher.
    let released = async {
        while !format!("{registry:?}").contains("watchers: 0") {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), released)
        .await
        .unwrap_or_else(|_| panic!("watch still held: {registry:?}"));
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_drains_calls_in_flight() {
    let registry = memory();
    let handler = FixtureGreeter::new();
    let arrived = handler.arrived();
    let running = Service::builder("greeter")
        .registry(registry.clone())
        .add_service(GreeterServer::new(handler))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = Client::new(registry.clone());
    let mut greeter = GreeterClient::new(client.channel("greeter"));
    let mut slow = hello("slow");
    slow.delay_ms = 300;
    let call = tokio::spawn(async move { greeter.say_hello(slow).await });
    // Shut down once the handler holds the call.
    arrived.notified().await;
    running.shutdown().await.unwrap();
    let reply = call.await.unwrap().unwrap();
    assert_eq!(reply.into_inner().message, "Hello, slow!");
}

#[tokio::test]
async fn unix_socket_service() {
    let registry = memory();
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:{}", dir.path().join("greeter.sock").display());
    let running = greeter(&registry)
        .address(&address)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(running.advertised_address(), address);
    let client = Client::new(registry.clone());
    let mut greeter = GreeterClient::new(client.channel("greeter"));
    let reply = greeter.say_hello(hello("uds")).await.unwrap();
    assert_eq!(reply.into_inner().message, "Hello, uds!");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn in_memory_connector() {
    // A tonic server fed by in-memory pipes, and a client whose connector makes them.
    let (pipes_tx, pipes_rx) = tokio::sync::mpsc::unbounded_channel::<tokio::io::DuplexStream>();
    let incoming =
        tokio_stream::wrappers::UnboundedReceiverStream::new(pipes_rx).map(Ok::<_, std::io::Error>);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GreeterServer::new(FixtureGreeter::new()))
            .serve_with_incoming(incoming),
    );
    let registry = memory();
    let record = Record {
        name: "greeter".into(),
        nodes: vec![Node {
            id: "mem-1".into(),
            address: "memory:1".into(),
            ..Node::default()
        }],
        ..Record::default()
    };
    registry
        .register(&record, RegisterOptions::default())
        .await
        .unwrap();
    let connector = connector_fn(move |address: String| {
        let pipes_tx = pipes_tx.clone();
        async move {
            assert_eq!(address, "memory:1");
            let (client, server) = tokio::io::duplex(64 * 1024);
            pipes_tx
                .send(server)
                .map_err(|_| std::io::Error::other("server gone"))?;
            Ok(Box::new(client) as BoxIo)
        }
    });
    let client = Client::builder()
        .registry(registry)
        .connector(connector)
        .build()
        .unwrap();
    let mut greeter = GreeterClient::new(client.channel("greeter"));
    for i in 0..3 {
        let reply = greeter.say_hello(hello(&format!("mem{i}"))).await.unwrap();
        assert_eq!(reply.into_inner().message, format!("Hello, mem{i}!"));
    }
}

/// A registry whose watch events wait behind a gate that opens at the third `get_service`
/// (the cache's first read, then one re-read per call that found no node): a client's
/// cache that has not yet heard of a registration.
#[derive(Debug, Clone)]
struct LaggingWatch {
    inner: SharedRegistry,
    reads: Arc<std::sync::atomic::AtomicUsize>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[tonic::async_trait]
impl micro::registry::Registry for LaggingWatch {
    fn name(&self) -> &str {
        "lagging"
    }
    async fn register(
        &self,
        service: &Record,
        options: RegisterOptions,
    ) -> Result<(), micro::registry::RegistryError> {
        self.inner.register(service, options).await
    }
    async fn deregister(&self, service: &Record) -> Result<(), micro::registry::RegistryError> {
        self.inner.deregister(service).await
    }
    async fn get_service(&self, name: &str) -> Result<Vec<Record>, micro::registry::RegistryError> {
        if self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
            self.gate.add_permits(1);
        }
        self.inner.get_service(name).await
    }
    async fn list_services(&self) -> Result<Vec<Record>, micro::registry::RegistryError> {
        self.inner.list_services().await
    }
    async fn watch(
        &self,
        options: micro::registry::WatchOptions,
    ) -> Result<micro::registry::Watcher, micro::registry::RegistryError> {
        let events = self.inner.watch(options).await?;
        let gate = Arc::clone(&self.gate);
        Ok(Box::pin(events.then(move |event| {
            let gate = Arc::clone(&gate);
            async move {
                // Held until the gate opens; then everything flows.
                let _ = gate
                    .acquire()
                    .await
                    .map(tokio::sync::SemaphorePermit::forget);
                gate.add_permits(1);
                event
            }
        })))
    }
}

/// A service registered a moment ago, not yet in the client's cache: the call finds it
/// (the registry lists it, so the call waits for the cache to catch up) instead of failing
/// with "not found". A service the registry does not list still fails at once.
#[tokio::test]
async fn a_registration_the_cache_has_not_seen_yet_is_found() {
    let backend = memory();
    let registry: SharedRegistry = Arc::new(LaggingWatch {
        inner: backend.clone(),
        reads: Arc::default(),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
    });
    let client = Client::new(registry);
    let mut caller = GreeterClient::new(client.channel("greeter"));
    // First lookup: nothing registered, and the registry agrees.
    let status = caller.say_hello(hello("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("not found"), "{status:?}");

    let _running = greeter(&backend).build().unwrap().start().await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), caller.say_hello(hello("x")))
        .await
        .expect("the call hung")
        .expect("a registered service was not found");
    assert_eq!(reply.get_ref().message, "Hello, x!");
}
