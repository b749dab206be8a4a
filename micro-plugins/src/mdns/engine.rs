//! The mDNS engine under [`super::MdnsRegistry`]: one UDP socket, a responder for the
//! registry's own instances and a browser of `_micro._tcp.local`, on a thread of its own
//! (with a current-thread tokio runtime, so a registry needs no runtime of the caller's).
//!
//! # Interfaces
//!
//! Everything the engine puts on a network goes through three calls, each given only an
//! address of a selected interface ([`Iface`]):
//!
//! - `IP_ADD_MEMBERSHIP` of 224.0.0.251 in [`open_socket`] and [`Engine::rescan`], with the
//!   interface's address (the kernel's IGMP reports follow the memberships);
//! - [`Engine::multicast`], which sets `IP_MULTICAST_IF` to the interface's address before
//!   each send and skips the send if that fails;
//! - [`Engine::answer`]'s unicast replies, only to a source that passed the filter below.
//!
//! Received packets are dropped unless their source is on a selected interface's subnet
//! (loopback only: 127.0.0.0/8), and `IP_MULTICAST_ALL` is off so the socket hears only the
//! groups it joined itself, on the interfaces it joined them on.

use std::{
    collections::{BTreeMap, HashMap, hash_map},
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
    time::Duration,
};

use micro_core::registry::RegistryError;
use simple_dns::TYPE;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    Interfaces, Shared,
    iface::{self, Iface},
    wire::{self, Instance, Message, Query, Reply, SERVICE, Seen},
};

/// The mDNS IPv4 group.
pub(crate) const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

/// The largest mDNS packet (RFC 6762 §17).
const RECV_BUFFER: usize = 9000;

/// The first pause between browse queries; it doubles up to [`BROWSE_MAX`] (RFC 6762 §5.2).
const BROWSE_FIRST: Duration = Duration::from_secs(1);
const BROWSE_MAX: Duration = Duration::from_secs(3600);

/// A new or changed instance is announced twice, this far apart (RFC 6762 §8.3).
const REANNOUNCE_AFTER: Duration = Duration::from_secs(1);

/// How often the interfaces of "all" or named selections are read again.
const RESCAN_EVERY: Duration = Duration::from_secs(30);

/// A cached record is queried again at these fractions (in percent) of its TTL, then
/// expires (RFC 6762 §5.2).
const REFRESH_AT_PERCENT: [u32; 2] = [80, 90];

/// What the registry asks of its engine.
#[derive(Debug)]
pub(crate) enum Command {
    /// Answer for this instance and announce it (a `register`; again, a heartbeat).
    Announce(Instance),
    /// Stop answering for the instance with this key and say goodbye.
    Withdraw(String),
    /// The interfaces in use.
    Interfaces(oneshot::Sender<Vec<(String, IpAddr)>>),
}

/// The registry's side of the engine; dropping it stops the engine, which says goodbye for
/// every instance it still answers for.
#[derive(Debug)]
pub(crate) struct Handle {
    commands: mpsc::UnboundedSender<Command>,
}

impl Handle {
    /// Sends a command; `false` when the engine has stopped.
    pub(crate) fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }
}

