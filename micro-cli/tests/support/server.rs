//! `micro server` and `micro api` as child processes: one starter for the tests that run
//! the real binary, with the lines printed before readiness parsed.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use super::{Proc, READY_TIMEOUT, RegistryDir};

/// The `micro` binary under test.
pub fn micro_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_micro"))
}

/// Variables a child `micro server` must not inherit from a test runner's environment.
const CLEARED_ENV: &[&str] = &[
    "MICRO_STORE",
    "MICRO_SYNC",
    "MICRO_BROKER",
    "MICRO_SERVER_ADDRESS",
    "MICRO_API_ADDRESS",
    "MICRO_AUTH_STORE",
    "MICRO_AUTH_ADMIN_SECRET",
    "MICRO_TLS_CERT",
    "MICRO_TLS_KEY",
    "MICRO_TLS_CLIENT_CA",
    "MICRO_TLS_CLIENT_AUTH",
    "MICRO_TLS_CA",
];

/// Variables a client command must not inherit from a test runner's environment.
pub const CLIENT_ENV: &[&str] = &[
    "MICRO_STORE",
    "MICRO_BROKER",
    "MICRO_ENV",
    "MICRO_AUTH_TOKEN",
    "MICRO_AUTH_ID",
    "MICRO_AUTH_SECRET",
    "MICRO_TLS_CA",
    "MICRO_TLS_CLIENT_CERT",
    "MICRO_TLS_CLIENT_KEY",
    "MICRO_TLS_SERVER_NAME",
];

/// How to start a [`MicroServer`]: by default on a free loopback port, the gateway off,
/// with a private data directory and registry owned by the server.
#[derive(Debug, Default)]
pub struct MicroServerBuilder {
    data_dir: Option<PathBuf>,
    registry_url: Option<String>,
    api: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    nofile: Option<u64>,
}

impl MicroServerBuilder {
    /// Runs the server with soft and hard open-file limits of `limit` (`ulimit -n`).
    pub fn nofile(mut self, limit: u64) -> Self {
        self.nofile = Some(limit);
        self
    }

    /// Keeps the data under `dir` (e.g. to restart on the same data).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Registers in `registry` instead of a private one.
    pub fn registry(mut self, registry: &RegistryDir) -> Self {
        self.registry_url = Some(registry.url().to_owned());
        self
    }

    /// Serves the HTTP gateway on a free loopback port (`api addr=` line).
    pub fn api(mut self) -> Self {
        self.api = true;
        self
    }

    /// More command-line arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|&a| a.to_owned()));
        self
    }

    /// More environment variables (set after the cleared ones, so they win).
    pub fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())));
        self
    }

    /// Starts the server and reads its output up to the `ready` line.
    pub async fn start(self) -> MicroServer {
        let data = match &self.data_dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("temp dir")),
        };
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| data.as_ref().unwrap().path().to_owned());
        let registry = match &self.registry_url {
            Some(_) => None,
            None => Some(RegistryDir::new()),
        };
        let registry_url = self
            .registry_url
            .clone()
            .unwrap_or_else(|| registry.as_ref().unwrap().url().to_owned());
        let data_dir = data_dir.display().to_string();
        let mut args = vec![
            "server",
            "--address",
            "127.0.0.1:0",
            "--api-address",
            if self.api { "127.0.0.1:0" } else { "off" },
            "--data-dir",
            &data_dir,
            "--registry",
            &registry_url,
        ];
        args.extend(self.args.iter().map(String::as_str));
        let mut env: Vec<(&str, &str)> = CLEARED_ENV.iter().map(|&k| (k, "")).collect();
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut process = match self.nofile {
            None => Proc::spawn(micro_bin(), &args, &env),
            Some(limit) => {
                // dash's and bash's `ulimit -n` set both limits; exec keeps the pid.
                let script = format!("ulimit -n {limit} && exec \"$0\" \"$@\"");
                let bin = micro_bin().display().to_string();
                let mut wrapped = vec!["-c", script.as_str(), bin.as_str()];
                wrapped.extend(args.iter().copied());
                Proc::spawn(Path::new("/bin/sh"), &wrapped, &env)
            }
        };

        let mut lines = Vec::new();
        let addr = loop {
            let line = process.next_line(READY_TIMEOUT).await;
            if let Some(rest) = line.strip_prefix("ready addr=") {
                break first_word(rest);
            }
            lines.push(line);
        };
        let api_addr = lines
            .iter()
            .find_map(|line| line.strip_prefix("api addr="))
            .map(first_word);
        let admin_secret_file = lines.iter().find_map(|line| {
            line.strip_prefix("auth admin ")
                .and_then(|rest| rest.split_once("secret_file="))
                .map(|(_, path)| path.to_owned())
        });
        let tls = lines
            .iter()
            .find_map(|line| line.strip_prefix("tls "))
            .map(str::to_owned);
        MicroServer {
            process,
            addr,
            api_addr,
            admin_secret_file,
            tls,
            lines,
            registry_url,
            _registry: registry,
            _data: data,
        }
    }
}

