//! The client commands of `micro`: `services`, `describe`, `call`, `health`, one file each.
//! Schemas come from the services themselves, by gRPC reflection; no compiled stubs.

mod call;
mod describe;
mod health;
mod services;

pub(crate) use call::{Prepared, call, read_body};
pub(crate) use describe::describe;
pub(crate) use health::health;
pub(crate) use services::services;

use std::{collections::HashSet, fmt, io::Write, time::Duration};

use micro_core::{
    Client,
    registry::{self, Service as Record, SharedRegistry},
};
use prost_reflect::DescriptorPool;
use tonic::{Code, Status};

use micro::api::dynamic::{self, ReflectionError};

pub(crate) use micro_core::middleware::code_name;

/// `println!` that ends the process quietly when stdout is gone (`micro … | head`).
macro_rules! outln {
    () => {
        $crate::tool::out(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::tool::out(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes one line to stdout and flushes it (streamed replies show as they arrive); when
/// stdout is closed, exits with 0 as `head`'s readers expect.
pub(crate) fn out(line: fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// Exit codes and what they mean, for `--help`.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the call failed with a gRPC status (printed as `CODE: message` on stderr), a node
     is not SERVING (health), a key or config value does not exist (kv get/delete,
     config get/delete), or some calls failed (bench)
  2  usage or bad input: unknown flag, bad JSON, a value that does not fit its field,
     unknown method, a bad topic, key, namespace, path or crate name
  3  service not found in the registry (also micro.kv, micro.config, micro.event), or
     unreachable";

/// Flags every client command takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    /// Registry to find services in: `local`, `local:///dir`, `memory`,
    /// `service://host:port`, `etcd://…` (builds with feature etcd)
    #[arg(
        long,
        env = "MICRO_REGISTRY",
        value_name = "URL",
        default_value = "local"
    )]
    pub(crate) registry: String,

    /// Output format (`call` prints JSON either way)
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub(crate) output: Output,

    /// Time limit of each call: `500ms`, `10s`, `2m`, `1h30m`
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::duration::parse)]
    pub(crate) timeout: Duration,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns for people
    Table,
    /// JSON for programs
    Json,
}

/// Flags of `micro describe`.
#[derive(Debug, clap::Args)]
pub(crate) struct DescribeArgs {
    /// The service's registered name
    service: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// The method and request of `micro call` and `micro bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct MethodArgs {
    /// The service's registered name
    pub(crate) service: String,
    /// The method: `package.Service.Method`, `Service.Method` or `Method`
    method: String,
    /// The request as JSON (protobuf's JSON mapping) [default: {}]
    body: Option<String>,
    /// The request from elsewhere: `@file` or `-` (stdin); instead of BODY
    #[arg(
        short = 'd',
        long = "data",
        value_name = "JSON|@FILE|-",
        conflicts_with = "body"
    )]
    data: Option<String>,
}

/// Flags of `micro call`.
#[derive(Debug, clap::Args)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    target: MethodArgs,
    #[command(flatten)]
    client: ClientArgs,
}

/// Flags of `micro health` and `micro services`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServiceArgs {
    /// The service's registered name
    service: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Flags of `micro services`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServicesArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub(crate) enum ToolError {
    /// A call failed with a gRPC status: exit 1.
    Status(Status),
    /// Something failed that is neither bad input nor a missing service: exit 1.
    Failed(String),
    /// Bad input: exit 2.
    Usage(String),
    /// The service is not registered or cannot be reached: exit 3.
    NotFound(String),
}

impl ToolError {
    /// The process exit code.
    pub(crate) fn code(&self) -> u8 {
        match self {
            Self::Status(_) | Self::Failed(_) => 1,
            Self::Usage(_) => 2,
            Self::NotFound(_) => 3,
        }
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(status) => write!(f, "{}: {}", code_name(status.code()), status.message()),
            Self::Failed(message) | Self::Usage(message) | Self::NotFound(message) => {
                f.write_str(message)
            }
        }
    }
}

/// The registry and a client on it.
pub(crate) struct Context {
    pub(crate) registry: SharedRegistry,
    pub(crate) client: Client,
    pub(crate) args: ClientArgs,
    /// TLS for nodes registered with transport=tls, from MICRO_TLS_CA & co.
    pub(crate) tls: Option<micro_core::tls::ClientTls>,
}

impl Context {
    pub(crate) fn open(args: &ClientArgs) -> Result<Self, ToolError> {
        let registry = registry::from_url(&args.registry)
            .map_err(|err| ToolError::Usage(format!("--registry {}: {err}", args.registry)))?;
        let tls = micro_core::tls::ClientTls::from_env()
            .map_err(|err| ToolError::Usage(err.to_string()))?;
        let mut builder = Client::builder()
            .registry(registry.clone())
            .timeout(args.timeout);
        if let Some(tls) = &tls {
            builder = builder.tls(tls.clone());
        }
        let client = builder
            .build()
            .map_err(|err| ToolError::Usage(err.to_string()))?;
        Ok(Self {
            registry,
            client,
            args: args.clone(),
            tls,
        })
    }

    /// The service's records; an error when it has no live node.
    pub(crate) async fn records(&self, name: &str) -> Result<Vec<Record>, ToolError> {
        let records = tokio::time::timeout(self.args.timeout, self.registry.get_service(name))
            .await
            .map_err(|_| {
                ToolError::NotFound(format!("registry {} did not answer", self.registry.name()))
            })?
            .map_err(|err| {
                ToolError::NotFound(format!("registry {}: {err}", self.registry.name()))
            })?;
        if records.iter().all(|record| record.nodes.is_empty()) {
            return Err(ToolError::NotFound(format!(
                "service {name} not found in registry {}",
                self.registry.name()
            )));
        }
        Ok(records)
    }

    /// The schemas `service` serves, by reflection.
    pub(crate) async fn pool(&self, service: &str) -> Result<DescriptorPool, ToolError> {
        let channel = self.client.channel(service);
        match tokio::time::timeout(self.args.timeout, dynamic::fetch_pool(channel)).await {
            Err(_) => Err(ToolError::NotFound(format!(
                "service {service}: reflection did not answer within {:?}",
                self.args.timeout
            ))),
            Ok(Ok(pool)) => Ok(pool),
            Ok(Err(ReflectionError::Status(status)))
                if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) =>
            {
                Err(ToolError::NotFound(format!(
                    "service {service} unreachable: {}",
                    status.message()
                )))
            }
            Ok(Err(ReflectionError::Status(status))) => Err(ToolError::Failed(format!(
                "service {service} serves no usable reflection: {}: {}",
                code_name(status.code()),
                status.message()
            ))),
            Ok(Err(err)) => Err(ToolError::Failed(format!("service {service}: {err}"))),
        }
    }
}

/// The full names of the endpoints in the service's records.
pub(crate) fn registered(records: &[Record]) -> HashSet<String> {
    records
        .iter()
        .flat_map(|record| record.endpoints.iter())
        .map(|endpoint| endpoint.name.clone())
        .collect()
}

/// Left-aligned columns, two spaces apart.
pub(crate) fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let width = widths.get(i).copied().unwrap_or(0);
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    outln!("{}", line(header.iter().map(|h| (*h).to_owned()).collect()));
    for row in rows {
        outln!("{}", line(row));
    }
}
