//! Compiles the examples' protos through micro-codegen, for the integration tests' stubs
//! (`tests/support`); the `micro` binary itself uses none.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    micro_codegen::compile_protos(
        &["../examples/greeter/proto/greeter/v1/greeter.proto"],
        &["../examples/greeter/proto"],
    )?;
    // REST annotations: google/api/*.proto come from the repository's proto/.
    micro_codegen::compile_protos(
        &["../examples/bookshelf/proto/bookshelf/v1/bookshelf.proto"],
        &["../examples/bookshelf/proto", "../proto"],
    )?;
    Ok(())
}
