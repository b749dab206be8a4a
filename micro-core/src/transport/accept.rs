//! Accepting: errors about one connection are skipped; others (out of file descriptors)
//! back off exponentially and are logged once per burst, with a count.

use std::{io, time::Duration};

use tokio::time::Instant;

/// The first pause after an accept error, doubled per further error (Go's `net/http`).
const MIN_BACKOFF: Duration = Duration::from_millis(5);
/// The longest pause between accepts while they fail.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// While accepts keep failing, a reminder at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Accept failures since the last success: the pause before the next try, and what to log.
#[derive(Debug, Default)]
pub(crate) struct AcceptErrors {
    burst: Option<Burst>,
}

#[derive(Debug)]
struct Burst {
    since: Instant,
    failures: u64,
    reported: Instant,
    backoff: Duration,
}

/// A line to log about accept failures.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// The first failure after a success.
    Started,
    /// Failures go on: this many since the burst started.
    Ongoing { failures: u64 },
    /// Accepting again after this many failures over this long.
    Ended { failures: u64, lasted: Duration },
}

// === impl AcceptErrors ===

impl AcceptErrors {
    /// An accept failed at `now`: how long to pause, and what to log if anything.
    pub(crate) fn failed(&mut self, now: Instant) -> (Duration, Option<Report>) {
        match &mut self.burst {
            None => {
                self.burst = Some(Burst {
                    since: now,
                    failures: 1,
                    reported: now,
                    backoff: MIN_BACKOFF,
                });
                (MIN_BACKOFF, Some(Report::Started))
            }
            Some(burst) => {
                burst.failures += 1;
                burst.backoff = (burst.backoff * 2).min(MAX_BACKOFF);
                let report = (now.duration_since(burst.reported) >= REPORT_EVERY).then(|| {
                    burst.reported = now;
                    Report::Ongoing {
                        failures: burst.failures,
                    }
                });
                (burst.backoff, report)
            }
        }
    }

    /// An accept succeeded at `now`: ends a burst of failures.
    pub(crate) fn accepted(&mut self, now: Instant) -> Option<Report> {
        self.burst.take().map(|burst| Report::Ended {
            failures: burst.failures,
            lasted: now.duration_since(burst.since),
        })
    }
}

/// Logs `report` about `error` (the latest failure) on `listener`.
pub(crate) fn log(report: Report, listener: &str, error: Option<&io::Error>) {
    let error = error.map(ToString::to_string).unwrap_or_default();
    match report {
        Report::Started => tracing::warn!(
            %listener,
            %error,
            "cannot accept connections; backing off (up to 1 s), further failures are counted"
        ),
        Report::Ongoing { failures } => tracing::warn!(
            %listener,
            %error,
            failures,
            "still cannot accept connections"
        ),
        Report::Ended { failures, lasted } => tracing::warn!(
            %listener,
            failures,
            ?lasted,
            "accepting connections again"
        ),
    }
}

/// Errors about one connection (reset before it was accepted): the next accept is fine.
pub(crate) fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Out of file descriptors, in the process (EMFILE) or the system (ENFILE).
pub(crate) fn is_out_of_files(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_failures_logs_a_few_lines_and_backs_off() {
        let mut errors = AcceptErrors::default();
        let mut reports = Vec::new();
        let mut pauses = Vec::new();
        // 10,000 failures, each after the pause asked for: about a minute at 1 s each.
        for _ in 0..100 {
            let (pause, report) = errors.failed(Instant::now());
            reports.extend(report);
            pauses.push(pause);
            tokio::time::advance(pause).await;
        }
        assert_eq!(pauses[0], MIN_BACKOFF);
        assert_eq!(pauses[1], MIN_BACKOFF * 2);
        assert_eq!(*pauses.last().unwrap(), MAX_BACKOFF);
        let lasted = pauses.iter().sum::<Duration>();
        assert_eq!(reports[0], Report::Started);
        // One reminder per 10 s of failing, no more.
        let ongoing = reports.len() as u64 - 1;
        assert!(
            ongoing <= lasted.as_secs() / 10 && ongoing >= lasted.as_secs() / 10 - 1,
            "{reports:?} over {lasted:?}"
        );
        match errors.accepted(Instant::now()) {
            Some(Report::Ended { failures, .. }) => assert_eq!(failures, 100),
            other => panic!("{other:?}"),
        }
        assert_eq!(errors.accepted(Instant::now()), None);
        assert_eq!(errors.failed(Instant::now()).0, MIN_BACKOFF, "a new burst");
    }

    #[test]
    fn out_of_files_is_recognised() {
        assert!(is_out_of_files(&io::Error::from_raw_os_error(
            nix::libc::EMFILE
        )));
        assert!(is_out_of_files(&io::Error::from_raw_os_error(
            nix::libc::ENFILE
        )));
        assert!(!is_out_of_files(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        assert!(is_connection_error(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
    }
}
