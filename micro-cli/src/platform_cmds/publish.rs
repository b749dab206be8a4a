//! `micro publish` and `micro subscribe`: messages through the event service or any
//! broker.

use base64::{Engine as _, prelude::BASE64_STANDARD};
use bytes::Bytes;
use futures_util::StreamExt;
use micro_core::broker::{self, BrokerError, Message, SharedBroker, SubscribeOptions};
use micro_platform::event::EventClient;
use serde_json::json;
use tonic::{Code, Status};

use super::SERVICE_URL;
use crate::tool::{self, ClientArgs, Context, Output, ToolError, outln};

/// Flags of `micro publish`.
#[derive(Debug, clap::Args)]
pub(crate) struct PublishArgs {
    /// The topic: dot-separated tokens of `A-Z a-z 0-9 _ -`
    topic: String,
    /// The message as JSON
    body: Option<String>,
    /// The message from elsewhere: `@file` or `-` (stdin); instead of BODY
    #[arg(
        short = 'd',
        long = "data",
        value_name = "JSON|@FILE|-",
        conflicts_with = "body"
    )]
    data: Option<String>,
    /// A message header `NAME=VALUE` (repeatable); `content-type` is `application/json`
    /// unless set here
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Broker to publish through: `service` (the event service `micro.event`, found
    /// through the registry), `service://host:port`, `local`, or another broker URL
    #[arg(
        long,
        env = "MICRO_BROKER",
        value_name = "URL",
        default_value = SERVICE_URL
    )]
    broker: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// `micro publish`.
pub(crate) async fn publish(args: PublishArgs) -> Result<(), ToolError> {
    if args.body.is_none() && args.data.is_none() {
        return Err(ToolError::Usage(
            "no message: give it as BODY, -d @file or -d - (stdin)".into(),
        ));
    }
    let text = tool::read_body(args.body.as_deref(), args.data.as_deref())?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|err| ToolError::Usage(format!("the message is not valid JSON: {err}")))?;
    let body = serde_json::to_vec(&value)
        .map_err(|err| ToolError::Failed(format!("cannot encode the message: {err}")))?;
    broker::validate_topic(&args.topic).map_err(|err| ToolError::Usage(err.to_string()))?;
    let mut message = Message {
        headers: Default::default(),
        body: Bytes::from(body),
    };
    message.headers.insert(
        broker::HEADER_CONTENT_TYPE.to_owned(),
        "application/json".to_owned(),
    );
    for header in &args.headers {
        let Some((name, value)) = header.split_once('=') else {
            return Err(ToolError::Usage(format!(
                "--header {header:?} is not NAME=VALUE"
            )));
        };
        message
            .headers
            .insert(name.trim().to_ascii_lowercase(), value.to_owned());
    }

    let context = Context::open(&args.client)?;
    let broker = open_broker(&context, &args.broker).await?;
    match tokio::time::timeout(args.client.timeout, broker.publish(&args.topic, message)).await {
        Err(_) => Err(ToolError::NotFound(format!(
            "broker {} did not answer within {:?}",
            broker.name(),
            args.client.timeout
        ))),
        Ok(Err(err)) => Err(broker_error(err)),
        Ok(Ok(())) => {
            if args.client.output == Output::Json {
                outln!("{}", json!({"topic": args.topic, "published": true}));
            }
            Ok(())
        }
    }
}

/// The broker named by `url`; `service` must be registered (else exit 3).
async fn open_broker(context: &Context, url: &str) -> Result<SharedBroker, ToolError> {
    if url.trim() == SERVICE_URL {
        context.records(micro_platform::event::SERVICE_NAME).await?;
        return Ok(std::sync::Arc::new(EventClient::from_client(
            &context.client,
        )));
    }
    broker::from_url_with_registry(url, context.registry.clone())
        .map_err(|err| ToolError::Usage(format!("--broker {url}: {err}")))
}

fn broker_error(err: BrokerError) -> ToolError {
    match err {
        BrokerError::Invalid { .. } | BrokerError::Unsupported { .. } => {
            ToolError::Usage(err.to_string())
        }
        BrokerError::Backend { ref source, .. } => {
            let status = source
                .as_ref()
                .and_then(|source| source.downcast_ref::<Status>());
            match status.map(Status::code) {
                Some(Code::Unavailable | Code::DeadlineExceeded) => {
                    ToolError::NotFound(err.to_string())
                }
                _ => ToolError::Failed(err.to_string()),
            }
        }
        other => ToolError::Failed(other.to_string()),
    }
}

/// Flags of `micro subscribe`.
#[derive(Debug, clap::Args)]
pub(crate) struct SubscribeArgs {
    /// The topic: dot-separated tokens of `A-Z a-z 0-9 _ -`
    topic: String,
    /// Join this queue group: each message goes to one member of the group
    #[arg(long, value_name = "GROUP")]
    queue: Option<String>,
    /// Exit after this many messages [default: run until interrupted]
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Broker to subscribe through: `service` (the event service `micro.event`, found
    /// through the registry), `service://host:port`, `local`, or another broker URL
    #[arg(
        long,
        env = "MICRO_BROKER",
        value_name = "URL",
        default_value = SERVICE_URL
    )]
    broker: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// `micro subscribe`: prints each message as it arrives (table: the body, one per line;
/// json: topic, headers and body), until interrupted or `--count` messages.
pub(crate) async fn subscribe(args: SubscribeArgs) -> Result<(), ToolError> {
    broker::validate_topic(&args.topic).map_err(|err| ToolError::Usage(err.to_string()))?;
    let context = Context::open(&args.client)?;
    let broker = open_broker(&context, &args.broker).await?;
    let options = SubscribeOptions {
        queue: args.queue.clone(),
        ..SubscribeOptions::default()
    };
    let mut subscription =
        match tokio::time::timeout(args.client.timeout, broker.subscribe(&args.topic, options))
            .await
        {
            Err(_) => {
                return Err(ToolError::NotFound(format!(
                    "broker {} did not answer within {:?}",
                    broker.name(),
                    args.client.timeout
                )));
            }
            Ok(result) => result.map_err(broker_error)?,
        };
    // On stderr, so stdout holds messages only; scripts and tests wait for it.
    eprintln!(
        "micro: subscribed to {} through {}",
        args.topic,
        broker.name()
    );
    let mut received = 0;
    // One listener for the whole subscription: a new `ctrl_c()` per message only listens
    // once polled, so a Ctrl-C while a message was being printed was lost.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let delivery = tokio::select! {
            delivery = subscription.next() => delivery,
            _ = &mut ctrl_c => return Ok(()),
        };
        let delivery = match delivery {
            None => {
                return Err(ToolError::NotFound(format!(
                    "broker {} ended the subscription",
                    broker.name()
                )));
            }
            Some(delivery) => delivery.map_err(broker_error)?,
        };
        let body = &delivery.message.body;
        match args.client.output {
            Output::Json => {
                let body = match std::str::from_utf8(body) {
                    Ok(text) => serde_json::from_str::<serde_json::Value>(text)
                        .unwrap_or_else(|_| json!(text)),
                    Err(_) => json!({"base64": BASE64_STANDARD.encode(body)}),
                };
                outln!(
                    "{}",
                    json!({"topic": &*delivery.topic, "headers": delivery.message.headers,
                           "body": body})
                );
            }
            Output::Table => outln!("{}", String::from_utf8_lossy(body)),
        }
        received += 1;
        if args.count.is_some_and(|count| received >= count) {
            return Ok(());
        }
    }
}
