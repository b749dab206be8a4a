//! The `micro` binary's arguments, fuzzed: a few hundred random and malformed invocations of
//! every command (huge, negative, fractional, unitless and non-UTF-8 values, stray flags,
//! missing and extra arguments) must each end in a clear exit code, never a panic (exit 101,
//! "panicked" on stderr), a crash by signal or a hang.
//!
//! Reproducible: the cases come from a seeded RNG (`MICRO_FUZZ_SEED` picks another seed,
//! `MICRO_FUZZ_CASES` another count). Everything they could reach is private and fails fast:
//! an empty registry in a temporary directory (so client commands find no service, exit 3),
//! stores and data under that directory, servers on `127.0.0.1:0`, each process killed after
//! its time limit (a server as soon as it prints `ready`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::{
    collections::BTreeMap, ffi::OsString, os::unix::ffi::OsStringExt, path::Path, process::Stdio,
    sync::Arc, time::Duration,
};

use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::Command,
    sync::Semaphore,
};

const DEFAULT_SEED: u64 = 0x000c_11f0_22ed;
const DEFAULT_CASES: usize = 300;
/// Processes at once: the machine has two cores.
const PARALLEL: usize = 4;
/// How long one invocation may run before it counts as hung: far above the few hundred
/// milliseconds a failing command takes, for a loaded machine.
const HANG_LIMIT: Duration = Duration::from_secs(30);

/// How long a command that runs until stopped (`subscribe --broker memory`, a server that
/// did not print `ready`) is left running before it is stopped, not counted as hung.
const RUN_LIMIT: Duration = Duration::from_secs(5);

/// Commands that run until stopped when their arguments are good: killed at `ready`, or at
/// [`RUN_LIMIT`] without counting as hung.
const LONG_RUNNING: &[&str] = &["server", "api", "subscribe", "watch"];

/// The flags of every client command.
const CLIENT: &[&str] = &["--registry", "--output", "--timeout"];

/// The commands with arguments that make them valid, and the flags each takes a value for.
const COMMANDS: &[(&[&str], &[&str])] = &[
    (&["services"], CLIENT),
    (&["describe", "greeter"], CLIENT),
    (&["call", "greeter", "SayHello", "{\"name\":\"x\"}"], CLIENT),
    (
        &["call", "greeter", "greeter.v1.Greeter.SayHello", "-d", "-"],
        &["-d", "--data"],
    ),
    (&["health", "greeter"], CLIENT),
    (
        &["bench", "greeter", "SayHello", "{}", "-n", "1"],
        &[
            "-c",
            "--concurrency",
            "-n",
            "-z",
            "--duration",
            "--timeout",
            "-d",
        ],
    ),
    (
        &["publish", "orders.created", "{\"id\":7}"],
        &["-H", "--header", "--broker", "--timeout", "-d"],
    ),
    (
        &["subscribe", "orders.created", "--count", "1"],
        &["--queue", "-n", "--count", "--broker", "--timeout"],
    ),
    (
        &["kv", "get", "greeting"],
        &["--store", "--database", "--table", "--timeout", "--output"],
    ),
    (
        &["kv", "put", "greeting", "hello", "--ttl", "1h"],
        &[
            "--ttl",
            "--store",
            "--database",
            "--table",
            "--timeout",
            "-d",
        ],
    ),
    (
        &["kv", "put", "greeting", "hello", "--store", "memory"],
        &["--ttl", "--timeout", "--output"],
    ),
    (&["kv", "delete", "greeting"], &["--store", "--timeout"]),
    (
        &["kv", "list", "--prefix", "gr", "--limit", "10"],
        &["--prefix", "--limit", "--store", "--timeout"],
    ),
    (
        &["kv", "list", "--store", "memory"],
        &["--prefix", "--limit", "--database", "--table"],
    ),
    (
        &["config", "get", "db.pool"],
        &["--env", "--timeout", "--output"],
    ),
    (
        &["config", "set", "db.pool", "20", "--env", "prod"],
        &["--env", "-d", "--timeout"],
    ),
    (&["config", "delete", "db.pool"], &["--env", "--timeout"]),
    (&["config", "watch", "db.pool"], &["--env", "--timeout"]),
    (
        &["auth", "token", "--id", "admin", "--secret", "s"],
        &["--id", "--secret", "--scope", "--timeout"],
    ),
    (
        &["auth", "inspect", "--token", "t"],
        &["--token", "--timeout"],
    ),
    (&["auth", "accounts", "list"], CLIENT),
    (
        &[
            "auth",
            "accounts",
            "create",
            "billing",
            "--scope",
            "orders.read",
        ],
        &["--type", "--scope", "--meta"],
    ),
    (&["auth", "rules", "list"], CLIENT),
    (
        &["auth", "rules", "create", "r1", "--priority", "5"],
        &["--priority", "--scope", "--type", "--name", "--endpoint"],
    ),
    (&["auth", "keys", "rotate"], CLIENT),
    (&["completion", "bash"], &[]),
    (&["new", "orders"], &["--dir", "--micro-path"]),
    (
        &["server", "--address", "127.0.0.1:0", "--api-address", "off"],
        &[
            "--store",
            "--registry",
            "--sync",
            "--broker",
            "--auth-store",
            "--api-address",
        ],
    ),
    (
        &["api", "--address", "127.0.0.1:0"],
        &[
            "--timeout",
            "--max-body",
            "--max-header-size",
            "--header-read-timeout",
            "--body-read-timeout",
            "--cors-origin",
            "--header",
            "--broker",
            "--auth",
        ],
    ),
];

