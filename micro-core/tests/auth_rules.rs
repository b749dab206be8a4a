//! Access rules: `RuleSet::verify` against a small, naive reference model on 100,000 random
//! cases, and one hand-written case per documented rule.

use std::cmp::Reverse;

use micro_core::auth::{Access, Account, Denied, Resource, Rule, RuleError, RuleSet};
use rand::{
    Rng, SeedableRng,
    rngs::StdRng,
    seq::{IndexedRandom, SliceRandom},
};

// ---- The reference model: written from the documented semantics, sharing no code. ----

fn model_pattern(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => value.len() >= prefix.len() && value[..prefix.len()] == *prefix,
        None => pattern == value,
    }
}

fn model_scope(scope: &str, account: Option<&Account>) -> bool {
    match scope {
        "" => true,
        "*" => account.is_some(),
        named => account.is_some_and(|a| a.scopes.iter().any(|s| s == named)),
    }
}

fn model(rules: &[Rule], account: Option<&Account>, resource: &Resource) -> Result<(), Denied> {
    let mut applicable: Vec<&Rule> = rules
        .iter()
        .filter(|r| model_scope(&r.scope, account))
        .filter(|r| model_pattern(&r.resource.kind, &resource.kind))
        .filter(|r| model_pattern(&r.resource.name, &resource.name))
        .filter(|r| model_pattern(&r.resource.endpoint, &resource.endpoint))
        .collect();
    applicable.sort_by_key(|r| (Reverse(r.priority), r.access == Access::Grant, r.id.clone()));
    match applicable.first() {
        Some(rule) if rule.access == Access::Grant => Ok(()),
        _ if account.is_none() => Err(Denied::Unauthenticated),
        Some(rule) => Err(Denied::Forbidden {
            rule_id: Some(rule.id.clone()),
        }),
        None => Err(Denied::Forbidden { rule_id: None }),
    }
}

// ---- Random cases over small alphabets, so that rules match often. ----

const KINDS: &[&str] = &["service", "topic", "s"];
const KIND_PATTERNS: &[&str] = &["*", "service", "s*", "topic"];
const NAMES: &[&str] = &["a", "ab", "b", ""];
const NAME_PATTERNS: &[&str] = &["*", "a", "a*", "ab", "b", "", "ab*"];
const ENDPOINTS: &[&str] = &["A.x", "A.y", "A.", "A", "B.x"];
const ENDPOINT_PATTERNS: &[&str] = &["*", "A.*", "A*", "A.x", "B.x", "A", "B.*"];
const SCOPES: &[&str] = &["", "*", "s1", "s2", "s3"];
const ACCOUNT_SCOPES: &[&str] = &["s1", "s2", "s3", "*"];

fn pick<'a>(rng: &mut StdRng, values: &[&'a str]) -> &'a str {
    values.choose(rng).copied().unwrap_or_default()
}

fn random_rules(rng: &mut StdRng) -> Vec<Rule> {
    let count = rng.random_range(0..8);
    // Unique ids whose order differs from the insertion order.
    let mut ids: Vec<u32> = (0..count).map(|i| i * 7 % 11).collect();
    ids.shuffle(rng);
    ids.into_iter()
        .map(|id| Rule {
            id: format!("r{id}"),
            scope: pick(rng, SCOPES).to_owned(),
            resource: Resource::new(
                pick(rng, KIND_PATTERNS),
                pick(rng, NAME_PATTERNS),
                pick(rng, ENDPOINT_PATTERNS),
            ),
            access: if rng.random_bool(0.4) {
                Access::Deny
            } else {
                Access::Grant
            },
            priority: rng.random_range(-1..2),
        })
        .collect()
}

fn random_account(rng: &mut StdRng) -> Option<Account> {
    if rng.random_bool(0.25) {
        return None;
    }
    let scopes = ACCOUNT_SCOPES
        .iter()
        .filter(|_| rng.random_bool(0.35))
        .map(|s| (*s).to_owned())
        .collect();
    Some(Account {
        id: "acc".to_owned(),
        scopes,
        ..Account::default()
    })
}

