//! memcached: one server.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::binary::Binary;
use crate::child::{Proc, StartError};
use crate::{PORT_ATTEMPTS, free_ports, probe, temp_dir};

const MEMCACHED: Binary = Binary {
    name: "memcached",
    env: &["MICRO_MEMCACHED_BIN"],
    venv_first: false,
    installed_as: "Debian's memcached",
};

/// A private memcached on `127.0.0.1:PORT` (TCP only, 64 MB), its log (`memcached.log`) in a
/// temporary directory that is removed on drop. A restart starts empty. Run as root (as in CI
/// containers), it is told to stay root (`-u root`), which memcached otherwise refuses.
///
/// The binary is `$MICRO_MEMCACHED_BIN`, else `memcached` on `PATH`.
#[derive(Debug)]
pub struct MemcachedServer {
    // Declared before `dir`: the process is killed before its directory is removed.
    proc: Proc,
    port: u16,
    dir: TempDir,
}

impl MemcachedServer {
    /// Starts memcached on a free port and waits until `version` answers `VERSION …`.
    /// Panics with the log's tail if not ready within 30 s.
    pub async fn start() -> MemcachedServer {
        let bin = MEMCACHED.find();
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_ports(1)[0];
            let mut server = MemcachedServer::new(&bin, port);
            match server.wait_ready().await {
                Ok(()) => {
                    tracing::info!(port, "memcached ready");
                    return server;
                }
                Err(StartError::AddrInUse(msg)) => {
                    tracing::debug!("memcached port taken, retrying on another port: {msg}");
                    last = msg;
                }
                Err(StartError::Failed(msg)) => panic!("memcached did not start: {msg}"),
            }
        }
        panic!("memcached did not start: ports taken {PORT_ATTEMPTS} times; last: {last}");
    }

    fn new(bin: &Path, port: u16) -> MemcachedServer {
        let dir = temp_dir("micro-memcached-");
        let mut args: Vec<std::ffi::OsString> = vec![
            "--listen=127.0.0.1".into(),
            format!("--port={port}").into(),
            "--udp-port=0".into(),
            "--memory-limit=64".into(),
        ];
        if nix::unistd::Uid::effective().is_root() {
            args.push("--user=root".into());
        }
        let proc = Proc::builder(bin)
            .name("memcached")
            .log_file(dir.path().join("memcached.log"))
            .args(args)
            .spawn();
        MemcachedServer { proc, port, dir }
    }

    /// `memcached://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("memcached://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The working directory.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The log file (everything memcached printed, across restarts).
    pub fn log_path(&self) -> &Path {
        self.proc.log_path().unwrap_or(self.dir.path())
    }

    /// The last few KiB of the log.
    pub fn log_tail(&self) -> String {
        self.proc.tail()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.id()
    }

    /// Whether the process runs (it may be paused).
    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }

    /// Whether the process runs but is paused (SIGSTOP without SIGCONT since).
    pub fn is_paused(&self) -> bool {
        self.proc.is_paused()
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 10 s).
    pub async fn stop(&mut self) {
        self.proc.stop().await;
    }

    /// SIGKILL, then reaps the process.
    pub async fn kill(&mut self) {
        self.proc.kill().await;
    }

    /// Starts the stopped or killed server again on the same port (empty: nothing is
    /// persisted) and waits for `VERSION`. Panics if it is still running, or with the log's
    /// tail if it is not ready in 30 s.
    pub async fn restart(&mut self) {
        self.proc.respawn();
        if let Err(e) = self.wait_ready().await {
            panic!("memcached restart failed: {e}");
        }
    }

    /// SIGSTOP: the server keeps its socket but answers nothing until
    /// [`MemcachedServer::resume`].
    pub fn pause(&self) {
        self.proc.pause();
    }

    /// SIGCONT after [`MemcachedServer::pause`].
    pub fn resume(&self) {
        self.proc.resume();
    }

    async fn wait_ready(&mut self) -> Result<(), StartError> {
        let addr = self.addr();
        self.proc
            .wait_ready("answering version", || {
                let addr = addr.clone();
                async move { probe::memcached_version(&addr).await.is_ok() }
            })
            .await
    }
}
