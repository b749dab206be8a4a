//! Compiles the bookshelf example's proto through micro-codegen, for the integration tests'
//! stubs (`tests/support/auth.rs`); the `micro` binary itself uses none. The greeter's come
//! from micro-testkit (its fixture).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // REST annotations: google/api/*.proto come from the repository's proto/.
    micro_codegen::compile_protos(
        &["../examples/bookshelf/proto/bookshelf/v1/bookshelf.proto"],
        &["../examples/bookshelf/proto", "../proto"],
    )?;
    Ok(())
}
