//! Code generation for micro. (Stub: being implemented.)

use std::{io, path::Path};

/// Compiles `protos` found under `includes`.
pub fn compile_protos(
    _protos: &[impl AsRef<Path>],
    _includes: &[impl AsRef<Path>],
) -> io::Result<()> {
    Ok(())
}
