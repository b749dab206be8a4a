//! Tiny protocol clients used for readiness, usable by tests too: an HTTP/1.1 request, a
//! Redis `PING`, a memcached `version`, a NATS `PING`. None of them has a timeout of its own: wrap calls in
//! [`tokio::time::timeout`] where the peer may be paused.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// An HTTP response: status code and body (de-chunked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code, such as 200.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

/// One HTTP/1.1 request to `addr` ("127.0.0.1:PORT") with `Connection: close`; a body is sent
/// as `application/json`.
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_http(&raw)
}

fn parse_http(raw: &[u8]) -> io::Result<HttpResponse> {
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad HTTP response: {what}"),
        )
    };
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("no status line"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("broken chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Sends `PING` to a Redis server at `addr` and expects `+PONG`.
pub async fn redis_ping(addr: &str) -> io::Result<()> {
    let mut stream = BufReader::new(TcpStream::connect(addr).await?);
    stream.get_mut().write_all(b"PING\r\n").await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    if line.trim_end() == "+PONG" {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "redis answered PING with {line:?}"
        )))
    }
}

/// Sends `version` to a memcached server at `addr` and expects `VERSION …`; returns the
/// version.
pub async fn memcached_version(addr: &str) -> io::Result<String> {
    let mut stream = BufReader::new(TcpStream::connect(addr).await?);
    stream.get_mut().write_all(b"version\r\n").await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    match line.trim_end().strip_prefix("VERSION ") {
        Some(version) => Ok(version.to_owned()),
        None => Err(io::Error::other(format!(
            "memcached answered version with {line:?}"
        ))),
    }
}

/// Connects to a NATS server at `addr` (reads its `INFO`), sends `CONNECT {}` and `PING`, and
/// expects `PONG`.
pub async fn nats_ping(addr: &str) -> io::Result<()> {
    let mut stream = BufReader::new(TcpStream::connect(addr).await?);
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    if !line.starts_with("INFO ") {
        return Err(io::Error::other(format!("nats greeted with {line:?}")));
    }
    stream
        .get_mut()
        .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")
        .await?;
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match line.trim_end() {
            "PONG" => return Ok(()),
            l if l.starts_with("-ERR") => return Err(io::Error::other(format!("nats: {l}"))),
            _ => {} // INFO updates
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let r = parse_http(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!(
            r,
            HttpResponse {
                status: 200,
                body: "ok".into()
            }
        );
        let r = parse_http(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(
            r,
            HttpResponse {
                status: 503,
                body: "abcde".into()
            }
        );
    }
}
