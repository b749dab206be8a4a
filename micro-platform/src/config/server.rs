//! [`ConfigService`]: the `micro.config.v1.Config` server over any store.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use futures_util::Stream;
use micro_core::store::{ListOptions, MAX_PAGE, Namespace, Put, SharedStore, StoreError};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};
use tonic::{Request, Response, Status};

use super::{DATABASE, parse_value, validate_path};
use crate::proto::config::v1::{self as pb, config_server::ConfigServer};

/// The config service over a store: add [`ConfigService::into_server`] to a micro
/// [`Service`](micro_core::Service).
///
/// Every write goes through the service: it parses the value first (text that does not
/// parse is INVALID_ARGUMENT naming the path and the parser's error, and nothing is
/// written), writes it, and notifies the environment's `Watch` streams. Values written to
/// the store behind its back are served but not announced.
///
/// `Watch` streams last until their client ends them, so a server shutting down must end
/// them, or its drain waits for them: call [`close_watches`](Self::close_watches) (on any
/// clone) when the shutdown starts.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), micro_core::ServiceError> {
/// use std::sync::Arc;
/// use micro_core::{Service, store::MemoryStore};
/// use micro_platform::config::ConfigService;
///
/// Service::builder("micro.config")
///     .add_service(ConfigService::new(Arc::new(MemoryStore::new())).into_server())
///     .run()
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct ConfigService {
    store: SharedStore,
    shared: Arc<Shared>,
}

struct Shared {
    revision: AtomicU64,
    /// (environment, revision) of every write.
    changes: broadcast::Sender<(Arc<str>, u64)>,
    closed: watch::Sender<bool>,
}

impl ConfigService {
    /// Serves the values kept in `store`.
    pub fn new(store: SharedStore) -> Self {
        Self {
            store,
            shared: Arc::new(Shared {
                revision: AtomicU64::new(0),
                changes: broadcast::channel(256).0,
                closed: watch::Sender::new(false),
            }),
        }
    }

    /// The tonic server.
    pub fn into_server(self) -> ConfigServer<Self> {
        ConfigServer::new(self)
    }

    /// The store served.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Ends every `Watch` stream, now and from now on (for a shutdown).
    pub fn close_watches(&self) {
        self.shared.closed.send_replace(true);
    }

    fn changed(&self, environment: &str) -> u64 {
        let revision = self.shared.revision.fetch_add(1, Ordering::SeqCst) + 1;
        // No receivers is fine: nobody watches.
        let _ = self.shared.changes.send((Arc::from(environment), revision));
        revision
    }

    /// Every (path, text) of an environment, in path order.
    async fn entries(&self, namespace: &Namespace) -> Result<Vec<(String, String)>, Status> {
        let mut entries = Vec::new();
        let mut start_after = None;
        loop {
            let page = self
                .store
                .list(
                    namespace,
                    ListOptions {
                        prefix: String::new(),
                        start_after: start_after.take(),
                        limit: MAX_PAGE,
                    },
                )
                .await
                .map_err(store_status)?;
            let records = self
                .store
                .get_many(namespace, &page.keys)
                .await
                .map_err(store_status)?;
            for (key, record) in page.keys.into_iter().zip(records) {
                if let Some(record) = record {
                    let text = String::from_utf8_lossy(&record.value).into_owned();
                    entries.push((key, text));
                }
            }
            match page.next {
                Some(next) => start_after = Some(next),
                None => return Ok(entries),
            }
        }
    }
}

impl std::fmt::Debug for ConfigService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigService")
            .field("store", &self.store.name())
            .field("revision", &self.shared.revision.load(Ordering::SeqCst))
            .finish()
    }
}

fn store_status(error: StoreError) -> Status {
    crate::kv::status_from_error(error)
}

fn invalid(message: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("invalid argument: {message}"))
}

/// The namespace of `environment`, checked.
fn namespace(environment: &str) -> Result<Namespace, Status> {
    Namespace::new(DATABASE, environment)
        .map_err(|error| invalid(format_args!("environment {environment:?}: {error}")))
}

fn path(path: &str) -> Result<(), Status> {
    validate_path(path).map_err(invalid)
}

