//! Round trips through the stream framing and the signed-envelope payload encoding, read
//! with the protocol's reader options.

use capnp::message::Builder;
use capnp::serialize;
use trellis_schemas::peering_capnp::{
    origin_manifest, path_hop, peer_message, EnvelopeKind, ProtocolHint, Relationship,
    SignatureAlgorithm,
};
use trellis_schemas::reader_options;

fn update_message() -> Vec<u8> {
    let mut message = Builder::new_default();
    let root = message.init_root::<peer_message::Builder>();
    let mut batch = root.init_update();

    let mut sets = batch.reborrow().init_attribute_sets(2);
    {
        let mut set = sets.reborrow().get(0);
        set.set_origin("acme/edge-1");
        set.set_origin_seq(7);
        let mut path = set.reborrow().init_path(2);
        path.reborrow().get(0).set_node("acme/core-1");
        path.reborrow().get(1).set_node("acme/edge-1");
        set.set_metric(30);
        let mut communities = set.reborrow().init_communities(2);
        communities.set(0, "acme:eu");
        communities.set(1, "no-export");
        set.set_protocol(ProtocolHint::Http);
        set.set_learned_from(Relationship::Internal);
    }
    {
        let mut set = sets.reborrow().get(1);
        set.set_origin("globex/api-3");
        set.set_origin_seq(u64::MAX);
        let mut path = set.reborrow().init_path(2);
        path.reborrow().get(0).set_node("acme/border-2");
        path.reborrow().get(1).set_org("globex");
        set.set_metric(u32::MAX);
        set.set_protocol(ProtocolHint::Grpc);
        set.set_learned_from(Relationship::Customer);
    }

    let mut announcements = batch.reborrow().init_announcements(3);
    for (i, (service, attr)) in [("books.acme", 0), ("*.eu.acme", 0), ("api.globex", 1)]
        .into_iter()
        .enumerate()
    {
        let mut a = announcements.reborrow().get(u32::try_from(i).unwrap());
        a.set_service(service);
        a.set_attr_index(attr);
    }

    batch.init_withdrawals(1).set(0, "old.acme");
    serialize::write_message_to_words(&message)
}

#[test]
fn update_batch_round_trip() {
    let bytes = update_message();
    let reader =
        serialize::read_message_from_flat_slice(&mut bytes.as_slice(), reader_options()).unwrap();
    let root = reader.get_root::<peer_message::Reader>().unwrap();
    let peer_message::Which::Update(batch) = root.which().unwrap() else {
        panic!("expected an update");
    };
    let batch = batch.unwrap();

    let sets = batch.get_attribute_sets().unwrap();
    assert_eq!(sets.len(), 2);

    let first = sets.get(0);
    assert_eq!(first.get_origin().unwrap(), "acme/edge-1");
    assert_eq!(first.get_origin_seq(), 7);
    assert_eq!(first.get_metric(), 30);
    assert_eq!(first.get_protocol().unwrap(), ProtocolHint::Http);
    assert_eq!(first.get_learned_from().unwrap(), Relationship::Internal);
    let hops: Vec<String> = first
        .get_path()
        .unwrap()
        .iter()
        .map(|hop| match hop.which().unwrap() {
            path_hop::Which::Node(n) => format!("node {}", n.unwrap().to_str().unwrap()),
            path_hop::Which::Org(o) => format!("org {}", o.unwrap().to_str().unwrap()),
        })
        .collect();
    assert_eq!(hops, ["node acme/core-1", "node acme/edge-1"]);
    let communities: Vec<&str> = first
        .get_communities()
        .unwrap()
        .iter()
        .map(|c| c.unwrap().to_str().unwrap())
        .collect();
    assert_eq!(communities, ["acme:eu", "no-export"]);

    let second = sets.get(1);
    assert_eq!(second.get_origin().unwrap(), "globex/api-3");
    assert_eq!(second.get_origin_seq(), u64::MAX);
    assert_eq!(second.get_metric(), u32::MAX);
    assert_eq!(second.get_protocol().unwrap(), ProtocolHint::Grpc);
    assert_eq!(second.get_learned_from().unwrap(), Relationship::Customer);
    let path = second.get_path().unwrap();
    let path_hop::Which::Org(org) = path.get(1).which().unwrap() else {
        panic!("expected an org hop");
    };
    assert_eq!(org.unwrap(), "globex");
    assert_eq!(second.get_communities().unwrap().len(), 0);

    let announced: Vec<(&str, u32)> = batch
        .get_announcements()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a.get_service().unwrap().to_str().unwrap(),
                a.get_attr_index(),
            )
        })
        .collect();
    assert_eq!(
        announced,
        [("books.acme", 0), ("*.eu.acme", 0), ("api.globex", 1)]
    );

    let withdrawals = batch.get_withdrawals().unwrap();
    assert_eq!(withdrawals.len(), 1);
    assert_eq!(withdrawals.get(0).unwrap(), "old.acme");
}

#[test]
fn signed_envelope_carries_a_canonical_payload() {
    // The signer: build the manifest, take its canonical form as the payload.
    let mut manifest = Builder::new_default();
    {
        let mut m = manifest.init_root::<origin_manifest::Builder>();
        m.set_origin("acme/edge-1");
        m.set_version(3);
        m.set_issued_at_ms(1_790_000_000_000);
        let mut services = m.init_services(2);
        services.set(0, "books.acme");
        services.set(1, "*.eu.acme");
    }
    let canonical = manifest.into_reader().canonicalize().expect("canonicalize");
    let payload = capnp::Word::words_to_bytes(&canonical);

    let mut envelope = Builder::new_default();
    {
        let mut e = envelope
            .init_root::<peer_message::Builder>()
            .init_manifest();
        e.set_kind(EnvelopeKind::OriginManifest);
        e.set_payload(payload);
        e.set_signer("acme/edge-1");
        e.set_algorithm(SignatureAlgorithm::EcdsaP384Sha384);
        e.set_signature(&[0x30, 0x02, 0x01, 0x00]);
    }
    let bytes = serialize::write_message_to_words(&envelope);

    // The receiver: read the envelope, then the payload as a bare single segment.
    let reader =
        serialize::read_message_from_flat_slice(&mut bytes.as_slice(), reader_options()).unwrap();
    let root = reader.get_root::<peer_message::Reader>().unwrap();
    let peer_message::Which::Manifest(e) = root.which().unwrap() else {
        panic!("expected a manifest");
    };
    let e = e.unwrap();
    assert_eq!(e.get_kind().unwrap(), EnvelopeKind::OriginManifest);
    assert_eq!(
        e.get_algorithm().unwrap(),
        SignatureAlgorithm::EcdsaP384Sha384
    );
    assert_eq!(e.get_signer().unwrap(), "acme/edge-1");
    let payload = e.get_payload().unwrap();
    let segments = [payload];
    let inner = capnp::message::Reader::new(
        capnp::message::SegmentArray::new(&segments),
        reader_options(),
    );
    assert!(inner.is_canonical().unwrap());
    let m = inner.get_root::<origin_manifest::Reader>().unwrap();
    assert_eq!(m.get_origin().unwrap(), e.get_signer().unwrap());
    assert_eq!(m.get_version(), 3);
    assert_eq!(m.get_services().unwrap().len(), 2);
}
