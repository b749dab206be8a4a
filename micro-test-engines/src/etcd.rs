//! etcd: one member, or a static cluster of members on 127.0.0.1.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::binary::Binary;
use crate::child::{Proc, StartError};
use crate::{PORT_ATTEMPTS, free_ports, probe, temp_dir};

const ETCD: Binary = Binary {
    name: "etcd",
    env: &["MICRO_ETCD_BIN"],
    venv_first: false,
    installed_as: "Debian's etcd-server",
};

/// A private etcd member: client URL `http://127.0.0.1:PORT`, data directory and log
/// (`etcd.log`) in a temporary directory that is removed on drop.
///
/// The binary is `$MICRO_ETCD_BIN`, else `etcd` on `PATH`. [`EtcdServer::start`] makes a
/// one-member cluster; [`EtcdCluster`] hands out its members as the same type
/// ([`EtcdMember`]).
#[derive(Debug)]
pub struct EtcdServer {
    // Declared before `dir`: the process is killed before its directory is removed.
    proc: Proc,
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
}

/// A member of an [`EtcdCluster`]: the same type as a single [`EtcdServer`].
pub type EtcdMember = EtcdServer;

impl EtcdServer {
    /// Starts a one-member etcd on free ports and waits until `/health` says
    /// `"health":"true"`. Panics with the log's tail if it is not ready within 30 s.
    pub async fn start() -> EtcdServer {
        let mut members = start_members(1, "etcd").await;
        members.remove(0)
    }

    fn new(
        bin: &Path,
        name: &str,
        client_port: u16,
        peer_port: u16,
        cluster: &InitialCluster,
    ) -> EtcdServer {
        let dir = temp_dir(&format!("micro-etcd-{name}-"));
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let data = dir.path().join("data");
        let args: [OsString; 22] = [
            "--name".into(),
            name.into(),
            "--data-dir".into(),
            data.into_os_string(),
            "--listen-client-urls".into(),
            client.clone().into(),
            "--advertise-client-urls".into(),
            client.into(),
            "--listen-peer-urls".into(),
            peer.clone().into(),
            "--initial-advertise-peer-urls".into(),
            peer.into(),
            "--initial-cluster".into(),
            cluster.members.clone().into(),
            "--initial-cluster-state".into(),
            "new".into(),
            "--initial-cluster-token".into(),
            cluster.token.clone().into(),
            "--logger".into(),
            "zap".into(),
            "--log-outputs".into(),
            "stderr".into(),
        ];
        let mut proc = Proc::builder(bin)
            .name(format!("etcd {name}"))
            .log_file(dir.path().join("etcd.log"))
            .args(args);
        // etcd 3.4 refuses to start on architectures other than amd64 (and, from 3.5, arm64)
        // unless told to.
        if let Some(arch) = go_arch() {
            proc = proc.env("ETCD_UNSUPPORTED_ARCH", arch);
        }
        EtcdServer {
            proc: proc.spawn(),
            name: name.to_owned(),
            client_port,
            peer_port,
            dir,
        }
    }

    /// `127.0.0.1:PORT`, the form etcd-client takes.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:PORT`, the client URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The peer port (`http://127.0.0.1:PEER_PORT`).
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// The member's name (`m0`, `m1`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The data directory (kept across stop and restart, removed on drop).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The log file (everything etcd printed, across restarts).
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

    /// SIGTERM, then waits for the exit (SIGKILL after 10 s). The data directory is kept.
    pub async fn stop(&mut self) {
        self.proc.stop().await;
    }

    /// SIGKILL, then reaps the process. The data directory is kept.
    pub async fn kill(&mut self) {
        self.proc.kill().await;
    }

    /// Starts the stopped or killed member again on the same ports and data directory, and
    /// waits until it is healthy. A cluster member is healthy only with a quorum running.
    /// Panics if it is still running, or with the log's tail if it is not ready in 30 s.
    pub async fn restart(&mut self) {
        self.proc.respawn();
        if let Err(e) = self.wait_healthy().await {
            panic!("etcd restart failed: {e}");
        }
    }

    /// SIGSTOP: the member keeps its sockets but answers nothing until [`EtcdServer::resume`].
    pub fn pause(&self) {
        self.proc.pause();
    }

    /// SIGCONT after [`EtcdServer::pause`].
    pub fn resume(&self) {
        self.proc.resume();
    }

    /// Whether `/health` answers `"health":"true"` now.
    pub async fn is_healthy(&self) -> bool {
        healthy(self.client_port).await
    }

