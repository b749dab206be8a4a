//! Acceptance 5, rotation: the server's certificate and key are replaced on disk while
//! calls run, over connections old and new; the poller swaps them in with 0 failed calls,
//! and connections made after the swap are shown the new certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/tls.rs"]
mod support;

use std::time::Duration;

use micro_core::{
    Client,
    tls::{ClientTls, ServerTls},
};
use support::{Ca, Usage, check, memory_registry, presented, start};
use tokio::sync::{mpsc, oneshot};

const SERVICE: &str = "rotating";
/// One call every 4 ms: 250 calls per second, open loop.
const CALL_EVERY: Duration = Duration::from_millis(4);
/// A fresh client (so a fresh connection and handshake) every this many calls.
const CALLS_PER_CLIENT: u64 = 5;
/// Calls before the rotation starts, and after it is done.
const CALLS_AROUND: u64 = 150;
/// The most calls the test makes, whatever happens.
const MAX_CALLS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotated_on_disk_under_load_fail_no_call() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let ca_file = ca.write(dir.path(), "ca.crt");
    let old = ca.leaf(&["localhost", "127.0.0.1"], Usage::Server, 1);
    let new = ca.leaf(&["localhost", "127.0.0.1"], Usage::Server, 2);
    let (cert, key) = old.write(dir.path(), "server");
    let tls = ServerTls::builder(&cert, &key)
        .reload_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let registry = memory_registry();
    let node = start(SERVICE, &registry, Some(tls.clone())).await;
    let address = node.address().to_owned();
    assert_eq!(presented(&address, &ca.pem()).await, old.der);

    let client_tls = ClientTls::from_ca_file(&ca_file).unwrap();
    let new_client = || {
        Client::builder()
            .registry(registry.clone())
            .tls(client_tls.clone())
            .build()
            .unwrap()
    };
    // Connected before the rotation and used throughout: its connection must keep working.
    let long_lived = new_client();

    // The rotation, once told to start: files replaced as a certificate manager does, then
    // the reload awaited through the generation counter, then a new connection checked.
    let (start_rotation, rotation_starts) = oneshot::channel::<()>();
    let (rotated, mut rotation_done) = oneshot::channel::<()>();
    let rotation = tokio::spawn({
        let (tls, ca_pem, address) = (tls.clone(), ca.pem(), address.clone());
        let (cert, key) = (cert.clone(), key.clone());
        async move {
            rotation_starts.await.unwrap();
            let mut reloads = tls.reloads();
            new.replace(&cert, &key);
            tokio::time::timeout(Duration::from_secs(30), reloads.wait_for(|g| *g >= 1))
                .await
                .expect("the new certificate was not picked up within 30 s")
                .unwrap();
            assert_eq!(presented(&address, &ca_pem).await, new.der);
            rotated.send(()).unwrap();
        }
    });

    let (results, mut answers) = mpsc::unbounded_channel();
    let mut ticks = tokio::time::interval(CALL_EVERY);
    let mut client = new_client();
    let mut start_rotation = Some(start_rotation);
    let mut sent = 0u64;
    let mut sent_after_rotation = None;
    while sent < MAX_CALLS {
        ticks.tick().await;
        if sent == CALLS_AROUND
            && let Some(start) = start_rotation.take()
        {
            start.send(()).unwrap();
        }
        if sent_after_rotation.is_none() && rotation_done.try_recv().is_ok() {
            sent_after_rotation = Some(0);
        }
        if let Some(after) = &mut sent_after_rotation {
            if *after == CALLS_AROUND {
                break;
            }
            *after += 1;
        }
        if sent.is_multiple_of(CALLS_PER_CLIENT) {
            client = new_client();
        }
        let caller = if sent % 10 == 3 {
            long_lived.clone()
        } else {
            client.clone()
        };
        let results = results.clone();
        tokio::spawn(async move {
            let _ = results.send(check(&caller, SERVICE).await);
        });
        sent += 1;
    }
    drop(results);
    assert!(
        sent_after_rotation == Some(CALLS_AROUND),
        "the rotation did not finish within {MAX_CALLS} calls"
    );
    rotation.await.unwrap();

    let (mut succeeded, mut failed) = (0u64, Vec::new());
    while let Some(result) = answers.recv().await {
        match result {
            Ok(_) => succeeded += 1,
            Err(status) => failed.push(status),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {sent} calls failed: {failed:?}",
        failed.len()
    );
    assert_eq!(succeeded, sent);
    assert_eq!(node.calls(), sent, "every call reached the server once");
    assert_eq!(tls.generation(), 1);
    println!(
        "rotation under load: {sent} calls ({} fresh clients), 0 failed",
        sent / CALLS_PER_CLIENT
    );
}
