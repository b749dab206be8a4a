//! The gateway's error replies: a gRPC code, its HTTP status, and the JSON body
//! `{"code", "message", "details"}`.

use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value, json};
use tonic::{Code, Status};

pub(crate) use micro_core::middleware::code_name;

/// An error as the gateway answers it.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The gRPC code named in the body.
    pub(crate) code: Code,
    /// What went wrong, for people.
    pub(crate) message: String,
    /// `google.rpc.Status` details, as JSON.
    pub(crate) details: Vec<Value>,
    /// The `Allow` header of a 405.
    pub(crate) allow: Option<String>,
    /// The `WWW-Authenticate` header of a 401 or 403 (RFC 6750 §3).
    pub(crate) challenge: Option<&'static str>,
}

/// `google.rpc.Status`, as carried by `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

// === impl ApiError ===

impl ApiError {
    /// An error with `code`'s standard HTTP status.
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            status: http_status(code),
            code,
            message: message.into(),
            details: Vec::new(),
            allow: None,
            challenge: None,
        }
    }

    /// An error with an HTTP status of its own (413, 415, …) and `code` in the body.
    pub(crate) fn with_status(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Self {
            status,
            ..Self::new(code, message)
        }
    }

    /// `INVALID_ARGUMENT`, 400: the client sent something unusable.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// `NOT_FOUND`, 404.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// 405 with `Allow: <allow>`.
    pub(crate) fn method_not_allowed(allow: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            allow: Some(allow.into()),
            ..Self::with_status(StatusCode::METHOD_NOT_ALLOWED, Code::Unimplemented, message)
        }
    }

    /// The error a call ended with; details decoded with the types `pool` knows.
    pub(crate) fn from_status(status: &Status, pool: Option<&DescriptorPool>) -> Self {
        Self {
            details: details(status.details(), pool),
            ..Self::new(status.code(), status.message())
        }
    }

    /// The JSON body.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "code": code_name(self.code),
            "message": self.message,
            "details": self.details,
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.to_json().to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(allow) = self
            .allow
            .and_then(|allow| HeaderValue::from_str(&allow).ok())
        {
            headers.insert(header::ALLOW, allow);
        }
        if let Some(challenge) = self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", code_name(self.code), self.message)
    }
}

/// The HTTP status of a gRPC code, by the standard table (google.rpc.Code's).
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // Client Closed Request: nginx's, and google.rpc's, mapping of CANCELLED.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The entries of a `google.rpc.Status` as JSON: decoded with `@type` when `pool` knows
/// the type, else `{"@type", "value": base64}`. Empty when there are none or they do not
/// decode.
fn details(bytes: &[u8], pool: Option<&DescriptorPool>) -> Vec<Value> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let Ok(status) = RpcStatus::decode(bytes) else {
        tracing::debug!("grpc-status-details-bin is not a google.rpc.Status");
        return Vec::new();
    };
    status
        .details
        .into_iter()
        .map(|any| {
            let name = any.type_url.rsplit('/').next().unwrap_or_default();
            let decoded = pool
                .and_then(|pool| pool.get_message_by_name(name))
                .and_then(|descriptor| {
                    DynamicMessage::decode(descriptor, Bytes::from(any.value.clone())).ok()
                })
                .and_then(|message| serde_json::to_value(&message).ok());
            match decoded {
                Some(Value::Object(mut fields)) => {
                    fields.insert("@type".to_owned(), Value::String(any.type_url));
                    Value::Object(fields)
                }
                // Well-known types with a non-object mapping (Duration, …).
                Some(value) => json!({"@type": any.type_url, "value": value}),
                None => json!({
                    "@type": any.type_url,
                    "value": base64::engine::general_purpose::STANDARD.encode(&any.value),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn codes_map_to_the_standard_statuses() {
        let table = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::Unauthenticated, 401),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
        ];
        for (code, status) in table {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn details_decode_known_types_and_keep_others_as_base64() {
        let mut pool = DescriptorPool::new();
        pool.decode_file_descriptor_set(
            micro_platform::proto::kv::v1::KV_DESCRIPTOR.file_descriptor_set,
        )
        .unwrap();
        let reply = pool.get_message_by_name("micro.kv.v1.PutResponse").unwrap();
        let known = crate::dynamic::parse_request(&reply, &json!({"version": "7"})).unwrap();
        let status = RpcStatus {
            code: 3,
            message: "bad".into(),
            details: vec![
                prost_types::Any {
                    type_url: "type.googleapis.com/micro.kv.v1.PutResponse".into(),
                    value: known.encode_to_vec(),
                },
                prost_types::Any {
                    type_url: "type.googleapis.com/unknown.Thing".into(),
                    value: vec![1, 2, 3],
                },
            ],
        };
        let status = Status::with_details(
            Code::InvalidArgument,
            "bad",
            Bytes::from(status.encode_to_vec()),
        );
        let error = ApiError::from_status(&status, Some(&pool));
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        let body = error.to_json();
        assert_eq!(body["code"], "INVALID_ARGUMENT");
        assert_eq!(
            body["details"][0],
            json!({"@type": "type.googleapis.com/micro.kv.v1.PutResponse", "version": "7"})
        );
        assert_eq!(
            body["details"][1],
            json!({"@type": "type.googleapis.com/unknown.Thing", "value": "AQID"})
        );
        let none = ApiError::from_status(&Status::not_found("x"), None).to_json();
        assert_eq!(none["details"], json!([]));
    }
}
