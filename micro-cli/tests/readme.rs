//! Every command of the README's `sh` blocks that can run here, run as written (through
//! bash, with `micro` on the PATH) against a real `micro server` and greeter: the gateway
//! curls, the CLI, the platform commands and the auth walk-through. The addresses
//! `127.0.0.1:7700` and `127.0.0.1:8080` become the server's free ports, and the server's data
//! directory is `~/.local/share/micro` of a private HOME, so the README's paths hold too.
//!
//! Skipped, with the reason printed: starting the server (it is the server under test),
//! installing things, grpcurl (not installed here), and the engines' block (needs etcd,
//! Redis and NATS in a feature build).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use support::{Proc, example_bin, server::MicroServer};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

/// How long one command may take (`bench` makes 5,000 calls on a debug build).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Commands that run until stopped: what to wait for before stopping them.
const LONG_RUNNING: &[(&str, &str)] = &[
    ("micro subscribe", "a delivery of the README's publish"),
    ("micro config watch", "the current value"),
];

/// Outputs to check beyond `→` comments: a README line containing the first text must
/// print the second. Each must match a line, so the table cannot drift from the README.
const EXPECTED: &[(&str, &str)] = &[
    ("micro-cli -- kv get hello", "world"),
    ("micro kv put greeting hello --ttl 1h", ""),
    ("micro kv get greeting", "hello"),
    ("micro kv list --prefix gr", "greeting"),
    ("micro call greeter StreamHellos", "Hello #3, x!"),
    ("micro config watch db.pool --env prod", "20"),
    ("micro subscribe orders.created", "\"id\":7"),
    ("http://127.0.0.1:8080/openapi.json", "\"openapi\""),
    ("http://127.0.0.1:8080/oauth/token", "access_token"),
];

/// One command of a README `sh` block.
#[derive(Debug)]
struct Line {
    /// The command as written, continuation lines joined.
    text: String,
    /// The command without its trailing `# comment`.
    command: String,
    /// The `# comment`, if any.
    comment: String,
}

/// The commands of the README's `sh` blocks, in order.
fn readme_lines() -> Vec<Line> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let mut lines = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for raw in readme.lines() {
        if raw.starts_with("```") {
            in_sh = raw.trim() == "```sh";
            continue;
        }
        if !in_sh || raw.trim().is_empty() {
            continue;
        }
        if let Some(head) = raw.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        let text = format!("{pending}{raw}").trim().to_owned();
        pending.clear();
        let (command, comment) = split_comment(&text);
        lines.push(Line {
            text: text.clone(),
            command: command.trim().to_owned(),
            comment: comment.trim().to_owned(),
        });
    }
    lines
}

/// `cmd args  # comment` → (`cmd args`, `comment`), quote-aware like a shell.
fn split_comment(text: &str) -> (&str, &str) {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (at, c) in text.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => {
                return (&text[..at], &text[at + 1..]);
            }
            _ => {}
        }
        previous = c;
    }
    (text, "")
}

/// Why a line cannot run here, if it cannot.
fn skipped(command: &str) -> Option<&'static str> {
    if command.starts_with("cargo run") && command.contains(" -- server") {
        Some("starts the server: the server under test is already running")
    } else if command.starts_with("scripts/") || command.starts_with("apt-get") {
        Some("installs or runs the suite")
    } else if command.starts_with("grpcurl") {
        Some("grpcurl is not installed on the test machines")
    } else {
        None
    }
}

/// A private HOME with `micro` on the PATH, the server, and the greeter.
struct Setup {
    home: tempfile::TempDir,
    bin: PathBuf,
    server: MicroServer,
    _greeter: Proc,
}

