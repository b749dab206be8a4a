//! Access rules: who (a scope) may call what (a resource), compiled into a [`RuleSet`].

use std::{cmp::Ordering, collections::BTreeMap, collections::HashSet, fmt};

use serde::{Deserialize, Serialize};

/// The wildcard: as a whole value it matches anything; as the last character of a value it
/// matches every value starting with what precedes it.
pub const WILDCARD: &str = "*";

/// The resource kind of a service endpoint.
pub const KIND_SERVICE: &str = "service";

/// What a call reaches: a kind (`"service"` for gRPC calls), a name (the service name, e.g.
/// `greeter`) and an endpoint (e.g. `Greeter.Hello`).
///
/// In a [`Rule`] each field is a pattern:
///
/// - `*` matches any value, including the empty one;
/// - a value ending in `*` (e.g. `Greeter.*`) matches every value that starts with the part
///   before the `*` (`Greeter.Hello`, and `Greeter.` itself, but not `Greeter`);
/// - any other value matches exactly that value (case-sensitive, byte for byte).
///
/// A `*` anywhere else (`Gree*er`, `**`) is invalid: [`RuleSet::new`] rejects it with
/// [`RuleError::Wildcard`]. In the resource being called, `*` has no special meaning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resource {
    /// The kind, `"service"` for gRPC endpoints.
    pub kind: String,
    /// The name, e.g. the service name `greeter`.
    pub name: String,
    /// The endpoint, e.g. `Greeter.Hello`.
    pub endpoint: String,
}

impl Resource {
    /// A resource of any kind.
    pub fn new(
        kind: impl Into<String>,
        name: impl Into<String>,
        endpoint: impl Into<String>,
    ) -> Self {
        Self {
            kind: kind.into(),
            name: name.into(),
            endpoint: endpoint.into(),
        }
    }

    /// An endpoint of a service: kind [`KIND_SERVICE`].
    pub fn service(name: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Self::new(KIND_SERVICE, name, endpoint)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.endpoint)
    }
}

/// What a rule decides when it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Allow the call.
    Grant,
    /// Refuse the call, whatever rules of lower rank say.
    Deny,
}

/// One access rule. See [the module docs](super) for how a [`RuleSet`] evaluates them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    /// A unique, non-empty id; it also breaks ties between rules of the same rank.
    pub id: String,
    /// Who the rule applies to: empty for everyone (including anonymous callers), `*` for
    /// any authenticated account, otherwise accounts holding this scope.
    pub scope: String,
    /// What the rule covers, with wildcards (see [`Resource`]).
    pub resource: Resource,
    /// Grant or deny.
    pub access: Access,
    /// Higher priorities are evaluated first.
    pub priority: i32,
}

/// Whether an account is a person or a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    /// A person, e.g. signed in through the gateway.
    #[default]
    User,
    /// A service calling other services with its own credentials.
    Service,
}

/// An authenticated caller, as a verified access token describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The account id (the token's `sub`).
    pub id: String,
    /// User or service (the token's `type`).
    #[serde(rename = "type")]
    pub kind: AccountKind,
    /// The scopes the account holds; rules with a named scope apply to holders of it.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Free-form attributes carried in the token.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Who issued the account's token (the token's `iss`).
    #[serde(default)]
    pub issuer: String,
}

impl Account {
    /// Whether the account holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a call is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The caller is anonymous and the rules do not let anonymous callers in: the caller
    /// should authenticate (gRPC `UNAUTHENTICATED`, HTTP 401).
    Unauthenticated,
    /// The caller is authenticated but the rules refuse the call (gRPC `PERMISSION_DENIED`,
    /// HTTP 403). `rule_id` names the deny rule that decided, `None` when no rule applied.
    Forbidden {
        /// The deny rule that decided, `None` when no rule applied.
        rule_id: Option<String>,
    },
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unauthenticated => f.write_str("authentication required"),
            Self::Forbidden { rule_id: Some(id) } => write!(f, "access denied by rule {id}"),
            Self::Forbidden { rule_id: None } => f.write_str("access denied: no rule grants it"),
        }
    }
}

