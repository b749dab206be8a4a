//! [`SyncService`]: the `micro.sync.v1.Sync` server over any backend.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::Stream;
use micro_core::sync::{
    self, Leadership, Lock, LockOptions, SharedSync, SyncError, validate_name, validate_ttl,
};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use super::duration_from_pb;
use crate::{
    proto::sync::v1::{self as pb, sync_server::SyncServer},
    stream::TaskStream,
};

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The sync service over a backend: add [`SyncService::into_server`] to a micro
/// [`Service`](micro_core::Service).
///
/// Every lock or leadership is held by the backend for as long as its call lasts; a call
/// that ends or breaks releases it (see [the module docs](super)). Requests are checked
/// (names, leases) before the backend sees them.
///
/// Holdings and `Observe` streams last until their clients end them, so a server shutting
/// down must end them, or its drain waits for them: call [`close`](Self::close) (on any
/// clone) when the shutdown starts; every holding is then released and reported lost.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), micro_core::ServiceError> {
/// use std::sync::Arc;
/// use micro_core::{Service, sync::MemorySync};
/// use micro_platform::sync::SyncService;
///
/// Service::builder("micro.sync")
///     .add_service(SyncService::new(Arc::new(MemorySync::new())).into_server())
///     .run()
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct SyncService {
    backend: SharedSync,
    closed: Arc<watch::Sender<bool>>,
}

impl SyncService {
    /// Serves `backend`.
    pub fn new(backend: SharedSync) -> Self {
        Self {
            backend,
            closed: Arc::new(watch::Sender::new(false)),
        }
    }

    /// The tonic server.
    pub fn into_server(self) -> SyncServer<Self> {
        SyncServer::new(self)
    }

    /// The backend served.
    pub fn backend(&self) -> &SharedSync {
        &self.backend
    }

    /// Releases every holding and ends every stream, now and from now on (for a shutdown).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    fn closing(&self) -> Result<watch::Receiver<bool>, Status> {
        let closed = self.closed.subscribe();
        if *closed.borrow() {
            return Err(Status::unavailable("the sync service is shutting down"));
        }
        Ok(closed)
    }
}

impl std::fmt::Debug for SyncService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncService")
            .field("backend", &self.backend.name())
            .finish()
    }
}

fn invalid(message: impl Into<String>) -> Status {
    Status::from(SyncError::InvalidArgument(message.into()))
}

fn ttl(ttl: Option<prost_types::Duration>) -> Result<Duration, Status> {
    let ttl = ttl.ok_or_else(|| invalid("ttl is missing"))?;
    let ttl = duration_from_pb("ttl", ttl).map_err(invalid)?;
    validate_ttl(ttl).map_err(Status::from)?;
    Ok(ttl)
}

/// A lock or a leadership, held on behalf of a caller.
enum Holding {
    Lock(Lock),
    Leader(Leadership),
}

impl Holding {
    fn token(&self) -> u64 {
        match self {
            Self::Lock(lock) => lock.token(),
            Self::Leader(leadership) => leadership.term(),
        }
    }

    async fn lost(&mut self) {
        match self {
            Self::Lock(lock) => lock.lost().await,
            Self::Leader(leadership) => leadership.lost().await,
        }
    }

    async fn release(self) -> Result<(), SyncError> {
        match self {
            Self::Lock(lock) => lock.release().await,
            Self::Leader(leadership) => leadership.resign().await,
        }
    }
}

/// What the client said on a holding's stream after the first message.
trait Said: Send + 'static {
    fn is_release(&self) -> bool;
}

impl Said for pb::LockRequest {
    fn is_release(&self) -> bool {
        matches!(self.request, Some(pb::lock_request::Request::Release(_)))
    }
}

impl Said for pb::CampaignRequest {
    fn is_release(&self) -> bool {
        matches!(
            self.request,
            Some(pb::campaign_request::Request::Release(_))
        )
    }
}

fn respond(response: pb::lock_response::Response) -> Result<pb::LockResponse, Status> {
    Ok(pb::LockResponse {
        response: Some(response),
    })
}

/// Holds `holding` until the client releases it, its stream ends or breaks, the backend
/// loses it, or the service closes.
async fn hold<R: Said>(
    mut holding: Holding,
    what: String,
    mut inbound: Streaming<R>,
    sender: mpsc::Sender<Result<pb::LockResponse, Status>>,
    mut closed: watch::Receiver<bool>,
) {
    enum End {
        Release,
        Gone,
        Lost,
    }
    let end = tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(message)) if message.is_release() => End::Release,
                Ok(Some(_)) => {
                    let _ = sender
                        .send(Err(invalid("after the first message only `release` is allowed")))
                        .await;
                    End::Gone
                }
                Ok(None) => End::Gone,
                Err(status) => {
                    tracing::debug!(%what, %status, "holder's stream broke; releasing");
                    End::Gone
                }
            },
            () = holding.lost() => End::Lost,
            () = sender.closed() => End::Gone,
            () = crate::stream::closed(&mut closed) => End::Lost,
    };
    let released = holding.release().await;
    match end {
        End::Release => {
            let answer = match released {
                Ok(()) => respond(pb::lock_response::Response::Released(pb::Released {})),
                Err(error) => Err(Status::from(error)),
            };
            let _ = sender.send(answer).await;
        }
        End::Lost => {
            let _ = sender
                .send(respond(pb::lock_response::Response::Lost(pb::Lost {})))
                .await;
        }
        End::Gone => {
            if let Err(error) = released {
                tracing::warn!(%what, %error, "releasing for a gone holder failed; its lease will run out");
            }
        }
    }
}

