//! The mapping between micro messages and NATS: headers both ways, and the names NATS
//! accepts for a subject prefix, a queue group or a durable consumer.

use std::collections::BTreeMap;

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use micro_core::broker::{BrokerError, Message, validate_topic};

pub(super) fn to_nats_headers(
    headers: &BTreeMap<String, String>,
) -> Result<Option<HeaderMap>, BrokerError> {
    if headers.is_empty() {
        return Ok(None);
    }
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let header: HeaderName = name.parse().map_err(|_| BrokerError::Invalid {
            what: "header name",
            value: name.clone(),
            reason: "NATS header names are printable ASCII without ':'".to_owned(),
        })?;
        map.insert(header, header_value(name, value)?);
    }
    Ok(Some(map))
}

pub(super) fn header_value(name: &str, value: &str) -> Result<HeaderValue, BrokerError> {
    value.parse().map_err(|_| BrokerError::Invalid {
        what: "header value",
        value: format!("{name}: {value}"),
        reason: "NATS header values must not contain CR or LF".to_owned(),
    })
}

pub(super) fn from_nats(headers: Option<&HeaderMap>, body: Bytes) -> Message {
    let mut out = BTreeMap::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            if let Some(value) = values.last() {
                out.insert(name.to_string(), value.as_str().to_owned());
            }
        }
    }
    Message { headers: out, body }
}

pub(super) fn validate_prefix(prefix: &str) -> Result<(), BrokerError> {
    validate_topic(prefix).map_err(|_| BrokerError::Invalid {
        what: "subject prefix",
        value: prefix.to_owned(),
        reason: "dot-separated tokens of ASCII letters, digits, '_' and '-'".to_owned(),
    })
}

pub(super) fn validate_name(what: &'static str, name: &str) -> Result<(), BrokerError> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        return Err(BrokerError::Invalid {
            what,
            value: name.to_owned(),
            reason: "1 to 128 ASCII letters, digits, '_' or '-'".to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let mut headers = BTreeMap::new();
        headers.insert("content-type".to_owned(), "application/json".to_owned());
        headers.insert("micro-id".to_owned(), "42".to_owned());
        let nats = to_nats_headers(&headers).unwrap_or_default();
        let back = from_nats(nats.as_ref(), Bytes::from_static(b"x"));
        assert_eq!(back.headers, headers);
        assert_eq!(to_nats_headers(&BTreeMap::new()).ok(), Some(None));
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let mut headers = BTreeMap::new();
        headers.insert("a:b".to_owned(), "v".to_owned());
        assert!(to_nats_headers(&headers).is_err());
        let mut headers = BTreeMap::new();
        headers.insert("a".to_owned(), "v\r\nX: y".to_owned());
        assert!(to_nats_headers(&headers).is_err());
    }

    #[test]
    fn names() {
        assert!(validate_name("queue", "workers-1").is_ok());
        assert!(validate_name("queue", "a.b").is_err());
        assert!(validate_name("queue", "").is_err());
        assert!(validate_prefix("micro.dev").is_ok());
        assert!(validate_prefix("micro.>").is_err());
    }
}
