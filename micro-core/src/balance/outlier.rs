//! Outlier detection: ejecting nodes that keep failing. (Stub: being implemented.)

/// Outlier-detection settings.
#[derive(Debug, Clone, Default)]
pub struct OutlierConfig {}

/// A node's outlier-detection state.
#[derive(Debug, Default)]
pub struct Outlier {}

impl Outlier {
    /// A healthy node.
    pub fn new() -> Self {
        Self::default()
    }
}
