//! Child processes under test, the one runner that micro-testkit and the workspace's
//! integration tests (tests/support) share: [`Proc`] starts a program with stdout piped,
//! waits for its `ready addr=… node=…` line (readiness by what the child prints, never by
//! sleeping), sends signals, and kills and reaps it on drop.

use std::{
    collections::VecDeque,
    fmt,
    path::Path,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

/// How long a child may take to print its ready line: generous, for a loaded CI machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many lines of a child's output are kept to show when a test fails.
const KEPT_LINES: usize = 200;

/// A child process that is killed and reaped when dropped, also when a test panics.
///
/// Its stdout is read line by line ([`Proc::next_line`], [`Proc::ready`]); its stderr is
/// collected in the background. Both show in the message of a failed wait, and stderr is
/// echoed through `eprintln!` so the test harness captures it.
pub struct Proc {
    name: String,
    child: Child,
    pid: Option<Pid>,
    stdout: Lines<BufReader<ChildStdout>>,
    output: Arc<Mutex<VecDeque<String>>>,
}

/// What a server printed on its `ready addr=… node=…` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The address the node serves on, `host:port`.
    pub addr: String,
    /// The node's registry id.
    pub node: String,
}

// === impl Proc ===

impl Proc {
    /// Starts `bin` with `args` and extra `env`, with `RUST_LOG=warn` unless `env` sets it.
    ///
    /// # Panics
    /// When the program cannot be started.
    pub fn spawn(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut command = Command::new(bin);
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", bin.display()));
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let output = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let output = Arc::clone(&output);
            let prefix = format!("[{name} {}]", pid.map_or(0, Pid::as_raw));
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("{prefix} {line}");
                    keep(&output, format!("stderr: {line}"));
                }
            });
        }
        let stdout = match child.stdout.take() {
            Some(stdout) => BufReader::new(stdout).lines(),
            None => panic!("{name}: stdout was not piped"),
        };
        Self {
            name,
            child,
            pid,
            stdout,
            output,
        }
    }

    /// The program's file name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next stdout line.
    ///
    /// # Panics
    /// After `timeout`, at end of output or on a read error, with the output so far.
    pub async fn next_line(&mut self, timeout: Duration) -> String {
        match tokio::time::timeout(timeout, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => {
                keep(&self.output, format!("stdout: {line}"));
                line
            }
            Ok(Ok(None)) => panic!("{} closed its output\n{}", self.name, self.output()),
            Ok(Err(err)) => panic!("reading {} output: {err}\n{}", self.name, self.output()),
            Err(_) => panic!(
                "{} printed nothing for {timeout:?}\n{}",
                self.name,
                self.output()
            ),
        }
    }

    /// Reads stdout until the `ready addr=… node=…` line, for at most [`READY_TIMEOUT`].
    ///
    /// # Panics
    /// When no ready line comes in time or the child exits first, with its output.
    pub async fn ready(&mut self) -> Ready {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self.next_line(left).await;
            if let Some(ready) = parse_ready(&line) {
                return ready;
            }
        }
    }

    /// The child's process id.
    ///
    /// # Panics
    /// When the OS reported none (the child had already been reaped).
    pub fn pid(&self) -> Pid {
        self.pid
            .unwrap_or_else(|| panic!("{} has no process id", self.name))
    }

    /// Sends `signal` (SIGTERM, SIGSTOP, SIGCONT, …).
    ///
    /// # Panics
    /// When the signal cannot be sent.
    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(self.pid(), signal)
            .unwrap_or_else(|err| panic!("cannot send {signal} to {}: {err}", self.name));
    }

    /// `kill -9`, then reap.
    ///
    /// # Panics
    /// When the child cannot be killed.
    pub async fn kill(&mut self) {
        if let Err(err) = self.child.kill().await {
            panic!("cannot kill {}: {err}", self.name);
        }
    }

    /// Waits for the child to exit.
    ///
    /// # Panics
    /// After `timeout`, with the child's output.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(err)) => panic!("waiting for {}: {err}", self.name),
            Err(_) => panic!(
                "{} did not exit within {timeout:?}\n{}",
                self.name,
                self.output()
            ),
        }
    }

    /// SIGTERM, then waits for a graceful exit with status 0.
    ///
    /// # Panics
    /// When the child does not exit within `timeout` or exits with another status.
    pub async fn terminate(&mut self, timeout: Duration) {
        self.signal(Signal::SIGTERM);
        let status = self.wait(timeout).await;
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM, not 0\n{}",
            self.name,
            self.output()
        );
    }

    /// The last lines the child printed, stdout and stderr, oldest first.
    pub fn output(&self) -> String {
        let output = self
            .output
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let lines: Vec<&str> = output.iter().map(String::as_str).collect();
        format!("--- output of {} ---\n{}", self.name, lines.join("\n"))
    }
}

impl fmt::Debug for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proc")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

fn keep(output: &Mutex<VecDeque<String>>, line: String) {
    let mut output = output
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if output.len() == KEPT_LINES {
        output.pop_front();
    }
    output.push_back(line);
}

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
}
