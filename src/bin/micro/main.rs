//! `micro`: the micro toolkit. `micro server` runs the platform in one process;
//! `micro api` serves every service as JSON over HTTP;
//! `micro services`, `describe`, `call` and `health` talk to services found by name, with
//! schemas read by gRPC reflection.

// The CLI's own output goes to stdout; logs go to stderr through tracing.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod aliases;
mod api;
mod server;
mod tool;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The micro toolkit: run the platform, talk to services.
#[derive(Debug, Parser)]
#[command(name = "micro", version, about, long_about = None, after_help = tool::EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform: the registry, kv, config, sync and event services, health and
    /// reflection, on one port
    #[command(long_about = server::LONG_ABOUT)]
    Server(server::ServerArgs),
    /// Serve every service in the registry as JSON over HTTP (the API gateway)
    #[command(long_about = api::LONG_ABOUT)]
    Api(api::ApiArgs),
    /// List the services in the registry
    #[command(after_help = tool::EXIT_CODES)]
    Services(tool::ServicesArgs),
    /// Show a service's nodes and its methods with their message schemas (by reflection)
    #[command(after_help = tool::EXIT_CODES)]
    Describe(tool::DescribeArgs),
    /// Call a method with a JSON request; replies print as JSON, one per line
    #[command(
        long_about = "Calls a method of a service found by name, with a JSON request \
                      (protobuf's JSON mapping). The schema comes from the service by gRPC \
                      reflection. Replies print as JSON, one per line; a server-streaming \
                      method's replies print as they arrive. Client-streaming methods take \
                      a JSON array of requests.",
        after_help = tool::EXIT_CODES
    )]
    Call(tool::CallArgs),
    /// Check the health (grpc.health.v1) of each node of a service
    #[command(after_help = tool::EXIT_CODES)]
    Health(tool::ServiceArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs what it does; the client commands only what went wrong.
    let level = match cli.command {
        Command::Server(_) | Command::Api(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    // The engines this build enables (features redis, etcd, …) for --store / --registry.
    micro::install();
    let tool_result = match cli.command {
        Command::Server(args) => return finish(server::run(args).await),
        Command::Api(args) => return finish(api::run(args).await),
        Command::Services(args) => tool::services(args).await,
        Command::Describe(args) => tool::describe(args).await,
        Command::Call(args) => tool::call(args).await,
        Command::Health(args) => tool::health(args).await,
    };
    match tool_result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ tool::ToolError::Status(_)) => {
            eprintln!("{err}");
            ExitCode::from(err.code())
        }
        Err(err) => {
            eprintln!("micro: {err}");
            ExitCode::from(err.code())
        }
    }
}

fn finish(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("micro: {err}");
            ExitCode::FAILURE
        }
    }
}
