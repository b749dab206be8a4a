//! One call: the order of nodes, attempts, transparent and status-based retries, hedging.

use std::{sync::Arc, time::Duration};

use futures_util::{StreamExt, stream::FuturesUnordered};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;
use tonic::{Code, Status, body::Body};

use super::{
    CallOptions, NodeInfo,
    channel::{NodeSet, Shared},
    deadline,
    node::{ClientNode, set_origin},
    resolve::Resolver,
    retry::{Decision, Hedge, Outcome, ReplayableRequest, buffer},
};
use crate::selector::{CallInfo, Candidates, NodeFilter, Picks};

/// The request header that carries a call's consistent-hashing key when no
/// [`CallOptions::key`] is set.
pub const KEY_HEADER: &str = "x-micro-key";
/// [`KEY_HEADER`] as a header name: looked up without parsing the name on every call.
const KEY_HEADER_NAME: http::HeaderName = http::HeaderName::from_static(KEY_HEADER);

/// What one attempt on one node came to.
enum Attempt {
    /// Response headers arrived after the given time; `outcome` says whether they carry a
    /// retryable status.
    Answered(Response<Incoming>, Outcome, Duration),
    /// The request never reached the node; it is handed back when it was not consumed.
    NotSent(Option<Request<Body>>, String),
    /// The request was sent and the connection or stream failed: the node may have run it.
    Failed(String),
}

/// The nodes of one call in order: eligible nodes as the selector ordered them, then, in
/// panic mode or when every eligible node failed, the ejected and not-serving ones.
struct NodeOrder<'a> {
    set: &'a NodeSet,
    picks: Picks,
    filter: Option<&'a NodeFilter>,
    deferred: Vec<usize>,
    deferred_next: usize,
    now: Instant,
}

impl<'a> NodeOrder<'a> {
    fn next(&mut self) -> Option<&'a Arc<ClientNode>> {
        for index in self.picks.by_ref() {
            let Some(node) = self.set.clients.get(index) else {
                continue;
            };
            if self.filter.is_some_and(|filter| !filter.matches(node)) {
                continue;
            }
            if node.is_serving() && !node.outlier().is_ejected(self.now) {
                return Some(node);
            }
            self.deferred.push(index);
        }
        let index = *self.deferred.get(self.deferred_next)?;
        self.deferred_next += 1;
        self.set.clients.get(index)
    }
}

// === impl Shared ===

