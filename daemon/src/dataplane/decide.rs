//! Where a stream goes from this node: the pure part of forwarding, decided from the
//! header, the peer it came from and the best route, before any socket is touched.
//!
//! Rules, in order (docs/protocol.md, "Data plane"):
//! 1. no usable route → `no_route`;
//! 2. traffic follows announcements: a stream from a peer is carried only if this node
//!    announces its best route for the service to that peer — the valley-free rule of
//!    the control plane (a route learned from a provider or a peer is announced only to
//!    customers and inside the org), so a provider cannot make a customer carry traffic
//!    to another provider → `no_transit`;
//! 3. a route back to the peer the stream came from would loop → `no_route`;
//! 4. one more hop must stay within `max_hops` → `hop_limit`;
//! 5. otherwise connect to the local endpoint (origin) or forward to the next hop.

use std::net::SocketAddr;

use trellis_routing::{NodeId, Relationship};

use super::wire::{Reset, StreamHeader};
use super::{Hop, Route};

/// The next leg of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Leg {
    /// This node originates the service: connect to its endpoint.
    Endpoint(SocketAddr),
    /// Forward to `next` with this hop count in the header.
    Forward {
        /// The next hop.
        next: NodeId,
        /// Hops travelled once it arrives there.
        hops: u8,
    },
}

/// Why a stream is refused here.
pub(super) type Refusal = (Reset, String);

/// Decides the next leg for `header`, which came from `from` (peer and how it relates
/// to this node; `None` at the ingress), given the best `route`.
pub(super) fn next_leg(
    header: &StreamHeader,
    from: Option<(&NodeId, Relationship)>,
    route: Option<Route>,
    max_hops: u8,
) -> Result<Leg, Refusal> {
    let service = &header.service;
    let route = route.ok_or_else(|| (Reset::NoRoute, format!("no route to {service}")))?;
    if let Some((peer, role)) = from {
        if !route.learned_from.exportable_to(role) {
            return Err((
                Reset::NoTransit,
                format!(
                    "{service} is not announced to {peer} (a route learned from a {} goes only to customers)",
                    relationship_name(route.learned_from)
                ),
            ));
        }
    }
    match route.hop {
        Hop::Local(endpoint) => Ok(Leg::Endpoint(endpoint)),
        Hop::Via(next) => {
            if from.is_some_and(|(peer, _)| *peer == next) {
                return Err((
                    Reset::NoRoute,
                    format!("the route to {service} leads back to {next}"),
                ));
            }
            let hops = header.hops.saturating_add(1);
            if hops > max_hops {
                return Err((
                    Reset::HopLimit,
                    format!("{hops} hops, the limit is {max_hops}"),
                ));
            }
            Ok(Leg::Forward { next, hops })
        }
    }
}

fn relationship_name(r: Relationship) -> &'static str {
    match r {
        Relationship::Internal => "node of this org",
        Relationship::Customer => "customer",
        Relationship::Peer => "peer",
        Relationship::Provider => "provider",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_routing::ServiceName;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("node id")
    }

    fn header(hops: u8) -> StreamHeader {
        StreamHeader {
            service: ServiceName::new("web.acme").expect("service"),
            requester: id("globex/g1"),
            hops,
            stream_id: 1,
            trace: None,
        }
    }

    fn via(next: &str, learned_from: Relationship) -> Option<Route> {
        Some(Route {
            hop: Hop::Via(id(next)),
            learned_from,
        })
    }

    #[test]
    fn a_stream_goes_to_the_endpoint_or_the_next_hop_with_one_more_hop() {
        let endpoint: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let local = Some(Route {
            hop: Hop::Local(endpoint),
            learned_from: Relationship::Internal,
        });
        let g1 = id("globex/g1");
        let from = Some((&g1, Relationship::Customer));
        assert_eq!(
            next_leg(&header(2), from, local, 16),
            Ok(Leg::Endpoint(endpoint))
        );
        assert_eq!(
            next_leg(&header(2), from, via("acme/a2", Relationship::Internal), 16),
            Ok(Leg::Forward {
                next: id("acme/a2"),
                hops: 3
            })
        );
        // The ingress sends hop 1.
        assert_eq!(
            next_leg(&header(0), None, via("acme/a2", Relationship::Provider), 16),
            Ok(Leg::Forward {
                next: id("acme/a2"),
                hops: 1
            })
        );
    }

    #[test]
    fn refusals_name_their_reason() {
        let a1 = id("acme/a1");
        let internal = Some((&a1, Relationship::Internal));
        let reason = |r: Result<Leg, Refusal>| r.map_err(|(reset, _)| reset);
        assert_eq!(
            reason(next_leg(&header(1), internal, None, 16)),
            Err(Reset::NoRoute)
        );
        assert_eq!(
            reason(next_leg(
                &header(1),
                internal,
                via("acme/a1", Relationship::Internal),
                16
            )),
            Err(Reset::NoRoute),
            "back to the sender"
        );
        assert_eq!(
            reason(next_leg(
                &header(2),
                internal,
                via("acme/a2", Relationship::Internal),
                2
            )),
            Err(Reset::HopLimit)
        );
    }

    #[test]
    fn a_provider_cannot_make_this_node_carry_traffic_to_another_provider_or_peer() {
        let up = id("globex/p");
        for learned in [Relationship::Provider, Relationship::Peer] {
            for role in [Relationship::Provider, Relationship::Peer] {
                assert_eq!(
                    next_leg(&header(1), Some((&up, role)), via("initech/x", learned), 16)
                        .map_err(|(r, _)| r),
                    Err(Reset::NoTransit),
                    "{learned:?} route, stream from a {role:?}"
                );
            }
        }
        // Customers and the own org are carried to anything; anyone to the own org's or
        // a customer's services.
        for learned in [Relationship::Internal, Relationship::Customer] {
            assert!(next_leg(
                &header(1),
                Some((&up, Relationship::Provider)),
                via("acme/a", learned),
                16
            )
            .is_ok());
        }
        assert!(next_leg(
            &header(1),
            Some((&up, Relationship::Customer)),
            via("x/y", Relationship::Provider),
            16
        )
        .is_ok());
        assert!(next_leg(
            &header(1),
            Some((&up, Relationship::Internal)),
            via("x/y", Relationship::Peer),
            16
        )
        .is_ok());
    }
}
