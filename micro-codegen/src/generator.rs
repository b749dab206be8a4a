//! The generator both front ends share: descriptors in, Rust files out.

use std::{
    collections::{HashMap, HashSet},
    panic::{self, AssertUnwindSafe},
};

use prost_build::Module;
use prost_types::FileDescriptorSet;

use crate::{Error, extras::MicroServiceGenerator};

/// One generated Rust file: its name (`<package>.rs`, for example `greeter.v1.rs`) and
/// its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// The file name, without a directory: the proto package followed by `.rs`, or
    /// `_.rs` for files without a package.
    pub name: String,
    /// The Rust source, as prost-build formats it.
    pub content: String,
}

/// The generator's settings, shared by the build script and protoc plugin front ends.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) build_client: bool,
    pub(crate) build_server: bool,
    pub(crate) micro_path: String,
    pub(crate) extern_paths: Vec<(String, String)>,
    pub(crate) type_attributes: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            build_client: true,
            build_server: true,
            micro_path: "::micro".to_owned(),
            extern_paths: Vec::new(),
            type_attributes: Vec::new(),
        }
    }
}

/// The file name prost-build uses for files without a package.
const DEFAULT_PACKAGE_FILE: &str = "_";

/// Generates the Rust files of the packages of `files_to_generate`.
///
/// `fds` holds every file involved, dependencies included; source info, when present,
/// becomes doc comments. Files of the same package are merged into one Rust file; files
/// whose types are all external (such as `google/protobuf/*.proto`) yield no file.
/// The result is sorted by file name.
pub(crate) fn generate(
    fds: &FileDescriptorSet,
    files_to_generate: &[String],
    options: &Options,
) -> Result<Vec<GeneratedFile>, Error> {
    generate_with_encoded(fds, &HashMap::new(), files_to_generate, options)
}

/// [`generate`], with the files' original encodings by name (`encoded`): those keep
/// extension options (such as `google.api.http`) that `prost_types` drops, so the
/// `FILE_DESCRIPTOR_SET`s serve them to reflection clients.
pub(crate) fn generate_with_encoded(
    fds: &FileDescriptorSet,
    encoded: &HashMap<String, Vec<u8>>,
    files_to_generate: &[String],
    options: &Options,
) -> Result<Vec<GeneratedFile>, Error> {
    let known: HashSet<&str> = fds.file.iter().map(|f| f.name()).collect();
    if let Some(missing) = files_to_generate
        .iter()
        .find(|name| !known.contains(name.as_str()))
    {
        return Err(Error::Generate {
            message: format!("file to generate `{missing}` is not in the descriptor set"),
        });
    }
    let wanted: HashSet<Module> = fds
        .file
        .iter()
        .filter(|f| files_to_generate.iter().any(|name| name == f.name()))
        .map(|f| Module::from_protobuf_package_name(f.package()))
        .collect();

    // Every file goes to prost so that it sees every message; sorting by name makes the
    // output independent of the order the front end listed the files in.
    let mut requests: Vec<_> = fds
        .file
        .iter()
        .map(|f| (Module::from_protobuf_package_name(f.package()), f.clone()))
        .collect();
    requests.sort_by(|a, b| a.1.name().cmp(b.1.name()));

    let tonic = tonic_prost_build::configure()
        .build_client(options.build_client)
        .build_server(options.build_server)
        .build_transport(true)
        .service_generator();
    let services = MicroServiceGenerator::new(
        tonic,
        &options.micro_path,
        options.build_server,
        fds,
        encoded,
    );

    let mut config = prost_build::Config::new();
    config.service_generator(Box::new(services));
    config.type_attribute(".", "#[allow(clippy::all)]");
    for (proto_path, rust_path) in &options.extern_paths {
        config.extern_path(proto_path, rust_path);
    }
    for (proto_path, attribute) in &options.type_attributes {
        config.type_attribute(proto_path, attribute);
    }

    // prost-build panics on descriptors it cannot handle; report that as an error.
    let modules = panic::catch_unwind(AssertUnwindSafe(|| config.generate(requests)))
        .map_err(|payload| Error::Generate {
            message: panic_message(payload.as_ref()),
        })?
        .map_err(|err| Error::Generate {
            message: err.to_string(),
        })?;

    let mut files: Vec<GeneratedFile> = modules
        .into_iter()
        .filter(|(module, _)| wanted.contains(module))
        .map(|(module, content)| GeneratedFile {
            name: module.to_file_name_or(DEFAULT_PACKAGE_FILE),
            content,
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "prost-build panicked".to_owned()
    }
}
