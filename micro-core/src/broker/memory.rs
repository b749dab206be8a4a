//! The in-process broker.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use futures_util::{StreamExt, future::join_all};
use tokio::sync::mpsc::{self, error::SendTimeoutError, error::TrySendError};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    AckMode, Broker, BrokerError, Delivery, Message, SubscribeOptions, Subscription,
    validate_queue, validate_topic,
};
use crate::lock::lock;

/// How many messages a subscription buffers before publishers wait. Default is 1024.
pub const DEFAULT_BUFFER: usize = 1024;
/// How long a publish waits for room in a full subscription buffer before failing.
/// Default is 5 seconds.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

const NAME: &str = "memory";

/// Publish/subscribe within one process.
///
/// Clones share their subscriptions: a message published on one clone reaches the
/// subscriptions made on any clone. Separately created brokers ([`MemoryBroker::new`]) do
/// not see each other.
///
/// Every plain subscription gets every message; the members of a queue group share them
/// round-robin, each message going to exactly one member of each group.
///
/// # Backpressure
///
/// Each subscription buffers up to [`DEFAULT_BUFFER`] messages. When the buffer of a
/// subscription that must receive a message is full, `publish` waits for room, up to the
/// publish timeout ([`DEFAULT_PUBLISH_TIMEOUT`]); if none frees up in time it returns
/// [`BrokerError::Backend`] naming the topic. A message is never dropped silently, but a
/// publish that failed this way may have reached the other subscriptions of the topic
/// (retrying it duplicates the message for them). A queue group prefers a member with room
/// over a full one.
///
/// Messages are not persisted: [`AckMode::Manual`] and durable subscriptions are
/// [`BrokerError::Unsupported`].
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

struct Inner {
    topics: Mutex<HashMap<String, Topic>>,
    next_id: AtomicU64,
    buffer: usize,
    publish_timeout: Duration,
}

#[derive(Default)]
struct Topic {
    plain: Vec<Member>,
    groups: BTreeMap<String, Group>,
}

#[derive(Default)]
struct Group {
    members: Vec<Member>,
    next: usize,
}

struct Member {
    id: u64,
    tx: mpsc::Sender<Message>,
}

/// Removes a subscription from its topic when its stream is dropped.
struct Unsubscribe {
    inner: Arc<Inner>,
    topic: String,
    queue: Option<String>,
    id: u64,
}

// === impl MemoryBroker ===