    async fn wait_healthy(&mut self) -> Result<(), StartError> {
        let port = self.client_port;
        self.proc.wait_ready("healthy", || healthy(port)).await
    }
}

async fn healthy(port: u16) -> bool {
    match probe::http(&format!("127.0.0.1:{port}"), "GET", "/health", None).await {
        Ok(r) => r.status == 200 && r.body.replace(' ', "").contains("\"health\":\"true\""),
        Err(_) => false,
    }
}

/// `--initial-cluster` and `--initial-cluster-token`, shared by all members.
struct InitialCluster {
    members: String,
    token: String,
}

/// Starts `n` members `m0..` with a static initial cluster, waits until all are healthy;
/// picks new ports and retries on "address already in use".
async fn start_members(n: usize, what: &str) -> Vec<EtcdServer> {
    assert!(n > 0, "an etcd cluster needs at least one member");
    let bin = ETCD.find();
    let mut last = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let ports = free_ports(2 * n);
        let initial_cluster = InitialCluster {
            members: (0..n)
                .map(|i| format!("m{i}=http://127.0.0.1:{}", ports[2 * i + 1]))
                .collect::<Vec<_>>()
                .join(","),
            // The same for every member, distinct from other clusters on this machine.
            token: format!("micro-test-{}", ports[1]),
        };
        let mut members: Vec<EtcdServer> = (0..n)
            .map(|i| {
                EtcdServer::new(
                    &bin,
                    &format!("m{i}"),
                    ports[2 * i],
                    ports[2 * i + 1],
                    &initial_cluster,
                )
            })
            .collect();
        let client_ports: Vec<u16> = members.iter().map(|m| m.client_port).collect();
        let mut procs: Vec<&mut Proc> = members.iter_mut().map(|m| &mut m.proc).collect();
        match Proc::wait_all_ready(&mut procs, "healthy", |i| healthy(client_ports[i])).await {
            Ok(()) => {
                tracing::info!(what, endpoints = ?client_ports, "etcd ready");
                return members;
            }
            Err(StartError::AddrInUse(msg)) => {
                tracing::debug!(what, "etcd port taken, retrying on other ports: {msg}");
                last = msg;
            }
            Err(StartError::Failed(msg)) => panic!("{what} did not start: {msg}"),
        }
    }
    panic!("{what} did not start: ports taken {PORT_ATTEMPTS} times; last: {last}");
}

/// etcd's name for this architecture, where etcd 3.4 needs `ETCD_UNSUPPORTED_ARCH`.
fn go_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => None,
        "aarch64" => Some("arm64"),
        "x86" => Some("386"),
        "powerpc64" => Some("ppc64le"),
        other => Some(other),
    }
}

/// A static etcd cluster of `n` members (`m0`, `m1`, …) on distinct 127.0.0.1 ports, each
/// in its own temporary directory.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Starts `n` members together and waits until every one is healthy (a leader is
    /// elected). Panics with the logs' tails if not ready within 30 s.
    pub async fn start(n: usize) -> EtcdCluster {
        EtcdCluster {
            members: start_members(n, "etcd cluster").await,
        }
    }

    /// Every member's `127.0.0.1:PORT`, for etcd-client.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::endpoint).collect()
    }

    /// Every member's `http://127.0.0.1:PORT`.
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::url).collect()
    }

    /// Member `i`, to stop, restart, kill, pause or resume. Panics if out of range.
    pub fn member(&mut self, i: usize) -> &mut EtcdMember {
        let n = self.members.len();
        self.members
            .get_mut(i)
            .unwrap_or_else(|| panic!("etcd cluster has {n} members, no member {i}"))
    }

    /// Waits until every running, unpaused member is healthy: after a member was killed,
    /// stopped or paused, the others may be electing a new leader and refuse requests
    /// ("leader changed") for a moment. Panics with the logs' tails after 30 s.
    pub async fn wait_healthy(&mut self) {
        let ports: Vec<u16> = self
            .members
            .iter()
            .filter(|m| m.is_running() && !m.is_paused())
            .map(|m| m.client_port)
            .collect();
        let mut procs: Vec<&mut Proc> = self
            .members
            .iter_mut()
            .filter(|m| m.proc.is_running() && !m.proc.is_paused())
            .map(|m| &mut m.proc)
            .collect();
        if let Err(e) = Proc::wait_all_ready(&mut procs, "healthy", |i| healthy(ports[i])).await {
            panic!("etcd cluster not healthy: {e}");
        }
    }

    /// All members.
    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// How many members the cluster has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no member (never, once started).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}
