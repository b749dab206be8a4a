//! Per-node load: calls in flight and peak-EWMA latency. (Stub: being implemented.)

/// A node's load, read by load-aware selectors.
#[derive(Debug, Default)]
pub struct Load {}

impl Load {
    /// No calls, no latency yet.
    pub fn new() -> Self {
        Self::default()
    }
}
