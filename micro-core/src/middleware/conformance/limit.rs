//! A message over a size limit ends with RESOURCE_EXHAUSTED, as the status code table asks
//! ("Sent or received message was larger than configured limit"), not tonic's OUT_OF_RANGE.
//!
//! The limits are the tonic services' own (`max_decoding_message_size`, 4 MiB by default,
//! and `max_encoding_message_size`), set inside each generated server where micro cannot
//! read them. So instead of checking a second limit of its own, the server rewrites tonic's
//! status on its way out: the answer's `grpc-status` 11 with tonic's size message becomes 8,
//! with the sizes kept in the message. Only that pair of code and message text is touched;
//! an OUT_OF_RANGE a handler returns passes unchanged. The check costs one byte comparison
//! per answer.

use http::{HeaderMap, HeaderValue};
use tonic::{Code, Status};

const GRPC_STATUS: &str = "grpc-status";

/// tonic's messages (`codec/decode.rs` and `codec/encode.rs`), each followed by
/// `found {len} bytes, the limit is: {limit} bytes`; checked by the tests against the
/// tonic in Cargo.lock.
const DECODED: &str = "Error, decoded message length too large: ";
const ENCODED: &str = "Error, encoded message length too large: ";

/// Turns tonic's OUT_OF_RANGE for a message over a size limit in `headers` (the trailers,
/// or the headers of a trailers-only answer) into RESOURCE_EXHAUSTED. Anything else is left
/// alone.
pub(crate) fn rewrite(headers: &mut HeaderMap) {
    if headers.get(GRPC_STATUS).map(HeaderValue::as_bytes) != Some(b"11") {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let Some(replaced) = resource_exhausted(&status) else {
        return;
    };
    tracing::debug!(message = replaced.message(), "message over the size limit");
    for name in [GRPC_STATUS, "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if let Err(err) = replaced.add_header(headers) {
        // The message is ASCII made here; this cannot fail, but never leave no status.
        tracing::debug!(error = %err, "cannot write the replaced status");
        headers.insert(GRPC_STATUS, HeaderValue::from_static("8"));
    }
}

/// RESOURCE_EXHAUSTED for tonic's size error `status`, naming the size and the limit.
fn resource_exhausted(status: &Status) -> Option<Status> {
    if status.code() != Code::OutOfRange {
        return None;
    }
    let message = status.message();
    let (received, sizes) = if let Some(sizes) = message.strip_prefix(DECODED) {
        (true, sizes)
    } else if let Some(sizes) = message.strip_prefix(ENCODED) {
        (false, sizes)
    } else {
        return None;
    };
    let (len, limit) = sizes_of(sizes)?;
    let text = if received {
        format!(
            "request message of {len} bytes is larger than the server's receive limit of \
             {limit} bytes (the service's max_decoding_message_size)"
        )
    } else {
        format!(
            "reply message of {len} bytes is larger than the server's send limit of {limit} \
             bytes (the service's max_encoding_message_size)"
        )
    };
    Some(Status::resource_exhausted(text))
}

/// `(len, limit)` from `found {len} bytes, the limit is: {limit} bytes`.
fn sizes_of(text: &str) -> Option<(u64, u64)> {
    let rest = text.strip_prefix("found ")?;
    let (len, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some((len.parse().ok()?, limit.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn answer(status: &Status) -> HeaderMap {
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        headers
    }

    #[test]
    fn tonics_size_errors_become_resource_exhausted_with_the_sizes() {
        let mut headers = answer(&Status::out_of_range(
            "Error, decoded message length too large: found 5242885 bytes, the limit is: \
             4194304 bytes",
        ));
        rewrite(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("5242885"), "{status:?}");
        assert!(status.message().contains("4194304"), "{status:?}");

        let mut headers = answer(&Status::out_of_range(
            "Error, encoded message length too large: found 10 bytes, the limit is: 5 bytes",
        ));
        rewrite(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("send limit of 5 bytes"),
            "{status:?}"
        );
    }

    #[test]
    fn other_statuses_pass_unchanged() {
        for status in [
            Status::out_of_range("page 7 of 3"),
            Status::out_of_range("Error, decoded message length too large: garbled"),
            Status::internal(
                "Error, decoded message length too large: found 5 bytes, the limit is: 4 bytes",
            ),
            Status::ok(""),
        ] {
            let before = answer(&status);
            let mut after = before.clone();
            rewrite(&mut after);
            assert_eq!(before, after, "{status:?}");
        }
    }
}
