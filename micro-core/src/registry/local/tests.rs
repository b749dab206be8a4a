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