impl MemoryBroker {
    /// A new broker with no subscriptions and the default buffer and publish timeout.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_BUFFER, DEFAULT_PUBLISH_TIMEOUT)
    }

    /// A new broker whose subscriptions buffer `buffer` messages (at least 1) and whose
    /// publishes wait at most `publish_timeout` for room in a full buffer.
    pub fn with_limits(buffer: usize, publish_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                topics: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                buffer: buffer.max(1),
                publish_timeout,
            }),
        }
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("buffer", &self.inner.buffer)
            .field("publish_timeout", &self.inner.publish_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn name(&self) -> &str {
        NAME
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), BrokerError> {
        validate_topic(topic)?;
        // One target per plain subscription, one candidate list per group (the round-robin
        // pick first); senders are cloned so that no lock is held while waiting.
        let targets: Vec<Vec<mpsc::Sender<Message>>> = {
            let mut topics = self.inner.lock();
            let Some(entry) = topics.get_mut(topic) else {
                return Ok(());
            };
            let mut targets: Vec<_> = entry.plain.iter().map(|m| vec![m.tx.clone()]).collect();
            for group in entry.groups.values_mut() {
                let n = group.members.len();
                if n == 0 {
                    continue;
                }
                let start = group.next % n;
                group.next = group.next.wrapping_add(1);
                targets.push(
                    (0..n)
                        .map(|i| group.members[(start + i) % n].tx.clone())
                        .collect(),
                );
            }
            targets
        };
        let timeout = self.inner.publish_timeout;
        let results = join_all(
            targets
                .into_iter()
                .map(|candidates| deliver(candidates, message.clone(), timeout)),
        )
        .await;
        let full = results.iter().filter(|ok| !**ok).count();
        if full > 0 {
            return Err(BrokerError::Backend {
                broker: NAME.to_owned(),
                message: format!(
                    "{full} subscription(s) of topic {topic:?} kept a full buffer ({} messages) \
                     for {timeout:?}; their handlers are too slow: the message was not \
                     delivered to them",
                    self.inner.buffer
                ),
                source: None,
            });
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, BrokerError> {
        validate_topic(topic)?;
        check_options(NAME, &options)?;
        let (tx, rx) = mpsc::channel(self.inner.buffer);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut topics = self.inner.lock();
            let entry = topics.entry(topic.to_owned()).or_default();
            let member = Member { id, tx };
            match &options.queue {
                Some(queue) => entry
                    .groups
                    .entry(queue.clone())
                    .or_default()
                    .members
                    .push(member),
                None => entry.plain.push(member),
            }
        }
        let guard = Unsubscribe {
            inner: self.inner.clone(),
            topic: topic.to_owned(),
            queue: options.queue,
            id,
        };
        let topic: Arc<str> = Arc::from(topic);
        Ok(Box::pin(ReceiverStream::new(rx).map(move |message| {
            // The stream owns the guard: dropping the stream unsubscribes.
            let _ = &guard;
            Ok(Delivery::new(Arc::clone(&topic), message, None))
        })))
    }
}

/// Checks the options every non-durable broker refuses: a durable name, manual acks and an
/// invalid queue name.
pub(super) fn check_options(broker: &str, options: &SubscribeOptions) -> Result<(), BrokerError> {
    if options.durable.is_some() {
        return Err(BrokerError::Unsupported {
            broker: broker.to_owned(),
            feature: "durable subscriptions (use a durable broker such as NATS JetStream)",
        });
    }
    if options.ack == AckMode::Manual {
        return Err(BrokerError::Unsupported {
            broker: broker.to_owned(),
            feature: "manual acknowledgement (use a durable broker such as NATS JetStream)",
        });
    }
    if let Some(queue) = &options.queue {
        validate_queue(queue)?;
    }
    Ok(())
}

/// Hands `message` to the first candidate with room, else waits for the first candidate
/// up to `timeout`. Closed candidates (just unsubscribed) are skipped; `true` when the
/// message was delivered or every candidate is gone.
async fn deliver(
    candidates: Vec<mpsc::Sender<Message>>,
    message: Message,
    timeout: Duration,
) -> bool {
    let mut message = message;
    let mut open = Vec::with_capacity(candidates.len());
    for tx in candidates {
        match tx.try_send(message) {
            Ok(()) => return true,
            Err(TrySendError::Full(m)) => {
                message = m;
                open.push(tx);
            }
            Err(TrySendError::Closed(m)) => message = m,
        }
    }
    for tx in open {
        match tx.send_timeout(message, timeout).await {
            Ok(()) => return true,
            Err(SendTimeoutError::Timeout(_)) => return false,
            Err(SendTimeoutError::Closed(m)) => message = m,
        }
    }
    true
}

// === impl Inner ===

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Topic>> {
        lock(&self.topics)
    }
}

// === impl Unsubscribe ===

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let mut topics = self.inner.lock();
        let Some(entry) = topics.get_mut(&self.topic) else {
            return;
        };
        match &self.queue {
            Some(queue) => {
                if let Some(group) = entry.groups.get_mut(queue) {
                    group.members.retain(|m| m.id != self.id);
                    if group.members.is_empty() {
                        entry.groups.remove(queue);
                    }
                }
            }
            None => entry.plain.retain(|m| m.id != self.id),
        }
        if entry.plain.is_empty() && entry.groups.is_empty() {
            topics.remove(&self.topic);
        }
    }
}
