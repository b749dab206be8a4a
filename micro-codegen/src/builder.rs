//! The build script front end: parse `.proto` files with protox, generate, write to
//! `OUT_DIR`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use prost::Message as _;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

use crate::{
    Error,
    generator::{self, GeneratedFile, Options},
};

/// Configures code generation; start with [`configure`](crate::configure).
///
/// ```rust,no_run
/// // build.rs
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     micro_codegen::configure()
///         .build_client(false)
///         .compile(&["proto/greeter.proto"], &["proto"])?;
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    options: Options,
    out_dir: Option<PathBuf>,
    emit_rerun_if_changed: bool,
    file_descriptor_set_path: Option<PathBuf>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            options: Options::default(),
            out_dir: None,
            emit_rerun_if_changed: true,
            file_descriptor_set_path: None,
        }
    }
}

impl Builder {
    /// Whether to generate the tonic client (`<service>_client` module). Default is `true`.
    #[must_use]
    pub fn build_client(mut self, enable: bool) -> Self {
        self.options.build_client = enable;
        self
    }

    /// Whether to generate the tonic server (`<service>_server` module) and its
    /// `DescribedService` impl. Default is `true`.
    #[must_use]
    pub fn build_server(mut self, enable: bool) -> Self {
        self.options.build_server = enable;
        self
    }

    /// The directory the Rust files are written to. Default is the `OUT_DIR` environment
    /// variable cargo sets for build scripts.
    #[must_use]
    pub fn out_dir(mut self, path: impl AsRef<Path>) -> Self {
        self.out_dir = Some(path.as_ref().to_owned());
        self
    }

    /// The path generated code uses to name micro's codegen types, for crates that depend
    /// on `micro_core` rather than the `micro` facade. Default is `::micro`.
    #[must_use]
    pub fn micro_path(mut self, path: impl AsRef<str>) -> Self {
        self.options.micro_path = path.as_ref().to_owned();
        self
    }

    /// Uses existing Rust types for the proto package or type `proto_path` (for example
    /// `.common.v1`) instead of generating them, as `prost_build::Config::extern_path`.
    /// Default is none, apart from prost's own mapping of `google.protobuf` to
    /// `::prost_types`.
    #[must_use]
    pub fn extern_path(mut self, proto_path: impl AsRef<str>, rust_path: impl AsRef<str>) -> Self {
        self.options.extern_paths.push((
            proto_path.as_ref().to_owned(),
            rust_path.as_ref().to_owned(),
        ));
        self
    }

    /// Adds `attribute` to the messages and enums matched by `proto_path` (`.` matches all),
    /// as `prost_build::Config::type_attribute`. Default is none besides
    /// `#[allow(clippy::all)]` on every type.
    #[must_use]
    pub fn type_attribute(
        mut self,
        proto_path: impl AsRef<str>,
        attribute: impl AsRef<str>,
    ) -> Self {
        self.options.type_attributes.push((
            proto_path.as_ref().to_owned(),
            attribute.as_ref().to_owned(),
        ));
        self
    }

    /// Whether to print `cargo:rerun-if-changed=` for every local proto file read, the
    /// imported ones included. Default is `true`.
    #[must_use]
    pub fn emit_rerun_if_changed(mut self, enable: bool) -> Self {
        self.emit_rerun_if_changed = enable;
        self
    }

    /// Also writes the encoded `FileDescriptorSet` of all files read, with source info, to
    /// `path`. Default is not to write it.
    #[must_use]
    pub fn file_descriptor_set_path(mut self, path: impl AsRef<Path>) -> Self {
        self.file_descriptor_set_path = Some(path.as_ref().to_owned());
        self
    }

    /// Parses `protos` (paths on disk or names relative to an include directory), finding
    /// imports in `includes` and protox's bundled `google/protobuf/*.proto`, and writes one
    /// `<package>.rs` per package to the output directory. Imported local files are
    /// generated too.
    pub fn compile(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or(Error::MissingOutDir)?,
        };

        let mut compiler = protox::Compiler::new(includes.iter().map(AsRef::as_ref))
            .map_err(|err| Error::from_protox(&err))?;
        compiler
            .include_imports(true)
            .include_source_info(true)
            .open_files(protos.iter().map(AsRef::as_ref))
            .map_err(|err| Error::from_protox(&err))?;

        if self.emit_rerun_if_changed {
            for file in compiler.files() {
                if let Some(path) = file.path() {
                    emit(&format!("cargo:rerun-if-changed={}", path.display()));
                }
            }
        }

        let fds = compiler.file_descriptor_set();
        let names: Vec<String> = fds.file.iter().map(|f| f.name().to_owned()).collect();
        // The encoded set keeps extension options (`google.api.http`) that `fds` lost.
        let encoded = encoded_files(&compiler.encode_file_descriptor_set());
        let files = crate::generator::generate_with_encoded(&fds, &encoded, &names, &self.options)?;

        fs::create_dir_all(&out_dir).map_err(|err| Error::io(&out_dir, err))?;
        for file in &files {
            write_if_changed(&out_dir.join(&file.name), file.content.as_bytes())?;
        }
        if let Some(path) = &self.file_descriptor_set_path {
            write_if_changed(path, &fds.encode_to_vec())?;
        }
        Ok(())
    }

    /// Generates the Rust files for `files_to_generate` (file names as in the descriptors)
    /// from `fds`, which must hold those files and everything they import. This is the
    /// generator behind both [`compile`](Self::compile) and `protoc-gen-micro`; it writes
    /// nothing.
    pub fn generate(
        &self,
        fds: &FileDescriptorSet,
        files_to_generate: &[impl AsRef<str>],
    ) -> Result<Vec<GeneratedFile>, Error> {
        let names: Vec<String> = files_to_generate
            .iter()
            .map(|name| name.as_ref().to_owned())
            .collect();
        generator::generate(fds, &names, &self.options)
    }
}

/// The files of an encoded `FileDescriptorSet` by name, as they were encoded.
fn encoded_files(set: &[u8]) -> std::collections::HashMap<String, Vec<u8>> {
    crate::extras::encoded_fields(set)
        .unwrap_or_default()
        .into_iter()
        .filter(|(number, _)| *number == 1)
        .filter_map(|(_, field)| {
            // The field is its key, its length, then the file.
            let mut rest = field;
            prost::encoding::decode_key(&mut rest).ok()?;
            prost::encoding::decode_varint(&mut rest).ok()?;
            let file = FileDescriptorProto::decode(rest).ok()?;
            Some((file.name().to_owned(), rest.to_vec()))
        })
        .collect()
}

/// Prints a cargo build script instruction.
#[allow(clippy::print_stdout)]
fn emit(line: &str) {
    println!("{line}");
}

/// Writes `content` unless the file already holds it, so cargo does not rebuild needlessly.
fn write_if_changed(path: &Path, content: &[u8]) -> Result<(), Error> {
    if fs::read(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    fs::write(path, content).map_err(|err| Error::io(path, err))
}
