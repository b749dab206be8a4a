use super::{CallInfo, Candidates, Picks, Selector};

/// (Stub: being implemented.)
#[derive(Debug, Default)]
pub struct PeakEwma {}

impl Selector for PeakEwma {
    fn select(&self, candidates: &Candidates<'_>, _call: &CallInfo<'_>) -> Picks {
        Picks::rotation(0, candidates.len())
    }
}
