//! `delay-proxy --target HOST:PORT --delay DURATION`: a TCP proxy on a free loopback port
//! that holds every chunk the target sends back for DURATION before passing it on (requests
//! go through at once). In front of a node it makes every answer late, as a congested link
//! or an overloaded host would, while the node itself stays healthy.
//!
//! Prints `ready addr=127.0.0.1:PORT node=delay-proxy` once it listens.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
    sync::mpsc,
    time::Instant,
};

fn usage() -> ! {
    eprintln!("usage: delay-proxy --target HOST:PORT --delay DURATION (e.g. 200ms)");
    std::process::exit(2);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut target = None;
    let mut delay = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--target" => target = args.next(),
            "--delay" => delay = args.next().and_then(|d| micro::duration::parse(&d).ok()),
            _ => usage(),
        }
    }
    let (Some(target), Some(delay)) = (target, delay) else {
        usage()
    };
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("delay-proxy: cannot listen on 127.0.0.1: {err}");
            std::process::exit(1);
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("delay-proxy: {err}");
            std::process::exit(1);
        }
    };
    // The ready line is this program's output, read by the test that started it.
    #[allow(clippy::print_stdout)]
    {
        println!("ready addr={addr} node=delay-proxy");
    }
    while let Ok((client, _)) = listener.accept().await {
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(copy(client_read, server_write, Duration::ZERO));
            copy(server_read, client_write, delay).await;
        });
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read (order kept).
async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = buf.get(..n).map(<[u8]>::to_vec).unwrap_or_default();
                if chunks.send((Instant::now() + delay, chunk)).is_err() {
                    break;
                }
            }
        }
    }
    drop(chunks);
    let _ = writer.await;
}
