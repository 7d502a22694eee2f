use std::sync::Arc;

use capnp::message::Builder;
use trellis_policy::TrustSnapshot;
use trellis_routing::{OriginManifest, Signatures, SignedManifest, VerifyError};
use trellis_schemas::peering_capnp::{signed_envelope, EnvelopeKind};

use super::{node, org, reread, service};
use crate::codec::manifest::{join_blob, split_blob};
use crate::codec::{
    manifest_payload, read_manifest, read_manifest_payload, write_manifest, CodecError,
    NodeSignatures,
};
use crate::node::trust::TrustStore;
use crate::pki::{self, Ca, Issued, NODE_CERT_LIFETIME_SECS};
use crate::util::time::now_secs;

/// An org CA able to issue node certificates.
fn org_ca(name: &str) -> Ca {
    let key = pki::generate_key().expect("key");
    let der = pki::ca_certificate(&org(name), &key, now_secs()).expect("ca cert");
    Ca::load(org(name), der, key).expect("load ca")
}

/// A trust store trusting `ca` for its org.
fn trusting(ca: &Ca) -> Arc<TrustStore> {
    let trust = Arc::new(TrustStore::new());
    trust.trust_ca(ca.org(), ca.der().to_vec());
    trust
}

/// A node `id` with a fresh key and a certificate from `ca`, verifying against `trust`.
fn node_signer(ca: &Ca, id: &str, trust: &Arc<TrustStore>) -> (NodeSignatures, Issued) {
    let key = pki::generate_key().expect("key");
    let issued = ca
        .issue_node(&node(id), &key, now_secs(), NODE_CERT_LIFETIME_SECS)
        .expect("issue");
    let signer =
        NodeSignatures::new(node(id), &key, issued.der.clone(), Arc::clone(trust)).expect("signer");
    (signer, issued)
}

fn manifest(origin: &str, services: &[&str]) -> OriginManifest {
    OriginManifest {
        origin: node(origin),
        version: 3,
        services: services.iter().map(|s| service(s)).collect(),
    }
}

fn signed_by(signer: &NodeSignatures, m: OriginManifest) -> SignedManifest {
    let signature = signer.sign(&m).into();
    SignedManifest {
        manifest: Arc::new(m),
        signature,
    }
}

