//! Certificate verification for node-to-node sessions (docs/security.md, "Certificates").
//!
//! Both directions check the same three things about the peer's chain:
//!
//! 1. the leaf names one node id (the URI SAN `trellis://ORG/NAME`, read by
//!    [`pki::parse_node_cert`]);
//! 2. the chain verifies, at the handshake's time and for the right extended key usage, to a
//!    CA trusted **for that node's org only** ([`TrustStore::cas_for`]), so a partner's CA
//!    never vouches for a node id of another org;
//! 3. the certificate (or the whole node) is not revoked.
//!
//! Then the listener asks [`Admit`] whether the node is a configured peer, and the dialer
//! checks that the node is the one it meant to reach. DNS server names play no part: node
//! certificates carry none.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::SignatureScheme;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use trellis_routing::NodeId;
use webpki::KeyUsage;

use super::Admit;
use crate::node::trust::TrustStore;
use crate::pki::{self, NodeCert};

/// Why a peer certificate was refused, as carried inside [`rustls::Error`] (whose
/// `Display` shows it through `Debug`, so both print the bare message).
#[derive(thiserror::Error)]
#[error("{0}")]
struct Refused(String);

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A refusal with a message naming the peer (sent as a `bad_certificate` alert).
fn refuse(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(
        message,
    )))))
}

/// What the leaf claims: its node id, serial and expiry (not yet verified).
fn claim(end_entity: &CertificateDer<'_>) -> Result<NodeCert, rustls::Error> {
    pki::parse_node_cert(end_entity)
        .map_err(|e| refuse(format!("peer certificate is not a node certificate: {e}")))
}

/// The checks shared by both directions.
struct Chain {
    trust: Arc<TrustStore>,
    provider: Arc<CryptoProvider>,
}

impl Chain {
    /// Verifies the chain of `claimed` for `usage` at `now`, then that it is not revoked.
    fn verify(
        &self,
        claimed: &NodeCert,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: KeyUsage,
    ) -> Result<(), rustls::Error> {
        let check = crate::node::trust::ChainCheck {
            algorithms: self.provider.signature_verification_algorithms.all,
            now,
            usage,
        };
        self.trust
            .verify_chain(
                &claimed.node,
                &claimed.serial,
                end_entity,
                intermediates,
                check,
            )
            .map_err(|e| match e {
                crate::node::trust::ChainError::NoCa(org) => refuse(format!(
                    "no CA trusted for org {org} (peer claims {})",
                    claimed.node
                )),
                crate::node::trust::ChainError::Refused(why) => refuse(why),
            })?;
        Ok(())
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS 1.2 is never negotiated (the configs are TLS 1.3 only); refuse if asked anyway.
fn no_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::General(
        "TLS 1.2 is not allowed between nodes".into(),
    ))
}

/// The listener's check of a dialing node: mandatory client certificate, verified to its
/// org's CA for client authentication, not revoked, and admitted.
pub(super) struct PeerVerifier {
    chain: Chain,
    admit: Admit,
}

impl PeerVerifier {
    /// A verifier over `trust` that admits only nodes for which `admit` is true.
    pub(super) fn new(trust: Arc<TrustStore>, provider: Arc<CryptoProvider>, admit: Admit) -> Self {
        Self {
            chain: Chain { trust, provider },
            admit,
        }
    }
}

impl std::fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerVerifier").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let peer = claim(end_entity)?;
        self.chain.verify(
            &peer,
            end_entity,
            intermediates,
            now,
            KeyUsage::client_auth(),
        )?;
        if !(self.admit)(&peer.node) {
            return Err(refuse(format!("peer {} is not configured", peer.node)));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.schemes()
    }
}

/// The dialer's check of the listener: it must be `expected`, verified to that org's CA for
/// server authentication, and not revoked. The DNS server name is ignored.
pub(super) struct ExpectedPeer {
    chain: Chain,
    expected: NodeId,
}

impl ExpectedPeer {
    /// A verifier over `trust` that accepts only `expected`.
    pub(super) fn new(
        trust: Arc<TrustStore>,
        provider: Arc<CryptoProvider>,
        expected: NodeId,
    ) -> Self {
        Self {
            chain: Chain { trust, provider },
            expected,
        }
    }
}

impl std::fmt::Debug for ExpectedPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpectedPeer")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ExpectedPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Check the claimed id first: a wrong node is refused before any chain work.
        let claimed = claim(end_entity)?;
        if claimed.node != self.expected {
            return Err(refuse(format!(
                "peer presented {}, expected {}",
                claimed.node, self.expected
            )));
        }
        self.chain.verify(
            &claimed,
            end_entity,
            intermediates,
            now,
            KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.schemes()
    }
}
