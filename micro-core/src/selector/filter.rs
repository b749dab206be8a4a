//! Narrowing candidates by version and metadata labels.

use std::{fmt, sync::Arc};

use crate::{node::NodeHandle, registry::Node};

/// Keeps only the nodes that match every condition: a service version, metadata labels.
///
/// The default filter has no conditions and matches every node. Cloning is cheap (one
/// reference count); adding a condition copies the list, so build filters once, not per call.
///
/// # Examples
///
/// ```
/// use micro_core::selector::NodeFilter;
///
/// let canary = NodeFilter::version("1.1.0").with_label("zone", "eu-west-1a");
/// assert!(!canary.is_empty());
/// assert!(NodeFilter::default().is_empty());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NodeFilter {
    conditions: Option<Arc<[Condition]>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    Version(Box<str>),
    Label(Box<str>, Box<str>),
}

// === impl NodeFilter ===

impl NodeFilter {
    /// Matches every node.
    pub fn new() -> Self {
        Self::default()
    }

    /// Matches nodes serving exactly `version` of the service.
    pub fn version(version: impl Into<String>) -> Self {
        Self::new().with_version(version)
    }

    /// Matches nodes whose metadata holds `key` with exactly `value`.
    pub fn label(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new().with_label(key, value)
    }

    /// Also requires `version`.
    #[must_use]
    pub fn with_version(self, version: impl Into<String>) -> Self {
        self.push([Condition::Version(version.into().into())])
    }

    /// Also requires the label `key` = `value`.
    #[must_use]
    pub fn with_label(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.push([Condition::Label(key.into().into(), value.into().into())])
    }

    /// Requires the conditions of both filters.
    #[must_use]
    pub fn and(self, other: NodeFilter) -> Self {
        match other.conditions {
            None => self,
            Some(more) if self.is_empty() => Self {
                conditions: Some(more),
            },
            Some(more) => self.push(more.iter().cloned()),
        }
    }

    /// Whether this filter has no conditions, so matches every node.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_none()
    }

    /// Whether `node` meets every condition.
    pub fn matches(&self, node: &NodeHandle) -> bool {
        self.matches_node(node.node(), node.version())
    }

    /// Whether a node with this registry record, serving `version`, meets every condition.
    pub fn matches_node(&self, node: &Node, version: &str) -> bool {
        self.conditions().iter().all(|condition| match condition {
            Condition::Version(wanted) => **wanted == *version,
            Condition::Label(key, value) => node
                .metadata
                .get(&**key)
                .is_some_and(|got| **got == **value),
        })
    }

    fn conditions(&self) -> &[Condition] {
        self.conditions.as_deref().unwrap_or_default()
    }

    fn push(self, more: impl IntoIterator<Item = Condition>) -> Self {
        let conditions: Arc<[Condition]> = self.conditions().iter().cloned().chain(more).collect();
        Self {
            conditions: Some(conditions),
        }
    }
}

impl fmt::Debug for NodeFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for condition in self.conditions() {
            match condition {
                Condition::Version(version) => list.entry(&format_args!("version={version}")),
                Condition::Label(key, value) => list.entry(&format_args!("{key}={value}")),
            };
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(version: &str, labels: &[(&str, &str)]) -> NodeHandle {
        let node = Node {
            id: "n".into(),
            address: "127.0.0.1:1".into(),
            metadata: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        NodeHandle::new(node, version)
    }

    #[test]
    fn default_matches_all() {
        let filter = NodeFilter::default();
        assert!(filter.is_empty());
        assert!(filter.matches(&handle("1.0.0", &[])));
        assert_eq!(format!("{filter:?}"), "[]");
    }

    #[test]
    fn version_and_labels() {
        let plain = handle("1.0.0", &[]);
        let canary = handle("1.1.0", &[("zone", "a"), ("tier", "canary")]);

        let version = NodeFilter::version("1.1.0");
        assert!(!version.matches(&plain));
        assert!(version.matches(&canary));

        let zone = NodeFilter::label("zone", "a");
        assert!(!zone.matches(&plain));
        assert!(zone.matches(&canary));
        assert!(!NodeFilter::label("zone", "b").matches(&canary));

        let both = version
            .clone()
            .and(zone.clone())
            .with_label("tier", "canary");
        assert!(both.matches(&canary));
        assert!(!both.clone().with_label("tier", "stable").matches(&canary));
        assert!(!NodeFilter::version("1.0.0").and(zone).matches(&canary));
        assert_eq!(format!("{both:?}"), "[version=1.1.0, zone=a, tier=canary]");
    }

    #[test]
    fn and_with_empty_is_identity() {
        let version = NodeFilter::version("2");
        assert_eq!(version.clone().and(NodeFilter::new()), version);
        assert_eq!(NodeFilter::new().and(version.clone()), version);
    }
}
