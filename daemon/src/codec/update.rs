//! `UpdateBatch` on the wire ↔ [`trellis_routing::UpdateBatch`] (docs/protocol.md,
//! "UpdateBatch").
//!
//! Attribute sets are interned: the writer emits each set of the batch once and the
//! announcements point at it; the reader makes one `Arc<Attrs>` per distinct set (two
//! identical sets on the wire become one), so every service announced with it shares the
//! allocation, as the routing table expects.
//!
//! The reader checks, in this order: the three list lengths and their sum against the
//! `trellis-schemas` limits (before reading an element), each attribute set (names,
//! union variants, enumerants, at most [`MAX_WIRE_PATH_HOPS`] hops and
//! [`MAX_WIRE_COMMUNITIES`] communities of at most [`MAX_WIRE_COMMUNITY_BYTES`]), each
//! announcement (service name, `attrIndex` in range), each withdrawal (service name).

use std::collections::HashMap;
use std::sync::Arc;

use trellis_routing::{
    Attrs, NodeId, OrgId, PathHop, ProtocolHint, Relationship, ServiceName, UpdateBatch,
};
use trellis_schemas::peering_capnp::{self as wire, path_attributes, path_hop, update_batch};
use trellis_schemas::{
    MAX_ATTRIBUTE_SETS, MAX_BATCH_ANNOUNCEMENTS, MAX_BATCH_ENTRIES, MAX_BATCH_WITHDRAWALS,
};

use super::{capnp_error, check_len, len32, text, CodecError};

/// Most hops a path may have on the wire. The routing core applies its own, smaller limit
/// (64 by default) per route, as a treat-as-withdraw.
pub const MAX_WIRE_PATH_HOPS: usize = 255;
/// Most communities in one attribute set on the wire.
pub const MAX_WIRE_COMMUNITIES: usize = 32;
/// Longest community on the wire, in bytes (the routing core refuses routes with one
/// longer than 64 bytes).
pub const MAX_WIRE_COMMUNITY_BYTES: usize = 128;

/// Writes `batch` into `b`: each attribute set once, announcements by index, withdrawals.
///
/// The batch is written as it is; a receiver refuses one that breaks the protocol limits,
/// so a sender splits large changes into several batches.
pub fn write_batch(batch: &UpdateBatch, mut b: update_batch::Builder<'_>) {
    let mut sets = b.reborrow().init_attribute_sets(len32(batch.attrs.len()));
    for (i, attrs) in (0..sets.len()).zip(&batch.attrs) {
        write_attrs(attrs, sets.reborrow().get(i));
    }
    let mut announcements = b.reborrow().init_announcements(len32(batch.announce.len()));
    for (i, (service, index)) in (0..announcements.len()).zip(&batch.announce) {
        let mut a = announcements.reborrow().get(i);
        a.set_service(service.as_str());
        a.set_attr_index(*index);
    }
    let mut withdrawals = b.init_withdrawals(len32(batch.withdraw.len()));
    for (i, service) in (0..withdrawals.len()).zip(&batch.withdraw) {
        withdrawals.set(i, service.as_str());
    }
}

fn write_attrs(attrs: &Attrs, mut b: path_attributes::Builder<'_>) {
    b.set_origin(attrs.origin.as_str());
    b.set_origin_seq(attrs.origin_seq);
    b.set_metric(attrs.metric);
    b.set_protocol(match attrs.protocol {
        ProtocolHint::Unspecified => wire::ProtocolHint::Unspecified,
        ProtocolHint::Tcp => wire::ProtocolHint::Tcp,
        ProtocolHint::Http => wire::ProtocolHint::Http,
        ProtocolHint::Grpc => wire::ProtocolHint::Grpc,
    });
    b.set_learned_from(match attrs.learned_from {
        Relationship::Internal => wire::Relationship::Internal,
        Relationship::Customer => wire::Relationship::Customer,
        Relationship::Peer => wire::Relationship::Peer,
        Relationship::Provider => wire::Relationship::Provider,
    });
    let mut path = b.reborrow().init_path(len32(attrs.path.len()));
    for (i, hop) in (0..path.len()).zip(&attrs.path) {
        let mut h = path.reborrow().get(i);
        match hop {
            PathHop::Node(node) => h.set_node(node.as_str()),
            PathHop::Org(org) => h.set_org(org.as_str()),
        }
    }
    let mut communities = b.init_communities(len32(attrs.communities.len()));
    for (i, community) in (0..communities.len()).zip(&attrs.communities) {
        communities.set(i, &**community);
    }
}

