//! greeter-server: the greeter service, registered as `greeter` with no configuration.
//!
//! Prints `ready addr=<address> node=<id>` on stdout once it serves and is registered,
//! then runs until SIGINT or SIGTERM and exits 0 after a graceful shutdown.

use std::pin::Pin;

use micro::Service;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

#[allow(unreachable_pub, missing_docs)]
mod pb {
    micro::include_proto!("greeter.v1");
}

use pb::{
    HelloReply, HelloRequest, StreamHellosRequest,
    greeter_server::{Greeter, GreeterServer},
};

const MAX_COUNT: u32 = 100;

#[derive(Debug, Default)]
struct Hello;

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let request = request.into_inner();
        let name = checked_name(&request.name)?;
        Ok(Response::new(HelloReply {
            message: format!("Hello, {name}!"),
        }))
    }

    type StreamHellosStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

    async fn stream_hellos(
        &self,
        request: Request<StreamHellosRequest>,
    ) -> Result<Response<Self::StreamHellosStream>, Status> {
        let request = request.into_inner();
        let name = checked_name(&request.name)?.to_owned();
        if !(1..=MAX_COUNT).contains(&request.count) {
            return Err(Status::invalid_argument(format!(
                "count {} is out of range: expected 1 to {MAX_COUNT}",
                request.count
            )));
        }
        let replies = (1..=request.count).map(move |i| {
            Ok(HelloReply {
                message: format!("Hello #{i}, {name}!"),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }
}

fn checked_name(name: &str) -> Result<&str, Status> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Status::invalid_argument("name must not be empty"));
    }
    Ok(name)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // MICRO_REGISTRY may name an engine compiled in with a feature (etcd://…).
    micro::install();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let service = Service::builder("greeter")
        .version("1.0.0")
        .add_service(GreeterServer::new(Hello))
        .build()?;
    let running = service.start().await?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "ready addr={} node={}",
            running.advertised_address(),
            running.node_id()
        );
    }
    running.run_until_signal().await?;
    Ok(())
}
