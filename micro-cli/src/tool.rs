//! The client commands of `micro`: `services`, `describe`, `call`, `health`. Schemas come
//! from the services themselves, by gRPC reflection; no compiled stubs.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    io::{Read, Write},
    time::Duration,
};

use futures_util::StreamExt;
use micro_core::{
    Client,
    registry::{self, Service as Record, SharedRegistry},
};
use prost_reflect::{DescriptorPool, MessageDescriptor, MethodDescriptor};
use serde_json::json;
use tonic::{Code, Status};

use micro::api::dynamic::{self, DynamicCodec, ReflectionError};

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

/// `micro services`.
pub(crate) async fn services(args: ServicesArgs) -> Result<(), ToolError> {
    let context = Context::open(&args.client)?;
    let records = tokio::time::timeout(args.client.timeout, context.registry.list_services())
        .await
        .map_err(|_| ToolError::NotFound("the registry did not answer".into()))?
        .map_err(|err| {
            ToolError::NotFound(format!("registry {}: {err}", context.registry.name()))
        })?;
    // name → (versions, nodes)
    let mut services: BTreeMap<String, (Vec<String>, usize)> = BTreeMap::new();
    for record in records {
        let entry = services.entry(record.name).or_default();
        if !entry.0.contains(&record.version) {
            entry.0.push(record.version);
        }
        entry.1 += record.nodes.len();
    }
    match args.client.output {
        Output::Json => {
            let list: Vec<_> = services
                .iter()
                .map(|(name, (versions, nodes))| {
                    json!({"name": name, "versions": versions, "nodes": nodes})
                })
                .collect();
            outln!("{}", json!(list));
        }
        Output::Table => {
            let rows = services
                .iter()
                .map(|(name, (versions, nodes))| {
                    vec![name.clone(), versions.join(","), nodes.to_string()]
                })
                .collect();
            print_table(&["NAME", "VERSION", "NODES"], rows);
        }
    }
    Ok(())
}

/// `micro describe`.
pub(crate) async fn describe(args: DescribeArgs) -> Result<(), ToolError> {
    let context = Context::open(&args.client)?;
    let records = context.records(&args.service).await?;
    // Reflection failing still leaves the registry's view worth showing.
    let pool = match context.pool(&args.service).await {
        Ok(pool) => Some(pool),
        Err(err) => {
            eprintln!("micro: no schemas: {err}");
            None
        }
    };
    // The methods the service registered, when it registered any (one server may serve
    // several registered names, as `micro server` does); else all but infrastructure.
    let registered = registered(&records);
    let methods: Vec<MethodDescriptor> = pool
        .iter()
        .flat_map(|pool| pool.services())
        .filter(|service| !is_infrastructure(service.full_name()))
        .flat_map(|service| service.methods().collect::<Vec<_>>())
        .filter(|method| registered.is_empty() || registered.contains(method.full_name()))
        .collect();

    match args.client.output {
        Output::Json => {
            let nodes: Vec<_> = records
                .iter()
                .flat_map(|record| {
                    record.nodes.iter().map(|node| {
                        json!({"id": node.id, "address": node.address,
                               "version": record.version, "metadata": node.metadata})
                    })
                })
                .collect();
            let endpoints: Vec<_> = if pool.is_some() {
                methods
                    .iter()
                    .map(|method| {
                        json!({
                            "name": method.full_name(),
                            "client_streaming": method.is_client_streaming(),
                            "server_streaming": method.is_server_streaming(),
                            "request": message_json(&method.input()),
                            "response": message_json(&method.output()),
                        })
                    })
                    .collect()
            } else {
                records
                    .iter()
                    .flat_map(|record| record.endpoints.iter())
                    .map(|e| json!({"name": e.name, "request": e.request, "response": e.response}))
                    .collect()
            };
            outln!(
                "{}",
                json!({"name": args.service, "nodes": nodes, "endpoints": endpoints})
            );
        }
        Output::Table => {
            outln!("service {}", args.service);
            outln!();
            let rows = records
                .iter()
                .flat_map(|record| {
                    record.nodes.iter().map(|node| {
                        let metadata: Vec<String> = node
                            .metadata
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        vec![
                            node.id.clone(),
                            node.address.clone(),
                            record.version.clone(),
                            metadata.join(" "),
                        ]
                    })
                })
                .collect();
            print_table(&["NODE", "ADDRESS", "VERSION", "METADATA"], rows);
            outln!();
            if pool.is_none() {
                for endpoint in records.iter().flat_map(|record| record.endpoints.iter()) {
                    outln!(
                        "rpc {}({}) returns ({})",
                        endpoint.name,
                        endpoint.request,
                        endpoint.response
                    );
                }
                return Ok(());
            }
            let mut messages: Vec<MessageDescriptor> = Vec::new();
            for method in &methods {
                outln!(
                    "rpc {}({}{}) returns ({}{})",
                    method.full_name(),
                    if method.is_client_streaming() {
                        "stream "
                    } else {
                        ""
                    },
                    method.input().full_name(),
                    if method.is_server_streaming() {
                        "stream "
                    } else {
                        ""
                    },
                    method.output().full_name(),
                );
                for message in [method.input(), method.output()] {
                    collect_messages(&message, &mut messages);
                }
            }
            for message in &messages {
                outln!();
                outln!("message {} {{", message.full_name());
                for field in message.fields() {
                    outln!(
                        "  {} {} = {};",
                        dynamic::field_type(&field),
                        field.name(),
                        field.number()
                    );
                }
                outln!("}}");
            }
        }
    }
    Ok(())
}

