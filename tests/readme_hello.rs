//! The README's hello world is the example `hello` that CI builds: the `src/main.rs`
//! block of README.md must be examples/hello/main.rs, character for character, and the
//! `build.rs` block must compile the proto the example uses.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

const README: &str = include_str!("../README.md");
const HELLO: &str = include_str!("../examples/hello/main.rs");

/// The `rust` block that follows the first line of README.md containing `marker`.
fn rust_block_after(marker: &str) -> &'static str {
    let at = README
        .find(marker)
        .unwrap_or_else(|| panic!("README.md has no line containing {marker:?}"));
    let rest = &README[at..];
    let open = "```rust\n";
    let start = rest.find(open).expect("a ```rust block after the marker") + open.len();
    let len = rest[start..].find("```\n").expect("the block is closed");
    &rest[start..start + len]
}

#[test]
fn readme_hello_world_is_the_compiled_example() {
    let block = rust_block_after("`src/main.rs`");
    assert_eq!(
        block, HELLO,
        "README.md's hello world differs from examples/hello/main.rs: copy the file into the README"
    );
    assert!(
        block.contains("micro::install();"),
        "the hello world must call micro::install()"
    );
}

#[test]
fn readme_build_rs_compiles_the_proto_of_the_example() {
    let block = rust_block_after("`build.rs`:");
    assert!(
        block.contains("\"proto/helloworld/v1/helloworld.proto\""),
        "{block}"
    );
    assert!(HELLO.contains("micro::include_proto!(\"helloworld.v1\")"));
    let proto = include_str!("../examples/hello/proto/helloworld/v1/helloworld.proto");
    assert!(proto.contains("package helloworld.v1;"));
}
