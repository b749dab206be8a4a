//! Compiles the probe service's and the greeter fixture's protos through micro-codegen.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    micro_codegen::compile_protos(&["proto/testkit/v1/testkit.proto"], &["proto"])?;
    micro_codegen::compile_protos(&["proto/greeter/v1/greeter.proto"], &["proto"])?;
    Ok(())
}
