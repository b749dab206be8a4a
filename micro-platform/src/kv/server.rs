//! [`KvService`]: the `micro.kv.v1.Kv` server over any store.

use micro_core::store::{self, ListOptions, SharedStore, StoreError};
use tonic::{Request, Response, Status};

use super::{MAX_MESSAGE_SIZE, wire};
use crate::proto::kv::v1::{self as pb, kv_server::KvServer};

/// The kv service over a store: add [`KvService::into_server`] to a micro
/// [`Service`](micro_core::Service).
///
/// Every request is checked against the [store limits](micro_core::store#limits) before
/// the backend sees it, so bad input is answered with INVALID_ARGUMENT naming what was
/// wrong and never reaches the store.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), micro_core::ServiceError> {
/// use std::sync::Arc;
/// use micro_core::{Service, store::MemoryStore};
/// use micro_platform::kv::KvService;
///
/// Service::builder("micro.kv")
///     .add_service(KvService::new(Arc::new(MemoryStore::new())).into_server())
///     .run()
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct KvService {
    store: SharedStore,
}

impl KvService {
    /// Serves `store`.
    pub fn new(store: SharedStore) -> Self {
        Self { store }
    }

    /// The tonic server, accepting messages up to [`MAX_MESSAGE_SIZE`].
    pub fn into_server(self) -> KvServer<Self> {
        KvServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The store served.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }
}

impl std::fmt::Debug for KvService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvService")
            .field("store", &self.store.name())
            .finish()
    }
}

fn status(error: StoreError) -> Status {
    wire::status_from_error(error)
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        let namespace = wire::namespace(request.namespace).map_err(status)?;
        store::validate_key(&request.key).map_err(status)?;
        let record = self
            .store
            .get(&namespace, &request.key)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GetResponse {
            record: record.map(wire::record_to_pb),
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        let namespace = wire::namespace(request.namespace).map_err(status)?;
        let write = request.write.ok_or_else(|| {
            status(StoreError::InvalidArgument(
                "write is missing: set key and value".to_owned(),
            ))
        })?;
        let put = wire::put(write).map_err(status)?;
        store::validate_put(&put).map_err(status)?;
        let version = self.store.put(&namespace, put).await.map_err(status)?;
        Ok(Response::new(pb::PutResponse { version }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        let namespace = wire::namespace(request.namespace).map_err(status)?;
        let condition = wire::condition(&request.key, request.condition).map_err(status)?;
        store::validate_delete(&request.key, condition).map_err(status)?;
        let deleted = self
            .store
            .delete(&namespace, &request.key, condition)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteResponse { deleted }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let request = request.into_inner();
        let namespace = wire::namespace(request.namespace).map_err(status)?;
        let options = ListOptions {
            prefix: request.prefix,
            start_after: Some(request.start_after).filter(|s| !s.is_empty()),
            limit: usize::try_from(request.limit).unwrap_or(usize::MAX),
        };
        store::validate_list(&options).map_err(status)?;
        let page = self.store.list(&namespace, options).await.map_err(status)?;
        Ok(Response::new(pb::ListResponse {
            keys: page.keys,
            next: page.next.unwrap_or_default(),
        }))
    }

    async fn get_many(
        &self,
        request: Request<pb::GetManyRequest>,
    ) -> Result<Response<pb::GetManyResponse>, Status> {
        let request = request.into_inner();
        let namespace = wire::namespace(request.namespace).map_err(status)?;
        store::validate_keys(&request.keys).map_err(status)?;
        let records = self
            .store
            .get_many(&namespace, &request.keys)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GetManyResponse {
            records: records
                .into_iter()
                .map(|record| pb::MaybeRecord {
                    record: record.map(wire::record_to_pb),
                })
                .collect(),
        }))
    }

    async fn put_many(
        &self,
        request: Request<pb::PutManyRequest>,
    ) -> Result<Response<pb::PutManyResponse>, Status> {
        let request = request.into_inner();
        let namespace = wire::namespace(request.namespace).map_err(status)?;
        let puts = request
            .writes
            .into_iter()
            .map(wire::put)
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        store::validate_puts(&puts).map_err(status)?;
        let versions = self
            .store
            .put_many(&namespace, puts)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::PutManyResponse { versions }))
    }

    async fn delete_many(
        &self,
        request: Request<pb::DeleteManyRequest>,
    ) -> Result<Response<pb::DeleteManyResponse>, Status> {
        let request = request.into_inner();
        let namespace = wire::namespace(request.namespace).map_err(status)?;
        store::validate_keys(&request.keys).map_err(status)?;
        let deleted = self
            .store
            .delete_many(&namespace, &request.keys)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteManyResponse { deleted }))
    }
}
