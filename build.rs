//! Compiles the examples' protos through micro-codegen, as users do.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    micro_codegen::compile_protos(
        &["examples/greeter/proto/greeter/v1/greeter.proto"],
        &["examples/greeter/proto"],
    )?;
    Ok(())
}
