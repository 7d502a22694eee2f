//! Signed envelopes: a canonical Cap'n Proto payload, its kind, its signer and an ECDSA
//! P-384 signature over `"trellis-envelope-v1\0" || kind (u16 LE) || payload`.
//!
//! See `SignedEnvelope` in `schemas/peering.capnp` and docs/protocol.md, "Signed documents".

use capnp::message::{Builder, HeapAllocator, Reader, ReaderOptions, SegmentArray};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, UnparsedPublicKey, ECDSA_P384_SHA384_ASN1};
use trellis_schemas::peering_capnp::{signed_envelope, EnvelopeKind, SignatureAlgorithm};

/// Domain separator at the start of every signing input.
pub const SIGNING_DOMAIN: &[u8] = b"trellis-envelope-v1\0";

/// Largest envelope accepted by [`Envelope::decode`], in bytes.
pub const MAX_ENVELOPE_BYTES: usize = 4 * 1024 * 1024;

/// What a signed envelope carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An `OriginManifest`, signed by its origin node.
    OriginManifest,
    /// A `TrustSnapshot`, signed by an org authority (its CA key).
    TrustSnapshot,
    /// A `TableSnapshot`, signed by the exporting node.
    TableSnapshot,
}

impl Kind {
    fn to_wire(self) -> EnvelopeKind {
        match self {
            Self::OriginManifest => EnvelopeKind::OriginManifest,
            Self::TrustSnapshot => EnvelopeKind::TrustSnapshot,
            Self::TableSnapshot => EnvelopeKind::TableSnapshot,
        }
    }

    fn from_wire(kind: EnvelopeKind) -> Self {
        match kind {
            EnvelopeKind::OriginManifest => Self::OriginManifest,
            EnvelopeKind::TrustSnapshot => Self::TrustSnapshot,
            EnvelopeKind::TableSnapshot => Self::TableSnapshot,
        }
    }

    /// The signing input's kind field: the enumerant's ordinal.
    pub fn code(self) -> u16 {
        self.to_wire() as u16
    }
}

/// Why an envelope or its payload was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The bytes are not a well-formed envelope or payload.
    #[error("malformed signed envelope: {0}")]
    Malformed(String),
    /// The envelope is larger than [`MAX_ENVELOPE_BYTES`].
    #[error("signed envelope is {len} bytes, the limit is {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The envelope carries another kind of document than the one expected.
    #[error("signed envelope carries a {found:?}, expected a {expected:?}")]
    WrongKind {
        /// What was expected.
        expected: Kind,
        /// What it carries.
        found: Kind,
    },
    /// The payload is not in canonical form.
    #[error("signed payload is not in canonical form")]
    NotCanonical,
    /// The signature does not verify with the signer's key.
    #[error("signature of {signer} does not verify")]
    BadSignature {
        /// Who claimed to sign.
        signer: String,
    },
    /// The signing key could not be used.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A decoded envelope; its signature is not checked until [`Envelope::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// What the payload is.
    pub kind: Kind,
    /// The canonical payload bytes.
    pub payload: Vec<u8>,
    /// Node id or org id of the signer.
    pub signer: String,
    /// DER-encoded ECDSA P-384/SHA-384 signature.
    pub signature: Vec<u8>,
}

/// The bytes a signer signs for a payload of `kind`.
pub fn signing_input(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(SIGNING_DOMAIN.len() + 2 + payload.len());
    input.extend_from_slice(SIGNING_DOMAIN);
    input.extend_from_slice(&kind.code().to_le_bytes());
    input.extend_from_slice(payload);
    input
}

/// Reader options for signed documents: the schema crate's limits.
pub fn reader_options() -> ReaderOptions {
    trellis_schemas::reader_options()
}

/// Copies `bytes` into word-aligned storage (capnp reads whole words).
pub fn aligned(bytes: &[u8]) -> Result<Vec<capnp::Word>, EnvelopeError> {
    if bytes.len() % 8 != 0 {
        return Err(EnvelopeError::Malformed(format!(
            "{} bytes is not a whole number of words",
            bytes.len()
        )));
    }
    let mut words = capnp::Word::allocate_zeroed_vec(bytes.len() / 8);
    capnp::Word::words_to_bytes_mut(&mut words).copy_from_slice(bytes);
    Ok(words)
}

