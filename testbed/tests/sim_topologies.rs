//! Topology tests of the routing core, driven by the simulator.

use std::collections::BTreeSet;
use std::time::Duration;

use trellis_routing::{NodeId, PathHop, Relationship, ServiceName};
use trellis_testbed::run::{audit, run, service_of, SimOptions};
use trellis_testbed::sim::{walk, LinkParams, Sim, SimConfig, Walk};
use trellis_testbed::topology::{LinkSpec, Shape, Topology};

const LONG: Duration = Duration::from_secs(600);

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn topo(nodes: &[&str], links: &[(usize, usize, Relationship)]) -> Topology {
    Topology {
        nodes: nodes.iter().map(|n| NodeId::new(n).unwrap()).collect(),
        links: links
            .iter()
            .map(|&(a, b, role)| LinkSpec { a, b, role })
            .collect(),
    }
}

fn sim(t: &Topology) -> Sim {
    let cfg = SimConfig {
        mrai: Duration::from_millis(20),
        ..SimConfig::default()
    };
    let mut s = Sim::new(t, LinkParams::default(), cfg);
    s.start();
    s
}

fn next_hop(s: &Sim, node: usize, service: &str) -> Option<String> {
    s.router(node)
        .best(&svc(service))
        .map(|b| b.next_hop.map_or("local".into(), |h| h.to_string()))
}

use Relationship::*;

/// ```text
/// A ── B ── C ── D      (A originates books.a)
/// ```
#[test]
fn line_carries_a_service_end_to_end_and_withdraws_it_everywhere() {
    let t = topo(
        &["a/a", "a/b", "a/c", "a/d"],
        &[(0, 1, Internal), (1, 2, Internal), (2, 3, Internal)],
    );
    let mut s = sim(&t);
    s.originate(0, svc("books.a"), Duration::ZERO);
    assert!(s.run(LONG));
    // 1. D reaches it with path [C, B, A] (as C would with [B, A]).
    let best = s.router(3).best(&svc("books.a")).unwrap();
    let path: Vec<String> = best
        .attrs
        .path
        .iter()
        .map(|h| match h {
            PathHop::Node(n) => n.to_string(),
            PathHop::Org(o) => o.to_string(),
        })
        .collect();
    assert_eq!(path, ["a/c", "a/b", "a/a"]);
    assert_eq!(best.next_hop.unwrap().as_str(), "a/c");
    assert_eq!(best.metric, 30, "three links of cost 10");
    assert_eq!(walk(&s, 3, &svc("books.a")), Walk::Delivered { hops: 3 });
    // 2. Withdrawn at A, it disappears everywhere.
    s.withdraw(0, svc("books.a"), Duration::ZERO);
    assert!(s.run(LONG));
    for i in 0..4 {
        assert_eq!(next_hop(&s, i, "books.a"), None, "node {i}");
    }
}

/// ```text
///     A
///    / \      A originates books.a; the A–B link is cut.
///   B ─ C
/// ```
#[test]
fn triangle_falls_back_to_the_other_path_as_soon_as_the_loss_is_detected() {
    let t = topo(
        &["a/a", "a/b", "a/c"],
        &[(0, 1, Internal), (1, 2, Internal), (0, 2, Internal)],
    );
    let mut s = sim(&t);
    s.originate(0, svc("books.a"), Duration::ZERO);
    assert!(s.run(LONG));
    assert_eq!(next_hop(&s, 1, "books.a").as_deref(), Some("a/a"));
    let paths = s.router(1).paths(&svc("books.a"));
    assert_eq!(paths.len(), 2, "B keeps the path via C too");
    s.reset_counters();
    assert!(s.cut_link(0, 1, Duration::ZERO));
    // Run exactly to the detection instant: no message has to arrive first.
    s.run(SimConfig::default().detect);
    assert_eq!(next_hop(&s, 1, "books.a").as_deref(), Some("a/c"));
    assert_eq!(walk(&s, 1, &svc("books.a")), Walk::Delivered { hops: 2 });
    assert!(s.run(LONG));
    assert_eq!(next_hop(&s, 2, "books.a").as_deref(), Some("a/a"));
}

#[test]
fn ring_survives_a_node_failure_without_loops() {
    let t = Topology::generate(Shape::Ring, 8, 1, 1).unwrap();
    let mut s = sim(&t);
    for i in 0..8 {
        let name = service_of(&s, i);
        s.originate(i, name, Duration::ZERO);
    }
    assert!(s.run(LONG));
    let a = audit(&s);
    assert_eq!((a.undelivered, a.loops), (0, 0));
    s.fail_node(3, Duration::ZERO);
    assert!(s.run(LONG));
    let a = audit(&s);
    assert_eq!((a.undelivered, a.loops, a.partitioned), (0, 0, 0));
    // Node 4 now goes the long way round to reach node 2's service.
    let to2 = service_of(&s, 2);
    assert_eq!(walk(&s, 4, &to2), Walk::Delivered { hops: 6 });
}

