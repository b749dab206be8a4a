//! [`Cluster`]: `micro-testsrv` processes on a private local registry.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::StreamExt;
use micro::registry::{SharedRegistry, WatchOptions};

use crate::{
    control::ControlClient,
    process::{Proc, Ready, RegistryDir},
};

/// The registration TTL of cluster nodes: a killed node leaves the registry this long
/// after its last heartbeat.
pub const TTL: Duration = Duration::from_secs(3);
/// How often cluster nodes renew their registration.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How long a node may take to exit after SIGTERM (its grace period is 10 s).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`Cluster::wait_registered`] waits.
const REGISTERED_TIMEOUT: Duration = Duration::from_secs(15);

/// The service name of nodes started by [`Cluster::start`].
pub const DEFAULT_SERVICE: &str = "probe";

/// Server processes sharing one private registry, stopped when dropped.
///
/// Nodes are numbered in start order across services; a killed or terminated node keeps
/// its number (its slot is empty until [`Cluster::restart`]).
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    registry: RegistryDir,
    work: tempfile::TempDir,
    nodes: Vec<Slot>,
    starts: usize,
}

#[derive(Debug)]
struct Slot {
    service: String,
    ready: Ready,
    proc: Option<Proc>,
}

impl Cluster {
    /// An empty cluster running `bin` (pass `env!("CARGO_BIN_EXE_micro-testsrv")`).
    ///
    /// # Panics
    /// When no temporary directory can be made.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            registry: RegistryDir::new(),
            work: tempfile::tempdir()
                .unwrap_or_else(|err| panic!("cannot make a work directory: {err}")),
            nodes: Vec::new(),
            starts: 0,
        }
    }

    /// `n` nodes of [`DEFAULT_SERVICE`], all ready and visible in the registry.
    pub async fn start(bin: impl Into<PathBuf>, n: usize) -> Self {
        let mut cluster = Self::new(bin);
        cluster.spawn(DEFAULT_SERVICE, n).await;
        cluster.wait_registered(DEFAULT_SERVICE, n).await;
        cluster
    }

    /// Starts `n` nodes of `service` at once and waits for all their ready lines (a node
    /// prints it after its first registration). Returns their numbers.
    pub async fn spawn(&mut self, service: &str, n: usize) -> Vec<usize> {
        let mut procs: Vec<Proc> = (0..n).map(|_| self.launch(service)).collect();
        let mut numbers = Vec::with_capacity(n);
        for mut proc in procs.drain(..) {
            let ready = proc.ready().await;
            numbers.push(self.nodes.len());
            self.nodes.push(Slot {
                service: service.to_owned(),
                ready,
                proc: Some(proc),
            });
        }
        numbers
    }

    fn launch(&mut self, service: &str) -> Proc {
        self.starts += 1;
        let journal = self
            .work
            .path()
            .join(format!("count-{}.journal", self.starts));
        let journal = journal.to_string_lossy().into_owned();
        Proc::spawn(
            &self.bin,
            &["--name", service, "--journal", &journal],
            &[
                ("MICRO_REGISTRY", self.registry.url()),
                ("MICRO_REGISTER_TTL", "3s"),
                ("MICRO_REGISTER_INTERVAL", "1s"),
            ],
        )
    }

    /// The ready line of node `i` (for a stopped node: of its last run).
    ///
    /// # Panics
    /// When there is no node `i`.
    pub fn node(&self, i: usize) -> &Ready {
        &self.slot(i).ready
    }

    /// Every node's ready line, by number.
    pub fn nodes(&self) -> Vec<Ready> {
        self.nodes.iter().map(|slot| slot.ready.clone()).collect()
    }

    /// The process of node `i`, for signals such as SIGSTOP.
    ///
    /// # Panics
    /// When node `i` is not running.
    pub fn proc(&mut self, i: usize) -> &mut Proc {
        self.nodes
            .get_mut(i)
            .and_then(|slot| slot.proc.as_mut())
            .unwrap_or_else(|| panic!("node {i} is not running"))
    }

    fn slot(&self, i: usize) -> &Slot {
        self.nodes
            .get(i)
            .unwrap_or_else(|| panic!("no node {i}: the cluster has {}", self.nodes.len()))
    }

    /// `kill -9` node `i` and reap it; it stays in the registry until its TTL expires.
    pub async fn kill(&mut self, i: usize) -> Ready {
        self.proc(i).kill().await;
        self.nodes[i].proc = None;
        self.nodes[i].ready.clone()
    }

    /// SIGTERM node `i` and wait for its graceful exit with status 0.
    pub async fn terminate(&mut self, i: usize) -> Ready {
        self.proc(i).terminate(EXIT_TIMEOUT).await;
        self.nodes[i].proc = None;
        self.nodes[i].ready.clone()
    }

    /// Starts node `i` again (after SIGTERM and a graceful exit when it is running), as
    /// the same service; it gets a new node id and address. Returns its ready line.
    pub async fn restart(&mut self, i: usize) -> Ready {
        if self.slot(i).proc.is_some() {
            self.terminate(i).await;
        }
        let service = self.slot(i).service.clone();
        let mut proc = self.launch(&service);
        let ready = proc.ready().await;
        self.nodes[i] = Slot {
            service,
            ready: ready.clone(),
            proc: Some(proc),
        };
        ready
    }

    /// The registry URL the nodes use.
    pub fn registry_url(&self) -> &str {
        self.registry.url()
    }

    /// A handle on the cluster's registry.
    pub fn registry(&self) -> SharedRegistry {
        self.registry.registry()
    }

    /// A micro client with default settings on the cluster's registry.
    pub fn client(&self) -> micro::Client {
        micro::Client::new(self.registry())
    }

    /// A client builder with the cluster's registry set.
    pub fn client_builder(&self) -> micro::ClientBuilder {
        micro::Client::builder().registry(self.registry())
    }

    /// A direct control client on node `i`.
    pub async fn control(&self, i: usize) -> ControlClient {
        ControlClient::connect(&self.node(i).addr).await
    }

    /// Waits, through a registry watch, until `service` has exactly `n` nodes.
    ///
    /// # Panics
    /// After 15 s, naming the nodes registered then.
    pub async fn wait_registered(&self, service: &str, n: usize) {
        let registry = self.registry();
        let mut watch = registry
            .watch(WatchOptions {
                service: Some(service.to_owned()),
            })
            .await
            .unwrap_or_else(|err| panic!("cannot watch registry: {err}"));
        let deadline = tokio::time::Instant::now() + REGISTERED_TIMEOUT;
        loop {
            let nodes = registered(&registry, service).await;
            if nodes.len() == n {
                return;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, watch.next()).await {
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(err))) => panic!("registry watch failed: {err}"),
                Ok(None) => panic!("registry watch ended"),
                Err(_) => panic!(
                    "service {service} has nodes {nodes:?} after {REGISTERED_TIMEOUT:?}, expected {n}"
                ),
            }
        }
    }

    /// How often each Count id was executed across every node this cluster ever ran,
    /// killed ones included (each node appends executed ids to its journal).
    pub fn executions(&self) -> HashMap<String, u32> {
        let mut executions = HashMap::new();
        for journal in journals(self.work.path()) {
            let text = std::fs::read_to_string(&journal)
                .unwrap_or_else(|err| panic!("cannot read journal {}: {err}", journal.display()));
            for id in text.lines() {
                *executions.entry(id.to_owned()).or_insert(0) += 1;
            }
        }
        executions
    }
}

async fn registered(registry: &SharedRegistry, service: &str) -> Vec<String> {
    registry
        .get_service(service)
        .await
        .unwrap_or_else(|err| panic!("cannot read service {service} from the registry: {err}"))
        .into_iter()
        .flat_map(|record| record.nodes)
        .map(|node| node.id)
        .collect()
}

fn journals(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "journal"))
                .collect()
        })
        .unwrap_or_default()
}