/// Flags that take a value somewhere: on the wrong command, a usage error worth trying too.
const FLAGS: &[&str] = &[
    "--timeout",
    "--ttl",
    "-z",
    "--duration",
    "-c",
    "--concurrency",
    "-n",
    "--requests",
    "--count",
    "--limit",
    "--prefix",
    "--output",
    "--registry",
    "--store",
    "--broker",
    "--database",
    "--table",
    "--env",
    "-d",
    "--data",
    "-H",
    "--header",
    "--queue",
    "--priority",
    "--type",
    "--scope",
    "--meta",
    "--header-read-timeout",
    "--body-read-timeout",
    "--max-body",
    "--max-header-size",
    "--address",
    "--api-address",
    "--cors-origin",
    "--auth",
    "--sync",
    "--dir",
    "--micro-path",
];

/// Values known to break naive parsers.
const NASTY: &[&str] = &[
    "",
    " ",
    "0",
    "-0",
    "-1",
    "+1",
    "1",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "9223372036854775807",
    "99999999999999999999999999999999999999999999999999",
    "18446744073709551615s",
    "18446744073709551615ms",
    "18446744073709551615m",
    "18446744073709551615h",
    "99999999999999999999m",
    "876000h",
    "876001h",
    "1h30m",
    "1.5s",
    "0.0000000001s",
    "1e400s",
    "1e308",
    "NaN",
    "nans",
    "inf",
    "-infs",
    "..",
    "1..2s",
    "µs",
    "1µs",
    "١s",
    "4M",
    "18446744073709551615M",
    "999999999999G",
    "-4K",
    "json",
    "table",
    "yaml",
    "{",
    "{}",
    "[]",
    "null",
    "\"",
    "{\"name\": 1e400}",
    "@/nonexistent/file",
    "@",
    "-",
    "--",
    "=",
    "a=b",
    "=b",
    "a=",
    "local://",
    "local:///",
    "memory",
    "service",
    "service://127.0.0.1:1",
    "service://",
    "etcd://127.0.0.1:1",
    "redis://127.0.0.1:1",
    "file://",
    "file:///",
    "mdns://",
    "bogus://x",
    "127.0.0.1:99999",
    "127.0.0.1:-1",
    "[::1]:0",
    "off",
    "unix:",
    "greeter",
    "greeter.v1.Greeter.Nope",
    "/",
    "../../..",
    "%s%n%x",
    "ünïcödé",
    "\u{202e}rtl",
    "a\nb",
    "a\tb",
    "\u{7f}",
];

const UNITS: &[&str] = &[
    "", "s", "ms", "m", "h", "d", "us", "ns", "K", "M", "G", "MiB", "b", ".", "h30m", "s1",
];

