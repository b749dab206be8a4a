use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::registry::{
    MemoryRegistry,
    conformance::{node, service},
};

/// A [`MemoryRegistry`] whose calls (or only its watches) can be made to fail and whose
/// watches can be cut, and which counts what the cache asks of it.
#[derive(Debug, Clone, Default)]
struct Flaky {
    inner: MemoryRegistry,
    failing: Arc<AtomicBool>,
    watch_failing: Arc<AtomicBool>,
    get_calls: Arc<AtomicUsize>,
    live_watches: Arc<AtomicUsize>,
    cut: Arc<watch::Sender<u64>>,
}

struct LiveWatch(Arc<AtomicUsize>);

impl Drop for LiveWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Flaky {
    fn check(&self) -> Result<(), RegistryError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(RegistryError::backend_msg("flaky", "backend is down"));
        }
        Ok(())
    }

    fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes only `watch` fail; reads and writes keep working.
    fn set_watch_failing(&self, failing: bool) {
        self.watch_failing.store(failing, Ordering::SeqCst);
    }

    /// Ends every open watch stream.
    fn cut_watches(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }
}

#[async_trait]
impl Registry for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn register(&self, s: &Service, o: RegisterOptions) -> Result<(), RegistryError> {
        self.check()?;
        self.inner.register(s, o).await
    }
    async fn deregister(&self, s: &Service) -> Result<(), RegistryError> {
        self.check()?;
        self.inner.deregister(s).await
    }
    async fn get_service(&self, name: &str) -> Result<Vec<Service>, RegistryError> {
        self.get_calls.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.get_service(name).await
    }
    async fn list_services(&self) -> Result<Vec<Service>, RegistryError> {
        self.check()?;
        self.inner.list_services().await
    }
    async fn watch(&self, o: WatchOptions) -> Result<Watcher, RegistryError> {
        self.check()?;
        if self.watch_failing.load(Ordering::SeqCst) {
            return Err(RegistryError::backend_msg("flaky", "cannot watch"));
        }
        let events = self.inner.watch(o).await?;
        let mut cut = self.cut.subscribe();
        cut.mark_unchanged();
        self.live_watches.fetch_add(1, Ordering::SeqCst);
        let live = LiveWatch(self.live_watches.clone());
        let events = events
            .take_until(async move {
                let _ = cut.changed().await;
            })
            .map(move |event| {
                let _ = &live;
                event
            });
        Ok(Box::pin(events))
    }
}

/// Longer than the longest backoff, so tests under paused time wait out a retry.
const WAIT: Duration = Duration::from_secs(30);

fn long() -> RegisterOptions {
    RegisterOptions {
        ttl: Duration::from_secs(24 * 3600),
    }
}

fn ids(services: &[Service]) -> Vec<(String, Vec<String>)> {
    services
        .iter()
        .map(|s| {
            let ids = s.nodes.iter().map(|n| n.id.clone()).collect();
            (s.version.clone(), ids)
        })
        .collect()
}

fn want(rows: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    rows.iter()
        .map(|(version, ids)| {
            let ids = ids.iter().map(|&id| id.to_owned()).collect();
            ((*version).to_owned(), ids)
        })
        .collect()
}

/// Waits until the receiver holds what `done` accepts.
async fn until(records: &mut Records, done: impl Fn(&[Service]) -> bool) {
    tokio::time::timeout(WAIT, records.wait_for(|s| done(s)))
        .await
        .expect("cache did not reach the expected state")
        .expect("cache stopped");
}

async fn until_true(check: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("condition never became true");
}

