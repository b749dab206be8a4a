//! `micro describe`: a service's nodes, or a service's or method's schema, by reflection.

use micro::api::dynamic;
use prost_reflect::{MessageDescriptor, MethodDescriptor};
use serde_json::json;

use super::{Context, DescribeArgs, Output, ToolError, outln, print_table, registered};

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
