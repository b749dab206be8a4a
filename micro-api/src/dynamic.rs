//! Dynamic calls: schemas fetched by gRPC reflection at run time, JSON in and out, no
//! compiled stubs.
//!
//! - [`fetch_pool`] asks a service's reflection endpoint (`grpc.reflection.v1`, falling back
//!   to `grpc.reflection.v1alpha`) for the files of every service it serves, and their
//!   imports, into a [`DescriptorPool`].
//! - [`parse_request`] turns JSON (the canonical protobuf JSON mapping) into a
//!   [`DynamicMessage`], naming the field when a value does not fit.
//! - [`DynamicCodec`] moves [`DynamicMessage`]s over any tonic transport, such as micro's
//!   `Channel`; [`to_json`] turns replies back into JSON.

use std::collections::{BTreeSet, HashMap, HashSet};

use bytes::Buf;
use futures_util::StreamExt;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, ServerReflectionResponse, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

/// The reflection paths, newest first. v1alpha's messages are the same as v1's, field for
/// field, so one set of prost types serves both.
const REFLECTION_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// How many rounds of imports [`fetch_pool`] follows before giving up.
const MAX_IMPORT_ROUNDS: usize = 32;

/// Why a schema could not be had.
#[derive(Debug)]
pub enum ReflectionError {
    /// The call failed: the status of the last attempt.
    Status(Status),
    /// The service answered something unusable.
    Invalid(String),
}

impl std::fmt::Display for ReflectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(status) => {
                write!(
                    f,
                    "reflection failed: {:?}: {}",
                    status.code(),
                    status.message()
                )
            }
            Self::Invalid(reason) => write!(f, "reflection answered nonsense: {reason}"),
        }
    }
}

impl std::error::Error for ReflectionError {}

/// The files of every service `channel` reaches serves, with their imports, fetched by
/// reflection: v1 first, v1alpha when v1 is UNIMPLEMENTED.
pub async fn fetch_pool<T>(channel: T) -> Result<DescriptorPool, ReflectionError>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let mut last = None;
    for path in REFLECTION_PATHS {
        match fetch_with(channel.clone(), path).await {
            Err(ReflectionError::Status(status)) if status.code() == Code::Unimplemented => {
                last = Some(status);
            }
            other => return other,
        }
    }
    Err(ReflectionError::Status(last.unwrap_or_else(|| {
        Status::unimplemented("no reflection service")
    })))
}

async fn fetch_with<T>(channel: T, path: &'static str) -> Result<DescriptorPool, ReflectionError>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let mut reflection = Reflection { channel, path };
    let listed = reflection
        .ask(vec![MessageRequest::ListServices(String::new())])
        .await?;
    let mut services = Vec::new();
    for response in listed {
        match response {
            MessageResponse::ListServicesResponse(list) => {
                services.extend(list.service.into_iter().map(|s| s.name));
            }
            other => return Err(unexpected(&other)),
        }
    }

    let mut files: HashMap<String, prost_types::FileDescriptorProto> = HashMap::new();
    // The files as served: unlike `files`, they keep extension options such as
    // `google.api.http`, which prost drops on decoding.
    let mut encoded: HashMap<String, Vec<u8>> = HashMap::new();
    let mut requests: Vec<MessageRequest> = services
        .into_iter()
        .map(MessageRequest::FileContainingSymbol)
        .collect();
    for _ in 0..MAX_IMPORT_ROUNDS {
        if requests.is_empty() {
            break;
        }
        for response in reflection.ask(std::mem::take(&mut requests)).await? {
            match response {
                MessageResponse::FileDescriptorResponse(found) => {
                    for bytes in found.file_descriptor_proto {
                        let file = prost_types::FileDescriptorProto::decode(bytes.as_slice())
                            .map_err(|err| {
                                ReflectionError::Invalid(format!("undecodable file: {err}"))
                            })?;
                        encoded.insert(file.name().to_owned(), bytes);
                        files.insert(file.name().to_owned(), file);
                    }
                }
                MessageResponse::ErrorResponse(error) => {
                    return Err(ReflectionError::Status(Status::new(
                        Code::from(error.error_code),
                        error.error_message,
                    )));
                }
                other => return Err(unexpected(&other)),
            }
        }
        // Imports not yet had, asked for by name in the next round.
        let missing: BTreeSet<String> = files
            .values()
            .flat_map(|file| file.dependency.iter())
            .filter(|name| !files.contains_key(*name))
            .cloned()
            .collect();
        requests = missing
            .into_iter()
            .map(MessageRequest::FileByFilename)
            .collect();
    }
    // An encoded `FileDescriptorSet`: each file as `file` (field 1).
    let mut set = Vec::new();
    for bytes in encoded.values() {
        prost::encoding::bytes::encode(1, bytes, &mut set);
    }
    let mut pool = DescriptorPool::new();
    pool.decode_file_descriptor_set(set.as_slice())
        .map_err(|err| ReflectionError::Invalid(err.to_string()))?;
    Ok(pool)
}

