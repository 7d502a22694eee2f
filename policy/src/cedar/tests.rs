//! Cedar policies: the defaults reproduce today's behaviour, a bad text is refused at
//! its line, and every verdict names the policy that made it.

use super::*;

fn node(id: &str) -> Subject {
    Subject::Node { id: id.into() }
}

fn service(name: &str) -> Resource {
    Resource::Service {
        name: name.into(),
        org: name.rsplit('.').next().unwrap_or_default().into(),
    }
}

const OWN_ORG_CONNECTS: &str = r#"
@id("own-org-connects")
permit (principal is Node, action == Action::"connect_to_service", resource is Service)
when { principal.org == "acme" };
"#;

#[test]
fn the_schema_and_the_defaults_load() {
    let p = Policies::defaults(OWN_ORG_CONNECTS).expect("defaults");
    assert!(p.len() >= 5);
    let local = Subject::Operator {
        name: "local".into(),
        role: "local".into(),
        org: "acme".into(),
    };
    for act in Act::ALL {
        let daemon = Resource::Daemon { org: "acme".into() };
        let v = p.decide(&local, act, &daemon);
        if [
            Act::ConnectPeer,
            Act::OriginateRoute,
            Act::ImportRoute,
            Act::ExportRoute,
            Act::ConnectToService,
        ]
        .contains(&act)
        {
            continue; // Not admin actions: Daemon is not their resource.
        }
        assert!(v.allowed, "{act:?}: {v:?}");
        assert_eq!(v.policies, vec!["local-operator".to_owned()]);
    }
}

#[test]
fn data_plane_defaults_allow_the_own_org_only() {
    let p = Policies::defaults(OWN_ORG_CONNECTS).expect("defaults");
    let ok = p.decide(
        &node("acme/n2"),
        Act::ConnectToService,
        &service("books.globex"),
    );
    assert!(ok.allowed);
    assert_eq!(ok.policies, vec!["own-org-connects".to_owned()]);
    let no = p.decide(
        &node("globex/gw"),
        Act::ConnectToService,
        &service("books.acme"),
    );
    assert!(!no.allowed);
    assert!(no.policies.is_empty(), "nothing permitted it: {no:?}");
}

#[test]
fn a_forbid_wins_and_is_named() {
    let text = format!(
        "{OWN_ORG_CONNECTS}\n@id(\"no-billing\")\nforbid (principal, action == Action::\"connect_to_service\", resource is Service)\nwhen {{ resource.name like \"*.billing.acme\" }};\n"
    );
    let p = Policies::load(&text, "policy.cedar").expect("valid");
    let v = p.decide(
        &node("acme/n2"),
        Act::ConnectToService,
        &service("pay.billing.acme"),
    );
    assert!(!v.allowed);
    assert_eq!(v.policies, vec!["no-billing".to_owned()]);
    assert!(
        p.decide(
            &node("acme/n2"),
            Act::ConnectToService,
            &service("books.acme")
        )
        .allowed
    );
}

#[test]
fn route_attributes_reach_the_policies() {
    let text = r#"
@id("short-routes")
permit (principal is Node, action == Action::"import_route", resource is Route)
when { resource.path_len <= 3 && !resource.communities.contains("no-import") };
"#;
    let p = Policies::load(text, "routes.cedar").expect("valid");
    let route = |path_len, communities: &[&str]| Resource::Route {
        service: "books.globex".into(),
        origin_org: "globex".into(),
        communities: communities.iter().map(|c| (*c).to_owned()).collect(),
        path_len,
    };
    let peer = node("globex/gw");
    assert!(p.decide(&peer, Act::ImportRoute, &route(2, &[])).allowed);
    assert!(!p.decide(&peer, Act::ImportRoute, &route(4, &[])).allowed);
    assert!(
        !p.decide(&peer, Act::ImportRoute, &route(1, &["no-import"]))
            .allowed
    );
}

#[test]
fn a_bad_text_is_refused_at_its_line() {
    let syntax = "permit (principal, action, resource);\n\nforbid (principal action, resource);\n";
    let e = Policies::load(syntax, "p.cedar").expect_err("syntax");
    assert_eq!((e.file.as_str(), e.line), ("p.cedar", 3), "{e}");
    assert!(!e.to_string().contains('\n'));
    let types = "permit (principal, action, resource);\n\npermit (principal is Node, action == Action::\"connect_to_service\", resource)\nwhen { principal.colour == \"red\" };\n";
    let e = Policies::load(types, "p.cedar").expect_err("schema");
    assert!(e.line >= 3, "{e}");
    assert!(e.to_string().starts_with("p.cedar:"), "{e}");
    let action = "permit (principal, action == Action::\"launch\", resource);\n";
    assert!(Policies::load(action, "p.cedar").is_err());
}

