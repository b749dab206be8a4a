//! The schema cache: per registered service, its descriptors fetched once by reflection and
//! kept until the set of versions in its registry records changes.
//!
//! The hot path is a map lookup and a pointer comparison: the client's registry cache keeps
//! each name's records current in a `watch` channel, and an entry remembers the records it
//! was last checked against. Only when they changed are the versions compared, and only
//! when those changed are the schemas fetched again, by one request while the others wait
//! for it (single flight).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::uri::PathAndQuery;
use micro_core::{Channel, Client, registry::Service as Record};
use prost_reflect::{MethodDescriptor, ServiceDescriptor};
use tokio::{sync::watch, time::Instant};
use tonic::Code;

use super::{ServiceSchema, error::ApiError, rest::RestRoutes};
use crate::dynamic::{self, ReflectionError};

/// How long a failed fetch is answered from memory before reflection is tried again.
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);

/// The longest service name looked up in the registry.
const MAX_NAME: usize = 256;

/// One gRPC method as the gateway calls it.
#[derive(Debug)]
pub(crate) struct Method {
    pub(crate) descriptor: MethodDescriptor,
    /// `/greeter.v1.Greeter/SayHello`.
    pub(crate) path: PathAndQuery,
}

/// A service's schemas, ready for routing.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) schema: Arc<ServiceSchema>,
    pub(crate) channel: Channel,
    /// gRPC service name (short and full) → method name → method.
    services: HashMap<String, HashMap<String, Arc<Method>>>,
    /// Method name → the method, `None` when several services have one of that name.
    short: HashMap<String, Option<Arc<Method>>>,
}

/// The entry of one name and the records it was last checked against.
#[derive(Debug)]
struct Current {
    records: Arc<Vec<Record>>,
    entry: Arc<Entry>,
}

/// The last failed fetch of a name: when, for which versions, and why.
#[derive(Debug)]
struct Failure {
    at: Instant,
    version: String,
    error: ApiError,
}

/// One registered name.
#[derive(Debug)]
struct Slot {
    records: watch::Receiver<Arc<Vec<Record>>>,
    current: ArcSwapOption<Current>,
    /// Held while fetching: the single flight.
    fetch: tokio::sync::Mutex<Option<Failure>>,
}

/// Every name the gateway has seen.
#[derive(Debug)]
pub(crate) struct Schemas {
    client: Client,
    timeout: Duration,
    slots: ArcSwap<HashMap<String, Arc<Slot>>>,
    /// The entries with REST routes, tried on every request.
    rest: ArcSwap<Vec<Arc<Entry>>>,
}

// === impl Entry ===

impl Entry {
    fn new(schema: ServiceSchema, channel: Channel) -> Self {
        let mut services: HashMap<String, HashMap<String, Arc<Method>>> = HashMap::new();
        let mut short: HashMap<String, Option<Arc<Method>>> = HashMap::new();
        let mut short_services: HashMap<String, usize> = HashMap::new();
        for service in &schema.services {
            *short_services.entry(service.name().to_owned()).or_default() += 1;
        }
        for service in &schema.services {
            let mut methods = HashMap::new();
            for descriptor in service.methods() {
                let Ok(path) = PathAndQuery::try_from(format!(
                    "/{}/{}",
                    service.full_name(),
                    descriptor.name()
                )) else {
                    continue;
                };
                let method = Arc::new(Method { descriptor, path });
                short
                    .entry(method.descriptor.name().to_owned())
                    .and_modify(|known| *known = None)
                    .or_insert_with(|| Some(method.clone()));
                methods.insert(method.descriptor.name().to_owned(), method);
            }
            if short_services.get(service.name()) == Some(&1) {
                services.insert(service.name().to_owned(), methods.clone());
            }
            services.insert(service.full_name().to_owned(), methods);
        }
        Self {
            schema: Arc::new(schema),
            channel,
            services,
            short,
        }
    }

