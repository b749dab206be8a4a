//! The mDNS registry: service discovery on a LAN, or on one machine's loopback, with no
//! server to run.
//!
//! ```no_run
//! # fn demo() -> Result<(), micro_core::RegistryError> {
//! use micro_plugins::mdns::MdnsRegistry;
//!
//! // Every interface that is up: services on the LAN find each other.
//! let lan = MdnsRegistry::builder().build()?;
//! // Loopback only: services on this machine; nothing is ever sent on another interface.
//! let local = MdnsRegistry::builder().interface_loopback_only().build()?;
//! # Ok(()) }
//! ```
//!
//! or by URL once [`install`] (or [`crate::install`]) has taught micro-core the `mdns`
//! scheme: `MICRO_REGISTRY=mdns://` (all interfaces), `mdns://?interface=lo` (loopback
//! only), `mdns://?interface=eth0,eth1`, and `&port=5454` for a private port.
//!
//! # Records
//!
//! Each registered node is one DNS-SD service instance (RFC 6763) of the service type
//! [`SERVICE_TYPE`] (`_micro._tcp.local.`), for every micro service: one type lets a
//! registry list all services with one browse, and DNS subtypes could not carry micro's
//! case-sensitive names of up to 200 characters. The instance label is a readable part of
//! the node id plus a 64-bit hash of the (service, node id) key, so it fits DNS' 63 bytes;
//! the host name is `<label>.local.`. The TXT record carries the record itself:
//!
//! | key | value |
//! |---|---|
//! | `txtvers` | `1` |
//! | `service`, `version`, `node`, `address` | the service name and version, the node id and address |
//! | `s.<key>` / `n.<key>` | service / node metadata |
//! | `e`, `e<i>.name`, `e<i>.req`, `e<i>.res`, `e<i>.m.<key>` | the number of endpoints; each endpoint's name, request and response types and metadata |
//!
//! A TXT entry (`key=value`) holds at most 255 bytes and the whole record must fit in one
//! packet (at most 1100 bytes here): `register` fails with
//! [`RegistryError::InvalidRecord`] naming the key that does not fit, instead of splitting
//! or truncating. Metadata keys must be printable ASCII without `=`; DNS-SD compares TXT
//! keys case-insensitively, so keys differing only in case should be avoided. SRV and A
//! records are sent too (the port of `host:port` addresses, and the addresses of the
//! interfaces in use) for generic DNS-SD tools, but micro reads only the TXT record.
//!
//! # TTL, refresh and goodbye
//!
//! The registration's TTL becomes the TTL of all its DNS records (at least 5 s: caches
//! query a record again at 80 % and 90 % of its life, which needs a few seconds to be of
//! use): another host drops a node whose responder stopped answering (a crashed process)
//! once that TTL has passed. The registry's engine answers queries for its records while
//! they are registered; each `register` (a service's heartbeat) announces them again (a
//! new or changed node twice, a second apart). A node that is not registered again within
//! its TTL is withdrawn by its own registry, like an expired lease. `deregister` sends
//! goodbye packets (TTL 0), so watchers elsewhere see `Delete` at once; dropping the last
//! clone of the registry stops its engine, which says goodbye for every node still
//! registered. `deregister` can only withdraw nodes registered through the same registry
//! value (only their responder can say goodbye); others are ignored.
//!
//! # Reads and watches
//!
//! A registry browses [`SERVICE_TYPE`] from its creation (a PTR query at once, then at
//! doubling intervals up to an hour), keeps the TXT records it hears in memory until their
//! TTL runs out (asking for them again before), its own nodes included (it hears its own
//! announcements, in the order it sent them): `get_service` and `list_services` read that view, and every watcher receives
//! the changes of the view (`Create`, `Update` when a node's TXT record changes, `Delete`
//! on goodbye or expiry). The view is eventually consistent: a node registered here or
//! elsewhere becomes visible when its announcement has been received and resolved, usually
//! within a second; a registry that was just created knows nothing until its first queries
//! have been answered. So `register` followed at once by `get_service` may not show the
//! node yet: wait for the watch event (micro-core's conformance suite does).
//!
//! # Interfaces
//!
//! mDNS over IPv4. Each registry has one UDP socket, bound to `0.0.0.0:<port>` with
//! `SO_REUSEADDR` and `SO_REUSEPORT` (registries of one machine share the port),
//! multicast loop on (they hear each other) and TTL 255. By default it uses the IPv4
//! addresses of every interface that is not down, loopback included, and follows them as
//! they come and go (checked every 30 s). With
//! [`MdnsRegistryBuilder::interface_loopback_only`] it uses only 127.0.0.1, and with
//! [`MdnsRegistryBuilder::interfaces`] only the named interfaces' addresses.
//!
//! The selection is resolved before the socket does anything: it joins 224.0.0.251 only
//! with the selected addresses (so the kernel's IGMP reports go out only there), sets
//! `IP_MULTICAST_IF` to a selected address before every multicast send (and skips the send
//! if it cannot), turns `IP_MULTICAST_ALL` off (Linux: it hears only its own
//! memberships), answers unicast only to a source it accepted, and drops every packet
//! whose source is not on a selected interface's subnet (loopback only: 127.0.0.0/8). So
//! nothing is ever sent on another interface. [`MdnsRegistry::interfaces`] reports the
//! interfaces in use. Loopback works without the `MULTICAST` flag on `lo`: Linux routes
//! link-local multicast (224.0.0.251) out of the interface chosen with `IP_MULTICAST_IF`.
//!
//! The engine is micro's own small DNS-SD responder and browser (on a thread of its own,
//! so no runtime is needed to build a registry); the DNS wire format is the `simple-dns`
//! crate's. It does not probe for name conflicts (instance names are unique by
//! construction, see above) and does not speak IPv6.

