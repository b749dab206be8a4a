use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use super::FileStore;
use crate::store::{Namespace, Put, Store, StoreError, conformance, from_url};

#[tokio::test]
async fn passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path().join("store.redb")).unwrap();
    conformance::run(Arc::new(store)).await;
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let ns = Namespace::new("app", "users").unwrap();
    {
        let store = FileStore::open(&path).unwrap();
        store.put(&ns, Put::new("alice", "v1")).await.unwrap();
        assert_eq!(store.put(&ns, Put::new("alice", "v2")).await.unwrap(), 2);
        store
            .put(&ns, Put::new("session", "s").ttl(Duration::from_secs(3600)))
            .await
            .unwrap();
    }
    let store = FileStore::open(&path).unwrap();
    let alice = store.get(&ns, "alice").await.unwrap().expect("kept");
    assert_eq!((alice.value, alice.version), (Bytes::from("v2"), 2));
    let ttl = store
        .get(&ns, "session")
        .await
        .unwrap()
        .unwrap()
        .ttl
        .unwrap();
    assert!(ttl > Duration::from_secs(3500), "expiry kept: {ttl:?}");
    assert_eq!(store.put(&ns, Put::new("alice", "v3")).await.unwrap(), 3);
}

#[test]
fn an_unusable_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    for path in [
        dir.path().join("no-such-dir").join("store.redb"),
        file.join("store.redb"),
        "/proc/micro-store.redb".into(),
    ] {
        match FileStore::open(&path) {
            Err(StoreError::Unavailable { store, message, .. }) => {
                assert_eq!(store, "file");
                assert!(message.contains(&path.display().to_string()), "{message}");
            }
            other => panic!("{}: {other:?}", path.display()),
        }
    }
}

#[tokio::test]
async fn opens_by_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("store.redb").display());
    let store = from_url(&url).unwrap();
    assert_eq!(store.name(), "file");
    store
        .put(&Namespace::default(), Put::new("k", "v"))
        .await
        .unwrap();
    assert!(matches!(
        from_url("file://relative/path"),
        Err(StoreError::InvalidArgument(_))
    ));
}
