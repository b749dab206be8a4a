//! [`TraceContext`]: the W3C Trace Context `traceparent` of a call.

use std::{fmt, str::FromStr};

use http::{HeaderName, HeaderValue};

/// The header carrying the caller's trace and span ids (W3C Trace Context).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The header carrying vendor-specific trace state, passed through unchanged.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The length of a version `00` `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
const TRACEPARENT_LEN: usize = 55;

/// The trace position of a call: which trace it belongs to and which span is current,
/// carried between services in the W3C `traceparent` header.
///
/// # Examples
///
/// ```
/// use micro_core::context::TraceContext;
///
/// let parent: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
/// let child = parent.child();
/// assert_eq!(child.trace_id, parent.trace_id);
/// assert_ne!(child.span_id, parent.span_id);
/// assert!(child.to_string().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
/// # Ok::<(), micro_core::context::TraceParentError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The id shared by every span of the trace; never all zeros.
    pub trace_id: [u8; 16],
    /// The id of the current span; never all zeros.
    pub span_id: [u8; 8],
    /// The trace flags; bit 0 ([`TraceContext::SAMPLED`]) means the caller may record.
    pub flags: u8,
}

/// Why a `traceparent` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    /// The value is shorter than 55 bytes, or longer for version `00`.
    #[error("traceparent must be 55 bytes (00-<32 hex>-<16 hex>-<2 hex>), got {0}")]
    Length(usize),
    /// Version `ff` is forbidden by the specification.
    #[error("traceparent version ff is invalid")]
    Version,
    /// A field is not lowercase hex or a separator is not `-`.
    #[error("traceparent is malformed: expected 00-<32 hex>-<16 hex>-<2 hex>")]
    Format,
    /// The trace id is all zeros.
    #[error("traceparent trace id is all zeros")]
    ZeroTraceId,
    /// The parent span id is all zeros.
    #[error("traceparent span id is all zeros")]
    ZeroSpanId,
}

// === impl TraceContext ===

impl TraceContext {
    /// The `sampled` trace flag.
    pub const SAMPLED: u8 = 0x01;

    /// Starts a new trace: random trace and span ids, sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero(random),
            span_id: nonzero(random),
            flags: Self::SAMPLED,
        }
    }

    /// A new span in the same trace: same trace id and flags, a new random span id.
    #[must_use]
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: nonzero(random),
            flags: self.flags,
        }
    }

    /// Whether the `sampled` flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// Reads a `traceparent` header value; `None` when it is not valid.
    pub fn from_header(value: &HeaderValue) -> Option<Self> {
        std::str::from_utf8(value.as_bytes()).ok()?.parse().ok()
    }

    /// This context as a `traceparent` header value (version `00`).
    pub fn to_header_value(&self) -> HeaderValue {
        let buf = self.encode();
        // Only hex digits and '-', always a valid header value.
        let mut value =
            HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static(""));
        // Every value is new: HPACK indexing it would only evict the entries that do repeat
        // (content-type, te, grpc-timeout…) from both peers' tables. Sensitive values are
        // sent as never-indexed literals.
        value.set_sensitive(true);
        value
    }

    /// The trace id as 32 lowercase hex digits, formatted lazily.
    pub fn trace_id_hex(&self) -> impl fmt::Display + '_ {
        Hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits, formatted lazily.
    pub fn span_id_hex(&self) -> impl fmt::Display + '_ {
        Hex(&self.span_id)
    }

    fn encode(&self) -> [u8; TRACEPARENT_LEN] {
        let mut buf = [b'-'; TRACEPARENT_LEN];
        buf[0] = b'0';
        buf[1] = b'0';
        encode_hex(&self.trace_id, &mut buf[3..35]);
        encode_hex(&self.span_id, &mut buf[36..52]);
        encode_hex(&[self.flags], &mut buf[53..55]);
        buf
    }
}

impl FromStr for TraceContext {
    type Err = TraceParentError;

    /// Parses a `traceparent` value. A version above `00` may carry more fields after the
    /// four known ones, which are ignored as the specification asks.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let bytes = value.as_bytes();
        let Some((known, rest)) = bytes.split_first_chunk::<TRACEPARENT_LEN>() else {
            return Err(TraceParentError::Length(bytes.len()));
        };
        let mut version = [0u8; 1];
        decode_hex(&known[0..2], &mut version)?;
        match version[0] {
            0xff => return Err(TraceParentError::Version),
            0x00 if !rest.is_empty() => return Err(TraceParentError::Length(bytes.len())),
            _ if rest.first().is_some_and(|&next| next != b'-') => {
                return Err(TraceParentError::Format);
            }
            _ => {}
        }
        if known[2] != b'-' || known[35] != b'-' || known[52] != b'-' {
            return Err(TraceParentError::Format);
        }
        let mut context = Self {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: 0,
        };
        decode_hex(&known[3..35], &mut context.trace_id)?;
        decode_hex(&known[36..52], &mut context.span_id)?;
        let mut flags = [0u8; 1];
        decode_hex(&known[53..55], &mut flags)?;
        context.flags = flags[0];
        if context.trace_id == [0; 16] {
            return Err(TraceParentError::ZeroTraceId);
        }
        if context.span_id == [0; 8] {
            return Err(TraceParentError::ZeroSpanId);
        }
        Ok(context)
    }
}

