//! [`RegistryService`]: the `micro.registry.v1.Registry` server over any registry.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::{Stream, StreamExt};
use micro_core::registry::{
    DEFAULT_TTL, RegisterOptions, SharedRegistry, WatchOptions, validate_deregister,
    validate_register,
};
use tonic::{Request, Response, Status};

use super::wire::{self, status_from_error};
use crate::proto::registry::v1::{self as pb, registry_server::RegistryServer};

/// The registry service over a registry: add [`RegistryService::into_server`] to a micro
/// [`Service`](micro_core::Service).
///
/// Records are validated with micro-core's own rules before the backend sees them.
///
/// `Watch` streams last until the client goes away, so a server that shuts down must end
/// them, or its drain waits for them: call [`close_watches`](Self::close_watches) (on any
/// clone) when the shutdown starts.
#[derive(Clone)]
pub struct RegistryService {
    registry: SharedRegistry,
    closed: Arc<tokio::sync::watch::Sender<bool>>,
}

impl RegistryService {
    /// Serves `registry`.
    pub fn new(registry: SharedRegistry) -> Self {
        Self {
            registry,
            closed: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// Ends every `Watch` stream of this service and its clones with UNAVAILABLE, and
    /// refuses new ones: the server is shutting down and clients should watch elsewhere.
    pub fn close_watches(&self) {
        self.closed.send_replace(true);
    }

    /// The tonic server.
    pub fn into_server(self) -> RegistryServer<Self> {
        RegistryServer::new(self)
    }
}

impl std::fmt::Debug for RegistryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryService")
            .field("registry", &self.registry.name())
            .finish()
    }
}

fn shutting_down() -> Status {
    Status::unavailable("the registry service is shutting down; watch again")
}

fn missing_service() -> Status {
    Status::invalid_argument("service is missing: set name and nodes")
}

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistryService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        let service = wire::service_from_pb(request.service.ok_or_else(missing_service)?);
        let ttl = match request.ttl {
            None => DEFAULT_TTL,
            Some(ttl) => match Duration::try_from(ttl) {
                Ok(ttl) if !ttl.is_zero() => ttl,
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "ttl of service {:?} must be positive",
                        service.name
                    )));
                }
            },
        };
        validate_register(&service).map_err(status_from_error)?;
        self.registry
            .register(&service, RegisterOptions { ttl })
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(pb::RegisterResponse {}))
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        let request = request.into_inner();
        let service = wire::service_from_pb(request.service.ok_or_else(missing_service)?);
        validate_deregister(&service).map_err(status_from_error)?;
        self.registry
            .deregister(&service)
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(pb::DeregisterResponse {}))
    }

    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::GetServiceResponse>, Status> {
        let name = request.into_inner().name;
        let services = self
            .registry
            .get_service(&name)
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(pb::GetServiceResponse {
            services: services.iter().map(wire::service_to_pb).collect(),
        }))
    }

    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let services = self
            .registry
            .list_services()
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(pb::ListServicesResponse {
            services: services.iter().map(wire::service_to_pb).collect(),
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = Some(request.into_inner().service).filter(|s| !s.is_empty());
        let mut closed = self.closed.subscribe();
        if *closed.borrow_and_update() {
            return Err(shutting_down());
        }
        // The watch is in place before the response headers go out, so a client that got
        // them sees every later change.
        let watcher = self
            .registry
            .watch(WatchOptions { service })
            .await
            .map_err(status_from_error)?;
        let events = watcher.map(|item| match item {
            Ok(event) => Ok(wire::event_to_pb(&event)),
            Err(err) => Err(status_from_error(err)),
        });
        let closing = async move {
            // Also ends when every sender is gone: the service itself was dropped.
            let _ = closed.wait_for(|closed| *closed).await;
        };
        // The backend's stream ends only after an error; a closed service adds its own.
        let events = events
            .take_until(closing)
            .chain(futures_util::stream::once(async { Err(shutting_down()) }));
        Ok(Response::new(Box::pin(events)))
    }
}
