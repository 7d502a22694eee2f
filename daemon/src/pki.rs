//! Keys and certificates: the org CA, node and authority certificates, CSRs, fingerprints.
//!
//! Every key is ECDSA P-384. A node certificate carries its node id as the URI SAN
//! `trellis://ORG/NAME`, is usable for TLS client and server authentication, and lives
//! 24 hours by default (docs/security.md, "Certificates").

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SerialNumber, PKCS_ECDSA_P384_SHA384,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_ASN1_SIGNING};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use trellis_routing::{NodeId, OrgId};

use crate::util::{hex, random_bytes, sha256};

/// Default lifetime of a node certificate, seconds.
pub const NODE_CERT_LIFETIME_SECS: u64 = 24 * 3600;
/// Lifetime of the org CA certificate, seconds (10 years).
pub const CA_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;
/// Default lifetime of the authority's TLS certificate, seconds (30 days). The running
/// authority re-issues it once two thirds of it have passed ([`needs_rotation`]).
pub const AUTHORITY_CERT_LIFETIME_SECS: u64 = 30 * 24 * 3600;
/// Backdating of `notBefore`, for clock skew between authority and nodes, seconds.
const BACKDATE_SECS: u64 = 300;

/// Why a key or certificate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Key generation, signing or parsing failed in rcgen.
    #[error("certificate operation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A certificate could not be parsed or is not a Trellis certificate.
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    /// A CSR could not be parsed, its signature is wrong, or its key is not P-384.
    #[error("bad certificate signing request: {0}")]
    BadCsr(String),
    /// Randomness was unavailable.
    #[error("the system random generator failed")]
    Random,
}

/// A freshly generated P-384 key pair.
pub fn generate_key() -> Result<KeyPair, PkiError> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?)
}

/// A self-signed P-384 client certificate for the operator `name`, valid for a year from
/// `now`: `(certificate PEM, private key PEM)`. Its thumbprint binds operator tokens
/// (RFC 8705 self-signed mutual TLS); no CA vouches for it.
pub fn operator_certificate(name: &str, now: u64) -> Result<(String, String), PkiError> {
    let key = generate_key()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("trellis operator {name}"),
    );
    let start = time::OffsetDateTime::from_unix_timestamp(now.saturating_sub(300) as i64)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    params.not_before = start;
    params.not_after = start + time::Duration::days(365);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Loads a PEM private key.
pub fn load_key(pem: &[u8]) -> Result<KeyPair, PkiError> {
    let text =
        std::str::from_utf8(pem).map_err(|_| PkiError::BadCertificate("key is not PEM".into()))?;
    Ok(KeyPair::from_pem(text)?)
}

/// The ring signing key of a P-384 key pair (for signed documents).
pub fn signing_key(key: &KeyPair) -> Result<EcdsaKeyPair, PkiError> {
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P384_SHA384_ASN1_SIGNING,
        &key.serialize_der(),
        &SystemRandom::new(),
    )
    .map_err(|e| PkiError::BadCertificate(format!("key is not an ECDSA P-384 key: {e}")))
}

/// `sha256:<hex>` of a DER certificate: what a join string pins.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex(&sha256(der)))
}

/// The first certificate of a PEM bundle, DER.
pub fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>, PkiError> {
    CertificateDer::from_pem_slice(pem)
        .map(|c| c.to_vec())
        .map_err(|e| PkiError::BadCertificate(format!("not a PEM certificate: {e}")))
}

/// PEM of a DER certificate.
pub fn der_to_pem(der: &[u8]) -> String {
    let body = base64(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn datetime(secs: u64) -> Result<time::OffsetDateTime, PkiError> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| PkiError::BadCertificate(format!("time {secs} out of range")))
}

/// A random positive 16-byte serial number (RFC 5280 4.1.2.2).
fn serial() -> Result<Vec<u8>, PkiError> {
    let mut bytes = random_bytes::<16>().map_err(|_| PkiError::Random)?;
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    Ok(bytes.to_vec())
}

