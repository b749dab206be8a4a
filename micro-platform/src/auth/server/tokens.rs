//! Tokens: the grants, the brute-force checks, inspection and revocation.

use micro_core::lock::read;

use super::accounts::random_token;
use super::*;

impl AuthService {
    pub(super) async fn token(
        &self,
        request: pb::TokenRequest,
        source: Option<IpAddr>,
    ) -> Result<pb::TokenResponse, Status> {
        self.prune_keys().await?;
        match request.grant_type.as_str() {
            crate::auth::grant::CLIENT_CREDENTIALS => {
                let account = self
                    .authenticate(&request.id, request.secret, source, AccountKind::Service)
                    .await?;
                let scopes = narrow(&account.scopes, &request.scopes)?;
                self.respond(&account, scopes, false).await
            }
            crate::auth::grant::PASSWORD => {
                if !self.inner.options.password_grant {
                    return Err(Status::failed_precondition(
                        "grant_type password is not enabled on this auth service \
                         (AuthOptions::password_grant)",
                    ));
                }
                let account = self
                    .authenticate(&request.id, request.secret, source, AccountKind::User)
                    .await?;
                let scopes = narrow(&account.scopes, &request.scopes)?;
                self.respond(&account, scopes, true).await
            }
            crate::auth::grant::REFRESH_TOKEN => self.refresh(request, source).await,
            "" => Err(invalid(
                "grant_type is required (client_credentials, refresh_token or password)",
            )),
            other => Err(invalid(format!(
                "grant_type {other:?} is not supported; use client_credentials, refresh_token \
                 or password"
            ))),
        }
    }

    pub(super) fn limited(&self, id: Option<&str>, source: Option<IpAddr>) -> Result<(), Status> {
        self.inner
            .limiter
            .check(id, source, Instant::now())
            .map_err(|retry| {
                let seconds = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
                let mut metadata = MetadataMap::new();
                metadata.insert("retry-after", seconds.max(1).into());
                tracing::warn!(account = id, source = ?source, retry_after = seconds, "auth: too many failed attempts");
                Status::with_metadata(
                    tonic::Code::ResourceExhausted,
                    format!(
                        "too many failed attempts for this account id or source address; \
                         retry after {} s",
                        seconds.max(1)
                    ),
                    metadata,
                )
            })
    }

    /// Checks an id and secret, in the same time whether or not the id exists.
    pub(super) async fn authenticate(
        &self,
        id: &str,
        secret: String,
        source: Option<IpAddr>,
        kind: AccountKind,
    ) -> Result<AccountRecord, Status> {
        validate_id(id).map_err(invalid)?;
        self.limited(Some(id), source)?;
        let stored = self
            .inner
            .store
            .get(&namespace(ACCOUNTS), id)
            .await
            .map_err(store_status)?;
        let account = stored
            .as_ref()
            .map(|record| decode::<AccountRecord>(ACCOUNTS, record))
            .transpose()?;
        let hash = account
            .as_ref()
            .map_or_else(|| self.inner.dummy_hash.clone(), |a| a.secret_hash.clone());
        let matches = self.verify_secret(secret, hash).await?;
        match account {
            Some(account) if matches && account_kind(&account) == kind => {
                self.inner.limiter.succeed(id);
                Ok(account)
            }
            _ => {
                self.inner.limiter.fail(Some(id), source, Instant::now());
                Err(Status::unauthenticated(BAD_CREDENTIALS))
            }
        }
    }

