//! The greeter fixture: examples/greeter's API (`greeter.v1`) with what tests need on top.
//! The `greeter-fixture` binary serves [`FixtureGreeter`] as a process; in-process tests
//! (the workspace's tests/support) serve it directly and call it through [`pb`].
//!
//! examples/greeter stays the short teaching example; behaviour that exists for tests lives
//! here only:
//! - `delay_ms` on `SayHello`: simulated work, so a test sees calls in flight (a shutdown
//!   that drains them, a deadline that cuts them);
//! - `interval_ms` on `StreamHellos`: greetings arrive one by one;
//! - the name `stall` on `StreamHellos`: the greetings, then silence, a stream that never
//!   ends by itself;
//! - the caller's `x-request-id` echoed on the `SayHello` reply (metadata passing through
//!   the gateway);
//! - trailing metadata on OK replies for a name starting with `trailers` (`SayHello`:
//!   `x-greeted` and `x-greeted-bin`, the name; `StreamHellos`: `x-sent`, the greetings
//!   sent, counted as the stream goes), for clients we did not write to read;
//! - [`FixtureGreeter::arrived`]: notified as each `SayHello` call reaches the handler.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::{Stream, StreamExt};
use micro::context::Trailers;
use tokio::sync::Notify;
use tonic::{Request, Response, Status, metadata::MetadataValue};

use pb::{HelloReply, HelloRequest, StreamHellosRequest, greeter_server::Greeter};

/// The generated `greeter.v1` messages, `greeter_client` and `greeter_server`, from the
/// fixture's proto (micro-testkit/proto/greeter/v1/greeter.proto).
#[allow(unreachable_pub, missing_docs, missing_debug_implementations)]
pub mod pb {
    micro::include_proto!("greeter.v1");
}

/// The longest `delay_ms` a `SayHello` call may ask for.
pub const MAX_DELAY_MS: u32 = 60_000;
/// The most greetings a `StreamHellos` call may ask for.
pub const MAX_COUNT: u32 = 100;
/// The longest `interval_ms` a `StreamHellos` call may ask for.
pub const MAX_INTERVAL_MS: u32 = 10_000;
/// The `StreamHellos` name whose stream stalls after its greetings.
pub const STALL: &str = "stall";

/// The fixture's `greeter.v1.Greeter` handler (see the [module docs](self)).
///
/// Cloning is cheap; clones share [`FixtureGreeter::arrived`].
#[derive(Debug, Default, Clone)]
pub struct FixtureGreeter {
    arrived: Arc<Notify>,
}

// === impl FixtureGreeter ===

impl FixtureGreeter {
    /// A greeter whose [`FixtureGreeter::arrived`] nobody waits on yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notified as each `SayHello` call reaches the handler (a permit is stored when nobody
    /// waits), so a test can act while the call is in flight.
    pub fn arrived(&self) -> Arc<Notify> {
        Arc::clone(&self.arrived)
    }
}

#[tonic::async_trait]
impl Greeter for FixtureGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        self.arrived.notify_one();
        // The caller's request id comes back on the reply, for tracing a call end to end.
        let request_id = request.metadata().get("x-request-id").cloned();
        let request = request.into_inner();
        let name = checked_name(&request.name)?;
        if request.delay_ms > MAX_DELAY_MS {
            return Err(Status::invalid_argument(format!(
                "delay_ms {} is over the limit of {MAX_DELAY_MS}",
                request.delay_ms
            )));
        }
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(request.delay_ms.into())).await;
        }
        let mut reply = Response::new(HelloReply {
            message: format!("Hello, {name}!"),
        });
        if let Some(id) = request_id {
            reply.metadata_mut().insert("x-request-id", id);
        }
        if name.starts_with("trailers") {
            let text = MetadataValue::try_from(name)
                .map_err(|_| Status::invalid_argument("a trailers name must be ASCII"))?;
            Trailers::of(&mut reply).with(|trailers| {
                trailers.insert("x-greeted", text);
                trailers.insert_bin("x-greeted-bin", MetadataValue::from_bytes(name.as_bytes()));
            });
        }
        Ok(reply)
    }

    type StreamHellosStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

    async fn stream_hellos(
        &self,
        request: Request<StreamHellosRequest>,
    ) -> Result<Response<Self::StreamHellosStream>, Status> {
        let request = request.into_inner();
        let name = checked_name(&request.name)?.to_owned();
        if !(1..=MAX_COUNT).contains(&request.count) {
            return Err(Status::invalid_argument(format!(
                "count {} is out of range: expected 1 to {MAX_COUNT}",
                request.count
            )));
        }
        if request.interval_ms > MAX_INTERVAL_MS {
            return Err(Status::invalid_argument(format!(
                "interval_ms {} is over the limit of {MAX_INTERVAL_MS}",
                request.interval_ms
            )));
        }
        let interval = Duration::from_millis(request.interval_ms.into());
        let stall = name == STALL;
        let trailers = Trailers::new();
        let sent = trailers.clone();
        let counted = name.starts_with("trailers");
        let replies = (1..=request.count).map(move |i| {
            sent.with(|map| map.insert("x-sent", i.into()));
            Ok(HelloReply {
                message: format!("Hello #{i}, {name}!"),
            })
        });
        // Each greeting after the first waits its turn.
        let paced =
            futures_util::stream::iter(replies.enumerate()).then(move |(i, reply)| async move {
                if i > 0 && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
                reply
            });
        let mut reply: Response<Self::StreamHellosStream> = if stall {
            Response::new(Box::pin(paced.chain(futures_util::stream::pending())))
        } else {
            Response::new(Box::pin(paced))
        };
        if counted {
            trailers.attach(&mut reply);
        }
        Ok(reply)
    }
}