/// The full names of the endpoints in the service's records.
pub(crate) fn registered(records: &[Record]) -> HashSet<String> {
    records
        .iter()
        .flat_map(|record| record.endpoints.iter())
        .map(|endpoint| endpoint.name.clone())
        .collect()
}

/// Health and reflection: every micro service serves them; not worth listing.
fn is_infrastructure(name: &str) -> bool {
    name.starts_with("grpc.health.") || name.starts_with("grpc.reflection.")
}

/// `message` and the messages its fields use, each once, in order of discovery.
fn collect_messages(message: &MessageDescriptor, into: &mut Vec<MessageDescriptor>) {
    if message.is_map_entry() {
        for field in message.fields() {
            if let prost_reflect::Kind::Message(inner) = field.kind() {
                collect_messages(&inner, into);
            }
        }
        return;
    }
    if into
        .iter()
        .any(|known| known.full_name() == message.full_name())
    {
        return;
    }
    into.push(message.clone());
    for field in message.fields() {
        if let prost_reflect::Kind::Message(inner) = field.kind() {
            collect_messages(&inner, into);
        }
    }
}

/// A message's schema: its name and fields (name, JSON name, number, type).
fn message_json(message: &MessageDescriptor) -> serde_json::Value {
    let fields: Vec<_> = message
        .fields()
        .map(|field| {
            json!({"name": field.name(), "json_name": field.json_name(),
                   "number": field.number(), "type": dynamic::field_type(&field)})
        })
        .collect();
    json!({"name": message.full_name(), "fields": fields})
}

/// A method resolved by reflection, its requests parsed, and a ready channel to it.
pub(crate) struct Prepared {
    /// The method.
    pub(crate) method: MethodDescriptor,
    /// Its gRPC path.
    pub(crate) path: http::uri::PathAndQuery,
    /// The request messages (several for a client-streaming method).
    pub(crate) requests: Vec<prost_reflect::DynamicMessage>,
    /// A client on the service's channel, ready.
    pub(crate) grpc: tonic::client::Grpc<micro_core::Channel>,
}

impl Context {
    /// Reads the body, finds the method by reflection, parses the requests and waits for
    /// the channel to be ready.
    pub(crate) async fn prepare(&self, target: &MethodArgs) -> Result<Prepared, ToolError> {
        let body = read_body(target.body.as_deref(), target.data.as_deref())?;
        let records = self.records(&target.service).await?;
        let pool = self.pool(&target.service).await?;
        let method = dynamic::find_method(&pool, &target.method, &registered(&records))
            .map_err(ToolError::Usage)?;
        let requests =
            dynamic::parse_requests(&method.input(), &body, method.is_client_streaming())
                .map_err(ToolError::Usage)?;
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let path = http::uri::PathAndQuery::try_from(path)
            .map_err(|err| ToolError::Usage(format!("method path: {err}")))?;
        let mut grpc = tonic::client::Grpc::new(self.client.channel(&target.service));
        grpc.ready()
            .await
            .map_err(|err| ToolError::NotFound(format!("service {}: {err}", target.service)))?;
        Ok(Prepared {
            method,
            path,
            requests,
            grpc,
        })
    }
}

/// `micro call`.
pub(crate) async fn call(args: CallArgs) -> Result<(), ToolError> {
    let context = Context::open(&args.client)?;
    let Prepared {
        method,
        path,
        requests,
        mut grpc,
    } = context.prepare(&args.target).await?;
    let codec = DynamicCodec::new(method.output());
    let mut request_stream = None;
    let mut single = None;
    if method.is_client_streaming() {
        request_stream = Some(tonic::Request::new(futures_util::stream::iter(requests)));
    } else {
        single = requests.into_iter().next().map(tonic::Request::new);
    }
    match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => {
            let request = single.ok_or_else(|| ToolError::Usage("no request".into()))?;
            let reply = grpc
                .unary(request, path, codec)
                .await
                .map_err(ToolError::Status)?;
            print_reply(reply.get_ref())
        }
        (false, true) => {
            let request = single.ok_or_else(|| ToolError::Usage("no request".into()))?;
            let replies = grpc
                .server_streaming(request, path, codec)
                .await
                .map_err(ToolError::Status)?
                .into_inner();
            print_replies(replies).await
        }
        (true, false) => {
            let request = request_stream.ok_or_else(|| ToolError::Usage("no request".into()))?;
            let reply = grpc
                .client_streaming(request, path, codec)
                .await
                .map_err(ToolError::Status)?;
            print_reply(reply.get_ref())
        }
        (true, true) => {
            let request = request_stream.ok_or_else(|| ToolError::Usage("no request".into()))?;
            let replies = grpc
                .streaming(request, path, codec)
                .await
                .map_err(ToolError::Status)?
                .into_inner();
            print_replies(replies).await
        }
    }
}

