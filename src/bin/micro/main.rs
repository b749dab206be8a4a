//! `micro`: the micro toolkit. `micro server` runs the platform in one process.

// The CLI's own output goes to stdout; logs go to stderr through tracing.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod aliases;
mod server;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The micro toolkit: run the platform, talk to services.
#[derive(Debug, Parser)]
#[command(name = "micro", version, about, long_about = None)]
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
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // The engines this build enables (features redis, etcd, …) for --store / --registry.
    micro::install();
    let result = match cli.command {
        Command::Server(args) => server::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("micro: {err}");
            ExitCode::FAILURE
        }
    }
}
