//! Redis: one server without persistence.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::binary::Binary;
use crate::child::{Proc, StartError};
use crate::{PORT_ATTEMPTS, free_ports, probe, temp_dir};

const REDIS: Binary = Binary {
    name: "redis-server",
    env: &["MICRO_REDIS_SERVER_BIN"],
    venv_first: false,
    installed_as: "Debian's redis-server",
};

/// A private redis-server on `127.0.0.1:PORT` without persistence (`--save ""
/// --appendonly no`), working directory and log (`redis.log`) in a temporary directory
/// that is removed on drop. A restart starts empty.
///
/// The binary is `$MICRO_REDIS_SERVER_BIN`, else `redis-server` on `PATH`.
#[derive(Debug)]
pub struct RedisServer {
    // Declared before `dir`: the process is killed before its directory is removed.
    proc: Proc,
    port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// Starts redis-server on a free port and waits until `PING` answers `+PONG`. Panics
    /// with the log's tail if not ready within 30 s.
    pub async fn start() -> RedisServer {
        let bin = REDIS.find();
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_ports(1)[0];
            let mut server = RedisServer::new(&bin, port);
            match server.wait_ready().await {
                Ok(()) => {
                    tracing::info!(port, "redis ready");
                    return server;
                }
                Err(StartError::AddrInUse(msg)) => {
                    tracing::debug!("redis port taken, retrying on another port: {msg}");
                    last = msg;
                }
                Err(StartError::Failed(msg)) => panic!("redis did not start: {msg}"),
            }
        }
        panic!("redis did not start: ports taken {PORT_ATTEMPTS} times; last: {last}");
    }

    fn new(bin: &Path, port: u16) -> RedisServer {
        let dir = temp_dir("micro-redis-");
        let args: [OsString; 14] = [
            "--port".into(),
            port.to_string().into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
            "--dir".into(),
            dir.path().as_os_str().to_owned(),
            "--logfile".into(),
            "".into(),
        ];
        let proc = Proc::builder(bin)
            .name("redis")
            .log_file(dir.path().join("redis.log"))
            .args(args)
            .spawn();
        RedisServer { proc, port, dir }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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

    /// The log file (everything redis-server printed, across restarts).
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
    /// persisted) and waits for `+PONG`. Panics if it is still running, or with the log's
    /// tail if it is not ready in 30 s.
    pub async fn restart(&mut self) {
        self.proc.respawn();
        if let Err(e) = self.wait_ready().await {
            panic!("redis restart failed: {e}");
        }
    }

    /// SIGSTOP: the server keeps its socket but answers nothing until
    /// [`RedisServer::resume`].
    pub fn pause(&self) {
        self.proc.pause();
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.proc.resume();
    }

    async fn wait_ready(&mut self) -> Result<(), StartError> {
        let addr = self.addr();
        self.proc
            .wait_ready("answering PING", || {
                let addr = addr.clone();
                async move { probe::redis_ping(&addr).await.is_ok() }
            })
            .await
    }
}
