//! The context of the call a handler is serving. (Stub: being implemented.)

use std::time::Duration;

/// What is left of the deadline of the call being handled by the current task, if any.
pub(crate) fn remaining() -> Option<Duration> {
    None
}