#[test]
fn matches_the_reference_model_on_100k_random_cases() {
    let mut rng = StdRng::seed_from_u64(0x5eed_a117);
    let (mut granted, mut unauthenticated, mut by_rule, mut by_default) = (0, 0, 0, 0);
    for case in 0..100_000 {
        let rules = random_rules(&mut rng);
        let account = random_account(&mut rng);
        let resource = Resource::new(
            pick(&mut rng, KINDS),
            pick(&mut rng, NAMES),
            pick(&mut rng, ENDPOINTS),
        );
        let set = RuleSet::new(rules.clone()).expect("generated rules are valid");
        let got = set.verify(account.as_ref(), &resource);
        let want = model(&rules, account.as_ref(), &resource);
        assert_eq!(
            got, want,
            "case {case}: rules {rules:#?}\naccount {account:?}\nresource {resource}"
        );
        match got {
            Ok(()) => granted += 1,
            Err(Denied::Unauthenticated) => unauthenticated += 1,
            Err(Denied::Forbidden { rule_id: Some(_) }) => by_rule += 1,
            Err(Denied::Forbidden { rule_id: None }) => by_default += 1,
        }
    }
    // Every outcome is well represented, so the comparison exercised all paths.
    for (outcome, count) in [
        ("granted", granted),
        ("unauthenticated", unauthenticated),
        ("denied by a rule", by_rule),
        ("denied by default", by_default),
    ] {
        assert!(count > 5_000, "{outcome}: only {count} of 100,000 cases");
    }
}

// ---- One case per documented rule. ----

fn rule(id: &str, scope: &str, endpoint: &str, access: Access, priority: i32) -> Rule {
    Rule {
        id: id.to_owned(),
        scope: scope.to_owned(),
        resource: Resource::service("greeter", endpoint),
        access,
        priority,
    }
}

fn account(scopes: &[&str]) -> Account {
    Account {
        id: "ada".to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Account::default()
    }
}

fn hello() -> Resource {
    Resource::service("greeter", "Greeter.Hello")
}

fn forbidden(rule_id: Option<&str>) -> Result<(), Denied> {
    Err(Denied::Forbidden {
        rule_id: rule_id.map(str::to_owned),
    })
}

#[test]
fn empty_scope_is_public() {
    let set = RuleSet::new([rule("pub", "", "*", Access::Grant, 0)]).unwrap();
    assert_eq!(set.verify(None, &hello()), Ok(()));
    assert_eq!(set.verify(Some(&account(&[])), &hello()), Ok(()));
}

#[test]
fn star_scope_is_any_authenticated_account() {
    let set = RuleSet::new([rule("any", "*", "*", Access::Grant, 0)]).unwrap();
    assert_eq!(set.verify(None, &hello()), Err(Denied::Unauthenticated));
    assert_eq!(set.verify(Some(&account(&[])), &hello()), Ok(()));
}

#[test]
fn named_scope_needs_the_scope() {
    let set = RuleSet::new([rule("admins", "admin", "*", Access::Grant, 0)]).unwrap();
    assert_eq!(set.verify(Some(&account(&["admin"])), &hello()), Ok(()));
    assert_eq!(
        set.verify(Some(&account(&["user"])), &hello()),
        forbidden(None)
    );
    assert_eq!(set.verify(None, &hello()), Err(Denied::Unauthenticated));
}

#[test]
fn no_rule_means_forbidden() {
    let empty = RuleSet::new([]).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.verify(Some(&account(&[])), &hello()), forbidden(None));
    assert_eq!(empty.verify(None, &hello()), Err(Denied::Unauthenticated));
    let other = RuleSet::new([rule("other", "", "Greeter.Bye", Access::Grant, 0)]).unwrap();
    assert_eq!(other.verify(Some(&account(&[])), &hello()), forbidden(None));
}

#[test]
fn higher_priority_decides() {
    let deny_first = RuleSet::new([
        rule("grant", "", "*", Access::Grant, 1),
        rule("deny", "", "*", Access::Deny, 2),
    ])
    .unwrap();
    assert_eq!(
        deny_first.verify(Some(&account(&[])), &hello()),
        forbidden(Some("deny"))
    );
    let grant_first = RuleSet::new([
        rule("grant", "", "*", Access::Grant, 3),
        rule("deny", "", "*", Access::Deny, 2),
    ])
    .unwrap();
    assert_eq!(grant_first.verify(Some(&account(&[])), &hello()), Ok(()));
}

#[test]
fn deny_wins_a_priority_tie() {
    let set = RuleSet::new([
        rule("a-grant", "", "*", Access::Grant, 5),
        rule("z-deny", "", "*", Access::Deny, 5),
    ])
    .unwrap();
    assert_eq!(
        set.verify(Some(&account(&[])), &hello()),
        forbidden(Some("z-deny"))
    );
    assert_eq!(set.rules()[0].id, "z-deny");
}

#[test]
fn id_order_breaks_remaining_ties() {
    let set = RuleSet::new([
        rule("b", "", "*", Access::Deny, 0),
        rule("a", "", "*", Access::Deny, 0),
        rule("c", "", "*", Access::Deny, 0),
    ])
    .unwrap();
    assert_eq!(
        set.verify(Some(&account(&[])), &hello()),
        forbidden(Some("a"))
    );
    let order: Vec<&str> = set.rules().iter().map(|r| r.id.as_str()).collect();
    assert_eq!(order, ["a", "b", "c"]);
}

