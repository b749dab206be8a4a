//! The greeter both load benchmarks serve: SayHello answers at once, StreamHellos is empty.
//! Its API is micro-testkit's greeter fixture (the example's, plus test-only fields left at
//! zero here), so the benches share the tests' generated code and not the example's.

pub(crate) use micro_testkit::greeter::pb;

use pb::{HelloReply, HelloRequest, greeter_server::Greeter};

/// Answers `Hello, <name>!` with no work in between.
pub(crate) struct Hello;

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        Ok(tonic::Response::new(HelloReply {
            message: format!("Hello, {}!", request.into_inner().name),
        }))
    }

    type StreamHellosStream = tokio_stream::Empty<Result<HelloReply, tonic::Status>>;

    async fn stream_hellos(
        &self,
        _request: tonic::Request<pb::StreamHellosRequest>,
    ) -> Result<tonic::Response<Self::StreamHellosStream>, tonic::Status> {
        Ok(tonic::Response::new(tokio_stream::empty()))
    }
}

/// Serves one `Hello` greeter per `(name, auth layer)` on a single-threaded runtime of a
/// thread of its own, registered in `registry`: their addresses, in order, and the thread's
/// id (for its CPU time).
pub(crate) fn serve_on_thread(
    registry: micro::registry::SharedRegistry,
    services: Vec<(&'static str, Option<micro_core::auth::AuthLayer>)>,
) -> (Vec<String>, i32) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let mut running = Vec::new();
            let mut addresses = Vec::new();
            for (name, auth) in services {
                let mut builder = micro::Service::builder(name).registry(registry.clone());
                if let Some(auth) = auth {
                    builder = builder.layer(auth);
                }
                let service = builder
                    .add_service(pb::greeter_server::GreeterServer::new(Hello))
                    .build()
                    .expect("greeter service")
                    .start()
                    .await
                    .expect("greeter started");
                addresses.push(service.local_address().to_owned());
                running.push(service);
            }
            ready_tx
                .send((addresses, nix::unistd::gettid().as_raw()))
                .expect("main thread waiting");
            std::future::pending::<()>().await;
        });
    });
    ready_rx.recv().expect("greeter services started")
}