/// Opens the socket on the selected interfaces and starts the engine thread.
pub(crate) fn start(
    name: &str,
    selection: &Interfaces,
    port: u16,
    shared: Arc<Shared>,
) -> Result<Handle, RegistryError> {
    let ifaces = iface::select(selection, iface::host_addrs)
        .map_err(|err| RegistryError::io(name, "cannot read the network interfaces", err))?;
    if ifaces.is_empty() {
        return Err(RegistryError::backend_msg(
            name,
            "no IPv4 address on the selected interfaces",
        ));
    }
    let (socket, ifaces) = open_socket(port, ifaces)
        .map_err(|err| RegistryError::io(name, "cannot open the mDNS socket", err))?;
    let (commands, receiver) = mpsc::unbounded_channel();
    let engine = Engine {
        name: name.to_owned(),
        port,
        selection: selection.clone(),
        ifaces,
        shared,
        own: BTreeMap::new(),
        cache: HashMap::new(),
        next_browse: Instant::now(),
        browse_interval: BROWSE_FIRST,
        next_rescan: (*selection != Interfaces::LoopbackV4).then(|| Instant::now() + RESCAN_EVERY),
    };
    std::thread::Builder::new()
        .name("micro-mdns".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    tracing::warn!(registry = %engine.name, %err, "cannot start the mDNS engine");
                    return;
                }
            };
            runtime.block_on(async move {
                match UdpSocket::from_std(socket) {
                    Ok(socket) => engine.run(socket, receiver).await,
                    Err(err) => {
                        tracing::warn!(registry = %engine.name, %err, "cannot start the mDNS engine");
                    }
                }
            });
        })
        .map_err(|err| RegistryError::io(name, "cannot start the mDNS thread", err))?;
    Ok(Handle { commands })
}

/// The socket: bound to 0.0.0.0:`port`, shared with other registries on the port, multicast
/// to itself, TTL 255, and a member of 224.0.0.251 on each of `ifaces` (those it could
/// join, returned). Sends nothing.
fn open_socket(port: u16, ifaces: Vec<Iface>) -> io::Result<(std::net::UdpSocket, Vec<Iface>)> {
    let first = ifaces
        .first()
        .map(|i| i.addr)
        .ok_or_else(|| io::Error::other("no interface"))?;
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    #[cfg(target_os = "linux")]
    socket.set_multicast_all_v4(false)?;
    socket.set_multicast_if_v4(&first)?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_multicast_ttl_v4(255)?;
    socket.set_ttl_v4(255)?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
    let mut joined = Vec::with_capacity(ifaces.len());
    let mut last_error = None;
    for iface in ifaces {
        match socket.join_multicast_v4(&GROUP, &iface.addr) {
            Ok(()) => joined.push(iface),
            Err(err) => {
                tracing::warn!(interface = %iface.name, addr = %iface.addr, %err, "cannot join the mDNS group");
                last_error = Some(err);
            }
        }
    }
    if joined.is_empty() {
        return Err(last_error.unwrap_or_else(|| io::Error::other("no interface")));
    }
    socket.set_nonblocking(true)?;
    Ok((socket.into(), joined))
}

struct Engine {
    /// The registry's name, for logs.
    name: String,
    port: u16,
    selection: Interfaces,
    ifaces: Vec<Iface>,
    shared: Arc<Shared>,
    /// Own instances by key (lower-case full name).
    own: BTreeMap<String, Answering>,
    /// Instances heard of (own ones included: multicast loop), by key.
    cache: HashMap<String, Cached>,
    next_browse: Instant,
    browse_interval: Duration,
    next_rescan: Option<Instant>,
}

struct Answering {
    instance: Instance,
    /// When to announce a new or changed instance the second time.
    reannounce_at: Option<Instant>,
}

struct Cached {
    entries: Vec<(String, Option<Vec<u8>>)>,
    received: Instant,
    ttl: Duration,
    /// How many refresh queries were sent since it was received.
    refreshes: usize,
}

impl Cached {
    fn expires_at(&self) -> Instant {
        self.received + self.ttl
    }

    fn refresh_at(&self) -> Option<Instant> {
        let percent = REFRESH_AT_PERCENT.get(self.refreshes)?;
        Some(self.received + self.ttl * *percent / 100)
    }
}

