//! TLS for remote admin (docs/adr/0017-operator-tokens.md): QUIC with ALPN
//! `trellis-admin/1`, TLS 1.3 only.
//!
//! - The node presents its current node certificate (renewals apply at the next
//!   handshake). The operator's client verifies it to the org CA and to the node id it
//!   meant, exactly as a peer would.
//! - The operator presents its own client certificate, usually self-signed
//!   (`trellis operator cert`). The node requires one and checks that the client holds
//!   its key (the TLS 1.3 CertificateVerify), but no CA vouches for it: the operator
//!   token bound to its thumbprint (`cnf.x5t#S256`, RFC 8705) is the credential.

use std::sync::{Arc, RwLock};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use trellis_routing::NodeId;

use super::{tls_err, verify, Identity, Limits, TransportError};
use crate::node::trust::TrustStore;
use crate::tls;

/// The ALPN protocol of remote admin.
pub const ADMIN_ALPN: &[u8] = b"trellis-admin/1";

/// Requires a client certificate and proof of its key; trusts no CA for it.
#[derive(Debug)]
struct BoundByToken {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for BoundByToken {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The operator token, checked per request, names this certificate's thumbprint.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not allowed".into()))
    }

    fn verify_tls13_signature(
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Serves the node's identity as it is now (renewal swaps it).
#[derive(Debug)]
struct CurrentIdentity {
    identity: Arc<RwLock<Identity>>,
    provider: Arc<CryptoProvider>,
}

impl ResolvesServerCert for CurrentIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let id = self
            .identity
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let key = self.provider.key_provider.load_private_key(id.key).ok()?;
        Some(Arc::new(CertifiedKey::new(id.chain, key)))
    }
}

/// The node's remote-admin listener config.
pub fn admin_server_config(
    identity: Arc<RwLock<Identity>>,
    limits: &Limits,
) -> Result<quinn::ServerConfig, TransportError> {
    let provider = tls::provider();
    admin_server_config_with(Arc::new(CurrentIdentity { identity, provider }), limits)
}

/// A remote-admin listener config presenting what `certs` resolves (the node's identity,
/// or the authority's own TLS certificate).
pub fn admin_server_config_with(
    certs: Arc<dyn ResolvesServerCert>,
    limits: &Limits,
) -> Result<quinn::ServerConfig, TransportError> {
    let provider = tls::provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(Arc::new(BoundByToken {
            provider: provider.clone(),
        }))
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![ADMIN_ALPN.to_vec()];
    config.max_early_data_size = 0;
    config.send_tls13_tickets = 0;
    let crypto = QuicServerConfig::try_from(config).map_err(tls_err)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(super::transport(limits)?);
    Ok(server)
}

/// The operator's client config: presents `chain`/`key`, accepts only `node`, verified
/// to the CA in `trust`.
pub fn admin_client_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    trust: Arc<TrustStore>,
    node: NodeId,
) -> Result<quinn::ClientConfig, TransportError> {
    let provider = tls::provider();
    let verifier = verify::ExpectedPeer::new(trust, provider.clone(), node);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![ADMIN_ALPN.to_vec()];
    config.enable_early_data = false;
    let crypto = QuicClientConfig::try_from(config).map_err(tls_err)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(super::transport(&Limits::default())?);
    Ok(client)
}