/// The self-signed org CA certificate for `org`, valid from `now`.
pub fn ca_certificate(org: &OrgId, key: &KeyPair, now: u64) -> Result<Vec<u8>, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Trellis CA {}", org.as_str()));
    params
        .distinguished_name
        .push(DnType::OrganizationName, org.as_str());
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = datetime(now.saturating_sub(BACKDATE_SECS))?;
    params.not_after = datetime(now + CA_LIFETIME_SECS)?;
    params.serial_number = Some(SerialNumber::from_slice(&serial()?));
    Ok(params.self_signed(key)?.der().to_vec())
}

/// A certificate just issued.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its serial number, big-endian bytes.
    pub serial: Vec<u8>,
    /// Start of validity, seconds since the epoch.
    pub not_before: u64,
    /// End of validity, seconds since the epoch.
    pub not_after: u64,
}

/// The org CA, able to issue certificates.
pub struct Ca {
    org: OrgId,
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Loads the CA from its DER certificate and PEM key.
    pub fn load(org: OrgId, der: Vec<u8>, key: KeyPair) -> Result<Self, PkiError> {
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(der.as_slice()), key)?;
        Ok(Self { org, der, issuer })
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The org this CA serves.
    pub fn org(&self) -> &OrgId {
        &self.org
    }

    /// The ring key for signing trust snapshots.
    pub fn signing_key(&self) -> Result<EcdsaKeyPair, PkiError> {
        signing_key(self.issuer.key())
    }

    fn leaf(
        &self,
        cn: &str,
        now: u64,
        lifetime: u64,
    ) -> Result<(CertificateParams, Vec<u8>), PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, self.org.as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = datetime(now.saturating_sub(BACKDATE_SECS))?;
        params.not_after = datetime(now + lifetime)?;
        params.use_authority_key_identifier_extension = true;
        let serial = serial()?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        Ok((params, serial))
    }

    /// Issues a node certificate for `node` and `public_key`, valid `lifetime` seconds.
    pub fn issue_node(
        &self,
        node: &NodeId,
        public_key: &impl PublicKeyData,
        now: u64,
        lifetime: u64,
    ) -> Result<Issued, PkiError> {
        let (mut params, serial) = self.leaf(node.as_str(), now, lifetime)?;
        params.subject_alt_names = vec![SanType::URI(node_uri(node).try_into()?)];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let der = params.signed_by(public_key, &self.issuer)?.der().to_vec();
        Ok(Issued {
            der,
            serial,
            not_before: now.saturating_sub(BACKDATE_SECS),
            not_after: now + lifetime,
        })
    }

    /// Issues the authority's TLS server certificate (DNS name [`authority_server_name`]),
    /// valid `lifetime` seconds.
    pub fn issue_authority(
        &self,
        key: &KeyPair,
        now: u64,
        lifetime: u64,
    ) -> Result<Issued, PkiError> {
        let (mut params, serial) = self.leaf(
            &format!("Trellis authority {}", self.org.as_str()),
            now,
            lifetime,
        )?;
        params.subject_alt_names = vec![SanType::DnsName(
            authority_server_name(&self.org).try_into()?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let der = params.signed_by(key, &self.issuer)?.der().to_vec();
        Ok(Issued {
            der,
            serial,
            not_before: now.saturating_sub(BACKDATE_SECS),
            not_after: now + lifetime,
        })
    }
}

/// Whether a certificate issued for `lifetime` seconds and ending at `not_after` is due for
/// re-issue at `now`: two thirds of its lifetime have passed (one third is left), the rule
/// nodes follow for their own certificates (docs/security.md, "Certificates").
pub fn needs_rotation(not_after: u64, lifetime: u64, now: u64) -> bool {
    not_after.saturating_sub(now) <= lifetime / 3
}

/// `trellis://ORG/NAME`.
pub fn node_uri(node: &NodeId) -> String {
    format!("trellis://{}", node.as_str())
}

/// The DNS name in an authority's TLS certificate: `authority.ORG.trellis`.
pub fn authority_server_name(org: &OrgId) -> String {
    format!("authority.{}.trellis", org.as_str())
}

/// What Trellis reads from a node certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCert {
    /// The node id from the URI SAN.
    pub node: NodeId,
    /// Serial number, big-endian bytes.
    pub serial: Vec<u8>,
    /// Start of validity, seconds since the epoch.
    pub not_before: u64,
    /// End of validity, seconds since the epoch.
    pub not_after: u64,
    /// Subject public key (the raw EC point).
    pub public_key: Vec<u8>,
}

