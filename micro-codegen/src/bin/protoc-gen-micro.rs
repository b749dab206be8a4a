//! `protoc-gen-micro`: the micro code generator as a protoc (or buf) plugin.
//!
//! Reads a `CodeGeneratorRequest` from stdin and writes a `CodeGeneratorResponse` to
//! stdout. Generation errors travel in the response, for protoc to print; only I/O and
//! decoding failures make this process exit non-zero.

use std::{
    io::{self, Read, Write},
    process::ExitCode,
};

use prost::Message;
use prost_types::compiler::CodeGeneratorRequest;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("protoc-gen-micro: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut input = Vec::new();
    io::stdin()
        .read_to_end(&mut input)
        .map_err(|err| format!("cannot read the request from stdin: {err}"))?;
    let request = CodeGeneratorRequest::decode(input.as_slice())
        .map_err(|err| format!("stdin is not a CodeGeneratorRequest: {err}"))?;
    let response = micro_codegen::plugin::run(request);
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(&response.encode_to_vec())
        .and_then(|()| stdout.flush())
        .map_err(|err| format!("cannot write the response to stdout: {err}"))
}