fn checked_name(name: &str) -> Result<&str, Status> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Status::invalid_argument("name must not be empty"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tonic::{Code, metadata::MetadataValue};

    use super::*;

    fn hello(name: &str, delay_ms: u32) -> Request<HelloRequest> {
        Request::new(HelloRequest {
            name: name.into(),
            delay_ms,
        })
    }

    fn hellos(name: &str, count: u32, interval_ms: u32) -> Request<StreamHellosRequest> {
        Request::new(StreamHellosRequest {
            name: name.into(),
            count,
            interval_ms,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn say_hello_waits_its_delay_and_echoes_the_request_id() {
        let greeter = FixtureGreeter::new();
        let arrived = greeter.arrived();
        let mut request = hello("ada", 300);
        request
            .metadata_mut()
            .insert("x-request-id", MetadataValue::from_static("r-1"));
        let started = tokio::time::Instant::now();
        let reply = greeter.say_hello(request).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        assert_eq!(reply.metadata().get("x-request-id").unwrap(), "r-1");
        assert_eq!(reply.into_inner().message, "Hello, ada!");
        // The call stored a permit: a waiter that comes later still sees it.
        arrived.notified().await;
    }

    #[tokio::test]
    async fn say_hello_rejects_bad_input() {
        let greeter = FixtureGreeter::new();
        let empty = greeter.say_hello(hello(" ", 0)).await.unwrap_err();
        assert_eq!(empty.code(), Code::InvalidArgument);
        let long = greeter
            .say_hello(hello("ada", MAX_DELAY_MS + 1))
            .await
            .unwrap_err();
        assert_eq!(long.code(), Code::InvalidArgument);
        assert!(long.message().contains("delay_ms"), "{long:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn stream_hellos_paces_and_stalls() {
        let greeter = FixtureGreeter::new();
        let started = tokio::time::Instant::now();
        let replies: Vec<String> = greeter
            .stream_hellos(hellos("s", 3, 100))
            .await
            .unwrap()
            .into_inner()
            .map(|reply| reply.unwrap().message)
            .collect()
            .await;
        assert_eq!(replies, ["Hello #1, s!", "Hello #2, s!", "Hello #3, s!"]);
        assert_eq!(started.elapsed(), Duration::from_millis(200));

        let mut stalled = greeter
            .stream_hellos(hellos(STALL, 1, 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            stalled.next().await.unwrap().unwrap().message,
            "Hello #1, stall!"
        );
        let rest = tokio::time::timeout(Duration::from_secs(3600), stalled.next()).await;
        assert!(rest.is_err(), "a stalled stream never ends by itself");

        for (count, interval_ms) in [(0, 0), (MAX_COUNT + 1, 0), (1, MAX_INTERVAL_MS + 1)] {
            let status = greeter
                .stream_hellos(hellos("s", count, interval_ms))
                .await
                .err()
                .unwrap_or_else(|| panic!("count {count}, interval {interval_ms} accepted"));
            assert_eq!(status.code(), Code::InvalidArgument);
        }
    }
}
