//! The local broker across OS processes: each subscriber and each publisher is its own
//! `broker-fixture` process with its own `LocalBroker` and its own registry instance on one
//! shared registry directory, delivering over real gRPC on loopback. (Single-process
//! behaviour stays in micro-core/tests/broker_local.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, path::Path, time::Duration};

use micro_testkit::{Proc, RegistryDir};

const FIXTURE: &str = env!("CARGO_BIN_EXE_broker-fixture");
/// How long one delivery may take to show in a subscriber's output: generous, for a busy
/// machine; a message that never comes fails the test after it.
const LINE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a publisher process may take, its readiness wait (30 s at most) included.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// A subscribing process with one subscription per spec (`plain`, `queue:<group>`), once
/// all are registered.
async fn subscriber(registry: &RegistryDir, topic: &str, specs: &[&str]) -> Proc {
    let dir = registry.path().to_string_lossy().into_owned();
    let mut args = vec![dir.as_str(), "subscribe", topic];
    args.extend_from_slice(specs);
    let mut proc = Proc::spawn(Path::new(FIXTURE), &args, &[]);
    proc.ready().await;
    proc
}

/// Runs a publishing process: once it sees `subscribers` subscribers of `topic`, it
/// publishes messages `from..to`, awaiting each. Returns when it exited with 0.
async fn publish(registry: &RegistryDir, topic: &str, subscribers: usize, from: u32, to: u32) {
    let dir = registry.path().to_string_lossy().into_owned();
    let (subscribers, from_s, to_s) = (subscribers.to_string(), from.to_string(), to.to_string());
    let args = [
        dir.as_str(),
        "publish",
        topic,
        subscribers.as_str(),
        from_s.as_str(),
        to_s.as_str(),
    ];
    let mut proc = Proc::spawn(Path::new(FIXTURE), &args, &[]);
    let line = proc.next_line(PUBLISH_TIMEOUT).await;
    assert_eq!(
        line,
        format!("published {}", to - from),
        "{}",
        proc.output()
    );
    let status = proc.wait(PUBLISH_TIMEOUT).await;
    assert!(
        status.success(),
        "publisher exited with {status}\n{}",
        proc.output()
    );
}

/// The next `count` deliveries a subscribing process printed: `(subscription index, n)`.
async fn deliveries(proc: &mut Proc, count: usize) -> Vec<(usize, u32)> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let line = proc.next_line(LINE_TIMEOUT).await;
        let parsed = line.strip_prefix("got sub=").and_then(|rest| {
            let (sub, n) = rest.split_once(" n=")?;
            Some((sub.parse().ok()?, n.parse().ok()?))
        });
        got.push(parsed.unwrap_or_else(|| panic!("unexpected line {line:?}\n{}", proc.output())));
    }
    got
}

/// The `n`s each subscription of a process got, in arrival order.
fn per_subscription(got: &[(usize, u32)]) -> BTreeMap<usize, Vec<u32>> {
    let mut by_sub: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for &(sub, n) in got {
        by_sub.entry(sub).or_default().push(n);
    }
    by_sub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_process() {
    let registry = RegistryDir::new();
    let mut a = subscriber(&registry, "orders.created", &["plain"]).await;
    let mut b = subscriber(&registry, "orders.created", &["plain", "plain"]).await;
    publish(&registry, "orders.created", 3, 0, 20).await;

    let all: Vec<u32> = (0..20).collect();
    let got_a = per_subscription(&deliveries(&mut a, 20).await);
    assert_eq!(
        got_a,
        BTreeMap::from([(0, all.clone())]),
        "in publish order"
    );
    let got_b = per_subscription(&deliveries(&mut b, 40).await);
    assert_eq!(got_b, BTreeMap::from([(0, all.clone()), (1, all)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_group_shares_messages_across_processes() {
    let registry = RegistryDir::new();
    // A: a group member (sub 0) and a plain subscriber (sub 1); B: two group members.
    let mut a = subscriber(&registry, "jobs", &["queue:workers", "plain"]).await;
    let mut b = subscriber(&registry, "jobs", &["queue:workers", "queue:workers"]).await;
    publish(&registry, "jobs", 4, 0, 90).await;

    // Round-robin over the group's three members: 30 each; the plain subscriber all 90.
    let got_a = per_subscription(&deliveries(&mut a, 30 + 90).await);
    let got_b = per_subscription(&deliveries(&mut b, 60).await);
    assert_eq!(
        got_a[&1],
        (0..90).collect::<Vec<_>>(),
        "plain gets every message in order"
    );
    let members = [&got_a[&0], &got_b[&0], &got_b[&1]];
    for member in members {
        assert_eq!(member.len(), 30, "a member's share: {member:?}");
    }
    let mut group: Vec<u32> = members.into_iter().flatten().copied().collect();
    group.sort_unstable();
    assert_eq!(
        group,
        (0..90).collect::<Vec<_>>(),
        "each message to exactly one member"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_process_is_deregistered_and_its_group_share_goes_to_the_others() {
    let registry = RegistryDir::new();
    let mut kept = subscriber(&registry, "news", &["plain", "queue:g"]).await;
    let mut leaving = subscriber(&registry, "news", &["plain", "queue:g"]).await;
    // Readiness of the four subscriptions, seen from a third process.
    publish(&registry, "news", 4, 0, 0).await;

    // SIGTERM: the process drops its subscriptions, which deregisters them, and exits 0.
    leaving.terminate(Duration::from_secs(10)).await;
    publish(&registry, "news", 2, 0, 20).await;

    let got = per_subscription(&deliveries(&mut kept, 40).await);
    let all: Vec<u32> = (0..20).collect();
    assert_eq!(
        got,
        BTreeMap::from([(0, all.clone()), (1, all)]),
        "the plain subscriber and the group's live member get every message"
    );
}
