//! The `grpc-timeout` header: parsing and encoding per the gRPC over HTTP/2 specification.
//!
//! The server reads it into the call's [`Context`](super::Context) deadline; the client channel
//! writes it from min(call timeout, remaining context deadline).

use std::time::Duration;

use std::cell::RefCell;

use http::{HeaderName, HeaderValue};

/// The header carrying a call's timeout.
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Parses a `grpc-timeout` value: at most 8 ASCII digits and a unit (`H M S m u n`).
pub(crate) fn parse(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let mut amount: u64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        amount = amount * 10 + u64::from(digit - b'0');
    }
    Some(match unit {
        b'H' => Duration::from_secs(amount.saturating_mul(3600)),
        b'M' => Duration::from_secs(amount.saturating_mul(60)),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Encodes `timeout` rounded up (the server never sees a shorter deadline than the
/// client's) in the coarsest unit whose rounding adds at most 0.1 % (at most 8 digits, as
/// the spec allows).
///
/// Coarse units make the value repeat: a call that waited up to 30 ms for a connection or
/// a turn still sends its 30 s deadline as `30S`, so HPACK sends a one-byte index. A value
/// that changed every millisecond would join the table's chain of `grpc-timeout` entries,
/// which the encoder walks comparing values on every request (measured: ~25 comparisons
/// and ~1,500 instructions a call with 64 in flight), and evict the entries that repeat.
/// Repeating values also let the last one be reused instead of formatted again.
pub(crate) fn encode(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    const UNITS: [(u128, char); 6] = [
        (3_600_000_000_000, 'H'),
        (60_000_000_000, 'M'),
        (1_000_000_000, 'S'),
        (1_000_000, 'm'),
        (1_000, 'u'),
        (1, 'n'),
    ];
    let nanos = timeout.as_nanos();
    for (per, unit) in UNITS {
        let amount = nanos.div_ceil(per);
        // Rounded up by at most a thousandth of the timeout (exact for 0 and for `n`).
        if amount <= MAX && (amount * per - nanos) * 1_000 <= nanos {
            return encoded(amount, unit);
        }
    }
    // Longer than 99,999,999 hours: the longest timeout the header can carry.
    encoded(MAX, 'H')
}

fn encoded(amount: u128, unit: char) -> HeaderValue {
    thread_local! {
        /// The last value encoded on this thread: calls with the same timeout share it, a
        /// cheap clone instead of formatting and allocating a new value.
        static LAST: RefCell<Option<(u128, char, HeaderValue)>> = const { RefCell::new(None) };
    }
    let cached = LAST.with_borrow(|last| match last {
        Some((last_amount, last_unit, value)) if *last_amount == amount && *last_unit == unit => {
            Some(value.clone())
        }
        _ => None,
    });
    if let Some(value) = cached {
        return value;
    }
    let text = format!("{amount}{unit}");
    let value =
        HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("99999999H"));
    LAST.set(Some((amount, unit, value.clone())));
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_the_coarsest_precise_unit() {
        for (timeout, text) in [
            (Duration::from_nanos(1), "1n"),
            (Duration::ZERO, "0H"),
            (Duration::from_millis(100), "100m"),
            (Duration::from_micros(1_500), "1500u"),
            (Duration::from_millis(1_500), "1500m"),
            (Duration::from_secs(30), "30S"),
            (Duration::from_secs(3600), "1H"),
            (Duration::from_secs(3600 * 1000), "1000H"),
            (Duration::from_secs(60 * 999), "999M"),
            (Duration::from_secs(3600 * 99_999_999), "99999999H"),
        ] {
            let value = encode(timeout);
            assert_eq!(value, text);
            assert_eq!(parse(&value), Some(timeout), "{value:?}");
        }
    }

    #[test]
    fn rounds_up_never_down() {
        let value = encode(Duration::from_nanos(100_000_001));
        assert_eq!(value, "100001u");
        // A 30 s call's remaining time encodes the same after waiting up to 30 ms (0.1 %)…
        assert_eq!(encode(Duration::from_nanos(29_999_987_654)), "30S");
        assert_eq!(encode(Duration::from_nanos(29_971_000_000)), "30S");
        // …then in the next finer unit, still rounded up by at most 0.1 %.
        assert_eq!(encode(Duration::from_nanos(29_960_000_001)), "29961m");
        assert_eq!(encode(Duration::from_nanos(1_000_000_001)), "1001m");
        // Longer than the header can carry: the longest it can.
        assert_eq!(encode(Duration::MAX), "99999999H");
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in ["", "5", "S", "123456789S", "5x", "-5S", "5 S"] {
            assert_eq!(parse(&HeaderValue::from_static(bad)), None, "{bad}");
        }
        assert_eq!(
            parse(&HeaderValue::from_static("2M")),
            Some(Duration::from_secs(120))
        );
    }
}
