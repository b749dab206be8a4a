//! [`SyncClient`]: a [`Sync`] over the sync service.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use micro_core::{
    Channel, Client,
    client::{CallOptions, RequestExt},
    sync::{
        self, Leadership, Lock, LockOptions, Release, SharedSync, Sync, SyncError, validate_name,
        validate_ttl,
    },
};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Request, Status, Streaming};

use super::{HOLD_TIMEOUT, SCHEME, SERVICE_NAME, duration_to_pb};
use crate::proto::sync::v1::{self as pb, sync_client::SyncClient as Stub};

/// First wait before observing a broken `Observe` again; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before observing again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A [`Sync`] whose locks and elections live in the sync service, over a micro [`Channel`].
///
/// Each held lock or leadership is one open call (see [the module docs](super)): it is
/// released when released or dropped here, and by the service when the call breaks; here
/// it counts as lost as soon as the call ends.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), micro_core::sync::SyncError> {
/// use micro_core::sync::{LockOptions, Sync};
/// use micro_platform::sync::SyncClient;
///
/// let sync = SyncClient::connect("127.0.0.1:7700")?;
/// let lock = sync.lock("jobs/nightly", LockOptions::default()).await?;
/// // ... write with lock.token() as the fencing token ...
/// lock.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SyncClient {
    stub: Stub<Channel>,
    name: Arc<str>,
}

impl std::fmt::Debug for SyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SyncClient {
    /// A client over `channel`, a channel to the sync service (usually
    /// `client.channel("micro.sync")`).
    pub fn new(channel: Channel) -> Self {
        let name = format!("{SCHEME} ({})", channel.service());
        Self::with_name(channel, name)
    }

    /// A client that finds the sync service as [`SERVICE_NAME`] through `client`'s registry.
    pub fn from_client(client: &Client) -> Self {
        Self::with_name(client.channel(SERVICE_NAME), SCHEME.to_owned())
    }

    /// A client of the sync service at `address` (`host:port`), with no registry.
    ///
    /// # Errors
    /// [`SyncError::InvalidArgument`] when `address` is not `host:port`.
    pub fn connect(address: &str) -> Result<Self, SyncError> {
        let channel = crate::channel::at_address(SERVICE_NAME, &pb::SYNC_DESCRIPTOR, address)
            .map_err(SyncError::InvalidArgument)?;
        Ok(Self::with_name(
            channel,
            format!("{SCHEME}://{}", address.trim()),
        ))
    }

    /// A client for a `MICRO_SYNC` value: `service` finds the sync service through the
    /// registry named by `MICRO_REGISTRY`; `service://host:port` connects to that address.
    ///
    /// # Errors
    /// [`SyncError::InvalidArgument`] for another URL or a bad address;
    /// [`SyncError::Unavailable`] when the registry cannot be opened.
    pub fn from_url(url: &str) -> Result<Self, SyncError> {
        let url = url.trim();
        if url == SCHEME {
            let client = Client::from_env()
                .map_err(|error| SyncError::unavailable_with(SCHEME, error.to_string(), error))?;
            return Ok(Self::from_client(&client));
        }
        match url.strip_prefix("service://") {
            Some(address) if !address.is_empty() => Self::connect(address),
            _ => Err(SyncError::InvalidArgument(format!(
                "sync URL {url:?} is not `service` or `service://host:port`"
            ))),
        }
    }

    fn with_name(channel: Channel, name: String) -> Self {
        Self {
            stub: Stub::new(channel),
            name: Arc::from(name),
        }
    }

    fn error(&self, status: &Status) -> SyncError {
        error_from_status(status, &self.name)
    }
}

/// Opens `MICRO_SYNC=service` or `service://host:port`; see [`SyncClient::from_url`].
pub(crate) fn open(
    url: String,
) -> Pin<Box<dyn Future<Output = Result<SharedSync, SyncError>> + Send + 'static>> {
    Box::pin(async move { Ok(Arc::new(SyncClient::from_url(&url)?) as SharedSync) })
}

/// The [`SyncError`] a status stands for; `backend` names the client.
fn error_from_status(status: &Status, backend: &str) -> SyncError {
    match status.code() {
        tonic::Code::InvalidArgument => {
            let message = status.message();
            SyncError::InvalidArgument(
                message
                    .strip_prefix("invalid argument: ")
                    .unwrap_or(message)
                    .to_owned(),
            )
        }
        code => SyncError::unavailable_with(
            backend,
            format!("{code:?}: {}", status.message()),
            status.clone(),
        ),
    }
}

/// The client's half of a holding: requests out, responses in.
struct Call<R> {
    requests: mpsc::Sender<R>,
    responses: Streaming<pb::LockResponse>,
}

/// A request asking to release, and the answer's way back.
type ReleaseAsk = oneshot::Sender<Result<(), SyncError>>;

