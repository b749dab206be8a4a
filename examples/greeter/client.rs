//! greeter-client: calls the `greeter` service by name and prints which node answered.
//!
//! ```text
//! greeter-client [--count N] [--interval-ms MS] [NAME]
//! ```
//!
//! `--count 0` calls until killed. Each call prints one line:
//! `ok node=<id> address=<addr> message="Hello, NAME!"` or `err code=<code> message="..."`.
//! Exits 1 if any call failed.

use std::{process::ExitCode, time::Duration};

use micro::{Client, NodeInfo};

#[allow(unreachable_pub, missing_docs)]
mod pb {
    micro::include_proto!("greeter.v1");
}

use pb::{HelloRequest, greeter_client::GreeterClient};

struct Args {
    count: u64,
    interval: Duration,
    name: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        count: 10,
        interval: Duration::ZERO,
        name: "world".to_owned(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--count" => {
                let value = it.next().ok_or("--count needs a number")?;
                args.count = value
                    .parse()
                    .map_err(|_| format!("--count: {value:?} is not a number"))?;
            }
            "--interval-ms" => {
                let value = it.next().ok_or("--interval-ms needs a number")?;
                let ms = value
                    .parse()
                    .map_err(|_| format!("--interval-ms: {value:?} is not a number"))?;
                args.interval = Duration::from_millis(ms);
            }
            "-h" | "--help" => {
                return Err("usage: greeter-client [--count N] [--interval-ms MS] [NAME]".into());
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            name => args.name = name.to_owned(),
        }
    }
    Ok(args)
}

#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> ExitCode {
    // MICRO_REGISTRY may name an engine compiled in with a feature (etcd://…).
    micro::install();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let client = match Client::from_env() {
        Ok(client) => client,
        Err(err) => {
            eprintln!("greeter-client: {err}");
            return ExitCode::from(2);
        }
    };
    let mut greeter = GreeterClient::new(client.channel("greeter"));
    let mut failed = false;
    let mut done = 0;
    while args.count == 0 || done < args.count {
        done += 1;
        let request = HelloRequest {
            name: args.name.clone(),
        };
        match greeter.say_hello(request).await {
            Ok(response) => {
                let (id, address) = response
                    .extensions()
                    .get::<NodeInfo>()
                    .map(|node| (node.id().to_owned(), node.address().to_owned()))
                    .unwrap_or_default();
                println!(
                    "ok node={id} address={address} message={:?}",
                    response.get_ref().message
                );
            }
            Err(status) => {
                failed = true;
                println!(
                    "err code={:?} message={:?}",
                    status.code(),
                    status.message()
                );
            }
        }
        if !args.interval.is_zero() {
            tokio::time::sleep(args.interval).await;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
