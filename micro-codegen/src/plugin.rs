//! The protoc plugin front end: `CodeGeneratorRequest` in, `CodeGeneratorResponse` out.
//!
//! The `protoc-gen-micro` binary only moves bytes between stdin, this module and stdout.

use prost_types::{
    FileDescriptorSet,
    compiler::{CodeGeneratorRequest, CodeGeneratorResponse, code_generator_response},
};

use crate::Builder;

/// Answers a protoc plugin request.
///
/// Generates the packages of the request's `file_to_generate` from its `proto_file`,
/// exactly as [`Builder::compile`] would for the same files. Problems with the request
/// (an unknown parameter, a generation failure) are reported in the response's `error`
/// field, which protoc prints.
///
/// The request's `parameter` is a comma-separated list of `key=value` pairs:
///
/// - `micro_path=PATH`: as [`Builder::micro_path`], default `::micro`;
/// - `client=false` / `server=false`: as [`Builder::build_client`] /
///   [`Builder::build_server`];
/// - `extern_path=PROTO_PATH=RUST_PATH`: as [`Builder::extern_path`], may repeat.
///
/// With protoc: `protoc --micro_opt=micro_path=::micro_core,client=false --micro_out=OUT ...`
/// (not `--micro_out=OPTIONS:OUT`, which protoc splits at the first `:`).
pub fn run(request: CodeGeneratorRequest) -> CodeGeneratorResponse {
    let mut response = CodeGeneratorResponse {
        supported_features: Some(code_generator_response::Feature::Proto3Optional as u64),
        ..CodeGeneratorResponse::default()
    };
    let builder = match builder_from_parameter(request.parameter()) {
        Ok(builder) => builder,
        Err(message) => {
            response.error = Some(message);
            return response;
        }
    };
    let fds = FileDescriptorSet {
        file: request.proto_file,
    };
    match builder.generate(&fds, &request.file_to_generate) {
        Ok(files) => {
            response.file = files
                .into_iter()
                .map(|file| code_generator_response::File {
                    name: Some(file.name),
                    content: Some(file.content),
                    ..code_generator_response::File::default()
                })
                .collect();
        }
        Err(err) => response.error = Some(err.to_string()),
    }
    response
}

/// Parses the plugin parameter string into a [`Builder`].
fn builder_from_parameter(parameter: &str) -> Result<Builder, String> {
    let mut builder = Builder::default().emit_rerun_if_changed(false);
    for item in parameter
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("protoc-gen-micro: parameter `{item}` is not `key=value`"))?;
        builder = match key.trim() {
            "micro_path" => builder.micro_path(value.trim()),
            "client" => builder.build_client(parse_bool(key, value)?),
            "server" => builder.build_server(parse_bool(key, value)?),
            "extern_path" => {
                let (proto, rust) = value.split_once('=').ok_or_else(|| {
                    format!("protoc-gen-micro: `extern_path={value}` is not `PROTO_PATH=RUST_PATH`")
                })?;
                builder.extern_path(proto.trim(), rust.trim())
            }
            other => {
                return Err(format!(
                    "protoc-gen-micro: unknown parameter `{other}` \
                     (known: micro_path, client, server, extern_path)"
                ));
            }
        };
    }
    Ok(builder)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!(
            "protoc-gen-micro: `{key}` must be `true` or `false`, not `{other}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parameters() {
        let builder =
            builder_from_parameter("micro_path=::micro_core, client=false,server=true").unwrap();
        let text = format!("{builder:?}");
        assert!(text.contains("::micro_core"), "{text}");
        assert!(text.contains("build_client: false"), "{text}");
    }

    #[test]
    fn rejects_unknown_parameters() {
        let err = builder_from_parameter("colour=blue").unwrap_err();
        assert!(err.contains("unknown parameter `colour`"), "{err}");
        let err = builder_from_parameter("client=maybe").unwrap_err();
        assert!(err.contains("`client` must be"), "{err}");
    }

    #[test]
    fn unknown_file_is_an_error_response() {
        let response = run(CodeGeneratorRequest {
            file_to_generate: vec!["nope.proto".into()],
            ..CodeGeneratorRequest::default()
        });
        assert!(response.error().contains("nope.proto"));
        assert_eq!(response.supported_features, Some(1));
    }
}
