//! Origin manifests on the wire: the canonical `OriginManifest` payload, and
//! [`SignedManifest`] ↔ `SignedEnvelope` of kind `originManifest` (docs/protocol.md,
//! "OriginManifest", "SignedEnvelope", "Origin manifests and signing").
//!
//! The routing core carries a manifest's signature as one opaque blob. The daemon's blob
//! holds everything a receiver needs besides the manifest itself:
//!
//! ```text
//! certificate length (u32 LE) || certificate DER || issuedAtMs (u64 LE) || ECDSA signature (DER)
//! ```
//!
//! `issuedAtMs` is part of the signed payload, so it travels with the signature; the
//! layout is private to this module (`split_blob`, `join_blob`).
//!
//! Reading checks the envelope's kind and algorithm, that the payload is canonical, that
//! its services are sorted and unique (the one encoding a signer produces), at most
//! [`MAX_MANIFEST_SERVICES`], valid names, and that its origin is the envelope's signer. It
//! does not verify the signature: the routing core does, through
//! [`super::NodeSignatures`], once per manifest.

use std::collections::HashSet;
use std::sync::Arc;

use capnp::message::{Builder, ReaderSegments};
use trellis_policy::envelope::{canonical_bytes, read_canonical, EnvelopeError};
use trellis_routing::manifest::MAX_MANIFEST_SERVICES;
use trellis_routing::{NodeId, OriginManifest, ServiceName, SignedManifest};
use trellis_schemas::peering_capnp::{
    origin_manifest, signed_envelope, EnvelopeKind, SignatureAlgorithm,
};
use trellis_schemas::MAX_MESSAGE_BYTES;

use super::{capnp_error, check_len, len32, text, CodecError};

/// Largest signer certificate accepted, in bytes (a node certificate is under 1 KiB).
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;
/// Largest signature accepted, in bytes (a DER ECDSA P-384 signature is at most 104).
pub const MAX_SIGNATURE_BYTES: usize = 256;

/// The canonical `OriginManifest` payload of `m` issued at `issued_at_ms`: services sorted
/// by their bytes, so one manifest has exactly one encoding (and one signing input).
///
/// Fails only if the manifest is too large to encode.
pub fn manifest_payload(m: &OriginManifest, issued_at_ms: u64) -> Result<Vec<u8>, CodecError> {
    let mut services: Vec<&str> = m.services.iter().map(ServiceName::as_str).collect();
    services.sort_unstable();
    let mut message = Builder::new_default();
    let mut root = message.init_root::<origin_manifest::Builder<'_>>();
    root.set_origin(m.origin.as_str());
    root.set_version(m.version);
    root.set_issued_at_ms(issued_at_ms);
    let mut list = root.init_services(len32(services.len()));
    for (i, service) in (0..list.len()).zip(&services) {
        list.set(i, *service);
    }
    canonical_bytes(message).map_err(|e| CodecError::Local(format!("manifest payload: {e}")))
}

/// Reads a canonical `OriginManifest` payload (as signed) into a manifest.
pub fn read_manifest_payload(bytes: &[u8]) -> Result<OriginManifest, CodecError> {
    read_payload(bytes).map(|(manifest, _)| manifest)
}

/// Reads a canonical payload: the manifest and its `issuedAtMs`.
fn read_payload(bytes: &[u8]) -> Result<(OriginManifest, u64), CodecError> {
    check_len("bytes of manifest payload", bytes.len(), MAX_MESSAGE_BYTES)?;
    let read = read_canonical(bytes, |message| Ok(read_root(message)));
    match read {
        Ok(result) => result,
        Err(EnvelopeError::NotCanonical) => Err(CodecError::Malformed(
            "manifest payload is not in canonical form".into(),
        )),
        Err(e) => Err(CodecError::Malformed(format!("manifest payload: {e}"))),
    }
}

fn read_root<S: ReaderSegments>(
    message: &capnp::message::Reader<S>,
) -> Result<(OriginManifest, u64), CodecError> {
    let root = message
        .get_root::<origin_manifest::Reader<'_>>()
        .map_err(|e| capnp_error("manifest payload", &e))?;
    let origin = text("manifest origin", root.get_origin())?;
    let origin = NodeId::new(origin)
        .map_err(|e| CodecError::Malformed(format!("manifest origin {origin:?}: {e}")))?;
    let list = root
        .get_services()
        .map_err(|e| capnp_error("manifest services", &e))?;
    check_len(
        "services in manifest",
        list.len() as usize,
        MAX_MANIFEST_SERVICES,
    )?;
    let mut services = HashSet::with_capacity(list.len() as usize);
    let mut previous: Option<&str> = None;
    for (i, service) in list.iter().enumerate() {
        let what = format!("manifest service {i}");
        let s = text(&what, service)?;
        if previous.is_some_and(|p| p >= s) {
            return Err(CodecError::Malformed(format!(
                "{what} {s:?}: services are not sorted and unique"
            )));
        }
        previous = Some(s);
        let name =
            ServiceName::new(s).map_err(|e| CodecError::Malformed(format!("{what} {s:?}: {e}")))?;
        services.insert(name);
    }
    let manifest = OriginManifest {
        origin,
        version: root.get_version(),
        services,
    };
    Ok((manifest, root.get_issued_at_ms()))
}

