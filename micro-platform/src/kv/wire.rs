//! Conversions between the `micro.kv.v1` messages and micro-core's store types, and the
//! lossless mapping of [`StoreError`] to [`tonic::Status`] and back.

use std::time::Duration;

use micro_core::store::{Condition, Namespace, Put, Record, StoreError};
use prost::Message;

use super::CONDITION_FAILURE_TYPE_URL;
use crate::proto::kv::v1 as pb;

/// `google.rpc.Status`, wire-compatible, for the status details.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// The status a [`StoreError`] is answered with: micro-core's
/// `From<StoreError> for Status`, plus the `ConditionFailure` detail of a failed condition.
pub fn status_from_error(error: StoreError) -> tonic::Status {
    let detail = match &error {
        StoreError::ConditionFailed {
            key,
            expected,
            found,
        } => Some(pb::ConditionFailure {
            key: key.clone(),
            expected: expected.clone(),
            found: *found,
        }),
        _ => None,
    };
    let status = tonic::Status::from(error);
    match detail {
        Some(detail) => {
            let details = RpcStatus {
                code: status.code() as i32,
                message: status.message().to_owned(),
                details: vec![prost_types::Any {
                    type_url: CONDITION_FAILURE_TYPE_URL.to_owned(),
                    value: detail.encode_to_vec(),
                }],
            };
            tonic::Status::with_details(
                status.code(),
                status.message(),
                details.encode_to_vec().into(),
            )
        }
        None => status,
    }
}

/// The [`StoreError`] a status from the kv service stands for; `store` names the client in
/// errors that are not the server's verdict on the request.
pub fn error_from_status(status: &tonic::Status, store: &str) -> StoreError {
    match status.code() {
        tonic::Code::InvalidArgument => {
            let message = status.message();
            StoreError::InvalidArgument(
                message
                    .strip_prefix("invalid argument: ")
                    .unwrap_or(message)
                    .to_owned(),
            )
        }
        tonic::Code::Aborted => match condition_failure(status) {
            Some(failure) => StoreError::ConditionFailed {
                key: failure.key,
                expected: failure.expected,
                found: failure.found,
            },
            None => StoreError::unavailable_with(
                store,
                format!("aborted without condition details: {}", status.message()),
                status.clone(),
            ),
        },
        tonic::Code::Unavailable => {
            StoreError::unavailable_with(store, status.message(), status.clone())
        }
        code => StoreError::unavailable_with(
            store,
            format!("{code:?}: {}", status.message()),
            status.clone(),
        ),
    }
}

fn condition_failure(status: &tonic::Status) -> Option<pb::ConditionFailure> {
    let details = RpcStatus::decode(status.details()).ok()?;
    details
        .details
        .iter()
        .find(|any| any.type_url == CONDITION_FAILURE_TYPE_URL)
        .and_then(|any| pb::ConditionFailure::decode(any.value.as_slice()).ok())
}

// === messages → store types (server side, and checked) ===

pub(super) fn namespace(namespace: Option<pb::Namespace>) -> Result<Namespace, StoreError> {
    let namespace = namespace.ok_or_else(|| {
        StoreError::InvalidArgument("namespace is missing: set database and table".to_owned())
    })?;
    Namespace::new(&namespace.database, &namespace.table)
}

pub(super) fn condition(
    key: &str,
    condition: Option<pb::Condition>,
) -> Result<Condition, StoreError> {
    use pb::condition::Condition as C;
    Ok(match condition.and_then(|c| c.condition) {
        None | Some(C::None(_)) => Condition::None,
        Some(C::Absent(_)) => Condition::Absent,
        Some(C::Version(0)) => {
            return Err(StoreError::InvalidArgument(format!(
                "condition on key {key:?}: versions start at 1"
            )));
        }
        Some(C::Version(version)) => Condition::Version(version),
    })
}

pub(super) fn put(write: pb::Write) -> Result<Put, StoreError> {
    let ttl = match write.ttl {
        None => None,
        Some(ttl) => Some(Duration::try_from(ttl).map_err(|_| {
            StoreError::InvalidArgument(format!(
                "ttl of key {:?} is negative or out of range; it must be between 1ms and 10 years",
                write.key
            ))
        })?),
    };
    let condition = condition(&write.key, write.condition)?;
    Ok(Put {
        key: write.key,
        value: write.value.into(),
        ttl,
        condition,
    })
}

pub(super) fn record_to_pb(record: Record) -> pb::Record {
    pb::Record {
        key: record.key,
        value: record.value.into(),
        version: record.version,
        ttl: record
            .ttl
            .and_then(|ttl| prost_types::Duration::try_from(ttl).ok()),
    }
}

// === store types → messages (client side) ===

pub(super) fn namespace_to_pb(namespace: &Namespace) -> Option<pb::Namespace> {
    Some(pb::Namespace {
        database: namespace.database().to_owned(),
        table: namespace.table().to_owned(),
    })
}

pub(super) fn condition_to_pb(condition: Condition) -> Option<pb::Condition> {
    use pb::condition::Condition as C;
    let condition = match condition {
        Condition::None => return None,
        Condition::Absent => C::Absent(pb::Absent {}),
        Condition::Version(version) => C::Version(version),
    };
    Some(pb::Condition {
        condition: Some(condition),
    })
}

pub(super) fn put_to_pb(put: Put) -> Result<pb::Write, StoreError> {
    let ttl = match put.ttl {
        None => None,
        Some(ttl) => Some(prost_types::Duration::try_from(ttl).map_err(|_| {
            StoreError::InvalidArgument(format!(
                "ttl of key {:?} is {ttl:?}; it must be between 1ms and 10 years",
                put.key
            ))
        })?),
    };
    Ok(pb::Write {
        key: put.key,
        value: put.value.into(),
        ttl,
        condition: condition_to_pb(put.condition),
    })
}

pub(super) fn record_from_pb(record: pb::Record) -> Record {
    Record {
        key: record.key,
        value: record.value.into(),
        version: record.version,
        // A negative TTL cannot come from a kv service; treat it as expiring now.
        ttl: record
            .ttl
            .map(|ttl| Duration::try_from(ttl).unwrap_or(Duration::ZERO)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `StoreError` is not `PartialEq` (its source need not be): these variants carry
    /// none, so equal Debug output is equal fields.
    fn same(a: &StoreError, b: &StoreError) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn condition_failures_round_trip() {
        let error = || StoreError::condition_failed("k", Condition::Version(3), Some(4));
        let status = status_from_error(error());
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert!(same(&error_from_status(&status, "service"), &error()));
        let error = || StoreError::condition_failed("k", Condition::Absent, None);
        let back = error_from_status(&status_from_error(error()), "service");
        assert!(same(&back, &error()), "{back:?}");
    }

    #[test]
    fn invalid_arguments_round_trip() {
        let error = || StoreError::InvalidArgument("key is empty".into());
        let status = status_from_error(error());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(same(&error_from_status(&status, "service"), &error()));
    }

    #[test]
    fn other_statuses_are_unavailable() {
        let status = tonic::Status::deadline_exceeded("too slow");
        match error_from_status(&status, "service") {
            StoreError::Unavailable {
                store,
                message,
                source,
            } => {
                assert_eq!(store, "service");
                assert!(message.contains("DeadlineExceeded") && message.contains("too slow"));
                let source = source
                    .as_deref()
                    .and_then(|s| s.downcast_ref::<tonic::Status>());
                assert_eq!(
                    source.map(tonic::Status::code),
                    Some(tonic::Code::DeadlineExceeded)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