const ENV_CLEARED: &[&str] = &[
    "MICRO_STORE",
    "MICRO_SYNC",
    "MICRO_BROKER",
    "MICRO_ENV",
    "MICRO_SERVER_ADDRESS",
    "MICRO_API_ADDRESS",
    "MICRO_API_AUTH",
    "MICRO_API_AUTH_JWKS",
    "MICRO_AUTH_STORE",
    "MICRO_AUTH_ADMIN_SECRET",
    "MICRO_AUTH_TOKEN",
    "MICRO_AUTH_ID",
    "MICRO_AUTH_SECRET",
    "MICRO_TLS_CERT",
    "MICRO_TLS_KEY",
    "MICRO_TLS_CLIENT_CA",
    "MICRO_TLS_CLIENT_AUTH",
    "MICRO_TLS_CA",
    "MICRO_TLS_CLIENT_CERT",
    "MICRO_TLS_CLIENT_KEY",
    "MICRO_TLS_SERVER_NAME",
];

/// A random value: a nasty one, a random number with a random unit, random bytes (maybe not
/// UTF-8), or a long string.
fn value(rng: &mut StdRng, dir: &Path) -> OsString {
    match rng.random_range(0..12) {
        0..=3 => NASTY.choose(rng).unwrap().into(),
        // Plausible: gets past the parser to the code that uses the value.
        10 | 11 => {
            let unit = ["s", "ms", "m", "h", "K", "", "1h30m"].choose(rng).unwrap();
            format!("{}{unit}", rng.random_range(1..2_000u32)).into()
        }
        4..=6 => {
            let number: String = match rng.random_range(0..4) {
                0 => rng.random::<u64>().to_string(),
                1 => rng.random::<u128>().to_string(),
                2 => format!("{}.{}", rng.random::<u32>(), rng.random::<u32>()),
                _ => rng.random_range(0..100u32).to_string(),
            };
            format!("{number}{}", UNITS.choose(rng).unwrap()).into()
        }
        7 => {
            // No NUL: the OS cannot pass one in an argument.
            let len = rng.random_range(1..16);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random_range(1..=255u8)).collect();
            OsString::from_vec(bytes)
        }
        8 => "x".repeat(rng.random_range(1_000..20_000)).into(),
        _ => {
            // A private file store: each case its own file.
            let name = format!("file://{}/kv-{}.redb", dir.display(), rng.random::<u32>());
            name.into()
        }
    }
}

/// One invocation: a valid command with a few mutations, mostly to the values of its own
/// flags (so most cases get past clap to the code that uses the values).
fn case(rng: &mut StdRng, dir: &Path) -> Vec<OsString> {
    let (base, own) = COMMANDS.choose(rng).unwrap();
    let mut args: Vec<OsString> = base.iter().map(OsString::from).collect();
    for _ in 0..rng.random_range(1..=2) {
        match rng.random_range(0..10) {
            // One of its own flags with a random value (replaced when already given: clap
            // refuses a flag twice).
            0..=5 if !own.is_empty() => {
                let flag = OsString::from(*own.choose(rng).unwrap());
                let value = value(rng, dir);
                match args.iter().position(|arg| *arg == flag) {
                    Some(at) if at + 1 < args.len() => args[at + 1] = value,
                    _ => args.extend([flag, value]),
                }
            }
            // A positional value replaced.
            6 if args.len() > 1 => {
                let at = rng.random_range(1..args.len());
                args[at] = value(rng, dir);
            }
            // An argument dropped.
            7 if args.len() > 1 => {
                let at = rng.random_range(1..args.len());
                args.remove(at);
            }
            // A stray value or any flag, anywhere.
            _ => {
                let at = rng.random_range(0..=args.len());
                let stray = if rng.random_bool(0.5) {
                    value(rng, dir)
                } else {
                    OsString::from(*FLAGS.choose(rng).unwrap())
                };
                args.insert(at, stray);
            }
        }
    }
    args
}

/// How one invocation ended.
#[derive(Debug)]
enum Outcome {
    Exited(i32),
    /// A long-running command that printed `ready` or ran to the limit: killed by us.
    Stopped,
    Signalled,
    Hung,
}

