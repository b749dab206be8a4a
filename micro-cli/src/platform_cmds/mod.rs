//! The platform commands of `micro`: `publish` and `subscribe` (the event service or any
//! broker), `kv` (the kv service or any store), `config` (the config service) and `auth`
//! (the auth service).

mod auth;
mod config;
mod kv;
mod publish;

pub(crate) use auth::{AuthArgs, auth};
pub(crate) use config::{ConfigArgs, config};
pub(crate) use kv::{KvArgs, kv};
pub(crate) use publish::{PublishArgs, SubscribeArgs, publish, subscribe};

/// The URL that selects a platform service found through the registry.
const SERVICE_URL: &str = "service";

/// Standard base64 with padding, for binary values in JSON output.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(char::from(ALPHABET[index]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_pads_like_rfc_4648() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
    }
}
