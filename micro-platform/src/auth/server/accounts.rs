//! Accounts: create, list, delete, rotate secrets; argon2id hashing.

use super::*;

impl AuthService {
    pub(super) async fn generate(
        &self,
        request: pb::GenerateRequest,
    ) -> Result<pb::GenerateResponse, Status> {
        validate_id(&request.id).map_err(invalid)?;
        for scope in &request.scopes {
            validate_scope(scope).map_err(invalid)?;
        }
        let kind = match pb::AccountType::try_from(request.r#type) {
            Ok(pb::AccountType::Service) => "service",
            Ok(pb::AccountType::User | pb::AccountType::Unspecified) => "user",
            Err(_) => return Err(invalid(format!("unknown account type {}", request.r#type))),
        };
        let secret = self.secret_or_generate(request.secret)?;
        let record = AccountRecord {
            id: request.id,
            kind: kind.to_owned(),
            scopes: request.scopes,
            metadata: request.metadata.into_iter().collect(),
            created: self.now(),
            secret_hash: self.hash(secret.clone()).await?,
        };
        put_json(
            &self.inner.store,
            ACCOUNTS,
            &record.id,
            &record,
            Condition::Absent,
            None,
        )
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Aborted => {
                Status::already_exists(format!("account {:?} already exists", record.id))
            }
            _ => status,
        })?;
        tracing::info!(account = %record.id, kind, "auth: account created");
        Ok(pb::GenerateResponse {
            account: Some(record.to_proto()),
            secret,
        })
    }

    pub(super) async fn list_accounts(&self) -> Result<Vec<pb::Account>, Status> {
        Ok(all_decoded::<AccountRecord>(&self.inner.store, ACCOUNTS)
            .await?
            .iter()
            .map(AccountRecord::to_proto)
            .collect())
    }

    pub(super) async fn delete_account(&self, id: &str) -> Result<(), Status> {
        validate_id(id).map_err(invalid)?;
        let deleted = self
            .inner
            .store
            .delete(&namespace(ACCOUNTS), id, Condition::None)
            .await
            .map_err(store_status)?;
        if !deleted {
            return Err(Status::not_found(format!("account {id:?} does not exist")));
        }
        // Every access token issued until now, including this second.
        let now = self.now();
        self.revoke_record(RevocationRecord {
            token_id: String::new(),
            account_id: id.to_owned(),
            issued_before: now + 1,
            expires: now + self.token_horizon(),
        })
        .await?;
        let refresh = all(&self.inner.store, REFRESH).await?;
        let mine: Vec<String> = refresh
            .iter()
            .filter(|record| {
                decode::<RefreshRecord>(REFRESH, record).is_ok_and(|r| r.account == id)
            })
            .map(|record| record.key.clone())
            .collect();
        for chunk in mine.chunks(micro_core::store::MAX_BATCH) {
            self.inner
                .store
                .delete_many(&namespace(REFRESH), chunk)
                .await
                .map_err(store_status)?;
        }
        tracing::info!(account = %id, refresh_tokens = mine.len(), "auth: account deleted, its tokens revoked");
        Ok(())
    }

    pub(super) async fn rotate_secret(&self, id: &str, secret: String) -> Result<String, Status> {
        validate_id(id).map_err(invalid)?;
        let secret = self.secret_or_generate(secret)?;
        let hash = self.hash(secret.clone()).await?;
        let Some(stored) = self
            .inner
            .store
            .get(&namespace(ACCOUNTS), id)
            .await
            .map_err(store_status)?
        else {
            return Err(Status::not_found(format!("account {id:?} does not exist")));
        };
        let mut record: AccountRecord = decode(ACCOUNTS, &stored)?;
        record.secret_hash = hash;
        put_json(
            &self.inner.store,
            ACCOUNTS,
            id,
            &record,
            Condition::Version(stored.version),
            None,
        )
        .await?;
        tracing::info!(account = %id, "auth: secret rotated");
        Ok(secret)
    }

    pub(super) fn secret_or_generate(&self, secret: String) -> Result<String, Status> {
        if secret.is_empty() {
            return random_token(&self.inner.random);
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(invalid(format!(
                "secret must be at least {MIN_SECRET_LEN} bytes, got {}; leave it empty to \
                 have one generated",
                secret.len()
            )));
        }
        Ok(secret)
    }

    pub(super) async fn hash(&self, secret: String) -> Result<String, Status> {
        let _permit = self
            .inner
            .hashing
            .acquire()
            .await
            .map_err(|_| Status::unavailable("auth: the service is shutting down"))?;
        hash_blocking(secret, &self.inner.random).await
    }

    /// Verifies `secret` against `hash` (argon2id) on the blocking pool.
    pub(super) async fn verify_secret(&self, secret: String, hash: String) -> Result<bool, Status> {
        let _permit = self
            .inner
            .hashing
            .acquire()
            .await
            .map_err(|_| Status::unavailable("auth: the service is shutting down"))?;
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(secret.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .map_err(|error| Status::internal(format!("auth: secret verification failed: {error}")))
    }
}

/// 32 random bytes, base64url without padding.
pub(super) fn random_token(random: &SystemRandom) -> Result<String, Status> {
    let mut bytes = [0u8; 32];
    random
        .fill(&mut bytes)
        .map_err(|_| Status::internal("auth: the system random source failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The argon2id PHC string of `secret` (default parameters), computed on the blocking pool.
pub(super) async fn hash_blocking(secret: String, random: &SystemRandom) -> Result<String, Status> {
    let mut salt = [0u8; 16];
    random
        .fill(&mut salt)
        .map_err(|_| Status::internal("auth: the system random source failed"))?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&salt)
            .map_err(|error| Status::internal(format!("auth: salt: {error}")))?;
        Argon2::default()
            .hash_password(secret.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| Status::internal(format!("auth: cannot hash a secret: {error}")))
    })
    .await
    .map_err(|error| Status::internal(format!("auth: hashing failed: {error}")))?
}
