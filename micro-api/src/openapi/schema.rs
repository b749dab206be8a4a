//! JSON Schemas of protobuf messages under the canonical JSON mapping, as the gateway
//! parses requests (prost-reflect) and writes replies.

use std::collections::BTreeMap;

use prost_reflect::{EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

/// A decimal integer as text; the digit count keeps 32-bit values in range.
const INT32_PATTERN: &str = r"^[+-]?0*[0-9]{1,9}$";
const UINT32_PATTERN: &str = r"^\+?0*[0-9]{1,9}$";
const INT64_PATTERN: &str = r"^[+-]?0*[0-9]{1,19}$";
const UINT64_PATTERN: &str = r"^\+?0*[0-9]{1,20}$";
/// A float as text: decimal, exponent, or the mapping's `NaN` and `±Infinity`.
const FLOAT_PATTERN: &str = r"^(NaN|-?Infinity|[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)$";
/// Standard or URL-safe base64, padded or not.
const BASE64_PATTERN: &str = r"^[A-Za-z0-9+/_-]*={0,2}$";
const DURATION_PATTERN: &str = r"^[+-]?[0-9]+(\.[0-9]{0,9})?s$";

pub(super) use crate::rest::is_string_message;

/// The schemas under `components/schemas`, by full name.
#[derive(Debug, Default)]
pub(super) struct Schemas {
    defined: BTreeMap<String, Value>,
}

// === impl Schemas ===

impl Schemas {
    /// Adds a schema as it is.
    pub(super) fn insert_raw(&mut self, name: &str, schema: Value) {
        self.defined.insert(name.to_owned(), schema);
    }

    /// The `components/schemas` object.
    pub(super) fn into_json(self) -> Value {
        Value::Object(self.defined.into_iter().collect::<Map<String, Value>>())
    }

    /// `{"$ref": …}` to `message`'s schema, defined on first use.
    pub(super) fn message_ref(&mut self, message: &MessageDescriptor) -> Value {
        let name = message.full_name().to_owned();
        if !self.defined.contains_key(&name) {
            // A placeholder first: recursive messages refer to themselves.
            self.defined.insert(name.clone(), Value::Null);
            let schema = self.message_schema(message);
            self.defined.insert(name.clone(), schema);
        }
        reference(&name)
    }

    fn enum_ref(&mut self, enumeration: &EnumDescriptor) -> Value {
        let name = enumeration.full_name().to_owned();
        if !self.defined.contains_key(&name) {
            let schema = if name == "google.protobuf.NullValue" {
                json!({"type": "null"})
            } else {
                let names: Vec<String> =
                    enumeration.values().map(|v| v.name().to_owned()).collect();
                let mut schema = json!({
                    "description": "By name; a request may also give the number.",
                    "anyOf": [
                        {"type": "string", "enum": names},
                        {"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX},
                    ],
                });
                add_description(
                    &mut schema,
                    comments(&enumeration.parent_file(), enumeration.path()),
                );
                schema
            };
            self.defined.insert(name.clone(), schema);
        }
        reference(&name)
    }

    fn message_schema(&mut self, message: &MessageDescriptor) -> Value {
        let mut schema = match message.full_name() {
            "google.protobuf.Timestamp" => {
                json!({"type": "string", "format": "date-time", "description": "RFC 3339, e.g. 2024-01-31T12:00:00Z."})
            }
            "google.protobuf.Duration" => {
                json!({"type": "string", "pattern": DURATION_PATTERN, "description": "Seconds with an `s`, e.g. 1.5s."})
            }
            "google.protobuf.FieldMask" => {
                json!({"type": "string", "description": "Field paths, comma-separated."})
            }
            "google.protobuf.Struct" => json!({"type": "object"}),
            "google.protobuf.Value" => json!({}),
            "google.protobuf.ListValue" => json!({"type": "array"}),
            "google.protobuf.Empty" => {
                json!({"type": "object", "properties": {}, "additionalProperties": false})
            }
            "google.protobuf.Any" => json!({
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "required": ["@type"],
            }),
            name if name.starts_with("google.protobuf.") && name.ends_with("Value") => {
                match message.get_field_by_name("value") {
                    Some(value) => self.singular(&value.kind()),
                    None => json!({}),
                }
            }
            _ => {
                let mut properties = Map::new();
                for field in message.fields() {
                    let mut property = self.field_schema(&field, true);
                    add_description(&mut property, comments_of_field(&field));
                    properties.insert(field.json_name().to_owned(), property);
                }
                json!({
                    "type": "object",
                    "properties": properties,
                    "additionalProperties": false,
                })
            }
        };
        add_description(
            &mut schema,
            comments(&message.parent_file(), message.path()),
        );
        schema
    }

    /// The schema of `field`'s JSON value (a list or map as a whole); with `nullable`,
    /// `null` too, which requests may send for "not set".
    pub(super) fn field_schema(&mut self, field: &FieldDescriptor, nullable: bool) -> Value {
        let schema = if field.is_map() {
            match field.kind() {
                Kind::Message(entry) => {
                    let key = entry.map_entry_key_field();
                    let value = entry.map_entry_value_field();
                    let mut schema = json!({
                        "type": "object",
                        "additionalProperties": self.singular(&value.kind()),
                    });
                    let key_pattern = match key.kind() {
                        Kind::String => None,
                        Kind::Bool => Some(r"^(true|false)$"),
                        Kind::Uint32 | Kind::Fixed32 => Some(r"^[0-9]{1,9}$"),
                        Kind::Uint64 | Kind::Fixed64 => Some(r"^[0-9]{1,19}$"),
                        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Some(r"^-?[0-9]{1,18}$"),
                        _ => Some(r"^-?[0-9]{1,9}$"),
                    };
                    if let (Some(pattern), Value::Object(object)) = (key_pattern, &mut schema) {
                        object.insert("propertyNames".to_owned(), json!({"pattern": pattern}));
                    }
                    schema
                }
                _ => json!({"type": "object"}),
            }
        } else if field.is_list() {
            json!({"type": "array", "items": self.singular(&field.kind())})
        } else {
            self.singular(&field.kind())
        };
        let is_value =
            matches!(field.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.Value");
        if nullable && !is_value {
            or_null(schema)
        } else {
            schema
        }
    }

    /// The schema of one JSON value of `kind`.
    fn singular(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double => json!({"type": ["number", "string"], "pattern": FLOAT_PATTERN}),
            Kind::Float => json!({
                "type": ["number", "string"],
                "pattern": FLOAT_PATTERN,
                "minimum": -f64::from(f32::MAX),
                "maximum": f64::from(f32::MAX),
            }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({
                "type": ["integer", "string"],
                "minimum": i32::MIN,
                "maximum": i32::MAX,
                "pattern": INT32_PATTERN,
            }),
            Kind::Uint32 | Kind::Fixed32 => json!({
                "type": ["integer", "string"],
                "minimum": 0,
                "maximum": u32::MAX,
                "pattern": UINT32_PATTERN,
            }),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({
                "type": ["integer", "string"],
                "minimum": i64::MIN,
                "maximum": i64::MAX,
                "pattern": INT64_PATTERN,
                "description": "Replies give it as a string.",
            }),
            Kind::Uint64 | Kind::Fixed64 => json!({
                "type": ["integer", "string"],
                "minimum": 0,
                "maximum": u64::MAX,
                "pattern": UINT64_PATTERN,
                "description": "Replies give it as a string.",
            }),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({
                "type": "string",
                "contentEncoding": "base64",
                "pattern": BASE64_PATTERN,
            }),
            Kind::Enum(enumeration) => self.enum_ref(enumeration),
            Kind::Message(message) => self.message_ref(message),
        }
    }

    /// The schema of one value of `field` as text: a query or path parameter.
    pub(super) fn text_schema(&mut self, field: &FieldDescriptor) -> Value {
        let mut schema = text_kind(&field.kind());
        add_description(&mut schema, comments_of_field(field));
        schema
    }
}

fn text_kind(kind: &Kind) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX})
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "minimum": 0, "maximum": u32::MAX})
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX})
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({
            "type": "string",
            "contentEncoding": "base64",
            "pattern": BASE64_PATTERN,
        }),
        Kind::Enum(enumeration) => {
            let mut values: Vec<Value> = enumeration.values().map(|v| json!(v.name())).collect();
            values.extend(enumeration.values().map(|v| json!(v.number())));
            json!({"type": ["string", "integer"], "enum": values})
        }
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
            "google.protobuf.Duration" => json!({"type": "string", "pattern": DURATION_PATTERN}),
            _ => match message.get_field_by_name("value") {
                Some(value) if is_string_message(message) => text_kind(&value.kind()),
                _ => json!({"type": "string"}),
            },
        },
    }
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `schema` or `null`.
fn or_null(schema: Value) -> Value {
    match schema {
        Value::Object(mut object) => {
            match object.get_mut("type") {
                Some(Value::String(single)) => {
                    let single = std::mem::take(single);
                    object.insert("type".to_owned(), json!([single, "null"]));
                }
                Some(Value::Array(types)) => types.push(json!("null")),
                _ => return json!({"anyOf": [Value::Object(object), {"type": "null"}]}),
            }
            Value::Object(object)
        }
        other => other,
    }
}

fn add_description(schema: &mut Value, description: Option<String>) {
    if let (Some(description), Value::Object(object)) = (description, schema)
        && !object.contains_key("$ref")
        && !object.contains_key("description")
    {
        object.insert("description".to_owned(), json!(description));
    }
}

/// The leading comments of the element at `path` in `file`, when it has source info.
pub(super) fn comments(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info
        .location
        .iter()
        .find(|location| location.path == path)?;
    let text = location.leading_comments.as_deref()?.trim();
    (!text.is_empty()).then(|| text.lines().map(str::trim).collect::<Vec<_>>().join("\n"))
}

/// A field's leading comments.
pub(super) fn comments_of_field(field: &FieldDescriptor) -> Option<String> {
    comments(&field.parent_file(), field.path())
}