    pub(super) async fn refresh(
        &self,
        request: pb::TokenRequest,
        source: Option<IpAddr>,
    ) -> Result<pb::TokenResponse, Status> {
        if request.refresh_token.is_empty() {
            return Err(invalid(
                "refresh_token is required for grant_type refresh_token",
            ));
        }
        self.limited(None, source)?;
        let key = sha256_hex(&request.refresh_token);
        let refused = || {
            self.inner.limiter.fail(None, source, Instant::now());
            Status::unauthenticated("invalid refresh token: unknown, used, expired or revoked")
        };
        let stored = self
            .inner
            .store
            .get(&namespace(REFRESH), &key)
            .await
            .map_err(store_status)?;
        let Some(stored) = stored else {
            return Err(refused());
        };
        // Single use: of two concurrent refreshes only one deletes this version.
        let won = self
            .inner
            .store
            .delete(
                &namespace(REFRESH),
                &key,
                Condition::Version(stored.version),
            )
            .await
            .map_err(store_status)?;
        let record: RefreshRecord = decode(REFRESH, &stored)?;
        if !won || record.expires <= self.now() {
            return Err(refused());
        }
        let account = self
            .inner
            .store
            .get(&namespace(ACCOUNTS), &record.account)
            .await
            .map_err(store_status)?;
        let Some(account) = account else {
            return Err(refused());
        };
        let account: AccountRecord = decode(ACCOUNTS, &account)?;
        let scopes = narrow(&record.scopes, &request.scopes)?;
        // The new refresh token carries the scopes of the old one, not the narrowed ones.
        let mut response = self.respond(&account, record.scopes, true).await?;
        if scopes.len() != response.scopes.len() {
            let narrowed = self.issue(&account, scopes)?;
            response.access_token = narrowed.token;
            response.scopes = narrowed.claims.scopes;
        }
        Ok(response)
    }

    pub(super) fn issue(
        &self,
        account: &AccountRecord,
        scopes: Vec<String>,
    ) -> Result<micro_core::auth::AccessToken, Status> {
        let issuer = read(&self.inner.keys).issuer.clone();
        let core = Account {
            id: account.id.clone(),
            kind: account_kind(account),
            scopes,
            metadata: account.metadata.clone(),
            issuer: self.inner.options.issuer.clone(),
        };
        issuer
            .issue_at(&core, (self.inner.options.clock)())
            .map_err(|error| Status::internal(format!("auth: cannot sign a token: {error}")))
    }

    /// The access token for `account` with `scopes`, and a refresh token when `refresh`.
    pub(super) async fn respond(
        &self,
        account: &AccountRecord,
        scopes: Vec<String>,
        refresh: bool,
    ) -> Result<pb::TokenResponse, Status> {
        let token = self.issue(account, scopes.clone())?;
        let refresh_token = if refresh {
            let token = random_token(&self.inner.random)?;
            let lifetime = self.inner.options.refresh_lifetime;
            let record = RefreshRecord {
                account: account.id.clone(),
                scopes,
                expires: self.now() + secs(lifetime),
            };
            put_json(
                &self.inner.store,
                REFRESH,
                &sha256_hex(&token),
                &record,
                Condition::Absent,
                Some(lifetime),
            )
            .await?;
            token
        } else {
            String::new()
        };
        Ok(pb::TokenResponse {
            expires_in: token.claims.exp - token.claims.iat.unwrap_or(token.claims.exp),
            access_token: token.token,
            token_type: "Bearer".to_owned(),
            refresh_token,
            scopes: token.claims.scopes,
        })
    }

    pub(super) async fn inspect(&self, token: &str) -> Result<pb::InspectResponse, Status> {
        self.prune_keys().await?;
        let claims = self
            .inner
            .verifier
            .verify_at(token, (self.inner.options.clock)())
            .map_err(|error| Status::unauthenticated(format!("invalid access token: {error}")))?;
        let created = match self
            .inner
            .store
            .get(&namespace(ACCOUNTS), &claims.sub)
            .await
            .map_err(store_status)?
        {
            Some(record) => decode::<AccountRecord>(ACCOUNTS, &record)?.created,
            None => 0,
        };
        let kind = match claims.kind {
            AccountKind::Service => pb::AccountType::Service,
            AccountKind::User => pb::AccountType::User,
        };
        Ok(pb::InspectResponse {
            account: Some(pb::Account {
                id: claims.sub,
                r#type: kind as i32,
                scopes: claims.scopes,
                metadata: claims.metadata.into_iter().collect(),
                created,
            }),
            token_id: claims.jti,
            issued: claims.iat.unwrap_or_default(),
            expires: claims.exp,
            issuer: claims.iss,
        })
    }

