//! broker-fixture: one process of the local broker's cross-process tests
//! (micro-testkit/tests/broker_local.rs): micro's `LocalBroker` on a registry directory it
//! shares with the other processes, delivering over real gRPC on loopback.
//!
//! ```text
//! broker-fixture <registry-dir> subscribe <topic> <spec>...
//! ```
//! Subscribes once per spec (`plain`, or `queue:<group>` for a queue-group member), prints
//! `ready addr=- node=<pid>` once every subscription is registered, then one line per
//! delivered message, `got sub=<index of the spec> n=<the message's header n>`. On SIGTERM
//! it drops its subscriptions (deregistering them) and exits 0.
//!
//! ```text
//! broker-fixture <registry-dir> publish <topic> <subscribers> <from> <to>
//! ```
//! Waits until it sees exactly `<subscribers>` subscribers of `<topic>` (a readiness wait on
//! the registry, at most 30 s), publishes messages `from..to` (header `n`, body `body <n>`),
//! each awaited so they arrive in order, prints `published <count>` and exits 0.

#![allow(clippy::print_stdout)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;
use micro::{
    broker::{Broker, LocalBroker, Message, SubscribeOptions},
    registry::{LocalRegistry, SharedRegistry},
};
use tokio::signal::unix::{SignalKind, signal};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a publisher waits for the subscribers it was told to expect.
const SUBSCRIBERS_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, mode, topic, rest @ ..] = args.as_slice() else {
        return Err(usage());
    };
    let registry: SharedRegistry = Arc::new(LocalRegistry::with_dir(PathBuf::from(dir))?);
    let broker = LocalBroker::new(registry);
    match (mode.as_str(), rest) {
        ("subscribe", specs) if !specs.is_empty() => subscribe(&broker, topic, specs).await,
        ("publish", [subscribers, from, to]) => {
            publish(
                &broker,
                topic,
                subscribers.parse()?,
                from.parse()?,
                to.parse()?,
            )
            .await
        }
        _ => Err(usage()),
    }
}

fn usage() -> BoxError {
    "usage: broker-fixture <registry-dir> subscribe <topic> (plain|queue:<group>)... | \
     broker-fixture <registry-dir> publish <topic> <subscribers> <from> <to>"
        .into()
}

async fn subscribe(broker: &LocalBroker, topic: &str, specs: &[String]) -> Result<(), BoxError> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut readers = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let options = match spec.strip_prefix("queue:") {
            Some(group) => SubscribeOptions {
                queue: Some(group.to_owned()),
                ..SubscribeOptions::default()
            },
            None if spec == "plain" => SubscribeOptions::default(),
            None => {
                return Err(format!("subscription spec {spec:?}: plain or queue:<group>").into());
            }
        };
        let mut subscription = broker.subscribe(topic, options).await?;
        readers.push(tokio::spawn(async move {
            while let Some(delivery) = subscription.next().await {
                match delivery {
                    Ok(delivery) => {
                        let n = delivery
                            .message
                            .headers
                            .get("n")
                            .map_or("?", String::as_str);
                        println!("got sub={index} n={n}");
                    }
                    Err(err) => tracing::warn!(error = %err, "delivery failed"),
                }
            }
        }));
    }
    println!("ready addr=- node={}", std::process::id());
    terminate.recv().await;
    // Dropping the readers drops their subscriptions, which deregisters them.
    for reader in &readers {
        reader.abort();
    }
    for reader in readers {
        let _ = reader.await;
    }
    Ok(())
}

async fn publish(
    broker: &LocalBroker,
    topic: &str,
    subscribers: usize,
    from: u32,
    to: u32,
) -> Result<(), BoxError> {
    let deadline = tokio::time::Instant::now() + SUBSCRIBERS_TIMEOUT;
    loop {
        let seen = broker.subscribers(topic).await?.len();
        if seen == subscribers {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "saw {seen} subscribers of {topic} after {SUBSCRIBERS_TIMEOUT:?}, expected {subscribers}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in from..to {
        let message = Message {
            headers: [("n".to_owned(), n.to_string())].into_iter().collect(),
            body: Bytes::from(format!("body {n}")),
        };
        broker.publish(topic, message).await?;
    }
    println!("published {}", to - from);
    Ok(())
}
