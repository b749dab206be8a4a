//! The publishing side: which nodes a message goes to, and delivering it to them.

use std::{
    collections::{BTreeMap, HashMap},
    sync::atomic::Ordering,
    time::Duration,
};

use futures_util::future::join_all;
use tonic::Code;

use super::{Inner, NAME, service_name};
use crate::lock::lock;
use crate::{
    Channel,
    broker::{BrokerError, Message, proto::DeliverRequest, proto::broker_client::BrokerClient},
    client::TcpConnector,
    registry::{Node, Registry},
};

/// A client of one broker endpoint, over micro's own channel to its fixed address: one
/// lazily opened HTTP/2 connection, deadlines from the request's timeout, tracing and
/// metrics as for any call.
pub(super) type Client = BrokerClient<Channel>;

/// The name endpoints are called by in spans, metrics and errors: an endpoint serves every
/// topic its process subscribes to.
const ENDPOINT_SERVICE: &str = "micro.broker";

/// How long a connection to an endpoint may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Added to the endpoint's wait for room, so its own answer comes before our deadline.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// How one delivery attempt ended.
enum Outcome {
    Delivered,
    /// The subscription was dropped after we read its node: it no longer counts.
    Gone,
    Failed(String),
}

// === impl Inner ===

impl Inner {
    pub(super) async fn subscribers(&self, topic: &str) -> Result<Vec<Node>, BrokerError> {
        let records = self
            .cache
            .get_service(&service_name(topic))
            .await
            .map_err(|err| BrokerError::Backend {
                broker: NAME.to_owned(),
                message: format!(
                    "cannot look up the subscribers of {topic:?} in registry {}",
                    self.registry.name()
                ),
                source: Some(Box::new(err)),
            })?;
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        for node in records.into_iter().flat_map(|r| r.nodes) {
            nodes.insert(node.id.clone(), node);
        }
        Ok(nodes.into_values().collect())
    }

    pub(super) async fn publish(&self, topic: &str, message: Message) -> Result<(), BrokerError> {
        let nodes = self.subscribers(topic).await?;
        if nodes.is_empty() {
            return Ok(());
        }
        // One candidate list per target: a plain subscription alone, or a queue group
        // rotated to start at its round-robin pick.
        let mut targets: Vec<Vec<Node>> = Vec::new();
        let mut groups: BTreeMap<String, Vec<Node>> = BTreeMap::new();
        for node in nodes {
            match node.metadata.get("queue").filter(|q| !q.is_empty()) {
                Some(queue) => groups.entry(queue.clone()).or_default().push(node),
                None => targets.push(vec![node]),
            }
        }
        for mut members in groups.into_values() {
            let start = self.next.fetch_add(1, Ordering::Relaxed) % members.len();
            members.rotate_left(start);
            targets.push(members);
        }

        let headers: HashMap<String, String> = message.headers.into_iter().collect();
        let body = message.body;
        let results = join_all(targets.iter().map(|candidates| {
            let headers = headers.clone();
            let body = body.clone();
            async move {
                let mut failures = Vec::new();
                for node in candidates {
                    let request = DeliverRequest {
                        topic: topic.to_owned(),
                        headers: headers.clone(),
                        body: body.to_vec(),
                        queue: node.metadata.get("queue").cloned().unwrap_or_default(),
                        subscription: node.id.clone(),
                    };
                    match self.deliver(node, request).await {
                        Outcome::Delivered => return Ok(()),
                        Outcome::Gone => {}
                        Outcome::Failed(why) => failures.push(why),
                    }
                }
                if failures.is_empty() {
                    Ok(())
                } else {
                    Err(failures)
                }
            }
        }))
        .await;

        let failures: Vec<String> = results
            .into_iter()
            .filter_map(Result::err)
            .flatten()
            .collect();
        if failures.is_empty() {
            return Ok(());
        }
        Err(BrokerError::Backend {
            broker: NAME.to_owned(),
            message: format!(
                "message to {topic:?} was not accepted by every subscriber: {}",
                failures.join("; ")
            ),
            source: None,
        })
    }

    async fn deliver(&self, node: &Node, request: DeliverRequest) -> Outcome {
        let mut client = match self.client(&node.address) {
            Ok(client) => client,
            Err(why) => {
                return Outcome::Failed(format!(
                    "subscription {} at {}: {why}",
                    node.id, node.address
                ));
            }
        };
        let mut request = tonic::Request::new(request);
        request.set_timeout(self.config.publish_timeout + DEADLINE_SLACK);
        match client.deliver(request).await {
            Ok(_) => Outcome::Delivered,
            Err(status) if status.code() == Code::NotFound => Outcome::Gone,
            Err(status) => {
                if status.code() == Code::Unavailable {
                    // Drop the connection: the endpoint may be gone for good, and a
                    // restarted one is reached by a fresh connection.
                    self.clients_lock().remove(&node.address);
                }
                Outcome::Failed(format!(
                    "subscription {} at {}: {:?}: {}",
                    node.id,
                    node.address,
                    status.code(),
                    status.message()
                ))
            }
        }
    }

    /// The cached client for the endpoint at `address`, connecting lazily.
    fn client(&self, address: &str) -> Result<Client, String> {
        let mut clients = self.clients_lock();
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        if address.starts_with("unix:") {
            return Err("the local broker delivers over TCP only".to_owned());
        }
        http::uri::Authority::try_from(address).map_err(|err| format!("invalid address: {err}"))?;
        // TcpConnector sets TCP_NODELAY.
        let channel = crate::Client::builder()
            .connector(TcpConnector::new().connect_timeout(CONNECT_TIMEOUT))
            .static_nodes(ENDPOINT_SERVICE, [address])
            .build_static()
            .channel(ENDPOINT_SERVICE);
        let client = BrokerClient::new(channel);
        clients.insert(address.to_owned(), client.clone());
        Ok(client)
    }

    fn clients_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Client>> {
        lock(&self.clients)
    }
}
