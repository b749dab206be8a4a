//! [`NatsBrokerBuilder`]: the options of a [`NatsBroker`] and the connect that applies them.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use async_nats::{ConnectOptions, jetstream};
use micro_core::broker::BrokerError;
use tokio::sync::Notify;

use super::{
    DEFAULT_MAX_UNCONFIRMED, DEFAULT_PREFIX, PublishConfirm,
    confirm::{Confirmer, Window},
    core::{Inner, NatsBroker},
    error::backend,
    wire::validate_prefix,
};

/// Builds a [`NatsBroker`]; see the [module docs](super) for what each option means on the
/// wire.
#[derive(Debug, Clone)]
#[must_use]
pub struct NatsBrokerBuilder {
    pub(super) servers: Vec<String>,
    pub(super) prefix: String,
    pub(super) jetstream: bool,
    pub(super) confirm: PublishConfirm,
    pub(super) publish_timeout: Duration,
    pub(super) client_capacity: usize,
    pub(super) max_unconfirmed: usize,
    pub(super) subscription_capacity: usize,
    pub(super) duplicate_window: Duration,
    pub(super) ack_wait: Duration,
    pub(super) pull_batch: usize,
    pub(super) max_reconnect_delay: Duration,
    pub(super) connection_name: Option<String>,
}

// === impl NatsBrokerBuilder ===

impl NatsBrokerBuilder {
    /// A builder for the servers in `servers`: comma-separated `nats://host:port` URLs.
    pub fn new(servers: &str) -> Self {
        Self {
            servers: servers
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            prefix: DEFAULT_PREFIX.to_owned(),
            jetstream: false,
            confirm: PublishConfirm::Resend,
            publish_timeout: Duration::from_secs(5),
            client_capacity: 1024,
            max_unconfirmed: DEFAULT_MAX_UNCONFIRMED,
            subscription_capacity: 8192,
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(30),
            pull_batch: 128,
            max_reconnect_delay: Duration::from_millis(500),
            connection_name: None,
        }
    }

    /// The subject prefix (default `micro`): topic `t` is subject `<prefix>.t`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Publish through JetStream: create each topic's stream if missing and wait for the
    /// server's ack (default off: core NATS).
    pub fn jetstream(mut self, on: bool) -> Self {
        self.jetstream = on;
        self
    }

    /// How core NATS publishes are confirmed (default [`PublishConfirm::Resend`]).
    pub fn confirm(mut self, confirm: PublishConfirm) -> Self {
        self.confirm = confirm;
        self
    }

    /// How long a publish may take, waiting for a reconnect, for room in the buffer and for
    /// the confirmation included (default 5 s).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Bound of the client's outgoing command buffer, in messages (default 1024).
    pub fn client_capacity(mut self, capacity: usize) -> Self {
        self.client_capacity = capacity.max(1);
        self
    }

    /// With [`PublishConfirm::Resend`], how many published messages the broker keeps until
    /// the server confirms them (default [`DEFAULT_MAX_UNCONFIRMED`]). A publish waits
    /// while the window is full and fails after the publish timeout, so this bounds the
    /// memory held during an outage.
    pub fn max_unconfirmed(mut self, messages: usize) -> Self {
        self.max_unconfirmed = messages.max(1);
        self
    }

    /// Bound of each subscription's incoming buffer, in messages (default 8192); a
    /// subscriber that falls further behind is a NATS slow consumer and loses messages
    /// (core) or gets them again (JetStream).
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = capacity.max(1);
        self
    }

    /// The duplicate window of the streams the broker creates (default 2 minutes).
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// The ack wait of consumers when the subscription does not set one (default 30 s).
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// How many messages a JetStream subscription asks for at a time (default 128); at most
    /// these many are in flight unacked per subscription.
    pub fn pull_batch(mut self, batch: usize) -> Self {
        self.pull_batch = batch.max(1);
        self
    }

    /// The longest pause between reconnect attempts (default 500 ms; attempts start at
    /// once and back off exponentially up to this).
    pub fn max_reconnect_delay(mut self, delay: Duration) -> Self {
        self.max_reconnect_delay = delay;
        self
    }

    /// The client connection name shown by the server's monitoring.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Connects.
    ///
    /// # Errors
    /// An invalid prefix or server list, or no server reachable.
    pub async fn connect(self) -> Result<NatsBroker, BrokerError> {
        let name = self
            .servers
            .iter()
            .map(|s| {
                if s.contains("://") {
                    s.clone()
                } else {
                    format!("nats://{s}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        validate_prefix(&self.prefix)?;
        if self.servers.is_empty() {
            return Err(BrokerError::Invalid {
                what: "server list",
                value: String::new(),
                reason: "no server given".to_owned(),
            });
        }
        let max_delay = self.max_reconnect_delay;
        let reconnected = Arc::new(Notify::new());
        let on_connect = Arc::clone(&reconnected);
        let mut options = ConnectOptions::new()
            .client_capacity(self.client_capacity)
            .subscription_capacity(self.subscription_capacity)
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| {
                if attempts <= 1 {
                    Duration::ZERO
                } else {
                    let exp = u32::try_from(attempts.min(16)).unwrap_or(16);
                    (Duration::from_millis(10) * 2u32.saturating_pow(exp)).min(max_delay)
                }
            })
            .event_callback(move |event| {
                let on_connect = Arc::clone(&on_connect);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("nats: connected");
                            on_connect.notify_one();
                        }
                        async_nats::Event::Disconnected => tracing::warn!("nats: disconnected"),
                        async_nats::Event::SlowConsumer(sid) => tracing::warn!(
                            sid,
                            "nats: a subscription fell behind its buffer (subscription_capacity); \
                             core NATS messages were dropped for it"
                        ),
                        other => tracing::debug!(event = %other, "nats: event"),
                    }
                }
            });
        if let Some(connection_name) = &self.connection_name {
            options = options.name(connection_name);
        }
        let servers: Vec<async_nats::ServerAddr> = self
            .servers
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e: std::io::Error| BrokerError::Invalid {
                what: "server list",
                value: self.servers.join(","),
                reason: e.to_string(),
            })?;
        let client = options
            .connect(servers)
            .await
            .map_err(|e| backend(&name, "connect", e))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(self.publish_timeout);
        let confirmer = Confirmer::start(&client, &name, self.publish_timeout, reconnected).await?;
        let window = Window::new(Arc::clone(&confirmer), self.max_unconfirmed);
        Ok(NatsBroker {
            inner: Arc::new(Inner {
                name,
                client,
                js,
                config: self,
                confirmer,
                window,
                subjects: RwLock::new(HashMap::default()),
                streams: Mutex::new(HashSet::new()),
            }),
        })
    }
}
