#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value};
use serde_json::json;

use super::*;

const LIBRARY: &str = r#"
syntax = "proto3";
package test.v1;

import "google/api/annotations.proto";
import "google/protobuf/timestamp.proto";

service Library {
  rpc GetBook(GetBookRequest) returns (Book) {
    option (google.api.http) = { get: "/v1/{name=shelves/*/books/*}" };
  }
  rpc Special(GetBookRequest) returns (Book) {
    option (google.api.http) = { get: "/v1/shelves/special/books/{name}" };
  }
  rpc ListBooks(ListBooksRequest) returns (ListBooksResponse) {
    option (google.api.http) = { get: "/v1/shelves/{shelf}/books" response_body: "books" };
  }
  rpc CreateBook(CreateBookRequest) returns (Book) {
    option (google.api.http) = { post: "/v1/shelves/{shelf}/books" body: "book" };
  }
  rpc UpdateBook(UpdateBookRequest) returns (Book) {
    option (google.api.http) = {
      put: "/v1/books/{book.id}" body: "book"
      additional_bindings { patch: "/v1/books/{book.id}" body: "*" }
    };
  }
  rpc DeleteBook(DeleteBookRequest) returns (Empty) {
    option (google.api.http) = { delete: "/v1/books/{id}" };
  }
  rpc Publish(PublishRequest) returns (Book) {
    option (google.api.http) = { post: "/v1/books/{id}:publish" body: "*" };
  }
  rpc Touch(PublishRequest) returns (Book) {
    option (google.api.http) = { post: "/v1/books/{id}" body: "*" };
  }
  rpc GetFile(GetFileRequest) returns (Book) {
    option (google.api.http) = { get: "/files/{path=**}" };
  }
  rpc Head(GetBookRequest) returns (Book) {
    option (google.api.http) = { custom { kind: "HEAD" path: "/v1/head/{name}" } };
  }
  rpc Plain(GetBookRequest) returns (Book);
  rpc BadField(GetBookRequest) returns (Book) {
    option (google.api.http) = { get: "/v1/bad/{nope}" };
  }
  rpc BadSlash(GetBookRequest) returns (Book) {
    option (google.api.http) = { get: "v1/bad" };
  }
  rpc BadMessage(CreateBookRequest) returns (Book) {
    option (google.api.http) = { get: "/v1/bad/{book}" };
  }
  rpc BadBody(GetBookRequest) returns (Book) {
    option (google.api.http) = { post: "/v1/bad" body: "nope" };
  }
  rpc BadRest(GetBookRequest) returns (Book) {
    option (google.api.http) = { get: "/v1/**/bad" };
  }
  rpc BadResponse(GetBookRequest) returns (Book) {
    option (google.api.http) = { get: "/v1/bad" response_body: "nope" };
  }
  rpc BadBrace(GetBookRequest) returns (Book) {
    option (google.api.http) = { get: "/v1/{name" };
  }
  rpc BadDuplicate(GetBookRequest) returns (Book) {
    option (google.api.http) = { custom { kind: "HEAD" path: "/v1/head/{name}" } };
  }
  rpc BadNoPattern(GetBookRequest) returns (Book) {
    option (google.api.http) = { body: "*" };
  }
  rpc BadJsonName(ListBooksRequest) returns (Book) {
    option (google.api.http) = { get: "/v1/bad/{pageSize}" };
  }
}

enum Genre {
  GENRE_UNSPECIFIED = 0;
  FICTION = 1;
  SCIENCE = 2;
}

message Address { string city = 1; }
message Author { string name = 1; Address address = 2; }

message Book {
  string id = 1;
  string title = 2;
  repeated string tags = 3;
  Genre genre = 4;
  int64 pages = 5;
  Author author = 6;
}

message GetBookRequest { string name = 1; }

message ListBooksRequest {
  string shelf = 1;
  int32 page_size = 2;
  repeated string tags = 3;
  Genre genre = 4;
  Author author = 5;
  bool available = 6;
  int64 min_pages = 7;
  double min_rating = 8;
  google.protobuf.Timestamp since = 9;
  bytes token = 10;
  map<string, string> labels = 11;
  repeated Author authors = 12;
  uint32 year = 13;
  repeated int32 counts = 14;
}

message ListBooksResponse { repeated Book books = 1; string next = 2; }
message CreateBookRequest { string shelf = 1; Book book = 2; }
message UpdateBookRequest { Book book = 1; bool validate_only = 2; }
message DeleteBookRequest { int64 id = 1; }
message PublishRequest { int64 id = 1; string note = 2; }
message GetFileRequest { string path = 1; }
message Empty {}
"#;

