//! Processes on one machine find each other by name through the local registry: two
//! greeter-server processes and a greeter-client process, then kill -9 and SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{collections::HashSet, time::Duration};

use futures_util::StreamExt;
use micro::registry::{EventKind, WatchOptions};
use nix::sys::signal::Signal;
use support::{Proc, RegistryDir, example_bin};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(3);

fn server(registry: &RegistryDir) -> Proc {
    Proc::spawn(
        &example_bin("greeter-server"),
        &[],
        &[
            ("MICRO_REGISTRY", &registry.url),
            ("MICRO_REGISTER_TTL", "3s"),
            ("MICRO_REGISTER_INTERVAL", "1s"),
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
    let mut a = server(&registry);
    let mut b = server(&registry);
    let ready_a = a.ready().await;
    let ready_b = b.ready().await;
    assert_ne!(ready_a.node, ready_b.node);

    // A client process with no flags but the registry: calls every 20 ms until killed.
    let mut client = Proc::spawn(
        &example_bin("greeter-client"),
        &["--count", "0", "--interval-ms", "20"],
        &[("MICRO_REGISTRY", &registry.url)],
    );

    // It reaches both servers.
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let line = client.next_line(Duration::from_secs(10)).await;
        let node = answered_by(&line).unwrap_or_else(|| panic!("call failed: {line}"));
        seen.insert(node);
    }
    assert_eq!(
        seen,
        HashSet::from([ready_a.node.clone(), ready_b.node.clone()]),
        "round-robin over both nodes"
    );

    // kill -9 one server: no deregistration, so only its TTL removes it. After TTL + 1 s
    // every call must succeed on the survivor; before, a call that was in flight on the
    // killed node may fail.
    a.kill().await;
    let killed = Instant::now();
    let settle = TTL + Duration::from_secs(1);
    let mut after = 0;
    while after < 50 {
        let line = client.next_line(Duration::from_secs(10)).await;
        if killed.elapsed() < settle {
            continue;
        }
        after += 1;
        assert_eq!(
            answered_by(&line).as_deref(),
            Some(ready_b.node.as_str()),
            "after the TTL every call goes to the survivor: {line}"
        );
    }
    let registry_handle = registry.registry();
    let nodes: Vec<String> = registry_handle
        .get_service("greeter")
        .await
        .unwrap()
        .into_iter()
        .flat_map(|s| s.nodes)
        .map(|n| n.id)
        .collect();
    assert_eq!(
        nodes,
        std::slice::from_ref(&ready_b.node),
        "the killed node expired"
    );
    drop(client);

    // SIGTERM the survivor: it deregisters at once (well before its TTL) and exits 0.
    let mut watch = registry_handle
        .watch(WatchOptions {
            service: Some("greeter".into()),
        })
        .await
        .unwrap();
    b.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a registry event after SIGTERM")
        .expect("watch stream open")
        .expect("watch event");
    assert_eq!(event.kind, EventKind::Delete);
    assert_eq!(event.service.nodes[0].id, ready_b.node);
    assert!(
        signalled.elapsed() < TTL,
        "deregistered by the shutdown, not expired: {:?}",
        signalled.elapsed()
    );
    let status = b.wait(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "graceful exit: {status:?}");
}