    /// The method `Service/Method` (`Service` short or full), or `Method` alone (go-micro's
    /// short form, when one service has it), or `Service.Method`.
    pub(crate) fn method(
        &self,
        service: Option<&str>,
        method: &str,
    ) -> Result<Arc<Method>, ApiError> {
        let found = match service {
            Some(service) => self
                .services
                .get(service)
                .and_then(|methods| methods.get(method))
                .cloned(),
            None => match self.short.get(method) {
                Some(Some(found)) => Some(found.clone()),
                Some(None) => {
                    return Err(ApiError::not_found(format!(
                        "method {method:?} of service {} is ambiguous: use \
                         /{}/<Service>/{method}",
                        self.schema.name, self.schema.name
                    )));
                }
                None => method.rsplit_once('.').and_then(|(service, method)| {
                    self.services
                        .get(service)
                        .and_then(|methods| methods.get(method))
                        .cloned()
                }),
            },
        };
        found.ok_or_else(|| {
            let known: Vec<String> = self
                .schema
                .services
                .iter()
                .flat_map(|s| {
                    s.methods()
                        .map(|m| format!("{}/{}", s.name(), m.name()))
                        .collect::<Vec<_>>()
                })
                .collect();
            let name = match service {
                Some(service) => format!("{service}/{method}"),
                None => method.to_owned(),
            };
            ApiError::not_found(format!(
                "service {} has no method {name}; it has: {}",
                self.schema.name,
                known.join(", ")
            ))
        })
    }
}

// === impl Schemas ===

impl Schemas {
    /// A cache whose schemas come through `client`, each fetch taking at most `timeout`.
    pub(crate) fn new(client: Client, timeout: Duration) -> Self {
        Self {
            client,
            timeout,
            slots: ArcSwap::default(),
            rest: ArcSwap::default(),
        }
    }

    /// The entries with REST routes.
    pub(crate) fn rest(&self) -> Arc<Vec<Arc<Entry>>> {
        self.rest.load_full()
    }

    /// The schemas of the service registered as `name`.
    ///
    /// # Errors
    /// NOT_FOUND when the registry has no node of it; UNAVAILABLE when the registry or
    /// the service's reflection cannot be had.
    pub(crate) async fn get(&self, name: &str) -> Result<Arc<Entry>, ApiError> {
        let slot = match self.slots.load().get(name) {
            Some(slot) => slot.clone(),
            None => self.open(name).await?,
        };
        let records = slot.records.borrow().clone();
        if records.iter().all(|record| record.nodes.is_empty()) {
            return Err(self.not_found(name));
        }
        if let Some(current) = &*slot.current.load()
            && Arc::ptr_eq(&current.records, &records)
        {
            return Ok(current.entry.clone());
        }
        self.refresh(&slot, name, records).await
    }