/// The encoded set of `library.proto` and its imports, custom options kept.
fn encoded_set() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("library.proto"), LIBRARY).unwrap();
    let protos = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let mut compiler = protox::Compiler::new([dir.path(), std::path::Path::new(protos)]).unwrap();
    compiler.include_imports(true);
    compiler.open_file("library.proto").unwrap();
    compiler.encode_file_descriptor_set()
}

/// The pool with `google/api/annotations.proto`: the extension is known.
fn pool() -> DescriptorPool {
    DescriptorPool::decode(encoded_set().as_slice()).unwrap()
}

/// The same schema without the google/api files, as a server that strips imports would
/// serve it: the option survives only as unknown bytes.
fn pool_without_annotations() -> DescriptorPool {
    let global = DescriptorPool::global();
    let set_descriptor = global
        .get_message_by_name("google.protobuf.FileDescriptorSet")
        .unwrap();
    let mut set = DynamicMessage::decode(set_descriptor, encoded_set().as_slice()).unwrap();
    let files = set.get_field_by_name_mut("file").unwrap();
    let Value::List(files) = files else { panic!() };
    files.retain(|file| {
        let Value::Message(file) = file else { panic!() };
        let name = file.get_field_by_name("name").unwrap();
        !name.as_str().unwrap().starts_with("google/api/")
    });
    for file in files.iter_mut() {
        let Value::Message(file) = file else { panic!() };
        let Value::List(dependencies) = file.get_field_by_name_mut("dependency").unwrap() else {
            panic!()
        };
        dependencies.retain(|d| !d.as_str().unwrap().starts_with("google/api/"));
    }
    let pool = DescriptorPool::decode(set.encode_to_vec().as_slice()).unwrap();
    assert!(pool.get_extension_by_name("google.api.http").is_none());
    pool
}

fn routes_of(pool: &DescriptorPool) -> (RestRoutes, Vec<String>) {
    let service = pool.get_service_by_name("test.v1.Library").unwrap();
    RestRoutes::from_services(&[service])
}

fn routes() -> RestRoutes {
    routes_of(&pool()).0
}

fn find<'a>(routes: &'a RestRoutes, method: &str, path: &str) -> RestMatch<'a> {
    let method = http::Method::from_bytes(method.as_bytes()).unwrap();
    routes
        .find(&method, path)
        .unwrap_or_else(|| panic!("no route for {method} {path}"))
}

fn json_of(message: &DynamicMessage) -> serde_json::Value {
    serde_json::to_value(message).unwrap()
}

fn request(
    routes: &RestRoutes,
    method: &str,
    path_and_query: &str,
    body: &str,
) -> Result<serde_json::Value, String> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    find(routes, method, path)
        .request(query, body.as_bytes())
        .map(|message| json_of(&message))
}

#[test]
fn annotations_become_routes_and_bad_ones_warnings() {
    let (routes, warnings) = routes_of(&pool());
    let names: Vec<String> = routes
        .routes()
        .iter()
        .map(|route| format!("{} {}", route.http_method, route.template))
        .collect();
    assert_eq!(routes.routes().len(), 11, "{names:?}");
    for bad in [
        "BadField",
        "BadSlash",
        "BadMessage",
        "BadBody",
        "BadRest",
        "BadResponse",
        "BadBrace",
        "BadDuplicate",
        "BadNoPattern",
        "BadJsonName",
    ] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&format!("test.v1.Library.{bad}:"))),
            "no warning for {bad}: {warnings:?}"
        );
    }
    assert_eq!(warnings.len(), 10, "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains("\"nope\"")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("must name a singular scalar field")),
        "{warnings:?}"
    );

    // The same routes from the option's raw bytes, without the extension in the pool.
    let (raw, raw_warnings) = routes_of(&pool_without_annotations());
    let raw_names: Vec<String> = raw
        .routes()
        .iter()
        .map(|route| format!("{} {}", route.http_method, route.template))
        .collect();
    assert_eq!(raw_names, names);
    assert_eq!(raw_warnings.len(), 10, "{raw_warnings:?}");
}

