//! The zero-config path at rest and under a steady stream of calls: the `local` registry's
//! watch reacts to real changes only, so idle processes use no CPU and warm clients read no
//! registry files.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    time::Duration,
};

use notify::{
    EventKind, RecursiveMode, Watcher as _,
    event::{AccessKind, CreateKind},
};
use support::{Proc, READY_TIMEOUT, RegistryDir, example_bin, server::MicroServer};

/// CPU time (user + system, all threads) process `pid` has used so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process stat");
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15.
    let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .expect("CLK_TCK");
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// The README's first command plus a service and a client, all on the `local` registry and
/// left alone: none of them may keep a core busy. (The watch used to react to its own
/// reads: each rescan opened the records, each open triggered the next rescan, in every
/// process watching the directory, 1.75 cores for `micro server` alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_processes_use_no_cpu() {
    let registry = RegistryDir::new();
    let server = MicroServer::builder()
        .registry(&registry)
        .api()
        .start()
        .await;
    let mut greeter = Proc::spawn(
        &example_bin("greeter-server"),
        &[],
        &[
            ("MICRO_REGISTRY", registry.url()),
            ("MICRO_SERVER_ADDRESS", "127.0.0.1:0"),
        ],
    );
    greeter.ready().await;
    // A client following the registry, calling once a second.
    let mut client = Proc::spawn(
        &example_bin("greeter-client"),
        &["--count", "0", "--interval-ms", "1000"],
        &[("MICRO_REGISTRY", registry.url())],
    );
    let first = client.next_line(READY_TIMEOUT).await;
    assert!(first.starts_with("ok "), "{first}");

    let processes = [
        ("micro server", server.process.pid().as_raw()),
        ("greeter-server", greeter.pid().as_raw()),
        ("greeter-client", client.pid().as_raw()),
    ];
    // Past startup's own work (schema preloading, first lookups).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<Duration> = processes.iter().map(|&(_, pid)| cpu_time(pid)).collect();
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    for (&(name, pid), before) in processes.iter().zip(before) {
        let used = cpu_time(pid).saturating_sub(before);
        let cores = used.as_secs_f64() / elapsed.as_secs_f64();
        // A busy loop shows as most of a core; an idle process as a few ms.
        assert!(
            cores < 0.1,
            "{name} used {used:?} of CPU in {elapsed:?} ({cores:.2} cores) while idle"
        );
    }
}

/// Every event under a directory, in order, as a test-side inotify watch sees them.
struct DirEvents {
    root: PathBuf,
    events: mpsc::Receiver<notify::Event>,
    _watcher: notify::RecommendedWatcher,
    syncs: u32,
}

impl DirEvents {
    fn watch(root: &Path) -> Self {
        let (tx, events) = mpsc::channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let _ = tx.send(event.expect("inotify event"));
            })
            .unwrap();
        watcher.watch(root, RecursiveMode::Recursive).unwrap();
        Self {
            root: root.to_owned(),
            events,
            _watcher: watcher,
            syncs: 0,
        }
    }

    /// Creates a marker file and returns every event up to its creation: events from one
    /// inotify instance arrive in order, so nothing that happened before is still to come.
    fn sync(&mut self) -> Vec<notify::Event> {
        self.syncs += 1;
        let marker = self.root.join(format!(".sync-{}", self.syncs));
        std::fs::write(&marker, b"").unwrap();
        let mut seen = Vec::new();
        loop {
            let event = self
                .events
                .recv_timeout(READY_TIMEOUT)
                .expect("the marker's event never came");
            if matches!(
                event.kind,
                EventKind::Create(CreateKind::File | CreateKind::Any)
            ) && event.paths.contains(&marker)
            {
                return seen;
            }
            seen.push(event);
        }
    }
}

/// Opens of node records (`*.json`) among `events`.
fn record_opens(events: &[notify::Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Access(AccessKind::Open(_))))
        .flat_map(|e| &e.paths)
        .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
        .count()
}

/// A client in another process, past its first lookup, makes hundreds of calls without
/// opening a single registry file: lookups are served from memory between real changes.
/// (It used to open the records more than once per call.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_client_reads_no_registry_files() {
    let registry = RegistryDir::new();
    // No heartbeat during the test: a re-registration is a real change, read by everyone.
    let mut greeter = Proc::spawn(
        &example_bin("greeter-server"),
        &[],
        &[
            ("MICRO_REGISTRY", registry.url()),
            ("MICRO_SERVER_ADDRESS", "127.0.0.1:0"),
            ("MICRO_REGISTER_TTL", "3h"),
            ("MICRO_REGISTER_INTERVAL", "1h"),
        ],
    );
    greeter.ready().await;
    let mut events = DirEvents::watch(registry.path());
    let mut client = Proc::spawn(
        &example_bin("greeter-client"),
        &["--count", "0", "--interval-ms", "2"],
        &[("MICRO_REGISTRY", registry.url())],
    );
    let first = client.next_line(READY_TIMEOUT).await;
    assert!(first.starts_with("ok "), "{first}");
    let warmup = events.sync();
    assert!(
        record_opens(&warmup) > 0,
        "the test's watch must see the client's first lookup"
    );

    const CALLS: usize = 500;
    for _ in 0..CALLS {
        let line = client.next_line(READY_TIMEOUT).await;
        assert!(line.starts_with("ok "), "{line}");
    }
    let during = events.sync();
    let opens = record_opens(&during);
    assert_eq!(
        opens,
        0,
        "{opens} registry record opens during {CALLS} calls, the first: {:?}",
        during
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Access(AccessKind::Open(_))))
            .take(5)
            .collect::<Vec<_>>()
    );
}

/// Threads and resident memory of process `pid`, from /proc.
fn threads_and_rss(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("Threads:"), field("VmRSS:") * 1024)
}

/// A FIFO and a symlink to `/dev/zero` as node records: `micro services` answers, and
/// `micro server` answers hundreds of ListServices calls without piling up threads or
/// memory, and keeps serving kv writes. (The FIFO used to hang every reader and take the
/// server to 516 threads; `/dev/zero` took it to 3.3 GB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_registry_entries_never_hang_the_platform() {
    use futures_util::StreamExt;
    use micro::registry::Registry;

    let registry = RegistryDir::new();
    let evil = registry.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    nix::unistd::mkfifo(&evil.join("n.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink("/dev/zero", evil.join("zero.json")).unwrap();
    let server = MicroServer::builder().registry(&registry).start().await;

    let (code, out, err) = server.micro(&["services"], &[], None).await;
    assert_eq!(code, 0, "micro services failed: {err}");
    assert!(out.contains("micro.kv"), "{out}");
    assert!(!out.contains("evil"), "{out}");

    let client = micro::platform::registry::RegistryClient::connect(&server.addr).unwrap();
    let calls = futures_util::stream::iter(0..600)
        .map(|_| {
            let client = client.clone();
            async move { client.list_services().await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>();
    let results = tokio::time::timeout(Duration::from_secs(120), calls)
        .await
        .expect("ListServices calls hung");
    for result in results {
        let services = result.expect("ListServices");
        assert!(services.iter().any(|s| s.name == "micro.kv"));
    }
    let (threads, rss) = threads_and_rss(server.process.pid().as_raw());
    assert!(threads < 64, "micro server has {threads} threads");
    assert!(rss < 512 << 20, "micro server holds {} MB", rss >> 20);

    let (code, _, err) = server
        .micro(&["kv", "put", "greeting", "hello"], &[], None)
        .await;
    assert_eq!(code, 0, "kv put failed: {err}");
}
