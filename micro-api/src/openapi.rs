//! The OpenAPI 3.1 document of what the gateway serves, generated from the descriptors.
//!
//! Schemas follow the canonical protobuf JSON mapping as the gateway's parser applies it:
//! what a request may hold (64-bit integers as numbers or strings, enums as names or
//! numbers, `null` for "not set") and, as a subset, what replies hold. Replies leave out
//! fields holding their default value, so no property is `required`.

mod paths;
mod schema;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use serde_json::{Map, Value, json};

use self::{
    paths::{PathParameter, doc_path, parameter_names, shape_of},
    schema::Schemas,
};
use super::{
    ServiceSchema,
    rest::{BodyRule, Route},
};

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

/// How deep query parameters follow nested messages (`a.b.c`).
const MAX_QUERY_DEPTH: usize = 3;

/// The gRPC code names of the error body.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A path parameter of type string: one non-empty segment.
const SEGMENT_PATTERN: &str = "^[^/]+$";

/// The name of the error schema in `components/schemas`.
const ERROR_SCHEMA: &str = "micro.api.Error";

/// The document for `schemas`: per method `POST /{service}/{Service}/{Method}`, each REST
/// route, `POST /event/{topic}`, with request, reply and error schemas.
pub(crate) fn document(schemas: &[Arc<ServiceSchema>], options: &Options) -> serde_json::Value {
    let mut document = Document::default();
    let mut sorted: Vec<&Arc<ServiceSchema>> = schemas.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for schema in sorted {
        document.service(schema);
    }
    if options.events {
        document.events();
    }
    document.schemas.insert_raw(ERROR_SCHEMA, error_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": options.title,
            "version": options.version,
            "description": "JSON over HTTP to micro services, generated from their gRPC \
                            schemas: `POST /{service}/{Service}/{Method}` for every method, \
                            and the REST routes of `google.api.http` annotations.",
        },
        "paths": Value::Object(document.paths),
        "components": {"schemas": document.schemas.into_json()},
    })
}

/// The document being built.
#[derive(Debug, Default)]
struct Document {
    paths: Map<String, Value>,
    schemas: Schemas,
    operation_ids: HashSet<String>,
    /// A path with its parameters' names left out (`/v1/shelves/{}`) → the path as
    /// documented, so paths the same but for parameter names are one path.
    shapes: HashMap<String, String>,
}

// === impl Document ===

