//! [`BrokerError`]s of the NATS broker.

use micro_core::broker::BrokerError;

pub(super) fn backend(
    broker: &str,
    what: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> BrokerError {
    BrokerError::Backend {
        broker: broker.to_owned(),
        message: format!("{what}: {error}"),
        source: Some(Box::new(error)),
    }
}

pub(super) fn backend_boxed(broker: &str, what: &str, error: async_nats::Error) -> BrokerError {
    BrokerError::Backend {
        broker: broker.to_owned(),
        message: format!("{what}: {error}"),
        source: Some(error),
    }
}

pub(super) fn backend_msg(broker: &str, message: &str) -> BrokerError {
    BrokerError::Backend {
        broker: broker.to_owned(),
        message: message.to_owned(),
        source: None,
    }
}
