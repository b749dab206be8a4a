//! One engine process: spawn with its output in a log file, signals, readiness polling, and
//! kill + reap on drop.

use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// How long a readiness wait may take before it fails with the log's tail.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long one readiness probe may take (a paused or busy process must not hang the poll).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a SIGTERM'd process gets to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many bytes of the log a failure message shows.
const TAIL_BYTES: u64 = 4096;

/// Why a start did not reach readiness.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The process exited and its log says a port was taken: pick other ports and retry.
    AddrInUse(String),
    /// Anything else: not worth retrying.
    Failed(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::AddrInUse(msg) | StartError::Failed(msg) => f.write_str(msg),
        }
    }
}

/// A command line and, while it runs, its process.
pub(crate) struct Proc {
    /// Short name for messages ("etcd m0", "nats n1", "redis").
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log: PathBuf,
    /// Where this run's output starts in the log.
    log_start: u64,
    child: Option<Child>,
    /// SIGSTOPped and not SIGCONTed since.
    paused: AtomicBool,
}

impl fmt::Debug for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proc")
            .field("name", &self.name)
            .field("program", &self.program)
            .field("pid", &self.pid())
            .field("log", &self.log)
            .finish()
    }
}

impl Proc {
    pub(crate) fn new(name: impl Into<String>, program: PathBuf, log: PathBuf) -> Proc {
        Proc {
            name: name.into(),
            program,
            args: Vec::new(),
            env: Vec::new(),
            log,
            log_start: 0,
            child: None,
            paused: AtomicBool::new(false),
        }
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    pub(crate) fn set_args<I, S>(&mut self, args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
    }

    pub(crate) fn set_env(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) {
        self.env.push((key.into(), value.into()));
    }

    /// Starts the process (stdin closed, stdout and stderr appended to the log file).
    /// Panics if it is already running or cannot be spawned.
    pub(crate) fn spawn(&mut self) {
        assert!(self.child.is_none(), "{}: already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| {
                panic!("{}: cannot open log {}: {e}", self.name, self.log.display())
            });
        self.log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: cannot clone log handle: {e}", self.name));
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "{}: cannot start {}: {e} (scripts/test installs the engines)",
                self.name,
                self.program.display()
            )
        });
        tracing::debug!(name = %self.name, pid = ?child.id(), "engine started");
        self.child = Some(child);
        self.paused.store(false, Ordering::Relaxed);
    }

    /// The running process's id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it runs but is SIGSTOPped.
    pub(crate) fn is_paused(&self) -> bool {
        self.child.is_some() && self.paused.load(Ordering::Relaxed)
    }

    fn signal(&self, sig: Signal) {
        let Some(pid) = self.pid() else {
            panic!("{}: not running, cannot send {sig}", self.name);
        };
        let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        if let Err(e) = signal::kill(pid, sig) {
            panic!("{}: cannot send {sig} to {pid}: {e}", self.name);
        }
    }

    /// SIGSTOP: the process stays alive but answers nothing. Returns once every thread is
    /// stopped (kill(2) returns before a thread running on another core has stopped).
    pub(crate) fn pause(&self) {
        tracing::debug!(name = %self.name, "SIGSTOP");
        self.signal(Signal::SIGSTOP);
        self.paused.store(true, Ordering::Relaxed);
        let Some(pid) = self.pid() else { return };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "{}: still running 5 s after SIGSTOP",
                self.name
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// SIGCONT after [`Proc::pause`].
    pub(crate) fn resume(&self) {
        tracing::debug!(name = %self.name, "SIGCONT");
        self.signal(Signal::SIGCONT);
        self.paused.store(false, Ordering::Relaxed);
    }

    /// SIGTERM (and SIGCONT, in case it is paused), then waits for the exit; SIGKILL after
    /// 10 s. Does nothing if it is not running.
    pub(crate) async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
            let _ = signal::kill(pid, Signal::SIGTERM);
            let _ = signal::kill(pid, Signal::SIGCONT);
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(status) => tracing::debug!(name = %self.name, ?status, "engine stopped"),
            Err(_) => {
                tracing::warn!(name = %self.name, "engine ignored SIGTERM for 10 s; killing it");
                let _ = child.kill().await;
            }
        }
    }

    /// SIGKILL, then reaps it. Does nothing if it is not running.
    pub(crate) async fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.kill().await;
        tracing::debug!(name = %self.name, "engine killed");
    }

    /// `Some(status)` (and forgets the child) if the process has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// This run's output (since the last spawn).
    fn run_log(&self) -> String {
        read_from(&self.log, self.log_start)
    }

    /// The last few KiB of the log file.
    pub(crate) fn log_tail(&self) -> String {
        let len = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        read_from(&self.log, len.saturating_sub(TAIL_BYTES))
    }

    /// Polls `probe` every 25 ms until it returns true. Fails if the process exits (with
    /// [`StartError::AddrInUse`] if its log says a port was taken) or after 30 s.
    pub(crate) async fn wait_ready<F, Fut>(
        &mut self,
        what: &str,
        mut probe: F,
    ) -> Result<(), StartError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        wait_all_ready(&mut [self], what, |_| probe()).await
    }

    /// An error if the process has exited (it was expected to be running).
    fn check_exit(&mut self, what: &str) -> Result<(), StartError> {
        let Some(status) = self.exited() else {
            return Ok(());
        };
        let log = self.run_log();
        let msg = format!(
            "{} ({}) exited before {what}: {status}; log {}:\n{}",
            self.name,
            self.program.display(),
            self.log.display(),
            tail(&log)
        );
        Err(
            if log.to_ascii_lowercase().contains("address already in use") {
                StartError::AddrInUse(msg)
            } else {
                StartError::Failed(msg)
            },
        )
    }
}

/// Polls `probe(i)` for every process `i` every 25 ms until each has returned true once.
/// Fails as soon as one exits (with [`StartError::AddrInUse`] if its log says a port was
/// taken), or after 30 s with the logs of those not ready.
pub(crate) async fn wait_all_ready<F, Fut>(
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
                    "{} ({}) not {what} after {READY_TIMEOUT:?}; log {}:\n{}\n",
                    proc.name,
                    proc.program.display(),
                    proc.log.display(),
                    proc.log_tail()
                ));
            }
            return Err(StartError::Failed(msg));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
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
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }
}

/// Whether every thread of `pid` is in state T (stopped), per /proc.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true; // gone: nothing runs
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).map_or(true, |stat| {
            // "tid (comm) S ...": the state follows the last ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| state == "T" || state == "t" || state == "Z" || state == "X")
        })
    })
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn tail(s: &str) -> &str {
    let max = usize::try_from(TAIL_BYTES).unwrap_or(usize::MAX);
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
