//! Property: no sequence of announcements, withdrawals, link cuts, heals and
//! node failures leaves a forwarding loop or a black hole once the network
//! is quiet.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use trellis_routing::ServiceName;
use trellis_testbed::sim::{walk, LinkParams, Sim, SimConfig, Walk};
use trellis_testbed::topology::{Shape, Topology};

#[derive(Debug, Clone)]
enum Op {
    Originate(usize, usize),
    Withdraw(usize, usize),
    Cut(usize, usize),
    Heal(usize, usize),
    Fail(usize),
}

fn op() -> impl Strategy<Value = (Op, u64)> {
    let node = 0usize..7;
    let svc = 0usize..3;
    let kind = prop_oneof![
        4 => (node.clone(), svc.clone()).prop_map(|(n, s)| Op::Originate(n, s)),
        2 => (node.clone(), svc).prop_map(|(n, s)| Op::Withdraw(n, s)),
        2 => (node.clone(), node.clone()).prop_map(|(a, b)| Op::Cut(a, b)),
        1 => (node.clone(), node.clone()).prop_map(|(a, b)| Op::Heal(a, b)),
        1 => node.prop_map(Op::Fail),
    ];
    (kind, 0u64..400)
}

fn name(k: usize) -> ServiceName {
    ServiceName::new(&format!("s{k}.a")).unwrap()
}

/// Nodes reachable from `start` over links that are up.
fn component(s: &Sim, start: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    while let Some(x) = stack.pop() {
        if !s.alive(x) || !seen.insert(x) {
            continue;
        }
        stack.extend((0..s.ids().len()).filter(|y| s.link_up(x, *y)));
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn quiet_network_has_no_loops_and_no_black_holes(
        seed in 0u64..1000,
        ops in prop::collection::vec(op(), 1..16),
    ) {
        let t = Topology::generate(Shape::Random, 7, 1, seed).unwrap();
        let cfg = SimConfig { mrai: Duration::from_millis(30), seed, ..SimConfig::default() };
        let link = LinkParams { delay: Duration::from_millis(1 + seed % 20), loss: 0.0 };
        let mut s = Sim::new(&t, link, cfg);
        s.start();
        // Which node originates which service, as the test sees it.
        let mut origins: BTreeSet<(usize, usize)> = BTreeSet::new();
        for (op, gap) in ops {
            match op {
                Op::Originate(n, k) => {
                    s.originate(n, name(k), Duration::ZERO);
                    if s.alive(n) { origins.insert((n, k)); }
                }
                Op::Withdraw(n, k) => {
                    s.withdraw(n, name(k), Duration::ZERO);
                    origins.remove(&(n, k));
                }
                Op::Cut(a, b) => { s.cut_link(a, b, Duration::ZERO); }
                Op::Heal(a, b) => { s.heal_link(a, b, Duration::ZERO); }
                Op::Fail(n) => {
                    s.fail_node(n, Duration::ZERO);
                    origins.retain(|(o, _)| *o != n);
                }
            }
            s.run(Duration::from_millis(gap));
        }
        prop_assert!(s.run(Duration::from_secs(3600)), "network never went quiet");
        for k in 0..3 {
            let service = name(k);
            for n in (0..7).filter(|n| s.alive(*n)) {
                // No held path passes through its holder or repeats a hop.
                for p in s.router(n).paths(&service) {
                    let hops: BTreeSet<String> = p.attrs.path.iter().map(|h| format!("{h:?}")).collect();
                    prop_assert_eq!(hops.len(), p.attrs.path.len(), "repeated hop at node {}", n);
                    prop_assert!(!p.attrs.contains_node(&s.ids()[n]), "node {} holds a path through itself", n);
                }
                let comp = component(&s, n);
                let reachable = origins.iter().any(|(o, kk)| *kk == k && comp.contains(o));
                let fate = walk(&s, n, &service);
                prop_assert_ne!(fate, Walk::Loop, "node {} loops for {}", n, service);
                if reachable {
                    prop_assert!(matches!(fate, Walk::Delivered { .. }),
                        "node {} cannot reach {}: {:?}", n, service, fate);
                } else {
                    prop_assert_eq!(fate, Walk::NoRoute, "node {} holds a dead route to {}", n, service);
                }
            }
        }
    }
}
