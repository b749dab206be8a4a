//! What the auth service keeps in its store: one JSON record per account, refresh token,
//! rule, key and revocation (see the store layout in the [module docs](super)).

use std::collections::BTreeMap;

use micro_core::{
    auth::{Access, Resource, Rule},
    store::{ListOptions, MAX_PAGE, Namespace, Record, SharedStore, StoreError},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tonic::Status;

use super::DATABASE;
use crate::proto::auth::v1 as pb;

pub(super) const ACCOUNTS: &str = "accounts";
pub(super) const REFRESH: &str = "refresh";
pub(super) const RULES: &str = "rules";
pub(super) const KEYS: &str = "keys";
pub(super) const REVOCATIONS: &str = "revocations";

/// An account as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct AccountRecord {
    pub(super) id: String,
    /// `user` or `service`.
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) scopes: Vec<String>,
    #[serde(default)]
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) created: i64,
    /// The argon2id PHC string of the secret.
    pub(super) secret_hash: String,
}

impl AccountRecord {
    pub(super) fn kind(&self) -> pb::AccountType {
        if self.kind == "service" {
            pb::AccountType::Service
        } else {
            pb::AccountType::User
        }
    }

    pub(super) fn to_proto(&self) -> pb::Account {
        pb::Account {
            id: self.id.clone(),
            r#type: self.kind() as i32,
            scopes: self.scopes.clone(),
            metadata: self.metadata.clone().into_iter().collect(),
            created: self.created,
        }
    }
}

/// A refresh token as stored, under the hex SHA-256 of the token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct RefreshRecord {
    pub(super) account: String,
    pub(super) scopes: Vec<String>,
    pub(super) expires: i64,
}

/// A rule as stored: the fields of the proto's `Rule`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct RuleRecord {
    pub(super) id: String,
    #[serde(default)]
    pub(super) scope: String,
    pub(super) resource_type: String,
    pub(super) resource_name: String,
    pub(super) resource_endpoint: String,
    pub(super) grant: bool,
    #[serde(default)]
    pub(super) priority: i32,
}

impl RuleRecord {
    pub(super) fn from_proto(rule: pb::Rule) -> Self {
        Self {
            id: rule.id,
            scope: rule.scope,
            resource_type: rule.resource_type,
            resource_name: rule.resource_name,
            resource_endpoint: rule.resource_endpoint,
            grant: rule.grant,
            priority: rule.priority,
        }
    }

    pub(super) fn to_rule(&self) -> Rule {
        Rule {
            id: self.id.clone(),
            scope: self.scope.clone(),
            resource: Resource::new(
                self.resource_type.as_str(),
                self.resource_name.as_str(),
                self.resource_endpoint.as_str(),
            ),
            access: if self.grant {
                Access::Grant
            } else {
                Access::Deny
            },
            priority: self.priority,
        }
    }
}

/// The proto form of a micro-core rule.
pub(super) fn rule_to_proto(rule: &Rule) -> pb::Rule {
    pb::Rule {
        id: rule.id.clone(),
        scope: rule.scope.clone(),
        resource_type: rule.resource.kind.clone(),
        resource_name: rule.resource.name.clone(),
        resource_endpoint: rule.resource.endpoint.clone(),
        grant: rule.access == Access::Grant,
        priority: rule.priority,
    }
}

/// A signing key as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct KeyRecord {
    pub(super) kid: String,
    /// `EdDSA` or `ES256`.
    pub(super) alg: String,
    /// The PKCS#8 private key, base64url.
    pub(super) pkcs8: String,
    pub(super) created: i64,
    /// When it stopped signing new tokens; `None` for the current key.
    #[serde(default)]
    pub(super) retired: Option<i64>,
}

/// A revocation as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct RevocationRecord {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) token_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) account_id: String,
    #[serde(default)]
    pub(super) issued_before: i64,
    pub(super) expires: i64,
}

impl RevocationRecord {
    pub(super) fn key(&self) -> String {
        if self.token_id.is_empty() {
            format!("account:{}", self.account_id)
        } else {
            format!("token:{}", self.token_id)
        }
    }

    pub(super) fn to_proto(&self) -> pb::Revocation {
        pb::Revocation {
            token_id: self.token_id.clone(),
            account_id: self.account_id.clone(),
            issued_before: self.issued_before,
            expires: self.expires,
        }
    }
}

/// The namespace of `table` in the auth database.
pub(super) fn namespace(table: &str) -> Namespace {
    // The names are constants of this module, valid by construction.
    Namespace::new(DATABASE, table).unwrap_or_default()
}

/// A store failure as a status: UNAVAILABLE for the backend, the store's mapping otherwise.
pub(super) fn store_status(error: StoreError) -> Status {
    tracing::warn!(%error, "auth: store operation failed");
    Status::from(error)
}

/// Decodes a stored JSON value.
pub(super) fn decode<T: DeserializeOwned>(table: &str, record: &Record) -> Result<T, Status> {
    serde_json::from_slice(&record.value).map_err(|error| {
        Status::data_loss(format!(
            "auth store: record {:?} of table {table} is not valid JSON for it: {error}",
            record.key
        ))
    })
}

/// Encodes a value for the store.
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value)
        .map_err(|error| Status::internal(format!("auth store: cannot encode a record: {error}")))
}

/// Every record of `table`, in key order.
pub(super) async fn all(store: &SharedStore, table: &str) -> Result<Vec<Record>, Status> {
    let namespace = namespace(table);
    let mut records = Vec::new();
    let mut start_after = None;
    loop {
        let page = store
            .list(
                &namespace,
                ListOptions {
                    prefix: String::new(),
                    start_after: start_after.take(),
                    limit: MAX_PAGE,
                },
            )
            .await
            .map_err(store_status)?;
        let found = store
            .get_many(&namespace, &page.keys)
            .await
            .map_err(store_status)?;
        records.extend(found.into_iter().flatten());
        match page.next {
            Some(next) => start_after = Some(next),
            None => return Ok(records),
        }
    }
}

/// Every record of `table`, decoded.
pub(super) async fn all_decoded<T: DeserializeOwned>(
    store: &SharedStore,
    table: &str,
) -> Result<Vec<T>, Status> {
    all(store, table)
        .await?
        .iter()
        .map(|record| decode(table, record))
        .collect()
}
