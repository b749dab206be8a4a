//! Reading a method's `google.api.http` option: through the pool's extension when the
//! pool has `google/api/annotations.proto`, from the option's raw bytes otherwise.

use prost::Message as _;
use prost_reflect::{MethodDescriptor, Value};

/// The extension's full name.
const EXTENSION: &str = "google.api.http";

/// `google.api.HttpRule`, field for field.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct HttpRule {
    /// Unused on method options.
    #[prost(string, tag = "1")]
    pub(super) selector: String,
    /// The HTTP method and path template.
    #[prost(oneof = "Pattern", tags = "2, 3, 4, 5, 6, 8")]
    pub(super) pattern: Option<Pattern>,
    /// Where the body goes.
    #[prost(string, tag = "7")]
    pub(super) body: String,
    /// The reply field sent back.
    #[prost(string, tag = "12")]
    pub(super) response_body: String,
    /// More routes of the method.
    #[prost(message, repeated, tag = "11")]
    pub(super) additional_bindings: Vec<HttpRule>,
}

/// `google.api.HttpRule.pattern`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(super) enum Pattern {
    /// `GET`.
    #[prost(string, tag = "2")]
    Get(String),
    /// `PUT`.
    #[prost(string, tag = "3")]
    Put(String),
    /// `POST`.
    #[prost(string, tag = "4")]
    Post(String),
    /// `DELETE`.
    #[prost(string, tag = "5")]
    Delete(String),
    /// `PATCH`.
    #[prost(string, tag = "6")]
    Patch(String),
    /// Any other method.
    #[prost(message, tag = "8")]
    Custom(CustomHttpPattern),
}

/// `google.api.CustomHttpPattern`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct CustomHttpPattern {
    /// The HTTP method.
    #[prost(string, tag = "1")]
    pub(super) kind: String,
    /// The path template.
    #[prost(string, tag = "2")]
    pub(super) path: String,
}

/// `google.protobuf.MethodOptions`, only the `google.api.http` extension.
#[derive(Clone, PartialEq, prost::Message)]
struct HttpOption {
    #[prost(message, optional, tag = "72295728")]
    http: Option<HttpRule>,
}

/// `method`'s `google.api.http` rule, if it has one.
pub(super) fn http_rule(method: &MethodDescriptor) -> Result<Option<HttpRule>, String> {
    let options = method.options();
    if let Some(extension) = method.parent_pool().get_extension_by_name(EXTENSION) {
        if !options.has_extension(&extension) {
            return Ok(None);
        }
        return match &*options.get_extension(&extension) {
            Value::Message(rule) => rule
                .transcode_to::<HttpRule>()
                .map(Some)
                .map_err(|err| format!("unreadable {EXTENSION} option: {err}")),
            other => Err(format!("{EXTENSION} option is not a message: {other:?}")),
        };
    }
    // Not in the pool: the option is among the unknown fields, which encode as they came.
    HttpOption::decode(options.encode_to_vec().as_slice())
        .map(|option| option.http)
        .map_err(|err| format!("unreadable {EXTENSION} option: {err}"))
}

// === impl Pattern ===

impl Pattern {
    /// The HTTP method and the path template.
    pub(super) fn method_and_path(&self) -> Result<(http::Method, &str), String> {
        Ok(match self {
            Self::Get(path) => (http::Method::GET, path),
            Self::Put(path) => (http::Method::PUT, path),
            Self::Post(path) => (http::Method::POST, path),
            Self::Delete(path) => (http::Method::DELETE, path),
            Self::Patch(path) => (http::Method::PATCH, path),
            Self::Custom(custom) => {
                let method = http::Method::from_bytes(custom.kind.as_bytes())
                    .map_err(|_| format!("custom kind {:?} is no HTTP method", custom.kind))?;
                (method, custom.path.as_str())
            }
        })
    }
}