fn unexpected(response: &MessageResponse) -> ReflectionError {
    ReflectionError::Invalid(format!("unexpected answer {response:?}"))
}

/// One reflection endpoint, asked in batches: one stream per batch.
struct Reflection<T> {
    channel: T,
    path: &'static str,
}

impl<T> Reflection<T>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    async fn ask(
        &mut self,
        requests: Vec<MessageRequest>,
    ) -> Result<Vec<MessageResponse>, ReflectionError> {
        let expected = requests.len();
        let requests = requests
            .into_iter()
            .map(|request| ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            })
            .collect::<Vec<_>>();
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|err| {
            ReflectionError::Status(Status::unavailable(format!("not ready: {}", err.into())))
        })?;
        let codec =
            tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
        let path = http::uri::PathAndQuery::from_static(self.path);
        let mut replies = grpc
            .streaming(
                tonic::Request::new(futures_util::stream::iter(requests)),
                path,
                codec,
            )
            .await
            .map_err(ReflectionError::Status)?
            .into_inner();
        let mut answers = Vec::with_capacity(expected);
        while answers.len() < expected {
            match replies.next().await {
                Some(Ok(reply)) => match reply.message_response {
                    Some(message) => answers.push(message),
                    None => return Err(ReflectionError::Invalid("empty answer".into())),
                },
                Some(Err(status)) => return Err(ReflectionError::Status(status)),
                None => {
                    return Err(ReflectionError::Invalid(format!(
                        "{} answers to {expected} questions",
                        answers.len()
                    )));
                }
            }
        }
        Ok(answers)
    }
}

/// How a method was named on the command line, resolved against `pool`: a full name
/// (`greeter.v1.Greeter.SayHello`, also `greeter.v1.Greeter/SayHello` or
/// `/greeter.v1.Greeter/SayHello`), `Greeter.SayHello`, or the method alone when only one
/// service has it. A short name that several services have is narrowed to the methods in
/// `registered` (the full names of the endpoints the service registered), when that leaves
/// one.
pub fn find_method(
    pool: &DescriptorPool,
    name: &str,
    registered: &HashSet<String>,
) -> Result<MethodDescriptor, String> {
    let wanted = name.trim().trim_start_matches('/').replace('/', ".");
    let methods: Vec<MethodDescriptor> = pool
        .services()
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .collect();
    let exact: Vec<&MethodDescriptor> =
        methods.iter().filter(|m| m.full_name() == wanted).collect();
    let found: Vec<&MethodDescriptor> = if exact.is_empty() {
        methods
            .iter()
            .filter(|m| {
                m.full_name().ends_with(&format!(".{wanted}")) || m.name() == wanted.as_str()
            })
            .collect()
    } else {
        exact
    };
    let narrowed: Vec<&MethodDescriptor> = found
        .iter()
        .copied()
        .filter(|m| registered.contains(m.full_name()))
        .collect();
    let found = if found.len() > 1 && narrowed.len() == 1 {
        narrowed
    } else {
        found
    };
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let known: Vec<&str> = methods.iter().map(MethodDescriptor::full_name).collect();
            Err(format!(
                "unknown method {name:?}; the service has: {}",
                known.join(", ")
            ))
        }
        many => {
            let names: Vec<&str> = many.iter().map(|m| m.full_name()).collect();
            Err(format!(
                "method {name:?} is ambiguous: {}; use the full name",
                names.join(", ")
            ))
        }
    }
}

