//! greeter-fixture: [`micro_testkit::FixtureGreeter`] as a process, registered as
//! `greeter`: examples/greeter's API with what tests need on top (`delay_ms`, a stalling
//! stream, the caller's `x-request-id` echoed, trailing metadata for names starting with
//! `trailers`). Prints `ready addr=<address> node=<id>` on
//! stdout once it serves and is registered, then runs until SIGINT or SIGTERM and exits 0
//! after a graceful shutdown.
//!
//! Tests outside micro-testkit find it in `target/<profile>/greeter-fixture` (scripts/test
//! builds every target first).

use micro::Service;
use micro_testkit::{FixtureGreeter, greeter::pb::greeter_server::GreeterServer};

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
        .add_service(GreeterServer::new(FixtureGreeter::new()))
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
