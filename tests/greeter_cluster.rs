//! Processes on one machine find each other by name through the local registry: three
//! greeter-server processes and a greeter-client process, then kill -9 and SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{collections::HashSet, time::Duration};

use futures_util::StreamExt;
use micro::registry::{EventKind, WatchOptions};
use nix::sys::signal::Signal;
use support::{Proc, RegistryDir, example_bin};
use tokio::time::Instant;

fn server(registry: &RegistryDir, ttl: &str, interval: &str) -> Proc {
    Proc::spawn(
        &example_bin("greeter-server"),
        &[],
        &[
            ("MICRO_REGISTRY", registry.url()),
            ("MICRO_REGISTER_TTL", ttl),
            ("MICRO_REGISTER_INTERVAL", interval),
        ],
    )
}

/// Parses `ok node=<id> address=<addr> message=…` into the node id; `None` for `err …`.
fn answered_by(line: &str) -> Option<String> {
    let rest = line.strip_prefix("ok ")?;
    let node = rest.split_whitespace().next()?.strip_prefix("node=")?;
    Some(node.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_spreads_over_servers_survives_kill_and_sees_deregistration() {
    let registry = RegistryDir::new();
    // `a` will be killed, so only its short TTL removes it; `b` and `c` have a TTL far
    // longer than the test, so only a deregistration can remove them.
    let mut a = server(&registry, "3s", "1s");
    let mut b = server(&registry, "60s", "20s");
    let mut c = server(&registry, "60s", "20s");
    let (ready_a, ready_b, ready_c) = (a.ready().await, b.ready().await, c.ready().await);

    // A client process with no flags but the registry: calls every 20 ms until killed.
    let mut client = Proc::spawn(
        &example_bin("greeter-client"),
        &["--count", "0", "--interval-ms", "20"],
        &[("MICRO_REGISTRY", registry.url())],
    );

    // It reaches every server.
    let mut seen = HashSet::new();
    for _ in 0..60 {
        let line = client.next_line(Duration::from_secs(10)).await;
        let node = answered_by(&line).unwrap_or_else(|| panic!("call failed: {line}"));
        seen.insert(node);
    }
    let all = HashSet::from([
        ready_a.node.clone(),
        ready_b.node.clone(),
        ready_c.node.clone(),
    ]);
    assert_eq!(seen, all, "calls spread over all three nodes");

    // kill -9 `a`. Calls keep succeeding: a refused connection sends the call to another
    // node before anything was sent. Only the one call in flight at the kill may fail.
    // After the TTL (+1 s for a loaded machine) the node is gone and never picked.
    a.kill().await;
    let killed = Instant::now();
    let settle = Duration::from_secs(4);
    let (mut failed_early, mut after) = (0, 0);
    while after < 50 {
        let line = client.next_line(Duration::from_secs(10)).await;
        let node = answered_by(&line);
        if killed.elapsed() < settle {
            failed_early += usize::from(node.is_none());
            continue;
        }
        after += 1;
        let node = node.unwrap_or_else(|| panic!("after the TTL every call succeeds: {line}"));
        assert_ne!(node, ready_a.node, "the killed node is no longer picked");
    }
    assert!(
        failed_early <= 1,
        "{failed_early} calls failed after kill -9"
    );
    let registry_handle = registry.registry();
    let mut nodes: Vec<String> = registry_handle
        .get_service("greeter")
        .await
        .unwrap()
        .into_iter()
        .flat_map(|s| s.nodes)
        .map(|n| n.id)
        .collect();
    nodes.sort();
    let mut expected = vec![ready_b.node.clone(), ready_c.node.clone()];
    expected.sort();
    assert_eq!(nodes, expected, "the killed node expired");

    // SIGTERM `b` while the client keeps calling: it deregisters at once (its TTL is 60 s),
    // exits 0, and no call fails.
    let mut watch = registry_handle
        .watch(WatchOptions {
            service: Some("greeter".into()),
        })
        .await
        .unwrap();
    b.signal(Signal::SIGTERM);
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a registry event after SIGTERM")
        .expect("watch stream open")
        .expect("watch event");
    assert_eq!(event.kind, EventKind::Delete);
    assert_eq!(event.service.nodes[0].id, ready_b.node);
    let status = b.wait(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "graceful exit: {status:?}");
    // The client's lines from the SIGTERM on are still unread: none may be an error, and
    // once `b` is gone every call goes to `c`.
    for i in 0..60 {
        let line = client.next_line(Duration::from_secs(10)).await;
        let node =
            answered_by(&line).unwrap_or_else(|| panic!("call failed during the shutdown: {line}"));
        if i >= 40 {
            assert_eq!(node, ready_c.node, "{line}");
        }
    }
    drop(client);
    c.signal(Signal::SIGTERM);
    assert_eq!(c.wait(Duration::from_secs(15)).await.code(), Some(0));
}
