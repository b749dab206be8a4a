//! `micro health`: the serving status of each node of a service.

use std::time::Duration;

use micro_core::{Client, registry::Service as Record};
use serde_json::json;
use tonic::{Code, Status};

use super::{Context, Output, ServiceArgs, ToolError, code_name, outln, print_table};

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
