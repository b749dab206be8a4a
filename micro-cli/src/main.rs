//! `micro`: the micro toolkit. `micro server` runs the platform in one process;
//! `micro api` serves every service as JSON over HTTP; `micro services`, `describe`,
//! `call`, `health` and `bench` talk to services found by name, with schemas read by gRPC
//! reflection; `publish`, `subscribe`, `kv`, `config` and `auth` use the platform services; `new`
//! scaffolds a service crate and `completion` prints shell completions.

// The CLI's own output goes to stdout; logs go to stderr through tracing.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod aliases;
mod api;
mod bench;
mod completion;
mod dev_tls;
mod duration;
mod new;
mod platform_cmds;
mod server;
mod tool;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// jemalloc, with its background purging thread on: memory freed after a burst (a thousand
/// connections closed, a round of large messages) goes back to the OS within jemalloc's decay
/// time (10 s) even when the process then stays idle. glibc's malloc keeps it in its arenas
/// until `malloc_trim`, so an idle `micro server` stayed at ~1.9× its baseline RSS after
/// connection churn (BENCHMARKS.md, issue 12 §3).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The micro toolkit: run the platform, talk to services.
#[derive(Debug, Parser)]
#[command(name = "micro", version, about, long_about = None, after_help = tool::EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform: the registry, kv, config, sync, event and auth services, health
    /// and reflection, on one port
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
    /// Publish a JSON message to a topic (through the event service by default)
    #[command(after_help = tool::EXIT_CODES)]
    Publish(platform_cmds::PublishArgs),
    /// Print the messages published to a topic as they arrive, until Ctrl-C
    #[command(after_help = tool::EXIT_CODES)]
    Subscribe(platform_cmds::SubscribeArgs),
    /// Read and write keys of the kv service (or any store): get, put, delete, list
    #[command(after_help = tool::EXIT_CODES)]
    Kv(platform_cmds::KvArgs),
    /// Read, write and watch values of the config service: get, set, delete, watch
    #[command(after_help = tool::EXIT_CODES)]
    Config(platform_cmds::ConfigArgs),
    /// Tokens, accounts, rules and keys of the auth service
    #[command(after_help = tool::EXIT_CODES)]
    Auth(platform_cmds::AuthArgs),
    /// Print the shell completion script: bash, zsh, fish, elvish or powershell
    #[command(long_about = completion::LONG_ABOUT)]
    Completion(completion::CompletionArgs),
    /// Create a service crate: proto, handlers, main, test, README
    #[command(long_about = new::LONG_ABOUT, after_help = tool::EXIT_CODES)]
    New(new::NewArgs),
    /// Load-test a method: many calls from concurrent callers; rps, codes, latency
    #[command(long_about = bench::LONG_ABOUT, after_help = tool::EXIT_CODES)]
    Bench(bench::BenchArgs),
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
    let command = match cli.command {
        Command::Server(args) => return finish(server::run(args).await),
        Command::Api(args) => return finish(api::run(args).await),
        command => run(command),
    };
    // Every call a client command makes on this task carries the caller's token, if set.
    let tool_result = match std::env::var(micro_core::auth::ENV_TOKEN) {
        Ok(token) if !token.trim().is_empty() => {
            match http::HeaderValue::try_from(format!("Bearer {}", token.trim())) {
                Ok(value) => {
                    micro_core::context::Context::new()
                        .with_metadata(http::header::AUTHORIZATION, value)
                        .scope(command)
                        .await
                }
                Err(_) => Err(tool::ToolError::Usage(format!(
                    "{} is not a valid header value",
                    micro_core::auth::ENV_TOKEN
                ))),
            }
        }
        _ => command.await,
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

/// Runs a client command (every command but `server` and `api`).
async fn run(command: Command) -> Result<(), tool::ToolError> {
    match command {
        // Handled by `main`, which runs them without a client context.
        Command::Server(_) | Command::Api(_) => Ok(()),
        Command::Services(args) => tool::services(args).await,
        Command::Describe(args) => tool::describe(args).await,
        Command::Call(args) => tool::call(args).await,
        Command::Health(args) => tool::health(args).await,
        Command::Publish(args) => platform_cmds::publish(args).await,
        Command::Subscribe(args) => platform_cmds::subscribe(args).await,
        Command::Kv(args) => platform_cmds::kv(args).await,
        Command::Config(args) => platform_cmds::config(args).await,
        Command::Auth(args) => platform_cmds::auth(args).await,
        Command::Completion(args) => completion::run(&args, Cli::command()),
        Command::New(args) => new::run(&args),
        Command::Bench(args) => bench::run(args).await,
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