fn first_word(text: &str) -> String {
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A running `micro server`, killed when dropped.
pub struct MicroServer {
    pub process: Proc,
    /// The gRPC address of its `ready addr=` line.
    pub addr: String,
    /// The gateway's address from the `api addr=` line, when it printed one.
    pub api_addr: Option<String>,
    /// The path of the `auth admin … secret_file=` line, when it printed one.
    pub admin_secret_file: Option<String>,
    /// The fields of the `tls ca=… cert=… key=… created=…` line, when it printed one.
    pub tls: Option<String>,
    /// Every line printed before the ready line.
    pub lines: Vec<String>,
    /// The `MICRO_REGISTRY` value of its registry.
    pub registry_url: String,
    _registry: Option<RegistryDir>,
    _data: Option<tempfile::TempDir>,
}

impl MicroServer {
    pub fn builder() -> MicroServerBuilder {
        MicroServerBuilder::default()
    }

    /// A field of the `tls` line (`ca`, `cert`, `key`, `created`); empty when absent.
    pub fn tls_field(&self, name: &str) -> String {
        self.tls
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    }

    /// The seeded admin's secret, read from the file of the `auth admin` line.
    pub fn admin_secret(&self) -> String {
        let path = self
            .admin_secret_file
            .as_ref()
            .expect("an `auth admin` line before ready");
        std::fs::read_to_string(path).unwrap().trim().to_owned()
    }

    /// The gateway's address, failing when it printed no `api addr=` line.
    pub fn api_addr(&self) -> &str {
        self.api_addr.as_deref().expect("api addr= before ready")
    }

    /// Runs `micro args…` with this server's registry, none of the caller's store, broker,
    /// environment or auth settings, `env` set and `stdin` written when given;
    /// `(exit code, stdout, stderr)` within 60 s.
    pub async fn micro(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
    ) -> (i32, String, String) {
        run_micro(&self.registry_url, args, CLIENT_ENV, env, stdin).await
    }

    /// SIGTERM, then asserts a clean exit within 30 s.
    pub async fn stop(mut self) {
        self.process.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.process.wait(std::time::Duration::from_secs(30)).await;
        assert!(status.success(), "micro server exited with {status}");
    }
}

/// `micro api --address 127.0.0.1:0 --registry <registry_url> extra…`, started up to its
/// ready line: the process and its address.
pub async fn start_micro_api(registry_url: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "api",
        "--address",
        "127.0.0.1:0",
        "--registry",
        registry_url,
    ];
    args.extend_from_slice(extra);
    let mut api = Proc::spawn(
        micro_bin(),
        &args,
        &[("MICRO_BROKER", ""), ("MICRO_API_ADDRESS", "")],
    );
    let line = api.next_line(READY_TIMEOUT).await;
    let addr = line
        .strip_prefix("ready addr=")
        .unwrap_or_else(|| panic!("ready line expected, got {line:?}"))
        .to_owned();
    (api, addr)
}

/// Runs `micro args…` with `MICRO_REGISTRY=<registry_url>` and `RUST_LOG=warn`, the `remove`
/// variables unset and `env` set, `stdin` written when given; `(exit code, stdout, stderr)`
/// within 60 s.
pub async fn run_micro(
    registry_url: &str,
    args: &[&str],
    remove: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(micro_bin());
    command
        .args(args)
        .env("MICRO_REGISTRY", registry_url)
        .env("RUST_LOG", "warn");
    for name in remove {
        command.env_remove(name);
    }
    command
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("start micro");
    if let Some(bytes) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(bytes).await.expect("write stdin");
        drop(pipe);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("micro finished within 60 s")
        .expect("micro output");
    (
        output.status.code().expect("micro exited, not killed"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
