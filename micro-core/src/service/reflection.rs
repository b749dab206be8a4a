//! Merging every descriptor the service knows into one set for the reflection services.

use std::collections::HashSet;

use prost::Message;
use prost_types::FileDescriptorSet;

use super::ServiceError;
use crate::codegen::ServiceDescriptor;

/// One set holding each file once: the user's services, their imports, health.
pub(super) fn merged_descriptors(
    services: &[&'static ServiceDescriptor],
    extra: &[Vec<u8>],
) -> Result<FileDescriptorSet, ServiceError> {
    let mut merged = FileDescriptorSet::default();
    let mut seen = HashSet::new();
    let sources = services
        .iter()
        .map(|d| (d.name, d.file_descriptor_set))
        .chain(
            extra
                .iter()
                .map(|set| ("(file_descriptor_set)", set.as_slice())),
        )
        .chain([(
            "grpc.health.v1.Health",
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        )]);
    for (service, encoded) in sources {
        let set = FileDescriptorSet::decode(encoded).map_err(|err| ServiceError::Descriptor {
            service: service.to_owned(),
            reason: err.to_string(),
        })?;
        for file in set.file {
            if seen.insert(file.name().to_owned()) {
                merged.file.push(file);
            }
        }
    }
    Ok(merged)
}
