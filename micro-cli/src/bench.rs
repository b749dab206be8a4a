//! `micro bench`: calls one method many times over dynamic messages (the machinery of
//! `micro call`), from several concurrent callers, and reports throughput, status codes,
//! latency percentiles and a latency histogram.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use micro::api::dynamic::DynamicCodec;
use micro_core::Channel;
use prost_reflect::{DynamicMessage, MethodDescriptor};
use serde_json::json;
use tonic::{Code, Status, client::Grpc};

use crate::tool::{self, ClientArgs, Context, MethodArgs, Output, Prepared, ToolError, outln};

/// Default number of calls when neither `-n` nor `-z` is given.
const DEFAULT_REQUESTS: u64 = 1000;
/// Highest latency the histogram records, in microseconds (10 minutes); slower calls
/// count as this.
const MAX_LATENCY_US: u64 = 600_000_000;
/// Buckets of the printed histogram.
const HISTOGRAM_BUCKETS: u64 = 10;
/// Width of the longest histogram bar, in characters.
const BAR_WIDTH: u64 = 40;

/// Flags of `micro bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    target: MethodArgs,
    /// Concurrent callers, each making one call at a time
    #[arg(short = 'c', long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Calls to make in total [default: 1000 unless -z]
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Call for this long instead of a number of calls: `10s`, `2m`
    #[arg(short = 'z', long, value_name = "DURATION", value_parser = crate::duration::parse, conflicts_with = "requests")]
    duration: Option<Duration>,
    #[command(flatten)]
    client: ClientArgs,
}

/// How `micro bench` works, for `--help`.
pub(crate) const LONG_ABOUT: &str = "\
Calls a method of a service found by name many times with the same JSON request, from -c
concurrent callers, for -n calls in total or for -z DURATION. The schema comes from the
service by gRPC reflection, as for `micro call`; a streaming method's call counts once its
reply stream ends. A progress bar shows on stderr when it is a terminal.

It then prints the calls per second, the calls by status code, the latency (min, p50,
p90, p99, max) and a latency histogram; --output json prints the same as one JSON object.
Exit status 1 when any call failed.";

/// When the callers stop.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Requests(u64),
    Until(Instant),
}

/// What one caller saw.
struct Tally {
    latencies: Histogram<u64>,
    codes: BTreeMap<&'static str, u64>,
    first_error: Option<Status>,
}

/// One prepared call: the method, its path, and the request(s) to send.
#[derive(Clone)]
struct Target {
    method: MethodDescriptor,
    path: http::uri::PathAndQuery,
    requests: Vec<DynamicMessage>,
}

/// `micro bench`.
pub(crate) async fn run(args: BenchArgs) -> Result<(), ToolError> {
    let context = Context::open(&args.client)?;
    let Prepared {
        method,
        path,
        requests,
        grpc,
    } = context.prepare(&args.target).await?;
    let target = Arc::new(Target {
        method,
        path,
        requests,
    });

    let bar = progress(args.requests, args.duration);
    let started = Instant::now();
    let limit = match args.duration {
        Some(duration) => Limit::Until(started + duration),
        None => Limit::Requests(args.requests.unwrap_or(DEFAULT_REQUESTS)),
    };
    let issued = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for _ in 0..args.concurrency {
        let grpc = grpc.clone();
        let target = Arc::clone(&target);
        let issued = Arc::clone(&issued);
        let bar = bar.clone();
        // The caller's context (MICRO_AUTH_TOKEN) goes with each caller task.
        let context = micro_core::context::Context::current().unwrap_or_default();
        callers.push(tokio::spawn(
            context.scope(caller(grpc, target, limit, issued, bar)),
        ));
    }
    let mut total = new_histogram()?;
    let mut codes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut first_error = None;
    for caller in callers {
        let tally = caller
            .await
            .map_err(|err| ToolError::Failed(format!("a caller failed: {err}")))??;
        total
            .add(&tally.latencies)
            .map_err(|err| ToolError::Failed(format!("merging latencies: {err:?}")))?;
        for (code, count) in tally.codes {
            *codes.entry(code).or_default() += count;
        }
        if first_error.is_none() {
            first_error = tally.first_error;
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();

    let calls = total.len();
    let ok = codes.get("OK").copied().unwrap_or(0);
    let failed = calls - ok;
    let rps = if elapsed.is_zero() {
        0.0
    } else {
        calls as f64 / elapsed.as_secs_f64()
    };
    let ms = |us: u64| us as f64 / 1000.0;
    let quantiles = [
        ("min", total.min()),
        ("p50", total.value_at_quantile(0.5)),
        ("p90", total.value_at_quantile(0.9)),
        ("p99", total.value_at_quantile(0.99)),
        ("max", total.max()),
    ];
    let buckets = buckets(&total);
    match args.client.output {
        Output::Json => {
            let latency: serde_json::Map<String, serde_json::Value> = quantiles
                .iter()
                .map(|(name, us)| ((*name).to_owned(), json!(ms(*us))))
                .chain([("mean".to_owned(), json!(total.mean() / 1000.0))])
                .collect();
            let histogram: Vec<_> = buckets
                .iter()
                .map(|(upto, count)| json!({"le_ms": ms(*upto), "count": count}))
                .collect();
            outln!(
                "{}",
                json!({
                    "service": args.target.service,
                    "method": target.method.full_name(),
                    "concurrency": args.concurrency,
                    "calls": calls,
                    "ok": ok,
                    "errors": failed,
                    "codes": codes,
                    "duration_s": elapsed.as_secs_f64(),
                    "rps": rps,
                    "latency_ms": latency,
                    "histogram": histogram,
                })
            );
        }
        Output::Table => {
            outln!(
                "{} {} calls to {} in {:.2} s with {} callers",
                calls,
                target.method.full_name(),
                args.target.service,
                elapsed.as_secs_f64(),
                args.concurrency
            );
            outln!("  {rps:.1} calls/s, {ok} ok, {failed} failed");
            outln!();
            outln!("Status codes:");
            for (code, count) in &codes {
                outln!("  {code:<20} {count}");
            }
            if calls > 0 {
                outln!();
                outln!("Latency:");
                for (name, us) in quantiles {
                    outln!("  {name:<4} {:>10.3} ms", ms(us));
                }
                outln!();
                outln!("Histogram:");
                let most = buckets.iter().map(|(_, count)| *count).max().unwrap_or(1);
                for (upto, count) in &buckets {
                    let width = (count * BAR_WIDTH).div_ceil(most.max(1));
                    outln!(
                        "  ≤{:>10.3} ms  {count:>8}  {}",
                        ms(*upto),
                        "■".repeat(usize::try_from(width).unwrap_or(0))
                    );
                }
            }
        }
    }
    match first_error {
        Some(status) if failed > 0 => Err(ToolError::Failed(format!(
            "{failed} of {calls} calls failed; the first: {}: {}",
            tool::code_name(status.code()),
            status.message()
        ))),
        _ => Ok(()),
    }
}

/// The progress bar: a bar toward `-n`, a spinner for `-z`; hidden when stderr is not a
/// terminal.
fn progress(requests: Option<u64>, duration: Option<Duration>) -> ProgressBar {
    let visible = std::io::stderr().is_terminal();
    if duration.is_some() {
        let bar = if visible {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed} {pos} calls") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        return bar;
    }
    let requests = requests.unwrap_or(DEFAULT_REQUESTS);
    let bar = if visible {
        ProgressBar::new(requests)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} calls {elapsed} (eta {eta})")
    {
        bar.set_style(style);
    }
    bar
}

fn new_histogram() -> Result<Histogram<u64>, ToolError> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|err| ToolError::Failed(format!("latency histogram: {err:?}")))
}