#[test]
fn a_rule_for_other_callers_does_not_apply() {
    // The deny only applies to holders of `banned`; others fall through to the grant.
    let set = RuleSet::new([
        rule("ban", "banned", "*", Access::Deny, 10),
        rule("all", "*", "*", Access::Grant, 0),
    ])
    .unwrap();
    assert_eq!(set.verify(Some(&account(&[])), &hello()), Ok(()));
    assert_eq!(
        set.verify(Some(&account(&["banned"])), &hello()),
        forbidden(Some("ban"))
    );
}

#[test]
fn an_anonymous_caller_refused_is_unauthenticated() {
    let set = RuleSet::new([rule("deny-all", "", "*", Access::Deny, 0)]).unwrap();
    assert_eq!(set.verify(None, &hello()), Err(Denied::Unauthenticated));
    assert_eq!(
        set.verify(Some(&account(&[])), &hello()),
        forbidden(Some("deny-all"))
    );
}

#[test]
fn wildcards() {
    let with = |kind: &str, name: &str, endpoint: &str| {
        RuleSet::new([Rule {
            id: "r".to_owned(),
            scope: String::new(),
            resource: Resource::new(kind, name, endpoint),
            access: Access::Grant,
            priority: 0,
        }])
        .unwrap()
    };
    let allows = |set: &RuleSet, resource: Resource| set.verify(None, &resource).is_ok();

    let any = with("*", "*", "*");
    assert!(allows(&any, Resource::new("", "", "")));
    assert!(allows(&any, Resource::new("topic", "x", "y")));

    let prefix = with("service", "greeter", "Greeter.*");
    assert!(allows(
        &prefix,
        Resource::service("greeter", "Greeter.Hello")
    ));
    assert!(allows(&prefix, Resource::service("greeter", "Greeter.")));
    assert!(!allows(&prefix, Resource::service("greeter", "Greeter")));
    assert!(!allows(
        &prefix,
        Resource::service("greeter", "greeter.Hello")
    ));
    assert!(!allows(
        &prefix,
        Resource::service("greeter2", "Greeter.Hello")
    ));
    assert!(!allows(
        &prefix,
        Resource::new("topic", "greeter", "Greeter.Hello")
    ));

    let name_prefix = with("service", "greet*", "*");
    assert!(allows(&name_prefix, Resource::service("greeter", "X")));
    assert!(allows(&name_prefix, Resource::service("greet", "X")));
    assert!(!allows(&name_prefix, Resource::service("gree", "X")));

    let exact = with("service", "greeter", "Greeter.Hello");
    assert!(allows(&exact, hello()));
    assert!(!allows(
        &exact,
        Resource::service("greeter", "Greeter.Hello2")
    ));
    // A `*` in the called resource is just a character.
    assert!(!allows(&exact, Resource::service("greeter", "*")));
}

#[test]
fn invalid_rules_are_refused() {
    let bad_endpoint = |endpoint: &str| RuleSet::new([rule("r", "", endpoint, Access::Grant, 0)]);
    for pattern in ["Gree*er", "*Hello", "**", "a**"] {
        assert_eq!(
            bad_endpoint(pattern).unwrap_err(),
            RuleError::Wildcard {
                id: "r".to_owned(),
                field: "endpoint",
                pattern: pattern.to_owned()
            },
            "{pattern}"
        );
    }
    assert_eq!(
        RuleSet::new([rule("", "", "*", Access::Grant, 0)]).unwrap_err(),
        RuleError::EmptyId { index: 0 }
    );
    assert_eq!(
        RuleSet::new([
            rule("r", "", "*", Access::Grant, 0),
            rule("r", "", "*", Access::Deny, 1)
        ])
        .unwrap_err(),
        RuleError::DuplicateId { id: "r".to_owned() }
    );
    assert!(matches!(
        RuleSet::new([rule("r", "adm*", "*", Access::Grant, 0)]),
        Err(RuleError::Scope { .. })
    ));
    let message = bad_endpoint("Gree*er").unwrap_err().to_string();
    assert!(
        message.contains("Gree*er") && message.contains("rule r"),
        "{message}"
    );
}

#[test]
fn rules_round_trip_through_json() {
    let rules = vec![rule("r", "admin", "Greeter.*", Access::Deny, -3)];
    let json = serde_json::to_string(&rules).unwrap();
    assert!(json.contains(r#""access":"deny""#), "{json}");
    let back: Vec<Rule> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, rules);
}

#[test]
fn shareable_across_threads() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<RuleSet>();
    is_send_sync::<Denied>();
}
