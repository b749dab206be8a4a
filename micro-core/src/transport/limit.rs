//! [`ConnectionLimit`]: a budget of open connections; over it, the connection idle the
//! longest is shed.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use tokio::{sync::Notify, time::Instant};

use crate::lock::lock;

/// File descriptors kept out of the connection budget for the process' own files and
/// outgoing connections (registry and store files, clients, the runtime's own): at least
/// this many, or an eighth of the limit when that is more.
pub const DEFAULT_FD_RESERVE: usize = 128;
/// The fewest connections a limit derived from `RLIMIT_NOFILE` allows, however low the
/// file limit.
const MIN_DERIVED: usize = 16;
/// A file limit reported as unlimited counts as this many.
const UNLIMITED_FILES: u64 = 1 << 20;

/// A budget of open accepted connections, shared by the servers it is given to. When a
/// server accepts a connection over the budget, the open connection that has had no
/// request in flight for the longest (a silent one first of all) is closed to make room:
/// gracefully (HTTP/2 GOAWAY) when it speaks HTTP, at once when it never sent a byte. When
/// every open connection has a request in flight, the new one is closed instead.
///
/// Cloning is cheap; clones share the budget.
///
/// # Examples
///
/// ```
/// use micro_core::transport::{ConnectionConfig, ConnectionLimit};
///
/// // One budget for two servers of the process.
/// let limit = ConnectionLimit::new(5_000);
/// let grpc = ConnectionConfig::new().limit(limit.clone());
/// let http = ConnectionConfig::new().limit(limit.clone());
/// assert_eq!(limit.max(), 5_000);
/// # drop((grpc, http));
/// ```
#[derive(Clone)]
pub struct ConnectionLimit {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    epoch: Instant,
    next_id: AtomicU64,
    state: Mutex<State>,
    /// Notified whenever a connection leaves the budget.
    released: Notify,
}

#[derive(Default)]
struct State {
    slots: HashMap<u64, Arc<Slot>>,
    /// Open connections not being shed: the ones the budget counts.
    active: usize,
}

/// One open connection's shared state: read by the limit when it looks for a connection
/// to shed, written by the connection's requests.
pub(crate) struct Slot {
    id: u64,
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Whether a request ever started: a connection that never served one is shed
    /// without ceremony.
    served: AtomicBool,
    /// Milliseconds from the epoch at which the last request ended (or the connection
    /// was accepted).
    idle_since: AtomicU64,
    shedding: AtomicBool,
    shed: Notify,
}

/// An admitted connection's place in the budget, given back on drop.
pub(crate) struct Admitted {
    slot: Arc<Slot>,
    limit: ConnectionLimit,
}

/// A request in flight on a connection; the connection counts as idle again from the
/// moment the last one is dropped.
pub(crate) struct InFlight {
    slot: Arc<Slot>,
}

// === impl ConnectionLimit ===

impl ConnectionLimit {
    /// A budget of `max` open connections (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max: max.max(1),
                epoch: Instant::now(),
                next_id: AtomicU64::new(0),
                state: Mutex::new(State::default()),
                released: Notify::new(),
            }),
        }
    }

    /// A budget derived from the process' open-file limit (`RLIMIT_NOFILE`, soft): the
    /// limit less a reserve of [`DEFAULT_FD_RESERVE`] or an eighth of it, whichever is
    /// more, so the process' own files and outgoing connections still open when its
    /// listeners are flooded. At least 16.
    pub fn from_nofile() -> Self {
        let soft = nofile().map_or(UNLIMITED_FILES, |(soft, _)| soft);
        Self::new(derived_max(soft))
    }

    /// The process-wide budget every server uses unless given another: made on first use,
    /// after raising the soft open-file limit to the hard one (what Go's runtime does at
    /// start), then [`from_nofile`](Self::from_nofile).
    pub fn process() -> Self {
        static PROCESS: OnceLock<ConnectionLimit> = OnceLock::new();
        PROCESS
            .get_or_init(|| {
                match raise_nofile_limit() {
                    Ok(soft) => tracing::debug!(soft, "open-file limit"),
                    Err(err) => {
                        tracing::debug!(error = %err, "cannot raise the open-file limit");
                    }
                }
                let limit = Self::from_nofile();
                tracing::debug!(max = limit.max(), "connection limit");
                limit
            })
            .clone()
    }

    /// How many connections may be open at once.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// How many connections are open now (those being shed included).
    pub fn open(&self) -> usize {
        self.lock().slots.len()
    }

    /// Waits until one more connection fits in the budget, shedding the connection idle
    /// the longest to make room; `false` at once when the budget is full and every
    /// connection is busy.
    pub(crate) async fn room(&self) -> bool {
        loop {
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut state = self.lock();
                let open = state.slots.len();
                if open < self.inner.max {
                    return true;
                }
                // One at a time: exactly the idlest connections make room; while one is
                // closing, the next arrival waits for it.
                let shedding = open - state.active;
                if shedding == 0 && !Self::shed_locked(&mut state) {
                    return false;
                }
            }
            released.await;
        }
    }

    /// Counts a new connection in (after [`room`](Self::room), or over the budget).
    pub(crate) fn admit(&self) -> Admitted {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            id,
            epoch: self.inner.epoch,
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(millis_since(self.inner.epoch)),
            shedding: AtomicBool::new(false),
            shed: Notify::new(),
        });
        let mut state = self.lock();
        state.slots.insert(id, slot.clone());
        state.active += 1;
        Admitted {
            slot,
            limit: self.clone(),
        }
    }

    /// Sheds the connection idle the longest, to free a file descriptor; `false` when
    /// every open connection is busy or being shed.
    pub(crate) fn shed_idlest(&self) -> bool {
        Self::shed_locked(&mut self.lock())
    }

    fn shed_locked(state: &mut State) -> bool {
        let victim = state
            .slots
            .values()
            .filter(|slot| {
                !slot.shedding.load(Ordering::Relaxed)
                    && slot.in_flight.load(Ordering::Relaxed) == 0
            })
            .min_by_key(|slot| (slot.idle_since.load(Ordering::Relaxed), slot.id))
            .cloned();
        match victim {
            Some(victim) => {
                victim.shedding.store(true, Ordering::Relaxed);
                victim.shed.notify_one();
                state.active -= 1;
                true
            }
            None => false,
        }
    }

    fn release(&self, slot: &Slot) {
        {
            let mut state = self.lock();
            if state.slots.remove(&slot.id).is_some() && !slot.shedding.load(Ordering::Relaxed) {
                state.active -= 1;
            }
        }
        self.inner.released.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (plain counters and a map).
        lock(&self.inner.state)
    }
}

