//! [`EventService`]: the `micro.event.v1.Event` server over any broker.

use std::{pin::Pin, sync::Arc};

use futures_util::{Stream, StreamExt};
use micro_core::broker::{
    BrokerError, Message, SharedBroker, SubscribeOptions, validate_queue, validate_topic,
};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use super::{MAX_MESSAGE_SIZE, check_body};
use crate::{
    proto::event::v1::{self as pb, event_server::EventServer},
    stream::TaskStream,
};

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// How many deliveries wait for the client per subscription before the service stops
/// taking more from the broker (whose own backpressure then slows the publishers down).
const STREAM_BUFFER: usize = 64;

/// The event service over a broker: add [`EventService::into_server`] to a micro
/// [`Service`](micro_core::Service).
///
/// Requests are checked (topic, queue group, body size) before the broker sees them; each
/// `Subscribe` call holds one broker subscription for as long as it lasts (see [the module
/// docs](super)).
///
/// `Subscribe` streams last until their clients end them, so a server shutting down must
/// end them, or its drain waits for them: call [`close`](Self::close) (on any clone) when
/// the shutdown starts.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), micro_core::ServiceError> {
/// use std::sync::Arc;
/// use micro_core::{Service, broker::MemoryBroker};
/// use micro_platform::event::EventService;
///
/// Service::builder("micro.event")
///     .add_service(EventService::new(Arc::new(MemoryBroker::new())).into_server())
///     .run()
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct EventService {
    backend: SharedBroker,
    closed: Arc<watch::Sender<bool>>,
}

impl EventService {
    /// Serves `backend`.
    pub fn new(backend: SharedBroker) -> Self {
        Self {
            backend,
            closed: Arc::new(watch::Sender::new(false)),
        }
    }

    /// The tonic server.
    pub fn into_server(self) -> EventServer<Self> {
        EventServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The broker served.
    pub fn backend(&self) -> &SharedBroker {
        &self.backend
    }

    /// Ends every `Subscribe` stream (with UNAVAILABLE), now and from now on: for a
    /// shutdown. Publishing still works until the server stops.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    fn closing(&self) -> Result<watch::Receiver<bool>, Status> {
        let closed = self.closed.subscribe();
        if *closed.borrow() {
            return Err(shutting_down());
        }
        Ok(closed)
    }
}

impl std::fmt::Debug for EventService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventService")
            .field("backend", &self.backend.name())
            .finish()
    }
}

fn shutting_down() -> Status {
    Status::unavailable("the event service is shutting down")
}

/// The status a broker error stands for.
fn status(error: &BrokerError) -> Status {
    match error {
        BrokerError::Invalid { .. } => Status::invalid_argument(error.to_string()),
        BrokerError::Unsupported { .. } => Status::unimplemented(error.to_string()),
        _ => Status::unavailable(error.to_string()),
    }
}

#[tonic::async_trait]
impl pb::event_server::Event for EventService {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let pb::PublishRequest {
            topic,
            headers,
            body,
        } = request.into_inner();
        validate_topic(&topic).map_err(|error| status(&error))?;
        check_body(body.len()).map_err(|error| status(&error))?;
        let message = Message {
            headers: headers.into_iter().collect(),
            body: body.into(),
        };
        self.backend
            .publish(&topic, message)
            .await
            .map_err(|error| status(&error))?;
        Ok(Response::new(pb::PublishResponse {}))
    }

    type SubscribeStream = ResponseStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut closed = self.closing()?;
        let pb::SubscribeRequest { topic, queue } = request.into_inner();
        validate_topic(&topic).map_err(|error| status(&error))?;
        let queue = if queue.is_empty() {
            None
        } else {
            validate_queue(&queue).map_err(|error| status(&error))?;
            Some(queue)
        };
        let options = SubscribeOptions {
            queue: queue.clone(),
            ..SubscribeOptions::default()
        };
        let mut subscription = tokio::select! {
            subscribed = self.backend.subscribe(&topic, options) => {
                subscribed.map_err(|error| status(&error))?
            }
            () = crate::stream::closed(&mut closed) => return Err(shutting_down()),
        };
        tracing::debug!(%topic, ?queue, "subscribed");
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        // Room for it: the channel is new.
        let _ = sender.try_send(Ok(pb::SubscribeResponse {
            response: Some(pb::subscribe_response::Response::Subscribed(
                pb::Subscribed {},
            )),
        }));
        let task = tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    item = subscription.next() => item,
                    () = sender.closed() => break,
                    () = crate::stream::closed(&mut closed) => {
                        let _ = sender.send(Err(shutting_down())).await;
                        break;
                    }
                };
                let response = match item {
                    Some(Ok(delivery)) => Ok(pb::SubscribeResponse {
                        response: Some(pb::subscribe_response::Response::Delivery(pb::Delivery {
                            topic: delivery.topic.to_string(),
                            headers: delivery.message.headers.into_iter().collect(),
                            body: delivery.message.body.to_vec(),
                        })),
                    }),
                    Some(Err(error)) => {
                        tracing::warn!(%topic, %error, "the broker's subscription failed; ending the stream");
                        Err(Status::unavailable(error.to_string()))
                    }
                    None => Err(Status::unavailable(format!(
                        "the broker ended the subscription to {topic:?}"
                    ))),
                };
                let end = response.is_err();
                // Waits while the client is slow: the broker's backpressure takes over.
                tokio::select! {
                    sent = sender.send(response) => if sent.is_err() { break },
                    () = crate::stream::closed(&mut closed) => {
                        let _ = sender.try_send(Err(shutting_down()));
                        break;
                    }
                }
                if end {
                    break;
                }
            }
            // Dropping the subscription here unsubscribes.
            tracing::debug!(%topic, ?queue, "unsubscribed");
        });
        Ok(Response::new(Box::pin(TaskStream::new(receiver, task))))
    }
}
