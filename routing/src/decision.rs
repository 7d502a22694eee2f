//! The decision process: which of a service's paths is best.
//!
//! Paths are compared one documented tie-breaker at a time, in this order
//! (docs/protocol.md, "Decision process"; modelled on RFC 4271 §9.1.2.2 with
//! the relationship step of Gao-Rexford / RFC 9234):
//!
//! 1. [`Step::Eligible`] — a valid (origin manifest lists it) path beats an invalid one.
//! 2. [`Step::Fresh`] — a refreshed path beats one marked stale by a graceful restart.
//! 3. [`Step::LocalPref`] — higher policy local preference.
//! 4. [`Step::Relationship`] — originated here > inside our org > customer > peer > provider.
//! 5. [`Step::OrgPathLen`] — fewer org hops.
//! 6. [`Step::Metric`] — lower metric (the sender's metric plus our link cost to it).
//! 7. [`Step::Stable`] — the path held longest (RFC 5004 style); equal ages fall through.
//! 8. [`Step::PeerId`] — the lowest peer id (this node's own id for its own routes).
//!
//! Two paths of one service never come from the same peer, so step 8 always
//! decides: the order is total and does not depend on arrival order once the
//! paths' ages are equal.

use std::cmp::Ordering;

use crate::route::{Attrs, Relationship};

/// One step of the decision process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Valid beats invalid.
    Eligible,
    /// Fresh beats stale.
    Fresh,
    /// Higher local preference.
    LocalPref,
    /// Better relationship (origination, internal, customer, peer, provider).
    Relationship,
    /// Fewer org hops.
    OrgPathLen,
    /// Lower metric.
    Metric,
    /// Older path.
    Stable,
    /// Lower peer id.
    PeerId,
}

/// Over which relationship a path reached this node, ordered by preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ingress {
    /// This node originates the service.
    Originated,
    /// Learned over a relationship.
    Via(Relationship),
}

/// Everything the decision process looks at for one path.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Origin manifest lists it and it passed import checks.
    pub valid: bool,
    /// Kept across a peer's graceful restart, not yet refreshed.
    pub stale: bool,
    /// Local preference from policy.
    pub local_pref: u32,
    /// How it reached us.
    pub ingress: Ingress,
    /// Its attributes.
    pub attrs: &'a Attrs,
    /// Metric including our link cost to the peer.
    pub metric: u64,
    /// When it was learned (router-relative milliseconds).
    pub since_ms: u64,
    /// Id of the peer it came from, or this node's id.
    pub peer_id: &'a str,
}

type Rule = fn(&Candidate<'_>, &Candidate<'_>) -> Ordering;

/// The tie-breakers, in order. Each returns `Less` when `a` is better.
const RULES: [(Step, Rule); 8] = [
    (Step::Eligible, |a, b| b.valid.cmp(&a.valid)),
    (Step::Fresh, |a, b| a.stale.cmp(&b.stale)),
    (Step::LocalPref, |a, b| b.local_pref.cmp(&a.local_pref)),
    (Step::Relationship, |a, b| a.ingress.cmp(&b.ingress)),
    (Step::OrgPathLen, |a, b| {
        a.attrs.org_path_len().cmp(&b.attrs.org_path_len())
    }),
    (Step::Metric, |a, b| a.metric.cmp(&b.metric)),
    (Step::Stable, |a, b| a.since_ms.cmp(&b.since_ms)),
    (Step::PeerId, |a, b| a.peer_id.cmp(b.peer_id)),
];

