use super::{CallInfo, Candidates, Picks, Selector};

/// (Stub: being implemented.)
#[derive(Debug, Default)]
pub struct ConsistentHash {}

impl Selector for ConsistentHash {
    fn select(&self, candidates: &Candidates<'_>, _call: &CallInfo<'_>) -> Picks {
        Picks::rotation(0, candidates.len())
    }
}