#[tokio::test]
async fn serves_from_memory_after_first_lookup() {
    let backend = Flaky::default();
    backend
        .register(
            &service("greeter", "1", &[node("b", "h:2"), node("a", "h:1")]),
            long(),
        )
        .await
        .unwrap();
    let cache = CacheRegistry::new(Arc::new(backend.clone()));
    for _ in 0..100 {
        let got = cache.get_service("greeter").await.unwrap();
        assert_eq!(ids(&got), want(&[("1", &["a", "b"])]));
        cache.subscribe("greeter").await.unwrap();
    }
    assert_eq!(backend.get_calls.load(Ordering::SeqCst), 1);
    assert!(cache.get_service("unknown").await.unwrap().is_empty());
    assert_eq!(backend.get_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_first_lookups_read_once() {
    let backend = Flaky::default();
    let cache = CacheRegistry::new(Arc::new(backend.clone()));
    let lookups: Vec<_> = (0..10)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.subscribe("greeter").await.unwrap() })
        })
        .collect();
    for lookup in lookups {
        lookup.await.unwrap();
    }
    assert_eq!(backend.get_calls.load(Ordering::SeqCst), 1);
    assert_eq!(backend.live_watches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn follows_watch_events_and_notifies_subscribers() {
    let backend = Flaky::default();
    let cache = CacheRegistry::new(Arc::new(backend.clone()));
    let mut records = cache.subscribe("greeter").await.unwrap();
    assert!(records.borrow_and_update().is_empty());

    // Writes go through the cache to the backend; the watch brings them back.
    cache
        .register(&service("greeter", "1", &[node("a", "h:1")]), long())
        .await
        .unwrap();
    tokio::time::timeout(WAIT, records.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&records.borrow_and_update()), want(&[("1", &["a"])]));

    backend
        .register(&service("greeter", "2", &[node("b", "h:2")]), long())
        .await
        .unwrap();
    backend
        .register(&service("other", "1", &[node("x", "h:9")]), long())
        .await
        .unwrap();
    until(&mut records, |s| s.len() == 2).await;
    assert_eq!(
        ids(&cache.get_service("greeter").await.unwrap()),
        want(&[("1", &["a"]), ("2", &["b"])])
    );

    // An update moves the node to another version.
    backend
        .register(&service("greeter", "2", &[node("a", "h:1")]), long())
        .await
        .unwrap();
    until(&mut records, |s| s.len() == 1).await;
    assert_eq!(ids(&records.borrow()), want(&[("2", &["a", "b"])]));

    backend
        .deregister(&service("greeter", "2", &[node("a", ""), node("b", "")]))
        .await
        .unwrap();
    until(&mut records, <[Service]>::is_empty).await;
    assert_eq!(backend.get_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn first_lookup_fails_when_backend_fails() {
    let backend = Flaky::default();
    let cache = CacheRegistry::new(Arc::new(backend.clone()));
    backend.set_failing(true);
    let err = cache.get_service("greeter").await.unwrap_err();
    assert!(err.to_string().contains("backend is down"), "{err}");
    backend.set_failing(false);
    assert!(cache.get_service("greeter").await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn serves_stale_nodes_while_backend_fails_then_catches_up() {
    let backend = Flaky::default();
    let memory = backend.inner.clone();
    memory
        .register(&service("greeter", "1", &[node("a", "h:1")]), long())
        .await
        .unwrap();
    let cache = CacheRegistry::new(Arc::new(backend.clone()));
    let mut records = cache.subscribe("greeter").await.unwrap();
    records.borrow_and_update();

    backend.set_failing(true);
    backend.cut_watches();
    until_true(|| backend.live_watches.load(Ordering::SeqCst) == 0).await;

    // The backend changes while the cache cannot see it; a minute of failed retries later
    // the cache still serves what it knew.
    memory
        .register(&service("greeter", "1", &[node("b", "h:2")]), long())
        .await
        .unwrap();
    memory
        .deregister(&service("greeter", "1", &[node("a", "")]))
        .await
        .unwrap();
    let before = backend.get_calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    // It polls while it cannot watch, but the reads fail too.
    assert!(
        backend.get_calls.load(Ordering::SeqCst) > before,
        "polls while the watch is down"
    );
    assert_eq!(
        ids(&cache.get_service("greeter").await.unwrap()),
        want(&[("1", &["a"])])
    );
    assert!(!records.has_changed().unwrap());

    // Recovery: the cache re-watches within the longest backoff and re-reads.
    backend.set_failing(false);
    let recovered = Instant::now();
    until(&mut records, |s| ids(s) == want(&[("1", &["b"])])).await;
    assert!(
        recovered.elapsed() <= MAX_BACKOFF,
        "{:?}",
        recovered.elapsed()
    );
    assert_eq!(backend.live_watches.load(Ordering::SeqCst), 1);

    // And follows events again.
    memory
        .register(&service("greeter", "1", &[node("c", "h:3")]), long())
        .await
        .unwrap();
    until(&mut records, |s| ids(s) == want(&[("1", &["b", "c"])])).await;
}

#[tokio::test(start_paused = true)]
async fn watch_that_ends_is_restored() {
    let backend = Flaky::default();
    let cache = CacheRegistry::new(Arc::new(backend.clone()));
    let mut records = cache.subscribe("greeter").await.unwrap();
    backend.cut_watches();
    backend
        .inner
        .register(&service("greeter", "1", &[node("a", "h:1")]), long())
        .await
        .unwrap();
    until(&mut records, |s| s.len() == 1).await;
    assert_eq!(backend.get_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn background_tasks_stop_with_the_last_clone() {
    let backend = Flaky::default();
    let cache = CacheRegistry::new(Arc::new(backend.clone()));
    let other = cache.clone();
    let mut records = cache.subscribe("greeter").await.unwrap();
    cache.subscribe("other").await.unwrap();
    assert_eq!(backend.live_watches.load(Ordering::SeqCst), 2);

    drop(cache);
    tokio::task::yield_now().await;
    assert_eq!(backend.live_watches.load(Ordering::SeqCst), 2);

    drop(other);
    until_true(|| backend.live_watches.load(Ordering::SeqCst) == 0).await;
    // Subscribers keep the last value and learn that no more will come.
    assert!(records.borrow_and_update().is_empty());
    assert!(records.changed().await.is_err());

    // Also while backing off from a failing backend.
    backend.set_failing(true);
    let cache = CacheRegistry::new(Arc::new(backend.clone()));
    backend.set_failing(false);
    cache.subscribe("greeter").await.unwrap();
    backend.set_failing(true);
    backend.cut_watches();
    until_true(|| backend.live_watches.load(Ordering::SeqCst) == 0).await;
    let mut records = cache.subscribe("greeter").await.unwrap();
    drop(cache);
    tokio::time::timeout(WAIT, records.changed())
        .await
        .expect("background task still running")
        .unwrap_err();
}

#[tokio::test(start_paused = true)]
async fn polls_while_watch_fails_but_reads_work() {
    let backend = Flaky::default();
    let memory = backend.inner.clone();
    memory
        .register(&service("greeter", "1", &[node("a", "h:1")]), long())
        .await
        .unwrap();
    let cache = CacheRegistry::new(Arc::new(backend.clone()));
    let mut records = cache.subscribe("greeter").await.unwrap();
    records.borrow_and_update();

    // The watch is lost and cannot be restarted; reads still work.
    backend.set_watch_failing(true);
    backend.cut_watches();
    until_true(|| backend.live_watches.load(Ordering::SeqCst) == 0).await;

    memory
        .register(&service("greeter", "1", &[node("b", "h:2")]), long())
        .await
        .unwrap();
    let registered = Instant::now();
    until(&mut records, |s| ids(s) == want(&[("1", &["a", "b"])])).await;
    // Backoff ticks from the cut: about 0.1 + 0.2 + 0.4 + 0.8 s before jitter.
    assert!(
        registered.elapsed() <= Duration::from_secs(2),
        "{:?}",
        registered.elapsed()
    );
    assert_eq!(backend.live_watches.load(Ordering::SeqCst), 0);

    // Deletions are polled too.
    memory
        .deregister(&service("greeter", "1", &[node("a", "")]))
        .await
        .unwrap();
    until(&mut records, |s| ids(s) == want(&[("1", &["b"])])).await;
    assert_eq!(
        ids(&cache.get_service("greeter").await.unwrap()),
        want(&[("1", &["b"])])
    );

    // The watch comes back: one re-read, then events, and no more polling.
    backend.set_watch_failing(false);
    until_true(|| backend.live_watches.load(Ordering::SeqCst) == 1).await;
    let after_recovery = backend.get_calls.load(Ordering::SeqCst);
    memory
        .register(&service("greeter", "1", &[node("c", "h:3")]), long())
        .await
        .unwrap();
    until(&mut records, |s| ids(s) == want(&[("1", &["b", "c"])])).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(backend.get_calls.load(Ordering::SeqCst), after_recovery);
}
