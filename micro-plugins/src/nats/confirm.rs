//! Publish confirmation on core NATS: the echo round trip ([`Confirmer`]) and the window of
//! unconfirmed messages re-sent after a reconnect ([`Window`], the default).
//!
//! Why: async-nats drops its write buffer when a connection breaks without telling the
//! publisher, so a message handed to the client is not yet a message the server has. The
//! server handles a connection's messages in order, so an echo (a small message on a
//! private subject this client subscribes to) coming back proves that everything handed
//! over before it on the same connection was processed. The `connects` statistic tells
//! whether the connection changed in between.

use std::{
    collections::VecDeque,
    future::Future as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::{Client, HeaderMap, Subject};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use micro_core::{broker::BrokerError, lock::lock};
use tokio::{
    sync::{Notify, Semaphore, TryAcquireError, oneshot},
    time::{Instant, sleep_until, timeout_at},
};

/// The shortest pause between two confirmation echoes while the window has room.
const CONFIRM_PACE: Duration = Duration::from_millis(1);

use super::{
    error::{backend, backend_msg},
    handover::{Deadline, hand_over, ready_or_deadline, sent},
};

/// Publishes a token on a private subject and waits to receive it back; see the module
/// docs. Shared by [`PublishConfirm::Server`](super::PublishConfirm::Server) waiters and
/// the [`Window`].
pub(super) struct Confirmer {
    client: Client,
    /// The client's statistics, kept rather than asked for (a reference count) per publish.
    statistics: Arc<async_nats::Statistics>,
    name: String,
    subject: Subject,
    timeout: Duration,
    token: AtomicU64,
    /// Notified by the client's event callback on every (re)connect.
    reconnected: Arc<Notify>,
    subscriber: tokio::sync::Mutex<async_nats::Subscriber>,
    waiters: Mutex<Waiters>,
}

#[derive(Default)]
struct Waiters {
    running: bool,
    list: Vec<(u64, oneshot::Sender<Result<(), &'static str>>)>,
}

/// The bounded window of messages handed to the client but not yet confirmed by a round
/// trip. A background task (running while the window is not empty) confirms everything in
/// it with one echo per cycle; messages handed over on a connection that has since been
/// replaced are handed over again (at least once).
pub(super) struct Window {
    confirmer: Arc<Confirmer>,
    capacity: usize,
    space: Semaphore,
    state: Mutex<WindowState>,
    /// Notified after every confirmation cycle, for [`Window::flush`].
    progress: Notify,
}

struct WindowState {
    /// The position of the next message handed over for the first time.
    next_seq: u64,
    /// Handed over, not yet part of a confirmation cycle.
    entries: VecDeque<Unconfirmed>,
    /// The least `origin` in `entries` (`u64::MAX` when empty).
    entries_min: u64,
    /// The least `origin` of the messages the running cycle is confirming or re-sending
    /// (`u64::MAX` when none); they are out of `entries` meanwhile.
    in_flight_min: u64,
    /// How many messages the running cycle holds.
    in_flight: usize,
    /// An empty deque with capacity, swapped in for `entries` at the start of a cycle so
    /// the window does not allocate in the steady state.
    spare: VecDeque<Unconfirmed>,
    running: bool,
}

impl Default for WindowState {
    fn default() -> Self {
        Self {
            next_seq: 0,
            entries: VecDeque::new(),
            entries_min: u64::MAX,
            in_flight_min: u64::MAX,
            in_flight: 0,
            spare: VecDeque::new(),
            running: false,
        }
    }
}

impl WindowState {
    fn push(&mut self, entry: Unconfirmed) {
        self.entries_min = self.entries_min.min(entry.origin);
        self.entries.push_back(entry);
    }
}

/// What [`Window::try_publish`] did.
pub(super) enum TryPublish {
    /// Handed over and kept in the window, or failed.
    Done(Result<(), BrokerError>),
    /// Has to wait for room: finish with [`Window::publish_waiting`].
    Wait(Waiting),
}

/// A publish waiting for room in the window or in the client's buffer.
pub(super) struct Waiting {
    entry: Unconfirmed,
    /// Whether it holds its place in the window already.
    have_room: bool,
}

struct Unconfirmed {
    /// The position of its first hand-over, kept across re-sends, for `flush`.
    origin: u64,
    /// The `connects` statistic read before the (last) hand-over.
    epoch: u64,
    subject: Subject,
    headers: Option<HeaderMap>,
    body: Bytes,
}

/// Bodies up to this size are copied into the window's arena rather than shared.
const COPY_MAX: usize = 2048;
/// The size of an arena chunk.
const ARENA_CHUNK: usize = 64 * 1024;

thread_local! {
    /// Where [`kept_copy`] copies small bodies: one chunk per thread, shared by the copies
    /// made from it (freed once the last of them is dropped).
    static ARENA: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// The window's body and the client's, for a message with `body`. Both hold the body (the
/// window to re-send it), and a clone of a body built from a `Vec` (the usual case)
/// allocates a shared reference count (the client clones it again for its write queue);
/// so a small body is copied into a per-thread arena chunk that many copies share (one
/// allocation per chunk, clones are reference counts) and `body` itself is dropped at once,
/// on the publishing thread, where the next body's allocation reuses it. Larger bodies
/// are shared (a clone is cheap next to their size).
fn window_bodies(body: Bytes) -> (Bytes, Bytes) {
    let len = body.len();
    if len > COPY_MAX {
        return (body.clone(), body);
    }
    ARENA.with(|arena| {
        let Ok(mut arena) = arena.try_borrow_mut() else {
            return (body.clone(), body);
        };
        if arena.capacity() - arena.len() < len {
            *arena = BytesMut::with_capacity(ARENA_CHUNK);
        }
        arena.extend_from_slice(&body);
        let copy = arena.split().freeze();
        (copy.clone(), copy)
    })
}

// === impl Confirmer ===

impl Confirmer {
    pub(super) async fn start(
        client: &Client,
        name: &str,
        timeout: Duration,
        reconnected: Arc<Notify>,
    ) -> Result<Arc<Self>, BrokerError> {
        let subject = Subject::from(format!(
            "_MICRO.confirm.{}",
            client.new_inbox().replace("_INBOX.", "")
        ));
        let subscriber = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| backend(name, "subscribe (publish confirmations)", e))?;
        Ok(Arc::new(Self {
            client: client.clone(),
            statistics: client.statistics(),
            name: name.to_owned(),
            subject,
            timeout,
            token: AtomicU64::new(0),
            reconnected,
            subscriber: tokio::sync::Mutex::new(subscriber),
            waiters: Mutex::new(Waiters::default()),
        }))
    }

    /// How many times the client has connected so far: a change means the connection was
    /// replaced.
    pub(super) fn epoch(&self) -> u64 {
        self.statistics.connects.load(Ordering::Acquire)
    }

    /// Waits for a round trip that starts after this call, shared with concurrent callers;
    /// an error if it fails or the connection changed since `epoch`.
    pub(super) async fn confirm(
        self: &Arc<Self>,
        epoch: u64,
        deadline: Instant,
    ) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut waiters = lock(&self.waiters);
            waiters.list.push((epoch, tx));
            !std::mem::replace(&mut waiters.running, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).run());
        }
        match timeout_at(deadline, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(reason))) => Err(backend_msg(&self.name, reason)),
            Ok(Err(_)) => Err(backend_msg(&self.name, "publish confirmation abandoned")),
            Err(_) => Err(backend_msg(
                &self.name,
                "publish timed out waiting for the server's confirmation",
            )),
        }
    }

    async fn run(self: Arc<Self>) {
        let mut subscriber = self.subscriber.lock().await;
        loop {
            let batch = {
                let mut waiters = lock(&self.waiters);
                if waiters.list.is_empty() {
                    waiters.running = false;
                    return;
                }
                std::mem::take(&mut waiters.list)
            };
            let outcome = self.round_trip(&mut subscriber).await;
            let now = self.epoch();
            for (epoch, tx) in batch {
                let result = match outcome {
                    Err(reason) => Err(reason),
                    Ok(()) if epoch != now => Err(
                        "the connection was re-established during the publish: delivery unknown",
                    ),
                    Ok(()) => Ok(()),
                };
                let _ = tx.send(result);
            }
        }
    }

    /// One echo: `Ok` once it came back, an error on timeout or as soon as the connection
    /// was replaced (the echo may then be lost with the old connection's buffer).
    async fn round_trip(
        &self,
        subscriber: &mut async_nats::Subscriber,
    ) -> Result<(), &'static str> {
        let started = self.epoch();
        let token = self.token.fetch_add(1, Ordering::Relaxed) + 1;
        let deadline = Instant::now() + self.timeout;
        let body = Bytes::copy_from_slice(&token.to_be_bytes());
        let sent = ready_or_deadline(
            &mut Deadline::fixed(deadline),
            std::pin::pin!(self.client.publish(self.subject.clone(), body)),
        )
        .await;
        match sent {
            Err(_) => return Err("publish timed out waiting for the server's confirmation"),
            Ok(Err(_)) => return Err("publish confirmation could not be sent"),
            Ok(Ok(())) => {}
        }
        loop {
            tokio::select! {
                echo = subscriber.next() => match echo {
                    None => return Err("the connection is closed"),
                    Some(echo) => {
                        if echo.payload.as_ref() == token.to_be_bytes() {
                            return Ok(());
                        }
                    }
                },
                () = self.reconnected.notified() => {
                    if self.epoch() != started {
                        return Err("the connection was re-established during the publish: delivery unknown");
                    }
                }
                () = sleep_until(deadline) => {
                    return Err("publish timed out waiting for the server's confirmation");
                }
            }
        }
    }
}

