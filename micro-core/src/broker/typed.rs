//! Typed helpers: protobuf messages in and out of [`Message`] bodies.

use super::{Broker, BrokerError, Delivery, Message};

/// The header saying how the body is encoded.
pub const HEADER_CONTENT_TYPE: &str = "content-type";
/// The header holding the full protobuf name of the body's message.
pub const HEADER_TYPE: &str = "micro-type";
/// The header holding a message id, used by durable brokers to drop duplicates.
pub const HEADER_ID: &str = "micro-id";
/// The content type of a protobuf-encoded body.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/protobuf";

/// Encodes `message` and publishes it to `topic`, with the headers
/// `content-type: application/protobuf` and `micro-type: <full proto name>`.
///
/// # Examples
///
/// ```no_run
/// # async fn demo(broker: micro_core::broker::SharedBroker) -> Result<(), micro_core::broker::BrokerError> {
/// use micro_core::broker::publish_proto;
///
/// // Any prost message with a `prost::Name` (micro-codegen derives it).
/// let event = prost_types::Timestamp { seconds: 1, nanos: 0 };
/// publish_proto(&*broker, "clock.ticked", &event).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`Broker::publish`].
pub async fn publish_proto<T>(
    broker: &dyn Broker,
    topic: &str,
    message: &T,
) -> Result<(), BrokerError>
where
    T: prost::Message + prost::Name,
{
    broker.publish(topic, Message::from_proto(message)).await
}

// === impl Message ===

impl Message {
    /// A message whose body is `message` encoded, with the headers
    /// `content-type: application/protobuf` and `micro-type: <full proto name>`.
    pub fn from_proto<T: prost::Message + prost::Name>(message: &T) -> Self {
        let mut out = Self {
            body: message.encode_to_vec().into(),
            ..Self::default()
        };
        out.headers.insert(
            HEADER_CONTENT_TYPE.to_owned(),
            CONTENT_TYPE_PROTOBUF.to_owned(),
        );
        out.headers.insert(HEADER_TYPE.to_owned(), T::full_name());
        out
    }
}

// === impl Delivery ===

impl Delivery {
    /// Decodes the body as the protobuf message `T`.
    ///
    /// A body without a `content-type` header is decoded as protobuf too (non-micro
    /// publishers may not set it).
    ///
    /// # Errors
    /// [`BrokerError::Decode`] when `content-type` names another encoding or the body is not
    /// a valid `T`.
    pub fn decode<T: prost::Message + Default>(&self) -> Result<T, BrokerError> {
        let error = |reason: String| BrokerError::Decode {
            topic: self.topic.to_string(),
            expected: std::any::type_name::<T>(),
            reason,
        };
        if let Some(content_type) = self.message.headers.get(HEADER_CONTENT_TYPE)
            && content_type != CONTENT_TYPE_PROTOBUF
        {
            return Err(error(format!(
                "content-type is {content_type:?}, not {CONTENT_TYPE_PROTOBUF:?}"
            )));
        }
        T::decode(self.message.body.clone()).map_err(|err| error(err.to_string()))
    }
}