/// Reads and validates a batch from a peer.
///
/// Errors: [`CodecError::Oversized`] if a list exceeds its limit; [`CodecError::Malformed`]
/// for an invalid name or id, an unknown enumerant or `PathHop` variant, an `attrIndex`
/// out of range, or a bad pointer.
pub fn read_batch(r: update_batch::Reader<'_>) -> Result<UpdateBatch, CodecError> {
    let sets = r
        .get_attribute_sets()
        .map_err(|e| capnp_error("attributeSets", &e))?;
    let announcements = r
        .get_announcements()
        .map_err(|e| capnp_error("announcements", &e))?;
    let withdrawals = r
        .get_withdrawals()
        .map_err(|e| capnp_error("withdrawals", &e))?;
    let (n_sets, n_announce, n_withdraw) = (
        sets.len() as usize,
        announcements.len() as usize,
        withdrawals.len() as usize,
    );
    check_len("attribute sets", n_sets, MAX_ATTRIBUTE_SETS)?;
    check_len("announcements", n_announce, MAX_BATCH_ANNOUNCEMENTS)?;
    check_len("withdrawals", n_withdraw, MAX_BATCH_WITHDRAWALS)?;
    check_len(
        "batch entries (announcements plus withdrawals)",
        n_announce + n_withdraw,
        MAX_BATCH_ENTRIES,
    )?;

    // Wire index of each set -> index of its interned copy in `attrs`.
    let mut attrs: Vec<Arc<Attrs>> = Vec::with_capacity(n_sets);
    let mut interned: HashMap<Arc<Attrs>, u32> = HashMap::with_capacity(n_sets);
    let mut remap: Vec<u32> = Vec::with_capacity(n_sets);
    for (i, set) in sets.iter().enumerate() {
        let set =
            Arc::new(read_attrs(set).map_err(|e| in_context(&format!("attribute set {i}"), e))?);
        let index = *interned.entry(set).or_insert_with_key(|set| {
            attrs.push(Arc::clone(set));
            len32(attrs.len() - 1)
        });
        remap.push(index);
    }

    let mut announce = Vec::with_capacity(n_announce);
    for (i, a) in announcements.iter().enumerate() {
        let what = format!("announcement {i}");
        let service = service(&what, a.get_service())?;
        let wire_index = a.get_attr_index();
        let index = remap.get(wire_index as usize).copied().ok_or_else(|| {
            CodecError::Malformed(format!(
                "{what} ({service}): attrIndex {wire_index} is out of range ({n_sets} attribute sets)"
            ))
        })?;
        announce.push((service, index));
    }

    let mut withdraw = Vec::with_capacity(n_withdraw);
    for (i, w) in withdrawals.iter().enumerate() {
        withdraw.push(service(&format!("withdrawal {i}"), w)?);
    }
    Ok(UpdateBatch {
        attrs,
        announce,
        withdraw,
    })
}

/// Prefixes an error's detail with where it happened.
fn in_context(context: &str, e: CodecError) -> CodecError {
    match e {
        CodecError::Malformed(m) => CodecError::Malformed(format!("{context}: {m}")),
        CodecError::Oversized(m) => CodecError::Oversized(format!("{context}: {m}")),
        CodecError::Local(m) => CodecError::Local(m),
    }
}

fn service(
    what: &str,
    field: capnp::Result<capnp::text::Reader<'_>>,
) -> Result<ServiceName, CodecError> {
    let s = text(what, field)?;
    ServiceName::new(s).map_err(|e| CodecError::Malformed(format!("{what}: service {s:?}: {e}")))
}

fn node_id(what: &str, s: &str) -> Result<NodeId, CodecError> {
    NodeId::new(s).map_err(|e| CodecError::Malformed(format!("{what} {s:?}: {e}")))
}

fn read_attrs(r: path_attributes::Reader<'_>) -> Result<Attrs, CodecError> {
    let origin = node_id("origin", text("origin", r.get_origin())?)?;
    let protocol = match r.get_protocol() {
        Ok(wire::ProtocolHint::Unspecified) => ProtocolHint::Unspecified,
        Ok(wire::ProtocolHint::Tcp) => ProtocolHint::Tcp,
        Ok(wire::ProtocolHint::Http) => ProtocolHint::Http,
        Ok(wire::ProtocolHint::Grpc) => ProtocolHint::Grpc,
        Err(capnp::NotInSchema(n)) => {
            return Err(CodecError::Malformed(format!("unknown protocol hint {n}")))
        }
    };
    let learned_from = match r.get_learned_from() {
        Ok(wire::Relationship::Internal) => Relationship::Internal,
        Ok(wire::Relationship::Customer) => Relationship::Customer,
        Ok(wire::Relationship::Peer) => Relationship::Peer,
        Ok(wire::Relationship::Provider) => Relationship::Provider,
        Err(capnp::NotInSchema(n)) => {
            return Err(CodecError::Malformed(format!("unknown relationship {n}")))
        }
    };

    let hops = r.get_path().map_err(|e| capnp_error("path", &e))?;
    check_len("path hops", hops.len() as usize, MAX_WIRE_PATH_HOPS)?;
    let mut path = Vec::with_capacity(hops.len() as usize);
    for (i, hop) in hops.iter().enumerate() {
        path.push(read_hop(hop).map_err(|e| in_context(&format!("path hop {i}"), e))?);
    }

    let tags = r
        .get_communities()
        .map_err(|e| capnp_error("communities", &e))?;
    check_len("communities", tags.len() as usize, MAX_WIRE_COMMUNITIES)?;
    let mut communities = Vec::with_capacity(tags.len() as usize);
    for (i, tag) in tags.iter().enumerate() {
        let what = format!("community {i}");
        let tag = text(&what, tag)?;
        check_len(
            &format!("bytes in {what}"),
            tag.len(),
            MAX_WIRE_COMMUNITY_BYTES,
        )?;
        communities.push(Arc::from(tag));
    }

    Ok(Attrs {
        origin,
        origin_seq: r.get_origin_seq(),
        path,
        metric: r.get_metric(),
        communities,
        protocol,
        learned_from,
    })
}

fn read_hop(r: path_hop::Reader<'_>) -> Result<PathHop, CodecError> {
    match r.which() {
        Ok(path_hop::Which::Node(t)) => Ok(PathHop::Node(node_id("node", text("node", t)?)?)),
        Ok(path_hop::Which::Org(t)) => {
            let s = text("org", t)?;
            let org =
                OrgId::new(s).map_err(|e| CodecError::Malformed(format!("org {s:?}: {e}")))?;
            Ok(PathHop::Org(org))
        }
        Err(capnp::NotInSchema(n)) => Err(CodecError::Malformed(format!(
            "unknown path hop variant {n}"
        ))),
    }
}
