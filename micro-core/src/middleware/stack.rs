//! The server's layer stack, handed to tonic's `Server::layer`.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tonic::body::Body;
use tower::{Layer, ServiceExt};
use tower_service::Service;

use super::routes::Routes;
use super::{
    conformance::{Conformance, Rules},
    context::SetContext,
    defaults::Defaults,
    metrics::MetricsLayer,
    trace::TraceLayer,
};
use tower::util::BoxCloneService;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The routes of a service as the layers added with
/// [`ServiceBuilder::layer`](crate::ServiceBuilder::layer) see them: HTTP-level and
/// type-erased. An error is answered with the status found in it, as tonic answers a
/// service's error (`UNKNOWN` when there is none).
pub type BoxRoutes = BoxCloneService<Request<Body>, Response<Body>, BoxError>;

/// A user layer, type-erased: wraps the routes (or the layers inside it).
pub(crate) type UserLayer = Arc<dyn Fn(BoxRoutes) -> BoxRoutes + Send + Sync>;

/// The service every call of a [`Service`](crate::Service) goes through.
pub(crate) type ServerService = SetContext<Defaults<Conformance<Inner>>>;

/// ContextLayer → TraceLayer::server → MetricsLayer::server → Conformance → user layers →
/// routes.
#[derive(Clone)]
pub(crate) struct ServerStack {
    defaults: bool,
    layers: Arc<[UserLayer]>,
    rules: Rules,
}

/// The routes, behind the user layers if there are any: without, no boxing.
#[derive(Clone)]
pub(crate) enum Inner {
    Routes(Routes),
    Layered(BoxRoutes),
}

type RoutesFuture = <Routes as Service<Request<Body>>>::Future;
type BoxFuture = <BoxRoutes as Service<Request<Body>>>::Future;

pin_project! {
    #[project = InnerFutureProj]
    pub(crate) enum InnerFuture {
        Routes { #[pin] future: RoutesFuture },
        Layered { #[pin] future: BoxFuture },
    }
}

// === impl ServerStack ===

impl ServerStack {
    /// `layers` outermost first; `rules` for the conformance check.
    pub(crate) fn new(defaults: bool, layers: Vec<UserLayer>, rules: Rules) -> Self {
        Self {
            defaults,
            layers: layers.into(),
            rules,
        }
    }
}

impl Layer<Routes> for ServerStack {
    type Service = ServerService;

    fn layer(&self, routes: Routes) -> Self::Service {
        let inner = if self.layers.is_empty() {
            Inner::Routes(routes)
        } else {
            let routes = BoxRoutes::new(ServiceExt::<Request<Body>>::map_err(
                routes,
                |never: std::convert::Infallible| -> BoxError { match never {} },
            ));
            Inner::Layered(
                self.layers
                    .iter()
                    .rev()
                    .fold(routes, |inner, layer| layer(inner)),
            )
        };
        let (trace, metrics) = if self.defaults {
            (TraceLayer::server(), MetricsLayer::server())
        } else {
            (TraceLayer::server_disabled(), MetricsLayer::disabled())
        };
        let inner = Conformance::new(inner, self.rules.clone());
        SetContext::new(Defaults::new(inner, trace, metrics))
    }
}

impl fmt::Debug for ServerStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStack")
            .field("defaults", &self.defaults)
            .field("layers", &self.layers.len())
            .finish()
    }
}

// === impl Inner ===

impl Service<Request<Body>> for Inner {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = InnerFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Inner::Routes(routes) => {
                Service::<Request<Body>>::poll_ready(routes, cx).map_err(|never| match never {})
            }
            Inner::Layered(layered) => layered.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self {
            Inner::Routes(routes) => InnerFuture::Routes {
                future: routes.call(request),
            },
            Inner::Layered(layered) => InnerFuture::Layered {
                future: layered.call(request),
            },
        }
    }
}

impl Future for InnerFuture {
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            InnerFutureProj::Routes { future } => future.poll(cx).map_err(|never| match never {}),
            InnerFutureProj::Layered { future } => future.poll(cx),
        }
    }
}
