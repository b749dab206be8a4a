//! Many watches on one local registry share one inotify instance.
//!
//! The only test in this binary, so the process' inotify descriptors are all its own.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::time::Duration;

use futures_util::StreamExt;
use micro_core::registry::{
    EventKind, LocalRegistry, Node, RegisterOptions, Registry, Service, WatchOptions, Watcher,
};

const WATCHES: usize = 200;
const WAIT: Duration = Duration::from_secs(10);

/// The inotify instances this process has open.
fn inotify_instances() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_str() == Some("anon_inode:inotify"))
        .count()
}

fn greeter() -> Service {
    Service {
        name: "greeter".into(),
        version: "1.0.0".into(),
        nodes: vec![Node {
            id: "g-1".into(),
            address: "127.0.0.1:5001".into(),
            ..Node::default()
        }],
        ..Service::default()
    }
}

async fn next_create(watcher: &mut Watcher) -> Service {
    let event = tokio::time::timeout(WAIT, watcher.next())
        .await
        .expect("no event in time")
        .expect("watch ended")
        .expect("watch failed");
    assert_eq!(event.kind, EventKind::Create);
    event.service
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_watches_share_one_inotify_instance() {
    // Documentation only: with one instance per watch, 200 watches would exceed the usual
    // per-user limit of 128 (shared by all of the user's processes). The test does not
    // depend on the limit.
    let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    let before = inotify_instances();

    let tmp = tempfile::TempDir::new().unwrap();
    let registry = LocalRegistry::with_dir(tmp.path().join("registry")).unwrap();
    // Half watch everything, half only the greeter; all concurrently, on clones.
    let starts: Vec<_> = (0..WATCHES)
        .map(|i| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let options = WatchOptions {
                    service: (i % 2 == 1).then(|| "greeter".to_owned()),
                };
                registry.watch(options).await
            })
        })
        .collect();
    let mut watchers = Vec::with_capacity(WATCHES);
    for start in starts {
        watchers.push(start.await.unwrap().expect("watch failed to start"));
    }
    assert_eq!(
        inotify_instances() - before,
        1,
        "{WATCHES} watches should share one inotify instance \
         (fs.inotify.max_user_instances = {limit})"
    );

    let registered = greeter();
    let other = LocalRegistry::with_dir(tmp.path().join("registry")).unwrap();
    other
        .register(&registered, RegisterOptions::default())
        .await
        .unwrap();
    let seen = futures_util::future::join_all(watchers.iter_mut().map(next_create)).await;
    assert!(seen.iter().all(|s| *s == registered));

    // The instance is closed once the last watch ends.
    drop(watchers);
    tokio::time::timeout(WAIT, async {
        while inotify_instances() > before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the inotify instance outlived the watches");
}