/// Writes `m` as a `SignedEnvelope` of kind `originManifest`: the canonical payload
/// rebuilt with the blob's `issuedAtMs`, the origin as signer, and the blob's signature
/// and certificate.
///
/// Fails with [`CodecError::Malformed`] if `m.signature` is not a blob made by
/// [`super::NodeSignatures`] or [`read_manifest`].
pub fn write_manifest(
    m: &SignedManifest,
    mut b: signed_envelope::Builder<'_>,
) -> Result<(), CodecError> {
    let parts = split_blob(&m.signature)?;
    let payload = manifest_payload(&m.manifest, parts.issued_at_ms)?;
    b.set_kind(EnvelopeKind::OriginManifest);
    b.set_payload(&payload);
    b.set_signer(m.manifest.origin.as_str());
    b.set_algorithm(SignatureAlgorithm::EcdsaP384Sha384);
    b.set_signature(parts.signature);
    b.set_certificate(parts.certificate);
    Ok(())
}

/// Reads a `SignedEnvelope` that must carry an origin manifest, without verifying its
/// signature (the routing core asks [`super::NodeSignatures`] once per manifest).
pub fn read_manifest(r: signed_envelope::Reader<'_>) -> Result<SignedManifest, CodecError> {
    match r.get_kind() {
        Ok(EnvelopeKind::OriginManifest) => {}
        Ok(other) => {
            return Err(CodecError::Malformed(format!(
                "envelope carries a {other:?}, expected an origin manifest"
            )))
        }
        Err(capnp::NotInSchema(n)) => {
            return Err(CodecError::Malformed(format!("unknown envelope kind {n}")))
        }
    }
    match r.get_algorithm() {
        Ok(SignatureAlgorithm::EcdsaP384Sha384) => {}
        Err(capnp::NotInSchema(n)) => {
            return Err(CodecError::Malformed(format!(
                "unknown signature algorithm {n}"
            )))
        }
    }
    let signer = text("signer", r.get_signer())?;
    let payload = r.get_payload().map_err(|e| capnp_error("payload", &e))?;
    let (manifest, issued_at_ms) = read_payload(payload)?;
    if manifest.origin.as_str() != signer {
        return Err(CodecError::Malformed(format!(
            "manifest of {} is signed by {signer:?}",
            manifest.origin
        )));
    }
    let signature = r
        .get_signature()
        .map_err(|e| capnp_error("signature", &e))?;
    check_len("signature bytes", signature.len(), MAX_SIGNATURE_BYTES)?;
    let certificate = r
        .get_certificate()
        .map_err(|e| capnp_error("certificate", &e))?;
    if certificate.is_empty() {
        return Err(CodecError::Malformed(format!(
            "manifest of {signer} carries no signer certificate"
        )));
    }
    check_len(
        "certificate bytes",
        certificate.len(),
        MAX_CERTIFICATE_BYTES,
    )?;
    Ok(SignedManifest {
        manifest: Arc::new(manifest),
        signature: join_blob(certificate, issued_at_ms, signature).into(),
    })
}

/// The parts of a signature blob, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BlobParts<'a> {
    /// The signer's certificate, DER.
    pub(super) certificate: &'a [u8],
    /// The `issuedAtMs` of the signed payload.
    pub(super) issued_at_ms: u64,
    /// The DER ECDSA signature.
    pub(super) signature: &'a [u8],
}

/// Splits a blob made by [`join_blob`]; anything else is [`CodecError::Malformed`].
pub(super) fn split_blob(blob: &[u8]) -> Result<BlobParts<'_>, CodecError> {
    let short = || CodecError::Malformed("signature blob is truncated".into());
    let (len, rest) = blob.split_first_chunk::<4>().ok_or_else(short)?;
    let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| short())?;
    if rest.len() < len {
        return Err(short());
    }
    let (certificate, rest) = rest.split_at(len);
    let (issued_at_ms, signature) = rest.split_first_chunk::<8>().ok_or_else(short)?;
    Ok(BlobParts {
        certificate,
        issued_at_ms: u64::from_le_bytes(*issued_at_ms),
        signature,
    })
}

/// Joins a signature blob. `certificate` is at most [`MAX_CERTIFICATE_BYTES`] wherever
/// this is called (checked on read and in [`super::NodeSignatures::new`]).
pub(super) fn join_blob(certificate: &[u8], issued_at_ms: u64, signature: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(12 + certificate.len() + signature.len());
    blob.extend_from_slice(&len32(certificate.len()).to_le_bytes());
    blob.extend_from_slice(certificate);
    blob.extend_from_slice(&issued_at_ms.to_le_bytes());
    blob.extend_from_slice(signature);
    blob
}
