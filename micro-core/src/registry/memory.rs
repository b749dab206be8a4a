//! In-process registry. (Stub: being implemented.)

use async_trait::async_trait;

use super::{RegisterOptions, Registry, RegistryError, Service, WatchOptions, Watcher};

/// A registry that lives in this process' memory. Clones share the same records.
#[derive(Debug, Clone, Default)]
pub struct MemoryRegistry {}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    fn name(&self) -> &str {
        "memory"
    }
    async fn register(&self, _s: &Service, _o: RegisterOptions) -> Result<(), RegistryError> {
        todo!()
    }
    async fn deregister(&self, _s: &Service) -> Result<(), RegistryError> {
        todo!()
    }
    async fn get_service(&self, _name: &str) -> Result<Vec<Service>, RegistryError> {
        todo!()
    }
    async fn list_services(&self) -> Result<Vec<Service>, RegistryError> {
        todo!()
    }
    async fn watch(&self, _o: WatchOptions) -> Result<Watcher, RegistryError> {
        todo!()
    }
}
