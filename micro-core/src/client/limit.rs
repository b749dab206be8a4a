//! The client's receive limit: a reply message larger than it ends the call with
//! RESOURCE_EXHAUSTED, as the status code table asks ("Sent or received message was larger
//! than configured limit"), before the stub would buffer it.
//!
//! tonic's stub has a limit of its own (`max_decoding_message_size`, 4 MiB by default) and
//! answers OUT_OF_RANGE over it; the channel reads each message's 5-byte prefix as the body
//! streams by and stops at its own limit first. The lower of the two applies: raise both to
//! receive larger messages. A compressed message is measured compressed here; one that
//! only grows past the stub's limit when decompressed still gets tonic's OUT_OF_RANGE.

use tonic::Status;

/// The largest reply message a client receives unless told otherwise: 4 MiB, the default
/// of tonic's stubs, grpc-go and grpc's C core.
pub const DEFAULT_MAX_RECEIVE_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// A message's prefix: a compression flag and a 4-byte big-endian length.
const PREFIX: usize = 5;

/// A channel's own limit, set with
/// [`Channel::max_receive_message_size`](crate::Channel::max_receive_message_size), carried to the core as a request extension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReceiveLimit(pub(crate) usize);

/// Follows the messages of a reply body through their prefixes, without copying them.
#[derive(Debug)]
pub(crate) struct MessageLimit {
    limit: usize,
    prefix: [u8; PREFIX],
    prefix_len: usize,
    // Bytes of the current message still to come, once its prefix is read.
    remaining: u64,
}

// === impl MessageLimit ===

impl MessageLimit {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
        }
    }

    /// Follows `data`, the next bytes of the body.
    ///
    /// # Errors
    /// When a message is longer than the limit: RESOURCE_EXHAUSTED, naming `service`, the
    /// size and the limit, and where in `data` that message's prefix began (0 when it began
    /// in an earlier chunk), so that the messages before it are still delivered.
    pub(crate) fn data(&mut self, data: &[u8], service: &str) -> Result<(), (usize, Status)> {
        let all = data.len();
        let mut data = data;
        while !data.is_empty() {
            if self.remaining > 0 {
                let take = data
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                self.remaining -= take as u64;
                data = &data[take..];
                continue;
            }
            let start = (all - data.len()).saturating_sub(self.prefix_len);
            let take = (PREFIX - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == PREFIX {
                self.prefix_len = 0;
                let [_, a, b, c, d] = self.prefix;
                let len = u32::from_be_bytes([a, b, c, d]);
                if u64::from(len) > self.limit as u64 {
                    tracing::debug!(
                        service,
                        len,
                        limit = self.limit,
                        "reply message over the limit"
                    );
                    return Err((
                        start,
                        Status::resource_exhausted(format!(
                            "reply message of {len} bytes from service {service} is larger than the \
                         client's receive limit of {} bytes (raise it with \
                         ClientBuilder::max_receive_message_size or \
                         Channel::max_receive_message_size, and the stub's \
                         max_decoding_message_size)",
                            self.limit
                        )),
                    ));
                }
                self.remaining = u64::from(len);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tonic::Code;

    use super::*;

    fn message(len: usize) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        framed.extend(std::iter::repeat_n(7, len));
        framed
    }

    #[test]
    fn messages_up_to_the_limit_pass_in_any_chunking_and_a_longer_one_fails() {
        let mut body = message(10);
        body.extend(message(0));
        body.extend(message(10));
        for chunk in [1, 2, 5, 7, body.len()] {
            let mut limit = MessageLimit::new(10);
            for piece in body.chunks(chunk) {
                limit.data(piece, "greeter").unwrap();
            }
        }
        let mut over = message(10);
        over.extend(message(11));
        for chunk in [1, 3, over.len()] {
            let mut limit = MessageLimit::new(10);
            let mut offset = 0;
            let (start, at, status) = over
                .chunks(chunk)
                .find_map(|piece| {
                    let start = offset;
                    offset += piece.len();
                    let (at, status) = limit.data(piece, "greeter").err()?;
                    Some((start, at, status))
                })
                .unwrap();
            // Where the long message's prefix began (byte 15), or 0 when an earlier chunk
            // began it.
            assert!(start + at == 15 || (at == 0 && start > 15), "chunk {chunk}");
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert!(status.message().contains("11 bytes"), "{status:?}");
            assert!(status.message().contains("limit of 10 bytes"), "{status:?}");
        }
    }
}
