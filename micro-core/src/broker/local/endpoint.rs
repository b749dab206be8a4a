//! The broker endpoint: the gRPC server through which a process receives the messages of
//! its subscriptions.

use std::{collections::HashMap, net::SocketAddr, sync::Mutex, time::Duration};

use std::sync::Arc;

use tokio::{
    net::TcpListener,
    sync::mpsc::{self, error::SendTimeoutError},
    task::JoinHandle,
};
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};

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
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(async move {
            if let Err(err) = Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!(error = %err, "broker endpoint failed");
            }
        });
        tracing::debug!(%address, "broker endpoint started");
        Ok(Self { address, server })
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
