//! A one-node record as a DNS-SD instance: its instance name and its TXT entries.

use std::collections::BTreeMap;

use micro_core::registry::{Endpoint, Node, RegistryError, Service};

/// The version of the TXT layout, sent as `txtvers` (RFC 6763 §6.7).
const TXT_VERSION: &str = "1";

/// The longest TXT entry: one length byte, so `key=value` holds at most 255 bytes
/// (RFC 6763 §6.1).
pub(crate) const TXT_ENTRY_MAX: usize = 255;

/// The longest whole TXT record we send. A record cannot be split across packets, and
/// the engine builds packets of at most 1472 bytes (`wire::MAX_PACKET`, an Ethernet MTU)
/// that also carry the PTR, SRV and address records.
pub(crate) const TXT_TOTAL_MAX: usize = 1100;

/// The DNS-SD instance label of a node: a readable part of the node id and a hash of the
/// (service, node id) key.
///
/// DNS labels hold at most 63 bytes and compare case-insensitively, while micro's names are
/// up to 200 characters and case-sensitive; the 64-bit hash of the exact key keeps two keys
/// apart. The real names travel in the TXT record.
pub(crate) fn instance_label(service: &str, node: &str) -> String {
    let readable: String = node
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect::<String>()
        .to_ascii_lowercase();
    let readable = readable.trim_matches('-');
    let hash = fnv1a64(&[service.as_bytes(), &[0], node.as_bytes()]);
    if readable.is_empty() {
        format!("micro-{hash:016x}")
    } else {
        format!("{readable}-{hash:016x}")
    }
}

fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The TXT entries of the record of `node` of `service`.
///
/// # Errors
/// [`RegistryError::InvalidRecord`] naming the key when an entry cannot be sent: a key that
/// is not printable ASCII or holds `=`, an entry over [`TXT_ENTRY_MAX`] bytes, or a whole
/// record over [`TXT_TOTAL_MAX`] bytes.
pub(crate) fn encode(
    service: &Service,
    node: &Node,
) -> Result<Vec<(String, String)>, RegistryError> {
    let mut entries: Vec<(String, String)> = vec![
        ("txtvers".into(), TXT_VERSION.into()),
        ("service".into(), service.name.clone()),
        ("version".into(), service.version.clone()),
        ("node".into(), node.id.clone()),
        ("address".into(), node.address.clone()),
    ];
    for (key, value) in &service.metadata {
        entries.push((format!("s.{key}"), value.clone()));
    }
    for (key, value) in &node.metadata {
        entries.push((format!("n.{key}"), value.clone()));
    }
    if !service.endpoints.is_empty() {
        entries.push(("e".into(), service.endpoints.len().to_string()));
    }
    for (i, endpoint) in service.endpoints.iter().enumerate() {
        entries.push((format!("e{i}.name"), endpoint.name.clone()));
        entries.push((format!("e{i}.req"), endpoint.request.clone()));
        entries.push((format!("e{i}.res"), endpoint.response.clone()));
        for (key, value) in &endpoint.metadata {
            entries.push((format!("e{i}.m.{key}"), value.clone()));
        }
    }

    let mut total = 0;
    for (key, value) in &entries {
        let what = || format!("node {:?} of service {:?}", node.id, service.name);
        if key.is_empty() || key.contains('=') || !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(RegistryError::InvalidRecord(format!(
                "TXT key {key:?} of {} cannot be sent over mDNS: metadata keys must be \
                 printable ASCII without '='",
                what()
            )));
        }
        let len = key.len() + 1 + value.len();
        if len > TXT_ENTRY_MAX {
            return Err(RegistryError::InvalidRecord(format!(
                "TXT entry {key:?} of {} is {len} bytes as key=value; an mDNS TXT entry \
                 holds at most {TXT_ENTRY_MAX}: shorten the value",
                what()
            )));
        }
        total += 1 + len;
    }
    if total > TXT_TOTAL_MAX {
        return Err(RegistryError::InvalidRecord(format!(
            "the TXT record of node {:?} of service {:?} is {total} bytes; the mDNS registry \
             sends at most {TXT_TOTAL_MAX} (one packet): use less metadata or fewer endpoints",
            node.id, service.name
        )));
    }
    Ok(entries)
}

