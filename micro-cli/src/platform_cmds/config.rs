//! `micro config`: values of the config service.

use futures_util::StreamExt;
use micro_core::config::Source;
use micro_platform::config::ConfigClient;
use serde_json::json;
use tonic::{Code, Status};

use crate::tool::{self, ClientArgs, Context, Output, ToolError, outln};

/// Flags of `micro config`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Print the value at PATH (or the values below it) as JSON; the whole tree without PATH
    #[command(after_help = tool::EXIT_CODES)]
    Get(ConfigGetArgs),
    /// Set the value at PATH (JSON or YAML text)
    #[command(after_help = tool::EXIT_CODES)]
    Set(ConfigSetArgs),
    /// Delete the value at PATH and every value below it
    #[command(after_help = tool::EXIT_CODES)]
    Delete(ConfigPathArgs),
    /// Print the value at PATH (or the whole tree), then again each time it changes,
    /// until interrupted
    #[command(after_help = tool::EXIT_CODES)]
    Watch(ConfigGetArgs),
}

/// Flags every `micro config` command takes.
#[derive(Debug, clap::Args)]
struct ConfigCommon {
    /// The environment
    #[arg(
        long = "env",
        env = "MICRO_ENV",
        value_name = "ENV",
        default_value = "dev"
    )]
    environment: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Flags of `micro config get` and `watch`.
#[derive(Debug, clap::Args)]
struct ConfigGetArgs {
    /// A dot-separated path such as `db.pool`; the whole tree without it
    path: Option<String>,
    #[command(flatten)]
    common: ConfigCommon,
}

/// Flags of `micro config set`.
#[derive(Debug, clap::Args)]
struct ConfigSetArgs {
    /// A dot-separated path such as `db.pool`
    path: String,
    /// The value, JSON or YAML text: `20`, `true`, `"text"`, `{"a": 1}`
    value: Option<String>,
    /// The value from elsewhere: text, `@file` or `-` (stdin); instead of VALUE
    #[arg(
        short = 'd',
        long = "data",
        value_name = "TEXT|@FILE|-",
        conflicts_with = "value"
    )]
    data: Option<String>,
    #[command(flatten)]
    common: ConfigCommon,
}

/// Flags of `micro config delete`.
#[derive(Debug, clap::Args)]
struct ConfigPathArgs {
    /// A dot-separated path such as `db.pool`
    path: String,
    #[command(flatten)]
    common: ConfigCommon,
}

/// `micro config …`.
pub(crate) async fn config(args: ConfigArgs) -> Result<(), ToolError> {
    match args.command {
        ConfigCommand::Get(args) => {
            let client = open_config(&args.common).await?;
            let value = config_value(&client, args.path.as_deref(), &args.common).await?;
            print_json(&value)
        }
        ConfigCommand::Set(args) => {
            if args.value.is_none() && args.data.is_none() {
                return Err(ToolError::Usage(
                    "no value: give it as VALUE, -d @file or -d - (stdin)".into(),
                ));
            }
            let value = tool::read_body(args.value.as_deref(), args.data.as_deref())?;
            let client = open_config(&args.common).await?;
            let revision = timed(&args.common, client.set(&args.path, &value)).await?;
            if args.common.client.output == Output::Json {
                outln!("{}", json!({"path": args.path, "revision": revision}));
            }
            Ok(())
        }
        ConfigCommand::Delete(args) => {
            let client = open_config(&args.common).await?;
            let deleted = timed(&args.common, client.delete(&args.path)).await?;
            if deleted == 0 {
                return Err(ToolError::Failed(format!(
                    "no value at {} in environment {}",
                    args.path, args.common.environment
                )));
            }
            if args.common.client.output == Output::Json {
                outln!("{}", json!({"path": args.path, "deleted": deleted}));
            }
            Ok(())
        }
        ConfigCommand::Watch(args) => config_watch(args).await,
    }
}

async fn open_config(common: &ConfigCommon) -> Result<ConfigClient, ToolError> {
    let context = Context::open(&common.client)?;
    context
        .records(micro_platform::config::SERVICE_NAME)
        .await?;
    Ok(ConfigClient::from_client(
        &context.client,
        &common.environment,
    ))
}

/// The value at `path`, or the whole tree without a path; a missing value is exit 1.
async fn config_value(
    client: &ConfigClient,
    path: Option<&str>,
    common: &ConfigCommon,
) -> Result<serde_json::Value, ToolError> {
    lookup(client, path, common).await?.ok_or_else(|| {
        ToolError::Failed(format!(
            "no value at {} in environment {}",
            path.unwrap_or_default(),
            common.environment
        ))
    })
}

/// The value set at `path`, else the subtree below it (`db` when only `db.pool` is set),
/// else `None`; the whole tree without a path.
async fn lookup(
    client: &ConfigClient,
    path: Option<&str>,
    common: &ConfigCommon,
) -> Result<Option<serde_json::Value>, ToolError> {
    let Some(path) = path else {
        return timed(common, client.list()).await.map(Some);
    };
    if let Some(value) = timed(common, client.get(path)).await? {
        return Ok(Some(value));
    }
    let tree = timed(common, client.list()).await?;
    Ok(path
        .split('.')
        .try_fold(&tree, |node, segment| node.get(segment))
        .cloned())
}

async fn config_watch(args: ConfigGetArgs) -> Result<(), ToolError> {
    let client = open_config(&args.common).await?;
    // Watch first, so no change between the first read and the watch is missed.
    let mut changes = client
        .changes()
        .await
        .map_err(|err| ToolError::Failed(err.to_string()))?
        .ok_or_else(|| ToolError::Failed("the config service offers no changes".into()))?;
    let mut last = None;
    // One listener for the whole watch: a new `ctrl_c()` per loop only listens once polled,
    // so a Ctrl-C while a value was being read and printed was lost.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let value = lookup(&client, args.path.as_deref(), &args.common).await?;
        if value != last {
            print_json(value.as_ref().unwrap_or(&serde_json::Value::Null))?;
            last = value;
        }
        tokio::select! {
            change = changes.next() => if change.is_none() {
                return Err(ToolError::NotFound("the config service ended the watch".into()));
            },
            _ = &mut ctrl_c => return Ok(()),
        }
    }
}

/// Runs one config call within the time limit; maps its status to an exit code.
async fn timed<T>(
    common: &ConfigCommon,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, ToolError> {
    match tokio::time::timeout(common.client.timeout, call).await {
        Err(_) => Err(ToolError::NotFound(format!(
            "the config service did not answer within {:?}",
            common.client.timeout
        ))),
        Ok(Err(status)) if status.code() == Code::InvalidArgument => {
            Err(ToolError::Usage(status.message().to_owned()))
        }
        Ok(Err(status)) if status.code() == Code::Unavailable => Err(ToolError::NotFound(format!(
            "the config service is unreachable: {}",
            status.message()
        ))),
        Ok(Err(status)) => Err(ToolError::Status(status)),
        Ok(Ok(value)) => Ok(value),
    }
}

fn print_json(value: &serde_json::Value) -> Result<(), ToolError> {
    outln!("{}", value);
    Ok(())
}
