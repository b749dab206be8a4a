use std::{collections::BTreeSet, time::Duration};

use tempfile::TempDir;

use super::*;
use crate::registry::{
    EventKind,
    conformance::{self, EVENT_TIMEOUT, next_event, node, service},
};

fn registry() -> (TempDir, LocalRegistry) {
    let tmp = TempDir::new().unwrap();
    let registry = LocalRegistry::with_dir(tmp.path().join("registry")).unwrap();
    (tmp, registry)
}

fn long() -> RegisterOptions {
    RegisterOptions {
        ttl: Duration::from_secs(600),
    }
}

fn node_ids(services: &[Service]) -> BTreeSet<String> {
    services
        .iter()
        .flat_map(|s| s.nodes.iter().map(|n| n.id.clone()))
        .collect()
}

#[tokio::test]
async fn conformance() {
    let (_tmp, registry) = registry();
    conformance::run(Arc::new(registry)).await;
}

#[tokio::test]
async fn default_dir_is_private_and_named_local() {
    let registry = LocalRegistry::new().unwrap();
    assert_eq!(registry.name(), "local");
    assert!(registry.dir().ends_with("registry"));
    let mode = std::fs::metadata(registry.dir()).unwrap().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

#[tokio::test]
async fn two_instances_on_one_dir_see_each_other() {
    let (tmp, a) = registry();
    let b = LocalRegistry::with_dir(tmp.path().join("registry")).unwrap();
    assert!(b.name().starts_with("local://"), "{}", b.name());

    let mut watch_b = b.watch(WatchOptions::default()).await.unwrap();
    let s = service("greeter", "1.0.0", &[node("a-1", "127.0.0.1:5000")]);
    a.register(&s, long()).await.unwrap();
    assert_eq!(b.get_service("greeter").await.unwrap(), vec![s.clone()]);
    let event = next_event(&mut watch_b).await;
    assert_eq!((event.kind, &event.service), (EventKind::Create, &s));

    b.deregister(&s).await.unwrap();
    assert!(a.get_service("greeter").await.unwrap().is_empty());
    assert_eq!(next_event(&mut watch_b).await.kind, EventKind::Delete);
}

#[tokio::test]
async fn expiry_hides_node_and_watch_reports_delete() {
    let (_tmp, registry) = registry();
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    let ttl = Duration::from_millis(300);
    let s = service("ephemeral", "1", &[node("n", "127.0.0.1:1")]);
    let registered = std::time::Instant::now();
    registry
        .register(&s, RegisterOptions { ttl })
        .await
        .unwrap();
    assert_eq!(next_event(&mut watcher).await.kind, EventKind::Create);

    // Nobody renews, as if the process had crashed.
    let event = next_event(&mut watcher).await;
    assert_eq!((event.kind, &event.service), (EventKind::Delete, &s));
    let elapsed = registered.elapsed();
    // Expiry has millisecond resolution.
    assert!(
        elapsed + Duration::from_millis(2) >= ttl,
        "deleted after {elapsed:?}"
    );
    assert!(
        elapsed < ttl + Duration::from_secs(1),
        "deleted after {elapsed:?}"
    );
    assert!(registry.get_service("ephemeral").await.unwrap().is_empty());
}

#[tokio::test]
async fn renewal_keeps_node_without_events() {
    let (_tmp, registry) = registry();
    let s = service("renewed", "1", &[node("n", "127.0.0.1:1")]);
    registry.register(&s, long()).await.unwrap();
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    // The record that existed before the watch is not reported; renewals are silent.
    for _ in 0..3 {
        registry.register(&s, long()).await.unwrap();
    }
    let marker = service("marker", "1", &[node("m", "127.0.0.1:2")]);
    registry.register(&marker, long()).await.unwrap();
    let event = next_event(&mut watcher).await;
    assert_eq!((event.kind, &event.service), (EventKind::Create, &marker));
}

#[tokio::test]
async fn watch_picks_up_new_service_dirs() {
    let (tmp, registry) = registry();
    let mut all = registry.watch(WatchOptions::default()).await.unwrap();
    let mut only = registry
        .watch(WatchOptions {
            service: Some("late".into()),
        })
        .await
        .unwrap();
    let other = LocalRegistry::with_dir(tmp.path().join("registry")).unwrap();
    let early = service("early", "1", &[node("e", "127.0.0.1:1")]);
    let late = service(
        "late",
        "1",
        &[node("l1", "127.0.0.1:2"), node("l2", "127.0.0.1:3")],
    );
    other.register(&early, long()).await.unwrap();
    assert_eq!(next_event(&mut all).await.service, early);
    other.register(&late, long()).await.unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..2 {
        let event = next_event(&mut all).await;
        assert_eq!(event.kind, EventKind::Create);
        assert_eq!(event.service.nodes.len(), 1);
        seen.insert(event.service.nodes[0].id.clone());
        let event = next_event(&mut only).await;
        assert_eq!(event.service.name, "late");
    }
    assert_eq!(seen, BTreeSet::from(["l1".to_owned(), "l2".to_owned()]));
}

#[tokio::test]
async fn corrupt_and_foreign_files_are_skipped() {
    let (_tmp, registry) = registry();
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    let good = service("svc", "1", &[node("good", "127.0.0.1:1")]);
    registry.register(&good, long()).await.unwrap();
    let dir = registry.dir().join("svc");
    std::fs::write(dir.join("garbage.json"), b"{ not json").unwrap();
    std::fs::write(dir.join("empty.json"), b"").unwrap();
    // A valid record stored under the wrong file name.
    let wrong = std::fs::read(dir.join("good.json")).unwrap();
    std::fs::write(dir.join("other.json"), wrong).unwrap();
    std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
    std::fs::write(registry.dir().join("stray-file"), b"x").unwrap();

    assert_eq!(
        registry.get_service("svc").await.unwrap(),
        vec![good.clone()]
    );
    assert_eq!(registry.list_services().await.unwrap(), vec![good.clone()]);

    // The watch saw all of it and reports only the real record.
    let event = next_event(&mut watcher).await;
    assert_eq!((event.kind, &event.service), (EventKind::Create, &good));
    let marker = service("marker", "1", &[node("m", "127.0.0.1:2")]);
    registry.register(&marker, long()).await.unwrap();
    let event = next_event(&mut watcher).await;
    assert_eq!((event.kind, &event.service), (EventKind::Create, &marker));
}

#[tokio::test]
async fn long_expired_records_are_removed_by_readers() {
    let (_tmp, registry) = registry();
    let dead = common::single(&service("svc", "1", &[]), &node("dead", "127.0.0.1:1"));
    let just_expired = common::single(&service("svc", "1", &[]), &node("fresh", "127.0.0.1:2"));
    let now = store::now_ms();
    store::write_record(registry.dir(), &dead, now - 10_000).unwrap();
    store::write_record(registry.dir(), &just_expired, now - 1).unwrap();

    assert!(registry.get_service("svc").await.unwrap().is_empty());
    let dir = registry.dir().join("svc");
    assert!(!dir.join("dead.json").exists());
    // Within the grace period the file stays, in case its owner is renewing right now.
    assert!(dir.join("fresh.json").exists());
}

#[tokio::test]
async fn invalid_lookups_are_empty_not_paths() {
    let (_tmp, registry) = registry();
    assert!(registry.get_service("../..").await.unwrap().is_empty());
    assert!(registry.get_service("").await.unwrap().is_empty());
}

#[tokio::test]
async fn foreign_owned_dir_is_refused() {
    if nix::unistd::getuid().as_raw() != 0 {
        // Only root can make a directory belong to someone else.
        return;
    }
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("registry");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(4242), Some(4242)).unwrap();
    let err = LocalRegistry::with_dir(dir).unwrap_err().to_string();
    assert!(
        err.contains("uid 4242") && err.contains("MICRO_REGISTRY"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_never_corrupt_records() {
    const TASKS: usize = 16;
    const ROUNDS: usize = 50;
    const THREADS: usize = 3;
    const SHARED: usize = 4;
    let (tmp, registry) = registry();
    let dir = registry.dir().to_owned();
    let id_of = |who: &str, round: usize| {
        if round.is_multiple_of(2) {
            format!("shared-{}", (round / 2) % SHARED)
        } else {
            who.to_owned()
        }
    };

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let registry = registry.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let id = id_of(&format!("task-{t}"), round);
                let s = service("busy", "1", &[node(&id, &format!("127.0.0.1:{round}"))]);
                registry.register(&s, long()).await.unwrap();
            }
        }));
    }
    // Separate instances on plain threads, as separate processes would be.
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                let registry = LocalRegistry::with_dir(dir).unwrap();
                rt.block_on(async {
                    for round in 0..ROUNDS {
                        let id = id_of(&format!("thread-{t}"), round);
                        let s = service("busy", "1", &[node(&id, "127.0.0.1:1")]);
                        registry.register(&s, long()).await.unwrap();
                    }
                });
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for thread in threads {
        thread.join().unwrap();
    }

    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(dir.join("busy")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.ends_with(".json"), "leftover file {name}");
        let body = std::fs::read(&path).unwrap();
        let value: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{name} is corrupt: {e}"));
        assert!(value["expires_at_ms"].is_u64(), "{name}: {value}");
        files.insert(name.trim_end_matches(".json").to_owned());
    }
    let mut expected: BTreeSet<String> = (0..SHARED).map(|i| format!("shared-{i}")).collect();
    expected.extend((0..TASKS).map(|t| format!("task-{t}")));
    expected.extend((0..THREADS).map(|t| format!("thread-{t}")));
    assert_eq!(files, expected);
    let got = registry.get_service("busy").await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(node_ids(&got), expected);
    drop(tmp);
}