/// The one-node record a TXT record describes, or `None` (with the reason) when it is not a
/// record of ours.
pub(crate) fn decode<'a>(
    entries: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> Result<Service, String> {
    let mut fields: BTreeMap<&str, String> = BTreeMap::new();
    for (key, value) in entries {
        let value = value.unwrap_or_default();
        let value = std::str::from_utf8(value)
            .map_err(|_| format!("TXT entry {key:?} is not UTF-8"))?
            .to_owned();
        // RFC 6763 §6.4: when a key repeats, the first one counts.
        fields.entry(key).or_insert(value);
    }
    if fields.get("txtvers").map(String::as_str) != Some(TXT_VERSION) {
        return Err(format!(
            "txtvers is {:?}, expected {TXT_VERSION:?}",
            fields.get("txtvers")
        ));
    }
    let take = |key: &str| {
        fields
            .get(key)
            .cloned()
            .ok_or_else(|| format!("TXT entry {key:?} is missing"))
    };
    let name = take("service")?;
    let version = take("version")?;
    let id = take("node")?;
    let address = take("address")?;
    let count: usize = match fields.get("e") {
        Some(n) => n.parse().map_err(|_| format!("TXT entry \"e\" is {n:?}"))?,
        None => 0,
    };

    let prefixed = |prefix: &str| -> BTreeMap<String, String> {
        fields
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), v.clone())))
            .collect()
    };
    let mut endpoints = Vec::with_capacity(count.min(64));
    for i in 0..count {
        let get = |field: &str| {
            let key = format!("e{i}.{field}");
            fields
                .get(key.as_str())
                .cloned()
                .ok_or_else(|| format!("TXT entry {key:?} is missing"))
        };
        endpoints.push(Endpoint {
            name: get("name")?,
            request: get("req")?,
            response: get("res")?,
            metadata: prefixed(&format!("e{i}.m.")),
        });
    }
    Ok(Service {
        name,
        version,
        metadata: prefixed("s."),
        endpoints,
        nodes: vec![Node {
            id,
            address,
            metadata: prefixed("n."),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Service {
        let mut endpoint = Endpoint {
            name: "greeter.v1.Greeter.SayHello".into(),
            request: "greeter.v1.HelloRequest".into(),
            response: "greeter.v1.HelloReply".into(),
            ..Endpoint::default()
        };
        endpoint
            .metadata
            .insert("idempotency".into(), "idempotent".into());
        Service {
            name: "greeter".into(),
            version: "1.2.3".into(),
            metadata: [("team".to_owned(), "a=b".to_owned())].into(),
            endpoints: vec![endpoint],
            nodes: vec![Node {
                id: "greeter-1".into(),
                address: "127.0.0.1:50051".into(),
                metadata: [("zone".to_owned(), "".to_owned())].into(),
            }],
        }
    }

    #[test]
    fn round_trips() {
        let service = record();
        let entries = encode(&service, &service.nodes[0]).unwrap();
        let back = decode(
            entries
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_bytes()))),
        )
        .unwrap();
        assert_eq!(back, service);
    }

    #[test]
    fn long_entries_name_the_key() {
        let mut service = record();
        service.nodes[0]
            .metadata
            .insert("big".into(), "x".repeat(250));
        let err = encode(&service, &service.nodes[0]).unwrap_err().to_string();
        assert!(err.contains("\"n.big\"") && err.contains("255"), "{err}");

        let mut service = record();
        service.metadata.insert("bad=key".into(), "v".into());
        let err = encode(&service, &service.nodes[0]).unwrap_err().to_string();
        assert!(err.contains("s.bad=key"), "{err}");

        let mut service = record();
        for i in 0..20 {
            service.metadata.insert(format!("k{i}"), "v".repeat(100));
        }
        let err = encode(&service, &service.nodes[0]).unwrap_err().to_string();
        assert!(err.contains("one packet"), "{err}");
    }

    #[test]
    fn foreign_records_are_refused() {
        assert!(decode([("txtvers", Some(&b"1"[..]))]).is_err());
        assert!(decode([("path", Some(&b"/"[..]))]).is_err());
    }

    #[test]
    fn labels_fit_and_differ_by_case() {
        let long = "n".repeat(200);
        let label = instance_label(&"s".repeat(200), &long);
        assert!(label.len() <= 63, "{label}");
        assert_ne!(instance_label("s", "Node"), instance_label("s", "node"));
        assert_ne!(instance_label("a", "n"), instance_label("b", "n"));
        assert_eq!(instance_label("s", "..."), instance_label("s", "..."));
        assert!(instance_label("s", "...").starts_with("micro-"));
    }
}
