//! The cost of one Cedar route decision (docs/performance.md, "Cedar decisions"):
//! `cargo bench -p trellis-policy --bench route_decisions`.
//!
//! Decides `import_route` for N distinct routes (every one a cache miss: each service is
//! new) and then the same N again (every one a hit), under a policy set with a permit
//! and two conditional forbids, as a node with import filters runs.

use std::sync::Arc;
use std::time::Instant;

use trellis_policy::cedar::{CedarRoutes, Policies, Shared};
use trellis_routing::{
    Attrs, NodeId, PathHop, ProtocolHint, Relationship, RoutePolicy, ServiceName,
};

const POLICIES: &str = r#"
@id("all-routes")
permit (principal, action in [Action::"import_route", Action::"export_route"], resource);
@id("globex-short")
forbid (principal, action == Action::"import_route", resource is Route)
when { principal.org == "globex" && resource.path_len > 8 };
@id("no-internal")
forbid (principal, action == Action::"import_route", resource is Route)
when { resource.communities.contains("internal") };
"#;

fn main() {
    let n: usize = std::env::var("ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let Ok(policies) = Policies::load(POLICIES, "bench") else {
        eprintln!("the bench policies do not load");
        std::process::exit(1);
    };
    let filter = CedarRoutes::new(Arc::new(Shared::new(policies)));
    let node = |s: &str| NodeId::new(s).ok();
    let (Some(peer), Some(origin), Some(hop)) =
        (node("globex/gw"), node("initech/o"), node("initech/h"))
    else {
        return;
    };
    let attrs = Attrs {
        origin,
        origin_seq: 1,
        path: vec![PathHop::Node(hop); 3],
        metric: 30,
        communities: vec![Arc::from("gold")],
        protocol: ProtocolHint::Tcp,
        learned_from: Relationship::Peer,
    };
    let services: Vec<ServiceName> = (0..n)
        .filter_map(|i| ServiceName::new(&format!("s{i}.initech")).ok())
        .collect();
    for pass in ["miss (new route)", "hit (cached)"] {
        let start = Instant::now();
        let mut accepted = 0usize;
        for s in &services {
            if filter.import(&peer, Relationship::Peer, s, &attrs)
                == (trellis_routing::ImportDecision::Accept { local_pref: None })
            {
                accepted += 1;
            }
        }
        let took = start.elapsed();
        println!(
            "{pass}: {} decisions in {:.2} s, {:.2} µs each, {:.0} decisions/s ({accepted} accepted)",
            services.len(),
            took.as_secs_f64(),
            took.as_secs_f64() * 1e6 / services.len() as f64,
            services.len() as f64 / took.as_secs_f64()
        );
    }
}
