//! Property: no sequence of announcements, withdrawals, link cuts, heals and
//! node failures leaves a forwarding loop or a black hole once the network
//! is quiet, inside one org or across several, with or without graceful
//! restart.

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

/// Runs `ops` on a 7-node network of `shape`, then checks the quiet network.
/// Inside one org every node must reach every service originated in its
/// component; across orgs valley-free export may leave a service legitimately
/// unreachable, so there only loops, black holes and dead routes are errors.
fn run_ops(
    shape: Shape,
    orgs: usize,
    graceful_restart: bool,
    seed: u64,
    ops: Vec<(Op, u64)>,
) -> Result<(), TestCaseError> {
    let t = Topology::generate(shape, 7, orgs, seed).unwrap();
    let cfg = SimConfig {
        mrai: Duration::from_millis(30),
        graceful_restart,
        seed,
        ..SimConfig::default()
    };
    let link = LinkParams {
        delay: Duration::from_millis(1 + seed % 20),
        loss: 0.0,
    };
    let mut s = Sim::new(&t, link, cfg);
    s.start();
    // Which node originates which service, as the test sees it.
    let mut origins: BTreeSet<(usize, usize)> = BTreeSet::new();
    for (op, gap) in ops {
        match op {
            Op::Originate(n, k) => {
                s.originate(n, name(k), Duration::ZERO);
                if s.alive(n) {
                    origins.insert((n, k));
                }
            }
            Op::Withdraw(n, k) => {
                s.withdraw(n, name(k), Duration::ZERO);
                origins.remove(&(n, k));
            }
            Op::Cut(a, b) => {
                s.cut_link(a, b, Duration::ZERO);
            }
            Op::Heal(a, b) => {
                s.heal_link(a, b, Duration::ZERO);
            }
            Op::Fail(n) => {
                s.fail_node(n, Duration::ZERO);
                origins.retain(|(o, _)| *o != n);
            }
        }
        s.run(Duration::from_millis(gap));
    }
    prop_assert!(s.run(Duration::from_secs(3600)), "network never went quiet");
    let single_org = orgs <= 1;
    for k in 0..3 {
        let service = name(k);
        for n in (0..7).filter(|n| s.alive(*n)) {
            // No held path passes through its holder or repeats a hop.
            for p in s.router(n).paths(&service) {
                let hops: BTreeSet<String> =
                    p.attrs.path.iter().map(|h| format!("{h:?}")).collect();
                prop_assert_eq!(hops.len(), p.attrs.path.len(), "repeated hop at node {}", n);
                prop_assert!(
                    !p.attrs.contains_node(&s.ids()[n]),
                    "node {} holds a path through itself",
                    n
                );
                prop_assert!(!p.stale, "node {} still holds a stale path", n);
            }
            let comp = component(&s, n);
            let reachable = origins.iter().any(|(o, kk)| *kk == k && comp.contains(o));
            let fate = walk(&s, n, &service);
            prop_assert_ne!(fate, Walk::Loop, "node {} loops for {}", n, service);
            prop_assert_ne!(fate, Walk::BlackHole, "node {} black-holes {}", n, service);
            if reachable && single_org {
                prop_assert!(
                    matches!(fate, Walk::Delivered { .. }),
                    "node {} cannot reach {}: {:?}",
                    n,
                    service,
                    fate
                );
            } else if !reachable {
                prop_assert_eq!(
                    fate,
                    Walk::NoRoute,
                    "node {} holds a dead route to {}",
                    n,
                    service
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn quiet_network_has_no_loops_and_no_black_holes(
        seed in 0u64..1000,
        ops in prop::collection::vec(op(), 1..16),
    ) {
        run_ops(Shape::Random, 1, false, seed, ops)?;
    }

    /// The same across orgs (roles, valley-free export, org-path loop checks)
    /// and with graceful restart (stale paths kept across a session loss).
    #[test]
    fn quiet_multi_org_network_with_graceful_restart_has_no_loops_or_black_holes(
        seed in 0u64..1000,
        orgs in 2usize..4,
        graceful_restart in any::<bool>(),
        ops in prop::collection::vec(op(), 1..16),
    ) {
        run_ops(Shape::MultiOrg, orgs, graceful_restart, seed, ops)?;
    }
}