/// The messages of a request body: one JSON object, or for client-streaming methods
/// an array of them (an object alone is a stream of one).
pub fn parse_requests(
    descriptor: &MessageDescriptor,
    text: &str,
    streaming: bool,
) -> Result<Vec<DynamicMessage>, String> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|err| format!("the request body is not valid JSON: {err}"))?;
    match value {
        serde_json::Value::Array(items) if streaming => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                parse_request(descriptor, item).map_err(|err| format!("message {i}: {err}"))
            })
            .collect(),
        value => Ok(vec![parse_request(descriptor, &value)?]),
    }
}

/// One message from JSON; an error names the offending field and its type.
pub fn parse_request(
    descriptor: &MessageDescriptor,
    value: &serde_json::Value,
) -> Result<DynamicMessage, String> {
    if !value.is_object() {
        return Err(format!(
            "the request must be a JSON object ({}), not {}",
            descriptor.full_name(),
            json_kind(value)
        ));
    }
    DynamicMessage::deserialize(descriptor.clone(), value).map_err(|err| {
        match locate(descriptor, value, "") {
            Some(located) => located,
            None => format!("{}: {err}", descriptor.full_name()),
        }
    })
}

/// The first field of `value` that does not fit `descriptor`, described.
fn locate(
    descriptor: &MessageDescriptor,
    value: &serde_json::Value,
    prefix: &str,
) -> Option<String> {
    let object = value.as_object()?;
    for (key, item) in object {
        let path = format!("{prefix}{key}");
        let Some(field) = descriptor
            .get_field_by_json_name(key)
            .or_else(|| descriptor.get_field_by_name(key))
        else {
            let known: Vec<String> = descriptor
                .fields()
                .map(|f| f.json_name().to_owned())
                .collect();
            return Some(format!(
                "unknown field {path:?} in {}; its fields are: {}",
                descriptor.full_name(),
                known.join(", ")
            ));
        };
        let alone = serde_json::Value::Object([(key.clone(), item.clone())].into_iter().collect());
        if let Err(err) = DynamicMessage::deserialize(descriptor.clone(), &alone) {
            if let (Kind::Message(inner), false, false) =
                (field.kind(), field.is_list(), field.is_map())
                && item.is_object()
                && let Some(deeper) = locate(&inner, item, &format!("{path}."))
            {
                return Some(deeper);
            }
            return Some(format!(
                "field {path:?} ({}) cannot take {}: {err}",
                field_type(&field),
                json_kind(item)
            ));
        }
    }
    None
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A field's type as a .proto file spells it: `string`, `repeated uint32`,
/// `map<string, int64>`, `greeter.v1.HelloRequest`.
pub fn field_type(field: &FieldDescriptor) -> String {
    if field.is_map()
        && let Kind::Message(entry) = field.kind()
    {
        let key = entry.map_entry_key_field();
        let value = entry.map_entry_value_field();
        return format!(
            "map<{}, {}>",
            kind_name(&key.kind()),
            kind_name(&value.kind())
        );
    }
    let name = kind_name(&field.kind());
    if field.is_list() {
        format!("repeated {name}")
    } else {
        name
    }
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(message) => message.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
    }
}

/// A message as canonical protobuf JSON, on one line (fields with default values left
/// out, as the mapping prescribes).
pub fn to_json(message: &DynamicMessage) -> Result<String, String> {
    serde_json::to_string(message).map_err(|err| format!("reply not printable as JSON: {err}"))
}

/// A codec for [`DynamicMessage`]s: requests as they are, replies decoded as `reply`.
#[derive(Debug, Clone)]
pub struct DynamicCodec {
    reply: MessageDescriptor,
}