impl Document {
    fn service(&mut self, schema: &ServiceSchema) {
        let mut short_names: HashMap<&str, usize> = HashMap::new();
        for service in &schema.services {
            *short_names.entry(service.name()).or_default() += 1;
        }
        for service in &schema.services {
            let segment = if short_names.get(service.name()).copied().unwrap_or(0) > 1 {
                service.full_name()
            } else {
                service.name()
            };
            for method in service.methods() {
                let path = format!("/{}/{}/{}", schema.name, segment, method.name());
                let operation = self.rpc_operation(&schema.name, &method);
                self.add(&path, "post", operation);
            }
        }
        for route in schema.rest.routes() {
            let Some((path, parameters)) = doc_path(&route.path) else {
                tracing::debug!(
                    template = %route.template,
                    "REST route left out of the OpenAPI document: '**' has no OpenAPI form"
                );
                continue;
            };
            let (path, parameters) = self.same_shape(path, parameters);
            let method = route.http_method.as_str().to_ascii_lowercase();
            if self
                .paths
                .get(&path)
                .is_some_and(|item| item.get(&method).is_some())
            {
                // A route of higher precedence took this path and method.
                continue;
            }
            if !matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
            ) {
                continue;
            }
            let operation = self.rest_operation(&schema.name, route, &parameters);
            self.add(&path, &method, operation);
        }
    }

    /// `path`, or the documented path of the same shape with its parameter names.
    fn same_shape(
        &mut self,
        path: String,
        parameters: Vec<PathParameter>,
    ) -> (String, Vec<PathParameter>) {
        let shape = shape_of(&path);
        match self.shapes.get(&shape) {
            Some(existing) if *existing != path => {
                let names = parameter_names(existing);
                let parameters = parameters
                    .into_iter()
                    .zip(names)
                    .map(|(parameter, name)| PathParameter { name, ..parameter })
                    .collect();
                (existing.clone(), parameters)
            }
            _ => {
                self.shapes.insert(shape, path.clone());
                (path, parameters)
            }
        }
    }

    fn add(&mut self, path: &str, method: &str, operation: Value) {
        if let Value::Object(item) = self
            .paths
            .entry(path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()))
        {
            item.insert(method.to_owned(), operation);
        }
    }

    fn operation_id(&mut self, wanted: String) -> String {
        let mut id = wanted.clone();
        let mut n = 2;
        while !self.operation_ids.insert(id.clone()) {
            id = format!("{wanted}_{n}");
            n += 1;
        }
        id
    }

    /// `POST /{service}/{Service}/{Method}`.
    fn rpc_operation(&mut self, registered: &str, method: &MethodDescriptor) -> Value {
        let input = self.schemas.message_ref(&method.input());
        let body_schema = if method.is_client_streaming() {
            json!({"anyOf": [input, {"type": "array", "items": input}]})
        } else {
            input
        };
        let operation_id = self.operation_id(format!(
            "{registered}.{}.{}",
            method.parent_service().full_name(),
            method.name()
        ));
        let reply = self.schemas.message_ref(&method.output());
        let mut operation = json!({
            "operationId": operation_id,
            "tags": [registered],
            "summary": format!("{} (gRPC method {})", method.name(), method.full_name()),
            "requestBody": {
                "required": false,
                "description": if method.is_client_streaming() {
                    "The request message, or an array of them (a client stream)."
                } else {
                    "The request message; an empty body is an empty message."
                },
                "content": {"application/json": {"schema": body_schema}},
            },
            "responses": responses(method, reply),
        });
        describe(&mut operation, method);
        operation
    }

    /// One REST route.
    fn rest_operation(
        &mut self,
        registered: &str,
        route: &Route,
        path_parameters: &[PathParameter],
    ) -> Value {
        let method = &route.method;
        let input = method.input();
        let mut parameters = Vec::new();
        for parameter in path_parameters {
            let field = parameter
                .field_path
                .as_deref()
                .and_then(|path| field_at(&input, path));
            let mut schema = match &field {
                Some(field) => self.schemas.text_schema(field),
                None => json!({"type": "string"}),
            };
            // One segment: not empty, and a `/` (even encoded) is best left out.
            if schema["type"] == "string"
                && let Value::Object(object) = &mut schema
                && !object.contains_key("pattern")
                && !object.contains_key("format")
            {
                object.insert("pattern".to_owned(), json!(SEGMENT_PATTERN));
            }
            parameters.push(json!({
                "name": parameter.name,
                "in": "path",
                "required": true,
                "description": parameter.description,
                "schema": schema,
            }));
        }
        let bound: Vec<String> = route
            .path
            .variables
            .iter()
            .map(|variable| variable.field_path.clone())
            .collect();
        if route.body != BodyRule::Whole {
            let mut query = Vec::new();
            let body_field = match &route.body {
                BodyRule::Field(name) => Some(name.as_str()),
                _ => None,
            };
            self.query_parameters(&input, "", "", &bound, body_field, 0, &mut query);
            parameters.extend(query);
        }
        let operation_id = self.operation_id(format!(
            "{registered}.{}.{}.{}",
            method.parent_service().full_name(),
            method.name(),
            route.http_method.as_str().to_ascii_lowercase()
        ));
        let reply = match &route.response_body {
            Some(name) => match method.output().get_field_by_name(name) {
                Some(field) => self.schemas.field_schema(&field, false),
                None => json!({}),
            },
            None => self.schemas.message_ref(&method.output()),
        };
        let mut operation = json!({
            "operationId": operation_id,
            "tags": [registered],
            "summary": format!(
                "{} {} (gRPC method {})",
                route.http_method, route.template, method.full_name()
            ),
            "parameters": parameters,
            "responses": responses(method, reply),
        });
        let body = match &route.body {
            BodyRule::None => None,
            BodyRule::Whole => Some((
                self.schemas.message_ref(&input),
                "The request message; fields in the path are taken from the path.".to_owned(),
            )),
            BodyRule::Field(name) => input.get_field_by_name(name).map(|field| {
                (
                    self.schemas.field_schema(&field, true),
                    format!("The request's `{name}` field."),
                )
            }),
        };
        if let (Some((schema, description)), Value::Object(object)) = (body, &mut operation) {
            object.insert(
                "requestBody".to_owned(),
                json!({
                    "required": false,
                    "description": description,
                    "content": {"application/json": {"schema": schema}},
                }),
            );
        }
        describe(&mut operation, method);
        operation
    }

    /// The query parameters of `message`'s fields not bound by the path or the body,
    /// nested messages flattened to `a.b`.
    #[allow(clippy::too_many_arguments)]
    fn query_parameters(
        &mut self,
        message: &MessageDescriptor,
        json_prefix: &str,
        proto_prefix: &str,
        bound: &[String],
        body_field: Option<&str>,
        depth: usize,
        out: &mut Vec<Value>,
    ) {
        for field in message.fields() {
            let proto_path = format!("{proto_prefix}{}", field.name());
            let json_path = format!("{json_prefix}{}", field.json_name());
            if depth == 0 && body_field == Some(field.name()) {
                continue;
            }
            if bound.iter().any(|b| {
                *b == proto_path
                    || b.starts_with(&format!("{proto_path}."))
                    || proto_path.starts_with(&format!("{b}."))
            }) {
                // A bound field, or a message holding one: its other fields still are
                // query parameters.
                if let Kind::Message(inner) = field.kind()
                    && !field.is_list()
                    && !field.is_map()
                    && !bound.contains(&proto_path)
                    && depth < MAX_QUERY_DEPTH
                {
                    self.query_parameters(
                        &inner,
                        &format!("{json_path}."),
                        &format!("{proto_path}."),
                        bound,
                        body_field,
                        depth + 1,
                        out,
                    );
                }
                continue;
            }
            if field.is_map() {
                continue;
            }
            match field.kind() {
                Kind::Message(inner) if !schema::is_string_message(&inner) => {
                    if !field.is_list() && depth < MAX_QUERY_DEPTH {
                        self.query_parameters(
                            &inner,
                            &format!("{json_path}."),
                            &format!("{proto_path}."),
                            bound,
                            body_field,
                            depth + 1,
                            out,
                        );
                    }
                }
                _ => {
                    let item = self.schemas.text_schema(&field);
                    let mut parameter = json!({
                        "name": json_path,
                        "in": "query",
                        "required": false,
                        "schema": if field.is_list() {
                            json!({"type": "array", "items": item})
                        } else {
                            item
                        },
                    });
                    if let Value::Object(object) = &mut parameter {
                        if field.is_list() {
                            object.insert("style".to_owned(), json!("form"));
                            object.insert("explode".to_owned(), json!(true));
                        }
                        if let Some(comment) = schema::comments_of_field(&field) {
                            object.insert("description".to_owned(), json!(comment));
                        }
                    }
                    out.push(parameter);
                }
            }
        }
    }

    /// `POST /event/{topic}`.
    fn events(&mut self) {
        let id = self.operation_id("micro.api.publish".to_owned());
        let operation = json!({
            "operationId": id,
            "tags": ["events"],
            "summary": "Publishes the JSON body as an event on `topic`.",
            "parameters": [{
                "name": "topic",
                "in": "path",
                "required": true,
                "description": "Dot-separated tokens of ASCII letters, digits, `_` and `-`.",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
                },
            }],
            "requestBody": {
                "required": false,
                "description": "Any JSON document; an empty body is `{}`.",
                "content": {"application/json": {"schema": {}}},
            },
            "responses": {
                "202": {
                    "description": "Published.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "default": error_response(),
            },
        });
        self.add("/event/{topic}", "post", operation);
    }
}

