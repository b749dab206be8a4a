//! [`RegistryClient`]: a [`Registry`] over the registry service.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::StreamExt;
use micro_core::{
    Channel, RegistryError,
    client::{CallOptions, RequestExt},
    registry::{RegisterOptions, Registry, Service, SharedRegistry, WatchOptions, Watcher},
};
use tonic::Request;

use super::{SCHEME, SERVICE_NAME, wire};
use crate::proto::registry::v1::{self as pb, registry_client::RegistryClient as Stub};

/// How long one `Watch` call may stream. A watch that ends (this deadline, a lost
/// connection, a server shutting down) yields an error and ends, as the
/// [`Registry::watch`] contract says; micro's registry cache then watches again.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A [`Registry`] kept by the registry service, over a micro [`Channel`].
///
/// # Examples
///
/// ```no_run
/// # fn demo() -> Result<(), micro_core::RegistryError> {
/// use micro_platform::registry::RegistryClient;
///
/// let registry = RegistryClient::connect("127.0.0.1:7700")?;
/// let client = micro_core::Client::new(std::sync::Arc::new(registry));
/// # let _ = client; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RegistryClient {
    stub: Stub<Channel>,
    name: Arc<str>,
}

impl RegistryClient {
    /// A client over `channel`, a channel to the registry service.
    pub fn new(channel: Channel) -> Self {
        let name = format!("{SCHEME} ({})", channel.service());
        Self {
            stub: Stub::new(channel),
            name: Arc::from(name),
        }
    }

    /// A client of the registry service at `address` (`host:port`).
    ///
    /// # Errors
    /// [`RegistryError::UnknownRegistry`] when `address` is not `host:port`.
    pub fn connect(address: &str) -> Result<Self, RegistryError> {
        let address = address.trim();
        let channel = crate::channel::at_address(SERVICE_NAME, &pb::REGISTRY_DESCRIPTOR, address)
            .map_err(|reason| RegistryError::UnknownRegistry {
            url: format!("{SCHEME}://{address}"),
            expected: format!("{SCHEME}://host:port ({reason})"),
        })?;
        Ok(Self {
            stub: Stub::new(channel),
            name: Arc::from(format!("{SCHEME}://{address}")),
        })
    }

    /// A client for a `MICRO_REGISTRY` value `service://host:port`.
    ///
    /// # Errors
    /// [`RegistryError::UnknownRegistry`] for another value.
    pub fn from_url(url: &str) -> Result<Self, RegistryError> {
        let url = url.trim();
        match url.strip_prefix("service://") {
            Some(address) if !address.is_empty() => Self::connect(address),
            _ => Err(RegistryError::UnknownRegistry {
                url: url.to_owned(),
                expected: format!("{SCHEME}://host:port"),
            }),
        }
    }

    fn error(&self, status: tonic::Status) -> RegistryError {
        wire::error_from_status(status, &self.name)
    }
}

/// Opens `MICRO_REGISTRY=service://host:port`; see [`RegistryClient::from_url`].
pub(crate) fn open(url: &str) -> Result<SharedRegistry, RegistryError> {
    Ok(Arc::new(RegistryClient::from_url(url)?))
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Registry for RegistryClient {
    fn name(&self) -> &str {
        &self.name
    }

    async fn register(
        &self,
        service: &Service,
        options: RegisterOptions,
    ) -> Result<(), RegistryError> {
        let ttl = prost_types::Duration::try_from(options.ttl).map_err(|_| {
            RegistryError::InvalidRecord(format!("ttl {:?} is out of range", options.ttl))
        })?;
        let request = pb::RegisterRequest {
            service: Some(wire::service_to_pb(service)),
            ttl: Some(ttl),
        };
        self.stub
            .clone()
            .register(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<(), RegistryError> {
        let request = pb::DeregisterRequest {
            service: Some(wire::service_to_pb(service)),
        };
        self.stub
            .clone()
            .deregister(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, RegistryError> {
        let request = pb::GetServiceRequest {
            name: name.to_owned(),
        };
        let response = self.stub.clone().get_service(request).await;
        let services = response.map_err(|s| self.error(s))?.into_inner().services;
        Ok(services.into_iter().map(wire::service_from_pb).collect())
    }

    async fn list_services(&self) -> Result<Vec<Service>, RegistryError> {
        let response = self
            .stub
            .clone()
            .list_services(pb::ListServicesRequest {})
            .await;
        let services = response.map_err(|s| self.error(s))?.into_inner().services;
        Ok(services.into_iter().map(wire::service_from_pb).collect())
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, RegistryError> {
        let request = Request::new(pb::WatchRequest {
            service: options.service.unwrap_or_default(),
        })
        .with_call_options(CallOptions::new().timeout(WATCH_TIMEOUT));
        let response = self.stub.clone().watch(request).await;
        let stream = response.map_err(|s| self.error(s))?.into_inner();
        let name = Arc::clone(&self.name);
        // Items until the first error, which is reported and ends the stream; a stream the
        // server ended cleanly (it shut down) is reported as an error too.
        let events = futures_util::stream::unfold(Some(stream), move |state| {
            let name = Arc::clone(&name);
            async move {
                let mut stream = state?;
                let item = match stream.next().await {
                    Some(Ok(event)) => match wire::event_from_pb(event) {
                        Ok(event) => return Some((Ok(event), Some(stream))),
                        Err(message) => RegistryError::backend_msg(&*name, message),
                    },
                    Some(Err(status)) => wire::error_from_status(status, &name),
                    None => RegistryError::backend_msg(&*name, "the watch ended"),
                };
                Some((Err(item), None))
            }
        });
        Ok(Box::pin(events))
    }
}