#[test]
fn every_verb_and_custom_methods() {
    let routes = routes();
    let method = |m: &str, path: &str| find(&routes, m, path).route.method.name().to_owned();
    assert_eq!(method("GET", "/v1/shelves/1/books/2"), "GetBook");
    assert_eq!(method("GET", "/v1/shelves/1/books"), "ListBooks");
    assert_eq!(method("POST", "/v1/shelves/1/books"), "CreateBook");
    assert_eq!(method("PUT", "/v1/books/7"), "UpdateBook");
    assert_eq!(method("PATCH", "/v1/books/7"), "UpdateBook");
    assert_eq!(method("DELETE", "/v1/books/7"), "DeleteBook");
    assert_eq!(method("HEAD", "/v1/head/x"), "Head");
    assert!(routes.find(&http::Method::GET, "/v1/books/7").is_none());
    assert!(routes.path_matches_other_method(&http::Method::GET, "/v1/books/7"));
    assert!(!routes.path_matches_other_method(&http::Method::GET, "/v1/nothing"));
    assert!(routes.path_matches_other_method(&http::Method::DELETE, "/v1/shelves/1/books/2"));
    assert!(!routes.path_matches_other_method(&http::Method::GET, "/files/x"));
    assert_eq!(
        routes.allowed_methods("/v1/books/7"),
        [
            http::Method::DELETE,
            http::Method::PATCH,
            http::Method::POST,
            http::Method::PUT
        ]
    );
    assert!(routes.allowed_methods("/v1/nothing").is_empty());
    assert!(
        routes
            .find(&http::Method::GET, "/v1/shelves/1/books/")
            .is_none()
    );
    assert!(
        routes
            .find(&http::Method::GET, "/v1/shelves//books/2")
            .is_none()
    );
}

#[test]
fn precedence_literals_verbs_and_length() {
    let routes = routes();
    // A literal segment beats a variable's `*`.
    let special = find(&routes, "GET", "/v1/shelves/special/books/x");
    assert_eq!(special.route.method.name(), "Special");
    assert_eq!(special.bindings, vec![("name".to_owned(), "x".to_owned())]);
    let other = find(&routes, "GET", "/v1/shelves/other/books/x");
    assert_eq!(other.route.method.name(), "GetBook");
    // A route with a verb is tried before one without.
    let publish = find(&routes, "POST", "/v1/books/5:publish");
    assert_eq!(publish.route.method.name(), "Publish");
    assert_eq!(publish.bindings, vec![("id".to_owned(), "5".to_owned())]);
    assert_eq!(
        find(&routes, "POST", "/v1/books/5").route.method.name(),
        "Touch"
    );
    // A path a verb route matches is that route's alone: no other method takes it.
    assert!(
        routes
            .find(&http::Method::PUT, "/v1/books/5:publish")
            .is_none()
    );
    assert!(routes.path_matches_other_method(&http::Method::PUT, "/v1/books/5:publish"));
    assert_eq!(
        routes.allowed_methods("/v1/books/5:publish"),
        [http::Method::POST]
    );
    // Without a verb route for it, a colon is part of the value.
    assert_eq!(
        find(&routes, "PUT", "/v1/books/5:other").bindings,
        vec![("book.id".to_owned(), "5:other".to_owned())]
    );
    // Longer templates before shorter ones with the same start.
    let a = Template::parse("/v1/a").unwrap();
    let b = Template::parse("/v1/a/{x}").unwrap();
    let c = Template::parse("/v1/{x}").unwrap();
    let d = Template::parse("/v1/**").unwrap();
    let mut all = [&d, &a, &c, &b];
    all.sort_by(|x, y| x.precedence(y));
    assert_eq!(all, [&b, &a, &c, &d]);
}