#[test]
fn two_origins_at_the_same_instant_both_converge_deterministically() {
    let t = Topology::generate(Shape::Random, 12, 1, 5).unwrap();
    let tables = |_: ()| {
        let mut s = sim(&t);
        s.originate(0, svc("anycast.a"), Duration::ZERO);
        s.originate(7, svc("anycast.a"), Duration::ZERO);
        s.originate(7, svc("only7.a"), Duration::ZERO);
        s.originate(0, svc("only0.a"), Duration::ZERO);
        assert!(s.run(LONG));
        for n in 0..12 {
            for name in ["anycast.a", "only7.a", "only0.a"] {
                assert!(
                    matches!(walk(&s, n, &svc(name)), Walk::Delivered { .. }),
                    "{name} from node {n}"
                );
            }
        }
        (0..12)
            .map(|n| next_hop(&s, n, "anycast.a"))
            .collect::<Vec<_>>()
    };
    let first = tables(());
    assert_eq!(first, tables(()), "same inputs, same tables");
    assert_eq!(first[0].as_deref(), Some("local"));
    assert_eq!(first[7].as_deref(), Some("local"));
}

/// ```text
///   p1/n0        p2/n0        two providers, not linked to each other
///      \          /
///     c/n0 ── c/n1            c is a customer of both
/// ```
#[test]
fn a_customer_does_not_leak_one_providers_routes_to_another() {
    let t = topo(
        &["p1/n0", "p2/n0", "c/n0", "c/n1"],
        &[(2, 0, Provider), (3, 1, Provider), (2, 3, Internal)],
    );
    let mut s = sim(&t);
    s.originate(0, svc("web.p1"), Duration::ZERO);
    s.originate(1, svc("web.p2"), Duration::ZERO);
    s.originate(3, svc("api.c"), Duration::ZERO);
    assert!(s.run(LONG));
    // 1. The customer reaches both providers' services.
    assert!(matches!(
        walk(&s, 2, &svc("web.p2")),
        Walk::Delivered { .. }
    ));
    assert!(matches!(
        walk(&s, 3, &svc("web.p1")),
        Walk::Delivered { .. }
    ));
    // 2. Neither provider learns the other's service through the customer.
    assert_eq!(next_hop(&s, 1, "web.p1"), None);
    assert_eq!(next_hop(&s, 0, "web.p2"), None);
    // 3. Both providers reach the customer, seeing one org hop only.
    for p in [0, 1] {
        let best = s.router(p).best(&svc("api.c")).unwrap();
        assert_eq!(best.attrs.path, vec![PathHop::Org("c".parse().unwrap())]);
    }
}

#[test]
fn internal_topology_never_leaves_the_org() {
    let r = run(&SimOptions {
        nodes: 30,
        shape: Shape::MultiOrg,
        orgs: 3,
        seed: 3,
        link: LinkParams::default(),
        config: SimConfig::default(),
        fail_node: None,
        limit: LONG,
    })
    .unwrap();
    assert_eq!((r.initial.end.undelivered, r.initial.end.loops), (0, 0));
    // Rebuild the same network to inspect every path every node holds.
    let t = Topology::generate(Shape::MultiOrg, 30, 3, 3).unwrap();
    let mut s = Sim::new(&t, LinkParams::default(), SimConfig::default());
    s.start();
    for i in 0..30 {
        let name = service_of(&s, i);
        s.originate(i, name, Duration::ZERO);
    }
    assert!(s.run(LONG));
    let mut external_routes = 0;
    for i in 0..30 {
        let me = s.ids()[i].clone();
        for j in 0..30 {
            for p in s.router(i).paths(&service_of(&s, j)) {
                for hop in &p.attrs.path {
                    if let PathHop::Node(n) = hop {
                        assert_eq!(n.org_str(), me.org_str(), "{me} sees {n}");
                    }
                }
                external_routes += usize::from(p.attrs.org_path_len() > 0);
            }
        }
    }
    assert!(external_routes > 0);
}

#[test]
fn lossy_links_delay_convergence_but_not_correctness() {
    let t = Topology::generate(Shape::Grid, 16, 1, 2).unwrap();
    let link = LinkParams {
        delay: Duration::from_millis(5),
        loss: 0.2,
    };
    let mut s = Sim::new(&t, link, SimConfig::default());
    s.start();
    for i in 0..16 {
        let name = service_of(&s, i);
        s.originate(i, name, Duration::ZERO);
    }
    assert!(s.run(LONG));
    let a = audit(&s);
    assert_eq!((a.undelivered, a.loops), (0, 0));
}

#[test]
fn a_failure_report_counts_only_reachable_services() {
    let r = run(&SimOptions {
        nodes: 40,
        shape: Shape::Random,
        orgs: 1,
        seed: 11,
        link: LinkParams::default(),
        config: SimConfig::default(),
        fail_node: Some(0),
        limit: LONG,
    })
    .unwrap();
    let f = r.failure.unwrap();
    assert!(f.phase.quiet);
    assert_eq!((f.phase.end.undelivered, f.phase.end.loops), (0, 0));
    assert_eq!(r.routes_per_node.min, 40);
}