/// Writes `m` into an envelope, sends it through bytes and reads it back.
fn through_the_wire(m: &SignedManifest) -> Result<SignedManifest, CodecError> {
    let mut message = Builder::new_default();
    write_manifest(m, message.init_root::<signed_envelope::Builder<'_>>())?;
    let reader = reread(&message);
    read_manifest(reader.get_root().expect("root"))
}

fn reason(result: Result<(), VerifyError>) -> String {
    result.expect_err("verification must fail").reason
}

#[test]
fn a_signed_manifest_survives_the_wire_and_verifies_at_another_node() {
    let ca = org_ca("acme");
    let trust = trusting(&ca);
    let (origin, _) = node_signer(&ca, "acme/edge-1", &trust);
    let (receiver, _) = node_signer(&ca, "acme/edge-2", &trust);
    let sent = signed_by(
        &origin,
        manifest("acme/edge-1", &["books.acme", "*.eu.acme"]),
    );
    let received = through_the_wire(&sent).expect("read");
    assert_eq!(received, sent);
    receiver
        .verify(&received.manifest, &received.signature)
        .expect("verifies");
}

#[test]
fn the_payload_is_deterministic_and_reads_back() {
    let names = ["c.acme", "a.acme", "e.acme", "b.acme", "d.acme"];
    let m = manifest("acme/edge-1", &names);
    let mut reversed = names;
    reversed.reverse();
    let payload = manifest_payload(&m, 99).expect("payload");
    let again = manifest_payload(&manifest("acme/edge-1", &reversed), 99).expect("payload");
    assert_eq!(payload, again);
    assert_eq!(read_manifest_payload(&payload).expect("read"), m);
    assert!(read_manifest_payload(&payload[..payload.len() - 8]).is_err());
}

#[test]
fn an_envelope_of_another_kind_or_signer_is_malformed() {
    let ca = org_ca("acme");
    let (origin, _) = node_signer(&ca, "acme/edge-1", &trusting(&ca));
    let sent = signed_by(&origin, manifest("acme/edge-1", &["books.acme"]));
    let altered = |alter: fn(signed_envelope::Builder<'_>)| {
        let mut message = Builder::new_default();
        let mut envelope = message.init_root::<signed_envelope::Builder<'_>>();
        write_manifest(&sent, envelope.reborrow()).expect("write");
        alter(envelope);
        read_manifest(reread(&message).get_root().expect("root"))
    };
    let alterations: [fn(signed_envelope::Builder<'_>); 3] = [
        |mut e| e.set_signer("acme/edge-9"),
        |mut e| e.set_kind(EnvelopeKind::TableSnapshot),
        |mut e| e.set_certificate(&[]),
    ];
    for alter in alterations {
        let err = altered(alter).expect_err("must fail");
        assert!(matches!(err, CodecError::Malformed(_)), "{err}");
    }
}

#[test]
fn a_truncated_blob_is_refused_not_panicked_on() {
    let blob = join_blob(b"cert", 5, b"sig");
    let parts = split_blob(&blob).expect("split");
    assert_eq!(
        (parts.certificate, parts.issued_at_ms, parts.signature),
        (&b"cert"[..], 5, &b"sig"[..])
    );
    for len in 0..12 {
        assert!(split_blob(&blob[..len]).is_err(), "{len} bytes");
    }
}

#[test]
fn verification_fails_for_a_tampered_service_list() {
    let ca = org_ca("acme");
    let trust = trusting(&ca);
    let (origin, _) = node_signer(&ca, "acme/edge-1", &trust);
    let sent = signed_by(&origin, manifest("acme/edge-1", &["books.acme"]));
    let mut tampered = (*sent.manifest).clone();
    tampered.services.insert(service("bank.acme"));
    let why = reason(origin.verify(&tampered, &sent.signature));
    assert_eq!(why, "signature does not verify");
}

#[test]
fn verification_fails_for_a_certificate_from_an_untrusted_ca() {
    let trusted = org_ca("acme");
    let rogue = org_ca("acme");
    let (origin, _) = node_signer(&rogue, "acme/edge-1", &trusting(&rogue));
    let (receiver, _) = node_signer(&trusted, "acme/edge-2", &trusting(&trusted));
    let sent = signed_by(&origin, manifest("acme/edge-1", &["books.acme"]));
    let why = reason(receiver.verify(&sent.manifest, &sent.signature));
    assert!(
        why.starts_with("certificate of acme/edge-1 does not verify to a CA trusted for org acme"),
        "{why}"
    );
}

#[test]
fn a_manifest_of_an_org_without_a_trusted_ca_is_accepted_as_unverified_and_counted() {
    // RFC 6811 "NotFound": this node holds no CA for globex (an interior node, or a
    // partner of a partner); the border node that holds it verified the chain.
    let ca = org_ca("acme");
    let trust = trusting(&ca);
    let (origin, _) = node_signer(&ca, "globex/api-1", &trust);
    let sent = signed_by(&origin, manifest("globex/api-1", &["api.globex"]));
    origin
        .verify(&sent.manifest, &sent.signature)
        .expect("accepted as unverified");
    assert_eq!(
        origin
            .unverified_counter()
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // A forged signature is still refused.
    let mut tampered = (*sent.manifest).clone();
    tampered.services.insert(service("bank.globex"));
    assert_eq!(
        reason(origin.verify(&tampered, &sent.signature)),
        "signature does not verify"
    );
}

#[test]
fn verification_fails_for_a_certificate_naming_another_node() {
    let ca = org_ca("acme");
    let trust = trusting(&ca);
    let (other, _) = node_signer(&ca, "acme/edge-2", &trust);
    let sent = signed_by(&other, manifest("acme/edge-1", &["books.acme"]));
    let why = reason(other.verify(&sent.manifest, &sent.signature));
    assert_eq!(why, "certificate names acme/edge-2, not acme/edge-1");
}

#[test]
fn verification_fails_for_a_revoked_node_or_certificate() {
    let ca = org_ca("acme");
    let trust = trusting(&ca);
    let (origin, issued) = node_signer(&ca, "acme/edge-1", &trust);
    let sent = signed_by(&origin, manifest("acme/edge-1", &["books.acme"]));
    origin
        .verify(&sent.manifest, &sent.signature)
        .expect("verifies before revocation");
    let snapshot = |version, serials: Vec<Vec<u8>>, nodes: Vec<String>| TrustSnapshot {
        org: "acme".into(),
        version,
        issued_at: now_secs(),
        expires_at: now_secs() + 3600,
        revoked_serials: serials,
        revoked_nodes: nodes,
        ca_certificate_der: ca.der().to_vec(),
        ..TrustSnapshot::default()
    };
    trust.apply_snapshot(&org("acme"), &snapshot(1, vec![issued.serial], vec![]));
    assert_eq!(
        reason(origin.verify(&sent.manifest, &sent.signature)),
        "certificate of acme/edge-1 is revoked"
    );
    trust.apply_snapshot(
        &org("acme"),
        &snapshot(2, vec![], vec!["acme/edge-1".into()]),
    );
    assert_eq!(
        reason(origin.verify(&sent.manifest, &sent.signature)),
        "certificate of acme/edge-1 is revoked"
    );
}

#[test]
fn verification_fails_for_a_signature_from_another_key() {
    let ca = org_ca("acme");
    let trust = trusting(&ca);
    let (origin, issued) = node_signer(&ca, "acme/edge-1", &trust);
    // The same node id with another key (and its own valid certificate).
    let (impostor, _) = node_signer(&ca, "acme/edge-1", &trust);
    let m = manifest("acme/edge-1", &["books.acme"]);
    let forged = impostor.sign(&m);
    let parts = split_blob(&forged).expect("split");
    let blob = join_blob(&issued.der, parts.issued_at_ms, parts.signature);
    assert_eq!(
        reason(origin.verify(&m, &blob)),
        "signature does not verify"
    );
}

#[test]
fn verification_fails_once_the_certificate_has_expired() {
    let ca = org_ca("acme");
    let trust = trusting(&ca);
    let (origin, _) = node_signer(&ca, "acme/edge-1", &trust);
    let sent = signed_by(&origin, manifest("acme/edge-1", &["books.acme"]));
    let later_ms = (now_secs() + 2 * NODE_CERT_LIFETIME_SECS) * 1000;
    let (receiver, _) = node_signer(&ca, "acme/edge-2", &trust);
    let receiver = receiver.with_clock(move || later_ms);
    let why = reason(receiver.verify(&sent.manifest, &sent.signature));
    assert!(why.contains("does not verify"), "{why}");
}

#[test]
fn a_signer_refuses_a_certificate_that_is_not_its_own() {
    let ca = org_ca("acme");
    let trust = trusting(&ca);
    let key = pki::generate_key().expect("key");
    let other_key = pki::generate_key().expect("key");
    let issued = ca
        .issue_node(&node("acme/edge-1"), &other_key, now_secs(), 3600)
        .expect("issue");
    let err = NodeSignatures::new(node("acme/edge-1"), &key, issued.der.clone(), trust.clone())
        .expect_err("another key");
    assert!(matches!(err, CodecError::Local(_)), "{err}");
    let err = NodeSignatures::new(node("acme/edge-2"), &other_key, issued.der, trust)
        .expect_err("another node");
    assert!(matches!(err, CodecError::Local(_)), "{err}");
}

#[test]
fn node_signatures_can_be_shared_between_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<NodeSignatures>();
}
