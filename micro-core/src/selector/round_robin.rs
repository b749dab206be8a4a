use std::sync::atomic::{AtomicUsize, Ordering};

use super::{CallInfo, Candidates, Picks, Selector};

/// Tries each node in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A round-robin selector starting at the first node.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Selector for RoundRobin {
    fn select(&self, candidates: &Candidates<'_>, _call: &CallInfo<'_>) -> Picks {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        Picks::rotation(start, candidates.len())
    }
}

impl Clone for RoundRobin {
    /// A selector with its own position, starting where this one is.
    fn clone(&self) -> Self {
        Self {
            next: AtomicUsize::new(self.next.load(Ordering::Relaxed)),
        }
    }
}
