//! Who may open a data-plane connection to which service: the allow rules of the
//! `[[dataplane.allow]]` config tables, checked at the ingress node (for the node itself)
//! and at the origin (for the requesting node named in the stream header).
//!
//! The contract:
//! - A rule names services (`web.acme`, an aggregate `*.acme`, or `*` for every service)
//!   and principals (`*`, an org `globex`, or a node `globex/gw-1`). A request is allowed
//!   when one rule names both its service and its requester; nothing else is allowed.
//! - [`AccessRules::own_org`] is what a node uses when its config has no rule: every node
//!   of its own org may reach every service, nobody else anything.
//! - Pure: no IO, no clock. The Cedar policy engine replaces this type behind the same
//!   question ([`AccessRules::decide`]).

use trellis_routing::{NodeId, OrgId, ServiceName};

/// Which services a rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Services {
    /// Every service (`*`).
    Any,
    /// A name or an aggregate (`*.eu.acme` covers every name below `eu.acme`).
    Name(ServiceName),
}

/// Whom a rule allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Any node of any org (`*`).
    Any,
    /// Every node of one org (`globex`).
    Org(OrgId),
    /// One node (`globex/gw-1`).
    Node(NodeId),
}

impl Principal {
    /// Parses `*`, an org id or a node id.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self::Any);
        }
        if text.contains('/') {
            return NodeId::new(text)
                .map(Self::Node)
                .map_err(|e| format!("principal {text:?}: {e}"));
        }
        OrgId::new(text)
            .map(Self::Org)
            .map_err(|e| format!("principal {text:?}: {e}"))
    }

    fn matches(&self, node: &NodeId) -> bool {
        match self {
            Self::Any => true,
            Self::Org(org) => node.in_org(org),
            Self::Node(n) => n == node,
        }
    }
}

impl Services {
    /// Parses `*`, a service name or an aggregate.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self::Any);
        }
        ServiceName::new(text)
            .map(Self::Name)
            .map_err(|e| format!("service {text:?}: {e}"))
    }

    fn covers(&self, service: &ServiceName) -> bool {
        match self {
            Self::Any => true,
            Self::Name(pattern) => service
                .lookup_keys()
                .any(|key| key.as_str() == pattern.as_str()),
        }
    }
}

/// One allow rule: these principals may reach these services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    /// Services covered.
    pub services: Vec<Services>,
    /// Principals allowed.
    pub from: Vec<Principal>,
}

/// The answer to "may `requester` reach `service`?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the rule at this index.
    Allow(usize),
    /// No rule allows it.
    Deny,
}

impl Decision {
    /// Whether it was allowed.
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allow(_))
    }
}

/// A node's allow rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRules {
    rules: Vec<AllowRule>,
}

impl AccessRules {
    /// Exactly `rules` (an empty list allows nothing).
    pub fn new(rules: Vec<AllowRule>) -> Self {
        Self { rules }
    }

    /// The default: every node of `org` may reach every service; nobody else.
    pub fn own_org(org: &OrgId) -> Self {
        Self::new(vec![AllowRule {
            services: vec![Services::Any],
            from: vec![Principal::Org(org.clone())],
        }])
    }

    /// The rules as Cedar policies (`@id("dataplane-allow-N")`, N from 1), permitting
    /// `connect_to_service` exactly where [`AccessRules::decide`] allows; what the
    /// daemon loads beside its policies (docs/adr/0016-cedar-decides.md).
    pub fn to_cedar(&self) -> String {
        let mut out = String::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let services: Vec<String> = rule
                .services
                .iter()
                .map(|s| match s {
                    Services::Any => "true".to_owned(),
                    Services::Name(n) if n.as_str().starts_with("*.") => {
                        format!("resource.name like \"{}\"", n.as_str())
                    }
                    Services::Name(n) => format!("resource.name == \"{}\"", n.as_str()),
                })
                .collect();
            let from: Vec<String> = rule
                .from
                .iter()
                .map(|p| match p {
                    Principal::Any => "true".to_owned(),
                    Principal::Org(o) => format!("principal.org == \"{}\"", o.as_str()),
                    Principal::Node(n) => format!("principal == Node::\"{}\"", n.as_str()),
                })
                .collect();
            out.push_str(&format!(
                "@id(\"dataplane-allow-{}\")\npermit (principal is Node, action == Action::\"connect_to_service\", resource is Service)\nwhen {{ ({}) && ({}) }};\n",
                i + 1,
                services.join(" || "),
                from.join(" || ")
            ));
        }
        out
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[AllowRule] {
        &self.rules
    }