/// Parses a node certificate: exactly one `trellis://` URI SAN holding a valid node id.
pub fn parse_node_cert(der: &[u8]) -> Result<NodeCert, PkiError> {
    use x509_parser::extensions::GeneralName;
    let bad = |why: String| PkiError::BadCertificate(why);
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("no subject alternative name".into()))?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let [uri] = uris.as_slice() else {
        return Err(bad(format!("expected one URI SAN, found {}", uris.len())));
    };
    let id = uri
        .strip_prefix("trellis://")
        .ok_or_else(|| bad(format!("URI SAN {uri:?} is not trellis://ORG/NAME")))?;
    let node = NodeId::new(id).map_err(|e| bad(e.to_string()))?;
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    let not_before = u64::try_from(cert.validity().not_before.timestamp()).unwrap_or(0);
    Ok(NodeCert {
        node,
        serial: cert.raw_serial().to_vec(),
        not_before,
        not_after,
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

/// A DER CSR for `key` (only its public key and signature matter to the authority).
pub fn csr(key: &KeyPair) -> Result<Vec<u8>, PkiError> {
    let params = CertificateParams::default();
    Ok(params.serialize_request(key)?.der().to_vec())
}

/// Parses a CSR, checks its signature and that its key is ECDSA P-384.
pub fn parse_csr(der: &[u8]) -> Result<CertificateSigningRequestParams, PkiError> {
    let parsed = CertificateSigningRequestParams::from_der(&der.into())
        .map_err(|e| PkiError::BadCsr(e.to_string()))?;
    if parsed.public_key.algorithm() != &PKCS_ECDSA_P384_SHA384 {
        return Err(PkiError::BadCsr("the key must be ECDSA P-384".into()));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_carries_its_id_and_the_csr_key() {
        let org = OrgId::new("acme").expect("org");
        let ca_key = generate_key().expect("key");
        let ca_der = ca_certificate(&org, &ca_key, 1_800_000_000).expect("ca");
        let ca = Ca::load(org, ca_der, ca_key).expect("load");
        let node_key = generate_key().expect("node key");
        let request = parse_csr(&csr(&node_key).expect("csr")).expect("parse csr");
        let node = NodeId::new("acme/edge-1").expect("node");
        let issued = ca
            .issue_node(
                &node,
                &request.public_key,
                1_800_000_000,
                NODE_CERT_LIFETIME_SECS,
            )
            .expect("issue");
        let parsed = parse_node_cert(&issued.der).expect("parse");
        assert_eq!(parsed.node, node);
        assert_eq!(parsed.serial, issued.serial);
        assert_eq!(parsed.public_key, node_key.public_key_raw());
        assert_eq!(parsed.not_after, 1_800_000_000 + NODE_CERT_LIFETIME_SECS);
    }

    #[test]
    fn a_csr_with_a_broken_signature_is_refused() {
        let key = generate_key().expect("key");
        let mut der = csr(&key).expect("csr");
        let last = der.len() - 3;
        der[last] ^= 0x55;
        assert!(parse_csr(&der).is_err());
        assert!(parse_csr(b"garbage").is_err());
    }

    #[test]
    fn a_certificate_is_due_for_rotation_once_two_thirds_of_its_life_have_passed() {
        let (issued, life) = (1_800_000_000, 30 * 24 * 3600);
        let not_after = issued + life;
        assert!(!needs_rotation(not_after, life, issued));
        assert!(!needs_rotation(not_after, life, issued + life * 2 / 3 - 1));
        assert!(needs_rotation(not_after, life, issued + life * 2 / 3));
        assert!(needs_rotation(not_after, life, not_after + 1), "expired");
        assert!(
            !needs_rotation(31, 30, 1),
            "short lives follow the same rule"
        );
        assert!(needs_rotation(31, 30, 21));
    }

    #[test]
    fn pem_round_trips() {
        let org = OrgId::new("acme").expect("org");
        let key = generate_key().expect("key");
        let der = ca_certificate(&org, &key, 1_800_000_000).expect("ca");
        assert_eq!(pem_to_der(der_to_pem(&der).as_bytes()).expect("pem"), der);
    }
}