/// Serializes a built message in canonical form (one segment, no segment table).
pub fn canonical_bytes(message: Builder<HeapAllocator>) -> Result<Vec<u8>, EnvelopeError> {
    let words = message.into_reader().canonicalize().map_err(malformed)?;
    Ok(capnp::Word::words_to_bytes(&words).to_vec())
}

/// Runs `read` over the root of a canonical payload; refuses a payload that is not
/// canonical (docs/protocol.md: a signed payload has exactly one encoding).
pub fn read_canonical<T>(
    payload: &[u8],
    read: impl FnOnce(&Reader<SegmentArray<'_>>) -> Result<T, EnvelopeError>,
) -> Result<T, EnvelopeError> {
    let words = aligned(payload)?;
    let segments: [&[u8]; 1] = [capnp::Word::words_to_bytes(&words)];
    let reader = Reader::new(SegmentArray::new(&segments), reader_options());
    if !reader.is_canonical().map_err(malformed)? {
        return Err(EnvelopeError::NotCanonical);
    }
    read(&reader)
}

/// Maps any capnp error to [`EnvelopeError::Malformed`].
pub fn malformed(e: impl std::fmt::Display) -> EnvelopeError {
    EnvelopeError::Malformed(e.to_string())
}

impl Envelope {
    /// Signs `payload` as a document of `kind` by `signer` with `key`.
    pub fn sign(
        kind: Kind,
        payload: Vec<u8>,
        signer: &str,
        key: &EcdsaKeyPair,
    ) -> Result<Self, EnvelopeError> {
        let signature = key
            .sign(&SystemRandom::new(), &signing_input(kind, &payload))
            .map_err(|_| EnvelopeError::Signing("ECDSA signing failed".into()))?;
        Ok(Self {
            kind,
            payload,
            signer: signer.to_owned(),
            signature: signature.as_ref().to_vec(),
        })
    }

    /// Checks the signature with the signer's public key (an uncompressed P-384 point, as
    /// in a certificate's subject public key).
    pub fn verify(&self, public_key: &[u8]) -> Result<(), EnvelopeError> {
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, public_key)
            .verify(&signing_input(self.kind, &self.payload), &self.signature)
            .map_err(|_| EnvelopeError::BadSignature {
                signer: self.signer.clone(),
            })
    }

    /// Encodes the envelope as a standalone Cap'n Proto message (with segment table).
    pub fn encode(&self) -> Vec<u8> {
        let mut message = Builder::new_default();
        let mut root = message.init_root::<signed_envelope::Builder>();
        root.set_kind(self.kind.to_wire());
        root.set_payload(&self.payload);
        root.set_signer(self.signer.as_str());
        root.set_algorithm(SignatureAlgorithm::EcdsaP384Sha384);
        root.set_signature(&self.signature);
        capnp::serialize::write_message_to_words(&message)
    }

    /// Decodes an envelope of the expected `kind` from bytes made by [`Envelope::encode`].
    pub fn decode(bytes: &[u8], expected: Kind) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge {
                len: bytes.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        let words = aligned(bytes)?;
        let mut slice = capnp::Word::words_to_bytes(&words);
        let message = capnp::serialize::read_message_from_flat_slice(&mut slice, reader_options())
            .map_err(malformed)?;
        if !slice.is_empty() {
            return Err(EnvelopeError::Malformed("trailing bytes".into()));
        }
        let root = message
            .get_root::<signed_envelope::Reader>()
            .map_err(malformed)?;
        let kind = Kind::from_wire(root.get_kind().map_err(malformed)?);
        if kind != expected {
            return Err(EnvelopeError::WrongKind {
                expected,
                found: kind,
            });
        }
        match root.get_algorithm().map_err(malformed)? {
            SignatureAlgorithm::EcdsaP384Sha384 => {}
        }
        let signer = root
            .get_signer()
            .map_err(malformed)?
            .to_string()
            .map_err(malformed)?;
        Ok(Self {
            kind,
            payload: root.get_payload().map_err(malformed)?.to_vec(),
            signer,
            signature: root.get_signature().map_err(malformed)?.to_vec(),
        })
    }
}
