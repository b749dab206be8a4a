//! What the load benchmarks measure: rps, p50/p99 latency and CPU time per call of a
//! closed loop of SayHello calls at a given concurrency.

use std::time::Duration;

use tokio::time::Instant;

use crate::greeter::pb::{HelloRequest, greeter_client::GreeterClient};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Figures {
    pub(crate) rps: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// CPU time of the client and server threads per call: less sensitive than the rate
    /// to other processes competing for the machine's cores.
    pub(crate) cpu_per_call: Duration,
}

/// The threads whose CPU time is counted, as (process id, thread id): the client's (this
/// one) and the server's, which may run in another process.
static THREADS: std::sync::Mutex<[(i32, i32); 2]> = std::sync::Mutex::new([(0, 0); 2]);

/// Counts the CPU time of `threads` from now on.
pub(crate) fn count_threads(threads: [(i32, i32); 2]) {
    *THREADS.lock().unwrap() = threads;
}

/// This thread, as [`THREADS`] names it.
pub(crate) fn this_thread() -> (i32, i32) {
    (
        i32::try_from(std::process::id()).unwrap_or(0),
        nix::unistd::gettid().as_raw(),
    )
}

/// Nanoseconds the given thread has run, from the kernel's schedstat.
fn thread_cpu_ns((pid, tid): (i32, i32)) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|stat| stat.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn threads_cpu_ns() -> u64 {
    let threads = *THREADS.lock().unwrap();
    threads.iter().map(|&t| thread_cpu_ns(t)).sum()
}

pub(crate) async fn measure<T>(
    client: GreeterClient<T>,
    concurrency: usize,
    duration: Duration,
) -> Figures
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    T::Future: Send,
{
    let end = Instant::now() + duration;
    let cpu_before = threads_cpu_ns();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            while Instant::now() < end {
                let started = Instant::now();
                let request = HelloRequest {
                    name: "bench".into(),
                    delay_ms: 0,
                };
                client.say_hello(request).await.expect("call");
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let cpu = threads_cpu_ns().saturating_sub(cpu_before);
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Figures {
        rps: all.len() as f64 / duration.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        cpu_per_call: Duration::from_nanos(cpu / all.len().max(1) as u64),
    }
}

pub(crate) fn average(a: Figures, b: Figures) -> Figures {
    Figures {
        rps: (a.rps + b.rps) / 2.0,
        p50: (a.p50 + b.p50) / 2,
        p99: (a.p99 + b.p99) / 2,
        cpu_per_call: (a.cpu_per_call + b.cpu_per_call) / 2,
    }
}