/// (node, service) pairs.
type Pairs = BTreeSet<(usize, ServiceName)>;

/// Every node's walk for every service at every instant, the slow way: what
/// the simulator's watch must find (after the same end-of-run filter).
fn brute_force_watch(
    s: &mut Sim,
    services: &[ServiceName],
    exclude: &ServiceName,
) -> (Pairs, Pairs) {
    let mut looped = BTreeSet::new();
    let mut holed = BTreeSet::new();
    let mut steps = 0;
    while s.step() {
        steps += 1;
        assert!(steps < 100_000, "network never went quiet");
        for service in services.iter().filter(|x| *x != exclude) {
            for n in (0..s.ids().len()).filter(|n| s.alive(*n)) {
                match walk(s, n, service) {
                    Walk::Loop => {
                        looped.insert((n, service.clone()));
                    }
                    Walk::BlackHole => {
                        holed.insert((n, service.clone()));
                    }
                    Walk::Delivered { .. } | Walk::NoRoute => {}
                }
            }
        }
    }
    let reachable =
        |(n, x): &(usize, ServiceName)| matches!(walk(s, *n, x), Walk::Delivered { .. });
    (
        looped.into_iter().filter(reachable).collect(),
        holed.into_iter().filter(reachable).collect(),
    )
}

/// The watch counts every node whose traffic loops or is black-holed at any
/// instant, including nodes upstream of the one whose route changed and nodes
/// whose traffic flows into a loop without being on it: it matches walking
/// every node at every instant.
#[test]
fn the_watch_sees_every_loop_and_black_hole_a_walk_of_every_node_sees() {
    let mut totals = (0, 0);
    for (shape, nodes, orgs, seed, fail) in [
        (Shape::Random, 16, 1, 1, 3),
        (Shape::Random, 20, 1, 7, 0),
        (Shape::Grid, 16, 1, 2, 5),
        (Shape::MultiOrg, 20, 3, 3, 4),
        (Shape::MultiOrg, 24, 4, 9, 1),
    ] {
        let t = Topology::generate(shape, nodes, orgs, seed).unwrap();
        let services: Vec<ServiceName> = (0..nodes).map(|i| svc(&format!("s{i}.a"))).collect();
        let mut s = Sim::new(&t, LinkParams::default(), SimConfig::default());
        s.start();
        for (i, name) in services.iter().enumerate() {
            s.originate(i, name.clone(), Duration::ZERO);
        }
        assert!(s.run(LONG));
        let dead = services[fail].clone();
        s.watch([dead.clone()].into());
        s.fail_node(fail, Duration::ZERO);
        let (looped, holed) = brute_force_watch(&mut s, &services, &dead);
        let (w_looped, w_holed) = s.unwatch();
        let w_looped: BTreeSet<_> = w_looped.into_iter().collect();
        let w_holed: BTreeSet<_> = w_holed.into_iter().collect();
        assert_eq!(w_looped, looped, "{shape} seed {seed}: looping pairs");
        assert_eq!(w_holed, holed, "{shape} seed {seed}: black-holed pairs");
        totals.0 += looped.len();
        totals.1 += holed.len();
    }
    assert!(
        totals.0 > 0 && totals.1 > 0,
        "the cases exercise both: {totals:?}"
    );
}

/// ```text
/// A ── B ── C ── D       A originates books.a; D's long way round is
///  \             |       A ─ E ─ F ─ G ─ D. The A–B link is cut.
///   E ── F ── G ─┘
/// ```
/// Until B notices the cut, B, C and D send into the dead link; when B
/// withdraws, C and D still point at B for one link delay. B's own traffic is
/// refused at the source then (no route), but C's and D's is lost.
#[test]
fn nodes_upstream_of_a_lost_route_count_as_black_holed() {
    let t = topo(
        &["a/a", "a/b", "a/c", "a/d", "a/e", "a/f", "a/g"],
        &[
            (0, 1, Internal),
            (1, 2, Internal),
            (2, 3, Internal),
            (0, 4, Internal),
            (4, 5, Internal),
            (5, 6, Internal),
            (6, 3, Internal),
        ],
    );
    let mut s = sim(&t);
    s.originate(0, svc("books.a"), Duration::ZERO);
    assert!(s.run(LONG));
    assert_eq!(next_hop(&s, 3, "books.a").as_deref(), Some("a/c"));
    s.watch(Default::default());
    assert!(s.cut_link(0, 1, Duration::ZERO));
    assert!(s.run(LONG));
    let (looped, holed) = s.unwatch();
    assert!(looped.is_empty(), "{looped:?}");
    let holed: Vec<usize> = holed.into_iter().map(|(n, _)| n).collect();
    assert_eq!(holed, [1, 2, 3]);
    assert!(matches!(
        walk(&s, 1, &svc("books.a")),
        Walk::Delivered { .. }
    ));
}
