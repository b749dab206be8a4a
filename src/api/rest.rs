//! REST routes from `google.api.http` annotations: path templates, path and query
//! parameters, body mapping. (Stub: interface only, being built.)

use prost_reflect::{DynamicMessage, MethodDescriptor, ServiceDescriptor};

/// Where an HTTP request's body goes in the request message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyRule {
    /// No body (`GET`, `DELETE`, or no `body:` in the annotation).
    None,
    /// `body: "*"`: the whole message.
    Whole,
    /// `body: "field"`: one field of the message.
    Field(String),
}

/// One REST route of one method.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// The HTTP method.
    pub(crate) http_method: http::Method,
    /// The path template as written (`/v1/{name=shelves/*}/books`).
    pub(crate) template: String,
    /// The gRPC method it calls.
    pub(crate) method: MethodDescriptor,
    /// Where the body goes.
    pub(crate) body: BodyRule,
    /// `response_body`: the reply field sent back instead of the whole reply.
    pub(crate) response_body: Option<String>,
}

/// The REST routes of one service's methods.
#[derive(Debug, Clone, Default)]
pub(crate) struct RestRoutes {
    routes: Vec<Route>,
}

/// A request that matched a route: the route and the path's variable bindings
/// (field path → decoded value).
#[derive(Debug)]
pub(crate) struct RestMatch<'a> {
    /// The route matched.
    pub(crate) route: &'a Route,
    /// Field path (`shelf.name`) → value from the path.
    pub(crate) bindings: Vec<(String, String)>,
}

impl RestRoutes {
    /// The routes of `services`' methods; the second part describes annotations that
    /// could not be used (each names the method and what is wrong), for a warning log.
    pub(crate) fn from_services(_services: &[ServiceDescriptor]) -> (Self, Vec<String>) {
        (Self::default(), Vec::new())
    }

    /// Every route.
    pub(crate) fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route `method` + `path` (no query string, still percent-encoded) matches.
    pub(crate) fn find(&self, _method: &http::Method, _path: &str) -> Option<RestMatch<'_>> {
        None
    }

    /// True when some route's template matches `path` with another HTTP method (→ 405).
    pub(crate) fn path_matches_other_method(&self, _method: &http::Method, _path: &str) -> bool {
        false
    }
}

impl RestMatch<'_> {
    /// The request message from the path bindings, the query string (fields not bound by
    /// path or body, `a.b=1&tags=x&tags=y`) and the body. `Err` is a message for a 400
    /// that names the parameter or field at fault.
    pub(crate) fn request(
        &self,
        _query: Option<&str>,
        _body: &[u8],
    ) -> Result<DynamicMessage, String> {
        Err("REST routes are not built yet".to_owned())
    }

    /// The JSON sent back for `reply`: the whole reply, or its `response_body` field.
    pub(crate) fn response(&self, reply: &DynamicMessage) -> Result<serde_json::Value, String> {
        serde_json::to_value(reply).map_err(|err| err.to_string())
    }
}
