//! Name ownership in the router: a listed name the origin may not use is treated as
//! withdrawn and counted; a newer trust snapshot (scopes, delegations) re-checks every
//! route at once (docs/adr/0011).

use super::*;
use crate::ownership::{Grantee, NamePattern, NameRules, OrgNames, ScopeNodes};
use crate::Relationship::Internal;

fn org(s: &str) -> OrgId {
    OrgId::new(s).expect("org")
}

fn acme_rules(names: OrgNames) -> NameRules {
    let mut rules = NameRules::default();
    rules.set(org("acme"), names);
    rules
}

fn pattern(s: &str) -> NamePattern {
    NamePattern::new(s, &org("acme")).expect("pattern")
}

#[test]
fn another_orgs_name_is_not_valid_even_with_a_good_manifest_and_is_counted() {
    let mut h = H::new("acme/r");
    h.peer("acme/p", Internal);
    // globex/evil signs a manifest claiming acme's name, and a real acme origin exists.
    h.manifest("globex/evil", 1, &["books.acme"]);
    h.manifest("acme/o", 1, &["books.acme"]);
    h.announce(
        "acme/p",
        "books.acme",
        attrs("globex/evil", &["acme/p", "globex"], 1),
    );
    assert_eq!(h.best_hop("books.acme"), None, "the hijack is not usable");
    assert_eq!(h.r.stats().routes_rejected_name_owner, 1);
    h.announce(
        "acme/p",
        "books.acme",
        attrs("acme/o", &["acme/p", "acme/o"], 50),
    );
    assert_eq!(h.best_hop("books.acme"), Some("acme/p".into()));
    assert_eq!(
        h.r.paths(&svc("books.acme"))[0].attrs.origin,
        n("acme/o"),
        "the real origin wins"
    );
}

#[test]
fn a_name_without_an_org_is_never_valid() {
    let mut h = H::new("acme/r");
    h.peer("acme/p", Internal);
    h.manifest("acme/o", 1, &["books"]);
    h.announce("acme/p", "books", attrs("acme/o", &["acme/p", "acme/o"], 1));
    assert_eq!(h.best_hop("books"), None);
    assert_eq!(h.r.stats().routes_rejected_name_owner, 1);
}

#[test]
fn a_delegation_in_the_owners_snapshot_makes_the_name_valid_and_its_removal_withdraws_it() {
    let mut h = H::new("acme/r");
    h.peer("acme/p", Internal);
    h.manifest("globex/g", 1, &["books.acme"]);
    h.announce(
        "acme/p",
        "books.acme",
        attrs("globex/g", &["acme/p", "globex"], 1),
    );
    assert_eq!(h.best_hop("books.acme"), None);
    let delegated = acme_rules(OrgNames {
        scopes: vec![],
        delegations: vec![(Grantee::Org(org("globex")), vec![pattern("books.acme")])],
    });
    h.input(Input::TrustChanged { rules: delegated });
    assert_eq!(h.best_hop("books.acme"), Some("acme/p".into()));
    h.input(Input::TrustChanged {
        rules: NameRules::default(),
    });
    assert_eq!(
        h.best_hop("books.acme"),
        None,
        "withdrawn with the delegation"
    );
}

#[test]
fn scopes_withdraw_what_a_node_may_no_longer_originate() {
    let mut h = H::new("acme/r");
    h.peer("acme/p", Internal);
    h.manifest("acme/o", 1, &["books.acme", "films.eu.acme"]);
    h.announce(
        "acme/p",
        "books.acme",
        attrs("acme/o", &["acme/p", "acme/o"], 1),
    );
    h.announce(
        "acme/p",
        "films.eu.acme",
        attrs("acme/o", &["acme/p", "acme/o"], 1),
    );
    assert!(h.best_hop("books.acme").is_some() && h.best_hop("films.eu.acme").is_some());
    h.take();
    let scoped = acme_rules(OrgNames {
        scopes: vec![(ScopeNodes::Node(n("acme/o")), vec![pattern("*.eu.acme")])],
        delegations: vec![],
    });
    h.input(Input::TrustChanged { rules: scoped });
    assert_eq!(h.best_hop("books.acme"), None);
    assert!(h.best_hop("films.eu.acme").is_some());
    assert!(has_output(&h.take(), |o| matches!(
        o,
        Output::BestChanged { service, best: None } if service.as_str() == "books.acme"
    )));
}