    /// The schemas of every registered service whose schemas can be had.
    pub(crate) async fn all(&self) -> Vec<Arc<ServiceSchema>> {
        let records = match tokio::time::timeout(
            self.timeout,
            self.client.registry().inner().list_services(),
        )
        .await
        {
            Ok(Ok(records)) => records,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cannot list the registry's services");
                return Vec::new();
            }
            Err(_) => {
                tracing::warn!("the registry did not list its services in time");
                return Vec::new();
            }
        };
        let mut names: Vec<String> = records
            .into_iter()
            .filter(|record| !record.nodes.is_empty())
            .map(|record| record.name)
            .collect();
        names.sort();
        names.dedup();
        let fetches = names.iter().map(|name| self.get(name));
        futures_util::future::join_all(fetches)
            .await
            .into_iter()
            .zip(&names)
            .filter_map(|(entry, name)| match entry {
                Ok(entry) => Some(entry.schema.clone()),
                Err(err) => {
                    tracing::debug!(service = %name, error = %err, "skipped: no schemas");
                    None
                }
            })
            .collect()
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(format!(
            "service {name} not found in registry {}",
            self.client.registry().inner().name()
        ))
    }

    /// The slot of a name not seen yet; `None` (404) when it has no node.
    async fn open(&self, name: &str) -> Result<Arc<Slot>, ApiError> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(self.not_found(name));
        }
        let records = tokio::time::timeout(self.timeout, self.client.registry().subscribe(name))
            .await
            .map_err(|_| {
                ApiError::new(
                    Code::Unavailable,
                    format!(
                        "registry {} did not answer within {:?}",
                        self.client.registry().inner().name(),
                        self.timeout
                    ),
                )
            })?
            .map_err(|err| {
                ApiError::new(
                    Code::Unavailable,
                    format!("registry {}: {err}", self.client.registry().inner().name()),
                )
            })?;
        // Names without nodes are not remembered: random paths cannot grow the map.
        if records
            .borrow()
            .iter()
            .all(|record| record.nodes.is_empty())
        {
            return Err(self.not_found(name));
        }
        let slot = Arc::new(Slot {
            records,
            current: ArcSwapOption::empty(),
            fetch: tokio::sync::Mutex::new(None),
        });
        self.slots.rcu(|slots| {
            let mut slots = HashMap::clone(slots);
            slots.entry(name.to_owned()).or_insert_with(|| slot.clone());
            slots
        });
        Ok(self.slots.load().get(name).cloned().unwrap_or(slot))
    }

    /// Checks the versions of `records` against the entry's, fetching the schemas again
    /// when they changed; one fetch at a time per name.
    async fn refresh(
        &self,
        slot: &Slot,
        name: &str,
        records: Arc<Vec<Record>>,
    ) -> Result<Arc<Entry>, ApiError> {
        let version = versions(&records);
        let mut failure = slot.fetch.lock().await;
        let current = slot.current.load_full();
        if let Some(current) = &current
            && current.entry.schema.version == version
        {
            let entry = current.entry.clone();
            slot.current.store(Some(Arc::new(Current {
                records,
                entry: entry.clone(),
            })));
            return Ok(entry);
        }
        if let Some(failed) = &*failure
            && failed.version == version
            && failed.at.elapsed() < FAILURE_BACKOFF
        {
            return Err(failed.error.clone());
        }
        match self.fetch(name, version.clone(), &records).await {
            Ok(entry) => {
                *failure = None;
                slot.current.store(Some(Arc::new(Current {
                    records,
                    entry: entry.clone(),
                })));
                self.update_rest();
                Ok(entry)
            }
            Err(error) => {
                *failure = Some(Failure {
                    at: Instant::now(),
                    version,
                    error: error.clone(),
                });
                match current {
                    Some(stale) => {
                        tracing::warn!(
                            service = %name, error = %error,
                            "cannot fetch the new schemas; serving the previous ones"
                        );
                        Ok(stale.entry.clone())
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// Fetches `name`'s schemas by reflection.
    async fn fetch(
        &self,
        name: &str,
        version: String,
        records: &[Record],
    ) -> Result<Arc<Entry>, ApiError> {
        let channel = self.client.channel(name);
        let pool =
            match tokio::time::timeout(self.timeout, dynamic::fetch_pool(channel.clone())).await {
                Ok(Ok(pool)) => pool,
                Ok(Err(ReflectionError::Status(status))) => {
                    return Err(ApiError::new(
                        Code::Unavailable,
                        format!(
                            "service {name}: no schemas by reflection: {}: {}",
                            super::error::code_name(status.code()),
                            status.message()
                        ),
                    ));
                }
                Ok(Err(err)) => {
                    return Err(ApiError::new(
                        Code::Unavailable,
                        format!("service {name}: {err}"),
                    ));
                }
                Err(_) => {
                    return Err(ApiError::new(
                        Code::Unavailable,
                        format!(
                            "service {name}: reflection did not answer within {:?}",
                            self.timeout
                        ),
                    ));
                }
            };
        // One server may serve several registered names (`micro server` does): the
        // methods a name registered pick its services; without any, all of them.
        let registered: HashSet<&str> = records
            .iter()
            .flat_map(|record| record.endpoints.iter())
            .map(|endpoint| endpoint.name.as_str())
            .collect();
        let services: Vec<ServiceDescriptor> = pool
            .services()
            .filter(|service| !is_infrastructure(service.full_name()))
            .filter(|service| {
                registered.is_empty()
                    || service
                        .methods()
                        .any(|method| registered.contains(method.full_name()))
            })
            .collect();
        let (rest, problems) = RestRoutes::from_services(&services);
        for problem in problems {
            tracing::warn!(service = %name, "unusable REST annotation: {problem}");
        }
        tracing::debug!(service = %name, %version, "schemas fetched");
        let schema = ServiceSchema {
            name: name.to_owned(),
            version,
            pool,
            services,
            rest,
        };
        Ok(Arc::new(Entry::new(schema, channel)))
    }

    /// Rebuilds the list of entries with REST routes.
    fn update_rest(&self) {
        let entries: Vec<Arc<Entry>> = self
            .slots
            .load()
            .values()
            .filter_map(|slot| slot.current.load_full())
            .map(|current| current.entry.clone())
            .filter(|entry| !entry.schema.rest.routes().is_empty())
            .collect();
        self.rest.store(Arc::new(entries));
    }
}

/// The versions of `records`, sorted, joined by `,`.
fn versions(records: &[Record]) -> String {
    let mut versions: Vec<&str> = records
        .iter()
        .filter(|record| !record.nodes.is_empty())
        .map(|record| record.version.as_str())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    versions.join(",")
}

/// Health and reflection: every micro service serves them; not routed.
fn is_infrastructure(name: &str) -> bool {
    name.starts_with("grpc.health.") || name.starts_with("grpc.reflection.")
}
