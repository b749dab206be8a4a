#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use prost_reflect::DescriptorPool;
use serde_json::{Value, json};

use super::*;
use crate::rest::RestRoutes;

const A: &str = r#"
syntax = "proto3";
package a.v1;

import "google/api/annotations.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/struct.proto";

// The library.
service Library {
  // Gets a shelf.
  rpc GetShelf(GetShelfRequest) returns (Shelf) {
    option (google.api.http) = { get: "/v1/{name=shelves/*}" };
  }
  rpc GetBook(GetShelfRequest) returns (Shelf) {
    option (google.api.http) = { get: "/v1/{name=shelves/*/books/*}" };
  }
  rpc ListShelves(ListRequest) returns (ListReply) {
    option (google.api.http) = { get: "/v1/libraries/{library}/shelves" response_body: "shelves" };
  }
  rpc CreateShelf(CreateRequest) returns (Shelf) {
    option (google.api.http) = {
      post: "/v1/libraries/{lib}/shelves" body: "shelf"
      additional_bindings { put: "/v1/shelves" body: "*" }
    };
  }
  rpc Files(GetShelfRequest) returns (Shelf) {
    option (google.api.http) = { get: "/files/{name=**}" };
  }
  rpc Watch(GetShelfRequest) returns (stream Shelf) {
    option (google.api.http) = { get: "/v1/{name=shelves/*}:watch" };
  }
  rpc Upload(stream Shelf) returns (Shelf);
}

enum Kind {
  KIND_UNSPECIFIED = 0;
  WOOD = 1;
}

message GetShelfRequest { string name = 1; }

message Shelf {
  // The shelf's name.
  string name = 1;
  int64 size = 2;
  uint64 big = 3;
  int32 small = 4;
  uint32 count = 5;
  double weight = 6;
  float width = 7;
  bool open = 8;
  bytes photo = 9;
  Kind kind = 10;
  repeated string tags = 11;
  map<string, int64> labels = 12;
  map<int32, Shelf> children = 13;
  Shelf parent = 14;
  google.protobuf.Timestamp built = 15;
  google.protobuf.Duration age = 16;
  google.protobuf.Int32Value rank = 17;
  google.protobuf.Struct extra = 18;
  google.protobuf.Value anything = 19;
  oneof place {
    string room = 20;
    int32 floor = 21;
  }
}

message Filter { string text = 1; Kind kind = 2; Filter deeper = 3; }

message ListRequest {
  string library = 1;
  int32 page_size = 2;
  repeated string tags = 3;
  Filter filter = 4;
  google.protobuf.Timestamp since = 5;
  map<string, string> labels = 6;
  repeated Filter filters = 7;
}

message ListReply { repeated Shelf shelves = 1; }

message CreateRequest { string lib = 1; Shelf shelf = 2; bool dry = 3; }
"#;

const B: &str = r#"
syntax = "proto3";
package b.v1;

service Library {
  rpc GetShelf(Nothing) returns (Nothing);
}

message Nothing {}
"#;

fn schema() -> Arc<ServiceSchema> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.proto"), A).unwrap();
    std::fs::write(dir.path().join("b.proto"), B).unwrap();
    let protos = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let mut compiler = protox::Compiler::new([dir.path(), std::path::Path::new(protos)]).unwrap();
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(["a.proto", "b.proto"]).unwrap();
    let pool = DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).unwrap();
    let services = vec![
        pool.get_service_by_name("a.v1.Library").unwrap(),
        pool.get_service_by_name("b.v1.Library").unwrap(),
    ];
    let (rest, warnings) = RestRoutes::from_services(&services);
    assert!(warnings.is_empty(), "{warnings:?}");
    Arc::new(ServiceSchema {
        name: "lib".to_owned(),
        version: "1".to_owned(),
        pool,
        services,
        rest,
    })
}

fn generate(events: bool) -> Value {
    document(
        &[schema()],
        &Options {
            title: "test".to_owned(),
            version: "0.1.0".to_owned(),
            events,
        },
    )
}

fn parameter<'a>(operation: &'a Value, name: &str) -> &'a Value {
    operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no parameter {name}: {operation:#}"))
}

#[test]
fn rpc_routes_per_method_with_full_names_when_short_ones_clash() {
    let doc = generate(false);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/lib/a.v1.Library/GetShelf",
        "/lib/a.v1.Library/Upload",
        "/lib/b.v1.Library/GetShelf",
    ] {
        assert!(paths[path]["post"].is_object(), "{path}");
    }
    assert!(!paths.contains_key("/event/{topic}"));
    assert!(generate(true)["paths"]["/event/{topic}"]["post"].is_object());

    let get = &paths["/lib/a.v1.Library/GetShelf"]["post"];
    assert_eq!(get["description"], "Gets a shelf.");
    assert_eq!(
        get["requestBody"]["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/a.v1.GetShelfRequest"})
    );
    assert_eq!(
        get["responses"]["200"]["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/a.v1.Shelf"})
    );
    assert_eq!(
        get["responses"]["default"]["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/micro.api.Error"})
    );
    // Client streams take an array too; server streams are NDJSON or SSE.
    let upload = &paths["/lib/a.v1.Library/Upload"]["post"];
    assert!(upload["requestBody"]["content"]["application/json"]["schema"]["anyOf"].is_array());
    let watch = &paths["/lib/a.v1.Library/Watch"]["post"]["responses"]["200"]["content"];
    assert!(watch["application/x-ndjson"].is_object());
    assert!(watch["text/event-stream"].is_object());

    let mut ids = HashSet::new();
    for item in paths.values() {
        for operation in item.as_object().unwrap().values() {
            let id = operation["operationId"].as_str().unwrap().to_owned();
            assert!(ids.insert(id.clone()), "duplicate operationId {id}");
        }
    }
}

