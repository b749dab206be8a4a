//! The behaviour every [`Store`](super::Store) must show, as one async check for the tests of
//! each backend (feature `test-util`).
//!
//! Each run uses a fresh table (`conformance/t<random>`), so it can share a backend with
//! other tests. It panics with a message naming the first broken rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{
    Condition, ListOptions, MAX_BATCH, MAX_KEY_LEN, MAX_PAGE, MAX_VALUE_LEN, Namespace, Put,
    SharedStore, StoreError,
};

/// A fresh namespace for one run.
pub fn fresh_namespace() -> Namespace {
    let table = format!("t{:016x}", rand::random::<u64>());
    Namespace::new("conformance", &table).expect("a valid namespace")
}

/// Runs every check against `store`.
pub async fn run(store: SharedStore) {
    versions_and_conditions(&store).await;
    deletes(&store).await;
    namespaces_are_separate(&store).await;
    listing_pages_in_order(&store).await;
    batches(&store).await;
    bad_input_writes_nothing(&store).await;
    values_round_trip(&store).await;
    concurrent_compare_and_set(&store).await;
    ttl_expires(&store).await;
}

fn is_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::InvalidArgument(message)) => assert!(!message.is_empty(), "{what}"),
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

async fn versions_and_conditions(store: &SharedStore) {
    let ns = fresh_namespace();
    assert_eq!(store.get(&ns, "k").await.unwrap(), None, "a missing key");
    assert_eq!(store.put(&ns, Put::new("k", "one")).await.unwrap(), 1);
    let record = store.get(&ns, "k").await.unwrap().expect("written");
    assert_eq!(record.key, "k");
    assert_eq!(record.value, Bytes::from("one"));
    assert_eq!(record.version, 1);
    assert_eq!(record.ttl, None, "no TTL was set");
    assert_eq!(store.put(&ns, Put::new("k", "two")).await.unwrap(), 2);

    let cas = Put::new("k", "three").condition(Condition::Version(2));
    assert_eq!(
        store.put(&ns, cas.clone()).await.unwrap(),
        3,
        "CAS at the current version"
    );
    match store.put(&ns, cas).await {
        Err(StoreError::ConditionFailed { key, found, .. }) => {
            assert_eq!(key, "k");
            assert_eq!(found, Some(3), "the failure reports the current version");
        }
        other => panic!("CAS at a stale version: {other:?}"),
    }
    assert_eq!(
        store.get(&ns, "k").await.unwrap().unwrap().value,
        Bytes::from("three"),
        "a failed CAS wrote nothing"
    );
    match store
        .put(&ns, Put::new("k", "x").condition(Condition::Absent))
        .await
    {
        Err(StoreError::ConditionFailed { found, .. }) => assert_eq!(found, Some(3)),
        other => panic!("create-only on an existing key: {other:?}"),
    }
    assert_eq!(
        store
            .put(&ns, Put::new("new", "x").condition(Condition::Absent))
            .await
            .unwrap(),
        1,
        "create-only on a new key"
    );
    match store
        .put(
            &ns,
            Put::new("missing", "x").condition(Condition::Version(1)),
        )
        .await
    {
        Err(StoreError::ConditionFailed { found, .. }) => assert_eq!(found, None),
        other => panic!("CAS on a missing key: {other:?}"),
    }
    assert_eq!(store.get(&ns, "missing").await.unwrap(), None);
}

async fn deletes(store: &SharedStore) {
    let ns = fresh_namespace();
    assert!(
        !store.delete(&ns, "k", Condition::None).await.unwrap(),
        "deleting a missing key"
    );
    store.put(&ns, Put::new("k", "v")).await.unwrap();
    store.put(&ns, Put::new("k", "v2")).await.unwrap();
    match store.delete(&ns, "k", Condition::Version(1)).await {
        Err(StoreError::ConditionFailed { found, .. }) => assert_eq!(found, Some(2)),
        other => panic!("conditional delete at a stale version: {other:?}"),
    }
    assert!(store.get(&ns, "k").await.unwrap().is_some(), "still there");
    assert!(store.delete(&ns, "k", Condition::Version(2)).await.unwrap());
    assert_eq!(store.get(&ns, "k").await.unwrap(), None, "deleted");
    assert_eq!(
        store.put(&ns, Put::new("k", "again")).await.unwrap(),
        1,
        "versions start over after a delete"
    );
    is_invalid(
        store.delete(&ns, "k", Condition::Absent).await,
        "delete with condition Absent",
    );
}

