//! The brute-force limiter: failures per account id and per source address in fixed
//! windows, with bounded memory.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use micro_core::lock::lock;

use super::BruteForce;

/// Counts failed credential checks; see the module docs of [`auth`](super).
#[derive(Debug)]
pub(crate) struct Limiter {
    limits: BruteForce,
    // A std mutex: held for a map lookup, never across an await.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    ids: HashMap<String, Window>,
    addresses: HashMap<IpAddr, Window>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    failures: u32,
}

impl Limiter {
    pub(crate) fn new(limits: BruteForce) -> Self {
        Self {
            limits,
            state: Mutex::default(),
        }
    }

    /// `Err(retry after)` when `id` or `address` reached its limit in its current window.
    pub(crate) fn check(
        &self,
        id: Option<&str>,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Duration> {
        let state = lock(&self.state);
        let window = self.limits.window;
        let locked = |w: Option<&Window>, limit: u32| {
            w.filter(|w| w.failures >= limit && now < w.start + window)
                .map(|w| (w.start + window).saturating_duration_since(now))
        };
        let by_id = id.and_then(|id| locked(state.ids.get(id), self.limits.per_id));
        let by_address =
            address.and_then(|a| locked(state.addresses.get(&a), self.limits.per_address));
        match (by_id, by_address) {
            (None, None) => Ok(()),
            (a, b) => Err(a.max(b).unwrap_or(window)),
        }
    }

    /// Counts a failure for `id` and `address`.
    pub(crate) fn fail(&self, id: Option<&str>, address: Option<IpAddr>, now: Instant) {
        let mut state = lock(&self.state);
        let (window, max) = (self.limits.window, self.limits.max_tracked);
        if let Some(id) = id {
            count(&mut state.ids, id, |id| id.to_owned(), now, window, max);
        }
        if let Some(address) = address {
            count(&mut state.addresses, &address, |a| *a, now, window, max);
        }
    }

    /// Clears the count of `id` after a successful login.
    pub(crate) fn succeed(&self, id: &str) {
        let mut state = lock(&self.state);
        state.ids.remove(id);
    }
}

fn count<K: Hash + Eq + ?Sized, O: Hash + Eq + std::borrow::Borrow<K>>(
    map: &mut HashMap<O, Window>,
    key: &K,
    owned: impl FnOnce(&K) -> O,
    now: Instant,
    window: Duration,
    max: usize,
) {
    if let Some(w) = map.get_mut(key) {
        if now >= w.start + window {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        return;
    }
    if map.len() >= max {
        map.retain(|_, w| now < w.start + window);
        if map.len() >= max {
            tracing::warn!(
                tracked = map.len(),
                "auth: brute-force limiter is full; a new key is not tracked"
            );
            return;
        }
    }
    map.insert(
        owned(key),
        Window {
            start: now,
            failures: 1,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BruteForce {
        BruteForce {
            per_id: 3,
            per_address: 5,
            window: Duration::from_secs(60),
            max_tracked: 4,
        }
    }

    #[test]
    fn ids_lock_after_their_limit_and_unlock_after_the_window() {
        let limiter = Limiter::new(limits());
        let t0 = Instant::now();
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check(Some("a"), Some(addr), t0), Ok(()));
            limiter.fail(Some("a"), Some(addr), t0);
        }
        let retry = limiter
            .check(Some("a"), None, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(retry, Duration::from_secs(50));
        // Another id from the same address is not locked (3 < 5 address failures).
        assert_eq!(limiter.check(Some("b"), Some(addr), t0), Ok(()));
        assert_eq!(
            limiter.check(Some("a"), None, t0 + Duration::from_secs(60)),
            Ok(())
        );
        limiter.succeed("a");
        assert_eq!(limiter.check(Some("a"), None, t0), Ok(()));
    }

    #[test]
    fn addresses_lock_across_ids() {
        let limiter = Limiter::new(limits());
        let t0 = Instant::now();
        let addr: IpAddr = "127.0.0.2".parse().unwrap();
        for id in ["a", "b", "c", "d", "e"] {
            limiter.fail(Some(id), Some(addr), t0);
        }
        assert!(limiter.check(Some("f"), Some(addr), t0).is_err());
        assert_eq!(
            limiter.check(Some("f"), Some("127.0.0.3".parse().unwrap()), t0),
            Ok(())
        );
    }

    #[test]
    fn memory_is_bounded() {
        let limiter = Limiter::new(limits());
        let t0 = Instant::now();
        for i in 0..10 {
            limiter.fail(Some(&format!("id{i}")), None, t0);
        }
        assert_eq!(limiter.state.lock().unwrap().ids.len(), 4);
        // Finished windows make room.
        limiter.fail(Some("late"), None, t0 + Duration::from_secs(61));
        assert_eq!(limiter.state.lock().unwrap().ids.len(), 1);
    }
}
