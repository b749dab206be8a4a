//! Compiles micro-core's own protos (the local broker's wire protocol) through
//! micro-codegen, with generated code referring to this crate as `crate`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    micro_codegen::configure()
        .micro_path("crate")
        .compile(&["proto/micro/broker/v1/broker.proto"], &["proto"])?;
    Ok(())
}
