//! A service's subscriptions: one task per subscription, running its handler.

use std::{fmt, sync::Arc, time::Duration};

use futures_util::StreamExt;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::broker::{BrokerError, Handler, SharedBroker, SubscribeOptions, Subscription};

/// A subscription asked for with `ServiceBuilder::subscribe`.
pub(super) struct Subscriber {
    pub(super) topic: String,
    pub(super) options: SubscribeOptions,
    pub(super) handler: Arc<dyn Handler>,
}

/// The running subscriptions of a started service.
#[derive(Debug, Default)]
pub(super) struct Running {
    tasks: Vec<(String, oneshot::Sender<()>, JoinHandle<()>)>,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.topic)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Subscribes to every topic, then starts the handler tasks; nothing runs if any
/// subscription fails (those already made are dropped, which unsubscribes them).
pub(super) async fn start(
    broker: Option<&SharedBroker>,
    subscribers: Vec<Subscriber>,
) -> Result<Running, BrokerError> {
    let Some(broker) = broker else {
        return Ok(Running::default());
    };
    let mut subscriptions = Vec::with_capacity(subscribers.len());
    for subscriber in subscribers {
        let subscription = broker
            .subscribe(&subscriber.topic, subscriber.options.clone())
            .await?;
        subscriptions.push((subscriber, subscription));
    }
    let tasks = subscriptions
        .into_iter()
        .map(|(subscriber, subscription)| {
            let (stop, stopped) = oneshot::channel();
            let topic = subscriber.topic.clone();
            tracing::info!(%topic, broker = %broker.name(), "subscribed");
            let task = tokio::spawn(run(subscriber, subscription, stopped));
            (topic, stop, task)
        })
        .collect();
    Ok(Running { tasks })
}

// === impl Running ===

impl Running {
    /// Stops taking deliveries, lets each handler in progress finish within `grace`, then
    /// drops the subscriptions.
    pub(super) async fn stop(&mut self, grace: Duration) {
        let tasks = std::mem::take(&mut self.tasks);
        let mut waiting = Vec::with_capacity(tasks.len());
        for (topic, stop, task) in tasks {
            let _ = stop.send(());
            waiting.push((topic, task));
        }
        let deadline = tokio::time::Instant::now() + grace;
        for (topic, mut task) in waiting {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(join)) => {
                    tracing::error!(%topic, error = %join, "subscription handler task failed");
                }
                Err(_) => {
                    tracing::warn!(%topic, ?grace, "handler still running after the grace period was cut off");
                    task.abort();
                }
            }
        }
    }

    /// Stops everything at once (the service was dropped).
    pub(super) fn abort(&mut self) {
        for (_, _, task) in self.tasks.drain(..) {
            task.abort();
        }
    }
}

/// Handles deliveries one at a time until stopped or the subscription ends.
async fn run(
    subscriber: Subscriber,
    mut subscription: Subscription,
    mut stop: oneshot::Receiver<()>,
) {
    let Subscriber { topic, handler, .. } = subscriber;
    loop {
        let item = tokio::select! {
            biased;
            _ = &mut stop => break,
            item = subscription.next() => item,
        };
        let mut delivery = match item {
            Some(Ok(delivery)) => delivery,
            Some(Err(err)) => {
                tracing::warn!(%topic, error = %err, "subscription reported an error");
                continue;
            }
            None => {
                tracing::warn!(%topic, "subscription ended; no more messages will be handled");
                break;
            }
        };
        let acker = delivery.take_acker();
        match handler.call(delivery).await {
            Ok(()) => {
                if let Some(acker) = acker
                    && let Err(err) = acker.ack().await
                {
                    tracing::warn!(%topic, error = %err, "ack failed; the message will be delivered again");
                }
            }
            Err(status) => {
                tracing::warn!(%topic, code = ?status.code(), message = %status.message(), "message handler failed");
                if let Some(acker) = acker
                    && let Err(err) = acker.nack().await
                {
                    tracing::warn!(%topic, error = %err, "nack failed");
                }
            }
        }
    }
    // Dropping the subscription unsubscribes.
    drop(subscription);
}