async fn namespaces_are_separate(store: &SharedStore) {
    let a = fresh_namespace();
    let b = fresh_namespace();
    store.put(&a, Put::new("shared", "in a")).await.unwrap();
    assert_eq!(store.get(&b, "shared").await.unwrap(), None);
    store.put(&b, Put::new("shared", "in b")).await.unwrap();
    assert_eq!(
        store.get(&a, "shared").await.unwrap().unwrap().value,
        Bytes::from("in a")
    );
    assert_eq!(
        store.list(&b, ListOptions::default()).await.unwrap().keys,
        ["shared"]
    );
}

async fn listing_pages_in_order(store: &SharedStore) {
    let ns = fresh_namespace();
    let mut expected: Vec<String> = (0..25).map(|i| format!("a/{i:02}")).collect();
    let puts = expected
        .iter()
        .rev()
        .map(|key| Put::new(key.clone(), "v"))
        .chain([Put::new("b/0", "v"), Put::new("a", "v"), Put::new("Z", "v")])
        .collect();
    store.put_many(&ns, puts).await.unwrap();
    expected.sort();

    let mut seen = Vec::new();
    let mut start_after = None;
    let mut pages = 0;
    loop {
        let page = store
            .list(
                &ns,
                ListOptions {
                    prefix: "a/".into(),
                    start_after: start_after.clone(),
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert!(page.keys.len() <= 10, "a page holds at most its limit");
        seen.extend(page.keys);
        pages += 1;
        assert!(pages <= 4, "paging ends");
        match page.next {
            Some(next) => start_after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        seen, expected,
        "every key with the prefix once, in byte order"
    );

    let all = store
        .list(
            &ns,
            ListOptions {
                limit: MAX_PAGE,
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.keys.len(), 28);
    assert_eq!(all.keys[0], "Z", "byte order: uppercase first");
    assert_eq!(all.next, None);
    is_invalid(
        store
            .list(
                &ns,
                ListOptions {
                    limit: MAX_PAGE + 1,
                    ..ListOptions::default()
                },
            )
            .await,
        "a page over the limit",
    );
}

async fn batches(store: &SharedStore) {
    let ns = fresh_namespace();
    let versions = store
        .put_many(
            &ns,
            vec![Put::new("x", "1"), Put::new("y", "2"), Put::new("z", "3")],
        )
        .await
        .unwrap();
    assert_eq!(versions, [1, 1, 1]);
    let keys: Vec<String> = ["z", "missing", "x"].map(String::from).into();
    let records = store.get_many(&ns, &keys).await.unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].as_ref().unwrap().value, Bytes::from("3"));
    assert!(records[1].is_none());
    assert_eq!(records[2].as_ref().unwrap().value, Bytes::from("1"));

    // One failed condition: nothing of the batch is written.
    match store
        .put_many(
            &ns,
            vec![
                Put::new("x", "changed"),
                Put::new("fresh", "new"),
                Put::new("y", "changed").condition(Condition::Version(7)),
            ],
        )
        .await
    {
        Err(StoreError::ConditionFailed { key, .. }) => assert_eq!(key, "y"),
        other => panic!("a batch with a failed condition: {other:?}"),
    }
    assert_eq!(
        store.get(&ns, "x").await.unwrap().unwrap().value,
        Bytes::from("1")
    );
    assert_eq!(store.get(&ns, "fresh").await.unwrap(), None);

    is_invalid(
        store
            .put_many(&ns, vec![Put::new("dup", "1"), Put::new("dup", "2")])
            .await,
        "a key twice in a batch",
    );
    let too_many: Vec<Put> = (0..=MAX_BATCH)
        .map(|i| Put::new(format!("k{i}"), "v"))
        .collect();
    is_invalid(
        store.put_many(&ns, too_many).await,
        "a batch over the limit",
    );

    let deleted = store
        .delete_many(&ns, &["x".into(), "nope".into(), "z".into()])
        .await
        .unwrap();
    assert_eq!(deleted, [true, false, true]);
    assert_eq!(
        store.list(&ns, ListOptions::default()).await.unwrap().keys,
        ["y"]
    );
    assert_eq!(
        store.put_many(&ns, vec![]).await.unwrap(),
        Vec::<u64>::new()
    );
}

async fn bad_input_writes_nothing(store: &SharedStore) {
    let ns = fresh_namespace();
    is_invalid(store.put(&ns, Put::new("", "v")).await, "an empty key");
    is_invalid(
        store
            .put(&ns, Put::new("k".repeat(MAX_KEY_LEN + 1), "v"))
            .await,
        "a key over the limit",
    );
    is_invalid(
        store.put(&ns, Put::new("bad\nkey", "v")).await,
        "a key with a control character",
    );
    is_invalid(store.get(&ns, "").await, "get of an empty key");
    is_invalid(
        store
            .put(&ns, Put::new("big", vec![0u8; MAX_VALUE_LEN + 1]))
            .await,
        "a value over the limit",
    );
    is_invalid(
        store.put(&ns, Put::new("k", "v").ttl(Duration::ZERO)).await,
        "a zero TTL",
    );
    is_invalid(
        store
            .put(&ns, Put::new("k", "v").condition(Condition::Version(0)))
            .await,
        "a condition on version 0",
    );
    // A batch with one bad value writes none of the others.
    is_invalid(
        store
            .put_many(
                &ns,
                vec![
                    Put::new("ok1", "v"),
                    Put::new("too-big", vec![1u8; MAX_VALUE_LEN + 1]),
                    Put::new("ok2", "v"),
                ],
            )
            .await,
        "a batch with an oversized value",
    );
    assert_eq!(
        store.list(&ns, ListOptions::default()).await.unwrap().keys,
        Vec::<String>::new(),
        "bad input wrote nothing"
    );
    assert!(Namespace::new("", "t").is_err());
    assert!(Namespace::new("db", "a/b").is_err());
    assert!(Namespace::new(&"d".repeat(65), "t").is_err());
}

async fn values_round_trip(store: &SharedStore) {
    let ns = fresh_namespace();
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    store
        .put(&ns, Put::new("binary", binary.clone()))
        .await
        .unwrap();
    assert_eq!(
        store.get(&ns, "binary").await.unwrap().unwrap().value,
        Bytes::from(binary)
    );
    let largest = vec![7u8; MAX_VALUE_LEN];
    store
        .put(&ns, Put::new("largest", largest.clone()))
        .await
        .unwrap();
    assert_eq!(
        store
            .get(&ns, "largest")
            .await
            .unwrap()
            .unwrap()
            .value
            .len(),
        largest.len()
    );
    store
        .put(&ns, Put::new("empty", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(
        store.get(&ns, "empty").await.unwrap().unwrap().value,
        Bytes::new()
    );
    let unicode = "ключ/キー/🔑 with spaces";
    store.put(&ns, Put::new(unicode, "v")).await.unwrap();
    assert!(store.get(&ns, unicode).await.unwrap().is_some());
    let long = "k".repeat(MAX_KEY_LEN);
    store.put(&ns, Put::new(long.clone(), "v")).await.unwrap();
    assert!(store.get(&ns, &long).await.unwrap().is_some());
    let listed = store
        .list(
            &ns,
            ListOptions {
                prefix: "ключ/".into(),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.keys, [unicode]);
}

async fn concurrent_compare_and_set(store: &SharedStore) {
    let ns = fresh_namespace();
    store.put(&ns, Put::new("counter", "0")).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let ns = ns.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                loop {
                    let record = store.get(&ns, "counter").await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&record.value).unwrap().parse().unwrap();
                    let put = Put::new("counter", (n + 1).to_string())
                        .condition(Condition::Version(record.version));
                    match store.put(&ns, put).await {
                        Ok(_) => break,
                        Err(StoreError::ConditionFailed { .. }) => continue,
                        Err(other) => panic!("CAS increment: {other}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let record = store.get(&ns, "counter").await.unwrap().unwrap();
    assert_eq!(record.value, Bytes::from("40"), "no lost update");
    assert_eq!(record.version, 41);
}

async fn ttl_expires(store: &SharedStore) {
    let ns = fresh_namespace();
    store
        .put(&ns, Put::new("short", "v").ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    store
        .put(&ns, Put::new("long", "v").ttl(Duration::from_secs(3600)))
        .await
        .unwrap();
    store.put(&ns, Put::new("forever", "v")).await.unwrap();
    let record = store
        .get(&ns, "short")
        .await
        .unwrap()
        .expect("not yet expired");
    let ttl = record.ttl.expect("a TTL was set");
    assert!(ttl <= Duration::from_secs(1), "{ttl:?}");
    let long = store.get(&ns, "long").await.unwrap().unwrap().ttl.unwrap();
    assert!(long > Duration::from_secs(3500), "{long:?}");

    // Expiry is checked by polling with a deadline: backends expire on their own clock
    // (memcached and Redis in whole seconds or milliseconds).
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.get(&ns, "short").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "a 1 s TTL expired within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keys = store.list(&ns, ListOptions::default()).await.unwrap().keys;
    assert_eq!(keys, ["forever", "long"], "expired keys are not listed");
    // A write after expiry starts a new record.
    assert_eq!(store.put(&ns, Put::new("short", "again")).await.unwrap(), 1);
}
