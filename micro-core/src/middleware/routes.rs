//! The gRPC services of one [`Service`](crate::Service), routed by the first segment of
//! the request path (`/<package.Service>/<Method>`); any other path is answered
//! UNIMPLEMENTED. This is what `tonic::service::Routes` does, without tonic's `router`
//! feature, which compiles axum into every service.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::Either;
use http::{Request, Response};
use tonic::{Status, body::Body, server::NamedService};
use tower::{
    ServiceExt,
    util::{BoxCloneSyncService, Oneshot},
};
use tower_service::Service;

/// One gRPC service, type-erased.
type Route = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// Collects the services of a [`Routes`].
#[derive(Default)]
pub(crate) struct RoutesBuilder {
    routes: Vec<(&'static str, Route)>,
}

impl RoutesBuilder {
    /// Routes `/<S::NAME>/…` to `service`. A name added before keeps its service (the
    /// first one added wins) and the duplicate is logged.
    pub(crate) fn add_service<S>(&mut self, service: S) -> &mut Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        if self.routes.iter().any(|(name, _)| *name == S::NAME) {
            tracing::warn!(
                service = S::NAME,
                "gRPC service added twice; the first one serves"
            );
        } else {
            self.routes
                .push((S::NAME, BoxCloneSyncService::new(service)));
        }
        self
    }

    /// The routes, ready to serve.
    pub(crate) fn routes(self) -> Routes {
        Routes {
            routes: self.routes.into(),
        }
    }
}

/// The routing service: cheap to clone, shared by every connection.
#[derive(Clone)]
pub(crate) struct Routes {
    routes: Arc<[(&'static str, Route)]>,
}

impl Routes {
    /// The service for `path` (`/<name>/<method>`, the method not empty), if any.
    fn route(&self, path: &str) -> Option<&Route> {
        let (name, method) = path.strip_prefix('/')?.split_once('/')?;
        if method.is_empty() {
            return None;
        }
        self.routes
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, route)| route)
    }
}

/// What tonic answers for a path no service serves: UNIMPLEMENTED, trailers-only.
fn unimplemented() -> Response<Body> {
    let (parts, ()) = Status::unimplemented("").into_http::<()>().into_parts();
    Response::from_parts(parts, Body::empty())
}

impl Service<Request<Body>> for Routes {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Oneshot<Route, Request<Body>>, Ready<Result<Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Every route is a generated tonic server, always ready; each call readies its own
        // clone (as tonic's router does).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self.route(request.uri().path()) {
            Some(route) => Either::Left(route.clone().oneshot(request)),
            None => Either::Right(ready(Ok(unimplemented()))),
        }
    }
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|(name, _)| name))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A service that answers every call with its name in a header.
    #[derive(Clone)]
    struct Named<const N: usize>;

    const NAMES: [&str; 2] = ["greeter.v1.Greeter", "grpc.health.v1.Health"];

    impl<const N: usize> NamedService for Named<N> {
        const NAME: &'static str = NAMES[N];
    }

    impl<const N: usize> Service<Request<Body>> for Named<N> {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = Ready<Result<Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Body>) -> Self::Future {
            let mut response = Response::new(Body::empty());
            response
                .headers_mut()
                .insert("x-served-by", NAMES[N].parse().unwrap());
            response
                .headers_mut()
                .insert("x-path", request.uri().path().parse().unwrap());
            ready(Ok(response))
        }
    }

    async fn call(routes: &Routes, path: &str) -> Response<Body> {
        let request = Request::post(path).body(Body::empty()).unwrap();
        routes.clone().oneshot(request).await.unwrap()
    }

    fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
        response.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn routes_by_service_name_and_answers_unimplemented_otherwise() {
        let mut builder = RoutesBuilder::default();
        builder.add_service(Named::<0>).add_service(Named::<1>);
        let routes = builder.routes();

        let response = call(&routes, "/greeter.v1.Greeter/SayHello").await;
        assert_eq!(header(&response, "x-served-by"), Some(NAMES[0]));
        assert_eq!(
            header(&response, "x-path"),
            Some("/greeter.v1.Greeter/SayHello")
        );
        let response = call(&routes, "/grpc.health.v1.Health/Check").await;
        assert_eq!(header(&response, "x-served-by"), Some(NAMES[1]));
        // A method the service does not have is the service's to refuse.
        let response = call(&routes, "/greeter.v1.Greeter/Nope/extra").await;
        assert_eq!(header(&response, "x-served-by"), Some(NAMES[0]));

        for path in [
            "/",
            "/greeter.v1.Greeter",
            "/greeter.v1.Greeter/",
            "/greeter.v1.Other/SayHello",
            "/greeter.v1.greeter/SayHello",
            "//SayHello",
        ] {
            let response = call(&routes, path).await;
            assert_eq!(header(&response, "x-served-by"), None, "{path}");
            assert_eq!(header(&response, "grpc-status"), Some("12"), "{path}");
            assert_eq!(
                header(&response, "content-type"),
                Some("application/grpc"),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn the_first_service_of_a_name_serves() {
        #[derive(Clone)]
        struct Second;
        impl NamedService for Second {
            const NAME: &'static str = NAMES[0];
        }
        impl Service<Request<Body>> for Second {
            type Response = Response<Body>;
            type Error = Infallible;
            type Future = Ready<Result<Response<Body>, Infallible>>;
            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _request: Request<Body>) -> Self::Future {
                ready(Ok(Response::new(Body::empty())))
            }
        }
        let mut builder = RoutesBuilder::default();
        builder.add_service(Named::<0>).add_service(Second);
        let routes = builder.routes();
        let response = call(&routes, "/greeter.v1.Greeter/SayHello").await;
        assert_eq!(header(&response, "x-served-by"), Some(NAMES[0]));
    }
}
