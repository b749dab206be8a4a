//! The OpenAPI 3 document of what the gateway serves, generated from the descriptors.
//! (Stub: interface only, being built.)

use std::sync::Arc;

use super::ServiceSchema;

/// Settings of the generated document.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// `info.title`.
    pub(crate) title: String,
    /// `info.version`.
    pub(crate) version: String,
    /// Whether `POST /event/{topic}` is served (a broker is configured).
    pub(crate) events: bool,
}

/// The document for `schemas`: per method `POST /{service}/{Service}/{Method}`, each REST
/// route, `POST /event/{topic}`, with request, reply and error schemas.
pub(crate) fn document(_schemas: &[Arc<ServiceSchema>], options: &Options) -> serde_json::Value {
    serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": options.title, "version": options.version},
        "paths": {}
    })
}