// === impl Window ===

impl Window {
    pub(super) fn new(confirmer: Arc<Confirmer>, capacity: usize) -> Arc<Self> {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            confirmer,
            capacity,
            space: Semaphore::new(capacity),
            state: Mutex::new(WindowState::default()),
            progress: Notify::new(),
        })
    }

    /// Hands the message to the client and keeps it until a round trip confirms it, if
    /// that can be done without waiting: room in the window and in the client's buffer.
    /// Runs when called, not when awaited, so the common case needs no future (the caller
    /// boxes one on every publish otherwise). [`TryPublish::Wait`] carries the message on
    /// to [`Window::publish_waiting`].
    pub(super) fn try_publish(
        self: &Arc<Self>,
        subject: Subject,
        headers: Option<HeaderMap>,
        body: Bytes,
    ) -> TryPublish {
        let have_room = match self.space.try_acquire() {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(TryAcquireError::NoPermits) => false,
            Err(TryAcquireError::Closed) => {
                return TryPublish::Done(Err(backend_msg(
                    &self.confirmer.name,
                    "the broker is closed",
                )));
            }
        };
        let (kept, body) = window_bodies(body);
        let entry = Unconfirmed {
            origin: 0,
            epoch: self.confirmer.epoch(),
            subject,
            headers,
            body: kept,
        };
        if !have_room {
            return TryPublish::Wait(Waiting {
                entry,
                have_room: false,
            });
        }
        // The client gets its body (see `window_bodies`) and a clone of the subject
        // (reference-counted: not copied), polled once in place with a waker that does
        // nothing: a
        // client with room in its buffer takes the message at once. Dropping a publish
        // that is not ready does not send it (the client's channel is cancel-safe), so the
        // waiting path publishes it again, polled by its task.
        let client = &self.confirmer.client;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let now = match &entry.headers {
            Some(headers) => std::pin::pin!(client.publish_with_headers(
                entry.subject.clone(),
                headers.clone(),
                body
            ))
            .poll(&mut cx),
            None => std::pin::pin!(client.publish(entry.subject.clone(), body)).poll(&mut cx),
        };
        match now {
            std::task::Poll::Ready(result) => {
                TryPublish::Done(self.handed_over(entry, sent(&self.confirmer.name, Ok(result))))
            }
            std::task::Poll::Pending => TryPublish::Wait(Waiting {
                entry,
                have_room: true,
            }),
        }
    }

    /// The rest of a publish [`Window::try_publish`] could not finish at once: waits
    /// (until `deadline`) for room in the window and in the client's buffer.
    pub(super) async fn publish_waiting(
        self: &Arc<Self>,
        waiting: Waiting,
        mut deadline: Deadline,
    ) -> Result<(), BrokerError> {
        let Waiting {
            mut entry,
            have_room,
        } = waiting;
        if !have_room {
            self.wait_for_room(&mut deadline).await?;
        }
        // Read again before this hand-over: the connection may have been replaced
        // meanwhile (an older reading would only cause a needless re-send).
        entry.epoch = self.confirmer.epoch();
        let outcome = self.hand_over_slow(&entry, &mut deadline).await;
        self.handed_over(entry, outcome)
    }

    /// Keeps a message the client took (`outcome` `Ok`) in the window and starts the
    /// confirmation task if it is not running; gives its place back otherwise.
    fn handed_over(
        self: &Arc<Self>,
        mut entry: Unconfirmed,
        outcome: Result<(), BrokerError>,
    ) -> Result<(), BrokerError> {
        if let Err(e) = outcome {
            self.space.add_permits(1);
            return Err(e);
        }
        let start = {
            let mut state = lock(&self.state);
            entry.origin = state.next_seq;
            state.next_seq += 1;
            state.push(entry);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).run());
        }
        Ok(())
    }

    /// Hands `entry` over, waiting for room in the client's buffer until `deadline`.
    async fn hand_over_slow(
        &self,
        entry: &Unconfirmed,
        deadline: &mut Deadline,
    ) -> Result<(), BrokerError> {
        let outcome = hand_over!(
            self.confirmer.client,
            deadline,
            entry.subject.clone(),
            entry.headers.clone(),
            entry.body.clone()
        );
        sent(&self.confirmer.name, outcome)
    }

    /// Waits for a free place in the window, until `deadline`; takes it.
    async fn wait_for_room(&self, deadline: &mut Deadline) -> Result<(), BrokerError> {
        let name = &self.confirmer.name;
        match timeout_at(deadline.at(), self.space.acquire()).await {
            Ok(Ok(permit)) => {
                permit.forget();
                Ok(())
            }
            Ok(Err(_)) => Err(backend_msg(name, "the broker is closed")),
            Err(_) => Err(backend_msg(
                name,
                &format!(
                    "publish timed out: {} messages are waiting for the server's \
                     confirmation (the window is full; is the server reachable?)",
                    self.capacity
                ),
            )),
        }
    }

    /// Waits until every message published before this call is confirmed.
    pub(super) async fn flush(&self, deadline: Instant) -> Result<(), BrokerError> {
        let target = lock(&self.state).next_seq;
        loop {
            let progress = self.progress.notified();
            let mut progress = std::pin::pin!(progress);
            progress.as_mut().enable();
            let waiting = {
                let state = lock(&self.state);
                if state.entries_min.min(state.in_flight_min) >= target {
                    return Ok(());
                }
                state.entries.iter().filter(|e| e.origin < target).count() + state.in_flight
            };
            if timeout_at(deadline, progress).await.is_err() {
                return Err(backend_msg(
                    &self.confirmer.name,
                    &format!(
                        "flush timed out: {waiting} messages not yet confirmed by the server \
                         (they are re-sent after a reconnect)"
                    ),
                ));
            }
        }
    }

    /// Confirms the window in cycles of one echo each until it is empty. A cycle takes
    /// everything handed over so far out of the window (one lock, no copy), sends an echo
    /// and, once it came back on the same connection, drops the lot outside the lock.
    async fn run(self: Arc<Self>) {
        let mut subscriber = self.confirmer.subscriber.lock().await;
        let mut failures = 0u32;
        loop {
            // Pace the echoes: one per millisecond at most while the window is not filling
            // up, so a busy publisher pays one round trip for many messages.
            let filling = {
                let state = lock(&self.state);
                state.entries.len() >= self.capacity / 4
            };
            if !filling {
                tokio::time::sleep(CONFIRM_PACE).await;
            }
            let mut batch = {
                let mut state = lock(&self.state);
                if state.entries.is_empty() {
                    state.running = false;
                    drop(state);
                    self.progress.notify_waiters();
                    return;
                }
                let spare = std::mem::take(&mut state.spare);
                state.in_flight_min = std::mem::replace(&mut state.entries_min, u64::MAX);
                state.in_flight = state.entries.len();
                std::mem::replace(&mut state.entries, spare)
            };
            let outcome = self.confirmer.round_trip(&mut subscriber).await;
            let now = self.confirmer.epoch();
            let all_confirmed = outcome.is_ok() && batch.iter().all(|e| e.epoch == now);
            if all_confirmed {
                // The common case: drop the confirmed messages outside the lock and give
                // the emptied deque back for reuse.
                let confirmed = batch.len();
                batch.clear();
                {
                    let mut state = lock(&self.state);
                    state.in_flight_min = u64::MAX;
                    state.in_flight = 0;
                    if state.spare.capacity() < batch.capacity() {
                        state.spare = batch;
                    }
                }
                self.space.add_permits(confirmed);
                self.progress.notify_waiters();
            } else {
                let mut keep = VecDeque::new();
                let mut resend = Vec::new();
                let mut confirmed = 0;
                for entry in batch.drain(..) {
                    if outcome.is_ok() && entry.epoch == now {
                        confirmed += 1;
                    } else if entry.epoch != now {
                        resend.push(entry);
                    } else {
                        keep.push_back(entry);
                    }
                }
                {
                    let mut state = lock(&self.state);
                    // Unconfirmed on the current connection: first in the next cycle.
                    for entry in keep.into_iter().rev() {
                        state.entries_min = state.entries_min.min(entry.origin);
                        state.entries.push_front(entry);
                    }
                    state.in_flight_min = resend.iter().map(|e| e.origin).min().unwrap_or(u64::MAX);
                    state.in_flight = resend.len();
                }
                self.space.add_permits(confirmed);
                self.progress.notify_waiters();
                if !resend.is_empty() {
                    tracing::warn!(
                        broker = %self.confirmer.name,
                        messages = resend.len(),
                        "nats: the connection was replaced before these publishes were confirmed; re-sending them"
                    );
                    self.resend(resend).await;
                }
            }
            match outcome {
                Ok(()) => failures = 0,
                Err(reason) => {
                    failures = failures.saturating_add(1);
                    tracing::debug!(broker = %self.confirmer.name, reason, "nats: confirmation round trip failed; retrying");
                    // A timeout while still disconnected: the next echo waits for the
                    // reconnect; back off a little so a dead server does not spin.
                    let pause = Duration::from_millis(5) * failures.min(20);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Hands `entries` over again on the current connection, at the back of the window.
    async fn resend(&self, entries: Vec<Unconfirmed>) {
        let client = &self.confirmer.client;
        for mut entry in entries {
            let epoch = self.confirmer.epoch();
            // No deadline: the client's buffer drains once connected; publishers meanwhile
            // wait for room in the window, which these entries still occupy.
            let sent = match &entry.headers {
                Some(headers) => {
                    client
                        .publish_with_headers(
                            entry.subject.clone(),
                            headers.clone(),
                            entry.body.clone(),
                        )
                        .await
                }
                None => {
                    client
                        .publish(entry.subject.clone(), entry.body.clone())
                        .await
                }
            };
            if let Err(e) = sent {
                // The client is closed: keep the entry with its old epoch so it is tried
                // again, and `flush` reports it.
                tracing::warn!(broker = %self.confirmer.name, error = %e, "nats: re-sending failed");
            } else {
                entry.epoch = epoch;
            }
            let mut state = lock(&self.state);
            state.in_flight = state.in_flight.saturating_sub(1);
            state.push(entry);
        }
        let mut state = lock(&self.state);
        state.in_flight_min = u64::MAX;
        state.in_flight = 0;
    }
}
