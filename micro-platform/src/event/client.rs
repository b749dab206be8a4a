//! [`EventClient`]: a [`Broker`] over the event service.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use micro_core::{
    Channel, Client,
    broker::{
        AckMode, Broker, BrokerError, Delivery, Message, SharedBroker, SubscribeOptions,
        Subscription, validate_queue, validate_topic,
    },
    client::{CallOptions, RequestExt},
    registry::SharedRegistry,
};
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Request, Status, Streaming};

use super::{MAX_MESSAGE_SIZE, SCHEME, SERVICE_NAME, SUBSCRIBE_TIMEOUT, check_body};
use crate::{
    proto::event::v1::{self as pb, event_client::EventClient as Stub},
    stream::TaskStream,
};

/// First wait before subscribing again after a broken stream; doubles up to
/// [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before subscribing again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Deliveries buffered in the client per subscription before the stream's flow control
/// slows the service (and so the broker) down.
const BUFFER: usize = 64;

/// A [`Broker`] whose topics live in the event service, over a micro [`Channel`].
///
/// `publish` is one unary call; `subscribe` holds one `Subscribe` call per subscription
/// and returns once the service confirmed it (see [the module docs](super)). Queue groups
/// pass through; durable subscriptions and manual acks are [`BrokerError::Unsupported`].
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), micro_core::broker::BrokerError> {
/// use futures_util::StreamExt;
/// use micro_core::broker::{Broker, Message, SubscribeOptions};
/// use micro_platform::event::EventClient;
///
/// let events = EventClient::connect("127.0.0.1:7700")?;
/// let mut orders = events.subscribe("orders.created", SubscribeOptions::default()).await?;
/// events.publish("orders.created", Message { body: "42".into(), ..Message::default() }).await?;
/// let delivery = orders.next().await.expect("a delivery")?;
/// assert_eq!(delivery.message.body.as_ref(), b"42");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EventClient {
    stub: Stub<Channel>,
    name: Arc<str>,
}

impl std::fmt::Debug for EventClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl EventClient {
    /// A client over `channel`, a channel to the event service (usually
    /// `client.channel("micro.event")`).
    pub fn new(channel: Channel) -> Self {
        let name = format!("{SCHEME} ({})", channel.service());
        Self::with_name(channel, name)
    }

    /// A client that finds the event service as [`SERVICE_NAME`] through `client`'s
    /// registry.
    pub fn from_client(client: &Client) -> Self {
        Self::with_name(client.channel(SERVICE_NAME), SCHEME.to_owned())
    }

    /// A client of the event service at `address` (`host:port`), with no registry.
    ///
    /// # Errors
    /// [`BrokerError::Invalid`] when `address` is not `host:port`.
    pub fn connect(address: &str) -> Result<Self, BrokerError> {
        let channel = crate::channel::at_address(SERVICE_NAME, &pb::EVENT_DESCRIPTOR, address)
            .map_err(|reason| BrokerError::Invalid {
                what: "event service address",
                value: address.to_owned(),
                reason,
            })?;
        Ok(Self::with_name(
            channel,
            format!("{SCHEME}://{}", address.trim()),
        ))
    }

    /// A client for a `MICRO_BROKER` value: `service` finds the event service through
    /// `registry`, or the registry named by `MICRO_REGISTRY` when `None`;
    /// `service://host:port` connects to that address.
    ///
    /// # Errors
    /// [`BrokerError::Invalid`] for another URL or a bad address; [`BrokerError::Backend`]
    /// when the registry cannot be opened.
    pub fn from_url(url: &str, registry: Option<SharedRegistry>) -> Result<Self, BrokerError> {
        let url = url.trim();
        if url == SCHEME {
            let client = match registry {
                Some(registry) => Client::new(registry),
                None => Client::from_env().map_err(|error| BrokerError::Backend {
                    broker: SCHEME.to_owned(),
                    message: "cannot open the registry named by MICRO_REGISTRY".to_owned(),
                    source: Some(Box::new(error)),
                })?,
            };
            return Ok(Self::from_client(&client));
        }
        match url.strip_prefix("service://") {
            Some(address) if !address.is_empty() => Self::connect(address),
            _ => Err(BrokerError::Invalid {
                what: "broker",
                value: url.to_owned(),
                reason: "is not `service` or `service://host:port`".to_owned(),
            }),
        }
    }

    fn with_name(channel: Channel, name: String) -> Self {
        Self {
            stub: Stub::new(channel.max_receive_message_size(MAX_MESSAGE_SIZE))
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            name: Arc::from(name),
        }
    }
}

/// Opens `MICRO_BROKER=service` or `service://host:port`; see [`EventClient::from_url`].
pub(crate) fn open(
    url: &str,
    registry: Option<SharedRegistry>,
) -> Result<SharedBroker, BrokerError> {
    Ok(Arc::new(EventClient::from_url(url, registry)?))
}

/// The [`BrokerError`] a status stands for; `broker` names the client, `topic` the topic.
fn error_from_status(status: Status, broker: &str, topic: &str) -> BrokerError {
    match status.code() {
        Code::InvalidArgument => BrokerError::Invalid {
            what: "request",
            value: topic.to_owned(),
            reason: status.message().to_owned(),
        },
        code => BrokerError::Backend {
            broker: broker.to_owned(),
            message: format!("topic {topic:?}: {code:?}: {}", status.message()),
            source: Some(Box::new(status)),
        },
    }
}

