//! `grpc.health.v1.Health`, with Watch streams that end when the server shuts down.
//!
//! tonic-health's Watch streams never end, so every client watching a node (micro's own
//! clients do) would hold a graceful shutdown for its whole grace period. Here shutdown
//! sends NOT_SERVING to every watcher and then ends the streams, letting the drain finish
//! as soon as the real calls have.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_check_response::ServingStatus,
    health_server::{Health, HealthServer},
};

use crate::lock::lock;

/// The serving status of the server (`""`) and each of its services.
#[derive(Debug, Clone)]
pub(super) struct HealthState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    statuses: Mutex<HashMap<String, watch::Sender<ServingStatus>>>,
    /// Flips to true once, at shutdown: every Watch stream ends after its last update.
    closing: watch::Sender<bool>,
}

impl HealthState {
    /// All of `services` and the server as a whole SERVING.
    pub(super) fn serving<'a>(services: impl IntoIterator<Item = &'a str>) -> Self {
        let statuses = std::iter::once("")
            .chain(services)
            .map(|name| (name.to_owned(), watch::Sender::new(ServingStatus::Serving)))
            .collect();
        Self {
            inner: Arc::new(Inner {
                statuses: Mutex::new(statuses),
                closing: watch::Sender::new(false),
            }),
        }
    }

    /// The gRPC service answering Check and Watch from this state.
    pub(super) fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService {
            state: self.clone(),
        })
    }

    /// Sets the server and every service to SERVING or NOT_SERVING.
    pub(super) fn set_all(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for sender in self.lock().values() {
            sender.send_replace(status);
        }
    }

    /// NOT_SERVING everywhere, then ends every Watch stream.
    pub(super) fn close(&self) {
        self.set_all(false);
        self.inner.closing.send_replace(true);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<ServingStatus>>> {
        lock(&self.inner.statuses)
    }

    fn status(&self, service: &str) -> Option<ServingStatus> {
        self.lock().get(service).map(|sender| *sender.borrow())
    }
}

/// The `grpc.health.v1.Health` implementation over a [`HealthState`].
#[derive(Debug)]
pub(super) struct HealthService {
    state: HealthState,
}

type WatchResponses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.state.status(&service) {
            Some(status) => Ok(Response::new(HealthCheckResponse {
                status: status.into(),
            })),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    type WatchStream = WatchResponses;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        // An unknown service is reported as SERVICE_UNKNOWN, and the call stays open in
        // case it appears (the health checking protocol's rule).
        let updates = self
            .state
            .lock()
            .entry(service)
            .or_insert_with(|| watch::Sender::new(ServingStatus::ServiceUnknown))
            .subscribe();
        let closing = self.state.inner.closing.subscribe();
        let responses =
            futures_util::stream::unfold(Watching::First { updates, closing }, next_status).map(
                |status| {
                    Ok(HealthCheckResponse {
                        status: status.into(),
                    })
                },
            );
        Ok(Response::new(Box::pin(responses)))
    }
}

enum Watching {
    First {
        updates: watch::Receiver<ServingStatus>,
        closing: watch::Receiver<bool>,
    },
    Following {
        updates: watch::Receiver<ServingStatus>,
        closing: watch::Receiver<bool>,
    },
    Done,
}

/// The current status first, then each change; at shutdown the final status, then the end.
async fn next_status(state: Watching) -> Option<(ServingStatus, Watching)> {
    match state {
        Watching::First {
            mut updates,
            closing,
        } => {
            let status = *updates.borrow_and_update();
            Some((status, Watching::Following { updates, closing }))
        }
        Watching::Following {
            mut updates,
            mut closing,
        } => {
            let closed = tokio::select! {
                biased;
                changed = updates.changed() => {
                    changed.ok()?;
                    false
                }
                _ = closing.wait_for(|closing| *closing) => true,
            };
            let status = *updates.borrow_and_update();
            let next = if closed {
                Watching::Done
            } else {
                Watching::Following { updates, closing }
            };
            Some((status, next))
        }
        Watching::Done => None,
    }
}