impl Shared {
    /// Sends `request` within `deadline`, retrying on other nodes as the policy allows.
    pub(super) async fn send(
        self: &Arc<Self>,
        request: Request<Body>,
        options: &CallOptions,
        deadline: Instant,
    ) -> Result<Response<Incoming>, Status> {
        let mut set = self.node_set().await?;
        if set.nodes.is_empty() {
            set = self.catch_up().await?;
        }
        if set.nodes.is_empty() {
            return Err(Status::unavailable(match self.resolver {
                Resolver::Registry => format!(
                    "service {} not found in registry {}",
                    self.service,
                    crate::registry::Registry::name(&self.client.registry)
                ),
                Resolver::Static => format!("service {} was given no addresses", self.service),
            }));
        }
        let core = &self.client;
        // A shared handle on the request's path (no copy): the request itself moves on.
        let path_and_query = request.uri().path_and_query().cloned();
        let path = path_and_query.as_ref().map_or("", |pq| pq.path());
        // Looked up only when a failure makes it matter: the happy path hashes nothing.
        let idempotent = || {
            options
                .idempotent
                .unwrap_or_else(|| set.idempotent.contains(path) || core.idempotent.contains(path))
        };
        let header_key = request
            .headers()
            .get(KEY_HEADER_NAME)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let call = CallInfo {
            path,
            key: options.key.as_deref().or(header_key.as_deref()),
        };
        let selector = options.selector.as_ref().unwrap_or(&self.selector);
        let picks = selector.select(&Candidates::new(&set.nodes, set.generation), &call);
        let filter = options.filter.as_ref().or(core.filter.as_ref());
        let mut order = NodeOrder {
            set: &set,
            picks,
            filter,
            deferred: Vec::new(),
            deferred_next: 0,
            now: Instant::now(),
        };
        let max_attempts = options
            .max_attempts
            .map_or(core.retry.attempts(), u32::from)
            .clamp(1, super::retry::MAX_ATTEMPTS_LIMIT);
        core.budget.deposit();

        let (first, replay) = buffer(request, core.buffer_limit).await.into_first();
        // Idempotent methods hedge unless this call says otherwise; one lookup, and none
        // for a service without hedged methods. A keyed call is not hedged: its key pins
        // it to one node (consistent hashing), and a copy elsewhere would break that.
        let hedge =
            if set.hedges.is_empty() || options.idempotent == Some(false) || call.key.is_some() {
                None
            } else {
                set.hedges.get(path)
            };
        if let (Some(replay), Some(hedge)) = (&replay, hedge) {
            return self
                .hedged(
                    &set,
                    (first, replay),
                    &mut order,
                    hedge,
                    max_attempts,
                    deadline,
                )
                .await;
        }

        let mut request = Some(first);
        let mut attempts = 0u32;
        let mut tried: Vec<String> = Vec::new();
        let mut last: Option<Response<Incoming>> = None;
        while let Some(node) = order.next() {
            let Some(next) = request
                .take()
                .or_else(|| replay.as_ref().map(|r| r.request()))
            else {
                break;
            };
            match self.attempt(&set, node, next, deadline).await {
                Attempt::Answered(response, outcome, _) => {
                    attempts += 1;
                    let retry = outcome != Outcome::Success
                        && core.retry.decide(outcome, idempotent()) == Decision::Retry
                        && replay.is_some()
                        && self.back_off(attempts, max_attempts, deadline).await;
                    if !retry {
                        return Ok(response);
                    }
                    last = Some(response);
                }
                Attempt::NotSent(returned, reason) => {
                    // Transparent: no attempt spent, no budget, no backoff.
                    tried.push(format!("{} ({reason})", node.address()));
                    request = returned;
                    if request.is_none() && replay.is_none() {
                        return Err(self.no_node_answered(&tried));
                    }
                }
                Attempt::Failed(reason) => {
                    attempts += 1;
                    tried.push(format!("{} ({reason})", node.address()));
                    let retry = core.retry.decide(Outcome::SendFailed, idempotent())
                        == Decision::Retry
                        && replay.is_some()
                        && self.back_off(attempts, max_attempts, deadline).await;
                    if !retry {
                        return Err(Status::unavailable(format!(
                            "service {}: call to node {} at {} failed: {reason}",
                            self.service,
                            node.id(),
                            node.address()
                        )));
                    }
                }
            }
        }
        match last {
            Some(response) => Ok(response),
            None => Err(self.no_node_answered(&tried)),
        }
    }

