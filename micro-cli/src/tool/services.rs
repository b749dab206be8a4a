//! `micro services`: the services in the registry, their versions and node counts.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Context, Output, ServicesArgs, ToolError, outln, print_table};

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
