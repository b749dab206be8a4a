//! The broker endpoint: the gRPC server through which a process receives the messages of
//! its subscriptions.

use std::{collections::HashMap, net::SocketAddr, sync::Mutex, time::Duration};

use std::sync::Arc;

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::TcpListener,
    sync::mpsc::{self, error::SendTimeoutError},
    task::JoinHandle,
};
use tonic::{Request, Response, Status, body::Body};
use tower::ServiceExt as _;

use super::{Config, NAME};
use crate::broker::{
    BrokerError, Message,
    proto::{
        DeliverReply, DeliverRequest,
        broker_server::{Broker as DeliverService, BrokerServer},
    },
};
use crate::lock::lock;

/// A running broker endpoint; dropping it stops the server.
pub(super) struct Endpoint {
    pub(super) address: String,
    server: JoinHandle<()>,
}

/// Where the endpoint sends each subscription's messages, by subscription id.
#[derive(Default)]
pub(super) struct Routes {
    routes: Mutex<HashMap<String, Route>>,
}

pub(super) struct Route {
    pub(super) topic: String,
    pub(super) tx: mpsc::Sender<Message>,
}

#[derive(Clone)]
struct Receiver {
    routes: Arc<Routes>,
    wait: Duration,
}

// === impl Endpoint ===

impl Endpoint {
    pub(super) async fn start(config: &Config, routes: Arc<Routes>) -> Result<Self, BrokerError> {
        let error = |message: String, source: Box<dyn std::error::Error + Send + Sync>| {
            BrokerError::Backend {
                broker: NAME.to_owned(),
                message,
                source: Some(source),
            }
        };
        let socket: SocketAddr = config.address.parse().map_err(|err| {
            error(
                format!(
                    "invalid endpoint address {:?}; expected host:port",
                    config.address
                ),
                Box::new(err),
            )
        })?;
        let listener = TcpListener::bind(socket).await.map_err(|err| {
            error(
                format!(
                    "cannot listen on {} for the broker endpoint",
                    config.address
                ),
                Box::new(err),
            )
        })?;
        let bound = listener.local_addr().map_err(|err| {
            error(
                "cannot read the endpoint's address".to_owned(),
                Box::new(err),
            )
        })?;
        let address = if bound.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), bound.port()).to_string()
        } else {
            bound.to_string()
        };
        let service = BrokerServer::new(Receiver {
            routes,
            wait: config.publish_timeout,
        });
        let server = tokio::spawn(serve(listener, service));
        tracing::debug!(%address, "broker endpoint started");
        Ok(Self { address, server })
    }
}

/// Serves `service` over HTTP/2 on every connection `listener` accepts, each on its own
/// task: what a `tonic::transport::Server` with this one service does (HTTP/2 only, no
/// delay, hyper's defaults), without tonic's router, which compiles axum.
async fn serve(listener: TcpListener, service: BrokerServer<Receiver>) {
    let mut http = auto::Builder::new(TokioExecutor::new()).http2_only();
    http.http2().timer(TokioTimer::new());
    let http = Arc::new(http);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(err) => {
                tracing::trace!(error = %err, "broker endpoint: accepting a connection failed");
                continue;
            }
        };
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::trace!(error = %err, "broker endpoint: cannot set TCP_NODELAY");
        }
        let service = service.clone();
        let http = Arc::clone(&http);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    service.clone().oneshot(request.map(Body::new))
                });
            if let Err(err) = http.serve_connection(TokioIo::new(tcp), service).await {
                tracing::debug!(error = %err, "broker endpoint: connection failed");
            }
        });
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

// === impl Routes ===

impl Routes {
    pub(super) fn insert(&self, id: String, route: Route) {
        self.lock().insert(id, route);
    }

    pub(super) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    fn get(&self, id: &str) -> Option<(String, mpsc::Sender<Message>)> {
        self.lock()
            .get(id)
            .map(|route| (route.topic.clone(), route.tx.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Route>> {
        lock(&self.routes)
    }
}

// === impl Receiver ===

#[tonic::async_trait]
impl DeliverService for Receiver {
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverReply>, Status> {
        let request = request.into_inner();
        let gone = || {
            Status::not_found(format!(
                "no subscription {:?} here: it was dropped",
                request.subscription
            ))
        };
        let Some((topic, tx)) = self.routes.get(&request.subscription) else {
            return Err(gone());
        };
        if topic != request.topic {
            return Err(Status::invalid_argument(format!(
                "subscription {:?} is to topic {topic:?}, not {:?}",
                request.subscription, request.topic
            )));
        }
        let message = Message {
            headers: request.headers.into_iter().collect(),
            body: request.body.into(),
        };
        match tx.send_timeout(message, self.wait).await {
            Ok(()) => Ok(Response::new(DeliverReply {})),
            Err(SendTimeoutError::Timeout(_)) => Err(Status::resource_exhausted(format!(
                "subscription {:?} to {topic:?} kept a full buffer for {:?}; its handler is too slow",
                request.subscription, self.wait
            ))),
            Err(SendTimeoutError::Closed(_)) => Err(Status::not_found(format!(
                "no subscription {:?} here: it was dropped",
                request.subscription
            ))),
        }
    }
}
