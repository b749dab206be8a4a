//! Where a child's output goes: piped to the test (stdout read line by line, stderr echoed
//! and kept), or appended to a log file that outlives restarts (engines). Either way the end
//! of it is at hand for a failure message.

use std::{
    collections::VecDeque,
    fmt,
    fs::{File, OpenOptions},
    io::{self, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout},
};

/// How many lines of a piped child's output are kept to show when a test fails.
const KEPT_LINES: usize = 200;
/// How many bytes of a log file a failure message shows.
const TAIL_BYTES: u64 = 4096;

/// A child's output, by where it goes.
pub(super) enum Output {
    /// Both streams piped: stdout is read by the test, stderr in the background.
    Piped {
        /// The current run's stdout, once spawned.
        stdout: Option<Lines<BufReader<ChildStdout>>>,
        /// The last lines of both streams, oldest first, shared with the stderr reader.
        kept: Arc<Mutex<VecDeque<String>>>,
    },
    /// Both streams appended to a file, across restarts.
    Log {
        path: PathBuf,
        /// Where the current run's output starts in the file.
        start: u64,
    },
}

// === impl Output ===

impl Output {
    pub(super) fn piped() -> Self {
        Output::Piped {
            stdout: None,
            kept: Arc::default(),
        }
    }

    pub(super) fn log(path: PathBuf) -> Self {
        Output::Log { path, start: 0 }
    }

    /// stdout and stderr for the next run.
    pub(super) fn stdio(&mut self) -> io::Result<(Stdio, Stdio)> {
        match self {
            Output::Piped { kept, .. } => {
                lock(kept).clear();
                Ok((Stdio::piped(), Stdio::piped()))
            }
            Output::Log { path, start } => {
                let log = OpenOptions::new().create(true).append(true).open(&*path)?;
                *start = log.metadata()?.len();
                let err = log.try_clone()?;
                Ok((Stdio::from(log), Stdio::from(err)))
            }
        }
    }

    /// Takes over a just-spawned child's pipes: stdout for [`Output::stdout`], stderr
    /// echoed through `eprintln!` (the test harness captures it) with `prefix`, and kept.
    pub(super) fn attach(&mut self, child: &mut Child, prefix: String) {
        let Output::Piped { stdout, kept } = self else {
            return;
        };
        *stdout = child.stdout.take().map(|out| BufReader::new(out).lines());
        if let Some(stderr) = child.stderr.take() {
            let kept = Arc::clone(kept);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("{prefix} {line}");
                    keep(&kept, format!("stderr: {line}"));
                }
            });
        }
    }

    /// The current run's stdout, when piped.
    pub(super) fn stdout(&mut self) -> Option<&mut Lines<BufReader<ChildStdout>>> {
        match self {
            Output::Piped { stdout, .. } => stdout.as_mut(),
            Output::Log { .. } => None,
        }
    }

    /// Hands the current run's stdout over, when piped and not handed over yet.
    pub(super) fn take_stdout(&mut self) -> Option<Lines<BufReader<ChildStdout>>> {
        match self {
            Output::Piped { stdout, .. } => stdout.take(),
            Output::Log { .. } => None,
        }
    }

    /// Keeps a stdout line the test read, for failure messages.
    pub(super) fn kept_stdout(&self, line: &str) {
        if let Output::Piped { kept, .. } = self {
            keep(kept, format!("stdout: {line}"));
        }
    }

    /// What the current run printed (a log file: since the last spawn).
    pub(super) fn this_run(&self) -> String {
        match self {
            Output::Piped { kept, .. } => joined(kept),
            Output::Log { path, start } => read_from(path, *start),
        }
    }

    /// The end of everything printed (a log file: across restarts).
    pub(super) fn tail(&self) -> String {
        match self {
            Output::Piped { kept, .. } => joined(kept),
            Output::Log { path, .. } => {
                let len = std::fs::metadata(path).map_or(0, |m| m.len());
                read_from(path, len.saturating_sub(TAIL_BYTES))
            }
        }
    }

    /// The log file, when the output goes to one.
    pub(super) fn log_path(&self) -> Option<&Path> {
        match self {
            Output::Piped { .. } => None,
            Output::Log { path, .. } => Some(path),
        }
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Piped { .. } => f.write_str("Piped"),
            Output::Log { path, .. } => f.debug_tuple("Log").field(path).finish(),
        }
    }
}

/// Locks `mutex`, also after a panicking holder poisoned it: each push or read of the kept
/// lines is one call, so they stay whole, and a test that already failed still shows them.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn keep(kept: &Mutex<VecDeque<String>>, line: String) {
    let mut kept = lock(kept);
    if kept.len() == KEPT_LINES {
        kept.pop_front();
    }
    kept.push_back(line);
}

fn joined(kept: &Mutex<VecDeque<String>>) -> String {
    let kept = lock(kept);
    let lines: Vec<&str> = kept.iter().map(String::as_str).collect();
    lines.join("\n")
}

/// The last few KiB of `s`, cut at a character boundary.
pub(super) fn last_bytes(s: &str) -> &str {
    let max = usize::try_from(TAIL_BYTES).unwrap_or(usize::MAX);
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// The file from `offset` on (invalid UTF-8 replaced); empty when unreadable.
fn read_from(path: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() {
        let kept = Mutex::new(VecDeque::new());
        for i in 0..KEPT_LINES + 3 {
            keep(&kept, format!("line {i}"));
        }
        let text = joined(&kept);
        assert!(text.starts_with("line 3\n"), "{text}");
        assert!(
            text.ends_with(&format!("line {}", KEPT_LINES + 2)),
            "{text}"
        );
    }

    #[test]
    fn a_poisoned_lock_still_shows_the_lines() {
        let kept = Arc::new(Mutex::new(VecDeque::new()));
        keep(&kept, "before".into());
        let poisoner = Arc::clone(&kept);
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock();
            panic!("poison the lock");
        })
        .join();
        assert!(kept.is_poisoned());
        keep(&kept, "after".into());
        assert_eq!(joined(&kept), "before\nafter");
    }

    #[test]
    fn a_log_run_starts_at_its_spawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.log");
        std::fs::write(&path, "first run\n").unwrap();
        let mut output = Output::log(path.clone());
        let _stdio = output.stdio().unwrap();
        std::fs::write(&path, "first run\nsecond run\n").unwrap();
        assert_eq!(output.this_run(), "second run\n");
        assert_eq!(output.tail(), "first run\nsecond run\n");
        assert_eq!(output.log_path(), Some(path.as_path()));
    }
}