#[test]
fn answers_are_cached_and_a_reload_starts_afresh() {
    let shared = Shared::new(Policies::defaults(OWN_ORG_CONNECTS).expect("defaults"));
    let req = (
        node("acme/n2"),
        Act::ConnectToService,
        service("books.acme"),
    );
    assert!(shared.decide(&req.0, req.1, &req.2).allowed);
    assert_eq!(
        shared.current().cache.lock().map(|c| c.len()).unwrap_or(0),
        1
    );
    shared.replace(Policies::load("", "empty.cedar").expect("empty is valid"));
    let v = shared.decide(&req.0, req.1, &req.2);
    assert!(!v.allowed, "no policy: deny");
}

#[test]
fn policy_check_parses_what_operators_type() {
    assert_eq!(
        Subject::parse("Node::\"globex/gw\"", None),
        Ok(node("globex/gw"))
    );
    assert!(matches!(
        Subject::parse("Operator::\"alice\"", Some("viewer")),
        Ok(Subject::Operator { role, .. }) if role == "viewer"
    ));
    assert!(Subject::parse("User::\"x\"", None).is_err());
    assert_eq!(
        Resource::parse("Service::\"books.acme\"", "acme"),
        Ok(service("books.acme"))
    );
    assert!(matches!(
        Resource::parse("Peer::\"globex/gw\"", "acme"),
        Ok(Resource::Peer { role, .. }) if role == "peer"
    ));
    assert_eq!(
        Act::from_name("Action::\"view_audit\""),
        Some(Act::ViewAudit)
    );
    assert_eq!(Act::from_name("launch"), None);
}

#[test]
fn the_routing_core_filter_asks_with_the_route_attributes() {
    use std::sync::Arc;
    use trellis_routing::{
        Attrs, ImportDecision, NodeId, PathHop, ProtocolHint, Relationship, RoutePolicy,
        ServiceName,
    };
    let text = r#"
@id("all-routes")
permit (principal, action in [Action::"import_route", Action::"export_route"], resource);
@id("globex-short")
forbid (principal, action == Action::"import_route", resource is Route)
when { principal.org == "globex" && resource.path_len > 2 };
@id("no-export-internal")
forbid (principal, action == Action::"export_route", resource is Route)
when { resource.communities.contains("internal") };
"#;
    let filter = CedarRoutes::new(Arc::new(Shared::new(
        Policies::load(text, "r.cedar").expect("valid"),
    )));
    let node = |s: &str| NodeId::new(s).expect("node");
    let attrs = |hops: usize, communities: &[&str]| Attrs {
        origin: node("initech/o"),
        origin_seq: 1,
        path: (0..hops)
            .map(|i| PathHop::Node(node(&format!("initech/h{i}"))))
            .collect(),
        metric: 10,
        communities: communities.iter().map(|c| Arc::<str>::from(*c)).collect(),
        protocol: ProtocolHint::Tcp,
        learned_from: Relationship::Peer,
    };
    let svc = ServiceName::new("web.initech").expect("service");
    let from =
        |peer: &str, hops| filter.import(&node(peer), Relationship::Peer, &svc, &attrs(hops, &[]));
    assert_eq!(
        from("globex/gw", 2),
        ImportDecision::Accept { local_pref: None }
    );
    assert_eq!(from("globex/gw", 3), ImportDecision::Reject);
    assert_eq!(
        from("acme/b", 3),
        ImportDecision::Accept { local_pref: None }
    );
    assert!(filter.export(
        &node("globex/gw"),
        Relationship::Peer,
        &svc,
        &attrs(1, &["gold"])
    ));
    assert!(!filter.export(
        &node("globex/gw"),
        Relationship::Peer,
        &svc,
        &attrs(1, &["internal"])
    ));
}

#[test]
fn a_decision_is_uniform_over_routes_only_when_no_policy_looks_at_the_route() {
    let defaults = Policies::defaults(OWN_ORG_CONNECTS).expect("defaults");
    assert!(defaults.uniform_over_routes(Act::OriginateRoute));
    let named = r#"
permit (principal, action, resource);
@id("no-internal")
forbid (principal, action == Action::"originate_route", resource is Route)
when { resource.service like "*.internal.acme" };
"#;
    let p = Policies::load(named, "p.cedar").expect("valid");
    assert!(!p.uniform_over_routes(Act::OriginateRoute));
    assert!(
        p.uniform_over_routes(Act::ConnectPeer),
        "the condition is on another action"
    );
    let daemon_only = r#"
permit (principal, action == Action::"originate_route", resource);
permit (principal is Operator, action, resource is Daemon) when { principal.role == "local" };
"#;
    let p = Policies::load(daemon_only, "p.cedar").expect("valid");
    assert!(
        p.uniform_over_routes(Act::OriginateRoute),
        "a Daemon policy never applies to routes"
    );
}