mod engine;
mod iface;
mod txt;
mod url;
mod wire;

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use futures_util::{StreamExt, stream};
use micro_core::lock::lock;
use micro_core::registry::{
    Event, EventKind, RegisterOptions, Registry, RegistryError, Service, WatchOptions, Watcher,
    group, single, validate_deregister, validate_register,
};
use tokio::{
    sync::{Notify, broadcast, oneshot},
    time::Instant,
};

pub use url::{SCHEME, from_url, install};

/// The DNS-SD service type every micro node is advertised under.
pub const SERVICE_TYPE: &str = "_micro._tcp.local.";

/// The mDNS port (5353), used unless [`MdnsRegistryBuilder::port`] says otherwise.
pub const DEFAULT_PORT: u16 = 5353;

/// How many events a watcher may fall behind before its stream ends with an error.
const WATCH_BUFFER: usize = 1024;

/// How long a request to the engine thread may take.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest TTL of the DNS records: caches query a record again at 80 % and 90 % of its
/// life, which leaves a heartbeat or a lost packet too little time below a few seconds.
const MIN_RECORD_TTL_SECS: u32 = 5;

/// Stands in for "never" when `now + ttl` overflows.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A [`Registry`] on multicast DNS (DNS-SD). Clones share the engine and the records.
///
/// See the [module documentation](self) for the record layout, TTLs, consistency and the
/// interface guarantee.
#[derive(Clone)]
pub struct MdnsRegistry {
    inner: Arc<Inner>,
}

/// Builds an [`MdnsRegistry`]; from [`MdnsRegistry::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MdnsRegistryBuilder {
    interfaces: Interfaces,
    port: u16,
}

/// Which interfaces the engine uses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Interfaces {
    All,
    LoopbackV4,
    Named(Vec<String>),
}

struct Inner {
    name: String,
    engine: engine::Handle,
    shared: Arc<Shared>,
    /// Nodes registered through this registry, by (service, node id).
    own: Mutex<BTreeMap<(String, String), Own>>,
    /// Wakes the expiry task when an expiry may have moved.
    wake: Arc<Notify>,
    expiry_running: AtomicBool,
}

/// What the engine thread and the registry share.
struct Shared {
    name: String,
    view: Mutex<View>,
    events: broadcast::Sender<Event>,
}

