//! The `grpc-timeout` header: parsing and encoding per the gRPC over HTTP/2 specification.
//!
//! The server reads it into the call's [`Context`](super::Context) deadline; the client channel
//! writes it from min(call timeout, remaining context deadline).

use std::time::Duration;

use http::HeaderValue;

/// The header carrying a call's timeout.
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Parses a `grpc-timeout` value: at most 8 ASCII digits and a unit (`H M S m u n`).
pub(crate) fn parse(value: &HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Encodes `timeout` in the finest unit whose value fits in 8 digits, rounding up so the
/// server never sees a shorter deadline than the client's.
pub(crate) fn encode(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let amount = nanos.div_ceil(per);
        if amount <= MAX {
            return encoded(amount, unit);
        }
    }
    encoded(MAX, 'H')
}

fn encoded(amount: u128, unit: char) -> HeaderValue {
    let text = format!("{amount}{unit}");
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("99999999H"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_the_finest_fitting_unit() {
        for (timeout, text) in [
            (Duration::from_nanos(1), "1n"),
            (Duration::from_millis(100), "100000u"),
            (Duration::from_secs(30), "30000000u"),
            (Duration::from_secs(3600), "3600000m"),
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