/// The responses of `method`: 200 with `reply`, and the error body otherwise.
fn responses(method: &MethodDescriptor, reply: Value) -> Value {
    let ok = if method.is_server_streaming() {
        json!({
            "description": "The reply stream: one JSON reply per line (NDJSON), or \
                            server-sent events with `Accept: text/event-stream`; an error \
                            after the first reply ends the stream as one more line/event \
                            with the error body.",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        })
    } else {
        json!({
            "description": "The reply.",
            "content": {"application/json": {"schema": reply}},
        })
    };
    json!({"200": ok, "default": error_response()})
}

fn error_response() -> Value {
    json!({
        "description": "An error: the gRPC status code by name, its message and details; \
                        the HTTP status follows from the code (INVALID_ARGUMENT 400, \
                        NOT_FOUND 404, UNAVAILABLE 503, ...).",
        "content": {
            "application/json": {"schema": {"$ref": format!("#/components/schemas/{ERROR_SCHEMA}")}},
        },
    })
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "An error reply.",
        "properties": {
            "code": {"type": "string", "enum": CODES},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {}},
        },
        "required": ["code", "message"],
    })
}

/// The field at `path` (proto names, `a.b`) in `message`.
fn field_at(message: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let mut current = message.clone();
    let mut found = None;
    for part in path.split('.') {
        if let Some(Kind::Message(inner)) = found.as_ref().map(FieldDescriptor::kind) {
            current = inner;
        }
        found = Some(current.get_field_by_name(part)?);
    }
    found
}

/// Adds `method`'s comments, when the pool has source info, as the description.
fn describe(operation: &mut Value, method: &MethodDescriptor) {
    if let (Some(comment), Value::Object(object)) = (
        schema::comments(&method.parent_file(), method.path()),
        operation,
    ) {
        object.insert("description".to_owned(), json!(comment));
    }
}