impl DynamicCodec {
    /// A codec whose replies decode as `reply`.
    pub fn new(reply: MessageDescriptor) -> Self {
        Self { reply }
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.reply.clone())
    }
}

/// Encodes [`DynamicMessage`]s.
#[derive(Debug)]
pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|err| Status::internal(format!("cannot encode the request: {err}")))
    }
}

/// Decodes replies of one message type.
#[derive(Debug)]
pub struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let message = DynamicMessage::decode(self.0.clone(), src.copy_to_bytes(src.remaining()))
            .map_err(|err| {
                Status::internal(format!(
                    "cannot decode the reply as {}: {err}",
                    self.0.full_name()
                ))
            })?;
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use micro_platform::proto;

    /// The kv and config services' schemas: two services with methods of the same name,
    /// nested messages, well-known types.
    fn pool() -> DescriptorPool {
        let mut pool = DescriptorPool::new();
        for set in [
            proto::kv::v1::KV_DESCRIPTOR.file_descriptor_set,
            proto::config::v1::CONFIG_DESCRIPTOR.file_descriptor_set,
        ] {
            pool.decode_file_descriptor_set(set).unwrap();
        }
        pool
    }

    #[test]
    fn methods_by_full_short_and_path_names() {
        let pool = pool();
        let none = HashSet::new();
        for name in [
            "micro.kv.v1.Kv.Put",
            "Kv.Put",
            "Put",
            "/micro.kv.v1.Kv/Put",
            "micro.kv.v1.Kv/Put",
        ] {
            assert_eq!(
                find_method(&pool, name, &none).unwrap().full_name(),
                "micro.kv.v1.Kv.Put"
            );
        }
        let ambiguous = find_method(&pool, "Get", &none).unwrap_err();
        assert!(ambiguous.contains("ambiguous"), "{ambiguous}");
        assert!(
            ambiguous.contains("micro.config.v1.Config.Get"),
            "{ambiguous}"
        );
        // The service's own endpoints settle it.
        let kv = HashSet::from(["micro.kv.v1.Kv.Get".to_owned()]);
        assert_eq!(
            find_method(&pool, "Get", &kv).unwrap().full_name(),
            "micro.kv.v1.Kv.Get"
        );
        let unknown = find_method(&pool, "Kv.Nope", &none).unwrap_err();
        assert!(unknown.contains("unknown method"), "{unknown}");
    }

    #[test]
    fn errors_name_nested_fields() {
        let pool = pool();
        let put = pool.get_message_by_name("micro.kv.v1.PutRequest").unwrap();
        let ok = parse_requests(
            &put,
            r#"{"namespace":{"database":"d","table":"t"},"write":{"key":"k","value":"dg==","ttl":"1.5s"}}"#,
            false,
        )
        .unwrap();
        assert_eq!(ok.len(), 1);
        let err = parse_requests(&put, r#"{"namespace":{"database":5}}"#, false).unwrap_err();
        assert!(
            err.contains("field \"namespace.database\" (string)"),
            "{err}"
        );
        let err = parse_requests(&put, r#"{"write":{"ttl":true}}"#, false).unwrap_err();
        assert!(
            err.contains("field \"write.ttl\" (google.protobuf.Duration)"),
            "{err}"
        );
        let err = parse_requests(&put, r#"{"write":{"kee":"k"}}"#, false).unwrap_err();
        assert!(err.contains("unknown field \"write.kee\""), "{err}");
        let err = parse_requests(&put, "[1]", false).unwrap_err();
        assert!(err.contains("must be a JSON object"), "{err}");
        let two = parse_requests(&put, "[{}, {}]", true).unwrap();
        assert_eq!(two.len(), 2);
    }

    #[test]
    fn replies_print_as_canonical_json() {
        let pool = pool();
        let put = pool.get_message_by_name("micro.kv.v1.PutResponse").unwrap();
        let message = parse_request(&put, &serde_json::json!({"version": "7"})).unwrap();
        // 64-bit integers are strings in the canonical mapping.
        assert_eq!(to_json(&message).unwrap(), r#"{"version":"7"}"#);
    }
}
