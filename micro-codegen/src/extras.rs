//! The micro additions to tonic's generated code: one `ServiceDescriptor` const and one
//! `DescribedService` impl per service, one `FILE_DESCRIPTOR_SET` const per package.

use std::{
    collections::{HashMap, HashSet},
    fmt::{self, Write as _},
};

use prost::Message as _;
use prost_build::{Method, Service, ServiceGenerator};
use prost_types::{FileDescriptorProto, FileDescriptorSet, method_options::IdempotencyLevel};

/// Wraps tonic's service generator and appends the micro extras after its output.
pub(crate) struct MicroServiceGenerator {
    inner: Box<dyn ServiceGenerator>,
    micro_path: String,
    build_server: bool,
    /// Every file of the input, without source info, by name.
    files: HashMap<String, FileDescriptorProto>,
    /// The input's file names, sorted, so package lookups are deterministic.
    names: Vec<String>,
    /// The files' original encodings without source info, by name, when known: unlike
    /// `files`, they keep extension options such as `google.api.http`.
    encoded: HashMap<String, Vec<u8>>,
}

impl fmt::Debug for MicroServiceGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MicroServiceGenerator")
            .field("micro_path", &self.micro_path)
            .field("build_server", &self.build_server)
            .field("files", &self.names)
            .finish_non_exhaustive()
    }
}

impl MicroServiceGenerator {
    pub(crate) fn new(
        inner: Box<dyn ServiceGenerator>,
        micro_path: &str,
        build_server: bool,
        fds: &FileDescriptorSet,
        encoded: &HashMap<String, Vec<u8>>,
    ) -> Self {
        let files: HashMap<String, FileDescriptorProto> = fds
            .file
            .iter()
            .map(|file| {
                let stripped = FileDescriptorProto {
                    source_code_info: None,
                    ..file.clone()
                };
                (file.name().to_owned(), stripped)
            })
            .collect();
        let mut names: Vec<String> = files.keys().cloned().collect();
        names.sort();
        MicroServiceGenerator {
            inner,
            micro_path: micro_path.trim_end_matches("::").to_owned(),
            build_server,
            files,
            names,
            encoded: encoded
                .iter()
                .filter_map(|(name, bytes)| {
                    without_source_info(bytes).map(|bytes| (name.clone(), bytes))
                })
                .collect(),
        }
    }

    /// The encoded set of the package's files and everything they import, dependencies
    /// first, without source info.
    fn package_descriptor_set(&self, package: &str) -> Vec<u8> {
        let mut seen = HashSet::new();
        let mut ordered = Vec::new();
        for name in &self.names {
            if self.files.get(name).is_some_and(|f| f.package() == package) {
                self.visit(name, &mut seen, &mut ordered);
            }
        }
        if ordered
            .iter()
            .all(|file| self.encoded.contains_key(file.name()))
        {
            // `FileDescriptorSet.file` (field 1) from the original bytes.
            let mut set = Vec::new();
            for file in &ordered {
                if let Some(bytes) = self.encoded.get(file.name()) {
                    prost::encoding::bytes::encode(1, bytes, &mut set);
                }
            }
            return set;
        }
        FileDescriptorSet { file: ordered }.encode_to_vec()
    }

    fn visit<'a>(
        &'a self,
        name: &'a str,
        seen: &mut HashSet<&'a str>,
        ordered: &mut Vec<FileDescriptorProto>,
    ) {
        if !seen.insert(name) {
            return;
        }
        let Some(file) = self.files.get(name) else {
            return;
        };
        for dependency in &file.dependency {
            self.visit(dependency, seen, ordered);
        }
        ordered.push(file.clone());
    }
}

/// The fields of an encoded message, as (field number, whole encoded field) byte ranges;
/// `None` when the bytes are not a well-formed message without groups.
pub(crate) fn encoded_fields(bytes: &[u8]) -> Option<Vec<(u32, &[u8])>> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut fields = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let start = rest;
        let (number, wire_type) = decode_key(&mut rest).ok()?;
        let skip = match wire_type {
            WireType::Varint => {
                decode_varint(&mut rest).ok()?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => usize::try_from(decode_varint(&mut rest).ok()?).ok()?,
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        rest = rest.get(skip..)?;
        let length = start.len() - rest.len();
        fields.push((number, start.get(..length)?));
    }
    Some(fields)
}

