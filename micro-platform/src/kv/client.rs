//! [`KvClient`]: a [`Store`] over the kv service.

use std::sync::Arc;

use async_trait::async_trait;
use micro_core::{
    Channel, Client,
    store::{Condition, ListOptions, Namespace, Page, Put, Record, SharedStore, Store, StoreError},
};
use prost::Message;
use tonic::Request;

use super::{MAX_MESSAGE_SIZE, SCHEME, SERVICE_NAME, wire};
use crate::proto::kv::v1::{self as pb, kv_client::KvClient as Stub};

/// A [`Store`] whose records live in the kv service, over a micro [`Channel`].
///
/// Reads (`Get`, `List`, `GetMany`) are declared `NO_SIDE_EFFECTS` in the proto, so the
/// channel retries them on more failures than writes. Errors come back as the
/// [`StoreError`] the server's store returned (see [the module docs](super#errors-on-the-wire)).
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), micro_core::StoreError> {
/// use micro_core::store::{Namespace, Put, Store};
/// use micro_platform::kv::KvClient;
///
/// let kv = KvClient::connect("127.0.0.1:7700")?;
/// let version = kv.put(&Namespace::default(), Put::new("greeting", "hello")).await?;
/// # let _ = version; Ok(()) }
/// ```
#[derive(Clone)]
pub struct KvClient {
    stub: Stub<Channel>,
    name: Arc<str>,
}

impl KvClient {
    /// A client over `channel`, a channel to the kv service (usually
    /// `client.channel("micro.kv")`).
    pub fn new(channel: Channel) -> Self {
        let name = format!("{SCHEME} ({})", channel.service());
        Self::with_name(channel, name)
    }

    /// A client that finds the kv service as [`SERVICE_NAME`] through `client`'s registry.
    pub fn from_client(client: &Client) -> Self {
        Self::with_name(client.channel(SERVICE_NAME), SCHEME.to_owned())
    }

    /// A client of the kv service at `address` (`host:port`), with no registry.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] when `address` is not `host:port`.
    pub fn connect(address: &str) -> Result<Self, StoreError> {
        let descriptor = &pb::KV_DESCRIPTOR;
        let channel = crate::channel::at_address(SERVICE_NAME, descriptor, address)
            .map_err(StoreError::InvalidArgument)?;
        Ok(Self::with_name(
            channel,
            format!("{SCHEME}://{}", address.trim()),
        ))
    }

    /// A client for a `MICRO_STORE` value: `service` finds the kv service through the
    /// registry named by `MICRO_REGISTRY`; `service://host:port` connects to that address.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for another URL or a bad address;
    /// [`StoreError::Unavailable`] when the registry cannot be opened.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        if url == SCHEME {
            let client = Client::from_env()
                .map_err(|err| StoreError::unavailable_with(SCHEME, err.to_string(), err))?;
            return Ok(Self::from_client(&client));
        }
        match url.strip_prefix("service://") {
            Some(address) if !address.is_empty() => Self::connect(address),
            _ => Err(StoreError::InvalidArgument(format!(
                "store URL {url:?} is not `service` or `service://host:port`"
            ))),
        }
    }

    fn with_name(channel: Channel, name: String) -> Self {
        Self {
            stub: Stub::new(channel.max_receive_message_size(MAX_MESSAGE_SIZE))
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            name: Arc::from(name),
        }
    }

    fn error(&self, status: &tonic::Status) -> StoreError {
        wire::error_from_status(status, &self.name)
    }

    /// Refuses a request the server would refuse for its size, naming the limit.
    fn checked<T: Message>(&self, message: T) -> Result<Request<T>, StoreError> {
        let len = message.encoded_len();
        if len > MAX_MESSAGE_SIZE {
            return Err(StoreError::InvalidArgument(format!(
                "request of {len} bytes is larger than the kv service's limit of \
                 {MAX_MESSAGE_SIZE} bytes; split the batch"
            )));
        }
        Ok(Request::new(message))
    }
}

/// Opens `MICRO_STORE=service` or `service://host:port`; see [`KvClient::from_url`].
///
/// # Errors
/// As [`KvClient::from_url`].
pub(crate) fn open(url: &str) -> Result<SharedStore, StoreError> {
    Ok(Arc::new(KvClient::from_url(url)?))
}

impl std::fmt::Debug for KvClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for KvClient {
    fn name(&self) -> &str {
        &self.name
    }

