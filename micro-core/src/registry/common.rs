//! Helpers shared by the registries: validation, one-node records and grouping.
//!
//! Public (re-exported from [`registry`](super)) so registries in other crates validate and
//! group exactly like the embedded ones.

use std::collections::BTreeMap;

use super::{Node, RegistryError, Service};

/// Longest service name or node id we accept; keeps `<id>.json` and temp names well under
/// the usual 255-byte file name limit.
const MAX_NAME_LEN: usize = 200;

/// Checks a record handed to `register`: valid name and node ids, at least one node, no
/// empty address.
///
/// # Errors
/// [`RegistryError::InvalidRecord`] naming the first problem.
pub fn validate_register(service: &Service) -> Result<(), RegistryError> {
    validate_name("service name", &service.name)?;
    if service.nodes.is_empty() {
        return Err(invalid(format!(
            "service {:?} has no nodes; register at least one node",
            service.name
        )));
    }
    for node in &service.nodes {
        validate_name(&format!("node id of service {:?}", service.name), &node.id)?;
        if node.address.trim().is_empty() {
            return Err(invalid(format!(
                "node {:?} of service {:?} has an empty address",
                node.id, service.name
            )));
        }
    }
    Ok(())
}

/// Checks a record handed to `deregister`: only the name and the node ids matter.
///
/// # Errors
/// [`RegistryError::InvalidRecord`] naming the first problem.
pub fn validate_deregister(service: &Service) -> Result<(), RegistryError> {
    validate_name("service name", &service.name)?;
    for node in &service.nodes {
        validate_name(&format!("node id of service {:?}", service.name), &node.id)?;
    }
    Ok(())
}

/// Names and ids are used as file names by the local registry, so every registry accepts
/// only `[A-Za-z0-9._-]`, and never `.` or `..`.
fn validate_name(what: &str, value: &str) -> Result<(), RegistryError> {
    if value.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "{what} {value:?} is longer than {MAX_NAME_LEN} characters"
        )));
    }
    if value == "." || value == ".." {
        return Err(invalid(format!("{what} {value:?} is not allowed")));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(format!(
            "{what} {value:?} contains {bad:?}; use only letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

fn invalid(message: String) -> RegistryError {
    RegistryError::InvalidRecord(message)
}

/// The record of one node: `service` with its node list replaced by `node`.
pub fn single(service: &Service, node: &Node) -> Service {
    Service {
        name: service.name.clone(),
        version: service.version.clone(),
        metadata: service.metadata.clone(),
        endpoints: service.endpoints.clone(),
        nodes: vec![node.clone()],
    }
}

/// Groups one-node records into one [`Service`] per name and version, sorted by name and
/// version, with nodes sorted by id. Service-level fields come from the node with the
/// smallest id.
pub fn group<'a>(records: impl IntoIterator<Item = &'a Service>) -> Vec<Service> {
    let mut groups: BTreeMap<(&str, &str), Vec<&Service>> = BTreeMap::new();
    for record in records {
        groups
            .entry((record.name.as_str(), record.version.as_str()))
            .or_default()
            .push(record);
    }
    groups
        .into_values()
        .filter_map(|mut records| {
            records.sort_by(|a, b| node_id(a).cmp(node_id(b)));
            let first = records.first()?;
            let mut service = Service {
                nodes: Vec::with_capacity(records.len()),
                ..(*first).clone()
            };
            service.nodes.clear();
            for record in &records {
                service.nodes.extend(record.nodes.iter().cloned());
            }
            Some(service)
        })
        .collect()
}

fn node_id(record: &Service) -> &str {
    record.nodes.first().map_or("", |n| n.id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, version: &str, ids: &[&str]) -> Service {
        Service {
            name: name.into(),
            version: version.into(),
            nodes: ids
                .iter()
                .map(|id| Node {
                    id: (*id).into(),
                    address: "127.0.0.1:1".into(),
                    ..Node::default()
                })
                .collect(),
            ..Service::default()
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let cases = [
            (svc("", "1", &["a"]), "service name is empty"),
            (svc("a/b", "1", &["a"]), "'/'"),
            (svc("..", "1", &["a"]), "not allowed"),
            (svc("greeter", "1", &[]), "no nodes"),
            (
                svc("greeter", "1", &[""]),
                "node id of service \"greeter\" is empty",
            ),
            (svc("greeter", "1", &["x y"]), "' '"),
        ];
        for (service, want) in cases {
            let err = validate_register(&service).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        let mut no_addr = svc("greeter", "1", &["n1"]);
        no_addr.nodes[0].address.clear();
        let err = validate_register(&no_addr).unwrap_err().to_string();
        assert!(err.contains("empty address") && err.contains("n1"), "{err}");
        assert!(validate_register(&svc("greeter.v1_x-2", "1", &["n-1.a_b"])).is_ok());
    }

    #[test]
    fn group_sorts_and_splits_versions() {
        let a = single(&svc("s", "2", &[]), &svc("s", "2", &["b"]).nodes[0]);
        let b = single(&svc("s", "1", &[]), &svc("s", "1", &["z"]).nodes[0]);
        let c = single(&svc("s", "2", &[]), &svc("s", "2", &["a"]).nodes[0]);
        let d = single(&svc("r", "9", &[]), &svc("r", "9", &["q"]).nodes[0]);
        let out = group([&a, &b, &c, &d]);
        let shape: Vec<_> = out
            .iter()
            .map(|s| {
                let ids: Vec<_> = s.nodes.iter().map(|n| n.id.as_str()).collect();
                (s.name.as_str(), s.version.as_str(), ids)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("r", "9", vec!["q"]),
                ("s", "1", vec!["z"]),
                ("s", "2", vec!["a", "b"]),
            ]
        );
    }
}
