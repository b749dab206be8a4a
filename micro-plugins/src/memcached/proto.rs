//! The part of memcached's meta protocol (memcached ≥ 1.6) the store speaks, over tokio TCP:
//!
//! | request | reply |
//! |---|---|
//! | `mg <key> v c` | `VA <len> c<cas>` + data, or `EN` (miss) |
//! | `ms <key> <len> [C<cas>] [T<exptime>] [ME]` + data | `HD` stored, `NS` not stored (add of an existing key), `EX` CAS mismatch, `NF` CAS of a missing key |
//! | `md <key> [C<cas>]` | `HD`, `NF`, `EX` |
//!
//! Requests may be pipelined: written together, answered in order. Connections are pooled;
//! one that saw an error is dropped, never reused.

use std::{io, time::Duration};

use bytes::Bytes;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::Mutex,
};

/// Most idle connections kept.
const MAX_IDLE: usize = 8;

/// One item as `mg` returns it.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) data: Bytes,
    pub(super) cas: u64,
}

/// How `ms` stores.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    /// Only if the item's CAS token is still this one.
    Cas(u64),
    /// Only if there is no item (memcached's add).
    Add,
}

/// What `ms` and `md` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// `HD`: done.
    Done,
    /// `NS`, `EX` or `NF`: the item changed or appeared or vanished since it was read.
    Raced,
}

/// A connection.
#[derive(Debug)]
pub(super) struct Conn {
    stream: BufReader<TcpStream>,
    out: Vec<u8>,
}

/// Idle connections to one server.
#[derive(Debug)]
pub(super) struct Pool {
    addr: String,
    idle: Mutex<Vec<Conn>>,
}

fn bad(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

// === impl Pool ===

impl Pool {
    pub(super) fn new(addr: String) -> Self {
        Self {
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection, or a new one.
    pub(super) async fn get(&self, connect_timeout: Duration) -> io::Result<Conn> {
        if let Some(conn) = self.idle.lock().await.pop() {
            return Ok(conn);
        }
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(stream),
            out: Vec::new(),
        })
    }

    /// Drops every idle connection: after one broke (memcached restarted, say), the others
    /// are likely broken too.
    pub(super) async fn clear(&self) {
        self.idle.lock().await.clear();
    }

    /// Returns a connection that finished its requests cleanly.
    pub(super) async fn put(&self, conn: Conn) {
        let mut idle = self.idle.lock().await;
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

// === impl Conn ===

impl Conn {
    /// Queues `mg <key> v c`.
    pub(super) fn queue_get(&mut self, key: &str) {
        self.out.extend_from_slice(b"mg ");
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b" v c\r\n");
    }

    /// Queues `ms`; `exptime` 0 means no expiry.
    pub(super) fn queue_set(&mut self, key: &str, data: &[u8], mode: Mode, exptime: u64) {
        self.out.extend_from_slice(b"ms ");
        self.out.extend_from_slice(key.as_bytes());
        self.out
            .extend_from_slice(format!(" {} T{exptime}", data.len()).as_bytes());
        match mode {
            Mode::Cas(cas) => self.out.extend_from_slice(format!(" C{cas}").as_bytes()),
            Mode::Add => self.out.extend_from_slice(b" ME"),
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(data);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Queues `md <key> C<cas>`.
    pub(super) fn queue_delete(&mut self, key: &str, cas: u64) {
        self.out
            .extend_from_slice(format!("md {key} C{cas}\r\n").as_bytes());
    }

    /// Sends everything queued.
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        let out = std::mem::take(&mut self.out);
        self.stream.get_mut().write_all(&out).await?;
        self.out = out;
        self.out.clear();
        Ok(())
    }

    async fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end().to_owned();
        if line.starts_with("SERVER_ERROR") || line.starts_with("CLIENT_ERROR") || line == "ERROR" {
            return Err(io::Error::other(format!("memcached answered {line:?}")));
        }
        Ok(line)
    }

    /// Reads the answer to a queued `mg`.
    pub(super) async fn read_get(&mut self) -> io::Result<Option<Item>> {
        let line = self.line().await?;
        if line == "EN" {
            return Ok(None);
        }
        let mut parts = line.split(' ');
        if parts.next() != Some("VA") {
            return Err(bad(format!("expected VA or EN, got {line:?}")));
        }
        let len: usize = parts
            .next()
            .and_then(|len| len.parse().ok())
            .ok_or_else(|| bad(format!("no length in {line:?}")))?;
        let cas = parts
            .find_map(|flag| flag.strip_prefix('c'))
            .and_then(|cas| cas.parse().ok())
            .ok_or_else(|| bad(format!("no CAS in {line:?}")))?;
        let mut data = vec![0; len + 2];
        self.stream.read_exact(&mut data).await?;
        if !data.ends_with(b"\r\n") {
            return Err(bad("value not followed by CRLF"));
        }
        data.truncate(len);
        Ok(Some(Item {
            data: Bytes::from(data),
            cas,
        }))
    }

    /// Reads the answer to a queued `ms` or `md`.
    pub(super) async fn read_outcome(&mut self) -> io::Result<Outcome> {
        let line = self.line().await?;
        match line.split(' ').next() {
            Some("HD") => Ok(Outcome::Done),
            Some("NS" | "EX" | "NF") => Ok(Outcome::Raced),
            _ => Err(bad(format!("expected HD, NS, EX or NF, got {line:?}"))),
        }
    }
}
