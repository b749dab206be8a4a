//! Access rules: create, delete, and handing them to the layers.

use micro_core::lock::lock;

use super::*;

impl AuthService {
    pub(super) async fn create_rule(&self, rule: pb::Rule) -> Result<(), Status> {
        let _write = self.inner.writes.lock().await;
        let record = RuleRecord::from_proto(rule);
        let mut rules: Vec<_> = self.rules().rules().to_vec();
        if rules.iter().any(|r| r.id == record.id) {
            return Err(Status::already_exists(format!(
                "rule {:?} already exists; delete it first to replace it",
                record.id
            )));
        }
        rules.push(record.to_rule());
        RuleSet::new(rules).map_err(|error| invalid(format!("rule {:?}: {error}", record.id)))?;
        put_json(
            &self.inner.store,
            RULES,
            &record.id,
            &record,
            Condition::Absent,
            None,
        )
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Aborted => {
                Status::already_exists(format!("rule {:?} already exists", record.id))
            }
            _ => status,
        })?;
        self.reload_rules().await?;
        tracing::info!(rule = %record.id, "auth: rule created");
        Ok(())
    }

    pub(super) async fn delete_rule(&self, id: &str) -> Result<(), Status> {
        let _write = self.inner.writes.lock().await;
        if id.is_empty() {
            return Err(invalid("rule id is required"));
        }
        let deleted = self
            .inner
            .store
            .delete(&namespace(RULES), id, Condition::None)
            .await
            .map_err(store_status)?;
        if !deleted {
            return Err(Status::not_found(format!("rule {id:?} does not exist")));
        }
        self.reload_rules().await?;
        tracing::info!(rule = %id, "auth: rule deleted");
        Ok(())
    }

    /// Reads the rules from the store and hands them to every layer.
    pub(super) async fn reload_rules(&self) -> Result<(), Status> {
        let records: Vec<RuleRecord> = all_decoded(&self.inner.store, RULES).await?;
        let rules = RuleSet::new(records.iter().map(RuleRecord::to_rule))
            .map_err(|error| Status::data_loss(format!("auth store: stored rules: {error}")))?;
        let layers = lock(&self.inner.layers).clone();
        for layer in layers {
            layer.set_rules(rules.clone());
        }
        self.inner.rules.store(Arc::new(rules));
        Ok(())
    }
}