#[tokio::test]
async fn watch_stops_when_dropped() {
    let (_tmp, registry) = registry();
    let watcher = registry.watch(WatchOptions::default()).await.unwrap();
    drop(watcher);
    // The diff task notices on its next wakeup; a later write must not fail or hang.
    let s = service("svc", "1", &[node("n", "127.0.0.1:1")]);
    tokio::time::timeout(EVENT_TIMEOUT, registry.register(&s, long()))
        .await
        .unwrap()
        .unwrap();
}

/// How many watch tasks hold the registry's filesystem watcher; 0 when it is stopped.
fn hub_holders(registry: &LocalRegistry) -> usize {
    registry.inner.hub.lock().unwrap().strong_count()
}

#[tokio::test]
async fn watches_share_one_fs_watcher_until_the_last_ends() {
    let (_tmp, registry) = registry();
    let clone = registry.clone();
    assert_eq!(hub_holders(&registry), 0, "started lazily");
    let mut all = registry.watch(WatchOptions::default()).await.unwrap();
    let mut only = clone
        .watch(WatchOptions {
            service: Some("svc".into()),
        })
        .await
        .unwrap();
    // One hub, held by both diff tasks (the registry holds it weakly).
    assert_eq!(hub_holders(&registry), 2);

    let s = service("svc", "1", &[node("n", "127.0.0.1:1")]);
    registry.register(&s, long()).await.unwrap();
    assert_eq!(next_event(&mut all).await.service, s);
    assert_eq!(next_event(&mut only).await.service, s);

    drop(all);
    drop(only);
    tokio::time::timeout(EVENT_TIMEOUT, async {
        while hub_holders(&registry) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the filesystem watcher outlived its watches");

    // The next watch starts a fresh one.
    let mut again = registry.watch(WatchOptions::default()).await.unwrap();
    assert_eq!(hub_holders(&registry), 1);
    registry.deregister(&s).await.unwrap();
    assert_eq!(next_event(&mut again).await.kind, EventKind::Delete);
}

/// Files that are not records (a FIFO, a symlink to an endless device, an oversized file,
/// symlinks out of the directory) are skipped: lookups, listings and watches never hang on
/// them nor read them into memory.
#[tokio::test]
async fn hostile_entries_are_skipped_without_hanging() {
    let (tmp, registry) = registry();
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    let good = service("svc", "1", &[node("good", "127.0.0.1:1")]);
    registry.register(&good, long()).await.unwrap();
    assert_eq!(next_event(&mut watcher).await.service, good);

    let dir = registry.dir().join("svc");
    // A FIFO: opening it for reading would wait for a writer forever.
    nix::unistd::mkfifo(&dir.join("fifo.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    // An endless file.
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.json")).unwrap();
    // A valid record, but outside the directory, reached by a symlink.
    let outside = tmp.path().join("outside.json");
    std::fs::copy(dir.join("good.json"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("linked.json")).unwrap();
    // Bigger than any record.
    std::fs::write(dir.join("huge.json"), vec![b' '; 2 * 1024 * 1024]).unwrap();
    // A directory where a record would be.
    std::fs::create_dir(dir.join("dir.json")).unwrap();
    // A service directory that is a symlink to elsewhere.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::copy(dir.join("good.json"), elsewhere.join("good.json")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, registry.dir().join("linked-svc")).unwrap();

    let lookups = async {
        assert_eq!(
            registry.get_service("svc").await.unwrap(),
            vec![good.clone()]
        );
        assert_eq!(registry.list_services().await.unwrap(), vec![good.clone()]);
        assert!(registry.get_service("linked-svc").await.unwrap().is_empty());
        // The watch rescanned all of it and still reports only real changes.
        let marker = service("marker", "1", &[node("m", "127.0.0.1:2")]);
        registry.register(&marker, long()).await.unwrap();
        let event = next_event(&mut watcher).await;
        assert_eq!((event.kind, &event.service), (EventKind::Create, &marker));
    };
    tokio::time::timeout(EVENT_TIMEOUT, lookups)
        .await
        .expect("a lookup hung on a bad entry");
}

/// Reading the directory is not a change: a rescan opens every record, and reacting to the
/// opens made each rescan trigger the next, forever (1.75 cores for an idle server).
#[tokio::test]
async fn reads_are_not_changes() {
    let (_tmp, registry) = registry();
    let s = service("svc", "1", &[node("n", "127.0.0.1:1")]);
    registry.register(&s, long()).await.unwrap();
    let mut watcher = registry.watch(WatchOptions::default()).await.unwrap();
    let hub = watch::Hub::get(&registry.inner).unwrap();
    let mut changes = hub.subscribe();

    // Reads of every kind, through the registry and directly.
    assert_eq!(registry.get_service("svc").await.unwrap(), vec![s.clone()]);
    assert_eq!(registry.list_services().await.unwrap(), vec![s.clone()]);
    std::fs::read(registry.dir().join("svc").join("n.json")).unwrap();
    std::fs::read_dir(registry.dir().join("svc"))
        .unwrap()
        .for_each(drop);

    // The first change the hub reports is the marker's, and the watch saw nothing else.
    let marker = service("marker", "1", &[node("m", "127.0.0.1:2")]);
    registry.register(&marker, long()).await.unwrap();
    let first = tokio::time::timeout(EVENT_TIMEOUT, changes.recv())
        .await
        .expect("no change reported")
        .unwrap();
    assert_eq!(first, watch::Change::Service("marker".into()));
    let event = next_event(&mut watcher).await;
    assert_eq!((event.kind, &event.service), (EventKind::Create, &marker));
}

/// File I/O that hangs (a stuck file system) holds at most `MAX_IO_TASKS` threads; further
/// calls fail once their time is up instead of waiting forever or adding threads, and the
/// registry works again once the I/O returns.
#[tokio::test]
async fn hung_file_io_fails_calls_in_time_and_bounds_threads() {
    let (_tmp, registry) = registry();
    let inner = &registry.inner;
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Arc::new(std::sync::Mutex::new(released));
    let mut hung = Vec::new();
    for _ in 0..MAX_IO_TASKS {
        let released = Arc::clone(&released);
        let inner = Arc::clone(inner);
        hung.push(tokio::spawn(async move {
            inner
                .blocking_within(Duration::from_millis(50), move || {
                    // Blocks until the test releases it, like a read on a hung mount.
                    let _ = released.lock().unwrap().recv();
                    Ok(())
                })
                .await
        }));
    }
    for task in hung {
        let err = task.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("did not finish within"), "{err}");
    }
    assert_eq!(
        inner.io_permits.available_permits(),
        0,
        "hung tasks keep their turns"
    );

    // A call now waits for a turn, then fails in time, naming the directory.
    let err = inner
        .blocking_within(Duration::from_millis(50), || Ok(()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did not finish within"), "{err}");
    assert!(
        err.to_string()
            .contains(&registry.dir().display().to_string()),
        "{err}"
    );

    // The I/O returns: everything works again.
    for _ in 0..MAX_IO_TASKS {
        release.send(()).unwrap();
    }
    let s = service("svc", "1", &[node("n", "127.0.0.1:1")]);
    registry.register(&s, long()).await.unwrap();
    assert_eq!(registry.get_service("svc").await.unwrap(), vec![s]);
}

/// A writer that creates a service's directory changes the directory's metadata after
/// renaming the first record into it: watchers add a watch on a new directory only once
/// they hear of it, so the rename itself can go unseen, but the metadata change is reported
/// by the watch on the parent. This checks that such a change reaches the watch.
#[tokio::test]
async fn a_metadata_change_of_a_service_directory_is_a_change() {
    let (_tmp, registry) = registry();
    let s = service("svc", "1", &[node("n", "127.0.0.1:1")]);
    registry.register(&s, long()).await.unwrap();
    let _watcher = registry.watch(WatchOptions::default()).await.unwrap();
    let hub = watch::Hub::get(&registry.inner).unwrap();
    let mut changes = hub.subscribe();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        registry.dir().join("svc"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let change = tokio::time::timeout(EVENT_TIMEOUT, changes.recv())
        .await
        .expect("no change reported")
        .unwrap();
    assert_eq!(change, watch::Change::Service("svc".into()));
}