/// Releases a holding through its task.
struct RemoteRelease {
    ask: mpsc::Sender<ReleaseAsk>,
}

#[async_trait]
impl Release for RemoteRelease {
    async fn release(self: Box<Self>) -> Result<(), SyncError> {
        let (answer, answered) = oneshot::channel();
        if self.ask.send(answer).await.is_err() {
            // The holding's call is over: the service released it already.
            return Ok(());
        }
        answered.await.unwrap_or(Ok(()))
    }
}

impl SyncClient {
    /// Opens a holding's call with `first`, waits for `acquired`, and holds it in a task.
    /// Returns the token, the held flag and the release handle.
    async fn acquire<R: Send + 'static>(
        &self,
        first: R,
        release: R,
        open: impl FnOnce(
            Stub<Channel>,
            Request<RequestStream<R>>,
        ) -> Pin<
            Box<
                dyn Future<Output = Result<tonic::Response<Streaming<pb::LockResponse>>, Status>>
                    + Send,
            >,
        > + Send
        + 'static,
        timeout: impl Fn(&Status) -> Option<SyncError> + Send + 'static,
    ) -> Result<(u64, watch::Receiver<bool>, Box<dyn Release>), SyncError> {
        let (requests, outbound) = mpsc::channel(2);
        // Room for it: the channel is new.
        let _ = requests.try_send(first);
        let stub = self.stub.clone();
        let name = Arc::clone(&self.name);
        // Run in a task of its own: a caller's handler deadline must not bound the holding.
        // Aborted if the caller stops waiting: the call is reset and the service stops
        // waiting too.
        let mut opened = crate::stream::AbortOnDrop(tokio::spawn(async move {
            let request = Request::new(RequestStream(outbound))
                .with_call_options(CallOptions::new().timeout(HOLD_TIMEOUT));
            let mut responses = open(stub, request).await?.into_inner();
            match responses.message().await? {
                Some(pb::LockResponse {
                    response: Some(pb::lock_response::Response::Acquired(token)),
                }) => Ok((token, responses)),
                other => Err(Status::unknown(format!(
                    "the service answered {other:?} instead of `acquired`"
                ))),
            }
        }));
        let (token, responses) = match (&mut opened.0).await {
            Ok(Ok(opened)) => opened,
            Ok(Err(status)) => {
                return Err(timeout(&status).unwrap_or_else(|| error_from_status(&status, &name)));
            }
            Err(error) => {
                let message = format!("the call's task failed: {error}");
                return Err(SyncError::unavailable_with(&name, message, error));
            }
        };
        let (held, held_receiver) = watch::channel(true);
        let (ask, asked) = mpsc::channel(1);
        let call = Call {
            requests,
            responses,
        };
        tokio::spawn(keep(call, release, held, asked, name));
        Ok((token, held_receiver, Box::new(RemoteRelease { ask })))
    }
}

/// Keeps a holding's call open until it is released or ends; `held` turns false then.
async fn keep<R: Send + 'static>(
    mut call: Call<R>,
    release: R,
    held: watch::Sender<bool>,
    mut asked: mpsc::Receiver<ReleaseAsk>,
    name: Arc<str>,
) {
    let answer = tokio::select! {
            ask = asked.recv() => ask,
            message = call.responses.message() => {
                match message {
                    Ok(Some(pb::LockResponse { response: Some(pb::lock_response::Response::Lost(_)) })) => {
                        tracing::warn!(sync = %name, "the service lost the lease");
                    }
                    Ok(Some(other)) => {
                        tracing::warn!(sync = %name, ?other, "unexpected message while held; counting as lost");
                    }
                    Ok(None) => tracing::warn!(sync = %name, "the holding's call ended; counting as lost"),
                    Err(status) => tracing::warn!(sync = %name, %status, "the holding's call broke; counting as lost"),
                }
                held.send_replace(false);
                return;
            }
    };
    held.send_replace(false);
    // Asked to release, or every handle is gone (then ending the call releases).
    let Some(answer) = answer else { return };
    if call.requests.send(release).await.is_err() {
        // The call is over: the service released already.
        let _ = answer.send(Ok(()));
        return;
    }
    let result = loop {
        match call.responses.message().await {
            Ok(Some(pb::LockResponse {
                response: Some(pb::lock_response::Response::Released(_)),
            })) => break Ok(()),
            Ok(Some(_)) => {}
            // Ended or broken: the service releases when the call ends.
            Ok(None) => break Ok(()),
            Err(status) => break Err(error_from_status(&status, &name)),
        }
    };
    let _ = answer.send(result);
}

/// The requests of a streaming call, from a channel.
pub(crate) struct RequestStream<R>(mpsc::Receiver<R>);

impl<R> futures_util::Stream for RequestStream<R> {
    type Item = R;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<R>> {
        self.0.poll_recv(cx)
    }
}

