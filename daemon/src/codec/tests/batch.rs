use std::sync::Arc;

use capnp::message::Builder;
use proptest::prelude::*;
use trellis_routing::{Attrs, PathHop, ProtocolHint, Relationship, UpdateBatch};
use trellis_schemas::peering_capnp::update_batch;
use trellis_schemas::{reader_options, MAX_ATTRIBUTE_SETS, MAX_BATCH_WITHDRAWALS};

use super::{node, org, reread, service};
use crate::codec::update::{MAX_WIRE_COMMUNITY_BYTES, MAX_WIRE_PATH_HOPS};
use crate::codec::{read_batch, write_batch, CodecError};

fn attrs(
    origin: &str,
    path: Vec<PathHop>,
    communities: &[&str],
    protocol: ProtocolHint,
    learned_from: Relationship,
) -> Arc<Attrs> {
    Arc::new(Attrs {
        origin: node(origin),
        origin_seq: 7,
        path,
        metric: 42,
        communities: communities.iter().map(|c| Arc::from(*c)).collect(),
        protocol,
        learned_from,
    })
}

/// Four attribute sets (every `ProtocolHint` and `Relationship`, node and org hops)
/// shared by 40 services, plus withdrawals.
fn sample_batch() -> UpdateBatch {
    let sets = vec![
        attrs(
            "acme/edge-1",
            vec![
                PathHop::Node(node("acme/core-1")),
                PathHop::Node(node("acme/edge-1")),
            ],
            &["acme:eu", "no-export"],
            ProtocolHint::Tcp,
            Relationship::Internal,
        ),
        attrs(
            "globex/api-1",
            vec![PathHop::Org(org("initech")), PathHop::Org(org("globex"))],
            &[],
            ProtocolHint::Http,
            Relationship::Customer,
        ),
        attrs(
            "globex/api-2",
            vec![PathHop::Org(org("globex"))],
            &["gold"],
            ProtocolHint::Grpc,
            Relationship::Peer,
        ),
        attrs(
            "acme/self",
            vec![],
            &[],
            ProtocolHint::Unspecified,
            Relationship::Provider,
        ),
    ];
    let announce = (0..40u32)
        .map(|i| (service(&format!("svc-{i}.acme")), i % 4))
        .collect();
    UpdateBatch {
        attrs: sets,
        announce,
        withdraw: vec![service("gone.acme"), service("*.old.acme")],
    }
}

