//! [`exclusive`]: one load test at a time on the machine.

use std::fs::File;

use nix::fcntl::{Flock, FlockArg};

/// Held while a test runs alone; dropping it lets the next one go.
#[derive(Debug)]
pub struct Exclusive {
    _lock: Flock<File>,
}

/// Waits until no other test holding an [`Exclusive`] runs, in this process or another.
///
/// Load tests measure traffic shares and latencies on a 2-core machine: two of them at once
/// (nextest runs tests in parallel processes) would disturb each other's numbers. The lock
/// is an `flock` on a file in the temporary directory, released when the guard drops or
/// the process dies.
///
/// # Panics
/// When the lock file cannot be opened or locked.
pub async fn exclusive() -> Exclusive {
    let path = std::env::temp_dir().join("micro-testkit.lock");
    let locked = tokio::task::spawn_blocking(move || {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|err| panic!("cannot open lock file {}: {err}", path.display()));
        Flock::lock(file, FlockArg::LockExclusive)
            .unwrap_or_else(|(_, err)| panic!("cannot lock {}: {err}", path.display()))
    })
    .await;
    match locked {
        Ok(lock) => Exclusive { _lock: lock },
        Err(err) => panic!("locking task failed: {err}"),
    }
}