/// Sets `value` at `path` in `root`, creating objects on the way.
pub(super) fn set_at(root: &mut Value, path: &str, value: Value) {
    let mut node = root;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else { return };
        if segments.peek().is_none() {
            // A value set on a parent earlier merges with values below it.
            match (map.get_mut(segment), value) {
                (Some(Value::Object(existing)), Value::Object(new)) => existing.extend(new),
                (_, value) => {
                    map.insert(segment.to_owned(), value);
                }
            }
            return;
        }
        node = map
            .entry(segment.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

#[tonic::async_trait]
impl pb::config_server::Config for ConfigService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        let namespace = namespace(&request.environment)?;
        path(&request.path)?;
        let record = self
            .store
            .get(&namespace, &request.path)
            .await
            .map_err(store_status)?;
        let Some(record) = record else {
            return Ok(Response::new(pb::GetResponse::default()));
        };
        let text = String::from_utf8_lossy(&record.value);
        let value = parse_value(&text).map_err(|error| {
            Status::data_loss(format!("stored value at {}: {error}", request.path))
        })?;
        Ok(Response::new(pb::GetResponse {
            found: true,
            value: value.to_string(),
        }))
    }

    async fn set(
        &self,
        request: Request<pb::SetRequest>,
    ) -> Result<Response<pb::SetResponse>, Status> {
        let request = request.into_inner();
        let namespace = namespace(&request.environment)?;
        path(&request.path)?;
        parse_value(&request.value)
            .map_err(|error| invalid(format_args!("value at {}: {error}", request.path)))?;
        let put = Put::new(request.path, request.value);
        micro_core::store::validate_put(&put).map_err(store_status)?;
        self.store
            .put(&namespace, put)
            .await
            .map_err(store_status)?;
        let revision = self.changed(&request.environment);
        Ok(Response::new(pb::SetResponse { revision }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        let namespace = namespace(&request.environment)?;
        path(&request.path)?;
        let below = format!("{}.", request.path);
        let mut keys = vec![request.path.clone()];
        let mut start_after = None;
        loop {
            let page = self
                .store
                .list(
                    &namespace,
                    ListOptions {
                        prefix: below.clone(),
                        start_after: start_after.take(),
                        limit: MAX_PAGE,
                    },
                )
                .await
                .map_err(store_status)?;
            keys.extend(page.keys);
            match page.next {
                Some(next) => start_after = Some(next),
                None => break,
            }
        }
        let mut deleted = 0u64;
        for chunk in keys.chunks(micro_core::store::MAX_BATCH) {
            let results = self
                .store
                .delete_many(&namespace, chunk)
                .await
                .map_err(store_status)?;
            deleted += results.into_iter().filter(|deleted| *deleted).count() as u64;
        }
        let revision = if deleted > 0 {
            self.changed(&request.environment)
        } else {
            self.shared.revision.load(Ordering::SeqCst)
        };
        Ok(Response::new(pb::DeleteResponse { deleted, revision }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let request = request.into_inner();
        let namespace = namespace(&request.environment)?;
        let revision = self.shared.revision.load(Ordering::SeqCst);
        let mut root = Value::Object(Map::new());
        for (key, text) in self.entries(&namespace).await? {
            let value = parse_value(&text)
                .map_err(|error| Status::data_loss(format!("stored value at {key}: {error}")))?;
            set_at(&mut root, &key, value);
        }
        Ok(Response::new(pb::ListResponse {
            tree: root.to_string(),
            revision,
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let environment = request.into_inner().environment;
        namespace(&environment)?;
        // Subscribed before the headers go out: every later write is announced.
        let mut changes = self.shared.changes.subscribe();
        let mut closed = self.shared.closed.subscribe();
        let shared = Arc::clone(&self.shared);
        let stream = async_stream(move |sender| async move {
            loop {
                let revision = tokio::select! {
                    () = crate::stream::closed(&mut closed) => return,
                    () = sender.closed() => return,
                    change = changes.recv() => match change {
                        Ok((env, revision)) if *env == *environment => revision,
                        Ok(_) => continue,
                        // Missed some: announce a change anyway, the reader reloads.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            shared.revision.load(Ordering::SeqCst)
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                if sender
                    .send(Ok(pb::WatchResponse { revision }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task, which ends when the stream is dropped.
fn async_stream<F, Fut>(
    body: F,
) -> Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::WatchResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(body(sender));
    Box::pin(crate::stream::TaskStream::new(receiver, task))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_build_one_tree() {
        let mut root = json!({});
        // In byte order, as the store lists them: a parent before its children.
        set_at(&mut root, "db", json!({"pool": 5}));
        set_at(&mut root, "db.host", json!("a"));
        set_at(&mut root, "name", json!(1));
        set_at(&mut root, "name.deeper", json!(2));
        assert_eq!(
            root,
            json!({"db": {"pool": 5, "host": "a"}, "name": {"deeper": 2}})
        );
    }

    #[test]
    fn paths_and_values_are_checked() {
        assert!(validate_path("db.pool").is_ok());
        for bad in ["", ".a", "a.", "a..b", "a\tb"] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
        assert!(validate_path(&"a".repeat(513)).is_err());
        assert_eq!(parse_value("").unwrap(), Value::Null);
        assert_eq!(parse_value("{a: [1]}").unwrap(), json!({"a": [1]}));
        assert!(parse_value("[unclosed").unwrap_err().contains("line"));
    }
}
