//! How records, keys and the key index are laid out in memcached items.

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use micro_core::store::{Namespace, Record, StoreError};

/// memcached's longest key.
const MAX_ITEM_KEY: usize = 250;
/// An exptime above this many seconds is an absolute Unix time to memcached.
const RELATIVE_EXPTIME_MAX: u64 = 30 * 24 * 3600;
/// Format byte of a record item.
const FORMAT: u8 = 1;
/// Bytes before the key: format, version, expiry, key length.
const HEADER: usize = 1 + 8 + 8 + 2;

/// Item keys of one namespace.
#[derive(Debug)]
pub(super) struct Keys {
    prefix: String,
}

/// A decoded record item.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) version: u64,
    /// Milliseconds since the Unix epoch; 0: never.
    pub(super) expires: u64,
    pub(super) value: Bytes,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The absolute expiry (ms since the epoch, 0: none) and memcached exptime of a TTL.
///
/// memcached counts whole seconds on a clock that ticks once a second, so an exptime of `n`
/// may fire up to a second early: it gets one second more than the TTL rounded up, and the
/// exact expiry is checked against the millisecond deadline kept in the record.
pub(super) fn expiry(ttl: Option<Duration>, now_ms: u64) -> (u64, u64) {
    let Some(ttl) = ttl else { return (0, 0) };
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let secs = ms.div_ceil(1000).saturating_add(1);
    let exptime = if secs > RELATIVE_EXPTIME_MAX {
        (now_ms / 1000).saturating_add(secs)
    } else {
        secs
    };
    (now_ms.saturating_add(ms).max(1), exptime)
}

// === impl Keys ===

impl Keys {
    pub(super) fn new(namespace: &Namespace) -> Self {
        Self {
            prefix: format!(
                "micro:store:{}/{}:",
                namespace.database(),
                namespace.table()
            ),
        }
    }

    /// The index item.
    pub(super) fn index(&self) -> String {
        format!("{}index", self.prefix)
    }

    /// The item of `key`: `…:k:<key>` when memcached can take the key as it is (printable
    /// ASCII, no space, short enough), else `…:h:<FNV-1a 128 of the key, hex>`.
    pub(super) fn item(&self, key: &str) -> String {
        if key.bytes().all(|b| b.is_ascii_graphic())
            && self.prefix.len() + 2 + key.len() <= MAX_ITEM_KEY
        {
            format!("{}k:{key}", self.prefix)
        } else {
            format!("{}h:{:032x}", self.prefix, fnv1a_128(key.as_bytes()))
        }
    }
}

/// FNV-1a, 128 bits: stable across builds and processes (unlike std's hasher). Not
/// collision-proof against an adversary; a collision is detected (the record holds its key)
/// and reported, never read as the other key's record.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes.iter().fold(OFFSET, |hash, b| {
        (hash ^ u128::from(*b)).wrapping_mul(PRIME)
    })
}

// === impl Entry ===

impl Entry {
    pub(super) fn encode(key: &str, version: u64, expires: u64, value: &[u8]) -> Vec<u8> {
        let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
        let mut raw = Vec::with_capacity(HEADER + key.len() + value.len());
        raw.push(FORMAT);
        raw.extend_from_slice(&version.to_le_bytes());
        raw.extend_from_slice(&expires.to_le_bytes());
        raw.extend_from_slice(&key_len.to_le_bytes());
        raw.extend_from_slice(key.as_bytes());
        raw.extend_from_slice(value);
        raw
    }

    /// Decodes the item of `key`.
    ///
    /// # Errors
    /// Unavailable for a malformed item or one that holds another key (a hash collision).
    pub(super) fn decode(key: &str, raw: &Bytes) -> Result<Self, StoreError> {
        let corrupt = || {
            StoreError::unavailable(
                super::NAME,
                format!("malformed item for key {key:?} ({} bytes)", raw.len()),
            )
        };
        if raw.len() < HEADER || raw[0] != FORMAT {
            return Err(corrupt());
        }
        let u64_at = |at: usize| {
            raw.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let (Some(version), Some(expires)) = (u64_at(1), u64_at(9)) else {
            return Err(corrupt());
        };
        let key_len = usize::from(u16::from_le_bytes([raw[17], raw[18]]));
        let stored = raw.get(HEADER..HEADER + key_len).ok_or_else(corrupt)?;
        if stored != key.as_bytes() {
            return Err(StoreError::unavailable(
                super::NAME,
                format!(
                    "keys {key:?} and {:?} hash to the same item",
                    String::from_utf8_lossy(stored)
                ),
            ));
        }
        Ok(Self {
            version,
            expires,
            value: raw.slice(HEADER + key_len..),
        })
    }

    pub(super) fn live(&self, now: u64) -> bool {
        self.expires == 0 || self.expires > now
    }

    pub(super) fn record(self, key: &str, now: u64) -> Record {
        Record {
            key: key.to_owned(),
            value: self.value,
            version: self.version,
            ttl: (self.expires != 0)
                .then(|| Duration::from_millis(self.expires.saturating_sub(now))),
        }
    }
}

/// The index item: the namespace's keys, one per line (keys hold no control characters).
pub(super) fn decode_index(raw: Option<&Bytes>) -> BTreeSet<String> {
    raw.map(|raw| {
        String::from_utf8_lossy(raw)
            .split('\n')
            .filter(|key| !key.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

pub(super) fn encode_index(keys: &BTreeSet<String>) -> Vec<u8> {
    let mut raw = Vec::with_capacity(keys.iter().map(|k| k.len() + 1).sum());
    for key in keys {
        raw.extend_from_slice(key.as_bytes());
        raw.push(b'\n');
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_keys_fit_memcached() {
        let keys = Keys::new(&Namespace::new(&"d".repeat(64), &"t".repeat(64)).unwrap());
        for key in ["plain", "with space", "ключ", &"k".repeat(512)] {
            let item = keys.item(key);
            assert!(item.len() <= MAX_ITEM_KEY, "{item}");
            assert!(item.bytes().all(|b| b.is_ascii_graphic()), "{item}");
        }
        assert_ne!(keys.item("a b"), keys.item("a_b"));
    }

    #[test]
    fn records_round_trip_and_catch_collisions() {
        let raw = Bytes::from(Entry::encode("k", 7, 99, b"value"));
        let entry = Entry::decode("k", &raw).unwrap();
        assert_eq!((entry.version, entry.expires), (7, 99));
        assert_eq!(entry.value, Bytes::from("value"));
        assert!(Entry::decode("other", &raw).is_err());
        assert!(Entry::decode("k", &Bytes::from_static(b"\x01short")).is_err());
    }

    #[test]
    fn exptime_is_relative_up_to_30_days() {
        assert_eq!(expiry(None, 5_000), (0, 0));
        assert_eq!(expiry(Some(Duration::from_millis(1500)), 5_000), (6_500, 3));
        let (_, long) = expiry(Some(Duration::from_secs(40 * 24 * 3600)), 1_000_000_000);
        assert_eq!(long, 1_000_000 + 40 * 24 * 3600 + 1);
    }
}
