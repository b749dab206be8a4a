//! `micro kv`: keys of the kv service or any store.

use std::{
    io::{IsTerminal, Read, Write},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, prelude::BASE64_STANDARD};
use bytes::Bytes;
use micro_core::store::{self, Condition, ListOptions, Namespace, Put, SharedStore, StoreError};
use micro_platform::kv::KvClient;
use serde_json::json;

use super::SERVICE_URL;
use crate::tool::{self, ClientArgs, Context, Output, ToolError, outln};

/// Flags of `micro kv`.
#[derive(Debug, clap::Args)]
pub(crate) struct KvArgs {
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KvCommand {
    /// Print a key's value (table) or its record (json)
    #[command(after_help = tool::EXIT_CODES)]
    Get(KvKeyArgs),
    /// Write a key: the value from VALUE, -d @file, -d - or stdin
    #[command(after_help = tool::EXIT_CODES)]
    Put(KvPutArgs),
    /// Delete a key
    #[command(after_help = tool::EXIT_CODES)]
    Delete(KvKeyArgs),
    /// List keys in byte order
    #[command(after_help = tool::EXIT_CODES)]
    List(KvListArgs),
}

/// Flags every `micro kv` command takes.
#[derive(Debug, clap::Args)]
struct KvCommon {
    /// Store to use: `service` (the kv service `micro.kv`, found through the registry),
    /// `service://host:port`, or another store URL (`file:///path/store.redb`, …)
    #[arg(
        long,
        env = "MICRO_STORE",
        value_name = "URL",
        default_value = SERVICE_URL
    )]
    store: String,
    /// The namespace's database
    #[arg(long, default_value = Namespace::DEFAULT_DATABASE)]
    database: String,
    /// The namespace's table
    #[arg(long, default_value = Namespace::DEFAULT_TABLE)]
    table: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Flags of `micro kv get` and `micro kv delete`.
#[derive(Debug, clap::Args)]
struct KvKeyArgs {
    /// The key
    key: String,
    #[command(flatten)]
    common: KvCommon,
}

/// Flags of `micro kv put`.
#[derive(Debug, clap::Args)]
struct KvPutArgs {
    /// The key
    key: String,
    /// The value (UTF-8 text); without it and -d, the value is read from stdin
    value: Option<String>,
    /// The value from elsewhere: text, `@file` or `-` (stdin); instead of VALUE
    #[arg(
        short = 'd',
        long = "data",
        value_name = "TEXT|@FILE|-",
        conflicts_with = "value"
    )]
    data: Option<String>,
    /// Expire the key this long after the write: `500ms`, `10s`, `2m`, `1h`, `1h30m`
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    ttl: Option<Duration>,
    #[command(flatten)]
    common: KvCommon,
}

/// Flags of `micro kv list`.
#[derive(Debug, clap::Args)]
struct KvListArgs {
    /// Only keys starting with this
    #[arg(long, default_value = "")]
    prefix: String,
    /// Most keys to print; 0 prints them all
    #[arg(long, default_value_t = 0)]
    limit: usize,
    #[command(flatten)]
    common: KvCommon,
}

/// A store and the namespace to use in it.
struct Kv {
    store: SharedStore,
    namespace: Namespace,
    timeout: Duration,
}

impl Kv {
    async fn open(common: &KvCommon) -> Result<Self, ToolError> {
        let namespace = Namespace::new(&common.database, &common.table)
            .map_err(|err| ToolError::Usage(err.to_string()))?;
        let store: SharedStore = if common.store.trim() == SERVICE_URL {
            let context = Context::open(&common.client)?;
            context.records(micro_platform::kv::SERVICE_NAME).await?;
            std::sync::Arc::new(KvClient::from_client(&context.client))
        } else {
            store::from_url(&common.store)
                .map_err(|err| ToolError::Usage(format!("--store {}: {err}", common.store)))?
        };
        Ok(Self {
            store,
            namespace,
            timeout: common.client.timeout,
        })
    }

    /// Runs one store operation within the time limit.
    async fn run<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, ToolError> {
        match tokio::time::timeout(self.timeout, operation).await {
            Err(_) => Err(ToolError::NotFound(format!(
                "store {} did not answer within {:?}",
                self.store.name(),
                self.timeout
            ))),
            Ok(result) => result.map_err(store_error),
        }
    }
}

fn store_error(err: StoreError) -> ToolError {
    match err {
        StoreError::InvalidArgument(_) | StoreError::UnknownStore { .. } => {
            ToolError::Usage(err.to_string())
        }
        StoreError::ConditionFailed { .. } => ToolError::Failed(err.to_string()),
        StoreError::Unavailable { .. } => ToolError::NotFound(err.to_string()),
        _ => ToolError::Failed(err.to_string()),
    }
}

