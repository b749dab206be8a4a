//! REST routes from `google.api.http` annotations: path templates, path and query
//! parameters, body mapping.
//!
//! A method annotated with
//! `option (google.api.http) = { get: "/v1/{name=shelves/*}/books" };` is also served
//! as `GET /v1/shelves/7/books?pageSize=10`: the path's variables and the query
//! parameters set request fields, the body (per `body:`) sets the rest. Annotations that
//! cannot be served are reported by [`RestRoutes::from_services`], not fatal.

mod fields;
mod rule;
pub(crate) mod template;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

use prost_reflect::{
    DynamicMessage, Kind, MethodDescriptor, ReflectMessage, SerializeOptions, ServiceDescriptor,
};

pub(crate) use self::fields::is_string_message;
use self::template::Template;

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
    /// The parsed `template`.
    pub(crate) path: Template,
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

// === impl RestRoutes ===

impl RestRoutes {
    /// The routes of `services`' methods; the second part describes annotations that
    /// could not be used (each names the method and what is wrong), for a warning log.
    pub(crate) fn from_services(services: &[ServiceDescriptor]) -> (Self, Vec<String>) {
        let mut routes: Vec<Route> = Vec::new();
        let mut warnings = Vec::new();
        for method in services.iter().flat_map(ServiceDescriptor::methods) {
            let rule = match rule::http_rule(&method) {
                Ok(Some(rule)) => rule,
                Ok(None) => continue,
                Err(err) => {
                    warnings.push(format!("{}: {err}", method.full_name()));
                    continue;
                }
            };
            let mut rules = vec![rule.clone()];
            for binding in rule.additional_bindings {
                if !binding.additional_bindings.is_empty() {
                    warnings.push(format!(
                        "{}: additional_bindings inside additional_bindings are ignored",
                        method.full_name()
                    ));
                }
                rules.push(binding);
            }
            for rule in &rules {
                match Route::new(&method, rule) {
                    Ok(route) => {
                        if let Some(other) = routes.iter().find(|other| {
                            other.http_method == route.http_method
                                && other.path.segments == route.path.segments
                                && other.path.verb == route.path.verb
                        }) {
                            warnings.push(format!(
                                "{}: {} {} is already the route of {}; route skipped",
                                method.full_name(),
                                route.http_method,
                                route.template,
                                other.method.full_name()
                            ));
                        } else {
                            routes.push(route);
                        }
                    }
                    Err(err) => {
                        warnings.push(format!("{}: {err}; route skipped", method.full_name()))
                    }
                }
            }
        }
        // Stable: routes of equal precedence keep the order they were declared in.
        routes.sort_by(|a, b| a.path.precedence(&b.path));
        (Self { routes }, warnings)
    }

    /// Every route.
    pub(crate) fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The routes that may serve `path`: when a route with a `:verb` matches it, only
    /// routes with verbs, so `/v1/books/1:lend` is not also book `1:lend` for the
    /// routes of `/v1/books/{id}`.
    fn candidates<'a>(&'a self, path: &str) -> impl Iterator<Item = &'a Route> + use<'a> {
        let verb = self
            .routes
            .iter()
            .any(|route| route.path.verb.is_some() && route.path.matches(path).is_some());
        self.routes
            .iter()
            .filter(move |route| !verb || route.path.verb.is_some())
    }

    /// The route `method` + `path` (no query string, still percent-encoded) matches.
    pub(crate) fn find(&self, method: &http::Method, path: &str) -> Option<RestMatch<'_>> {
        self.candidates(path)
            .filter(|route| route.http_method == *method)
            .find_map(|route| {
                route
                    .path
                    .matches(path)
                    .map(|bindings| RestMatch { route, bindings })
            })
    }

    /// True when some route's template matches `path` with another HTTP method (→ 405).
    pub(crate) fn path_matches_other_method(&self, method: &http::Method, path: &str) -> bool {
        self.candidates(path)
            .any(|route| route.http_method != *method && route.path.matches(path).is_some())
    }

    /// The HTTP methods of the routes whose template matches `path`, sorted, without
    /// duplicates: the `Allow` header of a 405 (RFC 9110 requires it).
    pub(crate) fn allowed_methods(&self, path: &str) -> Vec<http::Method> {
        let mut methods: Vec<http::Method> = self
            .candidates(path)
            .filter(|route| route.path.matches(path).is_some())
            .map(|route| route.http_method.clone())
            .collect();
        methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        methods.dedup();
        methods
    }
}

