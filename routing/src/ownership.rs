//! Name ownership: who may originate which service name (docs/adr/0011, as RPKI route
//! origin authorisation does for prefixes, RFC 6480/6811).
//!
//! A signed manifest proves *who* speaks; these rules decide whether that speaker may use
//! the name. A name belongs to the org of its last label (`books.acme` and `*.eu.acme` are
//! acme's); a name of one label has no owner and nobody may originate it.
//!
//! - By default every node of the owning org may originate every name the org owns.
//! - The owner's authority may narrow that with **scopes** in its signed trust snapshot:
//!   once an org publishes any scope, a node of that org may originate a name only if a
//!   scope for that node (or for every node, `*`) covers it.
//! - Another org may originate a name only under a **delegation** in the owner's signed
//!   snapshot, to that org or to one of its nodes.
//!
//! A pattern is a name (`books.acme`, exact) or an aggregate (`*.eu.acme`, which covers
//! every name ending in `.eu.acme` and the aggregate itself). Pure data: the daemon builds
//! [`NameRules`] from the snapshots it holds and hands them to the router.

use std::collections::HashMap;

use crate::name::{NodeId, OrgId, ServiceName};

/// A name or aggregate pattern inside one org's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern(ServiceName);

impl NamePattern {
    /// Parses `text` as a pattern owned by `owner`; `Err` with a sentence otherwise.
    pub fn new(text: &str, owner: &OrgId) -> Result<Self, String> {
        let name = ServiceName::new(text).map_err(|e| format!("{text:?}: {e}"))?;
        match owner_of(&name) {
            Some(org) if &org == owner => Ok(Self(name)),
            _ => Err(format!(
                "{text:?} is not in {}'s namespace (its last label must be {})",
                owner.as_str(),
                owner.as_str()
            )),
        }
    }

    /// Whether this pattern covers `name`.
    pub fn covers(&self, name: &ServiceName) -> bool {
        let pattern = self.0.as_str();
        match pattern.strip_prefix("*.") {
            Some(suffix) => {
                let body = name.as_str().strip_prefix("*.").unwrap_or(name.as_str());
                name == &self.0
                    || (body.len() > suffix.len()
                        && body.ends_with(suffix)
                        && body.as_bytes()[body.len() - suffix.len() - 1] == b'.')
            }
            None => name == &self.0,
        }
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The org that owns `name`: its last label, if that is a valid org id and the name has
/// another label before it (or is an aggregate, as `*.acme`).
pub fn owner_of(name: &ServiceName) -> Option<OrgId> {
    let last = match name.as_str().strip_prefix("*.") {
        // `*.acme` is the aggregate of all of acme.
        Some(body) => body.rsplit('.').next()?,
        None => name.as_str().rsplit_once('.')?.1,
    };
    OrgId::new(last).ok()
}

/// Which nodes a scope is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeNodes {
    /// Every node of the org.
    All,
    /// One node.
    Node(NodeId),
}

/// Who a delegation is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    /// Every node of another org.
    Org(OrgId),
    /// One node of another org.
    Node(NodeId),
}

/// What one org's authority has said about its names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgNames {
    /// Scopes inside the org; empty: every node may originate every name of the org.
    pub scopes: Vec<(ScopeNodes, Vec<NamePattern>)>,
    /// Names other orgs (or their nodes) may originate.
    pub delegations: Vec<(Grantee, Vec<NamePattern>)>,
}

/// Why an origin may not originate a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The name has no org label.
    #[error("{name} names no org (a service name ends with its org, as books.acme)")]
    NoOwner {
        /// The name.
        name: String,
    },
    /// The name is another org's and no delegation of it is known here.
    #[error("{name} belongs to {owner}; {origin} holds no delegation for it")]
    NotDelegated {
        /// The name.
        name: String,
        /// Its owner.
        owner: String,
        /// Who originated it.
        origin: String,
    },
    /// The owning org's scopes do not give the name to this node.
    #[error("{name} is outside the name scopes {owner}'s authority gives {origin}")]
    OutOfScope {
        /// The name.
        name: String,
        /// Its owner.
        owner: String,
        /// Who originated it.
        origin: String,
    },
}

/// The ownership rules of every org whose snapshot this node holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRules {
    orgs: HashMap<OrgId, OrgNames>,
}

impl NameRules {
    /// Sets what `org`'s authority says (from its newest verified snapshot).
    pub fn set(&mut self, org: OrgId, names: OrgNames) {
        self.orgs.insert(org, names);
    }

    /// What `org`'s authority says, if its snapshot is held.
    pub fn get(&self, org: &OrgId) -> Option<&OrgNames> {
        self.orgs.get(org)
    }

