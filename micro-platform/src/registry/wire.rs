//! Conversions between `micro.registry.v1` messages and micro-core's registry types.

use micro_core::{
    RegistryError,
    registry::{Endpoint, Event, EventKind, Node, Service},
};

use crate::proto::registry::v1 as pb;

/// The status a [`RegistryError`] is answered with: INVALID_ARGUMENT with the bare message
/// for an invalid record, FAILED_PRECONDITION for an unknown registry, UNAVAILABLE for a
/// backend failure.
pub fn status_from_error(error: RegistryError) -> tonic::Status {
    match error {
        RegistryError::InvalidRecord(message) => tonic::Status::invalid_argument(message),
        RegistryError::UnknownRegistry { .. } => {
            tonic::Status::failed_precondition(error.to_string())
        }
        other => tonic::Status::unavailable(other.to_string()),
    }
}

pub(super) fn error_from_status(status: tonic::Status, registry: &str) -> RegistryError {
    if status.code() == tonic::Code::InvalidArgument {
        return RegistryError::InvalidRecord(status.message().to_owned());
    }
    let message = format!("{:?}: {}", status.code(), status.message());
    RegistryError::backend(registry, message, status)
}

pub(super) fn service_to_pb(service: &Service) -> pb::Service {
    pb::Service {
        name: service.name.clone(),
        version: service.version.clone(),
        metadata: service.metadata.clone().into_iter().collect(),
        endpoints: service
            .endpoints
            .iter()
            .map(|e| pb::Endpoint {
                name: e.name.clone(),
                request: e.request.clone(),
                response: e.response.clone(),
                metadata: e.metadata.clone().into_iter().collect(),
            })
            .collect(),
        nodes: service
            .nodes
            .iter()
            .map(|n| pb::Node {
                id: n.id.clone(),
                address: n.address.clone(),
                metadata: n.metadata.clone().into_iter().collect(),
            })
            .collect(),
    }
}

pub(super) fn service_from_pb(service: pb::Service) -> Service {
    Service {
        name: service.name,
        version: service.version,
        metadata: service.metadata.into_iter().collect(),
        endpoints: service
            .endpoints
            .into_iter()
            .map(|e| Endpoint {
                name: e.name,
                request: e.request,
                response: e.response,
                metadata: e.metadata.into_iter().collect(),
            })
            .collect(),
        nodes: service
            .nodes
            .into_iter()
            .map(|n| Node {
                id: n.id,
                address: n.address,
                metadata: n.metadata.into_iter().collect(),
            })
            .collect(),
    }
}

pub(super) fn event_to_pb(event: &Event) -> pb::WatchEvent {
    let kind = match event.kind {
        EventKind::Create => pb::EventKind::Create,
        EventKind::Update => pb::EventKind::Update,
        EventKind::Delete => pb::EventKind::Delete,
    };
    pb::WatchEvent {
        kind: kind as i32,
        service: Some(service_to_pb(&event.service)),
    }
}

pub(super) fn event_from_pb(event: pb::WatchEvent) -> Result<Event, String> {
    let kind = match pb::EventKind::try_from(event.kind) {
        Ok(pb::EventKind::Create) => EventKind::Create,
        Ok(pb::EventKind::Update) => EventKind::Update,
        Ok(pb::EventKind::Delete) => EventKind::Delete,
        _ => return Err(format!("watch event of unknown kind {}", event.kind)),
    };
    let service = event
        .service
        .ok_or_else(|| "watch event without a service".to_owned())?;
    Ok(Event {
        kind,
        service: service_from_pb(service),
    })
}
