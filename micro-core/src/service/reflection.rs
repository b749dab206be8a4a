//! The reflection services, serving every descriptor the service knows.

use super::RoutesBuilder;

use super::ServiceError;
use crate::codegen::ServiceDescriptor;

/// Adds `grpc.reflection.v1` and `grpc.reflection.v1alpha` (older clients such as grpcio's
/// ask v1alpha) to `routes`, both listing the user's services, health and reflection.
///
/// Encoded sets are handed over as they are, never decoded and re-encoded, so custom
/// options (such as `google.api.http`) reach reflection clients intact. A file that
/// appears in several sets is served once.
pub(super) fn add_reflection(
    routes: &mut RoutesBuilder,
    services: &[&'static ServiceDescriptor],
    extra: &[Vec<u8>],
) -> Result<(), ServiceError> {
    let sets: Vec<(&str, &[u8])> = services
        .iter()
        .map(|d| (d.name, d.file_descriptor_set))
        .chain(
            extra
                .iter()
                .map(|set| ("(file_descriptor_set)", set.as_slice())),
        )
        .chain([
            (
                "grpc.health.v1.Health",
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ),
            (
                "grpc.reflection.v1.ServerReflection",
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            ),
            (
                "grpc.reflection.v1alpha.ServerReflection",
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ),
        ])
        .collect();
    let builder = || {
        sets.iter().fold(
            tonic_reflection::server::Builder::configure(),
            |builder, (_, set)| builder.register_encoded_file_descriptor_set(set),
        )
    };
    let v1 = builder().build_v1().map_err(|err| error(&sets, &err))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|err| error(&sets, &err))?;
    routes.add_service(v1).add_service(v1alpha);
    Ok(())
}

fn error(sets: &[(&str, &[u8])], err: &tonic_reflection::server::Error) -> ServiceError {
    use prost::Message;
    // Name the set that does not decode, when one does not; otherwise the sets conflict.
    let broken = sets
        .iter()
        .find(|(_, set)| prost_types::FileDescriptorSet::decode(*set).is_err())
        .map_or("(all services)", |(name, _)| name);
    ServiceError::Descriptor {
        service: broken.to_owned(),
        reason: err.to_string(),
    }
}