fn round_trip(batch: &UpdateBatch) -> Result<UpdateBatch, CodecError> {
    let mut message = Builder::new_default();
    write_batch(batch, message.init_root::<update_batch::Builder<'_>>());
    let reader = reread(&message);
    read_batch(reader.get_root().expect("root"))
}

/// Builds a raw batch with `build` and reads it.
fn read_raw(build: impl FnOnce(update_batch::Builder<'_>)) -> Result<UpdateBatch, CodecError> {
    let mut message = Builder::new_default();
    build(message.init_root::<update_batch::Builder<'_>>());
    let reader = reread(&message);
    read_batch(reader.get_root().expect("root"))
}

/// A raw batch with one valid attribute set and one announcement of `name` using `index`.
fn one_announcement(mut b: update_batch::Builder<'_>, name: &str, index: u32) {
    let mut set = b.reborrow().init_attribute_sets(1).get(0);
    set.set_origin("acme/edge-1");
    let mut a = b.init_announcements(1).get(0);
    a.set_service(name);
    a.set_attr_index(index);
}

#[test]
fn a_batch_round_trips_with_shared_attribute_sets() {
    let batch = sample_batch();
    let read = round_trip(&batch).expect("read");
    assert_eq!(read, batch);
    // Every service announced with one set shares its allocation.
    let first = &read.attrs[read.announce[0].1 as usize];
    let fifth = &read.attrs[read.announce[4].1 as usize];
    assert!(Arc::ptr_eq(first, fifth));
}

#[test]
fn an_empty_batch_round_trips() {
    let batch = UpdateBatch::default();
    assert_eq!(round_trip(&batch).expect("read"), batch);
}

#[test]
fn identical_attribute_sets_on_the_wire_are_interned_into_one() {
    let mut batch = sample_batch();
    let copy = Arc::new((*batch.attrs[2]).clone());
    batch.attrs.push(copy);
    batch.announce.push((service("dup.acme"), 4));
    let read = round_trip(&batch).expect("read");
    assert_eq!(read.attrs.len(), 4);
    assert_eq!(read.announce.last(), Some(&(service("dup.acme"), 2)));
}

#[test]
fn an_out_of_range_attr_index_is_malformed() {
    let err = read_raw(|b| one_announcement(b, "books.acme", 1)).expect_err("must fail");
    assert!(
        matches!(&err, CodecError::Malformed(m) if m.contains("attrIndex 1")),
        "{err}"
    );
}

#[test]
fn an_invalid_service_name_is_malformed() {
    let err = read_raw(|b| one_announcement(b, "Books Acme", 0)).expect_err("must fail");
    assert!(matches!(err, CodecError::Malformed(_)), "{err}");
    let err = read_raw(|b| b.init_withdrawals(1).set(0, "..")).expect_err("must fail");
    assert!(matches!(err, CodecError::Malformed(_)), "{err}");
}

#[test]
fn an_invalid_node_id_in_a_hop_is_malformed() {
    let err = read_raw(|b| {
        let mut set = b.init_attribute_sets(1).get(0);
        set.set_origin("acme/edge-1");
        set.init_path(1).get(0).set_node("no-slash");
    })
    .expect_err("must fail");
    assert!(
        matches!(&err, CodecError::Malformed(m) if m.contains("path hop 0")),
        "{err}"
    );
}

#[test]
fn too_many_withdrawals_is_oversized() {
    let err = read_raw(|b| {
        let mut list = b.init_withdrawals((MAX_BATCH_WITHDRAWALS + 1) as u32);
        for i in 0..list.len() {
            list.set(i, "gone.acme");
        }
    })
    .expect_err("must fail");
    assert!(err.is_oversized(), "{err}");
}

#[test]
fn too_many_attribute_sets_is_oversized() {
    let err = read_raw(|b| {
        b.init_attribute_sets((MAX_ATTRIBUTE_SETS + 1) as u32);
    })
    .expect_err("must fail");
    assert!(err.is_oversized(), "{err}");
}

#[test]
fn an_over_long_path_or_community_is_oversized() {
    let err = read_raw(|b| {
        let mut set = b.init_attribute_sets(1).get(0);
        set.set_origin("acme/edge-1");
        let mut path = set.init_path((MAX_WIRE_PATH_HOPS + 1) as u32);
        for i in 0..path.len() {
            path.reborrow().get(i).set_org("acme");
        }
    })
    .expect_err("must fail");
    assert!(err.is_oversized(), "{err}");
    let long = "x".repeat(MAX_WIRE_COMMUNITY_BYTES + 1);
    let err = read_raw(|b| {
        let mut set = b.init_attribute_sets(1).get(0);
        set.set_origin("acme/edge-1");
        set.init_communities(1).set(0, long.as_str());
    })
    .expect_err("must fail");
    assert!(err.is_oversized(), "{err}");
}

#[test]
fn an_unknown_protocol_hint_is_malformed() {
    // Mark the set's metric, then overwrite the protocol hint that follows it (data
    // section: originSeq u64, metric u32, protocol u16, learnedFrom u16).
    let mut message = Builder::new_default();
    let mut set = message
        .init_root::<update_batch::Builder<'_>>()
        .init_attribute_sets(1)
        .get(0);
    set.set_origin("acme/edge-1");
    set.set_metric(0xDEAD_BEEF);
    let mut bytes = capnp::serialize::write_message_to_words(&message);
    let at = bytes
        .windows(4)
        .position(|w| w == 0xDEAD_BEEFu32.to_le_bytes())
        .expect("metric")
        + 4;
    bytes[at..at + 2].copy_from_slice(&999u16.to_le_bytes());
    let reader = capnp::serialize::read_message(&mut &bytes[..], reader_options()).expect("read");
    let err = read_batch(reader.get_root().expect("root")).expect_err("must fail");
    assert!(
        matches!(&err, CodecError::Malformed(m) if m.contains("999")),
        "{err}"
    );
}

/// Reads `bytes` as a framed message holding a batch; must return, never panic.
fn read_bytes(bytes: &[u8]) -> Option<Result<UpdateBatch, CodecError>> {
    let reader = capnp::serialize::read_message(&mut &bytes[..], reader_options()).ok()?;
    let root = reader.get_root::<update_batch::Reader<'_>>().ok()?;
    Some(read_batch(root))
}

proptest! {
    #[test]
    fn random_bytes_never_make_the_batch_reader_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let _ = read_bytes(&bytes);
    }

    #[test]
    fn random_segments_never_make_the_batch_reader_panic(
        words in proptest::collection::vec(any::<u64>(), 1..256),
    ) {
        // A well-formed one-segment frame, so the reader gets past the segment table.
        let mut bytes = 0u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(words.len() as u32).to_le_bytes());
        bytes.extend(words.iter().flat_map(|w| w.to_le_bytes()));
        let _ = read_bytes(&bytes);
    }

    #[test]
    fn a_mutated_batch_never_makes_the_reader_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        let mut message = Builder::new_default();
        write_batch(&sample_batch(), message.init_root::<update_batch::Builder<'_>>());
        let mut bytes = capnp::serialize::write_message_to_words(&message);
        for (index, value) in flips {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        let _ = read_bytes(&bytes);
    }
}
