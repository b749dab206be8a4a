//! Compiles the examples' protos through micro-codegen, as users do.
fn main() {}
