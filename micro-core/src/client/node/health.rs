//! Watching each connected node's `grpc.health.v1.Health/Watch`, so a node that reports
//! NOT_SERVING leaves the picks at once, without waiting for a failed call.

use std::{
    future::Future,
    pin::Pin,
    sync::Weak,
    task::{Context, Poll},
};

use http::{Request, Response, uri::Authority};
use hyper::client::conn::http2::SendRequest;
use tokio_stream::StreamExt;
use tonic::{Code, body::Body};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::set_origin;
use crate::node::NodeHandle;

/// Follows the node's overall health (service `""`) over `sender`'s connection until the
/// stream ends, the connection closes or the node's handle is dropped.
pub(crate) async fn watch(node: Weak<NodeHandle>, sender: SendRequest<Body>, authority: Authority) {
    let mut client = HealthClient::new(Connection { sender, authority });
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut updates = match client.watch(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            // A server without health checking is taken at its word: serving (it answered,
            // so it runs; this puts back a node a PING timeout took out).
            if status.code() == Code::Unimplemented {
                if let Some(node) = node.upgrade() {
                    node.set_serving(true);
                }
            } else {
                tracing::debug!(error = %status, "health watch failed to start");
            }
            return;
        }
    };
    while let Some(update) = updates.next().await {
        let Some(node) = node.upgrade() else {
            return;
        };
        let Ok(update) = update else {
            return;
        };
        let serving = update.status() == ServingStatus::Serving;
        if node.set_serving(serving) {
            tracing::debug!(node = %node.id(), address = %node.address(), serving, "node health changed");
        }
    }
}

/// A tower service sending straight over one node's HTTP/2 connection.
#[derive(Clone)]
struct Connection {
    sender: SendRequest<Body>,
    authority: Authority,
}

impl tower_service::Service<Request<Body>> for Connection {
    type Response = Response<Body>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        set_origin(&mut request, &self.authority);
        let response = self.sender.send_request(request);
        Box::pin(async move { Ok(response.await?.map(Body::new)) })
    }
}