#[async_trait]
impl Sync for SyncClient {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lock(&self, name: &str, options: LockOptions) -> Result<Lock, SyncError> {
        validate_name("lock", name)?;
        validate_ttl(options.ttl)?;
        let first = pb::LockRequest {
            request: Some(pb::lock_request::Request::Acquire(pb::Acquire {
                name: name.to_owned(),
                ttl: Some(duration_to_pb(options.ttl)),
                wait: options.wait.map(duration_to_pb),
            })),
        };
        let release = pb::LockRequest {
            request: Some(pb::lock_request::Request::Release(pb::Release {})),
        };
        let lock_name = name.to_owned();
        let wait = options.wait;
        let (token, held, release) = self
            .acquire(
                first,
                release,
                |mut stub, request| Box::pin(async move { stub.lock(request).await }),
                move |status| {
                    (status.code() == tonic::Code::DeadlineExceeded)
                        .then_some(wait)
                        .flatten()
                        .map(|waited| SyncError::Timeout {
                            what: "lock",
                            name: lock_name.clone(),
                            waited,
                        })
                },
            )
            .await?;
        Ok(Lock::new(name, token, held, release))
    }

    async fn campaign(
        &self,
        election: &str,
        candidate: &str,
        ttl: Duration,
    ) -> Result<Leadership, SyncError> {
        validate_name("election", election)?;
        validate_ttl(ttl)?;
        let first = pb::CampaignRequest {
            request: Some(pb::campaign_request::Request::Campaign(pb::Candidate {
                election: election.to_owned(),
                id: candidate.to_owned(),
                ttl: Some(duration_to_pb(ttl)),
            })),
        };
        let release = pb::CampaignRequest {
            request: Some(pb::campaign_request::Request::Release(pb::Release {})),
        };
        let (term, held, release) = self
            .acquire(
                first,
                release,
                |mut stub, request| Box::pin(async move { stub.campaign(request).await }),
                |_| None,
            )
            .await?;
        Ok(Leadership::new(
            Lock::new(election, term, held, release),
            candidate,
        ))
    }

    async fn leader(&self, election: &str) -> Result<Option<sync::Leader>, SyncError> {
        validate_name("election", election)?;
        let response = self
            .stub
            .clone()
            .leader(pb::LeaderRequest {
                election: election.to_owned(),
            })
            .await
            .map_err(|status| self.error(&status))?;
        Ok(leader_from_pb(response.into_inner()))
    }

    async fn observe(
        &self,
        election: &str,
    ) -> Result<watch::Receiver<Option<sync::Leader>>, SyncError> {
        validate_name("election", election)?;
        let (mut stream, first) = open_observe(self.stub.clone(), election.to_owned())
            .await
            .map_err(|status| self.error(&status))?;
        let (sender, receiver) = watch::channel(first);
        let (stub, election, name) = (
            self.stub.clone(),
            election.to_owned(),
            Arc::clone(&self.name),
        );
        tokio::spawn(async move {
            let mut backoff = MIN_BACKOFF;
            loop {
                loop {
                    let message = tokio::select! {
                        () = sender.closed() => return,
                        message = stream.message() => message,
                    };
                    match message {
                        Ok(Some(response)) => {
                            backoff = MIN_BACKOFF;
                            sender.send_replace(leader_from_pb(response));
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(sync = %name, %election, %status, "observing broke; observing again");
                            break;
                        }
                    }
                }
                loop {
                    tokio::select! {
                        () = sender.closed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    match open_observe(stub.clone(), election.clone()).await {
                        Ok((opened, leader)) => {
                            sender.send_replace(leader);
                            stream = opened;
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(sync = %name, %election, %status, ?backoff, "cannot observe; retrying");
                        }
                    }
                }
            }
        });
        Ok(receiver)
    }
}

/// Opens `Observe`; returns the stream and its first item (the leader now).
async fn open_observe(
    mut stub: Stub<Channel>,
    election: String,
) -> Result<(Streaming<pb::LeaderResponse>, Option<sync::Leader>), Status> {
    let request = Request::new(pb::LeaderRequest { election })
        .with_call_options(CallOptions::new().timeout(HOLD_TIMEOUT));
    // In a task of its own, like a holding: a handler's deadline must not bound it.
    let mut stream = tokio::spawn(async move { stub.observe(request).await })
        .await
        .map_err(|error| Status::unknown(format!("the call's task failed: {error}")))??
        .into_inner();
    match stream.message().await? {
        Some(first) => Ok((stream, leader_from_pb(first))),
        None => Err(Status::unavailable("Observe ended before its first answer")),
    }
}

fn leader_from_pb(response: pb::LeaderResponse) -> Option<sync::Leader> {
    response.leader.map(|leader| sync::Leader {
        id: leader.id,
        term: leader.term,
    })
}