async fn run(args: &[OsString], dir: &Path) -> (Outcome, String) {
    let long_running = args
        .iter()
        .any(|arg| LONG_RUNNING.iter().any(|name| arg == name));
    let mut command = Command::new(support::server::micro_bin());
    command
        .args(args)
        .current_dir(dir)
        .env(
            "MICRO_REGISTRY",
            format!("local://{}/registry", dir.display()),
        )
        .env("MICRO_DATA_DIR", dir.join("data"))
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("xdg"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in ENV_CLEARED {
        command.env_remove(name);
    }
    // A case that drops `--address` must not fall back to the fixed ports 7700 and 8080.
    command
        .env("MICRO_SERVER_ADDRESS", "127.0.0.1:0")
        .env("MICRO_API_ADDRESS", "127.0.0.1:0");
    let mut child = command.spawn().expect("start micro");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let watch_stdout = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("ready ")
                && let Some(ready) = ready.take()
            {
                let _ = ready.send(());
            }
        }
    });
    let read_stderr = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut text).await;
        // Drain the rest so the child never blocks on a full pipe.
        let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
        String::from_utf8_lossy(&text).into_owned()
    });
    let ready = async {
        if ready_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let outcome = tokio::select! {
        status = child.wait() => {
            let status = status.expect("wait for micro");
            status.code().map_or(Outcome::Signalled, Outcome::Exited)
        }
        () = ready => {
            child.kill().await.expect("kill micro");
            Outcome::Stopped
        }
        () = tokio::time::sleep(if long_running { RUN_LIMIT } else { HANG_LIMIT }) => {
            child.kill().await.expect("kill micro");
            if long_running { Outcome::Stopped } else { Outcome::Hung }
        }
    };
    let _ = watch_stdout.await;
    let stderr = read_stderr.await.unwrap_or_default();
    (outcome, stderr)
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_malformed_arguments_never_panic_or_hang() {
    let seed = env_number("MICRO_FUZZ_SEED", DEFAULT_SEED);
    let cases = env_number("MICRO_FUZZ_CASES", DEFAULT_CASES);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("registry")).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let invocations: Vec<Vec<OsString>> = (0..cases).map(|_| case(&mut rng, dir.path())).collect();

    let limit = Arc::new(Semaphore::new(PARALLEL));
    let dir_path: Arc<Path> = dir.path().into();
    let mut runs = Vec::new();
    for args in invocations {
        let limit = limit.clone();
        let dir_path = dir_path.clone();
        runs.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            let (outcome, stderr) = run(&args, &dir_path).await;
            (args, outcome, stderr)
        }));
    }

    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for run in runs {
        let (args, outcome, stderr) = run.await.unwrap();
        let key = match &outcome {
            // clap's usage errors apart from micro's own.
            Outcome::Exited(2) if stderr.starts_with("error:") => "exit 2 (clap)".to_owned(),
            Outcome::Exited(code) => format!("exit {code}"),
            other => format!("{other:?}"),
        };
        *tally.entry(key).or_default() += 1;
        let bad = matches!(
            outcome,
            Outcome::Exited(101) | Outcome::Signalled | Outcome::Hung
        ) || stderr.contains("panicked");
        if bad {
            let shown: Vec<String> = args
                .iter()
                .map(|arg| {
                    let text = arg.to_string_lossy();
                    if text.len() > 80 {
                        let head: String = text.chars().take(80).collect();
                        format!("{head:?}…({} bytes)", text.len())
                    } else {
                        format!("{text:?}")
                    }
                })
                .collect();
            failures.push(format!(
                "micro {}: {outcome:?}\n{}",
                shown.join(" "),
                stderr.lines().take(12).collect::<Vec<_>>().join("\n")
            ));
        }
    }
    println!("seed {seed:#x}, {cases} invocations: {tally:?}");
    assert!(
        failures.is_empty(),
        "{} of {cases} invocations panicked, crashed or hung (seed {seed:#x}):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    // The cases reached past argument parsing too, not only clap's usage errors.
    assert!(
        tally.keys().any(|key| key != "exit 2 (clap)"),
        "every invocation was a usage error: {tally:?}"
    );
}