// === impl Route ===

impl Route {
    /// The route of `rule` for `method`, checked against its messages.
    fn new(method: &MethodDescriptor, rule: &rule::HttpRule) -> Result<Self, String> {
        let pattern = rule.pattern.as_ref().ok_or(
            "the google.api.http rule has no pattern (get, put, post, delete, patch or custom)",
        )?;
        let (http_method, template) = pattern.method_and_path()?;
        let path = Template::parse(template)?;
        let input = method.input();
        for variable in &path.variables {
            let fields = fields::resolve(&input, &variable.field_path)
                .map_err(|err| format!("path variable {:?}: {err}", variable.field_path))?;
            if fields::canonical(&fields) != variable.field_path {
                return Err(format!(
                    "path variable {:?} must name fields by their proto names ({:?})",
                    variable.field_path,
                    fields::canonical(&fields)
                ));
            }
            if fields.last().is_none_or(|field| {
                !fields::settable(field, false) || matches!(field.kind(), Kind::Message(_))
            }) {
                return Err(format!(
                    "path variable {:?} must name a singular scalar field",
                    variable.field_path
                ));
            }
        }
        let body = match rule.body.as_str() {
            "" => BodyRule::None,
            "*" => BodyRule::Whole,
            name => {
                if input.get_field_by_name(name).is_none() {
                    return Err(format!(
                        "body {name:?} is not a field of {}",
                        input.full_name()
                    ));
                }
                BodyRule::Field(name.to_owned())
            }
        };
        let response_body = match rule.response_body.as_str() {
            "" => None,
            name => {
                if method.output().get_field_by_name(name).is_none() {
                    return Err(format!(
                        "response_body {name:?} is not a field of {}",
                        method.output().full_name()
                    ));
                }
                Some(name.to_owned())
            }
        };
        Ok(Self {
            http_method,
            template: template.to_owned(),
            method: method.clone(),
            body,
            response_body,
            path,
        })
    }

    /// Whether the query string may set the field at `path` (canonical proto names): it
    /// is bound neither by the path nor by the body.
    fn bound(&self, path: &str) -> Option<&'static str> {
        let within = |outer: &str| {
            path == outer
                || path.starts_with(&format!("{outer}."))
                || outer.starts_with(&format!("{path}."))
        };
        match &self.body {
            BodyRule::Whole => return Some("the body"),
            BodyRule::Field(field) if within(field) => return Some("the body"),
            _ => {}
        }
        self.path
            .variables
            .iter()
            .any(|variable| {
                fields::resolve(&self.method.input(), &variable.field_path)
                    .is_ok_and(|bound| within(&fields::canonical(&bound)))
            })
            .then_some("the path")
    }
}

// === impl RestMatch ===

