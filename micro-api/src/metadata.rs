//! HTTP headers ↔ gRPC metadata, and the call's deadline from the request's headers.

use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::metadata::{
    AsciiMetadataKey, AsciiMetadataValue, BinaryMetadataKey, BinaryMetadataValue, KeyAndValueRef,
    MetadataMap,
};

use super::{error::ApiError, state::Peer};

/// The metadata telling a service the client's IP address.
pub(crate) const FORWARDED_FOR: &str = "x-forwarded-for";

/// The prefix of headers that carry metadata both ways: `grpc-metadata-<key>`.
pub(crate) const METADATA_PREFIX: &str = "grpc-metadata-";

/// The gateway's own timeout header: `250ms`, `2s`, `1m`.
pub(crate) const TIMEOUT_HEADER: &str = "x-micro-timeout";

/// gRPC's timeout header, in gRPC's format (`250m`, `2S`).
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Headers of a reply that are the transport's, never passed on as metadata.
const TRANSPORT_HEADERS: [&str; 6] = [
    "content-type",
    "content-length",
    "date",
    "server",
    "te",
    "trailer",
];

/// The request metadata: each allow-listed header under its own name, and each
/// `grpc-metadata-<key>` header as `<key>` (binary keys, `-bin`, base64-decoded). Reserved
/// `grpc-*` keys are left out.
pub(crate) fn request_metadata(
    headers: &HeaderMap,
    allowed: &[HeaderName],
) -> Result<MetadataMap, ApiError> {
    let mut metadata = MetadataMap::new();
    for (name, value) in headers {
        let key = match name.as_str().strip_prefix(METADATA_PREFIX) {
            Some(key) => key,
            None if allowed.contains(name) => name.as_str(),
            None => continue,
        };
        if key.is_empty() || key.starts_with("grpc-") {
            continue;
        }
        if key.ends_with("-bin") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_bytes())
                .or_else(|_| {
                    base64::engine::general_purpose::STANDARD_NO_PAD.decode(value.as_bytes())
                })
                .map_err(|_| ApiError::invalid(format!("header {name}: not base64")))?;
            let key = BinaryMetadataKey::from_bytes(key.as_bytes())
                .map_err(|_| ApiError::invalid(format!("header {name}: bad metadata key")))?;
            metadata.append_bin(key, BinaryMetadataValue::from_bytes(&bytes));
        } else {
            let key = AsciiMetadataKey::from_bytes(key.as_bytes())
                .map_err(|_| ApiError::invalid(format!("header {name}: bad metadata key")))?;
            let value = AsciiMetadataValue::try_from(value.as_bytes())
                .map_err(|_| ApiError::invalid(format!("header {name}: not visible ASCII")))?;
            metadata.append(key, value);
        }
    }
    Ok(metadata)
}

/// Sets `x-forwarded-for` to the IP address of the TCP `peer`, replacing whatever the
/// client sent (as a header or `grpc-metadata-x-forwarded-for`): services that trust it from
/// the gateway, as the auth service's rate limits do, must not be told a made-up address.
/// Without a known peer (a router served by someone else) there is none.
pub(crate) fn forwarded_for(metadata: &mut MetadataMap, peer: Option<&Peer>) {
    metadata.remove(FORWARDED_FOR);
    if let Some(Peer(peer)) = peer
        && let Ok(value) = AsciiMetadataValue::try_from(peer.ip().to_canonical().to_string())
    {
        metadata.insert(FORWARDED_FOR, value);
    }
}

/// The reply's metadata as `grpc-metadata-<key>` headers, added to `headers`. Reserved
/// `grpc-*` keys and the transport's headers are left out, binary ones (base64) unless
/// allow-listed.
pub(crate) fn reply_headers(metadata: &MetadataMap, allowed: &[HeaderName], into: &mut HeaderMap) {
    for entry in metadata.iter() {
        let (key, value) = match entry {
            KeyAndValueRef::Ascii(key, value) => (
                key.as_str(),
                HeaderValue::from_bytes(value.as_encoded_bytes()),
            ),
            KeyAndValueRef::Binary(key, value) => {
                if !allowed.iter().any(|name| name.as_str() == key.as_str()) {
                    continue;
                }
                (
                    key.as_str(),
                    HeaderValue::from_bytes(value.as_encoded_bytes()),
                )
            }
        };
        if key.starts_with("grpc-") || TRANSPORT_HEADERS.contains(&key) {
            continue;
        }
        let Ok(value) = value else { continue };
        if let Ok(name) = HeaderName::from_bytes(format!("{METADATA_PREFIX}{key}").as_bytes()) {
            into.append(name, value);
        }
    }
}

