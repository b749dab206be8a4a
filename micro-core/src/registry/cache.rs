//! Watch-backed cache. (Stub: being implemented.)

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{
    RegisterOptions, Registry, RegistryError, Service, SharedRegistry, WatchOptions, Watcher,
};

/// Serves lookups from memory, kept fresh by a watch on the wrapped registry.
#[derive(Debug, Clone)]
pub struct CacheRegistry {
    inner: SharedRegistry,
}

impl CacheRegistry {
    /// Wraps `inner`.
    pub fn new(inner: SharedRegistry) -> Self {
        Self { inner }
    }

    /// The wrapped registry.
    pub fn inner(&self) -> &SharedRegistry {
        &self.inner
    }

    /// A receiver that always holds the current records of `name` (one per version).
    pub async fn subscribe(
        &self,
        _name: &str,
    ) -> Result<watch::Receiver<Arc<Vec<Service>>>, RegistryError> {
        todo!()
    }
}

#[async_trait]
impl Registry for CacheRegistry {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn register(&self, s: &Service, o: RegisterOptions) -> Result<(), RegistryError> {
        self.inner.register(s, o).await
    }
    async fn deregister(&self, s: &Service) -> Result<(), RegistryError> {
        self.inner.deregister(s).await
    }
    async fn get_service(&self, _name: &str) -> Result<Vec<Service>, RegistryError> {
        todo!()
    }
    async fn list_services(&self) -> Result<Vec<Service>, RegistryError> {
        self.inner.list_services().await
    }
    async fn watch(&self, o: WatchOptions) -> Result<Watcher, RegistryError> {
        self.inner.watch(o).await
    }
}