    /// Waits out the backoff after `attempts` attempts, if another is allowed, the deadline
    /// leaves time for it and the budget grants it (drawn last, so a retry not made costs
    /// no budget).
    async fn back_off(&self, attempts: u32, max_attempts: u32, deadline: Instant) -> bool {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(wait) = self
            .client
            .retry
            .retry_delay_within(attempts, max_attempts, remaining)
        else {
            return false;
        };
        if !self.client.budget.try_withdraw() {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }

    /// Races copies of the call on different nodes, each started when the previous ones
    /// have not answered within the hedge delay (and the budgets grant it, up to the hedge
    /// policy's copies), or after the retry backoff when they all failed (as retries are:
    /// within `max_attempts` and the retry budget; a copy that never reached its node goes
    /// on at once, for free); the first answer that is not a retryable failure wins and
    /// the others are cancelled (dropped, which resets their streams).
    ///
    /// The first copy runs on its own with one timer beside it: a call answered within
    /// the delay (nearly all of them) allocates nothing more.
    async fn hedged<'a>(
        self: &Arc<Self>,
        set: &'a NodeSet,
        (first, replay): (Request<Body>, &ReplayableRequest),
        order: &mut NodeOrder<'a>,
        hedge: &Hedge,
        max_attempts: u32,
        deadline: Instant,
    ) -> Result<Response<Incoming>, Status> {
        let core = &self.client;
        core.hedge_budget.deposit();
        let max_copies = u32::from(hedge.policy.attempts());
        let launch = |node: &'a Arc<ClientNode>, request: Request<Body>| async move {
            (node, self.attempt(set, node, request, deadline).await)
        };
        let Some(node) = order.next() else {
            return Err(self.no_node_answered(&[]));
        };
        let mut first_copy = std::pin::pin!(launch(node, first));
        let mut first_done = false;
        // Further copies, made on the first hedge.
        let mut more: Option<FuturesUnordered<_>> = None;
        let mut timer = std::pin::pin!(tokio::time::sleep(hedge.delay()));
        let mut timer_armed = true;
        // Copies running now, and attempts made (a copy that never reached its node is
        // not one).
        let mut in_flight = 1u32;
        let mut attempts = 1u32;
        let mut tried = Vec::new();
        let mut last = None;
        loop {
            let more_running = more.as_ref().is_some_and(|more| !more.is_empty());
            let (node, attempt) = tokio::select! {
                biased;
                done = &mut first_copy, if !first_done => {
                    first_done = true;
                    done
                }
                Some(done) = next_of(&mut more), if more_running => done,
                () = &mut timer, if timer_armed
                    && in_flight < max_copies
                    && attempts < max_attempts => {
                    // No answer within the delay: one more copy, if the budgets allow;
                    // if they do not yet, ask again after another delay (they refill as
                    // calls are made), while the copies out keep running.
                    let granted = core.hedge_budget.try_withdraw() && core.budget.try_withdraw();
                    match granted.then(|| order.next()) {
                        Some(Some(node)) => {
                            in_flight += 1;
                            attempts += 1;
                            more.get_or_insert_with(FuturesUnordered::new)
                                .push(launch(node, replay.request()));
                        }
                        // No node left to send a copy to.
                        Some(None) => {
                            timer_armed = false;
                            continue;
                        }
                        None => {}
                    }
                    timer.as_mut().reset(Instant::now() + hedge.delay());
                    continue;
                }
                else => break,
            };
            in_flight -= 1;
            let free_retry = match attempt {
                Attempt::Answered(response, outcome, latency) => {
                    if outcome == Outcome::Success {
                        hedge.observe(latency);
                    }
                    if core.retry.decide(outcome, true) != Decision::Retry {
                        return Ok(response);
                    }
                    last = Some(response);
                    false
                }
                Attempt::NotSent(_, reason) => {
                    tried.push(format!("{} ({reason})", node.address()));
                    attempts -= 1;
                    true
                }
                Attempt::Failed(reason) => {
                    tried.push(format!("{} ({reason})", node.address()));
                    false
                }
            };
            if in_flight > 0 {
                // Others still run (one may hang): a replacement goes out now, as a hedge.
                timer.as_mut().reset(Instant::now());
                continue;
            }
            // Every copy failed: the next is a retry (a copy that never reached its node
            // goes on at once and costs no attempt, backoff or budget).
            let allowed = if free_retry {
                Instant::now() < deadline
            } else {
                self.back_off(attempts, max_attempts, deadline).await
            };
            if let Some(node) = order.next().filter(|_| allowed) {
                in_flight += 1;
                attempts += 1;
                more.get_or_insert_with(FuturesUnordered::new)
                    .push(launch(node, replay.request()));
                timer.as_mut().reset(Instant::now() + hedge.delay());
                timer_armed = true;
            }
        }
        match last {
            Some(response) => Ok(response),
            None => Err(self.no_node_answered(&tried)),
        }
    }

    /// Sends `request` to `node` once, keeping its load, health and outlier state.
    async fn attempt(
        &self,
        set: &NodeSet,
        node: &Arc<ClientNode>,
        mut request: Request<Body>,
        deadline: Instant,
    ) -> Attempt {
        let core = &self.client;
        let mut sender = match node
            .sender(
                &core.connector,
                core.tls.as_ref(),
                &core.keepalive,
                &core.outlier,
            )
            .await
        {
            Ok(sender) => sender,
            Err(err) => {
                let now = Instant::now();
                if err.is_refused() {
                    // Dead, not slow: no probing, so nothing goes to the address again
                    // unless every node is out (panic mode) or it re-registers.
                    node.outlier()
                        .eject_for(now, core.outlier.get_max_ejection());
                } else {
                    node.outlier().eject_now(now, &core.outlier);
                }
                return Attempt::NotSent(Some(request), err.0);
            }
        };
        if let Err(err) = sender.ready().await {
            node.outlier().eject_now(Instant::now(), &core.outlier);
            return Attempt::NotSent(Some(request), err.to_string());
        }
        // Each attempt tells the server the time actually left.
        let started = Instant::now();
        let left = deadline.saturating_duration_since(started);
        request
            .headers_mut()
            .insert(deadline::GRPC_TIMEOUT, deadline::encode(left));
        set_origin(&mut request, node.authority());
        let guard = node.load().guard_at(started);
        match sender.try_send_request(request).await {
            Ok(response) => {
                let mut response = response;
                let outcome = Outcome::of_response(&response);
                let answered = Instant::now();
                guard.answered_at(answered);
                self.record(set, node, outcome);
                response
                    .extensions_mut()
                    .insert(NodeInfo::new(Arc::clone(node.node_arc())));
                Attempt::Answered(
                    response,
                    outcome,
                    answered.saturating_duration_since(started),
                )
            }
            Err(mut err) => {
                let returned = err.take_message();
                let err = err.into_error();
                guard.finish(None);
                let outcome = Outcome::of_send_error(&err, returned.is_some());
                self.record(set, node, outcome);
                // The causes too: a TLS alert from the server ("certificate required")
                // hides under hyper's "connection error".
                let reason = with_causes(&err);
                match outcome {
                    Outcome::NotSent => Attempt::NotSent(returned, reason),
                    _ => Attempt::Failed(reason),
                }
            }
        }
    }

    /// Feeds an attempt's outcome to the node's outlier detection.
    fn record(&self, set: &NodeSet, node: &ClientNode, outcome: Outcome) {
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Status(code) => is_node_failure(code),
            Outcome::NotSent | Outcome::SendFailed => true,
        };
        if !failed {
            node.outlier().record_success();
            return;
        }
        let now = Instant::now();
        let config = &self.client.outlier;
        let ejected = set
            .nodes
            .iter()
            .filter(|node| node.outlier().is_ejected(now))
            .count();
        let may_eject = config.may_eject(ejected, set.nodes.len());
        if let Some(until) = node.outlier().record_failure(now, config, may_eject) {
            tracing::info!(
                service = %self.service,
                node = %node.id(),
                address = %node.address(),
                for_ms = until.saturating_duration_since(now).as_millis() as u64,
                "node ejected after consecutive failures"
            );
        }
    }

    fn no_node_answered(&self, tried: &[String]) -> Status {
        Status::unavailable(format!(
            "service {}: no node answered; tried {}",
            self.service,
            tried.join(", ")
        ))
    }
}

/// The next finished future of `more`; pending while there is none (the caller's `select!`
/// only polls it while some run).
async fn next_of<F: std::future::Future>(
    more: &mut Option<FuturesUnordered<F>>,
) -> Option<F::Output> {
    match more {
        Some(more) => more.next().await,
        None => std::future::pending().await,
    }
}

/// `error: cause: cause's cause`, each distinct part once.
fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Codes that say the node, not the request, is at fault.
fn is_node_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Internal | Code::Unknown | Code::DataLoss
    )
}