/// An encoded `FileDescriptorProto` without its `source_code_info` (field 9).
fn without_source_info(bytes: &[u8]) -> Option<Vec<u8>> {
    Some(
        encoded_fields(bytes)?
            .into_iter()
            .filter(|(number, _)| *number != 9)
            .flat_map(|(_, field)| field.iter().copied())
            .collect(),
    )
}

impl ServiceGenerator for MicroServiceGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let extras = service_extras(&service, &self.micro_path, self.build_server);
        self.inner.generate(service, buf);
        buf.push_str(&extras);
    }

    fn finalize(&mut self, buf: &mut String) {
        self.inner.finalize(buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.inner.finalize_package(package, buf);
        let bytes = self.package_descriptor_set(package);
        let _ = write!(
            buf,
            "\n/// Encoded `google.protobuf.FileDescriptorSet` of the files of package `{package}` \
             and all their imports, for gRPC reflection.\n\
             pub const FILE_DESCRIPTOR_SET: &[u8] = b\"{}\";\n",
            bytes.escape_ascii()
        );
    }
}

/// The descriptor const and, with servers on, the `DescribedService` impl of one service.
fn service_extras(service: &Service, micro: &str, build_server: bool) -> String {
    let full_name = if service.package.is_empty() {
        service.proto_name.clone()
    } else {
        format!("{}.{}", service.package, service.proto_name)
    };
    let const_name = format!("{}_DESCRIPTOR", screaming_snake(&service.proto_name));
    let mut out = String::new();
    let _ = write!(
        out,
        "\n/// micro descriptor of the gRPC service `{full_name}`.\n\
         pub const {const_name}: {micro}::codegen::ServiceDescriptor = \
         {micro}::codegen::ServiceDescriptor {{ name: {full_name:?}, endpoints: &["
    );
    for method in &service.methods {
        out.push_str(&endpoint(method, micro));
    }
    out.push_str("], file_descriptor_set: FILE_DESCRIPTOR_SET, };\n");
    if build_server {
        let _ = writeln!(
            out,
            "impl<T> {micro}::codegen::DescribedService for {module}::{name}Server<T> {{ \
             const DESCRIPTOR: &'static {micro}::codegen::ServiceDescriptor = &{const_name}; }}",
            module = format_args!("{}_server", tonic_snake_case(&service.name)),
            name = service.name,
        );
    }
    out
}

fn endpoint(method: &Method, micro: &str) -> String {
    let idempotency = match method.options.idempotency_level() {
        IdempotencyLevel::Idempotent => "Idempotent",
        IdempotencyLevel::NoSideEffects => "NoSideEffects",
        IdempotencyLevel::IdempotencyUnknown => "Unknown",
    };
    format!(
        "{micro}::codegen::EndpointDescriptor {{ name: {:?}, request: {:?}, response: {:?}, \
         client_streaming: {}, server_streaming: {}, \
         idempotency: {micro}::codegen::Idempotency::{idempotency} }},",
        method.proto_name,
        method.input_proto_type.trim_start_matches('.'),
        method.output_proto_type.trim_start_matches('.'),
        method.client_streaming,
        method.server_streaming,
    )
}

/// `FooBar` → `FOO_BAR`, `HTTPServer` → `HTTP_SERVER`, `Greeter2` → `GREETER2`.
pub(crate) fn screaming_snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                out.push('_');
            }
        }
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.extend(c.to_uppercase());
    }
    out
}

/// The snake case tonic uses for the `<service>_server` module name: an underscore before
/// every uppercase letter but the first.
fn tonic_snake_case(name: &str) -> String {
    let mut out = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c.to_ascii_lowercase());
        if chars.peek().is_some_and(|n| n.is_uppercase()) {
            out.push('_');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screaming_snake_cases() {
        assert_eq!(screaming_snake("Greeter"), "GREETER");
        assert_eq!(screaming_snake("GreeterService"), "GREETER_SERVICE");
        assert_eq!(screaming_snake("HTTPServer"), "HTTP_SERVER");
        assert_eq!(screaming_snake("Greeter2"), "GREETER2");
        assert_eq!(screaming_snake("my_service"), "MY_SERVICE");
    }

    #[test]
    fn tonic_snake_cases() {
        assert_eq!(tonic_snake_case("Greeter"), "greeter");
        assert_eq!(tonic_snake_case("ThatHasALongName"), "that_has_a_long_name");
    }
}
