//! The runner against real processes (`/bin/sh`, `/bin/sleep`).

use std::panic::AssertUnwindSafe;

use super::*;

/// Whether a process `pid` exists (a zombie counts: it has not been reaped).
fn exists(pid: Pid) -> bool {
    nix::sys::signal::kill(pid, None).is_ok()
}

fn sh(script: &str) -> ProcBuilder {
    Proc::builder("/bin/sh").args(["-c", script])
}

#[tokio::test]
async fn a_piped_child_is_ready_by_its_line_and_reaped_on_drop() {
    let mut proc = Proc::spawn(
        Path::new("/bin/sh"),
        &[
            "-c",
            "echo starting; echo oops >&2; echo \"ready addr=127.0.0.1:9 node=$NODE\"; exec sleep 1000",
        ],
        &[("NODE", "n-1")],
    );
    let ready = proc.ready().await;
    assert_eq!(
        ready,
        Ready {
            addr: "127.0.0.1:9".into(),
            node: "n-1".into()
        }
    );
    assert!(
        proc.output().contains("stdout: starting"),
        "{}",
        proc.output()
    );
    let pid = proc.pid();
    assert!(exists(pid));
    drop(proc);
    assert!(!exists(pid), "the child outlived its Proc");
}

#[tokio::test]
async fn a_child_is_killed_and_reaped_while_a_test_unwinds() {
    let mut pid = None;
    let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let proc = Proc::builder("/bin/sleep").args(["1000"]).spawn();
        pid = Some(proc.pid());
        panic!("the test fails while its child runs");
    }));
    assert!(unwound.is_err());
    let pid = pid.expect("the child started");
    assert!(!exists(pid), "the child outlived the panic");
}

#[tokio::test]
async fn terminate_waits_for_a_graceful_exit() {
    let mut proc = sh("trap 'exit 0' TERM; echo up; while :; do sleep 0.01; done").spawn();
    assert_eq!(proc.next_line(READY_TIMEOUT).await, "up");
    proc.terminate(READY_TIMEOUT).await;
    assert!(!proc.is_running());
    assert!(
        proc.wait(READY_TIMEOUT).await.success(),
        "wait repeats the exit"
    );
}

#[tokio::test]
async fn a_port_taken_is_told_apart_from_other_failures() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = sh("echo 'listen tcp 127.0.0.1:1: bind: address already in use'; exit 1")
        .name("taken")
        .log_file(dir.path().join("taken.log"))
        .spawn();
    let err = taken.wait_ready("healthy", || async { false }).await;
    assert!(matches!(err, Err(StartError::AddrInUse(_))), "{err:?}");

    let mut broken = sh("echo 'no such flag'; exit 2")
        .name("broken")
        .log_file(dir.path().join("broken.log"))
        .spawn();
    match broken.wait_ready("healthy", || async { false }).await {
        Err(StartError::Failed(msg)) => {
            assert!(msg.contains("broken"), "{msg}");
            assert!(msg.contains("no such flag"), "{msg}");
        }
        other => panic!("expected a failed start, got {other:?}"),
    }
}

#[tokio::test]
async fn a_restart_runs_the_same_command_and_keeps_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let mut proc = sh("echo run; touch \"$MARKER\"; exec sleep 1000")
        .env("MARKER", &marker)
        .log_file(dir.path().join("engine.log"))
        .spawn();
    marked(&mut proc, &marker).await.unwrap();
    let first = proc.pid();
    proc.stop().await;
    assert!(!proc.is_running());
    assert!(!exists(first));

    std::fs::remove_file(&marker).unwrap();
    proc.respawn();
    marked(&mut proc, &marker).await.unwrap();
    assert_ne!(proc.pid(), first);
    assert_eq!(proc.tail(), "run\nrun\n", "both runs in the log");
    proc.kill().await;
    assert!(!proc.is_running());
    assert!(
        !proc.wait(READY_TIMEOUT).await.success(),
        "killed, not exited"
    );
}

/// Waits until the run has created `marker`.
async fn marked(proc: &mut Proc, marker: &Path) -> Result<(), StartError> {
    proc.wait_ready("marked", || async { marker.exists() })
        .await
}

#[tokio::test]
async fn pause_stops_every_thread_until_resume() {
    let mut proc = Proc::builder("/bin/sleep").args(["1000"]).spawn();
    proc.pause();
    assert!(proc.is_paused());
    assert!(all_threads_stopped(proc.pid()));
    proc.resume();
    assert!(!proc.is_paused());
    proc.stop().await;
    assert!(!proc.is_paused(), "a stopped process is not paused");
}

#[tokio::test]
async fn stdin_lines_reach_the_child_and_stdout_can_be_handed_over() {
    let mut proc = sh("read word; echo \"got $word\"; exec sleep 1000")
        .stdin_piped()
        .spawn();
    proc.write_line("go").await;
    let mut stdout = proc.take_stdout().expect("piped stdout");
    let line = tokio::time::timeout(READY_TIMEOUT, stdout.next_line())
        .await
        .expect("a line in time")
        .unwrap();
    assert_eq!(line.as_deref(), Some("got go"));
    assert!(proc.take_stdout().is_none(), "handed over once");
}
