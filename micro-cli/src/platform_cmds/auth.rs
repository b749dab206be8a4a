//! `micro auth`: tokens, accounts, rules and keys of the auth service.

use std::collections::BTreeMap;

use micro_core::auth::{Access, AccountKind, Resource, Rule};
use micro_platform::auth::{AccountInfo, AuthClient, ENV_ID, ENV_SECRET, NewAccount, TokenGrant};
use serde_json::json;
use tonic::{Code, Status};

use crate::tool::{self, ClientArgs, Context, Output, ToolError, outln};

/// Flags of `micro auth`.
#[derive(Debug, clap::Args)]
pub(crate) struct AuthArgs {
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AuthCommand {
    /// Get an access token for a service account (client_credentials) and print it
    #[command(after_help = tool::EXIT_CODES)]
    Token(TokenArgs),
    /// Verify an access token at the service and print its account and claims
    #[command(after_help = tool::EXIT_CODES)]
    Inspect(TokenArg),
    /// Revoke an access token or a refresh token
    #[command(after_help = tool::EXIT_CODES)]
    Revoke(TokenArg),
    /// Accounts: list, create, delete, rotate (admin)
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Access rules: list, create, delete (admin)
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Signing keys: print the JWK Set, rotate (admin)
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// Flags every `micro auth` command takes.
#[derive(Debug, clap::Args)]
struct AuthCommon {
    /// Access token sent as `authorization: Bearer` (admin commands need one with scope
    /// `admin` under the default rules)
    #[arg(
        long,
        env = "MICRO_AUTH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Flags of `micro auth token`.
#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The service account's id
    #[arg(long, env = ENV_ID)]
    id: String,
    /// Its secret (generated secrets are base64url and may start with `-`)
    #[arg(long, env = ENV_SECRET, hide_env_values = true, allow_hyphen_values = true)]
    secret: String,
    /// Limit the token to these scopes (repeatable; default all the account holds)
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    #[command(flatten)]
    common: AuthCommon,
}

/// A token argument.
#[derive(Debug, clap::Args)]
struct TokenArg {
    /// The token (refresh tokens are base64url and may start with `-`)
    #[arg(allow_hyphen_values = true)]
    value: String,
    #[command(flatten)]
    common: AuthCommon,
}

#[derive(Debug, clap::Subcommand)]
enum AccountsCommand {
    /// List the accounts (never their secrets)
    #[command(after_help = tool::EXIT_CODES)]
    List(AuthCommonArgs),
    /// Create an account and print its secret (shown this once)
    #[command(after_help = tool::EXIT_CODES)]
    Create(CreateAccountArgs),
    /// Delete an account and revoke its tokens
    #[command(after_help = tool::EXIT_CODES)]
    Delete(IdArgs),
    /// Replace an account's secret with a generated one and print it
    #[command(after_help = tool::EXIT_CODES)]
    Rotate(IdArgs),
}

/// Only the common flags.
#[derive(Debug, clap::Args)]
struct AuthCommonArgs {
    #[command(flatten)]
    common: AuthCommon,
}

/// An id argument.
#[derive(Debug, clap::Args)]
struct IdArgs {
    /// The id
    id: String,
    #[command(flatten)]
    common: AuthCommon,
}

/// Flags of `micro auth accounts create`.
#[derive(Debug, clap::Args)]
struct CreateAccountArgs {
    /// The account id (A-Z a-z 0-9 _ - . @)
    id: String,
    /// `service` or `user`
    #[arg(long = "type", default_value = "service", value_parser = ["service", "user"])]
    kind: String,
    /// A scope it holds (repeatable)
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// Metadata `key=value` (repeatable)
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    #[command(flatten)]
    common: AuthCommon,
}

#[derive(Debug, clap::Subcommand)]
enum RulesCommand {
    /// List the rules in evaluation order
    #[command(after_help = tool::EXIT_CODES)]
    List(AuthCommonArgs),
    /// Add a rule
    #[command(after_help = tool::EXIT_CODES)]
    Create(CreateRuleArgs),
    /// Delete a rule
    #[command(after_help = tool::EXIT_CODES)]
    Delete(IdArgs),
}

/// Flags of `micro auth rules create`.
#[derive(Debug, clap::Args)]
struct CreateRuleArgs {
    /// The rule id
    id: String,
    /// Who: empty for everyone, `*` for any account, else a scope
    #[arg(long, default_value = "")]
    scope: String,
    /// The resource kind
    #[arg(long = "type", default_value = "service")]
    kind: String,
    /// The resource name (`*` and `prefix*` wildcards)
    #[arg(long, default_value = "*")]
    name: String,
    /// The endpoint, e.g. `Greeter.Hello` (`*` and `prefix*` wildcards)
    #[arg(long, default_value = "*")]
    endpoint: String,
    /// Deny instead of grant
    #[arg(long)]
    deny: bool,
    /// Higher first
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    #[command(flatten)]
    common: AuthCommon,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Print the JWK Set (public keys verifying tokens)
    #[command(after_help = tool::EXIT_CODES)]
    Jwks(AuthCommonArgs),
    /// Make a new signing key current (the old one stays published while its tokens live)
    #[command(after_help = tool::EXIT_CODES)]
    Rotate(AuthCommonArgs),
}

/// `micro auth …`.
pub(crate) async fn auth(args: AuthArgs) -> Result<(), ToolError> {
    match args.command {
        AuthCommand::Token(args) => {
            let client = open(&args.common).await?;
            let grant = TokenGrant::ClientCredentials {
                id: args.id,
                secret: args.secret,
            };
            let tokens = timed(&args.common, client.token(grant, &args.scopes)).await?;
            match args.common.client.output {
                Output::Json => outln!(
                    "{}",
                    json!({
                        "access_token": tokens.access_token,
                        "token_type": "Bearer",
                        "expires_in": tokens.expires_in.as_secs(),
                        "scopes": tokens.scopes,
                    })
                ),
                Output::Table => outln!("{}", tokens.access_token),
            }
            Ok(())
        }
        AuthCommand::Inspect(args) => {
            let client = open(&args.common).await?;
            let inspected = timed(&args.common, client.inspect(&args.value)).await?;
            let value = json!({
                "account": account_json(&inspected.account),
                "token_id": inspected.token_id,
                "issued": inspected.issued,
                "expires": inspected.expires,
                "issuer": inspected.issuer,
            });
            outln!("{value}");
            Ok(())
        }
        AuthCommand::Revoke(args) => {
            let client = open(&args.common).await?;
            timed(&args.common, client.revoke(&args.value)).await
        }
        AuthCommand::Accounts(command) => accounts(command).await,
        AuthCommand::Rules(command) => rules(command).await,
        AuthCommand::Keys(command) => keys(command).await,
    }
}

async fn accounts(command: AccountsCommand) -> Result<(), ToolError> {
    match command {
        AccountsCommand::List(args) => {
            let client = open(&args.common).await?;
            let accounts = timed(&args.common, client.list_accounts()).await?;
            match args.common.client.output {
                Output::Json => {
                    let list: Vec<_> = accounts.iter().map(account_json).collect();
                    outln!("{}", serde_json::Value::Array(list));
                }
                Output::Table => {
                    outln!("{:<32} {:<8} SCOPES", "ID", "TYPE");
                    for account in &accounts {
                        outln!(
                            "{:<32} {:<8} {}",
                            account.id,
                            kind_name(account.kind),
                            account.scopes.join(",")
                        );
                    }
                }
            }
            Ok(())
        }
        AccountsCommand::Create(args) => {
            let mut metadata = BTreeMap::new();
            for pair in &args.metadata {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| ToolError::Usage(format!("--meta {pair:?} is not key=value")))?;
                metadata.insert(key.to_owned(), value.to_owned());
            }
            let client = open(&args.common).await?;
            let account = NewAccount {
                id: args.id,
                kind: if args.kind == "user" {
                    AccountKind::User
                } else {
                    AccountKind::Service
                },
                scopes: args.scopes,
                metadata,
                secret: None,
            };
            let (account, secret) = timed(&args.common, client.generate(account)).await?;
            match args.common.client.output {
                Output::Json => outln!(
                    "{}",
                    json!({"account": account_json(&account), "secret": secret})
                ),
                Output::Table => outln!("id={} secret={secret}", account.id),
            }
            Ok(())
        }
        AccountsCommand::Delete(args) => {
            let client = open(&args.common).await?;
            timed(&args.common, client.delete_account(&args.id)).await
        }
        AccountsCommand::Rotate(args) => {
            let client = open(&args.common).await?;
            let secret = timed(&args.common, client.rotate_secret(&args.id, None)).await?;
            match args.common.client.output {
                Output::Json => outln!("{}", json!({"id": args.id, "secret": secret})),
                Output::Table => outln!("id={} secret={secret}", args.id),
            }
            Ok(())
        }
    }
}

async fn rules(command: RulesCommand) -> Result<(), ToolError> {
    match command {
        RulesCommand::List(args) => {
            let client = open(&args.common).await?;
            let rules = timed(&args.common, client.list_rules()).await?;
            match args.common.client.output {
                Output::Json => {
                    let list: Vec<_> = rules.iter().map(rule_json).collect();
                    outln!("{}", serde_json::Value::Array(list));
                }
                Output::Table => {
                    outln!(
                        "{:<24} {:>8} {:<6} {:<12} {:<10} {:<20} ENDPOINT",
                        "ID",
                        "PRIORITY",
                        "ACCESS",
                        "SCOPE",
                        "TYPE",
                        "NAME"
                    );
                    for rule in &rules {
                        let scope = if rule.scope.is_empty() {
                            "(public)"
                        } else {
                            rule.scope.as_str()
                        };
                        outln!(
                            "{:<24} {:>8} {:<6} {:<12} {:<10} {:<20} {}",
                            rule.id,
                            rule.priority,
                            access_name(rule.access),
                            scope,
                            rule.resource.kind,
                            rule.resource.name,
                            rule.resource.endpoint
                        );
                    }
                }
            }
            Ok(())
        }
        RulesCommand::Create(args) => {
            let client = open(&args.common).await?;
            let rule = Rule {
                id: args.id,
                scope: args.scope,
                resource: Resource::new(args.kind, args.name, args.endpoint),
                access: if args.deny {
                    Access::Deny
                } else {
                    Access::Grant
                },
                priority: args.priority,
            };
            timed(&args.common, client.create_rule(&rule)).await
        }
        RulesCommand::Delete(args) => {
            let client = open(&args.common).await?;
            timed(&args.common, client.delete_rule(&args.id)).await
        }
    }
}

async fn keys(command: KeysCommand) -> Result<(), ToolError> {
    match command {
        KeysCommand::Jwks(args) => {
            let client = open(&args.common).await?;
            let jwks = timed(&args.common, client.jwks()).await?;
            match args.common.client.output {
                Output::Json => outln!(
                    "{}",
                    json!({
                        "jwks": serde_json::from_str::<serde_json::Value>(&jwks.jwks)
                            .unwrap_or(serde_json::Value::String(jwks.jwks.clone())),
                        "current_kid": jwks.current_kid,
                        "issuer": jwks.issuer,
                        "audience": jwks.audience,
                    })
                ),
                Output::Table => outln!("{}", jwks.jwks),
            }
            Ok(())
        }
        KeysCommand::Rotate(args) => {
            let client = open(&args.common).await?;
            let (current, published) = timed(&args.common, client.rotate_keys()).await?;
            match args.common.client.output {
                Output::Json => outln!(
                    "{}",
                    json!({"current_kid": current, "published_kids": published})
                ),
                Output::Table => outln!("current_kid={current} published={}", published.join(",")),
            }
            Ok(())
        }
    }
}

/// The auth service through the registry, with the caller's token if any.
async fn open(common: &AuthCommon) -> Result<AuthClient, ToolError> {
    let context = Context::open(&common.client)?;
    context.records(micro_platform::auth::SERVICE_NAME).await?;
    let client = AuthClient::from_client(&context.client);
    Ok(match common.token.as_deref().map(str::trim) {
        Some(token) if !token.is_empty() => client.with_token(token),
        _ => client,
    })
}

/// Runs one call within the time limit; maps its status to an exit code.
async fn timed<T>(
    common: &AuthCommon,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, ToolError> {
    match tokio::time::timeout(common.client.timeout, call).await {
        Err(_) => Err(ToolError::NotFound(format!(
            "the auth service did not answer within {:?}",
            common.client.timeout
        ))),
        Ok(Err(status)) if status.code() == Code::InvalidArgument => {
            Err(ToolError::Usage(status.message().to_owned()))
        }
        Ok(Err(status)) if status.code() == Code::Unavailable => Err(ToolError::NotFound(format!(
            "the auth service is unreachable: {}",
            status.message()
        ))),
        Ok(Err(status)) => Err(ToolError::Status(status)),
        Ok(Ok(value)) => Ok(value),
    }
}

fn kind_name(kind: AccountKind) -> &'static str {
    match kind {
        AccountKind::Service => "service",
        AccountKind::User => "user",
    }
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Grant => "grant",
        Access::Deny => "deny",
    }
}

fn account_json(account: &AccountInfo) -> serde_json::Value {
    json!({
        "id": account.id,
        "type": kind_name(account.kind),
        "scopes": account.scopes,
        "metadata": account.metadata,
        "created": account.created,
    })
}

fn rule_json(rule: &Rule) -> serde_json::Value {
    json!({
        "id": rule.id,
        "scope": rule.scope,
        "resource_type": rule.resource.kind,
        "resource_name": rule.resource.name,
        "resource_endpoint": rule.resource.endpoint,
        "access": access_name(rule.access),
        "priority": rule.priority,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::AuthCommand;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: AuthCommand,
    }

    #[test]
    fn secrets_and_tokens_may_start_with_a_hyphen() {
        let cli = Cli::try_parse_from(["auth", "token", "--id", "a", "--secret", "-Zx_9"]).unwrap();
        let AuthCommand::Token(args) = cli.command else {
            panic!("not token: {cli:?}");
        };
        assert_eq!(args.secret, "-Zx_9");
        let cli = Cli::try_parse_from(["auth", "revoke", "-refresh_token"]).unwrap();
        let AuthCommand::Revoke(args) = cli.command else {
            panic!("not revoke: {cli:?}");
        };
        assert_eq!(args.value, "-refresh_token");
    }
}