fn print_reply(reply: &prost_reflect::DynamicMessage) -> Result<(), ToolError> {
    outln!("{}", dynamic::to_json(reply).map_err(ToolError::Failed)?);
    Ok(())
}

async fn print_replies(
    mut replies: tonic::Streaming<prost_reflect::DynamicMessage>,
) -> Result<(), ToolError> {
    while let Some(reply) = replies.next().await {
        print_reply(&reply.map_err(ToolError::Status)?)?;
    }
    Ok(())
}

/// The request body: BODY, `-d JSON`, `-d @file`, `-d -` (stdin), or `{}`.
pub(crate) fn read_body(body: Option<&str>, data: Option<&str>) -> Result<String, ToolError> {
    match (body, data) {
        (Some(body), _) => Ok(body.to_owned()),
        (None, Some("-")) => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|err| {
                ToolError::Usage(format!("cannot read the request from stdin: {err}"))
            })?;
            Ok(text)
        }
        (None, Some(data)) => match data.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file).map_err(|err| {
                ToolError::Usage(format!("cannot read the request from {file}: {err}"))
            }),
            None => Ok(data.to_owned()),
        },
        (None, None) => Ok("{}".to_owned()),
    }
}

/// `micro health`: grpc.health.v1 Check on each node.
pub(crate) async fn health(args: ServiceArgs) -> Result<(), ToolError> {
    let context = Context::open(&args.client)?;
    let records = context.records(&args.service).await?;
    let mut rows = Vec::new();
    let (mut serving, mut unreachable, mut total) = (0, 0, 0);
    for record in &records {
        for node in &record.nodes {
            total += 1;
            let status = check_node(
                &args.service,
                record,
                node,
                args.client.timeout,
                context.tls.as_ref(),
            )
            .await;
            let text = match &status {
                Ok(state) => {
                    if *state == "SERVING" {
                        serving += 1;
                    }
                    (*state).to_owned()
                }
                Err(status) => {
                    if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) {
                        unreachable += 1;
                    }
                    format!("{}: {}", code_name(status.code()), status.message())
                }
            };
            rows.push((node.id.clone(), node.address.clone(), text));
        }
    }
    match args.client.output {
        Output::Json => {
            let nodes: Vec<_> = rows
                .iter()
                .map(
                    |(id, address, status)| json!({"id": id, "address": address, "status": status}),
                )
                .collect();
            outln!("{}", json!({"service": args.service, "nodes": nodes}));
        }
        Output::Table => print_table(
            &["NODE", "ADDRESS", "STATUS"],
            rows.into_iter().map(|(a, b, c)| vec![a, b, c]).collect(),
        ),
    }
    if serving == total {
        Ok(())
    } else if unreachable == total {
        Err(ToolError::NotFound(format!(
            "service {}: no node reachable",
            args.service
        )))
    } else {
        Err(ToolError::Failed(format!(
            "service {}: {serving} of {total} nodes SERVING",
            args.service
        )))
    }
}

/// The serving status of one node: a client built on that node alone (a static channel).
async fn check_node(
    service: &str,
    record: &Record,
    node: &micro_core::registry::Node,
    timeout: Duration,
    tls: Option<&micro_core::tls::ClientTls>,
) -> Result<&'static str, Status> {
    let mut builder = Client::builder().timeout(timeout).static_service(Record {
        nodes: vec![node.clone()],
        ..record.clone()
    });
    if let Some(tls) = tls {
        builder = builder.tls(tls.clone());
    }
    let client = builder.build_static();
    let mut health = tonic_health::pb::health_client::HealthClient::new(client.channel(service));
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    use tonic_health::pb::health_check_response::ServingStatus;
    Ok(match ServingStatus::try_from(reply.get_ref().status) {
        Ok(ServingStatus::Serving) => "SERVING",
        Ok(ServingStatus::NotServing) => "NOT_SERVING",
        Ok(ServingStatus::ServiceUnknown) => "SERVICE_UNKNOWN",
        Ok(ServingStatus::Unknown) | Err(_) => "UNKNOWN",
    })
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
