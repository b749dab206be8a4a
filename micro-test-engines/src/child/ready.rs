//! What readiness looks like: a server's `ready addr=… node=…` line, and why a start that
//! waited for readiness failed.

use std::fmt;

/// What a server printed on its `ready addr=… node=…` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The address the node serves on, `host:port`.
    pub addr: String,
    /// The node's registry id.
    pub node: String,
}

/// Why a process did not become ready ([`Proc::wait_ready`](super::Proc::wait_ready)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// The process exited and its output says a port was taken ("address already in
    /// use"): pick other ports and start again.
    AddrInUse(String),
    /// Anything else (it exited for another reason, or was not ready in time): not worth
    /// retrying. The message names the process and shows the end of its output.
    Failed(String),
}

// === impl StartError ===

impl StartError {
    /// Classifies an early exit by the output of that run: [`StartError::AddrInUse`] when it
    /// says a port was taken.
    pub(super) fn exited(message: String, output: &str) -> Self {
        if output
            .to_ascii_lowercase()
            .contains("address already in use")
        {
            StartError::AddrInUse(message)
        } else {
            StartError::Failed(message)
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::AddrInUse(msg) | StartError::Failed(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for StartError {}

/// Parses `ready addr=<addr> node=<id>`; `None` for any other line.
pub fn parse_ready(line: &str) -> Option<Ready> {
    let rest = line.strip_prefix("ready ")?;
    let field = |key: &str| {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .map(str::to_owned)
    };
    Some(Ready {
        addr: field("addr=")?,
        node: field("node=")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines() {
        assert_eq!(
            parse_ready("ready addr=127.0.0.1:4000 node=probe-1"),
            Some(Ready {
                addr: "127.0.0.1:4000".into(),
                node: "probe-1".into()
            })
        );
        assert_eq!(parse_ready("ready addr=127.0.0.1:4000"), None);
        assert_eq!(parse_ready("starting"), None);
    }

    #[test]
    fn addr_in_use_is_told_apart() {
        let taken = StartError::exited("etcd exited".into(), "bind: Address already in use");
        assert!(matches!(taken, StartError::AddrInUse(_)));
        let other = StartError::exited("etcd exited".into(), "permission denied");
        assert!(matches!(other, StartError::Failed(_)));
    }
}