impl std::error::Error for Denied {}

/// An invalid rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A rule without an id.
    #[error("rule #{index} has an empty id; give every rule a unique id")]
    EmptyId {
        /// The rule's position in the list.
        index: usize,
    },
    /// Two rules with the same id.
    #[error("rule id {id} is used twice; rule ids must be unique")]
    DuplicateId {
        /// The repeated id.
        id: String,
    },
    /// A `*` other than a whole value or a trailing one.
    #[error(
        "rule {id}: {field} pattern {pattern:?} has a `*` that is neither the whole value nor the last character"
    )]
    Wildcard {
        /// The rule's id.
        id: String,
        /// `kind`, `name` or `endpoint`.
        field: &'static str,
        /// The invalid pattern.
        pattern: String,
    },
    /// A scope containing `*` other than the whole scope `*`.
    #[error("rule {id}: scope {scope:?} may be empty, `*` or a name without `*`")]
    Scope {
        /// The rule's id.
        id: String,
        /// The invalid scope.
        scope: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Any,
    Prefix(Box<str>),
    Exact(Box<str>),
}

impl Pattern {
    fn compile(id: &str, field: &'static str, pattern: &str) -> Result<Self, RuleError> {
        if pattern == WILDCARD {
            return Ok(Self::Any);
        }
        let (head, prefix) = match pattern.strip_suffix('*') {
            Some(head) => (head, true),
            None => (pattern, false),
        };
        if head.contains('*') {
            return Err(RuleError::Wildcard {
                id: id.to_owned(),
                field,
                pattern: pattern.to_owned(),
            });
        }
        Ok(if prefix {
            Self::Prefix(head.into())
        } else {
            Self::Exact(head.into())
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(prefix) => value.starts_with(&**prefix),
            Self::Exact(exact) => value == &**exact,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    Public,
    AnyAccount,
    Named(Box<str>),
}

impl Scope {
    fn matches(&self, account: Option<&Account>) -> bool {
        match (self, account) {
            (Self::Public, _) => true,
            (Self::AnyAccount, account) => account.is_some(),
            (Self::Named(scope), Some(account)) => account.has_scope(scope),
            (Self::Named(_), None) => false,
        }
    }
}

#[derive(Clone, Debug)]
struct Compiled {
    id: Box<str>,
    scope: Scope,
    kind: Pattern,
    name: Pattern,
    endpoint: Pattern,
    access: Access,
}

impl Compiled {
    fn applies(&self, account: Option<&Account>, resource: &Resource) -> bool {
        self.scope.matches(account)
            && self.endpoint.matches(&resource.endpoint)
            && self.name.matches(&resource.name)
            && self.kind.matches(&resource.kind)
    }
}

/// The evaluation order: priority descending, then deny before grant, then id ascending
/// (byte order). Ids are unique, so the order is total.
fn rank(a: &Rule, b: &Rule) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| match (a.access, b.access) {
            (Access::Deny, Access::Grant) => Ordering::Less,
            (Access::Grant, Access::Deny) => Ordering::Greater,
            _ => Ordering::Equal,
        })
        .then_with(|| a.id.cmp(&b.id))
}

/// Rules validated and sorted once, ready to decide calls.
///
/// `RuleSet` is immutable, `Send + Sync` and cheap to share behind an `Arc`; to change the
/// rules, build a new set and swap it in (e.g. with `arc_swap`). [`RuleSet::verify`] does no
/// allocation on a grant and walks the rules in order until the first applicable one.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Compiled>,
    source: Vec<Rule>,
}

