//! Property tests of the decision process on one router. (Loop freedom over
//! whole networks is tested with the simulator in `testbed/`.)

use std::cmp::Ordering;

use proptest::prelude::*;

use super::*;
use crate::decision::{compare, Candidate, Ingress};
use crate::policy::{ImportDecision, RoutePolicy};
use crate::route::Relationship::*;

/// Peers of `a/r`: three internal, one of each external role.
const PEERS: [(&str, Relationship); 6] = [
    ("a/p0", Internal),
    ("a/p1", Internal),
    ("a/p2", Internal),
    ("b/c", Customer),
    ("c/p", Peer),
    ("d/v", Provider),
];
const SERVICES: [&str; 3] = ["s0.z", "s1.z", "s2.z"];

/// One announcement: (peer index, service index, extra org hops, metric, pref bump).
type Ann = (usize, usize, usize, u32, bool);

/// The community that [`BumpPref`] turns into a higher local preference.
const BUMP: &str = "pref:bump";

/// Import policy of the property tests: a route tagged [`BUMP`] gets local
/// preference 200 instead of the peer's default 100, so the local-preference
/// step of the decision process takes part.
struct BumpPref;

impl RoutePolicy for BumpPref {
    fn import(&self, _: &NodeId, _: Relationship, _: &ServiceName, a: &Attrs) -> ImportDecision {
        let bumped = a.communities.iter().any(|c| &**c == BUMP);
        ImportDecision::Accept {
            local_pref: bumped.then_some(200),
        }
    }
    fn export(&self, _: &NodeId, _: Relationship, _: &ServiceName, _: &Attrs) -> bool {
        true
    }
}

fn route_attrs(peer: usize, org_hops: usize, metric: u32) -> Arc<Attrs> {
    let (id, role) = PEERS[peer];
    let mut hops: Vec<String> = Vec::new();
    if role == Internal {
        hops.push(id.to_string());
    } else {
        hops.push(id.split('/').next().unwrap().to_string());
    }
    for i in 0..org_hops {
        hops.push(format!("x{i}"));
    }
    hops.push("z".to_string());
    let refs: Vec<&str> = hops.iter().map(String::as_str).collect();
    attrs("z/o", &refs, metric)
}

fn network() -> H {
    let mut h = H::new("a/r");
    h.r.set_policy(Box::new(BumpPref));
    for (id, role) in PEERS {
        let mut cfg = PeerConfig::new(n(id), role);
        cfg.link_cost = 1;
        h.peer_with(cfg);
    }
    h.manifest("z/o", 1, &SERVICES);
    h
}

fn apply(h: &mut H, ann: &Ann) {
    let (peer, service, org_hops, metric, bump) = *ann;
    let mut a = route_attrs(peer, org_hops, metric);
    if bump {
        Arc::make_mut(&mut a).communities.push(BUMP.into());
    }
    h.announce(PEERS[peer].0, SERVICES[service], a);
}

/// Per service: next hop, metric, and the local preference of the best path.
fn rib(h: &H) -> Vec<(String, Option<String>, u64, bool)> {
    SERVICES
        .iter()
        .map(|s| {
            let b = h.r.best(&svc(s));
            (
                s.to_string(),
                b.as_ref()
                    .and_then(|b| b.next_hop.as_ref().map(|n| n.to_string())),
                b.as_ref().map_or(0, |b| b.metric),
                b.is_some_and(|b| b.attrs.communities.iter().any(|c| &**c == BUMP)),
            )
        })
        .collect()
}

fn anns() -> impl Strategy<Value = Vec<Ann>> {
    prop::collection::vec(
        (
            0..PEERS.len(),
            0..SERVICES.len(),
            0usize..4,
            0u32..50,
            any::<bool>(),
        ),
        1..24,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Delivered at one instant, the same announcements in any order give the same table.
    #[test]
    fn best_paths_do_not_depend_on_arrival_order(
        list in anns(),
        seed in any::<u64>(),
    ) {
        // Keep the last announcement per (peer, service): that is what both orders end with.
        let mut last: Vec<Ann> = Vec::new();
        for a in &list {
            last.retain(|b| (b.0, b.1) != (a.0, a.1));
            last.push(*a);
        }
        let mut shuffled = last.clone();
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut a = network();
        for x in &last { apply(&mut a, x); }
        let mut b = network();
        for x in &shuffled { apply(&mut b, x); }
        prop_assert_eq!(rib(&a), rib(&b));
    }

    /// A bumped local preference wins over every later step: when any path held
    /// for a service is bumped, the best one is.
    #[test]
    fn a_bumped_local_preference_always_wins(list in anns()) {
        let mut h = network();
        let mut last: Vec<Ann> = Vec::new();
        for a in &list {
            apply(&mut h, a);
            last.retain(|b| (b.0, b.1) != (a.0, a.1));
            last.push(*a);
        }
        for (i, (_, _, _, best_bumped)) in rib(&h).into_iter().enumerate() {
            let any_bumped = last.iter().any(|a| a.1 == i && a.4);
            prop_assert_eq!(best_bumped, any_bumped, "service {}", SERVICES[i]);
        }
    }

    /// Announcing again what is already held changes nothing and sends nothing.
    #[test]
    fn re_announcement_is_idempotent(list in anns(), again in prop::collection::vec(any::<prop::sample::Index>(), 1..8)) {
        let mut h = network();
        for x in &list { apply(&mut h, x); }
        let mut last: Vec<Ann> = Vec::new();
        for a in &list {
            last.retain(|b| (b.0, b.1) != (a.0, a.1));
            last.push(*a);
        }
        let before = rib(&h);
        h.take();
        for i in again {
            apply(&mut h, i.get(&last));
        }
        prop_assert_eq!(rib(&h), before);
        prop_assert!(h.take().is_empty());
    }

    /// The decision order is a strict total order on paths from distinct peers.
    #[test]
    fn decision_is_a_total_order(
        xs in prop::collection::vec((any::<bool>(), any::<bool>(), 0u32..3, 0usize..5, 0usize..3, 0u64..4, 0u64..3), 3..3+1)
    ) {
        let ids = ["a/a", "a/b", "a/c"];
        let attr: Vec<Attrs> = xs.iter().map(|x| Attrs::clone(&route_attrs(3, x.4, 0))).collect();
        let cands: Vec<Candidate<'_>> = xs.iter().enumerate().map(|(i, x)| Candidate {
            valid: x.0,
            stale: x.1,
            local_pref: x.2,
            ingress: [Ingress::Originated, Ingress::Via(Internal), Ingress::Via(Customer), Ingress::Via(Peer), Ingress::Via(Provider)][x.3],
            attrs: &attr[i],
            metric: x.5,
            since_ms: x.6,
            peer_id: ids[i],
        }).collect();
        for a in &cands {
            for b in &cands {
                let ab = compare(a, b).0;
                let ba = compare(b, a).0;
                prop_assert_eq!(ab, ba.reverse());
                if a.peer_id != b.peer_id { prop_assert_ne!(ab, Ordering::Equal); }
                for c in &cands {
                    if ab == Ordering::Less && compare(b, c).0 == Ordering::Less {
                        prop_assert_eq!(compare(a, c).0, Ordering::Less);
                    }
                }
            }
        }
    }
}
