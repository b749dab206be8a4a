//! micro-testsrv: the `testkit.v1.Probe` service for micro's resilience tests.
//!
//! ```text
//! micro-testsrv [--name NAME] [--journal PATH]
//! ```
//!
//! Registers as NAME (default `probe`) in the registry of `MICRO_REGISTRY` (with the other
//! `MICRO_*` settings; `etcd://…` when built with feature `etcd`), prints `ready addr=<address> node=<id>` on stdout once it serves
//! and is registered, then runs until SIGINT or SIGTERM and exits 0 after a graceful
//! shutdown. With `--journal`, every Count execution appends its id to PATH.

use std::{fs::File, process::ExitCode};

use micro::Service;
use micro_testkit::{Probe, pb::probe_server::ProbeServer};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: micro-testsrv [--name NAME] [--journal PATH]";

struct Args {
    name: String,
    journal: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        name: "probe".to_owned(),
        journal: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let mut value = |flag: &str| argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--name" => args.name = value("--name")?,
            "--journal" => args.journal = Some(value("--journal")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    // MICRO_REGISTRY may name an engine compiled in with a feature (etcd://… with this
    // crate's feature `etcd`).
    micro::install();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("micro-testsrv: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("micro-testsrv: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let journal = match &args.journal {
        Some(path) => Some(
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|err| format!("cannot open journal {path}: {err}"))?,
        ),
        None => None,
    };
    let probe = Probe::new(journal);
    let mut serving = probe.serving();
    let service = Service::builder(args.name)
        .add_service(ProbeServer::new(probe.clone()))
        .build()?;
    probe.attach(&service);
    // Installed before the ready line, so a SIGTERM right after it is handled gracefully.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let running = service.start().await?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "ready addr={} node={}",
            running.advertised_address(),
            running.node_id()
        );
    }
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            changed = serving.changed() => {
                if changed.is_err() {
                    break;
                }
                let status = *serving.borrow_and_update();
                running.set_serving(status);
            }
        }
    }
    running.shutdown().await?;
    Ok(())
}
