//! Signing keys: the JWK Set, rotation and pruning.

use micro_core::lock::{read, write};

use super::*;

impl AuthService {
    /// The JWK Set JSON and the current kid.
    pub(super) async fn jwks(&self) -> Result<(String, String), Status> {
        self.prune_keys().await?;
        let keys = self.inner.verifier.keys();
        let json = serde_json::to_string(&keys.to_jwks())
            .map_err(|error| Status::internal(format!("auth: cannot encode the JWKS: {error}")))?;
        let current = read(&self.inner.keys).issuer.key().kid().to_owned();
        Ok((json, current))
    }

    pub(super) async fn rotate_keys(&self) -> Result<pb::RotateKeysResponse, Status> {
        let _write = self.inner.writes.lock().await;
        let now = self.now();
        let record = new_key(&self.inner.random, now)?;
        let issuer = Arc::new(issuer_for(&self.inner.options, &record)?);
        put_json(
            &self.inner.store,
            KEYS,
            &record.kid,
            &record,
            Condition::Absent,
            None,
        )
        .await?;
        let mut retired = Vec::new();
        let records = read(&self.inner.keys).records.clone();
        for mut old in records {
            if old.retired.is_none() {
                old.retired = Some(now);
                put_json(
                    &self.inner.store,
                    KEYS,
                    &old.kid,
                    &old,
                    Condition::None,
                    None,
                )
                .await?;
            }
            retired.push(old);
        }
        retired.push(record.clone());
        self.inner.verifier.set_keys(key_set(&retired)?);
        *write(&self.inner.keys) = Keys {
            issuer,
            records: retired,
        };
        drop(_write);
        self.prune_keys().await?;
        tracing::info!(kid = %record.kid, "auth: signing key rotated");
        let published = read(&self.inner.keys)
            .records
            .iter()
            .map(|r| r.kid.clone())
            .collect();
        Ok(pb::RotateKeysResponse {
            current_kid: record.kid,
            published_kids: published,
        })
    }

    /// Deletes retired keys whose last token has expired (lifetime + leeway after their
    /// retirement) and publishes the rest.
    pub(super) async fn prune_keys(&self) -> Result<(), Status> {
        let horizon = self.now() - self.token_horizon();
        let expired: Vec<String> = read(&self.inner.keys)
            .records
            .iter()
            .filter(|r| r.retired.is_some_and(|retired| retired <= horizon))
            .map(|r| r.kid.clone())
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        let _write = self.inner.writes.lock().await;
        self.inner
            .store
            .delete_many(&namespace(KEYS), &expired)
            .await
            .map_err(store_status)?;
        let mut keys = write(&self.inner.keys);
        keys.records.retain(|r| !expired.contains(&r.kid));
        self.inner.verifier.set_keys(key_set(&keys.records)?);
        tracing::info!(kids = ?expired, "auth: retired signing keys pruned");
        Ok(())
    }
}

pub(super) fn new_key(random: &SystemRandom, now: i64) -> Result<KeyRecord, Status> {
    let mut id = [0u8; 8];
    random
        .fill(&mut id)
        .map_err(|_| Status::internal("auth: the system random source failed"))?;
    let kid = format!("{now}-{}", URL_SAFE_NO_PAD.encode(id));
    let key = SigningKey::generate(Algorithm::EdDSA, kid.clone())
        .map_err(|error| Status::internal(format!("auth: cannot generate a key: {error}")))?;
    Ok(KeyRecord {
        kid,
        alg: Algorithm::EdDSA.as_str().to_owned(),
        pkcs8: URL_SAFE_NO_PAD.encode(key.to_pkcs8()),
        created: now,
        retired: None,
    })
}

pub(super) fn signing_key(record: &KeyRecord) -> Result<SigningKey, Status> {
    let broken =
        |what: String| Status::data_loss(format!("auth store: key {:?}: {what}", record.kid));
    let alg: Algorithm = record
        .alg
        .parse()
        .map_err(|_| broken(format!("unknown algorithm {:?}", record.alg)))?;
    let pkcs8 = URL_SAFE_NO_PAD
        .decode(&record.pkcs8)
        .map_err(|_| broken("the private key is not base64url".to_owned()))?;
    SigningKey::from_pkcs8(alg, record.kid.clone(), &pkcs8)
        .map_err(|error| broken(error.to_string()))
}

pub(super) fn issuer_for(options: &AuthOptions, record: &KeyRecord) -> Result<Issuer, Status> {
    Ok(Issuer::new(
        options.issuer.clone(),
        options.audience.clone(),
        signing_key(record)?,
    )
    .with_lifetime(options.access_lifetime))
}

pub(super) fn key_set(records: &[KeyRecord]) -> Result<KeySet, Status> {
    let mut set = KeySet::new();
    for record in records {
        set.insert_signing(&signing_key(record)?).map_err(|error| {
            Status::data_loss(format!("auth store: key {:?}: {error}", record.kid))
        })?;
    }
    Ok(set)
}
