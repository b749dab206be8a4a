//! `google.api.http` path templates: parsing and matching percent-encoded paths.
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```

use std::cmp::Ordering;

/// One path segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Exactly this text (decoded).
    Literal(String),
    /// `*`: any one non-empty segment.
    Any,
    /// `**`: the rest of the path, zero or more segments (last only).
    Rest,
}

/// A `{field.path=segments}` variable: the segments `start..end` of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Variable {
    /// The request field it binds (`book.id`).
    pub(crate) field_path: String,
    /// The first segment it covers.
    pub(crate) start: usize,
    /// One past the last segment it covers.
    pub(crate) end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    /// The segments, variables flattened into them.
    pub(crate) segments: Vec<Segment>,
    /// The variables, in order.
    pub(crate) variables: Vec<Variable>,
    /// The `:verb` suffix.
    pub(crate) verb: Option<String>,
}

// === impl Template ===

impl Template {
    /// Parses `text`; the error says what is wrong where.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut parser = Parser {
            text,
            pos: 0,
            template: Template {
                segments: Vec::new(),
                variables: Vec::new(),
                verb: None,
            },
        };
        if !parser.eat('/') {
            return Err(format!("path template {text:?} must start with '/'"));
        }
        parser.segments(false)?;
        if parser.eat(':') {
            let verb = parser.literal()?;
            parser.template.verb = Some(verb);
        }
        if parser.pos != text.len() {
            return Err(format!(
                "path template {text:?}: unexpected {:?} at offset {}",
                &text[parser.pos..],
                parser.pos
            ));
        }
        let template = parser.template;
        if let Some(i) = template.segments.iter().position(|s| *s == Segment::Rest)
            && i + 1 != template.segments.len()
        {
            return Err(format!(
                "path template {text:?}: '**' must be the last segment"
            ));
        }
        for (i, variable) in template.variables.iter().enumerate() {
            if template.variables[..i]
                .iter()
                .any(|other| other.field_path == variable.field_path)
            {
                return Err(format!(
                    "path template {text:?} binds {:?} twice",
                    variable.field_path
                ));
            }
        }
        Ok(template)
    }

    /// The bindings (field path → decoded value) when `path` (percent-encoded, no query)
    /// matches; `None` when it does not.
    ///
    /// Each segment is split off before it is decoded, so an encoded `/` (`%2F`) never
    /// separates segments. A one-segment variable's value is decoded fully; a value of
    /// several segments keeps its `/` separators and leaves `%2F` encoded, as the
    /// HttpRule specification prescribes.
    pub(crate) fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let raw: Vec<&str> = path.split('/').collect();
        let rest = self.segments.last() == Some(&Segment::Rest);
        let fixed = if rest {
            self.segments.len() - 1
        } else {
            self.segments.len()
        };
        if raw.len() < fixed || (!rest && raw.len() != fixed) {
            return None;
        }
        for (segment, text) in self.segments[..fixed].iter().zip(&raw) {
            match segment {
                Segment::Literal(literal) => {
                    if decode(text, false).as_deref() != Some(literal.as_str()) {
                        return None;
                    }
                }
                Segment::Any => {
                    if text.is_empty() {
                        return None;
                    }
                }
                Segment::Rest => return None,
            }
        }
        let mut bindings = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let end = if rest && variable.end == self.segments.len() {
                raw.len()
            } else {
                variable.end
            };
            let parts = raw.get(variable.start..end)?;
            let open_ended = rest && variable.end == self.segments.len();
            let single = variable.end - variable.start == 1 && !open_ended;
            let value = if single {
                decode(parts.first()?, false)?
            } else {
                let decoded: Option<Vec<String>> =
                    parts.iter().map(|part| decode(part, true)).collect();
                decoded?.join("/")
            };
            bindings.push((variable.field_path.clone(), value));
        }
        Some(bindings)
    }

    /// Orders templates by precedence: the one to try first is `Less`. Literal segments
    /// come before `*`, `*` before `**`; a longer template before its prefix; a template
    /// with a verb before one without.
    pub(crate) fn precedence(&self, other: &Self) -> Ordering {
        let rank = |segment: &Segment| match segment {
            Segment::Literal(_) => 0,
            Segment::Any => 1,
            Segment::Rest => 2,
        };
        for (a, b) in self.segments.iter().zip(&other.segments) {
            match rank(a).cmp(&rank(b)) {
                Ordering::Equal => {}
                unequal => return unequal,
            }
        }
        other
            .segments
            .len()
            .cmp(&self.segments.len())
            .then_with(|| other.verb.is_some().cmp(&self.verb.is_some()))
    }
}

/// Percent-decodes one path segment; `keep_slash` leaves `%2F` encoded. `None` for a
/// malformed escape or bytes that are not UTF-8.
pub(crate) fn decode(text: &str, keep_slash: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = hex(*bytes.get(i + 1)?)?;
            let low = hex(*bytes.get(i + 2)?)?;
            let byte = high * 16 + low;
            if keep_slash && byte == b'/' {
                out.extend_from_slice(&bytes[i..i + 3]);
            } else {
                out.push(byte);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// A recursive-descent parser of one template.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
    template: Template,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn error(&self, what: &str) -> String {
        format!(
            "path template {:?}: {what} at offset {}",
            self.text, self.pos
        )
    }

    fn segments(&mut self, in_variable: bool) -> Result<(), String> {
        loop {
            self.segment(in_variable)?;
            if !self.eat('/') {
                return Ok(());
            }
        }
    }

    fn segment(&mut self, in_variable: bool) -> Result<(), String> {
        if self.text[self.pos..].starts_with("**") {
            self.pos += 2;
            self.template.segments.push(Segment::Rest);
        } else if self.eat('*') {
            self.template.segments.push(Segment::Any);
        } else if self.eat('{') {
            if in_variable {
                return Err(self.error("variables cannot nest"));
            }
            let field_path = self.field_path()?;
            let start = self.template.segments.len();
            if self.eat('=') {
                self.segments(true)?;
            } else {
                self.template.segments.push(Segment::Any);
            }
            if !self.eat('}') {
                return Err(self.error("expected '}'"));
            }
            let end = self.template.segments.len();
            self.template.variables.push(Variable {
                field_path,
                start,
                end,
            });
        } else {
            let literal = self.literal()?;
            self.template.segments.push(Segment::Literal(literal));
        }
        Ok(())
    }

    fn field_path(&mut self) -> Result<String, String> {
        let start = self.pos;
        loop {
            let ident_start = self.pos;
            while let Some(c) = self.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    self.pos += 1;
                } else {
                    break;
                }
            }
            let ident = &self.text[ident_start..self.pos];
            if ident.is_empty() || ident.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(self.error("expected a field name"));
            }
            if !self.eat('.') {
                return Ok(self.text[start..self.pos].to_owned());
            }
        }
    }

    fn literal(&mut self) -> Result<String, String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if matches!(c, '/' | '{' | '}' | '*' | '=' | ':' | '?' | '#') || c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
        let raw = &self.text[start..self.pos];
        if raw.is_empty() {
            return Err(self.error("expected a path segment"));
        }
        decode(raw, false).ok_or_else(|| self.error("malformed percent-encoding"))
    }
}