impl Setup {
    async fn start() -> Self {
        let home = tempfile::tempdir().unwrap();
        let data_dir = home.path().join(".local/share/micro");
        std::fs::create_dir_all(&data_dir).unwrap();
        let bin = home.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(support::server::micro_bin(), bin.join("micro")).unwrap();
        // `micro call greeter SayHello -d @request.json`
        std::fs::write(home.path().join("request.json"), r#"{"name":"x"}"#).unwrap();

        let server = MicroServer::builder()
            .api()
            .data_dir(&data_dir)
            .start()
            .await;
        let mut greeter = Proc::spawn(
            &example_bin("greeter-server"),
            &[],
            &[("MICRO_REGISTRY", &server.registry_url)],
        );
        greeter.ready().await;
        Self {
            home,
            bin,
            server,
            _greeter: greeter,
        }
    }

    /// The README's command as it runs here: `cargo run … -p micro-cli --` is `micro`, the
    /// README's ports are the server's.
    fn localize(&self, command: &str, secret: &str) -> String {
        let mut command = command.to_owned();
        for cargo in ["cargo run -q -p micro-cli --", "cargo run -p micro-cli --"] {
            command = command.replace(cargo, "micro");
        }
        command
            .replace("127.0.0.1:8080", self.server.api_addr())
            .replace("127.0.0.1:7700", &self.server.addr)
            .replace("<secret>", secret)
    }

    /// `bash -c script` in the private HOME, with `env` set.
    fn bash(&self, script: &str, env: &[(String, String)]) -> Command {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(script)
            .current_dir(self.home.path())
            .env("PATH", path)
            .env("HOME", self.home.path())
            .env_remove("XDG_DATA_HOME")
            .env("MICRO_REGISTRY", &self.server.registry_url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for name in support::server::CLIENT_ENV {
            command.env_remove(name);
        }
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    /// Runs `script` to its end: (exit code, stdout, stderr).
    async fn run(&self, script: &str, env: &[(String, String)]) -> (i32, String, String) {
        let child = self.bash(script, env).spawn().expect("bash");
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{script} did not finish within {COMMAND_TIMEOUT:?}"))
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Runs a command that runs until stopped: its first line of output, once `trigger`
    /// (run after the command said it is ready, when it says so on stderr) has run.
    async fn first_line(
        &self,
        script: &str,
        env: &[(String, String)],
        trigger: Option<&str>,
    ) -> String {
        let mut child = self
            .bash(&format!("exec {script}"), env)
            .spawn()
            .expect("bash");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = tokio::time::timeout(COMMAND_TIMEOUT, async {
            if let Some(trigger) = trigger {
                // `micro subscribe` says on stderr when its subscription is in place.
                loop {
                    let line =
                        stderr.next_line().await.unwrap().unwrap_or_else(|| {
                            panic!("{script} ended before saying it subscribed")
                        });
                    if line.contains("subscribed") {
                        break;
                    }
                }
                let (code, _, err) = self.run(trigger, env).await;
                assert_eq!(code, 0, "{trigger}: {err}");
            }
            stdout.next_line().await.unwrap()
        })
        .await
        .unwrap_or_else(|_| panic!("{script} printed nothing within {COMMAND_TIMEOUT:?}"))
        .unwrap_or_else(|| panic!("{script} ended without output"));
        child.kill().await.unwrap();
        line
    }
}

/// `→ {"message":"Hello, x!"}` in a comment: what the command prints.
fn arrow_expectation(comment: &str) -> Option<&str> {
    comment.split_once('→').map(|(_, want)| want.trim())
}

/// Whether `out` shows `want`: as JSON when both parse, else as text.
fn shows(out: &str, want: &str) -> bool {
    if let Ok(want_json) = serde_json::from_str::<serde_json::Value>(want) {
        return out
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .any(|got| got == want_json);
    }
    out.contains(want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runnable_readme_command_works_as_written() {
    let setup = Setup::start().await;
    let lines = readme_lines();
    assert!(lines.len() > 20, "README sh blocks not found: {lines:?}");

    let mut env: Vec<(String, String)> = Vec::new();
    let mut secret = String::new();
    let mut last_publish: Option<String> = None;
    let mut matched = vec![false; EXPECTED.len()];
    let mut ran = 0;
    for line in &lines {
        if let Some(why) = skipped(&line.command) {
            println!("skipped ({why}): {}", line.text);
            continue;
        }
        let script = setup.localize(&line.command, &secret);
        let out = if let Some(rest) = script.strip_prefix("export ") {
            // `export NAME=$(…)`: evaluate it and keep NAME for the commands after it.
            let name = rest.split('=').next().unwrap().to_owned();
            let (code, out, err) = setup
                .run(&format!("{script} && printf '%s' \"${name}\""), &env)
                .await;
            assert_eq!(code, 0, "{}\nstderr: {err}", line.text);
            assert!(!out.is_empty(), "{} set {name} to nothing", line.text);
            env.push((name, out.clone()));
            out
        } else if let Some((start, _)) = LONG_RUNNING
            .iter()
            .find(|(start, _)| script.starts_with(start))
        {
            let trigger = (*start == "micro subscribe").then(|| {
                last_publish
                    .clone()
                    .expect("a publish before the subscribe")
            });
            setup.first_line(&script, &env, trigger.as_deref()).await
        } else {
            // -s alone hides HTTP errors: fail on them, still printing the body.
            let flags = if script.starts_with("curl ") {
                " --fail-with-body"
            } else {
                ""
            };
            let (code, out, err) = setup.run(&format!("{script}{flags}"), &env).await;
            assert_eq!(code, 0, "{}\nstdout: {out}\nstderr: {err}", line.text);
            out
        };
        ran += 1;
        if script.starts_with("micro publish") {
            last_publish = Some(script.clone());
        }
        if script.starts_with("micro auth accounts create") {
            // `id=billing secret=…`
            secret = out
                .split_whitespace()
                .find_map(|field| field.strip_prefix("secret="))
                .unwrap_or_else(|| panic!("no secret in {out:?}"))
                .to_owned();
        }
        if let Some(want) = arrow_expectation(&line.comment) {
            assert!(
                shows(&out, want),
                "{}\nprinted: {out}\nwanted: {want}",
                line.text
            );
        }
        for (i, (needle, want)) in EXPECTED.iter().enumerate() {
            if line.text.contains(needle) {
                matched[i] = true;
                assert!(
                    out.contains(want),
                    "{}\nprinted: {out}\nwanted: {want}",
                    line.text
                );
            }
        }
        println!("ok: {}", line.text);
    }
    for (i, (needle, _)) in EXPECTED.iter().enumerate() {
        assert!(
            matched[i],
            "no README command contains {needle:?}: update EXPECTED"
        );
    }
    assert!(ran >= 20, "only {ran} README commands ran");
}
