//! The registry record: a service, its endpoints and its nodes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codegen::{EndpointDescriptor, Idempotency};

/// A service as the registry knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The name clients look the service up by, for example `greeter`.
    pub name: String,
    /// The version of the service, for example `1.0.0`.
    #[serde(default)]
    pub version: String,
    /// Free-form labels for the whole service.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The RPC methods the service offers.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The processes serving it.
    #[serde(default)]
    pub nodes: Vec<Node>,
}

/// One RPC method of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The fully qualified method name, `package.Service.Method`, for example
    /// `greeter.v1.Greeter.SayHello`.
    pub name: String,
    /// Fully qualified request message name.
    pub request: String,
    /// Fully qualified response message name.
    pub response: String,
    /// Free-form labels: `stream` (`client`, `server` or `bidi`) and `idempotency`
    /// (`idempotent`, `no_side_effects`) when they apply.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One process serving a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique id of the node, for example `greeter-4b0c6d1e-…`.
    pub id: String,
    /// The address clients connect to: `host:port`, or `unix:/path/to/socket`.
    pub address: String,
    /// Free-form labels for this node.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// What happened to a node, as reported by [`Registry::watch`](super::Registry::watch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A node appeared.
    Create,
    /// A known node's record changed (address, metadata, version, endpoints).
    Update,
    /// A node was deregistered or expired.
    Delete,
}

/// A change reported by a registry watch. `service.nodes` holds exactly the node concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The service record, with the one node the event is about.
    pub service: Service,
}

// === impl Endpoint ===

impl Endpoint {
    /// Builds the registry endpoint for a method of the gRPC service `service`
    /// (fully qualified, for example `greeter.v1.Greeter`).
    pub fn from_descriptor(service: &str, method: &EndpointDescriptor) -> Self {
        let mut metadata = BTreeMap::new();
        let stream = match (method.client_streaming, method.server_streaming) {
            (false, false) => None,
            (true, false) => Some("client"),
            (false, true) => Some("server"),
            (true, true) => Some("bidi"),
        };
        if let Some(stream) = stream {
            metadata.insert("stream".to_owned(), stream.to_owned());
        }
        let idempotency = match method.idempotency {
            Idempotency::Unknown => None,
            Idempotency::NoSideEffects => Some("no_side_effects"),
            Idempotency::Idempotent => Some("idempotent"),
        };
        if let Some(level) = idempotency {
            metadata.insert("idempotency".to_owned(), level.to_owned());
        }
        Self {
            name: format!("{service}.{}", method.name),
            request: method.request.to_owned(),
            response: method.response.to_owned(),
            metadata,
        }
    }
}