/// The nodes resolved by browsing (own ones included).
#[derive(Default)]
struct View {
    /// (service, node id) → one-node record.
    nodes: BTreeMap<(String, String), Service>,
    /// Lower-case instance full name → (service, node id).
    instances: HashMap<String, (String, String)>,
}

struct Own {
    /// The instance's lower-case full name.
    key: String,
    expires_at: Instant,
}

// === impl MdnsRegistryBuilder ===

impl MdnsRegistryBuilder {
    /// Uses only the IPv4 loopback interface: services on this machine find each other and
    /// no packet is ever sent on another interface. Default is every interface.
    pub fn interface_loopback_only(mut self) -> Self {
        self.interfaces = Interfaces::LoopbackV4;
        self
    }

    /// Uses only the IPv4 addresses of the interfaces with these names (for example
    /// `eth0`). Default is every interface.
    pub fn interfaces<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.interfaces = Interfaces::Named(names.into_iter().map(Into::into).collect());
        self
    }

    /// Uses every interface that is not down, loopback included (the default).
    pub fn all_interfaces(mut self) -> Self {
        self.interfaces = Interfaces::All;
        self
    }

    /// The UDP port to send to and listen on. Default is [`DEFAULT_PORT`] (5353). Only
    /// registries on the same port see each other: another port keeps a test or an
    /// environment apart from everything else on the network.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The registry: opens its socket on the selected interfaces and starts the engine
    /// thread, which browses at once.
    ///
    /// # Errors
    /// [`RegistryError::Backend`] when no interface is named, the selected ones have no IPv4
    /// address, the interfaces cannot be read, the socket cannot be opened or joined to the
    /// group on any of them, or the thread cannot start.
    pub fn build(self) -> Result<MdnsRegistry, RegistryError> {
        let name = self.url();
        let interfaces = match self.interfaces {
            Interfaces::Named(names) => {
                let names: Vec<String> = names
                    .iter()
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect();
                if names.is_empty() {
                    return Err(RegistryError::backend_msg(
                        &name,
                        "no interface named; name at least one, or use all interfaces",
                    ));
                }
                Interfaces::Named(names)
            }
            other => other,
        };
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let shared = Arc::new(Shared {
            name: name.clone(),
            view: Mutex::new(View::default()),
            events,
        });
        let engine = engine::start(&name, &interfaces, self.port, shared.clone())?;
        Ok(MdnsRegistry {
            inner: Arc::new(Inner {
                name,
                engine,
                shared,
                own: Mutex::new(BTreeMap::new()),
                wake: Arc::new(Notify::new()),
                expiry_running: AtomicBool::new(false),
            }),
        })
    }

    /// The registry's name: the URL that builds it.
    fn url(&self) -> String {
        let mut query = Vec::new();
        match &self.interfaces {
            Interfaces::All => {}
            Interfaces::LoopbackV4 => query.push("interface=lo".to_owned()),
            Interfaces::Named(names) => query.push(format!("interface={}", names.join(","))),
        }
        if self.port != DEFAULT_PORT {
            query.push(format!("port={}", self.port));
        }
        if query.is_empty() {
            "mdns://".to_owned()
        } else {
            format!("mdns://?{}", query.join("&"))
        }
    }
}

impl Default for MdnsRegistryBuilder {
    fn default() -> Self {
        Self {
            interfaces: Interfaces::All,
            port: DEFAULT_PORT,
        }
    }
}

// === impl MdnsRegistry ===

impl MdnsRegistry {
    /// A builder: every interface and port 5353 unless told otherwise.
    pub fn builder() -> MdnsRegistryBuilder {
        MdnsRegistryBuilder::default()
    }

    /// The interfaces the engine uses now, as (interface name, IPv4 address) pairs: the
    /// only ones it has joined the mDNS group on, sends on and accepts packets from.
    ///
    /// # Errors
    /// [`RegistryError::Backend`] when the engine does not answer.
    pub async fn interfaces(&self) -> Result<Vec<(String, IpAddr)>, RegistryError> {
        let name = &self.inner.name;
        let (reply, answer) = oneshot::channel();
        if !self.inner.engine.send(engine::Command::Interfaces(reply)) {
            return Err(RegistryError::backend_msg(
                name,
                "the mDNS engine has stopped",
            ));
        }
        match tokio::time::timeout(ENGINE_TIMEOUT, answer).await {
            Ok(Ok(interfaces)) => Ok(interfaces),
            Ok(Err(_)) => Err(RegistryError::backend_msg(
                name,
                "the mDNS engine stopped before it answered",
            )),
            Err(_) => Err(RegistryError::backend_msg(
                name,
                format!("the mDNS engine did not answer within {ENGINE_TIMEOUT:?}"),
            )),
        }
    }

