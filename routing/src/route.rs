//! Routes and their attributes, with the limits a receiver enforces.
//!
//! A route is a service name plus a shared, immutable attribute set
//! ([`Attrs`]). Attribute sets are reference counted so that the thousands of
//! services one origin announces in a batch share one allocation (the way
//! BIRD shares `rta`s), which is what keeps the table small.

use std::sync::Arc;

use crate::name::{NodeId, OrgId, ServiceName};

/// Most hops a path may carry before the route is refused (treat-as-withdraw).
pub const DEFAULT_MAX_PATH_LEN: usize = 64;
/// Most communities one attribute set may carry.
pub const MAX_COMMUNITIES: usize = 32;
/// Longest community tag in bytes.
pub const MAX_COMMUNITY_LEN: usize = 64;

/// What a remote party is to us, or over which relationship a route entered
/// our org. Ordered by preference: the decision process prefers routes that
/// came in over a smaller value (docs/protocol.md, "Decision process").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Relationship {
    /// Same org: the route was originated inside our org.
    Internal,
    /// The remote org pays us / is below us: its routes are exported to everyone.
    Customer,
    /// Settlement-free peer: its routes are exported only to customers (RFC 9234).
    Peer,
    /// The remote org is our upstream: its routes are exported only to customers.
    Provider,
}

impl Relationship {
    /// The name configs and operators use: `internal`, `customer`, `peer`, `provider`.
    pub fn name(self) -> &'static str {
        match self {
            Relationship::Internal => "internal",
            Relationship::Customer => "customer",
            Relationship::Peer => "peer",
            Relationship::Provider => "provider",
        }
    }

    /// The relationship [`Relationship::name`] gives, if `name` is one.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Relationship::Internal,
            Relationship::Customer,
            Relationship::Peer,
            Relationship::Provider,
        ]
        .into_iter()
        .find(|r| r.name() == name)
    }

    /// Whether a route that entered our org over `self` may be exported to an
    /// external neighbour whose role is `to` (valley-free, RFC 9234 §5).
    pub fn exportable_to(self, to: Relationship) -> bool {
        match to {
            Relationship::Internal | Relationship::Customer => true,
            Relationship::Peer | Relationship::Provider => {
                matches!(self, Relationship::Internal | Relationship::Customer)
            }
        }
    }
}

/// The application protocol a service speaks, a hint for the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProtocolHint {
    /// Not stated.
    #[default]
    Unspecified,
    /// Plain TCP.
    Tcp,
    /// HTTP/1.1 or HTTP/2.
    Http,
    /// gRPC.
    Grpc,
}

/// One hop of a path, nearest first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathHop {
    /// A node of the receiver's own org (internal hops are visible only inside it).
    Node(NodeId),
    /// A whole org, with its internal hops collapsed.
    Org(OrgId),
}

/// The attributes of a route, shared by every service announced with them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attrs {
    /// The node that originates the service.
    pub origin: NodeId,
    /// The origin manifest version the route was originated under.
    pub origin_seq: u64,
    /// Hops back towards the origin, nearest first; empty at the origin.
    pub path: Vec<PathHop>,
    /// Sum of link costs along the path, as the sender saw it.
    pub metric: u32,
    /// Free-form tags (`acme:gold`), at most [`MAX_COMMUNITIES`].
    pub communities: Vec<Arc<str>>,
    /// Data-plane protocol hint.
    pub protocol: ProtocolHint,
    /// Over which relationship the route entered the sender's org. Meaningful
    /// only between nodes of one org; external receivers overwrite it with
    /// the role of the session the route came in on.
    pub learned_from: Relationship,
}

