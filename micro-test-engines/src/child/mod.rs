//! Child processes under test, the one runner of the workspace: the engines (etcd, NATS,
//! Redis, memcached), micro-testkit's servers and the integration tests' servers and tools
//! (tests/support) all run through [`Proc`].
//!
//! A [`Proc`] is a command line and, while it runs, its process. Its output is either piped
//! ([`Proc::spawn`]: the test reads stdout line by line and waits for a `ready addr=… node=…`
//! line) or appended to a log file ([`ProcBuilder::log_file`], for engines that a test
//! restarts). Readiness is what the child prints or a probe answers, never a sleep. A test
//! can send signals, pause (SIGSTOP) and resume, stop, kill and start it again with the same
//! command line; dropping it kills and reaps the process, also while a test unwinds from a
//! panic.

mod output;
mod ready;

pub use ready::{Ready, StartError, parse_ready};

use std::{
    ffi::OsString,
    fmt,
    future::Future,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::{AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use output::{Output, last_bytes};

/// How long a child may take to become ready: generous, for a loaded CI machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long one readiness probe may take (a paused or busy process must not hang the poll).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long [`Proc::stop`] gives a SIGTERM'd process before it kills it.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Proc::pause`] waits for every thread to stop.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dropping a [`Proc`] waits to reap the killed process.
const REAP_TIMEOUT: Duration = Duration::from_secs(2);

/// A command line and, while it runs, its process, killed and reaped when dropped (also when
/// a test panics).
///
/// Piped ([`Proc::spawn`]), its stdout is read line by line ([`Proc::next_line`],
/// [`Proc::ready`]) and its stderr is collected in the background and echoed through
/// `eprintln!`, so the test harness captures it. With a log file
/// ([`ProcBuilder::log_file`]) both go to the file, across restarts. Either way the end of
/// the output shows in the message of a failed wait.
pub struct Proc {
    /// Short name for messages ("greeter-server", "etcd m0", "nats n1").
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    output: Output,
    /// Whether stdin is a pipe ([`ProcBuilder::stdin_piped`]) rather than closed.
    stdin_piped: bool,
    /// The current run's stdin, when piped.
    stdin: Option<ChildStdin>,
    /// The running (or exited but not yet reaped) process.
    child: Option<Child>,
    /// The current or last run's process id.
    pid: Option<Pid>,
    /// How the last run ended, once reaped.
    status: Option<ExitStatus>,
    /// SIGSTOPped and not SIGCONTed since.
    paused: AtomicBool,
}

/// Builds a [`Proc`]: program, arguments, environment, name and where the output goes.
/// Start it with [`ProcBuilder::spawn`].
#[derive(Debug)]
#[must_use]
pub struct ProcBuilder {
    name: Option<String>,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log: Option<PathBuf>,
    stdin_piped: bool,
}

// === impl ProcBuilder ===

impl ProcBuilder {
    /// The name in messages and logs. Default is the program's file name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (a later value for the same key wins). Default is the
    /// test's own environment.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Appends stdout and stderr to `path`, kept across restarts, instead of piping them.
    /// Default is piped.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Keeps stdin open for [`Proc::write_line`]. Default is closed (`/dev/null`).
    pub fn stdin_piped(mut self) -> Self {
        self.stdin_piped = true;
        self
    }

    /// Starts the process.
    ///
    /// # Panics
    /// When the program cannot be started (or the log file opened).
    pub fn spawn(self) -> Proc {
        let name = self.name.unwrap_or_else(|| {
            self.program
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let mut proc = Proc {
            name,
            program: self.program,
            args: self.args,
            env: self.env,
            output: self.log.map_or_else(Output::piped, Output::log),
            stdin_piped: self.stdin_piped,
            stdin: None,
            child: None,
            pid: None,
            status: None,
            paused: AtomicBool::new(false),
        };
        proc.respawn();
        proc
    }
}

// === impl Proc ===

impl Proc {
    /// A builder for `program`.
    pub fn builder(program: impl Into<PathBuf>) -> ProcBuilder {
        ProcBuilder {
            name: None,
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            log: None,
            stdin_piped: false,
        }
    }

    /// Starts `bin` with `args` and extra `env`, output piped, with `RUST_LOG=warn` unless
    /// `env` sets it.
    ///
    /// # Panics
    /// When the program cannot be started.
    pub fn spawn(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        env.iter()
            .fold(
                Self::builder(bin).args(args).env("RUST_LOG", "warn"),
                |builder, (key, value)| builder.env(key, value),
            )
            .spawn()
    }

    /// Starts the same command line again, after [`Proc::stop`], [`Proc::kill`] or an exit
    /// that [`Proc::wait`] saw. A log file gets this run's output appended.
    ///
    /// # Panics
    /// When it is still running, or the program cannot be started.
    pub fn respawn(&mut self) {
        assert!(self.child.is_none(), "{}: already running", self.name);
        let (stdout, stderr) = self.output.stdio().unwrap_or_else(|err| {
            panic!(
                "{}: cannot set up its output {:?}: {err}",
                self.name, self.output
            )
        });
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin_piped {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|err| {
            panic!(
                "{}: cannot start {}: {err}",
                self.name,
                self.program.display()
            )
        });
        self.pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let prefix = format!("[{} {}]", self.name, self.pid.map_or(0, Pid::as_raw));
        self.stdin = child.stdin.take();
        self.output.attach(&mut child, prefix);
        tracing::debug!(name = %self.name, pid = ?self.pid, "child started");
        self.child = Some(child);
        self.status = None;
        self.paused.store(false, Ordering::Relaxed);
    }

    /// The name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current or last run's process id.
    ///
    /// # Panics
    /// When the OS reported none.
    pub fn pid(&self) -> Pid {
        self.pid
            .unwrap_or_else(|| panic!("{} has no process id", self.name))
    }

    /// The running process's id; `None` once stopped, killed or reaped.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether it was started and not stopped, killed or reaped since (it may be paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it runs but is paused ([`Proc::pause`] without [`Proc::resume`] since).
    pub fn is_paused(&self) -> bool {
        self.child.is_some() && self.paused.load(Ordering::Relaxed)
    }

    /// The log file, when the output goes to one.
    pub fn log_path(&self) -> Option<&Path> {
        self.output.log_path()
    }

    /// The end of what it printed: a piped child's last lines of stdout (those read) and
    /// stderr, or a log file's last few KiB (across restarts).
    pub fn tail(&self) -> String {
        self.output.tail()
    }

    /// [`Proc::tail`] under a header naming the child, for failure messages.
    pub fn output(&self) -> String {
        format!("--- output of {} ---\n{}", self.name, self.tail())
    }

    /// The next stdout line of a piped child.
    ///
    /// # Panics
    /// After `timeout`, at end of output or on a read error, with the output so far; when
    /// the output goes to a log file.
    pub async fn next_line(&mut self, timeout: Duration) -> String {
        let Some(stdout) = self.output.stdout() else {
            panic!(
                "{}: its output goes to a log file, not to the test",
                self.name
            );
        };
        match tokio::time::timeout(timeout, stdout.next_line()).await {
            Ok(Ok(Some(line))) => {
                self.output.kept_stdout(&line);
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

    /// Hands a piped child's stdout over to a test that reads it in a task of its own
    /// (after which [`Proc::next_line`] panics); `None` when it was handed over already or
    /// the output goes to a log file. What the test reads there is not kept for
    /// [`Proc::output`].
    pub fn take_stdout(&mut self) -> Option<Lines<BufReader<ChildStdout>>> {
        self.output.take_stdout()
    }

    /// Writes `line` and a newline to stdin, and flushes.
    ///
    /// # Panics
    /// When stdin is not piped ([`ProcBuilder::stdin_piped`]) or the child closed it.
    pub async fn write_line(&mut self, line: &str) {
        let Some(stdin) = self.stdin.as_mut() else {
            panic!("{}: stdin is not piped", self.name);
        };
        let written = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        if let Err(err) = written.await {
            panic!(
                "{}: cannot write to stdin: {err}\n{}",
                self.name,
                self.output()
            );
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

    /// Sends `signal` (SIGTERM, SIGSTOP, SIGCONT, …) to the current or last run.
    ///
    /// # Panics
    /// When the signal cannot be sent.
    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(self.pid(), signal)
            .unwrap_or_else(|err| panic!("cannot send {signal} to {}: {err}", self.name));
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing until [`Proc::resume`].
    /// Returns once every thread has stopped (kill(2) returns before a thread running on
    /// another core has).
    ///
    /// # Panics
    /// When it is not running, or a thread still runs 5 s after the signal.
    pub fn pause(&self) {
        self.signal_pause(Signal::SIGSTOP, true);
        let pid = self.pid();
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "{}: still running {PAUSE_TIMEOUT:?} after SIGSTOP",
                self.name
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// SIGCONT after [`Proc::pause`].
    ///
    /// # Panics
    /// When it is not running.
    pub fn resume(&self) {
        self.signal_pause(Signal::SIGCONT, false);
    }

    /// Sends SIGSTOP or SIGCONT to the running process and records whether it is paused.
    fn signal_pause(&self, signal: Signal, paused: bool) {
        assert!(
            self.is_running(),
            "{}: not running, cannot send {signal}",
            self.name
        );
        tracing::debug!(name = %self.name, %signal, "pause or resume");
        self.signal(signal);
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// SIGTERM (and SIGCONT, in case it is paused), then waits for the exit; SIGKILL after
    /// 10 s. Does nothing if it is not running.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.stdin = None;
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
            let _ = nix::sys::signal::kill(pid, Signal::SIGCONT);
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(status) => {
                tracing::debug!(name = %self.name, ?status, "child stopped");
                self.status = status.ok();
            }
            Err(_) => {
                tracing::warn!(name = %self.name, "ignored SIGTERM for {STOP_TIMEOUT:?}; killing it");
                let _ = child.kill().await;
                self.status = child.try_wait().ok().flatten();
            }
        }
    }

    /// `kill -9`, then reaps it. Does nothing if it is not running.
    ///
    /// # Panics
    /// When the process cannot be killed.
    pub async fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.stdin = None;
        if let Err(err) = child.kill().await {
            panic!("cannot kill {}: {err}", self.name);
        }
        self.status = child.try_wait().ok().flatten();
        tracing::debug!(name = %self.name, "child killed");
    }

    /// Waits for the process to exit and reaps it; after a stop, kill or earlier wait,
    /// returns how that run ended.
    ///
    /// # Panics
    /// After `timeout`, with the child's output; when it was never reaped and does not run.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let Some(child) = self.child.as_mut() else {
            return self
                .status
                .unwrap_or_else(|| panic!("{}: not running and no exit seen", self.name));
        };
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => {
                self.child = None;
                self.status = Some(status);
                status
            }
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

    /// Polls `probe` every 25 ms until it returns true, giving each probe at most 1 s.
    ///
    /// # Errors
    /// [`StartError::AddrInUse`] when the process exits and its output says a port was
    /// taken; [`StartError::Failed`] when it exits otherwise or is not ready within
    /// [`READY_TIMEOUT`]. `what` names the awaited state in the message ("healthy").
    pub async fn wait_ready<F, Fut>(&mut self, what: &str, mut probe: F) -> Result<(), StartError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        Self::wait_all_ready(&mut [self], what, |_| probe()).await
    }

    /// Polls `probe(i)` for every process `i` every 25 ms until each has returned true
    /// once: processes that start together (a cluster) become ready together.
    ///
    /// # Errors
    /// As [`Proc::wait_ready`], as soon as one exits; after [`READY_TIMEOUT`] with the
    /// output of each one not ready.
    pub async fn wait_all_ready<F, Fut>(
        procs: &mut [&mut Proc],
        what: &str,
        mut probe: F,
    ) -> Result<(), StartError>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut ready = vec![false; procs.len()];
        loop {
            for (i, proc) in procs.iter_mut().enumerate() {
                if ready[i] {
                    continue;
                }
                proc.check_exit(what)?;
                ready[i] = matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, probe(i)).await,
                    Ok(true)
                );
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut msg = String::new();
                for (proc, _) in procs.iter().zip(&ready).filter(|(_, r)| !**r) {
                    msg.push_str(&format!(
                        "{} not {what} after {READY_TIMEOUT:?}\n{}\n",
                        proc.describe(),
                        proc.output()
                    ));
                }
                return Err(StartError::Failed(msg));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// An error if the process has exited (it was expected to be running).
    fn check_exit(&mut self, what: &str) -> Result<(), StartError> {
        let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        else {
            return Ok(());
        };
        self.child = None;
        self.status = Some(status);
        let run = self.output.this_run();
        let msg = format!(
            "{} exited before {what}: {status}\n--- output of {} ---\n{}",
            self.describe(),
            self.name,
            last_bytes(&run)
        );
        Err(StartError::exited(msg, &run))
    }

    /// "name (program[, log file])", for messages.
    fn describe(&self) -> String {
        match self.output.log_path() {
            Some(log) => format!(
                "{} ({}, log {})",
                self.name,
                self.program.display(),
                log.display()
            ),
            None => format!("{} ({})", self.name, self.program.display()),
        }
    }
}

impl fmt::Debug for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proc")
            .field("name", &self.name)
            .field("program", &self.program)
            .field("pid", &self.id())
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl Drop for Proc {
    /// SIGKILL and reap, also while a test unwinds from a panic.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.start_kill();
        // SIGKILL is immediate (also for a SIGSTOPped process); reap it so no zombie outlives
        // the value. tokio's orphan reaper would get it later otherwise.
        let deadline = Instant::now() + REAP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }
}

/// Whether every thread of `pid` is in state T (stopped), per /proc.
fn all_threads_stopped(pid: Pid) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true; // gone: nothing runs
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).map_or(true, |stat| {
            // "tid (comm) S ...": the state follows the last ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| matches!(state, "T" | "t" | "Z" | "X"))
        })
    })
}

#[cfg(test)]
mod tests;