#[test]
fn templates_parse_and_reject_malformed() {
    let template = Template::parse("/v1/{name=shelves/*/books/*}:get").unwrap();
    assert_eq!(template.verb.as_deref(), Some("get"));
    assert_eq!(template.segments.len(), 5);
    assert_eq!(template.variables[0].start, 1);
    assert_eq!(template.variables[0].end, 5);
    for bad in [
        "",
        "v1",
        "/v1/{a",
        "/v1/{a=*",
        "/v1/{a={b}}",
        "/v1/{}",
        "/v1/{1a}",
        "/v1/**/x",
        "/v1/{a}/{a}",
        "/v1//x",
        "/v1/x:",
        "/v1/x:a/b",
        "/v1/%zz",
        "/v1/{a.}",
    ] {
        assert!(Template::parse(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn multi_segment_variables_and_encoded_slashes() {
    let routes = routes();
    let get = find(&routes, "GET", "/v1/shelves/1/books/2");
    assert_eq!(
        get.bindings,
        vec![("name".to_owned(), "shelves/1/books/2".to_owned())]
    );
    assert_eq!(
        request(&routes, "GET", "/v1/shelves/a%20b/books/c", "").unwrap(),
        json!({"name": "shelves/a b/books/c"})
    );
    // An encoded slash stays inside its segment: no extra segment for a `*`.
    assert!(
        routes
            .find(&http::Method::GET, "/v1/shelves%2F1%2Fbooks%2F2")
            .is_none()
    );
    let list = find(&routes, "GET", "/v1/shelves/a%2Fb/books");
    assert_eq!(list.bindings, vec![("shelf".to_owned(), "a/b".to_owned())]);
    // `**` takes the rest, keeping `/` and leaving `%2F` encoded.
    let file = find(&routes, "GET", "/files/a/b%2Fc/d%20e");
    assert_eq!(
        file.bindings,
        vec![("path".to_owned(), "a/b%2Fc/d e".to_owned())]
    );
    assert_eq!(
        find(&routes, "GET", "/files").bindings,
        vec![("path".to_owned(), String::new())]
    );
    // A literal segment is compared decoded.
    assert_eq!(
        find(&routes, "GET", "/v1/shelves/1/%62ooks")
            .route
            .method
            .name(),
        "ListBooks"
    );
    // Malformed escapes match nothing.
    assert!(
        routes
            .find(&http::Method::GET, "/v1/shelves/%zz/books")
            .is_none()
    );
    // A single-segment variable holding an encoded slash is still one value.
    let err = request(&routes, "DELETE", "/v1/books/1%2F2", "").unwrap_err();
    assert!(err.contains("path parameter \"id\""), "{err}");
    assert!(err.contains("int64"), "{err}");
}

#[test]
fn query_parameters_fill_unbound_fields() {
    let routes = routes();
    let got = request(
        &routes,
        "GET",
        "/v1/shelves/s1/books?pageSize=10&tags=a&tags=b+c&genre=FICTION&author.name=Ann+Lee\
         &author.address.city=P%C3%A1ris&available=true&min_pages=123&minRating=4.5\
         &since=2020-01-01T00:00:00Z&token=aGk%3D&year=2020&counts=1&counts=-2&",
        "",
    )
    .unwrap();
    assert_eq!(
        got,
        json!({
            "shelf": "s1",
            "pageSize": 10,
            "tags": ["a", "b c"],
            "genre": "FICTION",
            "author": {"name": "Ann Lee", "address": {"city": "Páris"}},
            "available": true,
            "minPages": "123",
            "minRating": 4.5,
            "since": "2020-01-01T00:00:00Z",
            "token": "aGk=",
            "year": 2020,
            "counts": [1, -2],
        })
    );
    // Enums by number too.
    assert_eq!(
        request(&routes, "GET", "/v1/shelves/s/books?genre=2", "").unwrap()["genre"],
        json!("SCIENCE")
    );
}

#[test]
fn query_parameter_errors_name_the_parameter() {
    let routes = routes();
    let err = |query: &str| {
        request(&routes, "GET", &format!("/v1/shelves/s/books?{query}"), "").unwrap_err()
    };
    let cases = [
        ("nope=1", vec!["unknown query parameter \"nope\""]),
        ("pageSize=abc", vec!["\"pageSize\"", "int32"]),
        ("pageSize=3000000000", vec!["\"pageSize\"", "int32"]),
        ("year=-1", vec!["\"year\"", "uint32"]),
        ("available=yes", vec!["\"available\"", "bool"]),
        ("minRating=fast", vec!["\"minRating\"", "double"]),
        ("genre=HORROR", vec!["\"genre\"", "FICTION"]),
        ("genre=9", vec!["\"genre\"", "test.v1.Genre"]),
        (
            "since=yesterday",
            vec!["\"since\"", "google.protobuf.Timestamp"],
        ),
        ("token=%%%", vec!["percent-encoded"]),
        ("labels=x", vec!["\"labels\"", "map<string, string>"]),
        ("author=x", vec!["\"author\"", "test.v1.Author"]),
        (
            "authors.name=x",
            vec!["\"authors.name\"", "not a message field"],
        ),
        (
            "author.nope=x",
            vec!["\"author.nope\"", "test.v1.Author has no field"],
        ),
        ("shelf=other", vec!["\"shelf\"", "set by the path"]),
        (
            "pageSize=1&page_size=2",
            vec!["\"page_size\"", "more than once"],
        ),
    ];
    for (query, wanted) in cases {
        let err = err(query);
        for part in wanted {
            assert!(err.contains(part), "{query}: {err:?} lacks {part:?}");
        }
    }
}

#[test]
fn bodies_whole_field_and_none() {
    let routes = routes();
    // `body: "book"`: the body is the book; the path and query set the rest.
    let created = request(
        &routes,
        "POST",
        "/v1/shelves/s1/books",
        r#"{"title":"Dune","pages":"412","author":{"name":"Frank"}}"#,
    )
    .unwrap();
    assert_eq!(
        created,
        json!({"shelf": "s1", "book": {"title": "Dune", "pages": "412", "author": {"name": "Frank"}}})
    );
    // A nested path binding inside the body's field wins over the body.
    let updated = request(
        &routes,
        "PUT",
        "/v1/books/b7?validateOnly=true",
        r#"{"id":"ignored","title":"T"}"#,
    )
    .unwrap();
    assert_eq!(
        updated,
        json!({"book": {"id": "b7", "title": "T"}, "validateOnly": true})
    );
    // `body: "*"`: the whole message; no query parameters.
    let patched = request(
        &routes,
        "PATCH",
        "/v1/books/b7",
        r#"{"book":{"title":"T"},"validateOnly":true}"#,
    )
    .unwrap();
    assert_eq!(
        patched,
        json!({"book": {"id": "b7", "title": "T"}, "validateOnly": true})
    );
    let err = request(&routes, "PATCH", "/v1/books/b7?validateOnly=true", "{}").unwrap_err();
    assert!(
        err.contains("\"validateOnly\"") && err.contains("the body"),
        "{err}"
    );
    // Empty bodies are empty messages.
    assert_eq!(
        request(&routes, "PATCH", "/v1/books/b7", "").unwrap(),
        json!({"book": {"id": "b7"}})
    );
    assert_eq!(
        request(&routes, "POST", "/v1/shelves/s/books", " ").unwrap(),
        json!({"shelf": "s"})
    );
    // Errors name the field, the body's field included.
    let err = request(&routes, "POST", "/v1/shelves/s/books", r#"{"title":5}"#).unwrap_err();
    assert!(err.contains("\"book.title\""), "{err}");
    let err = request(&routes, "POST", "/v1/shelves/s/books", r#"{"nope":5}"#).unwrap_err();
    assert!(err.contains("book.nope"), "{err}");
    let err = request(&routes, "PATCH", "/v1/books/b", r#"{"validateOnly":"x"}"#).unwrap_err();
    assert!(err.contains("\"validateOnly\""), "{err}");
    let err = request(&routes, "PATCH", "/v1/books/b", "[]").unwrap_err();
    assert!(err.contains("JSON object"), "{err}");
    let err = request(&routes, "PATCH", "/v1/books/b", "{").unwrap_err();
    assert!(err.contains("not valid JSON"), "{err}");
    let err = request(&routes, "POST", "/v1/shelves/s/books?book.title=x", "").unwrap_err();
    assert!(
        err.contains("\"book.title\"") && err.contains("the body"),
        "{err}"
    );
    // No body rule: a body is refused.
    let err = request(&routes, "GET", "/v1/shelves/s/books", r#"{"pageSize":1}"#).unwrap_err();
    assert!(err.contains("takes no request body"), "{err}");
    let err = find(&routes, "PATCH", "/v1/books/b")
        .request(None, &[0xff, 0xfe])
        .unwrap_err();
    assert!(err.contains("UTF-8"), "{err}");
}

#[test]
fn responses_whole_or_response_body() {
    let pool = pool();
    let routes = routes();
    let reply_descriptor = pool
        .get_message_by_name("test.v1.ListBooksResponse")
        .unwrap();
    let list = find(&routes, "GET", "/v1/shelves/s/books");
    let empty = DynamicMessage::new(reply_descriptor.clone());
    assert_eq!(list.response(&empty).unwrap(), json!([]));
    let full = crate::dynamic::parse_request(
        &reply_descriptor,
        &json!({"books": [{"title": "A", "pages": "3"}], "next": "n"}),
    )
    .unwrap();
    assert_eq!(
        list.response(&full).unwrap(),
        json!([{"title": "A", "pages": "3"}])
    );
    let get = find(&routes, "GET", "/v1/shelves/1/books/2");
    let book = crate::dynamic::parse_request(
        &get.route.method.output(),
        &json!({"title": "A", "genre": "FICTION"}),
    )
    .unwrap();
    assert_eq!(book.descriptor().full_name(), "test.v1.Book");
    assert_eq!(
        get.response(&book).unwrap(),
        json!({"title": "A", "genre": "FICTION"})
    );
}