    /// Whether `origin` may originate `name`.
    pub fn check(&self, origin: &NodeId, name: &ServiceName) -> Result<(), Refusal> {
        let Some(owner) = owner_of(name) else {
            return Err(Refusal::NoOwner {
                name: name.as_str().to_owned(),
            });
        };
        let rules = self.orgs.get(&owner);
        if origin.in_org(&owner) {
            let Some(rules) = rules.filter(|r| !r.scopes.is_empty()) else {
                return Ok(());
            };
            let allowed = rules.scopes.iter().any(|(nodes, patterns)| {
                let for_origin = match nodes {
                    ScopeNodes::All => true,
                    ScopeNodes::Node(n) => n == origin,
                };
                for_origin && patterns.iter().any(|p| p.covers(name))
            });
            return allowed.then_some(()).ok_or_else(|| Refusal::OutOfScope {
                name: name.as_str().to_owned(),
                owner: owner.as_str().to_owned(),
                origin: origin.as_str().to_owned(),
            });
        }
        let delegated = rules.is_some_and(|r| {
            r.delegations.iter().any(|(grantee, patterns)| {
                let for_origin = match grantee {
                    Grantee::Org(org) => origin.in_org(org),
                    Grantee::Node(n) => n == origin,
                };
                for_origin && patterns.iter().any(|p| p.covers(name))
            })
        });
        delegated
            .then_some(())
            .ok_or_else(|| Refusal::NotDelegated {
                name: name.as_str().to_owned(),
                owner: owner.as_str().to_owned(),
                origin: origin.as_str().to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> ServiceName {
        ServiceName::new(s).expect("name")
    }
    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("id")
    }
    fn org(s: &str) -> OrgId {
        OrgId::new(s).expect("org")
    }
    fn pat(s: &str) -> NamePattern {
        let owner = owner_of(&n(s)).expect("owner");
        NamePattern::new(s, &owner).expect("pattern")
    }

    #[test]
    fn a_name_belongs_to_the_org_of_its_last_label() {
        assert_eq!(owner_of(&n("books.acme")), Some(org("acme")));
        assert_eq!(owner_of(&n("*.eu.acme")), Some(org("acme")));
        assert_eq!(owner_of(&n("books")), None);
        assert_eq!(owner_of(&n("*.acme")), Some(org("acme")));
    }

    #[test]
    fn by_default_any_node_of_the_owner_may_originate_and_no_one_else() {
        let rules = NameRules::default();
        assert!(rules.check(&id("acme/a"), &n("books.acme")).is_ok());
        assert!(rules.check(&id("acme/a"), &n("*.eu.acme")).is_ok());
        assert!(matches!(
            rules.check(&id("acme/a"), &n("books.globex")),
            Err(Refusal::NotDelegated { .. })
        ));
        assert!(matches!(
            rules.check(&id("acme/a"), &n("books")),
            Err(Refusal::NoOwner { .. })
        ));
    }

    #[test]
    fn scopes_narrow_which_nodes_of_the_org_may_originate_what() {
        let mut rules = NameRules::default();
        rules.set(
            org("acme"),
            OrgNames {
                scopes: vec![
                    (ScopeNodes::Node(id("acme/a")), vec![pat("*.eu.acme")]),
                    (ScopeNodes::All, vec![pat("status.acme")]),
                ],
                delegations: vec![],
            },
        );
        assert!(rules.check(&id("acme/a"), &n("books.eu.acme")).is_ok());
        assert!(rules.check(&id("acme/a"), &n("x.y.eu.acme")).is_ok());
        assert!(rules.check(&id("acme/b"), &n("status.acme")).is_ok());
        assert!(matches!(
            rules.check(&id("acme/b"), &n("books.eu.acme")),
            Err(Refusal::OutOfScope { .. })
        ));
        assert!(rules.check(&id("acme/a"), &n("books.acme")).is_err());
        // `*.eu.acme` does not cover `eu.acme` or `neu.acme`.
        assert!(rules.check(&id("acme/a"), &n("eu.acme")).is_err());
        assert!(rules.check(&id("acme/a"), &n("x.neu.acme")).is_err());
    }

    #[test]
    fn another_org_may_originate_only_what_the_owner_delegated_to_it() {
        let mut rules = NameRules::default();
        rules.set(
            org("acme"),
            OrgNames {
                scopes: vec![],
                delegations: vec![
                    (Grantee::Org(org("globex")), vec![pat("books.acme")]),
                    (Grantee::Node(id("initech/x")), vec![pat("*.cdn.acme")]),
                ],
            },
        );
        assert!(rules.check(&id("globex/any"), &n("books.acme")).is_ok());
        assert!(rules.check(&id("globex/any"), &n("films.acme")).is_err());
        assert!(rules.check(&id("initech/x"), &n("img.cdn.acme")).is_ok());
        assert!(rules.check(&id("initech/y"), &n("img.cdn.acme")).is_err());
    }

    #[test]
    fn a_pattern_outside_the_owners_namespace_is_refused() {
        assert!(NamePattern::new("books.globex", &org("acme")).is_err());
        assert!(NamePattern::new("books", &org("acme")).is_err());
        assert!(NamePattern::new("*.acme", &org("acme")).is_ok());
    }
}
