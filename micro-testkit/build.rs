//! Compiles the probe service's proto through micro-codegen.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    micro_codegen::compile_protos(&["proto/testkit/v1/testkit.proto"], &["proto"])?;
    Ok(())
}
