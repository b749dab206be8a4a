use super::{CallInfo, Candidates, Picks, Selector};

/// Tries a uniformly random node first, then the others in rotation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Random;

impl Selector for Random {
    fn select(&self, candidates: &Candidates<'_>, _call: &CallInfo<'_>) -> Picks {
        let len = candidates.len();
        Picks::rotation(rand::random_range(0..len.max(1)), len)
    }
}
