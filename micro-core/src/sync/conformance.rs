//! The behaviour every [`Sync`](super::Sync) backend must show, as one async check for the
//! tests of each backend (feature `test-util`). Names are random per run, so runs can share
//! a backend. Panics naming the first broken rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use super::{LockOptions, SharedSync, SyncError};

fn fresh(what: &str) -> String {
    format!("conformance/{what}/{:016x}", rand::random::<u64>())
}

fn wait(wait: Duration) -> LockOptions {
    LockOptions {
        ttl: Duration::from_secs(5),
        wait: Some(wait),
    }
}

/// Runs every check against `sync`.
pub async fn run(sync: SharedSync) {
    tokens_grow_and_try_lock_times_out(&sync).await;
    mutual_exclusion(&sync).await;
    a_waiter_gets_the_lock_on_release(&sync).await;
    a_dropped_lock_is_released(&sync).await;
    the_lease_is_renewed_while_held(&sync).await;
    bad_input(&sync).await;
    election(&sync).await;
}

async fn tokens_grow_and_try_lock_times_out(sync: &SharedSync) {
    let name = fresh("tokens");
    let first = sync.lock(&name, LockOptions::default()).await.unwrap();
    assert_eq!(first.name(), name);
    assert!(first.is_held());
    let started = Instant::now();
    match sync.lock(&name, wait(Duration::ZERO)).await {
        Err(SyncError::Timeout { .. }) => {}
        other => panic!("try-lock of a held lock: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "try-lock does not wait"
    );
    let started = Instant::now();
    match sync.lock(&name, wait(Duration::from_millis(300))).await {
        Err(SyncError::Timeout { waited, .. }) => {
            assert!(waited >= Duration::from_millis(300), "{waited:?}");
        }
        other => panic!("a bounded wait for a held lock: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    let token = first.token();
    first.release().await.unwrap();
    let second = sync.lock(&name, wait(Duration::ZERO)).await.unwrap();
    assert!(second.token() > token, "fencing tokens only grow");
    second.release().await.unwrap();
}

async fn mutual_exclusion(sync: &SharedSync) {
    let name = fresh("exclusion");
    let inside = Arc::new(AtomicBool::new(false));
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (sync, name, inside, tokens) = (
            sync.clone(),
            name.clone(),
            Arc::clone(&inside),
            Arc::clone(&tokens),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let lock = sync.lock(&name, LockOptions::default()).await.unwrap();
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                tokens.lock().unwrap().push(lock.token());
                tokio::task::yield_now().await;
                inside.store(false, Ordering::SeqCst);
                lock.release().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let tokens = tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 40);
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "tokens grow in acquisition order: {tokens:?}"
    );
}

async fn a_waiter_gets_the_lock_on_release(sync: &SharedSync) {
    let name = fresh("waiter");
    let held = sync.lock(&name, LockOptions::default()).await.unwrap();
    let waiter = {
        let (sync, name) = (sync.clone(), name.clone());
        tokio::spawn(async move { sync.lock(&name, wait(Duration::from_secs(10))).await })
    };
    tokio::task::yield_now().await;
    let released = Instant::now();
    held.release().await.unwrap();
    let lock = waiter.await.unwrap().unwrap();
    assert!(
        released.elapsed() < Duration::from_secs(1),
        "a waiter gets a released lock promptly: {:?}",
        released.elapsed()
    );
    lock.release().await.unwrap();
}

async fn a_dropped_lock_is_released(sync: &SharedSync) {
    let name = fresh("dropped");
    drop(sync.lock(&name, LockOptions::default()).await.unwrap());
    let lock = sync.lock(&name, wait(Duration::from_secs(3))).await;
    assert!(lock.is_ok(), "a dropped lock is released: {lock:?}");
}

async fn the_lease_is_renewed_while_held(sync: &SharedSync) {
    let name = fresh("renewed");
    let options = LockOptions {
        ttl: Duration::from_millis(600),
        wait: None,
    };
    let lock = sync.lock(&name, options).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(lock.is_held(), "renewed past its TTL");
    match sync.lock(&name, wait(Duration::ZERO)).await {
        Err(SyncError::Timeout { .. }) => {}
        other => panic!("a renewed lock is still held: {other:?}"),
    }
    lock.release().await.unwrap();
}

async fn bad_input(sync: &SharedSync) {
    for result in [
        sync.lock("", LockOptions::default()).await.map(drop),
        sync.lock(&"x".repeat(300), LockOptions::default())
            .await
            .map(drop),
        sync.lock(
            "short-lease",
            LockOptions {
                ttl: Duration::from_millis(1),
                wait: None,
            },
        )
        .await
        .map(drop),
        sync.leader("bad\nname").await.map(drop),
    ] {
        match result {
            Err(SyncError::InvalidArgument(message)) => assert!(!message.is_empty()),
            other => panic!("bad input: {other:?}"),
        }
    }
}

async fn election(sync: &SharedSync) {
    let election = fresh("election");
    assert_eq!(sync.leader(&election).await.unwrap(), None);
    let mut observed = sync.observe(&election).await.unwrap();
    let first = sync
        .campaign(&election, "one", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(first.is_leader());
    let leader = sync.leader(&election).await.unwrap().expect("a leader");
    assert_eq!(leader.id, "one");
    assert_eq!(leader.term, first.term());
    let seen = observed
        .wait_for(|leader| leader.as_ref().is_some_and(|l| l.id == "one"))
        .await
        .unwrap()
        .clone();
    assert_eq!(seen.map(|l| l.term), Some(first.term()));

    let second = {
        let (sync, election) = (sync.clone(), election.clone());
        tokio::spawn(async move {
            sync.campaign(&election, "two", Duration::from_secs(5))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!second.is_finished(), "one leader at a time");
    let term = first.term();
    first.resign().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(3), second)
        .await
        .expect("the next candidate leads after a resignation")
        .unwrap()
        .unwrap();
    assert_eq!(second.candidate(), "two");
    assert!(second.term() > term, "terms only grow");
    let seen = observed
        .wait_for(|leader| leader.as_ref().is_some_and(|l| l.id == "two"))
        .await
        .unwrap()
        .clone();
    assert_eq!(seen.map(|l| l.term), Some(second.term()));
    second.resign().await.unwrap();
}