    /// The kv service does not say whether its backend applies batches atomically, so this
    /// promises nothing: `false`.
    fn atomic_batches(&self) -> bool {
        false
    }

    async fn get(&self, namespace: &Namespace, key: &str) -> Result<Option<Record>, StoreError> {
        let request = self.checked(pb::GetRequest {
            namespace: wire::namespace_to_pb(namespace),
            key: key.to_owned(),
        })?;
        let response = self.stub.clone().get(request).await;
        let response = response.map_err(|s| self.error(&s))?.into_inner();
        Ok(response.record.map(wire::record_from_pb))
    }

    async fn put(&self, namespace: &Namespace, put: Put) -> Result<u64, StoreError> {
        let request = self.checked(pb::PutRequest {
            namespace: wire::namespace_to_pb(namespace),
            write: Some(wire::put_to_pb(put)?),
        })?;
        let response = self.stub.clone().put(request).await;
        Ok(response.map_err(|s| self.error(&s))?.into_inner().version)
    }

    async fn delete(
        &self,
        namespace: &Namespace,
        key: &str,
        condition: Condition,
    ) -> Result<bool, StoreError> {
        let request = self.checked(pb::DeleteRequest {
            namespace: wire::namespace_to_pb(namespace),
            key: key.to_owned(),
            condition: wire::condition_to_pb(condition),
        })?;
        let response = self.stub.clone().delete(request).await;
        Ok(response.map_err(|s| self.error(&s))?.into_inner().deleted)
    }

    async fn list(&self, namespace: &Namespace, options: ListOptions) -> Result<Page, StoreError> {
        let limit = u32::try_from(options.limit).map_err(|_| {
            StoreError::InvalidArgument(format!("limit {} is too large", options.limit))
        })?;
        let request = self.checked(pb::ListRequest {
            namespace: wire::namespace_to_pb(namespace),
            prefix: options.prefix,
            start_after: options.start_after.unwrap_or_default(),
            limit,
        })?;
        let response = self.stub.clone().list(request).await;
        let response = response.map_err(|s| self.error(&s))?.into_inner();
        Ok(Page {
            keys: response.keys,
            next: Some(response.next).filter(|next| !next.is_empty()),
        })
    }

    async fn get_many(
        &self,
        namespace: &Namespace,
        keys: &[String],
    ) -> Result<Vec<Option<Record>>, StoreError> {
        let request = self.checked(pb::GetManyRequest {
            namespace: wire::namespace_to_pb(namespace),
            keys: keys.to_vec(),
        })?;
        let response = self.stub.clone().get_many(request).await;
        let response = response.map_err(|s| self.error(&s))?.into_inner();
        if response.records.len() != keys.len() {
            return Err(StoreError::unavailable(
                &self.name,
                format!(
                    "GetMany answered {} records for {} keys",
                    response.records.len(),
                    keys.len()
                ),
            ));
        }
        Ok(response
            .records
            .into_iter()
            .map(|r| r.record.map(wire::record_from_pb))
            .collect())
    }

    async fn put_many(
        &self,
        namespace: &Namespace,
        puts: Vec<Put>,
    ) -> Result<Vec<u64>, StoreError> {
        let count = puts.len();
        let writes = puts
            .into_iter()
            .map(wire::put_to_pb)
            .collect::<Result<Vec<_>, _>>()?;
        let request = self.checked(pb::PutManyRequest {
            namespace: wire::namespace_to_pb(namespace),
            writes,
        })?;
        let response = self.stub.clone().put_many(request).await;
        let versions = response.map_err(|s| self.error(&s))?.into_inner().versions;
        if versions.len() != count {
            return Err(StoreError::unavailable(
                &self.name,
                format!(
                    "PutMany answered {} versions for {count} writes",
                    versions.len()
                ),
            ));
        }
        Ok(versions)
    }

    async fn delete_many(
        &self,
        namespace: &Namespace,
        keys: &[String],
    ) -> Result<Vec<bool>, StoreError> {
        let request = self.checked(pb::DeleteManyRequest {
            namespace: wire::namespace_to_pb(namespace),
            keys: keys.to_vec(),
        })?;
        let response = self.stub.clone().delete_many(request).await;
        let deleted = response.map_err(|s| self.error(&s))?.into_inner().deleted;
        if deleted.len() != keys.len() {
            return Err(StoreError::unavailable(
                &self.name,
                format!(
                    "DeleteMany answered {} results for {} keys",
                    deleted.len(),
                    keys.len()
                ),
            ));
        }
        Ok(deleted)
    }
}
