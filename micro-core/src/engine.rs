//! The one table of engines micro opens by URL: `MICRO_REGISTRY`, `MICRO_BROKER`,
//! `MICRO_STORE` and `MICRO_SYNC` all choose through it.
//!
//! Each kind has its built-in names (`local`, `memory`, …, handled by its own `url`
//! module) and a process-wide table of schemes that other crates add with that module's
//! `register_scheme` (`micro::install()` adds the schemes of the engines compiled in).
//! [`ENGINES`] lists every scheme that lives outside micro-core with the cargo feature of
//! `micro` that holds it, so a URL of an engine this build lacks gets an error naming the
//! feature to enable, for every kind alike.

use std::sync::Mutex;

use crate::lock::lock;

/// What an engine provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A [`Registry`](crate::Registry) (`MICRO_REGISTRY`).
    Registry,
    /// A [`Broker`](crate::broker::Broker) (`MICRO_BROKER`).
    Broker,
    /// A store (`MICRO_STORE`).
    Store,
    /// A sync backend: locks and leader election (`MICRO_SYNC`).
    Sync,
}

/// An engine outside micro-core: its kind, URL scheme and the `micro` feature that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Engine {
    /// What it provides.
    pub kind: Kind,
    /// Its URL scheme (`etcd` for `etcd://…`).
    pub scheme: &'static str,
    /// The cargo feature of `micro` that compiles it in.
    pub feature: &'static str,
}

const fn engine(kind: Kind, scheme: &'static str, feature: &'static str) -> Engine {
    Engine {
        kind,
        scheme,
        feature,
    }
}

/// Every engine that registers a scheme from outside micro-core. A new engine adds its row
/// when its feature lands.
pub const ENGINES: &[Engine] = &[
    engine(Kind::Registry, "etcd", "etcd"),
    engine(Kind::Registry, "mdns", "mdns"),
    engine(Kind::Sync, "etcd", "etcd"),
    engine(Kind::Broker, "nats", "nats"),
    engine(Kind::Store, "redis", "redis"),
    engine(Kind::Store, "memcached", "memcached"),
    engine(Kind::Registry, "service", "platform"),
    engine(Kind::Broker, "service", "platform"),
    engine(Kind::Store, "service", "platform"),
    engine(Kind::Sync, "service", "platform"),
];

/// The scheme of `url`: before `://`, or the whole value (`etcd`).
pub fn scheme_of(url: &str) -> &str {
    url.split_once("://").map_or(url, |(scheme, _)| scheme)
}

/// The feature of `micro` that holds the engine `url` names for `kind`, if it is a known
/// engine outside micro-core.
pub fn feature_for(kind: Kind, url: &str) -> Option<&'static str> {
    let scheme = scheme_of(url);
    ENGINES
        .iter()
        .find(|engine| engine.kind == kind && engine.scheme == scheme)
        .map(|engine| engine.feature)
}

/// For an error about `url`: why it may not have opened, when it names an engine this build
/// has not installed (empty otherwise).
pub(crate) fn not_installed_hint(kind: Kind, url: &str) -> String {
    match feature_for(kind, url) {
        Some(feature) => format!(
            "; {}:// is an engine outside micro-core: enable the `{feature}` feature of micro \
             and call micro::install() at the start of main",
            scheme_of(url)
        ),
        None => String::new(),
    }
}

/// The schemes registered for one kind, each with its opener.
pub(crate) struct Schemes<O: 'static> {
    entries: Mutex<Vec<(&'static str, O)>>,
}

impl<O: Copy> Schemes<O> {
    pub(crate) const fn new() -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Adds `scheme`, or replaces its opener.
    pub(crate) fn register(&self, scheme: &'static str, opener: O) {
        let mut entries = lock(&self.entries);
        match entries.iter_mut().find(|(known, _)| *known == scheme) {
            Some(entry) => entry.1 = opener,
            None => entries.push((scheme, opener)),
        }
    }

    /// The opener registered for the scheme of `url`.
    pub(crate) fn opener(&self, url: &str) -> Option<O> {
        let scheme = scheme_of(url);
        lock(&self.entries)
            .iter()
            .find(|(known, _)| *known == scheme)
            .map(|(_, opener)| *opener)
    }

    /// `builtin` then every registered scheme as `scheme://…`, comma-separated: the values
    /// an error lists as accepted.
    pub(crate) fn known(&self, builtin: &[&str]) -> String {
        let entries = lock(&self.entries);
        builtin
            .iter()
            .map(|name| (*name).to_owned())
            .chain(entries.iter().map(|(scheme, _)| format!("{scheme}://…")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_found_bare_or_with_an_address_and_replaced() {
        let schemes: Schemes<u8> = Schemes::new();
        schemes.register("a", 1);
        schemes.register("b", 2);
        assert_eq!(schemes.opener("a"), Some(1));
        assert_eq!(schemes.opener("b://127.0.0.1:1"), Some(2));
        assert_eq!(schemes.opener("c://x"), None);
        schemes.register("a", 3);
        assert_eq!(schemes.opener("a://"), Some(3));
        assert_eq!(schemes.known(&["memory"]), "memory, a://…, b://…");
    }

    #[test]
    fn every_kind_names_the_feature_of_its_engines() {
        assert_eq!(feature_for(Kind::Registry, "etcd://h:2379"), Some("etcd"));
        assert_eq!(feature_for(Kind::Sync, "etcd"), Some("etcd"));
        assert_eq!(feature_for(Kind::Broker, "nats://h:4222"), Some("nats"));
        assert_eq!(feature_for(Kind::Store, "redis://h"), Some("redis"));
        assert_eq!(feature_for(Kind::Store, "memcached://h"), Some("memcached"));
        assert_eq!(feature_for(Kind::Broker, "service"), Some("platform"));
        // A scheme is an engine of its kinds only.
        assert_eq!(feature_for(Kind::Broker, "etcd://h"), None);
        assert_eq!(feature_for(Kind::Store, "kafka://h"), None);
    }
}
