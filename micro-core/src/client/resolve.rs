//! Where a channel finds the nodes of its service: the client's registry, or fixed
//! addresses given up front.

use std::collections::HashMap;

use crate::registry::{Node, Service};

/// Where a [`Channel`](super::Channel) finds its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resolver {
    /// The client's registry, through its cache, watched for changes.
    Registry,
    /// The client's fixed records of the service: the nodes never change.
    Static,
}

/// The fixed records of the services a client does not look up in its registry, by name.
pub(super) type StaticServices = HashMap<String, Vec<Service>>;

/// A node address a channel cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "address {address:?} of service {service} is not host:port (for example 127.0.0.1:7700) \
     or unix:/path"
)]
pub struct AddressError {
    service: String,
    address: String,
}

impl AddressError {
    /// The address that was refused.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The service it was given for.
    pub fn service(&self) -> &str {
        &self.service
    }
}

/// The record of `service` with one node per address, ids `<service>-<index>`.
pub(super) fn record(service: &str, addresses: impl IntoIterator<Item = String>) -> Service {
    Service {
        name: service.to_owned(),
        nodes: addresses
            .into_iter()
            .enumerate()
            .map(|(index, address)| Node {
                id: format!("{service}-{index}"),
                address: address.trim().to_owned(),
                ..Node::default()
            })
            .collect(),
        ..Service::default()
    }
}

/// Refuses addresses that are empty or look like URLs: `host:port` and `unix:/path` pass.
pub(super) fn check(service: &Service) -> Result<(), AddressError> {
    for node in &service.nodes {
        let address = node.address.trim();
        if address.is_empty() || (address.contains('/') && !address.starts_with("unix:")) {
            return Err(AddressError {
                service: service.name.clone(),
                address: address.to_owned(),
            });
        }
    }
    Ok(())
}
