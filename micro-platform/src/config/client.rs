//! [`ConfigClient`]: calls the config service, and reads it as a configuration source.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use micro_core::{
    Channel, Client,
    client::{CallOptions, RequestExt},
    config::{Changes, ConfigError, Source, Value},
};
use tokio::sync::mpsc;
use tonic::{Request, Status};

use super::{SERVICE_NAME, WATCH_TIMEOUT};
use crate::proto::config::v1::{self as pb, config_client::ConfigClient as Stub};

/// First wait before opening a broken `Watch` again; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before opening a broken `Watch` again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A client of the config service for one environment, over a micro [`Channel`].
///
/// Its methods call the service (errors are the service's [`Status`]); as a
/// [`Source`] it is the environment's whole tree, reloaded on every change notice:
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use micro_core::config::Config;
/// use micro_platform::config::ConfigClient;
///
/// let client = ConfigClient::connect("127.0.0.1:7700", "prod")?;
/// client.set("db.pool", "20").await?;
/// let config = Config::builder().source(client).build().await?;
/// let pool: u32 = config.get("db.pool")?;
/// # let _ = pool; Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConfigClient {
    stub: Stub<Channel>,
    environment: Arc<str>,
    name: Arc<str>,
}

impl std::fmt::Debug for ConfigClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ConfigClient {
    /// A client of `environment` over `channel`, a channel to the config service (usually
    /// `client.channel("micro.config")`).
    pub fn new(channel: Channel, environment: &str) -> Self {
        let name = format!("config service {} ({environment})", channel.service());
        Self::with_name(channel, environment, name)
    }

    /// A client of `environment` that finds the service as [`SERVICE_NAME`] through
    /// `client`'s registry.
    pub fn from_client(client: &Client, environment: &str) -> Self {
        let name = format!("config service {SERVICE_NAME} ({environment})");
        Self::with_name(client.channel(SERVICE_NAME), environment, name)
    }

    /// A client of `environment` at `address` (`host:port`), with no registry.
    ///
    /// # Errors
    /// [`ConfigError::Unavailable`] when `address` is not `host:port`.
    pub fn connect(address: &str, environment: &str) -> Result<Self, ConfigError> {
        let name = format!("config service {} ({environment})", address.trim());
        let channel = crate::channel::at_address(SERVICE_NAME, &pb::CONFIG_DESCRIPTOR, address)
            .map_err(|message| ConfigError::Unavailable {
                source_name: name.clone(),
                message,
            })?;
        Ok(Self::with_name(channel, environment, name))
    }

    fn with_name(channel: Channel, environment: &str, name: String) -> Self {
        Self {
            stub: Stub::new(channel),
            environment: Arc::from(environment),
            name: Arc::from(name),
        }
    }

    /// The environment this client reads and writes.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// The value at `path` as JSON, `None` when nothing is set at the path itself.
    ///
    /// # Errors
    /// The service's status (INVALID_ARGUMENT for a bad path, UNAVAILABLE, …).
    pub async fn get(&self, path: &str) -> Result<Option<Value>, Status> {
        let response = self
            .stub
            .clone()
            .get(pb::GetRequest {
                environment: self.environment.to_string(),
                path: path.to_owned(),
            })
            .await?
            .into_inner();
        if !response.found {
            return Ok(None);
        }
        serde_json::from_str(&response.value)
            .map(Some)
            .map_err(|error| Status::internal(format!("the service's value at {path}: {error}")))
    }

    /// Sets the value at `path` to `value`, YAML or JSON text; returns the new revision.
    ///
    /// # Errors
    /// INVALID_ARGUMENT naming the path and the parse error when `value` does not parse
    /// (nothing is written); the service's other statuses.
    pub async fn set(&self, path: &str, value: &str) -> Result<u64, Status> {
        Ok(self
            .stub
            .clone()
            .set(pb::SetRequest {
                environment: self.environment.to_string(),
                path: path.to_owned(),
                value: value.to_owned(),
            })
            .await?
            .into_inner()
            .revision)
    }

    /// Deletes the value at `path` and every value below it; returns how many were deleted.
    ///
    /// # Errors
    /// The service's status.
    pub async fn delete(&self, path: &str) -> Result<u64, Status> {
        Ok(self
            .stub
            .clone()
            .delete(pb::DeleteRequest {
                environment: self.environment.to_string(),
                path: path.to_owned(),
            })
            .await?
            .into_inner()
            .deleted)
    }

    /// Every value of the environment as one tree.
    ///
    /// # Errors
    /// The service's status.
    pub async fn list(&self) -> Result<Value, Status> {
        let response = self
            .stub
            .clone()
            .list(pb::ListRequest {
                environment: self.environment.to_string(),
            })
            .await?
            .into_inner();
        serde_json::from_str(&response.tree)
            .map_err(|error| Status::internal(format!("the service's tree: {error}")))
    }

    /// Opens a `Watch` stream; resolves once the service has subscribed it.
    async fn open_watch(&self) -> Result<tonic::Streaming<pb::WatchResponse>, Status> {
        let request = Request::new(pb::WatchRequest {
            environment: self.environment.to_string(),
        })
        .with_call_options(CallOptions::new().timeout(WATCH_TIMEOUT));
        Ok(self.stub.clone().watch(request).await?.into_inner())
    }
}

#[async_trait]
impl Source for ConfigClient {
    fn name(&self) -> String {
        self.name.to_string()
    }

    async fn load(&self) -> Result<Value, ConfigError> {
        self.list().await.map_err(|status| {
            // A bad environment, or a stored value that no longer parses: the config keeps
            // its last good values either way.
            if matches!(
                status.code(),
                tonic::Code::InvalidArgument | tonic::Code::DataLoss
            ) {
                ConfigError::Malformed {
                    source_name: self.name(),
                    message: status.message().to_owned(),
                }
            } else {
                ConfigError::Unavailable {
                    source_name: self.name(),
                    message: format!("{:?}: {}", status.code(), status.message()),
                }
            }
        })
    }

    async fn changes(&self) -> Result<Option<Changes>, ConfigError> {
        // One slot is enough: a pending reload reads the latest values.
        let (sender, receiver) = mpsc::channel(1);
        let task = tokio::spawn(watch(self.clone(), sender));
        Ok(Some(Box::pin(crate::stream::TaskStream::new(
            receiver, task,
        ))))
    }
}

/// Forwards every change notice; each opening of the stream (the first too, since a change
/// may have come between the load and the opening) is followed by one reload.
async fn watch(client: ConfigClient, sender: mpsc::Sender<()>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match client.open_watch().await {
            Ok(mut stream) => {
                backoff = MIN_BACKOFF;
                if let Err(mpsc::error::TrySendError::Closed(())) = sender.try_send(()) {
                    return;
                }
                loop {
                    let message = tokio::select! {
                        () = sender.closed() => return,
                        message = stream.message() => message,
                    };
                    match message {
                        Ok(Some(_)) => {
                            // Full: a reload is pending already and reads the latest state.
                            if let Err(mpsc::error::TrySendError::Closed(())) = sender.try_send(())
                            {
                                return;
                            }
                        }
                        Ok(None) => {
                            tracing::debug!(source = %client.name, "configuration watch ended; watching again");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(source = %client.name, %status, "configuration watch broken; watching again");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::warn!(source = %client.name, %status, ?backoff, "cannot watch configuration; retrying");
            }
        }
        tokio::select! {
            () = sender.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
