//! Durations on the command line: the one parser behind every `DURATION` flag
//! (`--timeout`, `--ttl`, `bench --duration`, `api --header-read-timeout`, …).

use std::time::Duration;

/// The longest duration a flag takes: 100 years (876,000 hours). Anything longer is a typo,
/// and this bound keeps `Instant::now() + duration` and the `grpc-timeout` encoding far from
/// overflowing.
pub(crate) const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

const EXAMPLES: &str = "such as 500ms, 10s, 2m, 1h or 1h30m";

/// `500ms`, `10s`, `1.5s`, `2m`, `1h`, `1h30m`, or plain seconds (`30`): a positive duration
/// of at most [`MAX`]. Exact (no floating point), and never panics on any input.
///
/// # Errors
///
/// A message naming the text and what is wrong with it: not a duration, an unknown unit,
/// zero, or longer than [`MAX`].
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let not_a_duration = || format!("{trimmed:?} is not a duration {EXAMPLES}");
    if trimmed.is_empty() {
        return Err(format!("an empty duration: use one {EXAMPLES}"));
    }
    let too_long = || {
        format!(
            "{trimmed:?} is too long: at most {}h (100 years)",
            MAX.as_secs() / 3600
        )
    };
    let mut rest = trimmed;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        // A bare number is seconds, but only alone: `1h30` is ambiguous.
        let unit = match unit {
            "" if number_len == trimmed.len() => "s",
            "" => return Err(format!("{trimmed:?}: a number without a unit; {EXAMPLES}")),
            unit => unit,
        };
        let per_unit: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            other => {
                return Err(format!(
                    "{trimmed:?}: unknown unit {other:?}; use h, m, s or ms"
                ));
            }
        };
        let nanos = nanos(number, per_unit)
            .ok_or_else(not_a_duration)?
            .ok_or_else(too_long)?;
        total = total.checked_add(nanos).ok_or_else(too_long)?;
        rest = after;
    }
    if total == 0 {
        return Err(format!("{trimmed:?}: the duration must be positive"));
    }
    if total > MAX.as_nanos() {
        return Err(too_long());
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_long())?;
    // The remainder of a division by 10^9 fits in u32.
    let subsec = u32::try_from(total % 1_000_000_000).map_err(|_| too_long())?;
    Ok(Duration::new(secs, subsec))
}

/// `number` (`12`, `1.5`, `.5`) times `per_unit` nanoseconds: `None` when it is not a
/// number, `Some(None)` when it overflows. Digits of the fraction finer than a nanosecond
/// are dropped.
fn nanos(number: &str, per_unit: u128) -> Option<Option<u128>> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut total: u128 = 0;
    for digit in whole.bytes() {
        let Some(next) = total
            .checked_mul(10)
            .and_then(|t| t.checked_add(u128::from(digit - b'0')))
        else {
            return Some(None);
        };
        total = next;
    }
    let Some(mut total) = total.checked_mul(per_unit) else {
        return Some(None);
    };
    // per_unit ≤ 3.6e12, so 13 digits of fraction reach below a nanosecond.
    let mut scale = per_unit;
    for digit in fraction.bytes().take(13) {
        scale /= 10;
        total = total.saturating_add(u128::from(digit - b'0') * scale);
    }
    Some(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_combinations() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("30", Duration::from_secs(30)),
            (" 2m ", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m30s250ms", Duration::from_millis(90_250)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("0.25h", Duration::from_secs(900)),
            ("1.0000000001s", Duration::new(1, 0)),
            ("0.000001ms", Duration::from_nanos(1)),
            ("876000h", MAX),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn errors_name_the_text_and_never_panic() {
        for text in [
            "18446744073709551615s",
            "18446744073709551615m",
            "18446744073709551615ms",
            "18446744073709551615h",
            "99999999999999999999999999999999999999999999h",
            "876001h",
            "876000h1ms",
            "1e9s",
            "0",
            "0s",
            "0.0000000001s",
            "",
            " ",
            "s",
            "ms",
            ".",
            ".s",
            "1..5s",
            "-1s",
            "+1s",
            "1d",
            "1h30",
            "1 h",
            "NaNs",
            "infs",
            "1µs",
            "١s",
        ] {
            let err = parse(text).expect_err(text);
            assert!(!err.is_empty(), "{text}");
        }
        assert!(parse("3d").unwrap_err().contains("\"d\""));
        assert!(
            parse("18446744073709551615s")
                .unwrap_err()
                .contains("too long")
        );
        assert!(parse("0s").unwrap_err().contains("positive"));
    }
}
