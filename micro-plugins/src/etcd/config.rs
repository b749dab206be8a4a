//! [`EtcdConfigSource`]: configuration under an etcd prefix, watched for changes.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use async_trait::async_trait;
use etcd_client::{Client, GetOptions, WatchOptions};
use futures_util::Stream;
use micro_core::config::{Changes, ConfigError, Source, Value};
use serde_json::Map;
use tokio::sync::{OnceCell, mpsc};

/// The default key prefix; the environment is appended: `/micro/config/<env>/`.
pub const CONFIG_PREFIX: &str = "/micro/config";

/// Configuration stored in etcd, one key per value, under `/micro/config/<environment>/`.
///
/// The key's path below the prefix is the configuration path (`/micro/config/prod/db/pool`
/// is `db.pool`); the value is YAML, so `20` is a number, `true` a boolean, `db.local` a
/// string and `{a: 1}` a mapping (JSON is YAML too):
///
/// ```text
/// etcdctl put /micro/config/prod/db/pool 20
/// etcdctl put /micro/config/prod/db/host db.internal
/// ```
///
/// The whole prefix is read on every change. A value that does not parse fails the load
/// with an error naming the key: the configuration keeps its last good values (see
/// [`micro_core::config`]). Changes are watched on the prefix; after a broken watch the
/// source reloads once the watch is back, so nothing written meanwhile is missed.
pub struct EtcdConfigSource {
    endpoints: Vec<String>,
    prefix: String,
    client: OnceCell<Client>,
}

impl std::fmt::Debug for EtcdConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfigSource")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdConfigSource {
    /// The keys under `/micro/config/<environment>/` on the etcd cluster at `endpoints`
    /// (`host:port`). Connects on first use.
    pub fn new<I, S>(endpoints: I, environment: &str) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_prefix(endpoints, format!("{CONFIG_PREFIX}/{environment}/"))
    }

    /// The keys under `prefix` (which should end with `/`).
    pub fn with_prefix<I, S>(endpoints: I, prefix: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: prefix.into(),
            client: OnceCell::new(),
        }
    }

    /// The key prefix read.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn client(&self) -> Result<Client, ConfigError> {
        self.client
            .get_or_try_init(|| async {
                Client::connect(self.endpoints.clone(), None)
                    .await
                    .map_err(|error| self.unavailable(error))
            })
            .await
            .cloned()
    }

    fn unavailable(&self, error: impl std::fmt::Display) -> ConfigError {
        ConfigError::Unavailable {
            source_name: self.name(),
            message: error.to_string(),
        }
    }
}

#[async_trait]
impl Source for EtcdConfigSource {
    fn name(&self) -> String {
        format!("etcd {} at {}", self.prefix, self.endpoints.join(","))
    }

    async fn load(&self) -> Result<Value, ConfigError> {
        let mut client = self.client().await?;
        let response = client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|error| self.unavailable(error))?;
        let mut root = Value::Object(Map::new());
        for kv in response.kvs() {
            let key = kv.key_str().map_err(|error| self.unavailable(error))?;
            let Some(path) = key.strip_prefix(&self.prefix) else {
                continue;
            };
            let path: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
            if path.is_empty() {
                continue;
            }
            let text = kv.value_str().map_err(|error| ConfigError::Malformed {
                source_name: self.name(),
                message: format!("key {key}: {error}"),
            })?;
            let value: Value = if text.trim().is_empty() {
                Value::Null
            } else {
                yaml_serde::from_str(text).map_err(|error| ConfigError::Malformed {
                    source_name: self.name(),
                    message: format!("key {key}: {error}"),
                })?
            };
            set(&mut root, &path, value);
        }
        Ok(root)
    }

    async fn changes(&self) -> Result<Option<Changes>, ConfigError> {
        let client = self.client().await?;
        let (sender, receiver) = mpsc::channel(1);
        let prefix = self.prefix.clone();
        let name = self.name();
        let task = tokio::spawn(watch(client, prefix, name, sender));
        Ok(Some(Box::pin(EtcdChanges {
            receiver,
            task: Some(task),
        })))
    }
}

/// Forwards every change under `prefix`, and one reload each time the watch is (re)established.
async fn watch(mut client: Client, prefix: String, name: String, sender: mpsc::Sender<()>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let watched = client
            .watch(prefix.as_str(), Some(WatchOptions::new().with_prefix()))
            .await;
        match watched {
            Ok(mut stream) => {
                backoff = Duration::from_millis(100);
                // Once the watch is in place, one reload: whatever changed before it (since
                // the first load, or during a broken watch) is read now.
                if sender.send(()).await.is_err() {
                    return;
                }
                loop {
                    match stream.message().await {
                        Ok(Some(response)) if response.events().is_empty() => {}
                        Ok(Some(_)) => {
                            // Full: a reload is pending already and reads the latest state.
                            if let Err(mpsc::error::TrySendError::Closed(())) = sender.try_send(())
                            {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            tracing::warn!(source = %name, %error, "configuration watch broken; watching again");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(source = %name, %error, ?backoff, "cannot watch configuration; retrying");
            }
        }
        tokio::select! {
            () = sender.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

struct EtcdChanges {
    receiver: mpsc::Receiver<()>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Stream for EtcdChanges {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for EtcdChanges {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn set(root: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = root;
    for key in parents {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else { return };
        node = map
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(map) = node {
        map.insert((*last).to_owned(), value);
    }
}