impl RuleSet {
    /// Validates and compiles `rules`: ids must be non-empty and unique, wildcards whole or
    /// trailing (see [`Resource`]), scopes empty, `*` or a name without `*`.
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Result<Self, RuleError> {
        let mut source: Vec<Rule> = rules.into_iter().collect();
        let mut ids = HashSet::with_capacity(source.len());
        for (index, rule) in source.iter().enumerate() {
            if rule.id.is_empty() {
                return Err(RuleError::EmptyId { index });
            }
            if !ids.insert(rule.id.as_str()) {
                return Err(RuleError::DuplicateId {
                    id: rule.id.clone(),
                });
            }
        }
        source.sort_by(rank);
        let rules = source
            .iter()
            .map(|rule| {
                let scope = match rule.scope.as_str() {
                    "" => Scope::Public,
                    WILDCARD => Scope::AnyAccount,
                    named if named.contains('*') => {
                        return Err(RuleError::Scope {
                            id: rule.id.clone(),
                            scope: named.to_owned(),
                        });
                    }
                    named => Scope::Named(named.into()),
                };
                Ok(Compiled {
                    id: rule.id.as_str().into(),
                    scope,
                    kind: Pattern::compile(&rule.id, "kind", &rule.resource.kind)?,
                    name: Pattern::compile(&rule.id, "name", &rule.resource.name)?,
                    endpoint: Pattern::compile(&rule.id, "endpoint", &rule.resource.endpoint)?,
                    access: rule.access,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { rules, source })
    }

    /// The rules in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.source
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (then every call is refused).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Decides whether `account` (`None`: an anonymous caller) may call `resource`.
    ///
    /// The first rule in evaluation order (priority descending, then deny before grant,
    /// then id ascending) whose scope and resource match decides: a grant allows the call,
    /// a deny refuses it with [`Denied::Forbidden`] naming the rule. When no rule applies
    /// the call is refused with `Forbidden { rule_id: None }`. A refusal of an anonymous
    /// caller is always [`Denied::Unauthenticated`] instead, so the caller learns to
    /// authenticate rather than that it is forbidden.
    pub fn verify(&self, account: Option<&Account>, resource: &Resource) -> Result<(), Denied> {
        let decided = self
            .rules
            .iter()
            .find(|rule| rule.applies(account, resource));
        let denied = match decided {
            Some(rule) if rule.access == Access::Grant => return Ok(()),
            Some(rule) => Some(&rule.id),
            None => None,
        };
        if account.is_none() {
            return Err(Denied::Unauthenticated);
        }
        Err(Denied::Forbidden {
            rule_id: denied.map(|id| id.to_string()),
        })
    }
}

/// Decides one call against a list of rules, compiling them first: a convenience for one-off
/// checks; per call, build a [`RuleSet`] once and use [`RuleSet::verify`].
pub fn verify(
    rules: &[Rule],
    account: Option<&Account>,
    resource: &Resource,
) -> Result<Result<(), Denied>, RuleError> {
    Ok(RuleSet::new(rules.iter().cloned())?.verify(account, resource))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, scope: &str, endpoint: &str, access: Access, priority: i32) -> Rule {
        Rule {
            id: id.into(),
            scope: scope.into(),
            resource: Resource::service("greeter", endpoint),
            access,
            priority,
        }
    }

    #[test]
    fn patterns() {
        let p = |s: &str| Pattern::compile("r", "name", s);
        assert_eq!(p("*"), Ok(Pattern::Any));
        assert_eq!(p("Greeter.*"), Ok(Pattern::Prefix("Greeter.".into())));
        assert_eq!(p("a"), Ok(Pattern::Exact("a".into())));
        assert!(p("a*b").is_err());
        assert!(p("**").is_err());
        assert!(p("Greeter.*").is_ok_and(|p| p.matches("Greeter.") && !p.matches("Greeter")));
    }

    #[test]
    fn deny_wins_ties() {
        let set = RuleSet::new([
            rule("a", "", "*", Access::Grant, 1),
            rule("z", "", "*", Access::Deny, 1),
        ])
        .unwrap_or_default();
        let account = Account::default();
        assert_eq!(
            set.verify(Some(&account), &Resource::service("greeter", "X")),
            Err(Denied::Forbidden {
                rule_id: Some("z".into())
            })
        );
    }
}