    /// The DNS-SD instance announcing the one node of `record`.
    fn instance(&self, record: &Service, ttl: Duration) -> Result<wire::Instance, RegistryError> {
        let Some(node) = record.nodes.first() else {
            return Err(RegistryError::InvalidRecord(
                "a record without a node".into(),
            ));
        };
        let entries = txt::encode(record, node)?;
        let label = txt::instance_label(&record.name, &node.id);
        let port = node
            .address
            .parse::<SocketAddr>()
            .map_or(0, |addr| addr.port());
        let ttl = u32::try_from(ttl.as_secs())
            .unwrap_or(u32::MAX)
            .max(MIN_RECORD_TTL_SECS);
        wire::Instance::new(&label, port, entries, ttl).map_err(|err| {
            RegistryError::InvalidRecord(format!(
                "node {:?} of service {:?} cannot be sent over mDNS: {err}",
                node.id, record.name
            ))
        })
    }

    /// Starts the task that withdraws own nodes whose TTL ran out, once.
    fn start_expiry(&self) {
        if !self.inner.expiry_running.swap(true, Ordering::AcqRel) {
            tokio::spawn(expire(Arc::downgrade(&self.inner), self.inner.wake.clone()));
        }
    }
}

impl fmt::Debug for MdnsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MdnsRegistry")
            .field("name", &self.inner.name)
            .field("own", &lock(&self.inner.own).len())
            .field("seen", &lock(&self.inner.shared.view).nodes.len())
            .finish()
    }
}