/// `micro kv …`.
pub(crate) async fn kv(args: KvArgs) -> Result<(), ToolError> {
    match args.command {
        KvCommand::Get(args) => kv_get(args).await,
        KvCommand::Put(args) => kv_put(args).await,
        KvCommand::Delete(args) => kv_delete(args).await,
        KvCommand::List(args) => kv_list(args).await,
    }
}

async fn kv_get(args: KvKeyArgs) -> Result<(), ToolError> {
    let kv = Kv::open(&args.common).await?;
    let record = kv
        .run(kv.store.get(&kv.namespace, &args.key))
        .await?
        .ok_or_else(|| {
            ToolError::Failed(format!("key not found: {:?} in {}", args.key, kv.namespace))
        })?;
    match args.common.client.output {
        Output::Json => {
            let (value, encoding) = match std::str::from_utf8(&record.value) {
                Ok(text) => (text.to_owned(), "utf-8"),
                Err(_) => (BASE64_STANDARD.encode(&record.value), "base64"),
            };
            let expiry = record.ttl.map(|ttl| {
                // The TTL comes from the store: a huge one must not overflow the clock.
                let unix_ms = SystemTime::now()
                    .checked_add(ttl)
                    .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |since| since.as_millis());
                json!({"ttl_ms": ttl.as_millis(), "unix_ms": unix_ms})
            });
            outln!(
                "{}",
                json!({"key": record.key, "value": value, "encoding": encoding,
                       "version": record.version, "expiry": expiry})
            );
        }
        Output::Table => match std::str::from_utf8(&record.value) {
            Ok(text) => outln!("{text}"),
            Err(_) => {
                // Binary values go out unchanged, for `> file`.
                let mut stdout = std::io::stdout().lock();
                if stdout
                    .write_all(&record.value)
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    std::process::exit(0);
                }
            }
        },
    }
    Ok(())
}

async fn kv_put(args: KvPutArgs) -> Result<(), ToolError> {
    let value = read_value(args.value.as_deref(), args.data.as_deref())?;
    let kv = Kv::open(&args.common).await?;
    let mut put = Put::new(args.key.clone(), value);
    if let Some(ttl) = args.ttl {
        put = put.ttl(ttl);
    }
    let version = kv.run(kv.store.put(&kv.namespace, put)).await?;
    if args.common.client.output == Output::Json {
        outln!("{}", json!({"key": args.key, "version": version}));
    }
    Ok(())
}

async fn kv_delete(args: KvKeyArgs) -> Result<(), ToolError> {
    let kv = Kv::open(&args.common).await?;
    let deleted = kv
        .run(kv.store.delete(&kv.namespace, &args.key, Condition::None))
        .await?;
    if !deleted {
        return Err(ToolError::Failed(format!(
            "key not found: {:?} in {}",
            args.key, kv.namespace
        )));
    }
    if args.common.client.output == Output::Json {
        outln!("{}", json!({"key": args.key, "deleted": true}));
    }
    Ok(())
}

async fn kv_list(args: KvListArgs) -> Result<(), ToolError> {
    let kv = Kv::open(&args.common).await?;
    let mut keys = Vec::new();
    let mut start_after = None;
    loop {
        let wanted = if args.limit == 0 {
            store::MAX_PAGE
        } else {
            (args.limit - keys.len()).min(store::MAX_PAGE)
        };
        let options = ListOptions {
            prefix: args.prefix.clone(),
            start_after: start_after.take(),
            limit: wanted,
        };
        let page = kv.run(kv.store.list(&kv.namespace, options)).await?;
        keys.extend(page.keys);
        if args.limit != 0 && keys.len() >= args.limit {
            keys.truncate(args.limit);
            break;
        }
        match page.next {
            Some(next) => start_after = Some(next),
            None => break,
        }
    }
    match args.common.client.output {
        Output::Json => outln!("{}", json!(keys)),
        Output::Table => {
            for key in keys {
                outln!("{key}");
            }
        }
    }
    Ok(())
}

/// A value: VALUE, `-d TEXT`, `-d @file`, `-d -` (stdin), or stdin when it is not a
/// terminal.
fn read_value(value: Option<&str>, data: Option<&str>) -> Result<Bytes, ToolError> {
    let stdin = || {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|err| ToolError::Usage(format!("cannot read the value from stdin: {err}")))?;
        Ok(Bytes::from(bytes))
    };
    match (value, data) {
        (Some(value), _) => Ok(Bytes::from(value.to_owned())),
        (None, Some("-")) => stdin(),
        (None, Some(data)) => match data.strip_prefix('@') {
            Some(file) => std::fs::read(file).map(Bytes::from).map_err(|err| {
                ToolError::Usage(format!("cannot read the value from {file}: {err}"))
            }),
            None => Ok(Bytes::from(data.to_owned())),
        },
        (None, None) if std::io::stdin().is_terminal() => Err(ToolError::Usage(
            "no value: give it as VALUE, -d @file, or on stdin".into(),
        )),
        (None, None) => stdin(),
    }
}
