//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use micro_codegen::GeneratedFile;

/// The directory holding the test protos.
pub fn protos_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/protos")
}

/// Compiles `greeter.proto` (and its local import) with the library front end into a
/// temporary directory and returns the files written, sorted by name.
pub fn compile_greeter(builder: micro_codegen::Builder) -> Vec<GeneratedFile> {
    let out = tempfile::tempdir().unwrap();
    let dir = protos_dir();
    builder
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile(&[dir.join("greeter.proto")], &[&dir])
        .unwrap();
    read_dir(out.path())
}

/// Reads every file of `dir`, sorted by name.
pub fn read_dir(dir: &std::path::Path) -> Vec<GeneratedFile> {
    let mut files: Vec<GeneratedFile> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            GeneratedFile {
                name: entry.file_name().into_string().unwrap(),
                content: std::fs::read_to_string(entry.path()).unwrap(),
            }
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

/// The content of the file called `name`.
pub fn content<'a>(files: &'a [GeneratedFile], name: &str) -> &'a str {
    &files
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no {name} among {:?}", names(files)))
        .content
}

/// The names of `files`.
pub fn names(files: &[GeneratedFile]) -> Vec<&str> {
    files.iter().map(|f| f.name.as_str()).collect()
}