#[async_trait]
impl Registry for MdnsRegistry {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn register(
        &self,
        service: &Service,
        options: RegisterOptions,
    ) -> Result<(), RegistryError> {
        validate_register(service)?;
        // Build every node's announcement first: a record that cannot be sent registers
        // nothing.
        let instances = service
            .nodes
            .iter()
            .map(|node| self.instance(&single(service, node), options.ttl))
            .collect::<Result<Vec<_>, _>>()?;
        let now = Instant::now();
        let expires_at = now
            .checked_add(options.ttl)
            .unwrap_or_else(|| now + FAR_FUTURE);
        for (node, instance) in service.nodes.iter().zip(instances) {
            let key = instance.key();
            if !self.inner.engine.send(engine::Command::Announce(instance)) {
                return Err(RegistryError::backend_msg(
                    &self.inner.name,
                    format!(
                        "cannot announce node {:?}: the mDNS engine has stopped",
                        node.id
                    ),
                ));
            }
            lock(&self.inner.own).insert(
                (service.name.clone(), node.id.clone()),
                Own { key, expires_at },
            );
        }
        self.start_expiry();
        self.inner.wake.notify_one();
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<(), RegistryError> {
        validate_deregister(service)?;
        for node in &service.nodes {
            let own = lock(&self.inner.own).remove(&(service.name.clone(), node.id.clone()));
            match own {
                Some(own) => self.inner.goodbye(&own.key)?,
                None => tracing::debug!(
                    registry = %self.inner.name, service = %service.name, node = %node.id,
                    "deregister: node not registered through this registry, ignored"
                ),
            }
        }
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, RegistryError> {
        let view = lock(&self.inner.shared.view);
        let records = view
            .nodes
            .range((name.to_owned(), String::new())..)
            .take_while(|((n, _), _)| n == name)
            .map(|(_, record)| record);
        Ok(group(records))
    }

    async fn list_services(&self) -> Result<Vec<Service>, RegistryError> {
        let view = lock(&self.inner.shared.view);
        Ok(group(view.nodes.values()))
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, RegistryError> {
        let receiver = self.inner.shared.events.subscribe();
        let name = self.inner.name.clone();
        let filter = options.service;
        let events = stream::unfold(Some(receiver), move |receiver| {
            let filter = filter.clone();
            let name = name.clone();
            async move {
                let mut receiver = receiver?;
                loop {
                    match receiver.recv().await {
                        Ok(event) => {
                            if filter.as_ref().is_none_or(|f| *f == event.service.name) {
                                return Some((Ok(event), Some(receiver)));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            let err = RegistryError::backend_msg(
                                name,
                                format!(
                                    "watcher fell behind and missed {missed} events; \
                                     watch again and re-read the services"
                                ),
                            );
                            return Some((Err(err), None));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(Box::pin(events.fuse()))
    }
}

// === impl Inner ===

impl Inner {
    /// Withdraws an own instance: the engine stops answering for it and says goodbye.
    fn goodbye(&self, key: &str) -> Result<(), RegistryError> {
        if self.engine.send(engine::Command::Withdraw(key.to_owned())) {
            Ok(())
        } else {
            Err(RegistryError::backend_msg(
                &self.name,
                format!("cannot withdraw {key}: the mDNS engine has stopped"),
            ))
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping `engine` (after this) closes its command channel: the engine says
        // goodbye for every node still registered and stops. Wake the expiry task so it
        // sees the registry is gone.
        self.wake.notify_one();
    }
}

// === impl Shared ===

impl Shared {
    /// A TXT record of `fullname` (lower-case) that is new or changed: decoded into the view,
    /// and the watchers told what changed.
    fn resolved(&self, fullname: &str, entries: &[(String, Option<Vec<u8>>)]) {
        let entries = entries.iter().map(|(k, v)| (k.as_str(), v.as_deref()));
        let record = match txt::decode(entries) {
            Ok(record) => record,
            Err(reason) => {
                tracing::debug!(registry = %self.name, instance = %fullname, %reason, "ignoring an mDNS instance");
                // A node that now says something we cannot read is gone as far as we know.
                self.removed(fullname);
                return;
            }
        };
        let Some(node) = record.nodes.first() else {
            return;
        };
        let key = (record.name.clone(), node.id.clone());
        let mut view = lock(&self.view);
        if let Some(old) = view.instances.insert(fullname.to_owned(), key.clone())
            && old != key
            && let Some(gone) = view.nodes.remove(&old)
        {
            // The instance now describes another node (it cannot, by its name's hash,
            // unless someone else sends it): the old one is gone.
            self.emit(EventKind::Delete, gone);
        }
        let kind = match view.nodes.get(&key) {
            Some(known) if *known == record => None,
            Some(_) => Some(EventKind::Update),
            None => Some(EventKind::Create),
        };
        if let Some(kind) = kind {
            view.nodes.insert(key, record.clone());
            self.emit(kind, record);
        }
    }

    /// `fullname` (lower-case) said goodbye or expired.
    fn removed(&self, fullname: &str) {
        let mut view = lock(&self.view);
        let Some(key) = view.instances.remove(fullname) else {
            return;
        };
        if let Some(record) = view.nodes.remove(&key) {
            self.emit(EventKind::Delete, record);
        }
    }

    fn emit(&self, kind: EventKind, service: Service) {
        tracing::debug!(registry = %self.name, ?kind, service = %service.name, "mDNS registry event");
        // No receivers is fine: nobody watches.
        let _ = self.events.send(Event { kind, service });
    }
}

/// Withdraws own nodes whose TTL ran out without a new `register`, until the registry is
/// dropped.
async fn expire(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else { return };
            let now = Instant::now();
            let mut own = lock(&inner.own);
            let expired: Vec<(String, String)> = own
                .iter()
                .filter(|(_, o)| o.expires_at <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in expired {
                if let Some(gone) = own.remove(&key) {
                    tracing::info!(registry = %inner.name, service = %key.0, node = %key.1, "registration expired; withdrawing it");
                    if let Err(err) = inner.goodbye(&gone.key) {
                        tracing::warn!(%err, "cannot withdraw an expired node");
                    }
                }
            }
            own.values().map(|o| o.expires_at).min()
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}
