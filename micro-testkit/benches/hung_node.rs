//! Issue 14's hung-node scenario in release builds: 3 `micro-testsrv` processes, one
//! SIGSTOPped for 15 s under open-loop load, at 200 and 2,000 req/s, for the idempotent
//! Work (hedged) and the non-idempotent Count. Prints the figures BENCHMARKS.md reports:
//! failures, the slowest call, p99 before and during the hang, throughput during the hang,
//! the extra executions hedging cost, duplicates, and whether the node came back.
//!
//! `cargo bench -p micro-testkit --bench hung_node` (`MICRO_BENCH_RATES=200,2000` to choose).

#![allow(clippy::print_stdout)] // a benchmark's report is its output

use micro_testkit::scenario::{self, Method};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let testsrv = env!("CARGO_BIN_EXE_micro-testsrv");
    let rates: Vec<u32> = std::env::var("MICRO_BENCH_RATES")
        .unwrap_or_else(|_| "200,2000".to_owned())
        .split(',')
        .filter_map(|rate| rate.trim().parse().ok())
        .collect();
    for rate in rates {
        for method in [Method::Idempotent, Method::NonIdempotent] {
            let run = scenario::hung_node(testsrv.as_ref(), rate, method).await;
            println!("{rate}/s {method:?}: {}", run.summary());
            if method == Method::NonIdempotent {
                let late = run
                    .report
                    .failures()
                    .iter()
                    .map(|f| f.start.saturating_duration_since(run.stopped))
                    .max()
                    .unwrap_or_default();
                println!(
                    "  {} failed, the last sent {late:?} after the stop",
                    run.report.failed()
                );
            }
        }
    }
}