/// Answers `acquired` and holds `holding` in a task; the response stream.
fn held<R: Said>(
    holding: Holding,
    what: String,
    inbound: Streaming<R>,
    closed: watch::Receiver<bool>,
) -> ResponseStream<pb::LockResponse> {
    let (sender, receiver) = mpsc::channel(4);
    // Room for it: the channel is new.
    let _ = sender.try_send(respond(pb::lock_response::Response::Acquired(
        holding.token(),
    )));
    let task = tokio::spawn(hold(holding, what, inbound, sender, closed));
    Box::pin(TaskStream::new(receiver, task))
}

/// Runs `acquire` unless the service closes first.
async fn unless_closed<T>(
    closed: &mut watch::Receiver<bool>,
    acquire: impl std::future::Future<Output = Result<T, SyncError>>,
) -> Result<T, Status> {
    tokio::select! {
        result = acquire => result.map_err(Status::from),
        () = crate::stream::closed(closed) => {
            Err(Status::unavailable("the sync service is shutting down"))
        }
    }
}

#[tonic::async_trait]
impl pb::sync_server::Sync for SyncService {
    type LockStream = ResponseStream<pb::LockResponse>;

    async fn lock(
        &self,
        request: Request<Streaming<pb::LockRequest>>,
    ) -> Result<Response<Self::LockStream>, Status> {
        let mut closed = self.closing()?;
        let mut inbound = request.into_inner();
        let first = inbound.message().await?;
        let Some(pb::LockRequest {
            request: Some(pb::lock_request::Request::Acquire(acquire)),
        }) = first
        else {
            return Err(invalid("the first message of Lock must be `acquire`"));
        };
        validate_name("lock", &acquire.name).map_err(Status::from)?;
        let options = LockOptions {
            ttl: ttl(acquire.ttl)?,
            wait: acquire
                .wait
                .map(|wait| duration_from_pb("wait", wait))
                .transpose()
                .map_err(invalid)?,
        };
        // A caller that goes away while waiting drops this future, and the wait with it.
        let lock = unless_closed(&mut closed, self.backend.lock(&acquire.name, options)).await?;
        let what = format!("lock {:?}", acquire.name);
        Ok(Response::new(held(
            Holding::Lock(lock),
            what,
            inbound,
            closed,
        )))
    }

    type CampaignStream = ResponseStream<pb::LockResponse>;

    async fn campaign(
        &self,
        request: Request<Streaming<pb::CampaignRequest>>,
    ) -> Result<Response<Self::CampaignStream>, Status> {
        let mut closed = self.closing()?;
        let mut inbound = request.into_inner();
        let first = inbound.message().await?;
        let Some(pb::CampaignRequest {
            request: Some(pb::campaign_request::Request::Campaign(candidate)),
        }) = first
        else {
            return Err(invalid("the first message of Campaign must be `campaign`"));
        };
        validate_name("election", &candidate.election).map_err(Status::from)?;
        let ttl = ttl(candidate.ttl)?;
        let leadership = unless_closed(
            &mut closed,
            self.backend
                .campaign(&candidate.election, &candidate.id, ttl),
        )
        .await?;
        let what = format!("leadership of {:?}", candidate.election);
        Ok(Response::new(held(
            Holding::Leader(leadership),
            what,
            inbound,
            closed,
        )))
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        let election = request.into_inner().election;
        validate_name("election", &election).map_err(Status::from)?;
        let leader = self.backend.leader(&election).await?;
        Ok(Response::new(leader_response(leader)))
    }

    type ObserveStream = ResponseStream<pb::LeaderResponse>;

    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let mut closed = self.closing()?;
        let election = request.into_inner().election;
        validate_name("election", &election).map_err(Status::from)?;
        let mut leaders = self.backend.observe(&election).await?;
        let (sender, receiver) = mpsc::channel(4);
        let task = tokio::spawn(async move {
            loop {
                let leader = leaders.borrow_and_update().clone();
                if sender.send(Ok(leader_response(leader))).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = leaders.changed() => {
                        if changed.is_err() {
                            let _ = sender
                                .send(Err(Status::unavailable("the backend stopped observing")))
                                .await;
                            return;
                        }
                    }
                    () = sender.closed() => return,
                    () = crate::stream::closed(&mut closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(TaskStream::new(receiver, task))))
    }
}

fn leader_response(leader: Option<sync::Leader>) -> pb::LeaderResponse {
    pb::LeaderResponse {
        leader: leader.map(|leader| pb::Leader {
            id: leader.id,
            term: leader.term,
        }),
    }
}