impl fmt::Debug for ConnectionLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionLimit")
            .field("max", &self.max())
            .field("open", &self.open())
            .finish()
    }
}

/// The connections a soft open-file limit of `soft` leaves room for.
fn derived_max(soft: u64) -> usize {
    let soft = usize::try_from(soft.min(UNLIMITED_FILES)).unwrap_or(usize::MAX);
    let reserve = DEFAULT_FD_RESERVE.max(soft / 8);
    soft.saturating_sub(reserve).max(MIN_DERIVED)
}

/// The soft and hard `RLIMIT_NOFILE`, `RLIM_INFINITY` counted as 2^20.
fn nofile() -> Option<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let finite = |limit: u64| {
        if limit == nix::sys::resource::RLIM_INFINITY {
            UNLIMITED_FILES
        } else {
            limit
        }
    };
    Some((finite(soft), finite(hard)))
}

/// Raises the process' soft open-file limit (`RLIMIT_NOFILE`) to its hard limit, as Go's
/// runtime does at start, and returns the soft limit now in force. A hard limit reported as
/// unlimited raises the soft one to 2^20. [`ConnectionLimit::process`] calls it once.
///
/// # Errors
/// When the limits cannot be read or set.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    let target = if hard == nix::sys::resource::RLIM_INFINITY {
        UNLIMITED_FILES.max(soft.min(UNLIMITED_FILES))
    } else {
        hard
    };
    if soft != nix::sys::resource::RLIM_INFINITY && soft < target {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard).map_err(std::io::Error::from)?;
        return Ok(target);
    }
    Ok(soft.min(UNLIMITED_FILES))
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

// === impl Slot ===

impl Slot {
    /// A request starts.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            self.served.store(true, Ordering::Relaxed);
        }
        InFlight { slot: self.clone() }
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// When the connection last became idle (its accept, or the end of its last request).
    pub(crate) fn idle_since(&self) -> Instant {
        self.epoch + std::time::Duration::from_millis(self.idle_since.load(Ordering::Relaxed))
    }

    /// Whether the connection ever had a request.
    pub(crate) fn served(&self) -> bool {
        self.served.load(Ordering::Relaxed)
    }

    /// Completes when the limit sheds this connection.
    pub(crate) async fn shed(&self) {
        self.shed.notified().await;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.slot.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.slot
                .idle_since
                .store(millis_since(self.slot.epoch), Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("connection", &self.slot.id)
            .finish()
    }
}

// === impl Admitted ===

impl Admitted {
    pub(crate) fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limit.release(&self.slot);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_reserve_is_at_least_128_or_an_eighth() {
        assert_eq!(derived_max(1024), 1024 - 128);
        assert_eq!(derived_max(65_536), 65_536 - 8_192);
        assert_eq!(derived_max(100), MIN_DERIVED);
        assert_eq!(derived_max(u64::MAX), (1 << 20) - (1 << 17));
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_budget_the_connection_idle_longest_is_shed() {
        let limit = ConnectionLimit::new(3);
        assert!(limit.room().await);
        let a = limit.admit();
        tokio::time::advance(Duration::from_secs(1)).await;
        let b = limit.admit();
        tokio::time::advance(Duration::from_secs(1)).await;
        let c = limit.admit();
        // `a` is the oldest, but busy; `b` finished a request after `c` was accepted.
        let _call = a.slot().begin();
        let b_call = b.slot().begin();
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(b_call);

        // Full: making room sheds `c`, and waits until it is gone.
        let room = tokio::spawn({
            let limit = limit.clone();
            async move { limit.room().await }
        });
        tokio::time::timeout(Duration::from_millis(1), c.slot().shed())
            .await
            .expect("c, idle longest, is shed");
        assert!(!b.slot().shedding.load(Ordering::Relaxed));
        assert!(!a.slot().shedding.load(Ordering::Relaxed));
        assert!(!room.is_finished(), "no room while c is open");
        drop(c);
        assert!(room.await.unwrap());
        let d = limit.admit();
        assert_eq!(limit.open(), 3);

        // Then `b` (served a request, idle since), before `d` (accepted later).
        assert!(limit.shed_idlest());
        assert!(b.slot().shedding.load(Ordering::Relaxed));
        assert!(b.slot().served() && !d.slot().served());
        drop(b);

        // Every one busy: no room, at once.
        let _d_call = d.slot().begin();
        let e = limit.admit();
        let _e_call = e.slot().begin();
        assert_eq!(limit.open(), 3);
        assert!(!limit.room().await, "no idle connection to shed");
        assert!(!limit.shed_idlest());
    }

    #[test]
    fn raising_the_limit_never_lowers_it() {
        let before = nofile().unwrap().0;
        let after = raise_nofile_limit().unwrap();
        assert!(after >= before, "{after} < {before}");
        assert_eq!(nofile().unwrap().0, after);
    }
}
