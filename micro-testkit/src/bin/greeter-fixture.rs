//! greeter-fixture: the greeter service of examples/greeter with what tests need on top,
//! registered as `greeter`: `delay_ms` of simulated work (calls in flight during a
//! shutdown), the caller's `x-request-id` echoed on the reply (metadata passing through
//! the gateway), trailing metadata for a name starting with `trailers` (SayHello:
//! `x-greeted` and `x-greeted-bin`, the name; StreamHellos: `x-sent`, the greetings sent,
//! counted by the stream), and the `ready addr=<address> node=<id>` line on stdout once it
//! serves and is registered. Runs until SIGINT or SIGTERM and exits 0 after a graceful shutdown.
//!
//! Tests outside micro-testkit find it in `target/<profile>/greeter-fixture` (scripts/test
//! builds every target first).

use std::{pin::Pin, time::Duration};

use futures_util::{Stream, StreamExt};
use micro::{Service, context::Trailers};
use tonic::{Request, Response, Status, metadata::MetadataValue};

#[allow(unreachable_pub, missing_docs)]
mod pb {
    micro::include_proto!("greeter.v1");
}

use pb::{
    HelloReply, HelloRequest, StreamHellosRequest,
    greeter_server::{Greeter, GreeterServer},
};

const MAX_DELAY_MS: u32 = 60_000;
const MAX_COUNT: u32 = 100;
const MAX_INTERVAL_MS: u32 = 10_000;

#[derive(Debug, Default)]
struct Hello;

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        // The caller's request id comes back on the reply, for tracing a call end to end.
        let request_id = request.metadata().get("x-request-id").cloned();
        let request = request.into_inner();
        let name = checked_name(&request.name)?;
        if request.delay_ms > MAX_DELAY_MS {
            return Err(Status::invalid_argument(format!(
                "delay_ms {} is over the limit of {MAX_DELAY_MS}",
                request.delay_ms
            )));
        }
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(request.delay_ms.into())).await;
        }
        let mut reply = Response::new(HelloReply {
            message: format!("Hello, {name}!"),
        });
        if let Some(id) = request_id {
            reply.metadata_mut().insert("x-request-id", id);
        }
        if name.starts_with("trailers") {
            let text = MetadataValue::try_from(name)
                .map_err(|_| Status::invalid_argument("a trailers name must be ASCII"))?;
            Trailers::of(&mut reply).with(|trailers| {
                trailers.insert("x-greeted", text);
                trailers.insert_bin("x-greeted-bin", MetadataValue::from_bytes(name.as_bytes()));
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
        let name = checked_name(&request.name)?.to_owned();
        if !(1..=MAX_COUNT).contains(&request.count) {
            return Err(Status::invalid_argument(format!(
                "count {} is out of range: expected 1 to {MAX_COUNT}",
                request.count
            )));
        }
        if request.interval_ms > MAX_INTERVAL_MS {
            return Err(Status::invalid_argument(format!(
                "interval_ms {} is over the limit of {MAX_INTERVAL_MS}",
                request.interval_ms
            )));
        }
        let interval = Duration::from_millis(request.interval_ms.into());
        let trailers = Trailers::new();
        let sent = trailers.clone();
        let counted = name.starts_with("trailers");
        let replies = (1..=request.count).map(move |i| {
            sent.with(|map| map.insert("x-sent", i.into()));
            Ok(HelloReply {
                message: format!("Hello #{i}, {name}!"),
            })
        });
        let reply = |stream: Self::StreamHellosStream| {
            let mut reply = Response::new(stream);
            if counted {
                trailers.attach(&mut reply);
            }
            Ok(reply)
        };
        if interval.is_zero() {
            return reply(Box::pin(futures_util::stream::iter(replies)));
        }
        // Each greeting after the first waits its turn.
        let paced =
            futures_util::stream::iter(replies.enumerate()).then(move |(i, reply)| async move {
                if i > 0 {
                    tokio::time::sleep(interval).await;
                }
                reply
            });
        reply(Box::pin(paced))
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