    /// May `requester` reach `service`? The first rule that covers both allows it.
    pub fn decide(&self, requester: &NodeId, service: &ServiceName) -> Decision {
        self.rules
            .iter()
            .position(|r| {
                r.services.iter().any(|s| s.covers(service))
                    && r.from.iter().any(|p| p.matches(requester))
            })
            .map_or(Decision::Deny, Decision::Allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeId {
        NodeId::new(s).expect("node id")
    }

    fn svc(s: &str) -> ServiceName {
        ServiceName::new(s).expect("service")
    }

    fn rule(services: &[&str], from: &[&str]) -> AllowRule {
        AllowRule {
            services: services
                .iter()
                .map(|s| Services::parse(s).expect("services"))
                .collect(),
            from: from
                .iter()
                .map(|p| Principal::parse(p).expect("principal"))
                .collect(),
        }
    }

    #[test]
    fn the_default_allows_the_own_org_only() {
        let rules = AccessRules::own_org(&OrgId::new("acme").expect("org"));
        assert!(rules.decide(&node("acme/a"), &svc("web.acme")).allowed());
        assert!(rules.decide(&node("acme/a"), &svc("db.globex")).allowed());
        assert_eq!(
            rules.decide(&node("globex/g"), &svc("web.acme")),
            Decision::Deny
        );
    }

    #[test]
    fn a_rule_needs_both_its_service_and_its_principal() {
        let rules = AccessRules::new(vec![
            rule(&["web.acme"], &["globex"]),
            rule(&["*.eu.acme"], &["initech/i1"]),
        ]);
        assert_eq!(
            rules.decide(&node("globex/g"), &svc("web.acme")),
            Decision::Allow(0)
        );
        assert_eq!(
            rules.decide(&node("globex/g"), &svc("db.acme")),
            Decision::Deny
        );
        assert_eq!(
            rules.decide(&node("initech/i1"), &svc("books.eu.acme")),
            Decision::Allow(1)
        );
        assert_eq!(
            rules.decide(&node("initech/i2"), &svc("books.eu.acme")),
            Decision::Deny
        );
        // An aggregate covers the names below it, not its own suffix.
        assert_eq!(
            rules.decide(&node("initech/i1"), &svc("eu.acme")),
            Decision::Deny
        );
    }

    #[test]
    fn no_rules_allow_nothing_and_a_star_allows_everyone() {
        assert_eq!(
            AccessRules::new(vec![]).decide(&node("acme/a"), &svc("web.acme")),
            Decision::Deny
        );
        let open = AccessRules::new(vec![rule(&["*"], &["*"])]);
        assert!(open.decide(&node("x/y"), &svc("a.b")).allowed());
    }

    #[test]
    fn bad_principals_and_services_are_refused_with_a_sentence() {
        assert!(Principal::parse("Globex").is_err());
        assert!(Principal::parse("acme/").is_err());
        assert!(Services::parse("web..acme").is_err());
        assert_eq!(
            Principal::parse(" acme/a ").expect("trimmed"),
            Principal::Node(node("acme/a"))
        );
    }

    #[test]
    fn the_cedar_translation_decides_as_the_rules_do() {
        use crate::cedar::{Act, Policies, Resource, Subject};
        let sets = [
            AccessRules::own_org(&OrgId::new("acme").expect("org")),
            AccessRules::new(vec![
                rule(&["web.acme", "*.eu.acme"], &["globex"]),
                rule(&["db.acme"], &["initech/gw-1", "acme"]),
                rule(&["*"], &["acme/admin"]),
            ]),
            AccessRules::new(vec![rule(&["*.acme"], &["*"])]),
            AccessRules::new(Vec::new()),
        ];
        let services = [
            "web.acme",
            "db.acme",
            "x.eu.acme",
            "a.b.eu.acme",
            "eu.acme",
            "db.globex",
            "web.acme.x",
        ];
        let nodes = [
            "acme/a",
            "acme/admin",
            "globex/g",
            "initech/gw-1",
            "initech/gw-2",
        ];
        for rules in &sets {
            let policies = Policies::load(&rules.to_cedar(), "generated").expect("valid Cedar");
            for s in services {
                let Ok(name) = ServiceName::new(s) else {
                    continue;
                };
                for n in nodes {
                    let want = rules.decide(&node(n), &name).allowed();
                    let got = policies.decide(
                        &Subject::Node { id: n.into() },
                        Act::ConnectToService,
                        &Resource::Service {
                            name: s.into(),
                            org: s.rsplit('.').next().unwrap_or_default().into(),
                        },
                    );
                    assert_eq!(
                        got.allowed,
                        want,
                        "{n} → {s} under {:?}: {got:?}",
                        rules.rules()
                    );
                }
            }
        }
    }
}
