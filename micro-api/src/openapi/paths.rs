//! REST route templates as OpenAPI paths.

use crate::rest::template::{Segment, Template};

/// A path parameter of a REST route in the document.
#[derive(Debug, Clone)]
pub(super) struct PathParameter {
    /// The name in the path (`{name}`).
    pub(super) name: String,
    /// What it is, for the document.
    pub(super) description: String,
    /// The field a whole variable binds; `None` for one segment of a longer variable.
    pub(super) field_path: Option<String>,
}

/// A template as an OpenAPI path, `None` when it has `**` (no OpenAPI form: path
/// parameters cannot hold `/`). A variable of one `*` is one parameter; a variable of
/// several segments (`{name=shelves/*}`) is documented segment by segment, its literals
/// in the path and each `*` a parameter.
pub(super) fn doc_path(template: &Template) -> Option<(String, Vec<PathParameter>)> {
    let mut path = String::new();
    let mut parameters = Vec::new();
    for (i, segment) in template.segments.iter().enumerate() {
        path.push('/');
        let variable = template
            .variables
            .iter()
            .find(|variable| variable.start <= i && i < variable.end);
        match segment {
            Segment::Literal(literal) => path.push_str(&encode_literal(literal)),
            Segment::Rest => return None,
            Segment::Any => {
                let wildcards = variable.map_or(0, |variable| {
                    template.segments[variable.start..variable.end]
                        .iter()
                        .filter(|s| **s == Segment::Any)
                        .count()
                });
                let (name, description, whole) = match variable {
                    Some(variable) if variable.end - variable.start == 1 => (
                        variable.field_path.replace('.', "_"),
                        format!("The request field `{}`.", variable.field_path),
                        true,
                    ),
                    Some(variable) if wildcards == 1 => (
                        variable.field_path.replace('.', "_"),
                        format!(
                            "The variable part of the request field `{}` (`{}`).",
                            variable.field_path,
                            variable_pattern(template, variable.start, variable.end)
                        ),
                        false,
                    ),
                    Some(variable) => {
                        let n = template.segments[variable.start..=i]
                            .iter()
                            .filter(|s| **s == Segment::Any)
                            .count();
                        (
                            format!("{}_{n}", variable.field_path.replace('.', "_")),
                            format!(
                                "Segment {n} of the request field `{}` (`{}`).",
                                variable.field_path,
                                variable_pattern(template, variable.start, variable.end)
                            ),
                            false,
                        )
                    }
                    None => (
                        format!("segment{}", i + 1),
                        "A path segment (not bound to a field).".to_owned(),
                        false,
                    ),
                };
                path.push('{');
                path.push_str(&name);
                path.push('}');
                parameters.push(PathParameter {
                    name,
                    description,
                    field_path: variable
                        .filter(|_| whole)
                        .map(|variable| variable.field_path.clone()),
                });
            }
        }
    }
    if let Some(verb) = &template.verb {
        path.push(':');
        path.push_str(&encode_literal(verb));
    }
    Some((path, parameters))
}

fn variable_pattern(template: &Template, start: usize, end: usize) -> String {
    template.segments[start..end]
        .iter()
        .map(|segment| match segment {
            Segment::Literal(literal) => literal.clone(),
            Segment::Any => "*".to_owned(),
            Segment::Rest => "**".to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A literal path segment as it goes in a URL.
fn encode_literal(literal: &str) -> String {
    let mut out = String::new();
    for byte in literal.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `path` with its parameters' names left out.
pub(super) fn shape_of(path: &str) -> String {
    let mut shape = String::new();
    let mut in_parameter = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_parameter = true;
                shape.push_str("{}");
            }
            '}' => in_parameter = false,
            _ if in_parameter => {}
            _ => shape.push(c),
        }
    }
    shape
}

pub(super) fn parameter_names(path: &str) -> Vec<String> {
    path.split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}