/// Compares two paths: `Less` means `a` is better. Returns the step that decided.
pub fn compare(a: &Candidate<'_>, b: &Candidate<'_>) -> (Ordering, Step) {
    for (step, rule) in RULES {
        let ord = rule(a, b);
        if ord != Ordering::Equal {
            return (ord, step);
        }
    }
    (Ordering::Equal, Step::PeerId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::{NodeId, OrgId};
    use crate::route::{PathHop, ProtocolHint};

    fn attrs(org_hops: usize) -> Attrs {
        let mut a = Attrs::originated(NodeId::new("z/origin").unwrap(), 1, ProtocolHint::Tcp);
        a.path = (0..org_hops)
            .map(|i| PathHop::Org(OrgId::new(&format!("o{i}")).unwrap()))
            .collect();
        a
    }

    fn cand(a: &Attrs) -> Candidate<'_> {
        Candidate {
            valid: true,
            stale: false,
            local_pref: 100,
            ingress: Ingress::Via(Relationship::Internal),
            attrs: a,
            metric: 10,
            since_ms: 0,
            peer_id: "a/m",
        }
    }

    fn decided_by(a: &Candidate<'_>, b: &Candidate<'_>) -> Step {
        let (ord, step) = compare(a, b);
        assert_eq!(ord, Ordering::Less, "a should win at {step:?}");
        let (rev, rstep) = compare(b, a);
        assert_eq!(rev, Ordering::Greater);
        assert_eq!(step, rstep);
        step
    }

    #[test]
    fn valid_path_beats_invalid_whatever_else() {
        let x = attrs(3);
        let y = attrs(0);
        let a = Candidate {
            metric: 1000,
            ..cand(&x)
        };
        let b = Candidate {
            valid: false,
            local_pref: 900,
            ..cand(&y)
        };
        assert_eq!(decided_by(&a, &b), Step::Eligible);
    }

    #[test]
    fn fresh_path_beats_stale_one() {
        let x = attrs(1);
        let a = cand(&x);
        let b = Candidate {
            stale: true,
            metric: 0,
            ..cand(&x)
        };
        assert_eq!(decided_by(&a, &b), Step::Fresh);
    }

    /// DESIGN.md's order has no freshness step; docs/protocol.md explains why it sits
    /// before local preference: a stale path must never hold traffic against a live one.
    #[test]
    fn a_fresh_path_beats_a_stale_one_even_with_lower_local_pref() {
        let x = attrs(1);
        let fresh = Candidate {
            local_pref: 50,
            ..cand(&x)
        };
        let stale = Candidate {
            stale: true,
            local_pref: 500,
            ..cand(&x)
        };
        assert_eq!(decided_by(&fresh, &stale), Step::Fresh);
    }

    /// DESIGN.md ranks customer > peer > provider; the code extends the rank at the
    /// top with originated and internal routes (docs/protocol.md).
    #[test]
    fn originated_beats_internal_which_beats_customer() {
        let x = attrs(2);
        let y = attrs(0);
        let own = Candidate {
            ingress: Ingress::Originated,
            metric: 99,
            ..cand(&x)
        };
        let internal = Candidate {
            ingress: Ingress::Via(Relationship::Internal),
            ..cand(&x)
        };
        let customer = Candidate {
            ingress: Ingress::Via(Relationship::Customer),
            ..cand(&y)
        };
        assert_eq!(decided_by(&own, &internal), Step::Relationship);
        assert_eq!(decided_by(&internal, &customer), Step::Relationship);
    }

    #[test]
    fn higher_local_pref_wins_over_shorter_path() {
        let x = attrs(4);
        let y = attrs(1);
        let a = Candidate {
            local_pref: 200,
            ..cand(&x)
        };
        let b = cand(&y);
        assert_eq!(decided_by(&a, &b), Step::LocalPref);
    }

    #[test]
    fn customer_route_beats_peer_and_provider_routes() {
        let x = attrs(3);
        let y = attrs(1);
        let cust = Candidate {
            ingress: Ingress::Via(Relationship::Customer),
            ..cand(&x)
        };
        let peer = Candidate {
            ingress: Ingress::Via(Relationship::Peer),
            ..cand(&y)
        };
        let prov = Candidate {
            ingress: Ingress::Via(Relationship::Provider),
            ..cand(&y)
        };
        assert_eq!(decided_by(&cust, &peer), Step::Relationship);
        assert_eq!(decided_by(&peer, &prov), Step::Relationship);
        let own = Candidate {
            ingress: Ingress::Originated,
            ..cand(&x)
        };
        assert_eq!(decided_by(&own, &cust), Step::Relationship);
    }

    #[test]
    fn fewer_org_hops_win_before_metric() {
        let x = attrs(1);
        let y = attrs(2);
        let a = Candidate {
            metric: 500,
            ..cand(&x)
        };
        let b = Candidate {
            metric: 1,
            ..cand(&y)
        };
        assert_eq!(decided_by(&a, &b), Step::OrgPathLen);
    }

    #[test]
    fn lower_metric_wins_on_equal_org_path() {
        let x = attrs(1);
        let a = Candidate {
            metric: 5,
            since_ms: 99,
            ..cand(&x)
        };
        let b = Candidate {
            metric: 6,
            ..cand(&x)
        };
        assert_eq!(decided_by(&a, &b), Step::Metric);
    }

    #[test]
    fn older_path_wins_on_equal_metric() {
        let x = attrs(1);
        let a = Candidate {
            since_ms: 5,
            peer_id: "z/z",
            ..cand(&x)
        };
        let b = Candidate {
            since_ms: 6,
            ..cand(&x)
        };
        assert_eq!(decided_by(&a, &b), Step::Stable);
    }

    #[test]
    fn lowest_peer_id_is_the_last_tie_breaker() {
        let x = attrs(1);
        let a = Candidate {
            peer_id: "a/a",
            ..cand(&x)
        };
        let b = Candidate {
            peer_id: "a/b",
            ..cand(&x)
        };
        assert_eq!(decided_by(&a, &b), Step::PeerId);
    }
}