impl Engine {
    async fn run(mut self, socket: UdpSocket, mut commands: mpsc::UnboundedReceiver<Command>) {
        tracing::debug!(registry = %self.name, interfaces = ?self.ifaces, "mDNS engine started");
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(&socket, command).await,
                    None => break,
                },
                received = socket.recv_from(&mut buf) => match received {
                    Ok((len, source)) => {
                        if let Some(packet) = buf.get(..len) {
                            self.packet(&socket, packet, source).await;
                        }
                    }
                    Err(err) => {
                        tracing::debug!(registry = %self.name, %err, "mDNS receive");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = tokio::time::sleep_until(deadline) => self.tick(&socket).await,
            }
        }
        // The registry is gone: goodbye for what it still had registered.
        let own: Vec<Instance> = std::mem::take(&mut self.own)
            .into_values()
            .map(|a| a.instance)
            .collect();
        self.send_all(&socket, &own.iter().collect::<Vec<_>>(), Reply::Goodbye)
            .await;
        tracing::debug!(registry = %self.name, "mDNS engine stopped");
    }

    async fn command(&mut self, socket: &UdpSocket, command: Command) {
        match command {
            Command::Announce(instance) => {
                let key = instance.key();
                let changed = self
                    .own
                    .get(&key)
                    .is_none_or(|known| known.instance != instance);
                // The view learns of it like any other registry's, from the announcement
                // looped back: that keeps the view in the order of what was sent.
                self.send_all(socket, &[&instance], Reply::Announce).await;
                self.own.insert(
                    key,
                    Answering {
                        instance,
                        reannounce_at: changed.then(|| Instant::now() + REANNOUNCE_AFTER),
                    },
                );
            }
            Command::Withdraw(key) => {
                // The view forgets it when the goodbye comes back, after everything sent
                // before it.
                if let Some(gone) = self.own.remove(&key) {
                    self.send_all(socket, &[&gone.instance], Reply::Goodbye)
                        .await;
                }
            }
            Command::Interfaces(reply) => {
                let list = self
                    .ifaces
                    .iter()
                    .map(|i| (i.name.clone(), IpAddr::V4(i.addr)))
                    .collect();
                let _ = reply.send(list);
            }
        }
    }

    /// A received packet: dropped unless it comes from a selected interface's subnet.
    async fn packet(&mut self, socket: &UdpSocket, bytes: &[u8], source: SocketAddr) {
        let SocketAddr::V4(source) = source else {
            return;
        };
        let Some(iface) = self
            .ifaces
            .iter()
            .find(|i| i.contains(*source.ip()))
            .cloned()
        else {
            tracing::debug!(registry = %self.name, %source, "dropping an mDNS packet from outside the selected interfaces");
            return;
        };
        match wire::parse(bytes) {
            Some(Message::Query(query)) => self.answer(socket, &query, source, &iface).await,
            // RFC 6762 §6: responses come from the mDNS port; others are not multicast DNS.
            Some(Message::Response(seen)) if source.port() == self.port => {
                self.heard(socket, seen, &iface).await;
            }
            Some(Message::Response(_)) => {
                tracing::debug!(registry = %self.name, %source, "ignoring an mDNS response from another port");
            }
            None => {}
        }
    }

    /// Answers a query for our service type, an own instance or an own host.
    async fn answer(&self, socket: &UdpSocket, query: &Query, source: SocketAddrV4, iface: &Iface) {
        // RFC 6762 §6.7: a query from another port is a legacy resolver's; answer it alone.
        let legacy = source.port() != self.port;
        let mut unicast = legacy;
        let mut chosen: Vec<&Instance> = Vec::new();
        for asked in &query.questions {
            let name = asked.name.to_ascii_lowercase();
            let before = chosen.len();
            for (key, own) in &self.own {
                let instance = &own.instance;
                let wanted = if name == SERVICE && asked.wants(TYPE::PTR) {
                    // Known-answer suppression (RFC 6762 §7.1).
                    !query
                        .known
                        .iter()
                        .any(|(k, ttl)| k == key && *ttl >= instance.ttl / 2)
                } else if name == *key {
                    asked.wants(TYPE::TXT) || asked.wants(TYPE::SRV)
                } else if name == instance.host.to_ascii_lowercase() {
                    asked.wants(TYPE::A)
                } else {
                    false
                };
                if wanted && !chosen.iter().any(|c| c.fullname == instance.fullname) {
                    chosen.push(instance);
                }
            }
            unicast |= asked.unicast && chosen.len() > before;
        }
        if chosen.is_empty() {
            return;
        }
        let reply = if legacy { Reply::Legacy } else { Reply::Answer };
        for packet in wire::response(&chosen, iface.addr, reply, Some(query)) {
            if unicast {
                if let Err(err) = socket.send_to(&packet, source).await {
                    tracing::debug!(registry = %self.name, %source, %err, "cannot send an mDNS answer");
                }
            } else {
                self.multicast(socket, iface, &packet).await;
            }
        }
    }

    /// What a response told: TXT records resolve, goodbyes remove, unknown PTRs are asked
    /// about.
    async fn heard(&mut self, socket: &UdpSocket, seen: Vec<Seen>, iface: &Iface) {
        let with_txt: Vec<String> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::Txt { instance, .. } => Some(instance.clone()),
                Seen::Ptr { .. } => None,
            })
            .collect();
        let mut unresolved = Vec::new();
        for s in seen {
            match s {
                Seen::Ptr { instance, ttl: 0 }
                | Seen::Txt {
                    instance, ttl: 0, ..
                } => {
                    self.forget(&instance);
                }
                Seen::Ptr { instance, .. } => {
                    if !self.cache.contains_key(&instance) && !with_txt.contains(&instance) {
                        unresolved.push(instance);
                    }
                }
                Seen::Txt {
                    instance,
                    entries,
                    ttl,
                } => self.learn(instance, entries, ttl),
            }
        }
        for packet in wire::txt_queries(&unresolved) {
            self.multicast(socket, iface, &packet).await;
        }
    }

    /// A live TXT record: into the cache, and into the view when new or changed.
    fn learn(&mut self, key: String, entries: Vec<(String, Option<Vec<u8>>)>, ttl: u32) {
        let now = Instant::now();
        let ttl = Duration::from_secs(ttl.into());
        match self.cache.entry(key) {
            hash_map::Entry::Occupied(mut known) => {
                let key = known.key().clone();
                let cached = known.get_mut();
                cached.received = now;
                cached.ttl = ttl;
                cached.refreshes = 0;
                if cached.entries != entries {
                    cached.entries = entries;
                    self.shared.resolved(&key, &cached.entries);
                }
            }
            hash_map::Entry::Vacant(new) => {
                self.shared.resolved(new.key(), &entries);
                new.insert(Cached {
                    entries,
                    received: now,
                    ttl,
                    refreshes: 0,
                });
            }
        }
    }

    /// A goodbye or an expiry: out of the cache and the view.
    fn forget(&mut self, key: &str) {
        if self.cache.remove(key).is_some() {
            self.shared.removed(key);
        }
    }

    fn next_deadline(&self) -> Instant {
        let own = self.own.values().filter_map(|a| a.reannounce_at);
        let cache = self
            .cache
            .iter()
            .filter(|(key, _)| !self.own.contains_key(*key))
            .flat_map(|(_, c)| [Some(c.expires_at()), c.refresh_at()])
            .flatten();
        own.chain(cache)
            .chain(self.next_rescan)
            .fold(self.next_browse, Instant::min)
    }

    /// Whatever is due: browse queries, second announcements, refreshes, expiries, rescans.
    async fn tick(&mut self, socket: &UdpSocket) {
        let now = Instant::now();
        if self.next_browse <= now {
            for packet in wire::browse_query() {
                self.multicast_all(socket, &packet).await;
            }
            self.next_browse = now + self.browse_interval;
            self.browse_interval = (self.browse_interval * 2).min(BROWSE_MAX);
        }

        let mut again: Vec<Instance> = Vec::new();
        for own in self.own.values_mut() {
            if own.reannounce_at.is_some_and(|at| at <= now) {
                own.reannounce_at = None;
                again.push(own.instance.clone());
            }
        }
        self.send_all(socket, &again.iter().collect::<Vec<_>>(), Reply::Announce)
            .await;

        let mut expired = Vec::new();
        let mut refresh = Vec::new();
        for (key, cached) in &mut self.cache {
            if self.own.contains_key(key) {
                continue;
            }
            if cached.expires_at() <= now {
                expired.push(key.clone());
            } else if cached.refresh_at().is_some_and(|at| at <= now) {
                cached.refreshes += 1;
                refresh.push(key.clone());
            }
        }
        for key in expired {
            tracing::debug!(registry = %self.name, instance = %key, "mDNS record expired");
            self.forget(&key);
        }
        for packet in wire::txt_queries(&refresh) {
            self.multicast_all(socket, &packet).await;
        }

        if self.next_rescan.is_some_and(|at| at <= now) {
            self.next_rescan = Some(now + RESCAN_EVERY);
            self.rescan(socket).await;
        }
    }

    /// Follows the selected interfaces' addresses as they come and go ("all" or named
    /// selections): joins on new ones and announces there, leaves gone ones.
    async fn rescan(&mut self, socket: &UdpSocket) {
        let now = match iface::select(&self.selection, iface::host_addrs) {
            Ok(now) => now,
            Err(err) => {
                tracing::debug!(registry = %self.name, %err, "cannot read the network interfaces");
                return;
            }
        };
        let sock = SockRef::from(socket);
        let mut added = Vec::new();
        self.ifaces.retain(|old| {
            let keep = now.contains(old);
            if !keep {
                tracing::info!(registry = %self.name, interface = %old.name, addr = %old.addr, "mDNS interface gone");
                // The address may be gone already, and the membership with it.
                let _ = sock.leave_multicast_v4(&GROUP, &old.addr);
            }
            keep
        });
        for iface in now {
            if self.ifaces.contains(&iface) {
                continue;
            }
            match sock.join_multicast_v4(&GROUP, &iface.addr) {
                Ok(()) => {
                    tracing::info!(registry = %self.name, interface = %iface.name, addr = %iface.addr, "mDNS interface added");
                    added.push(iface);
                }
                Err(err) => {
                    tracing::debug!(registry = %self.name, interface = %iface.name, %err, "cannot join the mDNS group");
                }
            }
        }
        self.ifaces.extend(added.iter().cloned());
        let own: Vec<&Instance> = self.own.values().map(|a| &a.instance).collect();
        for iface in &added {
            for packet in wire::browse_query() {
                self.multicast(socket, iface, &packet).await;
            }
            for packet in wire::response(&own, iface.addr, Reply::Announce, None) {
                self.multicast(socket, iface, &packet).await;
            }
        }
    }

    /// Sends responses about `instances` on every selected interface (each with its own A
    /// record).
    async fn send_all(&self, socket: &UdpSocket, instances: &[&Instance], reply: Reply) {
        if instances.is_empty() {
            return;
        }
        for iface in &self.ifaces {
            for packet in wire::response(instances, iface.addr, reply, None) {
                self.multicast(socket, iface, &packet).await;
            }
        }
    }

    async fn multicast_all(&self, socket: &UdpSocket, packet: &[u8]) {
        for iface in &self.ifaces {
            self.multicast(socket, iface, packet).await;
        }
    }

    /// Sends `packet` to the group out of `iface` only: `IP_MULTICAST_IF` is set to its
    /// address first, and nothing is sent if that fails.
    async fn multicast(&self, socket: &UdpSocket, iface: &Iface, packet: &[u8]) {
        if let Err(err) = SockRef::from(socket).set_multicast_if_v4(&iface.addr) {
            tracing::debug!(registry = %self.name, interface = %iface.name, %err, "cannot select the mDNS interface; not sending");
            return;
        }
        if let Err(err) = socket
            .send_to(packet, SocketAddrV4::new(GROUP, self.port))
            .await
        {
            tracing::debug!(registry = %self.name, interface = %iface.name, %err, "cannot send an mDNS packet");
        }
    }
}