impl fmt::Display for TraceContext {
    /// Formats as a version `00` `traceparent` value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buf = self.encode();
        // Only ASCII was written.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("trace_id", &format_args!("{}", Hex(&self.trace_id)))
            .field("span_id", &format_args!("{}", Hex(&self.span_id)))
            .field("flags", &format_args!("{:02x}", self.flags))
            .finish()
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        let len = self.0.len().min(16) * 2;
        encode_hex(&self.0[..len / 2], &mut buf[..len]);
        f.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?)
    }
}

/// Random bytes for ids from a per-thread generator seeded by the OS: W3C Trace Context asks
/// for random ids, not for secret ones, and this is several times cheaper than a CSPRNG.
fn random<const N: usize>() -> [u8; N] {
    use rand::{RngCore, SeedableRng, rngs::SmallRng};
    thread_local! {
        static IDS: std::cell::RefCell<SmallRng> = std::cell::RefCell::new(SmallRng::from_rng(&mut rand::rng()));
    }
    let mut id = [0u8; N];
    IDS.with_borrow_mut(|rng| rng.fill_bytes(&mut id));
    id
}

fn nonzero<const N: usize>(random: impl Fn() -> [u8; N]) -> [u8; N] {
    loop {
        let id = random();
        if id != [0; N] {
            return id;
        }
    }
}

fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// Decodes lowercase hex only: the specification forbids uppercase.
fn decode_hex(hex: &[u8], out: &mut [u8]) -> Result<(), TraceParentError> {
    /// The value of each lowercase hex digit; 0xff for every other byte.
    const NIBBLES: [u8; 256] = {
        let mut table = [0xff; 256];
        let mut digit = 0;
        while digit < 10 {
            table[b'0' as usize + digit] = digit as u8;
            digit += 1;
        }
        let mut letter = 0;
        while letter < 6 {
            table[b'a' as usize + letter] = 10 + letter as u8;
            letter += 1;
        }
        table
    };
    // Checked once at the end: a valid digit never has the high bit set.
    let mut invalid = 0u8;
    for (pair, byte) in hex.chunks_exact(2).zip(out.iter_mut()) {
        let (high, low) = (NIBBLES[usize::from(pair[0])], NIBBLES[usize::from(pair[1])]);
        invalid |= high | low;
        *byte = (high << 4) | (low & 0x0f);
    }
    if invalid & 0x80 != 0 {
        return Err(TraceParentError::Format);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_round_trip() {
        let context: TraceContext = VALID.parse().unwrap();
        assert_eq!(context.trace_id[0], 0x4b);
        assert_eq!(context.trace_id[15], 0x36);
        assert_eq!(
            context.span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(context.flags, 0x01);
        assert!(context.is_sampled());
        assert_eq!(context.to_string(), VALID);
        assert_eq!(context.to_header_value(), VALID);
        assert_eq!(
            TraceContext::from_header(&HeaderValue::from_static(VALID)),
            Some(context)
        );
        assert_eq!(
            context.trace_id_hex().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id_hex().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn rejects_invalid_values() {
        let cases = [
            ("", TraceParentError::Length(0)),
            (&VALID[..54], TraceParentError::Length(54)),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                TraceParentError::Length(56),
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceParentError::Version,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                TraceParentError::ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                TraceParentError::ZeroSpanId,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                TraceParentError::Format,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceParentError::Format,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                TraceParentError::Format,
            ),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceParentError::Format,
            ),
        ];
        for (value, error) in cases {
            assert_eq!(value.parse::<TraceContext>(), Err(error), "{value:?}");
        }
    }

    #[test]
    fn accepts_future_versions_with_extra_fields() {
        let value = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        let context: TraceContext = value.parse().unwrap();
        assert_eq!(context.to_string(), VALID);
        let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert_eq!(glued.parse::<TraceContext>(), Err(TraceParentError::Format));
    }

    #[test]
    fn roots_are_random_and_children_keep_the_trace() {
        let root = TraceContext::new_root();
        let other = TraceContext::new_root();
        assert_ne!(root.trace_id, other.trace_id);
        assert!(root.is_sampled());
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(child.flags, root.flags);
        assert_eq!(child.to_string().parse::<TraceContext>(), Ok(child));
    }
}
