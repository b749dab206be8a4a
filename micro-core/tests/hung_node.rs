//! A node that stops answering: the client hedges idempotent calls around it, finds its
//! silent connection by HTTP/2 PINGs, fails the calls stuck on it and takes it out of the
//! picks until its health service answers. Real gRPC
//! over loopback; the hung node is a listener that accepts connections and never reads
//! from them (what a SIGSTOPped process looks like from outside), the slow one a health
//! service that answers late. Process-level acceptance is in micro-testkit's resilience
//! tests.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use micro_core::{
    Channel, Client, NodeInfo,
    client::{KeepAlive, retry::HedgePolicy, retry::RetryBudget},
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_check_response::ServingStatus,
    health_client::HealthClient,
    health_server::{Health, HealthServer},
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const CHECK: &str = "/grpc.health.v1.Health/Check";
/// Far beyond every wait these tests expect: a call that waits for it failed the test.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections and never reads or writes: a hung process's kernel does as much.
async fn silent_node() -> Result<String, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Ok(address)
}

/// A health service whose Check answers after `delay`, counting the calls it started and
/// those whose caller went away before the answer.
#[derive(Clone, Default)]
struct SlowHealth {
    delay: Duration,
    hang: Arc<std::sync::atomic::AtomicBool>,
    started: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
}

struct CountDrop(Option<Arc<AtomicUsize>>);

impl Drop for CountDrop {
    fn drop(&mut self) {
        if let Some(count) = self.0.take() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tonic::async_trait]
impl Health for SlowHealth {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let mut cancelled = CountDrop(Some(Arc::clone(&self.cancelled)));
        tokio::time::sleep(self.delay).await;
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        cancelled.0 = None;
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("no watch"))
    }
}

async fn serve(health: SlowHealth) -> Result<String, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HealthServer::new(health))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Ok(address)
}

async fn check(channel: &Channel) -> Result<String, Status> {
    let mut request = Request::new(HealthCheckRequest::default());
    request.set_timeout(CALL_TIMEOUT);
    let response = HealthClient::new(channel.clone()).check(request).await?;
    let node = response
        .extensions()
        .get::<NodeInfo>()
        .ok_or_else(|| Status::internal("no NodeInfo on the response"))?;
    Ok(node.id().to_owned())
}

#[tokio::test]
async fn idempotent_calls_hedge_around_a_hung_node() -> TestResult {
    let hung = silent_node().await?;
    let healthy = serve(SlowHealth::default()).await?;
    // No keepalive: hedging alone keeps every call off the hung node's queue.
    let client = Client::builder()
        .keepalive(KeepAlive::disabled())
        .idempotent(CHECK)
        .static_nodes("probe", [hung, healthy])
        .build_static();
    let channel = client.channel("probe");
    for i in 0..50 {
        let node = check(&channel)
            .await
            .map_err(|s| format!("call {i}: {s}"))?;
        assert_eq!(node, "probe-1", "call {i} was answered by the hung node");
    }
    Ok(())
}

#[tokio::test]
async fn the_losing_copy_is_cancelled_and_a_fast_answer_is_never_hedged() -> TestResult {
    let slow = SlowHealth {
        delay: Duration::from_secs(20),
        ..SlowHealth::default()
    };
    let fast = SlowHealth::default();
    let addresses = [serve(slow.clone()).await?, serve(fast.clone()).await?];
    let client = Client::builder()
        .idempotent(CHECK)
        .static_nodes("probe", addresses)
        .build_static();
    let channel = client.channel("probe");
    for i in 0..20 {
        assert_eq!(check(&channel).await?, "probe-1", "call {i}");
    }
    // The slow node got at least one call (an untried node is tried first) and every
    // copy it got was cancelled when the fast node's answer won: none still runs there.
    let started = slow.started.load(Ordering::SeqCst);
    assert!(started >= 1, "the slow node was never tried");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while slow.cancelled.load(Ordering::SeqCst) < started {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {started} copies on the slow node were cancelled",
            slow.cancelled.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Each fast answer came well inside the hedge delay: the fast node ran each call once
    // (20 calls plus the hedges of the slow node's calls), never a copy of its own.
    assert_eq!(fast.started.load(Ordering::SeqCst), 20);
    Ok(())
}

#[tokio::test]
async fn no_hedge_when_turned_off_for_the_client_the_method_or_the_budget() -> TestResult {
    let slow = SlowHealth {
        delay: Duration::from_millis(300),
        ..SlowHealth::default()
    };
    let fast = SlowHealth::default();
    let addresses = [serve(slow.clone()).await?, serve(fast.clone()).await?];
    let off = [
        Client::builder().hedging(false),
        Client::builder().hedge(CHECK, HedgePolicy::disabled()),
        Client::builder().hedge_budget(RetryBudget::new(Duration::from_secs(1), 0, 0.0)),
    ];
    for (case, builder) in off.into_iter().enumerate() {
        let client = builder
            .idempotent(CHECK)
            .static_nodes("probe", addresses.clone())
            .build_static();
        let channel = client.channel("probe");
        // Both nodes untried: the first call goes to one of them, the second (the other
        // now has a sample) to the untried one. Exactly one lands on the slow node, and it
        // waits there: its answer comes from the slow node.
        let answers = [check(&channel).await?, check(&channel).await?];
        assert!(
            answers.contains(&"probe-0".to_owned()),
            "case {case}: the slow node's call was answered elsewhere: {answers:?}"
        );
    }
    assert_eq!(slow.cancelled.load(Ordering::SeqCst), 0);
    assert_eq!(fast.started.load(Ordering::SeqCst), 3);
    Ok(())
}

#[tokio::test]
async fn a_non_idempotent_call_is_never_hedged() -> TestResult {
    let slow = SlowHealth {
        delay: Duration::from_millis(300),
        ..SlowHealth::default()
    };
    let fast = SlowHealth::default();
    let addresses = [serve(slow.clone()).await?, serve(fast.clone()).await?];
    // Check is not declared idempotent here.
    let client = Client::builder()
        .static_nodes("probe", addresses)
        .build_static();
    let channel = client.channel("probe");
    let answers = [check(&channel).await?, check(&channel).await?];
    assert!(answers.contains(&"probe-0".to_owned()), "{answers:?}");
    assert_eq!(slow.started.load(Ordering::SeqCst), 1);
    assert_eq!(fast.started.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test]
async fn a_silent_connection_fails_its_call_and_takes_the_node_out() -> TestResult {
    let hung = silent_node().await?;
    let healthy = serve(SlowHealth::default()).await?;
    // Not idempotent, so not hedged: the call on the hung node waits until the PINGs give
    // up on its connection, then fails as UNAVAILABLE (never sent twice), long before its
    // 30 s deadline; the node leaves the picks until its health service answers (never,
    // here), so every later call goes to the healthy node.
    let keepalive = KeepAlive::default()
        .interval(Duration::from_millis(100))
        .timeout(Duration::from_millis(100));
    let client = Client::builder()
        .keepalive(keepalive)
        .static_nodes("probe", [hung, healthy])
        .build_static();
    let channel = client.channel("probe");
    let mut failures = Vec::new();
    for _ in 0..20 {
        match check(&channel).await {
            Ok(node) => assert_eq!(node, "probe-1"),
            Err(status) => failures.push(status),
        }
    }
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].code(), Code::Unavailable, "{:?}", failures[0]);
    assert!(
        failures[0].message().contains("probe-0")
            && failures[0].message().contains("keep-alive timed out"),
        "{:?}",
        failures[0]
    );
    Ok(())
}
