//! The authority's own TLS server certificate, re-issued while the authority runs.
//!
//! The certificate is issued by the org CA for `authority.ORG.trellis` with a bounded
//! lifetime (`--tls-cert-lifetime`, 30 days by default). The refresh loop asks
//! [`AuthorityCert::rotate_if_due`] periodically; once two thirds of the lifetime have
//! passed ([`pki::needs_rotation`]) a new certificate for the same key is issued and
//! swapped into the TLS resolver, so handshakes never meet an expired certificate however
//! long the authority runs (docs/security.md, "Certificates").

use std::sync::{Arc, Mutex};

use rustls_pki_types::CertificateDer;

use super::AuthorityError;
use crate::pki::{self, Ca};
use crate::tls::SwappableCert;

/// The certificate in use: serial and end of validity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InUse {
    /// Serial number, big-endian bytes.
    pub serial: Vec<u8>,
    /// End of validity, seconds since the epoch.
    pub not_after: u64,
}

/// The authority's TLS key and its current certificate.
pub(crate) struct AuthorityCert {
    key: rcgen::KeyPair,
    lifetime: u64,
    resolver: Arc<SwappableCert>,
    in_use: Mutex<InUse>,
}

fn tls(e: crate::tls::TlsError) -> AuthorityError {
    AuthorityError::Config(e.to_string())
}

impl AuthorityCert {
    /// Issues the first certificate for `key`, valid `lifetime` seconds from `now`.
    pub fn issue(
        ca: &Ca,
        key: rcgen::KeyPair,
        lifetime: u64,
        now: u64,
    ) -> Result<Self, AuthorityError> {
        let issued = ca.issue_authority(&key, now, lifetime)?;
        let chain = chain(ca, issued.der);
        let resolver =
            SwappableCert::new(chain, crate::tls::private_key(key.serialize_der())).map_err(tls)?;
        Ok(Self {
            key,
            lifetime,
            resolver: Arc::new(resolver),
            in_use: Mutex::new(InUse {
                serial: issued.serial,
                not_after: issued.not_after,
            }),
        })
    }

    /// The resolver the TLS server config reads the certificate from.
    pub fn resolver(&self) -> Arc<SwappableCert> {
        self.resolver.clone()
    }

    /// The certificate in use.
    pub fn in_use(&self) -> InUse {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InUse> {
        self.in_use
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Re-issues the certificate when two thirds of its lifetime have passed at `now`;
    /// returns the new one, or `None` when the current one is still fresh.
    pub fn rotate_if_due(&self, ca: &Ca, now: u64) -> Result<Option<InUse>, AuthorityError> {
        let mut in_use = self.lock();
        if !pki::needs_rotation(in_use.not_after, self.lifetime, now) {
            return Ok(None);
        }
        let issued = ca.issue_authority(&self.key, now, self.lifetime)?;
        let key = crate::tls::private_key(self.key.serialize_der());
        self.resolver
            .replace(chain(ca, issued.der), key)
            .map_err(tls)?;
        *in_use = InUse {
            serial: issued.serial,
            not_after: issued.not_after,
        };
        Ok(Some(in_use.clone()))
    }
}

fn chain(ca: &Ca, leaf: Vec<u8>) -> Vec<CertificateDer<'static>> {
    vec![leaf.into(), ca.der().to_vec().into()]
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::atomic::AtomicBool;

    use trellis_routing::OrgId;

    use super::*;
    use crate::util::sha256;
    use crate::util::time::now_secs;

    fn org_ca() -> Ca {
        let org = OrgId::new("acme").expect("org");
        let key = pki::generate_key().expect("key");
        let der = pki::ca_certificate(&org, &key, now_secs()).expect("ca");
        Ca::load(org, der, key).expect("load")
    }

    /// A fresh client (no session to resume) connects and reads the serial it was shown.
    async fn served_serial(ca: &Ca, addr: SocketAddr) -> Vec<u8> {
        let pin = sha256(ca.der());
        let config =
            crate::tls::enroll_client(pin, Arc::new(AtomicBool::new(false)), None, b"test")
                .expect("client config");
        let mut client =
            quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("client");
        client.set_default_client_config(config);
        let conn = client
            .connect(addr, &pki::authority_server_name(ca.org()))
            .expect("connect")
            .await
            .expect("handshake");
        let chain = conn
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
            .expect("server chain");
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).expect("leaf");
        let serial = leaf.raw_serial().to_vec();
        conn.close(0u32.into(), b"done");
        client.wait_idle().await;
        serial
    }

    #[test]
    fn a_fresh_certificate_is_kept_and_a_two_thirds_old_one_is_replaced() {
        let ca = org_ca();
        let now = 1_800_000_000;
        let cert =
            AuthorityCert::issue(&ca, pki::generate_key().expect("key"), 300, now).expect("issue");
        let first = cert.in_use();
        assert_eq!(first.not_after, now + 300);
        assert_eq!(cert.rotate_if_due(&ca, now + 199).expect("rotate"), None);
        let second = cert
            .rotate_if_due(&ca, now + 200)
            .expect("rotate")
            .expect("due");
        assert_ne!(second.serial, first.serial);
        assert_eq!(second.not_after, now + 500);
        assert_eq!(cert.in_use(), second);
        assert_eq!(cert.rotate_if_due(&ca, now + 201).expect("rotate"), None);
    }

    #[tokio::test]
    async fn handshakes_across_a_rotation_present_the_new_certificate() {
        let ca = org_ca();
        // A 30 s life issued now: rotation is due 20 s from now. Issuing backdates
        // notBefore by 5 minutes, so a certificate issued for "now + 21 s" is already
        // valid on the real clock and the test needs no sleep.
        let now = now_secs();
        let cert =
            AuthorityCert::issue(&ca, pki::generate_key().expect("key"), 30, now).expect("issue");
        let config =
            crate::tls::authority_server(cert.resolver(), ca.der(), b"test").expect("config");
        let server = quinn::Endpoint::server(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("server");
        let addr = server.local_addr().expect("addr");
        let acceptor = server.clone();
        tokio::spawn(async move {
            while let Some(incoming) = acceptor.accept().await {
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        conn.closed().await;
                    }
                });
            }
        });

        let before = served_serial(&ca, addr).await;
        assert_eq!(before, cert.in_use().serial);
        assert_eq!(cert.rotate_if_due(&ca, now + 5).expect("rotate"), None);
        assert_eq!(served_serial(&ca, addr).await, before, "not due yet");

        let rotated = cert
            .rotate_if_due(&ca, now + 21)
            .expect("rotate")
            .expect("due");
        let after = served_serial(&ca, addr).await;
        assert_eq!(after, rotated.serial);
        assert_ne!(after, before);
        server.close(0u32.into(), b"done");
    }
}
