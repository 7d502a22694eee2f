//! TLS for QUIC: the authority's server config and the node's enrollment client config.
//!
//! One crypto provider everywhere (ring), TLS 1.3 only, 0-RTT off. A joining node has no
//! trust anchor but the CA fingerprint from its join string: [`PinnedCa`] accepts the
//! authority only if the chain it presents contains a CA certificate with exactly that
//! SHA-256, and the leaf verifies to that CA for the name `authority.ORG.trellis`.
//!
//! The authority's certificate lives in a [`SwappableCert`], so a running authority can
//! replace it before it expires: each handshake takes the certificate current at that
//! moment; connections already made keep theirs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::util::sha256;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("TLS configuration: {0}")]
pub struct TlsError(pub String);

fn tls_err(e: impl std::fmt::Display) -> TlsError {
    TlsError(e.to_string())
}

/// The one crypto provider (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A private key for rustls from its PKCS#8 DER.
pub fn private_key(pkcs8: Vec<u8>) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8))
}

fn transport(
    idle: Duration,
    keep_alive: Option<Duration>,
) -> Result<Arc<quinn::TransportConfig>, TlsError> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(4u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.max_idle_timeout(Some(idle.try_into().map_err(tls_err)?));
    t.keep_alive_interval(keep_alive);
    // Enrollment messages are small: bound what one connection may buffer.
    t.stream_receive_window((2u32 * 1024 * 1024).into());
    t.receive_window((4u32 * 1024 * 1024).into());
    Ok(Arc::new(t))
}

/// A server certificate (chain and key) that can be replaced while the server runs.
#[derive(Debug)]
pub struct SwappableCert {
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl SwappableCert {
    /// Holds `chain` (leaf first) and the leaf's `key`; refuses a key that is not the leaf's.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let provider = provider();
        let current = CertifiedKey::from_der(chain, key, &provider).map_err(tls_err)?;
        Ok(Self {
            current: RwLock::new(Arc::new(current)),
            provider,
        })
    }

    /// Replaces the certificate for every later handshake.
    pub fn replace(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), TlsError> {
        let next = Arc::new(CertifiedKey::from_der(chain, key, &self.provider).map_err(tls_err)?);
        // The lock guards a pointer swap only; a poisoned lock still holds a whole value.
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        Ok(())
    }

    /// The certificate handed to the next handshake.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The authority's QUIC server config: its certificate chain `[leaf, CA]` from `cert`
/// (replaceable while running), client certificates optional (joins have none; renewals
/// present the node certificate, which must verify to `ca_der`).
pub fn authority_server(
    cert: Arc<SwappableCert>,
    ca_der: &[u8],
    alpn: &[u8],
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(tls_err)?;
    let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(tls_err)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(clients)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![alpn.to_vec()];
    config.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(config).map_err(tls_err)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport(Duration::from_secs(30), None)?);
    Ok(server)
}

/// Verifies the authority against a pinned CA fingerprint.
#[derive(Debug)]
pub struct PinnedCa {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
    mismatch: Arc<AtomicBool>,
}

impl PinnedCa {
    /// A verifier pinning `pin`; `mismatch` is set when a handshake failed on the pin.
    pub fn new(pin: [u8; 32], mismatch: Arc<AtomicBool>) -> Self {
        Self {
            pin,
            provider: provider(),
            mismatch,
        }
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| sha256(c) == self.pin) else {
            self.mismatch.store(true, Ordering::Relaxed);
            return Err(rustls::Error::General(
                "the authority's CA does not match the pinned fingerprint".into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
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

/// A node's enrollment client config: pins the CA by `pin`; presents `identity`
/// (certificate chain and key) when given.
pub fn enroll_client(
    pin: [u8; 32],
    mismatch: Arc<AtomicBool>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa::new(pin, mismatch)));
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(tls_err)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    config.enable_early_data = false;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config).map_err(tls_err)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport(
        Duration::from_secs(10),
        Some(Duration::from_secs(3)),
    )?);
    Ok(client)
}
