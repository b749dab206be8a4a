//! Per-machine registry. (Stub: being implemented.)

use async_trait::async_trait;

use super::{RegisterOptions, Registry, RegistryError, Service, WatchOptions, Watcher};

/// Files under a per-user runtime directory.
#[derive(Debug, Clone, Default)]
pub struct LocalRegistry {}

impl LocalRegistry {
    /// The registry in the per-user runtime directory.
    pub fn new() -> Result<Self, RegistryError> {
        todo!()
    }

    /// The registry in `dir`.
    pub fn with_dir(_dir: std::path::PathBuf) -> Result<Self, RegistryError> {
        todo!()
    }
}

#[async_trait]
impl Registry for LocalRegistry {
    fn name(&self) -> &str {
        "local"
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