    pub(super) async fn revoke(&self, request: pb::RevokeRequest) -> Result<(), Status> {
        let now = self.now();
        if !request.token_id.is_empty() {
            return self
                .revoke_record(RevocationRecord {
                    token_id: request.token_id,
                    account_id: String::new(),
                    issued_before: 0,
                    expires: now + self.token_horizon(),
                })
                .await;
        }
        if request.token.is_empty() {
            return Err(invalid("one of token or token_id is required"));
        }
        if request.token.matches('.').count() == 2 {
            use micro_core::auth::TokenError;
            return match self
                .inner
                .verifier
                .verify_at(&request.token, (self.inner.options.clock)())
            {
                Ok(claims) => {
                    self.revoke_record(RevocationRecord {
                        token_id: claims.jti,
                        account_id: String::new(),
                        issued_before: 0,
                        expires: claims.exp + secs(DEFAULT_LEEWAY),
                    })
                    .await
                }
                // Nothing left to revoke (RFC 7009 §2.2).
                Err(TokenError::Revoked | TokenError::Expired) => Ok(()),
                Err(error) => Err(invalid(format!(
                    "token is not an access token of this service: {error}"
                ))),
            };
        }
        // A refresh token; an unknown one is already unusable (RFC 7009 §2.2).
        let deleted = self
            .inner
            .store
            .delete(
                &namespace(REFRESH),
                &sha256_hex(&request.token),
                Condition::None,
            )
            .await
            .map_err(store_status)?;
        tracing::info!(found = deleted, "auth: refresh token revoked");
        Ok(())
    }

    pub(super) async fn revoke_record(&self, record: RevocationRecord) -> Result<(), Status> {
        let ttl = u64::try_from(record.expires - self.now() + secs(DEFAULT_LEEWAY))
            .unwrap_or(1)
            .max(1);
        put_json(
            &self.inner.store,
            REVOCATIONS,
            &record.key(),
            &record,
            Condition::None,
            Some(Duration::from_secs(ttl)),
        )
        .await?;
        self.remember_revocation(&record);
        tracing::info!(token = %record.token_id, account = %record.account_id, "auth: revoked");
        Ok(())
    }

    pub(super) fn remember_revocation(&self, record: &RevocationRecord) {
        // Entries of expired tokens go as new ones come, so memory follows live tokens.
        self.inner
            .revocations
            .purge((self.inner.options.clock)(), DEFAULT_LEEWAY);
        if record.token_id.is_empty() {
            self.inner.revocations.revoke_account(
                record.account_id.clone(),
                record.issued_before,
                record.expires,
            );
        } else {
            self.inner
                .revocations
                .revoke(record.token_id.clone(), record.expires);
        }
    }

    pub(super) async fn list_revocations(&self) -> Result<Vec<pb::Revocation>, Status> {
        let now = self.now();
        self.inner
            .revocations
            .purge((self.inner.options.clock)(), DEFAULT_LEEWAY);
        Ok(
            all_decoded::<RevocationRecord>(&self.inner.store, REVOCATIONS)
                .await?
                .iter()
                .filter(|r| r.expires + secs(DEFAULT_LEEWAY) >= now)
                .map(RevocationRecord::to_proto)
                .collect(),
        )
    }
}

/// The scopes to put in a token: all of `held` when none are asked for, else the asked
/// ones, each of which must be held.
pub(super) fn narrow(held: &[String], asked: &[String]) -> Result<Vec<String>, Status> {
    if asked.is_empty() {
        return Ok(held.to_vec());
    }
    let held: HashSet<&str> = held.iter().map(String::as_str).collect();
    let mut scopes = Vec::with_capacity(asked.len());
    for scope in asked {
        if !held.contains(scope.as_str()) {
            return Err(invalid(format!(
                "scope {scope:?} is not held by the account (invalid_scope)"
            )));
        }
        if !scopes.contains(scope) {
            scopes.push(scope.clone());
        }
    }
    Ok(scopes)
}

pub(super) fn account_kind(account: &AccountRecord) -> AccountKind {
    match account.kind() {
        pb::AccountType::Service => AccountKind::Service,
        _ => AccountKind::User,
    }
}

pub(super) fn sha256_hex(token: &str) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_narrow_to_held_ones() {
        let held = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(narrow(&held, &[]).unwrap(), held);
        assert_eq!(narrow(&held, &["b".to_owned()]).unwrap(), vec!["b"]);
        let err = narrow(&held, &["c".to_owned()]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("\"c\""), "{}", err.message());
    }

    #[test]
    fn refresh_tokens_are_stored_as_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