/// Why a single route or attribute set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The path is longer than the configured maximum.
    #[error("path has {len} hops, the limit is {max}")]
    PathTooLong {
        /// Hops in the path.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many communities, or one is too long or empty.
    #[error("communities: {0}")]
    BadCommunities(&'static str),
    /// The origin's org does not match the last hop of the path.
    #[error("origin {origin} does not match the path's last hop")]
    OriginMismatch {
        /// The claimed origin.
        origin: NodeId,
    },
}

impl Attrs {
    /// Attributes of a route originated here.
    pub fn originated(origin: NodeId, origin_seq: u64, protocol: ProtocolHint) -> Self {
        Self {
            origin,
            origin_seq,
            path: Vec::new(),
            metric: 0,
            communities: Vec::new(),
            protocol,
            learned_from: Relationship::Internal,
        }
    }

    /// Checks the limits a receiver enforces on every attribute set.
    pub fn validate(&self, max_path_len: usize) -> Result<(), RouteError> {
        if self.path.len() > max_path_len {
            return Err(RouteError::PathTooLong {
                len: self.path.len(),
                max: max_path_len,
            });
        }
        if self.communities.len() > MAX_COMMUNITIES {
            return Err(RouteError::BadCommunities("more than 32"));
        }
        if self
            .communities
            .iter()
            .any(|c| c.is_empty() || c.len() > MAX_COMMUNITY_LEN)
        {
            return Err(RouteError::BadCommunities("empty or longer than 64 bytes"));
        }
        // The far end of the path must be the origin (or its org).
        let consistent = match self.path.last() {
            None => true,
            Some(PathHop::Node(n)) => n == &self.origin || n.org_str() == self.origin.org_str(),
            Some(PathHop::Org(o)) => self.origin.in_org(o),
        };
        if !consistent {
            return Err(RouteError::OriginMismatch {
                origin: self.origin.clone(),
            });
        }
        Ok(())
    }

    /// Number of org hops in the path (internal node hops do not count).
    pub fn org_path_len(&self) -> usize {
        self.path
            .iter()
            .filter(|h| matches!(h, PathHop::Org(_)))
            .count()
    }

    /// Whether the path passes through `node` (an in-org loop).
    pub fn contains_node(&self, node: &NodeId) -> bool {
        self.path
            .iter()
            .any(|h| matches!(h, PathHop::Node(n) if n == node))
    }

    /// Whether the path passes through `org` (an inter-org loop).
    pub fn contains_org(&self, org: &OrgId) -> bool {
        self.path.iter().any(|h| match h {
            PathHop::Org(o) => o == org,
            PathHop::Node(_) => false,
        })
    }
}

/// A route as the table shows it: a service and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The service.
    pub service: ServiceName,
    /// Its attributes.
    pub attrs: Arc<Attrs>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn relationship_names_round_trip() {
        for r in [
            Relationship::Internal,
            Relationship::Customer,
            Relationship::Peer,
            Relationship::Provider,
        ] {
            assert_eq!(Relationship::from_name(r.name()), Some(r));
        }
        assert_eq!(Relationship::from_name("Customer"), None);
    }

    #[test]
    fn valley_free_export_follows_rfc_9234_roles() {
        use Relationship::*;
        for from in [Internal, Customer, Peer, Provider] {
            assert!(from.exportable_to(Customer));
            assert!(from.exportable_to(Internal));
        }
        assert!(Customer.exportable_to(Provider));
        assert!(Internal.exportable_to(Peer));
        assert!(!Provider.exportable_to(Provider));
        assert!(!Provider.exportable_to(Peer));
        assert!(!Peer.exportable_to(Provider));
        assert!(!Peer.exportable_to(Peer));
    }

    #[test]
    fn over_long_path_is_a_typed_error() {
        let mut a = Attrs::originated(node("a/x"), 1, ProtocolHint::Tcp);
        a.path = vec![PathHop::Node(node("a/x")); 5];
        assert_eq!(
            a.validate(4),
            Err(RouteError::PathTooLong { len: 5, max: 4 })
        );
        assert!(a.validate(5).is_ok());
    }

    #[test]
    fn path_must_end_at_the_origin() {
        let mut a = Attrs::originated(node("a/x"), 1, ProtocolHint::Tcp);
        a.path = vec![PathHop::Org(OrgId::new("b").unwrap())];
        assert!(matches!(
            a.validate(8),
            Err(RouteError::OriginMismatch { .. })
        ));
        a.path = vec![PathHop::Org(OrgId::new("a").unwrap())];
        assert!(a.validate(8).is_ok());
    }
}
