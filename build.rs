//! Compiles the examples' protos through micro-codegen, as users do.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    micro_codegen::compile_protos(
        &["examples/greeter/proto/greeter/v1/greeter.proto"],
        &["examples/greeter/proto"],
    )?;
    // The README's hello world.
    micro_codegen::compile_protos(
        &["examples/hello/proto/helloworld/v1/helloworld.proto"],
        &["examples/hello/proto"],
    )?;
    // REST annotations: google/api/*.proto come from the repository's proto/.
    micro_codegen::compile_protos(
        &["examples/bookshelf/proto/bookshelf/v1/bookshelf.proto"],
        &["examples/bookshelf/proto", "proto"],
    )?;
    Ok(())
}
