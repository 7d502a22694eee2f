//! Trust snapshot verification: every refusal reason, and that garbage never panics.

use super::*;
use proptest::prelude::*;
use ring::rand::SystemRandom;
use ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING;

const NOW: u64 = 1_800_000_000;

struct Ca {
    der: Vec<u8>,
    key: EcdsaKeyPair,
}

fn new_ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-signed");
    let signing = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P384_SHA384_ASN1_SIGNING,
        &key.serialize_der(),
        &SystemRandom::new(),
    )
    .expect("ring key");
    Ca {
        der: cert.der().to_vec(),
        key: signing,
    }
}

fn snapshot(ca: &Ca, version: u64) -> TrustSnapshot {
    TrustSnapshot {
        org: "acme".into(),
        version,
        issued_at: NOW - 10,
        expires_at: NOW + 3600,
        revoked_serials: vec![vec![0x12, 0x34]],
        revoked_nodes: vec!["acme/bad".into()],
        ca_certificate_der: ca.der.clone(),
        directory: vec![DirectoryEntry {
            node: "acme/n1".into(),
            address: "127.0.0.1:7001".into(),
            role: "relay".into(),
        }],
        token_keys: vec![crate::jwt::TokenKey {
            kid: "0011223344556677".into(),
            public: vec![4; 97],
        }],
        revoked_tokens: vec!["t-1".into()],
        ..TrustSnapshot::default()
    }
}

#[test]
fn a_signed_snapshot_verifies_and_round_trips() {
    let ca = new_ca("acme CA");
    let snap = snapshot(&ca, 3);
    let bytes = snap.sign(&ca.key).expect("sign");
    let got = verify(&bytes, "acme", &ca.der, Some(2), NOW).expect("verify");
    assert_eq!(got, snap);
    assert!(got.revokes("acme/bad", &[1]));
    assert!(got.revokes("acme/ok", &[0x12, 0x34]));
    assert!(!got.revokes("acme/ok", &[0x12]));
}

#[test]
fn first_snapshot_is_accepted_without_a_stored_version() {
    let ca = new_ca("acme CA");
    let bytes = snapshot(&ca, 1).sign(&ca.key).expect("sign");
    assert!(verify(&bytes, "acme", &ca.der, None, NOW).is_ok());
}

#[test]
fn an_older_or_equal_version_is_a_rollback() {
    let ca = new_ca("acme CA");
    for stored in [5, 6] {
        let bytes = snapshot(&ca, 5).sign(&ca.key).expect("sign");
        let err = verify(&bytes, "acme", &ca.der, Some(stored), NOW).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Rollback { version: 5, .. }),
            "{err}"
        );
    }
}

#[test]
fn a_snapshot_signed_by_another_ca_is_refused() {
    let ours = new_ca("acme CA");
    let theirs = new_ca("evil CA");
    let mut snap = snapshot(&theirs, 9);
    snap.ca_certificate_der = ours.der.clone();
    let bytes = snap.sign(&theirs.key).expect("sign");
    let err = verify(&bytes, "acme", &ours.der, None, NOW).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Envelope(EnvelopeError::BadSignature { .. })
        ),
        "{err}"
    );
}

#[test]
fn a_tampered_payload_fails_the_signature() {
    let ca = new_ca("acme CA");
    let snap = snapshot(&ca, 2);
    let envelope = Envelope::sign(
        Kind::TrustSnapshot,
        snap.to_payload().expect("payload"),
        "acme",
        &ca.key,
    )
    .expect("sign");
    let mut tampered = envelope.clone();
    let last = tampered.payload.len() - 1;
    tampered.payload[last] ^= 1;
    let err = verify(&tampered.encode(), "acme", &ca.der, None, NOW).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Envelope(EnvelopeError::BadSignature { .. })
        ),
        "{err}"
    );
}

#[test]
fn the_signature_covers_the_kind() {
    let ca = new_ca("acme CA");
    let payload = snapshot(&ca, 2).to_payload().expect("payload");
    let manifest_sig =
        Envelope::sign(Kind::OriginManifest, payload.clone(), "acme", &ca.key).expect("sign");
    let relabelled = Envelope {
        kind: Kind::TrustSnapshot,
        ..manifest_sig
    };
    let err = verify(&relabelled.encode(), "acme", &ca.der, None, NOW).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Envelope(EnvelopeError::BadSignature { .. })
        ),
        "{err}"
    );
    let wrong_kind = Envelope::sign(Kind::OriginManifest, payload, "acme", &ca.key)
        .expect("sign")
        .encode();
    let err = verify(&wrong_kind, "acme", &ca.der, None, NOW).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Envelope(EnvelopeError::WrongKind { .. })
        ),
        "{err}"
    );
}

#[test]
fn wrong_org_expired_future_and_other_ca_inside_are_refused() {
    let ca = new_ca("acme CA");
    let bytes = snapshot(&ca, 2).sign(&ca.key).expect("sign");
    let err = verify(&bytes, "globex", &ca.der, None, NOW).unwrap_err();
    assert!(matches!(err, SnapshotError::WrongSigner { .. }), "{err}");

    let err = verify(&bytes, "acme", &ca.der, None, NOW + 3600).unwrap_err();
    assert!(matches!(err, SnapshotError::Expired { .. }), "{err}");

    let mut future = snapshot(&ca, 2);
    future.issued_at = NOW + MAX_CLOCK_SKEW_SECS + 1;
    let bytes = future.sign(&ca.key).expect("sign");
    let err = verify(&bytes, "acme", &ca.der, None, NOW).unwrap_err();
    assert!(matches!(err, SnapshotError::FromFuture { .. }), "{err}");

    let other = new_ca("acme CA 2");
    let mut swapped = snapshot(&ca, 2);
    swapped.ca_certificate_der = other.der.clone();
    let bytes = swapped.sign(&ca.key).expect("sign");
    let err = verify(&bytes, "acme", &ca.der, None, NOW).unwrap_err();
    assert!(matches!(err, SnapshotError::CaMismatch { .. }), "{err}");
}

#[test]
fn a_non_canonical_payload_is_refused_even_when_signed() {
    let ca = new_ca("acme CA");
    // The framed (segment-table) encoding of the same snapshot is not canonical.
    let canonical = snapshot(&ca, 2).to_payload().expect("payload");
    let words = aligned(&canonical).expect("aligned");
    let segments: [&[u8]; 1] = [capnp::Word::words_to_bytes(&words)];
    let reader = capnp::message::Reader::new(
        capnp::message::SegmentArray::new(&segments),
        crate::envelope::reader_options(),
    );
    let mut framed = capnp::message::Builder::new_default();
    framed
        .set_root(reader.get_root::<trust_snapshot::Reader>().expect("root"))
        .expect("copy");
    let mut payload = capnp::serialize::write_message_to_words(&framed);
    payload.extend_from_slice(&[0; 8]);
    let bytes = Envelope::sign(Kind::TrustSnapshot, payload, "acme", &ca.key)
        .expect("sign")
        .encode();
    let err = verify(&bytes, "acme", &ca.der, None, NOW).unwrap_err();
    assert!(matches!(err, SnapshotError::Envelope(_)), "{err}");
}

use crate::envelope::aligned;

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let ca_der = vec![0u8; 4];
        let _ = verify(&bytes, "acme", &ca_der, None, NOW);
        let _ = TrustSnapshot::from_payload(&bytes);
    }
}