/// Whether subscribing again after `status` can help.
fn is_permanent(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument | Code::Unimplemented | Code::FailedPrecondition
    )
}

/// Opens a `Subscribe` call and reads its `subscribed` notice.
async fn open_call(
    mut stub: Stub<Channel>,
    request: pb::SubscribeRequest,
) -> Result<Streaming<pb::SubscribeResponse>, Status> {
    let request =
        Request::new(request).with_call_options(CallOptions::new().timeout(SUBSCRIBE_TIMEOUT));
    let mut responses = stub.subscribe(request).await?.into_inner();
    match responses.message().await? {
        Some(pb::SubscribeResponse {
            response: Some(pb::subscribe_response::Response::Subscribed(_)),
        }) => Ok(responses),
        other => Err(Status::unknown(format!(
            "the service answered {other:?} instead of `subscribed`"
        ))),
    }
}

/// Forwards the deliveries of `responses`, subscribing again whenever the stream breaks,
/// until the subscription is dropped (which aborts this task) or subscribing fails for
/// good.
async fn forward(
    stub: Stub<Channel>,
    request: pb::SubscribeRequest,
    mut responses: Streaming<pb::SubscribeResponse>,
    sender: mpsc::Sender<Result<Delivery, BrokerError>>,
    name: Arc<str>,
) {
    let topic: Arc<str> = Arc::from(request.topic.as_str());
    loop {
        // Deliver until the stream ends or breaks.
        let status = loop {
            match responses.message().await {
                Ok(Some(pb::SubscribeResponse {
                    response: Some(pb::subscribe_response::Response::Delivery(delivery)),
                })) => {
                    let message = Message {
                        headers: delivery.headers.into_iter().collect(),
                        body: delivery.body.into(),
                    };
                    let topic = if *topic == *delivery.topic {
                        Arc::clone(&topic)
                    } else {
                        Arc::from(delivery.topic)
                    };
                    if sender
                        .send(Ok(Delivery::new(topic, message, None)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break Status::unavailable("the service ended the stream"),
                Err(status) => break status,
            }
        };
        tracing::warn!(broker = %name, topic = %topic, %status, "subscription stream broke; subscribing again");
        let error = error_from_status(status, &name, &topic);
        if sender.send(Err(error)).await.is_err() {
            return;
        }
        // Subscribe again, with backoff.
        let mut backoff = MIN_BACKOFF;
        responses = loop {
            tokio::time::sleep(backoff).await;
            match open_call(stub.clone(), request.clone()).await {
                Ok(responses) => {
                    tracing::info!(broker = %name, topic = %topic, "subscribed again");
                    break responses;
                }
                Err(status) if is_permanent(&status) => {
                    tracing::warn!(broker = %name, topic = %topic, %status, "cannot subscribe again; ending the subscription");
                    let _ = sender
                        .send(Err(error_from_status(status, &name, &topic)))
                        .await;
                    return;
                }
                Err(status) => {
                    tracing::debug!(broker = %name, topic = %topic, %status, "subscribing again failed; retrying");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
    }
}

#[async_trait]
impl Broker for EventClient {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), BrokerError> {
        validate_topic(topic)?;
        check_body(message.body.len())?;
        let request = pb::PublishRequest {
            topic: topic.to_owned(),
            headers: message.headers.into_iter().collect(),
            body: message.body.into(),
        };
        self.stub
            .clone()
            .publish(request)
            .await
            .map_err(|status| error_from_status(status, &self.name, topic))?;
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, BrokerError> {
        validate_topic(topic)?;
        if options.durable.is_some() {
            return Err(BrokerError::Unsupported {
                broker: self.name.to_string(),
                feature: "durable subscriptions (the event service delivers at most once; use a durable broker such as NATS JetStream)",
            });
        }
        if options.ack == AckMode::Manual {
            return Err(BrokerError::Unsupported {
                broker: self.name.to_string(),
                feature: "manual acknowledgement (the event service delivers at most once; use a durable broker such as NATS JetStream)",
            });
        }
        if let Some(queue) = &options.queue {
            validate_queue(queue)?;
        }
        let request = pb::SubscribeRequest {
            topic: topic.to_owned(),
            queue: options.queue.unwrap_or_default(),
        };
        let (sender, receiver) = mpsc::channel(BUFFER);
        let (opened, answer) = oneshot::channel();
        let stub = self.stub.clone();
        let name = Arc::clone(&self.name);
        // A task of its own: a caller's handler deadline must not bound the subscription.
        // The stream owns it: if the caller stops waiting, it is aborted and the call reset.
        let task = tokio::spawn(async move {
            match open_call(stub.clone(), request.clone()).await {
                Ok(responses) => {
                    let _ = opened.send(Ok(()));
                    forward(stub, request, responses, sender, name).await;
                }
                Err(status) => {
                    let _ = opened.send(Err(status));
                }
            }
        });
        let stream = TaskStream::new(receiver, task);
        match answer.await {
            Ok(Ok(())) => Ok(Box::pin(stream)),
            Ok(Err(status)) => Err(error_from_status(status, &self.name, topic)),
            Err(_) => Err(BrokerError::Backend {
                broker: self.name.to_string(),
                message: format!("topic {topic:?}: the subscribing task failed"),
                source: None,
            }),
        }
    }
}
