//! Request fields named by path variables and query parameters: resolving `a.b.c` and
//! turning text into field values.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

/// Well-known message types whose JSON form is one string, accepted as one parameter.
const STRING_MESSAGES: [&str; 12] = [
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
    "google.protobuf.Int32Value",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.FloatValue",
    "google.protobuf.DoubleValue",
    "google.protobuf.BoolValue",
];

/// The fields `path` (`a.b.c`, each part a proto or JSON name) goes through in
/// `message`: every part but the last is a singular message field.
pub(super) fn resolve(
    message: &MessageDescriptor,
    path: &str,
) -> Result<Vec<FieldDescriptor>, String> {
    let mut fields = Vec::new();
    let mut current = message.clone();
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let field = current
            .get_field_by_name(part)
            .or_else(|| current.get_field_by_json_name(part))
            .ok_or_else(|| format!("{} has no field {part:?}", current.full_name()))?;
        if i + 1 < parts.len() {
            match field.kind() {
                Kind::Message(inner) if !field.is_list() && !field.is_map() => current = inner,
                _ => {
                    return Err(format!(
                        "{part:?} in {path:?} is not a message field, it has no fields"
                    ));
                }
            }
        }
        fields.push(field);
    }
    Ok(fields)
}

/// The proto names of `fields` joined by `.`: the canonical spelling of a field path.
pub(super) fn canonical(fields: &[FieldDescriptor]) -> String {
    fields
        .iter()
        .map(FieldDescriptor::name)
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether one parameter can set `field`: a scalar, an enum, or a well-known type that
/// is a string in JSON; a list of those when `allow_list`.
pub(super) fn settable(field: &FieldDescriptor, allow_list: bool) -> bool {
    if field.is_map() || (field.is_list() && !allow_list) {
        return false;
    }
    match field.kind() {
        Kind::Message(message) => is_string_message(&message),
        _ => true,
    }
}

/// Whether `message` is a well-known type whose JSON form is one string or a wrapped
/// scalar, so that one parameter can set it.
pub(crate) fn is_string_message(message: &MessageDescriptor) -> bool {
    STRING_MESSAGES.contains(&message.full_name())
}

/// `text` as a value of `field` (one element, for lists); the error says what was
/// expected.
pub(super) fn parse_value(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let bad = || {
        format!(
            "{text:?} is not a valid {}",
            crate::dynamic::field_type(field).trim_start_matches("repeated ")
        )
    };
    Ok(match field.kind() {
        Kind::Double => Value::F64(parse_float(text).ok_or_else(bad)?),
        Kind::Float => Value::F32(parse_float(text).ok_or_else(bad)? as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(text.parse().map_err(|_| bad())?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(text.parse().map_err(|_| bad())?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(text.parse().map_err(|_| bad())?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(text.parse().map_err(|_| bad())?),
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(format!("{text:?} is not a valid bool (true or false)")),
        },
        Kind::String => Value::String(text.to_owned()),
        Kind::Enum(enumeration) => {
            let found = enumeration.get_value_by_name(text).or_else(|| {
                text.parse::<i32>()
                    .ok()
                    .and_then(|number| enumeration.get_value(number))
            });
            match found {
                Some(value) => Value::EnumNumber(value.number()),
                None => {
                    let names: Vec<String> = enumeration
                        .values()
                        .map(|value| value.name().to_owned())
                        .collect();
                    return Err(format!(
                        "{text:?} is not a value of {}: expected one of {}",
                        enumeration.full_name(),
                        names.join(", ")
                    ));
                }
            }
        }
        // Bytes (base64) and string-valued well-known types: as their JSON string.
        Kind::Bytes | Kind::Message(_) => {
            let json = serde_json::Value::Object(
                [(
                    field.json_name().to_owned(),
                    serde_json::Value::String(text.to_owned()),
                )]
                .into_iter()
                .collect(),
            );
            let holder = DynamicMessage::deserialize(field.parent_message().clone(), &json)
                .map_err(|_| bad())?;
            let value = holder.get_field(field).into_owned();
            match value {
                Value::List(mut items) => items.pop().ok_or_else(bad)?,
                one => one,
            }
        }
    })
}

/// A float as the JSON mapping spells it, `NaN` and `±Infinity` included.
fn parse_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ if text
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

/// Sets the field at the end of `fields` in `message` to `value`, creating the messages
/// on the way; a list field gets `value` appended.
pub(super) fn set(message: &mut DynamicMessage, fields: &[FieldDescriptor], value: Value) {
    let Some((last, parents)) = fields.split_last() else {
        return;
    };
    let mut current = message;
    for parent in parents {
        match current.get_field_mut(parent) {
            Value::Message(inner) => current = inner,
            // `resolve` let only singular message fields through.
            _ => return,
        }
    }
    if last.is_list() {
        if let Value::List(items) = current.get_field_mut(last) {
            items.push(value);
        }
    } else {
        current.set_field(last, value);
    }
}