/// One caller: calls until the limit, one call at a time.
async fn caller(
    mut grpc: Grpc<Channel>,
    target: Arc<Target>,
    limit: Limit,
    issued: Arc<AtomicU64>,
    bar: ProgressBar,
) -> Result<Tally, ToolError> {
    let mut tally = Tally {
        latencies: new_histogram()?,
        codes: BTreeMap::new(),
        first_error: None,
    };
    loop {
        match limit {
            Limit::Requests(total) => {
                if issued.fetch_add(1, Ordering::Relaxed) >= total {
                    break;
                }
            }
            Limit::Until(deadline) => {
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
        let started = Instant::now();
        let result = call(&mut grpc, &target).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(MAX_LATENCY_US);
        tally
            .latencies
            .saturating_record(micros.clamp(1, MAX_LATENCY_US));
        let code = match result {
            Ok(()) => Code::Ok,
            Err(status) => {
                let code = status.code();
                if tally.first_error.is_none() {
                    tally.first_error = Some(status);
                }
                code
            }
        };
        *tally.codes.entry(tool::code_name(code)).or_default() += 1;
        bar.inc(1);
    }
    Ok(tally)
}

/// One call of any kind; streamed replies are read to the end.
async fn call(grpc: &mut Grpc<Channel>, target: &Target) -> Result<(), Status> {
    grpc.ready()
        .await
        .map_err(|err| Status::unavailable(err.to_string()))?;
    let codec = DynamicCodec::new(target.method.output());
    let path = target.path.clone();
    let first = || {
        target
            .requests
            .first()
            .cloned()
            .ok_or_else(|| Status::invalid_argument("no request"))
    };
    match (
        target.method.is_client_streaming(),
        target.method.is_server_streaming(),
    ) {
        (false, false) => {
            grpc.unary(tonic::Request::new(first()?), path, codec)
                .await?;
        }
        (false, true) => {
            let mut replies = grpc
                .server_streaming(tonic::Request::new(first()?), path, codec)
                .await?
                .into_inner();
            while let Some(reply) = replies.next().await {
                reply?;
            }
        }
        (true, false) => {
            let requests = futures_util::stream::iter(target.requests.clone());
            grpc.client_streaming(tonic::Request::new(requests), path, codec)
                .await?;
        }
        (true, true) => {
            let requests = futures_util::stream::iter(target.requests.clone());
            let mut replies = grpc
                .streaming(tonic::Request::new(requests), path, codec)
                .await?
                .into_inner();
            while let Some(reply) = replies.next().await {
                reply?;
            }
        }
    }
    Ok(())
}

/// The recorded latencies in equal-width buckets from min to max: (upper bound, count).
fn buckets(latencies: &Histogram<u64>) -> Vec<(u64, u64)> {
    if latencies.is_empty() {
        return Vec::new();
    }
    let (min, max) = (latencies.min(), latencies.max());
    let width = (max - min).div_ceil(HISTOGRAM_BUCKETS).max(1);
    let mut buckets: Vec<(u64, u64)> = (1..=HISTOGRAM_BUCKETS)
        .map(|i| (min + width * i, 0))
        .take_while(|(upto, _)| *upto < max + width)
        .collect();
    for value in latencies.iter_recorded() {
        let index =
            (value.value_iterated_to().saturating_sub(min) / width).min(buckets.len() as u64 - 1);
        if let Some(bucket) = buckets.get_mut(usize::try_from(index).unwrap_or(0)) {
            bucket.1 += value.count_at_value();
        }
    }
    buckets
}
