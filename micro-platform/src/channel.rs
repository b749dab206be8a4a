//! Channels to a platform service at a fixed address (`service://host:port`): micro's
//! static resolver, so such clients still get retries of idempotent methods, deadlines,
//! tracing and metrics.

use micro_core::{
    Channel,
    codegen::ServiceDescriptor,
    registry::{Endpoint, Node, Service},
};

/// A channel to `service` at `address` alone, knowing the methods of `descriptor` (their
/// idempotency decides what is retried).
///
/// # Errors
/// A message naming `address` when it is not `host:port` (or `unix:/path`).
pub(crate) fn at_address(
    service: &str,
    descriptor: &ServiceDescriptor,
    address: &str,
) -> Result<Channel, String> {
    Channel::from_service(Service {
        name: service.to_owned(),
        endpoints: descriptor
            .endpoints
            .iter()
            .map(|e| Endpoint::from_descriptor(descriptor.name, e))
            .collect(),
        nodes: vec![Node {
            id: format!("{service}-0"),
            address: address.trim().to_owned(),
            ..Node::default()
        }],
        ..Service::default()
    })
    .map_err(|err| err.to_string())
}
