//! Registers each platform service of `micro server` under its own name (`micro.kv`,
//! `micro.registry`, `micro.config`, `micro.sync`, `micro.event`), at the server's
//! address, and keeps the registrations alive.
//!
//! micro's `Service` registers one name; the server serves several gRPC services on one
//! port, and clients find each by its own name, with the endpoints (and so the retry
//! rules) of that service alone.

use std::time::Duration;

use micro_core::{
    codegen::ServiceDescriptor,
    registry::{Endpoint, Node, RegisterOptions, Service as Record, SharedRegistry},
    service::RunningService,
};
use tokio::{sync::oneshot, task::JoinHandle};

/// Registration TTL of each name; the same default as micro's `Service`.
pub(crate) const TTL: Duration = micro_core::service::DEFAULT_REGISTER_TTL;
/// Re-registration interval; the same default as micro's `Service`.
pub(crate) const INTERVAL: Duration = micro_core::service::DEFAULT_REGISTER_INTERVAL;

/// The registrations of the platform services, heartbeating until [`Aliases::stop`].
#[derive(Debug)]
pub(crate) struct Aliases {
    registry: SharedRegistry,
    records: Vec<Record>,
    heartbeat: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Aliases {
    /// The record of `name` serving `descriptor` on the node of `running`.
    pub(crate) fn record(
        running: &RunningService,
        name: &str,
        descriptor: &ServiceDescriptor,
    ) -> Record {
        let node = running.record().nodes.first();
        // `micro.server-<uuid>` → `micro.kv-<uuid>`: unique per start, like every node id.
        let suffix = running
            .node_id()
            .strip_prefix(&format!("{}-", running.record().name))
            .unwrap_or(running.node_id());
        Record {
            name: name.to_owned(),
            version: running.record().version.clone(),
            metadata: running.record().metadata.clone(),
            endpoints: descriptor
                .endpoints
                .iter()
                .map(|e| Endpoint::from_descriptor(descriptor.name, e))
                .collect(),
            nodes: vec![Node {
                id: format!("{name}-{suffix}"),
                address: running.advertised_address().to_owned(),
                metadata: node.map(|n| n.metadata.clone()).unwrap_or_default(),
            }],
        }
    }

    /// Registers `records` and starts re-registering them every [`INTERVAL`].
    pub(crate) async fn start(
        registry: SharedRegistry,
        records: Vec<Record>,
    ) -> Result<Self, micro_core::RegistryError> {
        let options = RegisterOptions { ttl: TTL };
        for record in &records {
            registry.register(record, options).await?;
        }
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let registry = registry.clone();
            let records = records.clone();
            async move {
                let start = tokio::time::Instant::now() + INTERVAL;
                let mut ticks = tokio::time::interval_at(start, INTERVAL);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = ticks.tick() => {}
                        _ = &mut stopped => return,
                    }
                    for record in &records {
                        if let Err(err) = registry.register(record, options).await {
                            tracing::warn!(service = %record.name, error = %err, "re-registration failed; retrying next interval");
                        }
                    }
                }
            }
        });
        Ok(Self {
            registry,
            records,
            heartbeat: Some((stop, task)),
        })
    }

    /// Stops re-registering, then deregisters every name. Calling it again does nothing.
    pub(crate) async fn stop(&mut self) {
        let Some((stop, task)) = self.heartbeat.take() else {
            return;
        };
        let _ = stop.send(());
        // A registration in flight must end before deregistering, or it would bring the
        // record back for a whole TTL.
        let _ = task.await;
        for record in &self.records {
            if let Err(err) = self.registry.deregister(record).await {
                tracing::warn!(service = %record.name, error = %err, "deregistration failed; the node expires with its TTL");
            }
        }
    }
}

impl Drop for Aliases {
    fn drop(&mut self) {
        if let Some((_, task)) = self.heartbeat.take() {
            task.abort();
        }
    }
}
