//! Compiles the platform's protos (`proto/micro/**` at the workspace root) through
//! micro-codegen, with generated code referring to micro-core directly.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    micro_codegen::configure()
        .micro_path("::micro_core")
        .compile(
            &[
                "../proto/micro/auth/v1/auth.proto",
                "../proto/micro/config/v1/config.proto",
                "../proto/micro/event/v1/event.proto",
                "../proto/micro/kv/v1/kv.proto",
                "../proto/micro/registry/v1/registry.proto",
                "../proto/micro/sync/v1/sync.proto",
            ],
            &["../proto"],
        )?;
    Ok(())
}
