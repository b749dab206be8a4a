//! Sizes written by people: `65536`, `64K`, `4M`, `1G`.
//!
//! One parser for every byte size micro reads from text: environment variables
//! (`MICRO_MESSAGE_BUDGET`) and command-line flags. Units are powers of 1024 and any case:
//! `B` (or none), `K` (`KB`, `KiB`), `M` (`MB`, `MiB`), `G` (`GB`, `GiB`).
//!
//! ```
//! assert_eq!(micro_core::size::parse("64M")?, 64 << 20);
//! assert_eq!(micro_core::size::parse("65536")?, 65536);
//! # Ok::<(), micro_core::size::SizeError>(())
//! ```

/// The units [`parse`] accepts, as its errors list them.
pub const UNITS: &str = "B, K, M or G (powers of 1024)";

/// Why a text is not a size. Each variant names the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    /// The text does not start with a whole number.
    #[error("{text:?} is not a size such as 65536, 64K, 4M or 1G")]
    Invalid {
        /// The text, trimmed.
        text: String,
    },
    /// The unit is not one of [`UNITS`].
    #[error("{text:?}: unknown unit {unit:?}; use {UNITS}")]
    UnknownUnit {
        /// The text, trimmed.
        text: String,
        /// The unit that is not known.
        unit: String,
    },
    /// The size is zero.
    #[error("{text:?}: the size must be greater than zero")]
    Zero {
        /// The text, trimmed.
        text: String,
    },
    /// The size does not fit in a `usize`.
    #[error("{text:?} is too large")]
    TooLarge {
        /// The text, trimmed.
        text: String,
    },
}

/// Parses a positive number of bytes: a whole number and an optional unit. Surrounding
/// whitespace is ignored. Never panics.
///
/// # Errors
///
/// A [`SizeError`] naming the text: not a number, an unknown unit (listing the accepted
/// ones), zero, or too large for this machine.
pub fn parse(text: &str) -> Result<usize, SizeError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(SizeError::Invalid {
            text: text.to_owned(),
        });
    }
    let factor: usize = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => {
            return Err(SizeError::UnknownUnit {
                text: text.to_owned(),
                unit: unit.to_owned(),
            });
        }
    };
    let too_large = || SizeError::TooLarge {
        text: text.to_owned(),
    };
    // Only digits: a parse error is an overflow.
    let amount: usize = digits.parse().map_err(|_| too_large())?;
    match amount.checked_mul(factor) {
        Some(0) => Err(SizeError::Zero {
            text: text.to_owned(),
        }),
        Some(bytes) => Ok(bytes),
        None => Err(too_large()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse("65536"), Ok(65536));
        assert_eq!(parse("64M"), Ok(64 << 20));
        assert_eq!(parse(" 64k "), Ok(64 << 10));
        assert_eq!(parse("4MiB"), Ok(4 << 20));
        assert_eq!(parse("1g"), Ok(1 << 30));
        assert_eq!(parse("10B"), Ok(10));
        assert!(matches!(parse("0"), Err(SizeError::Zero { .. })));
        assert!(matches!(parse("-1"), Err(SizeError::Invalid { .. })));
        assert!(matches!(parse(""), Err(SizeError::Invalid { .. })));
        assert!(matches!(
            parse("99999999999999999999G"),
            Err(SizeError::TooLarge { .. })
        ));
        let err = parse("3T").unwrap_err().to_string();
        assert!(err.contains("\"T\"") && err.contains("K, M or G"), "{err}");
    }
}
