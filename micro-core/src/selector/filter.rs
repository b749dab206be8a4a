//! Narrowing candidates by version and labels. (Stub: being implemented.)

/// Keeps only the nodes that match.
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {}