#[test]
fn rest_routes_with_path_query_and_body() {
    let doc = generate(false);
    let paths = doc["paths"].as_object().unwrap();
    // `{name=shelves/*}`: the literal in the path, the `*` a parameter.
    let shelf = &paths["/v1/shelves/{name}"]["get"];
    assert_eq!(parameter(shelf, "name")["in"], "path");
    assert_eq!(parameter(shelf, "name")["required"], true);
    let book = &paths["/v1/shelves/{name_1}/books/{name_2}"]["get"];
    assert_eq!(
        parameter(book, "name_2")["schema"],
        json!({"type": "string", "pattern": "^[^/]+$"})
    );
    assert!(paths["/v1/shelves/{name}:watch"]["get"].is_object());
    // `**` has no OpenAPI form.
    assert!(!paths.keys().any(|path| path.starts_with("/files")));

    let list = &paths["/v1/libraries/{library}/shelves"]["get"];
    assert_eq!(parameter(list, "library")["in"], "path");
    assert_eq!(parameter(list, "pageSize")["schema"]["type"], "integer");
    let tags = parameter(list, "tags");
    assert_eq!(tags["schema"]["type"], "array");
    assert_eq!(tags["explode"], true);
    assert_eq!(parameter(list, "filter.text")["in"], "query");
    assert!(
        parameter(list, "filter.kind")["schema"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("WOOD"))
    );
    assert_eq!(parameter(list, "since")["schema"]["format"], "date-time");
    let names: Vec<&str> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    // Maps and repeated messages have no query form; the path's field is not repeated.
    assert!(
        !names.contains(&"labels") && !names.contains(&"filters"),
        "{names:?}"
    );
    assert_eq!(names.iter().filter(|n| **n == "library").count(), 1);
    assert!(list.get("requestBody").is_none());
    // response_body: the field's schema.
    assert_eq!(
        list["responses"]["200"]["content"]["application/json"]["schema"]["type"],
        "array"
    );

    // `body: "shelf"`: the field's schema; the rest from the path and query.
    let create = &paths["/v1/libraries/{library}/shelves"]["post"];
    assert_eq!(parameter(create, "library")["in"], "path");
    assert_eq!(parameter(create, "dry")["in"], "query");
    assert!(
        create["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "shelf")
    );
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["anyOf"][0],
        json!({"$ref": "#/components/schemas/a.v1.Shelf"})
    );
    // `body: "*"`: the whole message, no query parameters.
    let put = &paths["/v1/shelves"]["put"];
    assert_eq!(put["parameters"], json!([]));
    assert_eq!(
        put["requestBody"]["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/a.v1.CreateRequest"})
    );
}

#[test]
fn schemas_follow_the_json_mapping() {
    let doc = generate(false);
    let schemas = &doc["components"]["schemas"];
    let shelf = &schemas["a.v1.Shelf"];
    assert_eq!(shelf["type"], "object");
    assert_eq!(shelf["additionalProperties"], false);
    assert!(shelf.get("required").is_none());
    let properties = &shelf["properties"];
    assert_eq!(properties["name"]["description"], "The shelf's name.");
    assert_eq!(properties["name"]["type"], json!(["string", "null"]));
    // 64-bit integers: numbers or strings (replies use strings).
    assert_eq!(
        properties["size"]["type"],
        json!(["integer", "string", "null"])
    );
    assert_eq!(properties["big"]["minimum"], 0);
    assert_eq!(properties["small"]["maximum"], i32::MAX);
    assert_eq!(properties["photo"]["contentEncoding"], "base64");
    assert_eq!(properties["open"]["type"], json!(["boolean", "null"]));
    assert_eq!(
        properties["kind"]["anyOf"][0],
        json!({"$ref": "#/components/schemas/a.v1.Kind"})
    );
    assert_eq!(
        schemas["a.v1.Kind"]["anyOf"][0]["enum"],
        json!(["KIND_UNSPECIFIED", "WOOD"])
    );
    assert_eq!(properties["tags"]["type"], json!(["array", "null"]));
    assert_eq!(properties["tags"]["items"]["type"], "string");
    assert_eq!(
        properties["labels"]["additionalProperties"]["type"],
        json!(["integer", "string"])
    );
    assert_eq!(
        properties["children"]["additionalProperties"],
        json!({"$ref": "#/components/schemas/a.v1.Shelf"})
    );
    assert_eq!(
        properties["children"]["propertyNames"]["pattern"],
        r"^-?[0-9]{1,9}$"
    );
    // Recursion through `$ref`.
    assert_eq!(
        properties["parent"]["anyOf"][0],
        json!({"$ref": "#/components/schemas/a.v1.Shelf"})
    );
    assert_eq!(schemas["google.protobuf.Timestamp"]["format"], "date-time");
    assert_eq!(schemas["google.protobuf.Duration"]["type"], "string");
    assert_eq!(
        schemas["google.protobuf.Int32Value"]["type"],
        json!(["integer", "string"])
    );
    assert_eq!(schemas["google.protobuf.Struct"]["type"], "object");
    assert_eq!(schemas["google.protobuf.Value"], json!({}));
    // `google.protobuf.Value` takes `null` as a value already.
    assert_eq!(
        properties["anything"],
        json!({"$ref": "#/components/schemas/google.protobuf.Value"})
    );
    // Oneof members are plain optional properties.
    assert!(properties["room"].is_object() && properties["floor"].is_object());
    let error = &schemas["micro.api.Error"];
    assert!(
        error["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("INVALID_ARGUMENT"))
    );
    // Every `$ref` resolves.
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(schemas[name].is_object(), "dangling $ref {name}");
    }
}
