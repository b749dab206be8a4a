//! Invalid protos fail with the location of the problem, `file:line:column`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

fn compile(proto: &str) -> micro_codegen::Error {
    let out = tempfile::tempdir().unwrap();
    let dir = common::protos_dir();
    micro_codegen::configure()
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile(&[dir.join(proto)], &[&dir])
        .unwrap_err()
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let err = compile("broken/syntax_error.proto");
    let text = err.to_string();
    assert_eq!(
        text,
        "broken/syntax_error.proto:7:1: expected ';' or '[', but found '}'"
    );
    assert!(matches!(
        &err,
        micro_codegen::Error::Parse { file: Some(file), .. } if file == "broken/syntax_error.proto"
    ));
    // `.unwrap()` in a build script prints `Debug`: the same text.
    assert_eq!(format!("{err:?}"), text);
}

#[test]
fn missing_import_names_the_import_and_its_location() {
    let text = compile("broken/missing_import.proto").to_string();
    assert_eq!(
        text,
        "broken/missing_import.proto:5:1: import 'does/not/exist.proto' not found"
    );
}

#[test]
fn missing_file_is_reported() {
    let text = compile("nowhere.proto").to_string();
    assert!(text.contains("nowhere.proto"), "{text}");
}

#[test]
fn compile_protos_propagates_errors() {
    let dir = common::protos_dir();
    let result = micro_codegen::configure()
        .out_dir(tempfile::tempdir().unwrap().path())
        .emit_rerun_if_changed(false)
        .compile(&["broken/syntax_error.proto"], &[&dir]);
    assert!(
        result
            .unwrap_err()
            .to_string()
            .starts_with("broken/syntax_error.proto:7:1:")
    );
}