/// The call's timeout: `x-micro-timeout` or `grpc-timeout`, at most `max`; `max` without
/// either. A value that does not parse is the client's mistake (400).
pub(crate) fn timeout(headers: &HeaderMap, max: Duration) -> Result<Duration, ApiError> {
    let asked = if let Some(value) = headers.get(TIMEOUT_HEADER) {
        let text = std::str::from_utf8(value.as_bytes()).map_err(|_| {
            ApiError::invalid(format!(
                "header {TIMEOUT_HEADER}: {:?} is not a duration: it is not UTF-8",
                String::from_utf8_lossy(value.as_bytes())
            ))
        })?;
        Some(
            micro_core::duration::parse(text)
                .map_err(|err| ApiError::invalid(format!("header {TIMEOUT_HEADER}: {err}")))?,
        )
    } else if let Some(value) = headers.get(GRPC_TIMEOUT) {
        Some(parse_grpc_timeout(value.as_bytes()).ok_or_else(|| {
            ApiError::invalid(format!(
                "header {GRPC_TIMEOUT}: {:?} is not a gRPC timeout such as 250m or 2S",
                String::from_utf8_lossy(value.as_bytes())
            ))
        })?)
    } else {
        None
    };
    Ok(asked.map_or(max, |asked| asked.min(max)))
}

/// gRPC's format: 1 to 8 digits and a unit, `H M S m u n`.
pub(crate) fn parse_grpc_timeout(text: &[u8]) -> Option<Duration> {
    let (&unit, digits) = text.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let timeout = match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    };
    (!timeout.is_zero()).then_some(timeout)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn allowed() -> Vec<HeaderName> {
        super::super::DEFAULT_HEADERS
            .iter()
            .map(|name| HeaderName::from_static(name))
            .collect()
    }

    #[test]
    fn allow_listed_and_prefixed_headers_become_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("r-1"));
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        headers.insert("cookie", HeaderValue::from_static("secret"));
        headers.insert("grpc-metadata-tenant", HeaderValue::from_static("acme"));
        headers.insert("grpc-metadata-grpc-status", HeaderValue::from_static("0"));
        headers.insert("grpc-metadata-blob-bin", HeaderValue::from_static("AQID"));
        let metadata = request_metadata(&headers, &allowed()).unwrap();
        assert_eq!(metadata.get("x-request-id").unwrap(), "r-1");
        assert_eq!(metadata.get("authorization").unwrap(), "Bearer t");
        assert_eq!(metadata.get("tenant").unwrap(), "acme");
        assert!(metadata.get("cookie").is_none());
        assert!(metadata.get("grpc-status").is_none());
        assert_eq!(
            metadata.get_bin("blob-bin").unwrap().to_bytes().unwrap(),
            &[1u8, 2, 3][..]
        );

        let mut bad = HeaderMap::new();
        bad.insert("grpc-metadata-x-bin", HeaderValue::from_static("@@@"));
        assert!(request_metadata(&bad, &allowed()).is_err());
    }

    #[test]
    fn reply_metadata_becomes_prefixed_headers() {
        let mut metadata = MetadataMap::new();
        metadata.insert("x-served-by", "node-1".parse().unwrap());
        metadata.insert("content-type", "application/grpc".parse().unwrap());
        metadata.insert("grpc-status", "0".parse().unwrap());
        metadata.insert_bin("trace-bin", BinaryMetadataValue::from_bytes(b"x"));
        let mut headers = HeaderMap::new();
        reply_headers(&metadata, &allowed(), &mut headers);
        assert_eq!(headers.get("grpc-metadata-x-served-by").unwrap(), "node-1");
        assert_eq!(headers.len(), 1, "{headers:?}");
    }

    #[test]
    fn timeouts_from_either_header_capped_by_the_maximum() {
        let max = Duration::from_secs(30);
        let with = |name: &'static str, value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static(value));
            timeout(&headers, max)
        };
        assert_eq!(timeout(&HeaderMap::new(), max).unwrap(), max);
        assert_eq!(
            with(TIMEOUT_HEADER, "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(with(TIMEOUT_HEADER, "2s").unwrap(), Duration::from_secs(2));
        assert_eq!(
            with(TIMEOUT_HEADER, "1m").unwrap(),
            Duration::from_secs(60).min(max)
        );
        assert_eq!(with(TIMEOUT_HEADER, "1h").unwrap(), max);
        assert_eq!(with(TIMEOUT_HEADER, "1d").unwrap(), max);
        assert_eq!(
            with(TIMEOUT_HEADER, "1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            with(TIMEOUT_HEADER, "100us").unwrap(),
            Duration::from_micros(100)
        );
        // A number alone is seconds, as everywhere else micro reads a duration.
        assert_eq!(with(TIMEOUT_HEADER, "5").unwrap(), Duration::from_secs(5));
        let mut micro = HeaderMap::new();
        micro.insert(
            TIMEOUT_HEADER,
            HeaderValue::from_bytes("250µs".as_bytes()).unwrap(),
        );
        assert_eq!(timeout(&micro, max).unwrap(), Duration::from_micros(250));
        let err = with(TIMEOUT_HEADER, "3w").unwrap_err().to_string();
        assert!(
            err.contains("x-micro-timeout")
                && err.contains("\"3w\"")
                && err.contains("unknown unit"),
            "{err}"
        );
        assert_eq!(
            with(GRPC_TIMEOUT, "250m").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(with(GRPC_TIMEOUT, "2S").unwrap(), Duration::from_secs(2));
        for bad in ["abc", "-1s", "0s", "1y", "", "1h30"] {
            assert!(with(TIMEOUT_HEADER, bad).is_err(), "{bad}");
        }
        for bad in ["250", "m", "123456789m", "0m", "1x"] {
            assert!(with(GRPC_TIMEOUT, bad).is_err(), "{bad}");
        }
    }
}