impl RestMatch<'_> {
    /// The request message from the path bindings, the query string (fields not bound by
    /// path or body, `a.b=1&tags=x&tags=y`) and the body. `Err` is a message for a 400
    /// that names the parameter or field at fault.
    pub(crate) fn request(
        &self,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<DynamicMessage, String> {
        let input = self.route.method.input();
        let text = std::str::from_utf8(body)
            .map_err(|err| format!("the request body is not UTF-8: {err}"))?;
        let empty = text.trim().is_empty();
        let mut message = match &self.route.body {
            BodyRule::None if empty => DynamicMessage::new(input.clone()),
            BodyRule::None => {
                return Err(format!(
                    "{} {} takes no request body; send the fields as query parameters",
                    self.route.http_method, self.route.template
                ));
            }
            BodyRule::Whole => {
                let value = json_body(if empty { "{}" } else { text })?;
                crate::dynamic::parse_request(&input, &value)?
            }
            BodyRule::Field(_) if empty => DynamicMessage::new(input.clone()),
            BodyRule::Field(name) => {
                let field = input
                    .get_field_by_name(name)
                    .ok_or_else(|| format!("{} has no field {name:?}", input.full_name()))?;
                let value = json_body(text)?;
                let wrapped = serde_json::Value::Object(
                    [(field.json_name().to_owned(), value)]
                        .into_iter()
                        .collect(),
                );
                crate::dynamic::parse_request(&input, &wrapped)
                    .map_err(|err| format!("the request body ({name}): {err}"))?
            }
        };

        let mut seen = HashSet::new();
        for (key, value) in query_pairs(query.unwrap_or_default())? {
            let path = fields::resolve(&input, &key)
                .map_err(|err| format!("unknown query parameter {key:?}: {err}"))?;
            let canonical = fields::canonical(&path);
            if let Some(by) = self.route.bound(&canonical) {
                return Err(format!(
                    "unknown query parameter {key:?}: the field is set by {by}"
                ));
            }
            let Some(field) = path.last() else { continue };
            if !fields::settable(field, true) {
                return Err(format!(
                    "query parameter {key:?}: {} fields cannot be set by a query parameter",
                    crate::dynamic::field_type(field)
                ));
            }
            if !field.is_list() && !seen.insert(canonical) {
                return Err(format!("query parameter {key:?} is given more than once"));
            }
            let value = fields::parse_value(field, &value)
                .map_err(|err| format!("query parameter {key:?}: {err}"))?;
            fields::set(&mut message, &path, value);
        }

        for (field_path, value) in &self.bindings {
            let path = fields::resolve(&input, field_path)
                .map_err(|err| format!("path parameter {field_path:?}: {err}"))?;
            let Some(field) = path.last() else { continue };
            let value = fields::parse_value(field, value)
                .map_err(|err| format!("path parameter {field_path:?}: {err}"))?;
            fields::set(&mut message, &path, value);
        }
        Ok(message)
    }

    /// The JSON sent back for `reply`: the whole reply, or its `response_body` field.
    pub(crate) fn response(&self, reply: &DynamicMessage) -> Result<serde_json::Value, String> {
        let Some(name) = &self.route.response_body else {
            return serde_json::to_value(reply).map_err(|err| err.to_string());
        };
        let field = reply
            .descriptor()
            .get_field_by_name(name)
            .ok_or_else(|| format!("the reply has no field {name:?}"))?;
        let whole = serde_json::to_value(reply).map_err(|err| err.to_string())?;
        if let Some(value) = whole.get(field.json_name()) {
            return Ok(value.clone());
        }
        // Left out for holding its default: the default's JSON.
        if let (Kind::Message(_), false, false) = (field.kind(), field.is_list(), field.is_map())
            && let prost_reflect::Value::Message(inner) = &*reply.get_field(&field)
        {
            return serde_json::to_value(inner).map_err(|err| err.to_string());
        }
        let all = reply
            .serialize_with_options(
                serde_json::value::Serializer,
                &SerializeOptions::new().skip_default_fields(false),
            )
            .map_err(|err| err.to_string())?;
        Ok(all
            .get(field.json_name())
            .cloned()
            .unwrap_or(serde_json::Value::Null))
    }
}

/// A JSON body, or a 400 message.
fn json_body(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|err| format!("the request body is not valid JSON: {err}"))
}

/// The decoded `key=value` pairs of a query string (`+` is a space).
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    let decode = |text: &str| {
        template::decode(&text.replace('+', " "), false)
            .ok_or_else(|| format!("query string {text:?} is not valid percent-encoded UTF-8"))
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}
