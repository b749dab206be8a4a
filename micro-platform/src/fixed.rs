//! A registry that knows one service at one fixed address, so clients given an address
//! (`service://host:port`) still run on micro's [`Channel`](micro_core::Channel): retries of
//! idempotent methods, deadlines, tracing and metrics.

use async_trait::async_trait;
use micro_core::{
    Client, RegistryError,
    codegen::ServiceDescriptor,
    registry::{
        Endpoint, Node, RegisterOptions, Registry, Service, SharedRegistry, WatchOptions, Watcher,
    },
};
use std::sync::Arc;

/// A read-only registry holding `service` with one node at a fixed address.
#[derive(Debug)]
pub(crate) struct FixedRegistry {
    name: String,
    service: Service,
}

impl FixedRegistry {
    /// A client whose channel to `service` always goes to `address`.
    pub(crate) fn client(
        service: &str,
        descriptor: &ServiceDescriptor,
        address: &str,
    ) -> Result<Client, String> {
        let address = address.trim();
        if address.is_empty() || address.contains('/') && !address.starts_with("unix:") {
            return Err(format!(
                "address {address:?} is not host:port (for example 127.0.0.1:7700)"
            ));
        }
        let registry: SharedRegistry = Arc::new(Self {
            name: format!("fixed {service} at {address}"),
            service: Service {
                name: service.to_owned(),
                endpoints: descriptor
                    .endpoints
                    .iter()
                    .map(|e| Endpoint::from_descriptor(descriptor.name, e))
                    .collect(),
                nodes: vec![Node {
                    id: format!("{service}-fixed"),
                    address: address.to_owned(),
                    ..Node::default()
                }],
                ..Service::default()
            },
        });
        Ok(Client::new(registry))
    }

    fn read_only(&self) -> RegistryError {
        RegistryError::backend_msg(&self.name, "a fixed address cannot be changed")
    }
}

#[async_trait]
impl Registry for FixedRegistry {
    fn name(&self) -> &str {
        &self.name
    }

    async fn register(&self, _: &Service, _: RegisterOptions) -> Result<(), RegistryError> {
        Err(self.read_only())
    }

    async fn deregister(&self, _: &Service) -> Result<(), RegistryError> {
        Err(self.read_only())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, RegistryError> {
        Ok(if name == self.service.name {
            vec![self.service.clone()]
        } else {
            Vec::new()
        })
    }

    async fn list_services(&self) -> Result<Vec<Service>, RegistryError> {
        Ok(vec![self.service.clone()])
    }

    async fn watch(&self, _: WatchOptions) -> Result<Watcher, RegistryError> {
        // Nothing ever changes.
        Ok(Box::pin(futures_util::stream::pending()))
    }
}
