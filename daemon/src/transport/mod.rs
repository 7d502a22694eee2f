//! The peering transport: QUIC with mutual TLS 1.3 between nodes.
//!
//! The contract:
//! - both ends present a node certificate (URI SAN `trellis://ORG/NAME`) and verify the
//!   other's chain to a CA trusted **for the claimed node's org only**, at the handshake's
//!   time, and refuse revoked certificates and nodes (`verify.rs`, docs/security.md);
//! - the listener admits only nodes its [`Admit`] accepts (configured peers); the dialer
//!   accepts only the node it meant to reach, whatever DNS name the socket has;
//! - ALPN [`ALPN`], TLS 1.3 only, no 0-RTT and no session resumption (a resumed session
//!   would skip the revocation and admission checks);
//! - [`Limits`] bound the streams and flow-control windows one peer can make this node
//!   buffer; datagrams and unidirectional streams are off.
//!
//! One [`endpoint`] per node both listens and dials. This module moves bytes only; what is
//! said over a connection belongs to the session layer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use trellis_routing::NodeId;

use crate::node::trust::TrustStore;
use crate::{pki, tls};

pub mod admin;
mod cid;
mod verify;

#[cfg(test)]
mod tests;

/// The ALPN protocol of node-to-node sessions.
pub const ALPN: &[u8] = b"trellis/1";

/// The server name given to quinn when dialing: node certificates carry no DNS name, so
/// the verifier ignores it and checks the URI SAN against the expected node instead.
const SERVER_NAME: &str = "peer.trellis";

/// This node's TLS identity.
pub struct Identity {
    /// The node id its certificate names.
    pub node: NodeId,
    /// The certificate chain, leaf first (usually `[node, org CA]`).
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the leaf.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node", &self.node)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Checks that the leaf of the chain names this identity's node.
    fn check(&self) -> Result<(), TransportError> {
        let leaf = self.chain.first().ok_or_else(|| {
            TransportError::Identity(format!("identity of {} has no certificate", self.node))
        })?;
        let cert = pki::parse_node_cert(leaf).map_err(|e| {
            TransportError::Identity(format!("certificate of {} is unusable: {e}", self.node))
        })?;
        if cert.node != self.node {
            return Err(TransportError::Identity(format!(
                "certificate names {}, identity is {}",
                cert.node, self.node
            )));
        }
        Ok(())
    }
}

/// Who is on the other end, after the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's node id (verified URI SAN).
    pub node: NodeId,
    /// Serial number of its certificate, big-endian bytes.
    pub serial: Vec<u8>,
    /// End of validity of its certificate, seconds since the epoch.
    pub not_after: u64,
}

/// Bounds on what one peer can make this node buffer.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// Interval of keep-alive packets (zero: none); must be shorter than `idle_timeout`.
    pub keep_alive: Duration,
    /// Bidirectional streams the peer may have open at once.
    pub max_bidi_streams: u32,
    /// Bytes the peer may send on one stream before it is read.
    pub stream_window: u32,
    /// Bytes the peer may send on the whole connection before it is read (also the bound
    /// on unacknowledged data this node buffers for sending).
    pub connection_window: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            max_bidi_streams: 8,
            stream_window: 4 * 1024 * 1024,
            connection_window: 8 * 1024 * 1024,
        }
    }
}

/// Decides whether a node may connect at all (configured peer?). Called during the handshake.
pub type Admit = Arc<dyn Fn(&NodeId) -> bool + Send + Sync>;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A TLS or QUIC configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The [`Limits`] are out of range or inconsistent.
    #[error("transport limits: {0}")]
    Limits(String),
    /// A handshake failed or was refused (by either side).
    #[error("handshake with {peer} at {addr} failed: {reason}")]
    Handshake {
        /// The remote address.
        addr: SocketAddr,
        /// The node expected there (`an incoming node` when accepting).
        peer: String,
        /// What went wrong.
        reason: String,
    },
    /// Nothing answered the handshake within the idle timeout (peer down, link cut).
    #[error("no answer from {peer} at {addr}")]
    Unreachable {
        /// The remote address.
        addr: SocketAddr,
        /// The node expected there.
        peer: String,
    },
    /// This node's identity is unusable, or the peer's cannot be read.
    #[error("identity: {0}")]
    Identity(String),
    /// A socket could not be opened.
    #[error("socket: {0}")]
    Io(String),
}

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// The QUIC transport parameters for `limits`.
fn transport(limits: &Limits) -> Result<Arc<quinn::TransportConfig>, TransportError> {
    let idle = quinn::IdleTimeout::try_from(limits.idle_timeout).map_err(|e| {
        TransportError::Limits(format!("idle timeout {:?}: {e}", limits.idle_timeout))
    })?;
    if !limits.keep_alive.is_zero() && limits.keep_alive >= limits.idle_timeout {
        return Err(TransportError::Limits(format!(
            "keep-alive {:?} is not shorter than the idle timeout {:?}",
            limits.keep_alive, limits.idle_timeout
        )));
    }
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval((!limits.keep_alive.is_zero()).then_some(limits.keep_alive));
    t.max_concurrent_bidi_streams(limits.max_bidi_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window(limits.stream_window.into());
    t.receive_window(limits.connection_window.into());
    t.send_window(u64::from(limits.connection_window));
    t.datagram_receive_buffer_size(None);
    Ok(Arc::new(t))
}

/// The listener side: verifies dialing nodes against `trust` and `admit`.
pub fn server_config(
    identity: &Identity,
    trust: Arc<TrustStore>,
    admit: Admit,
    limits: &Limits,
) -> Result<quinn::ServerConfig, TransportError> {
    identity.check()?;
    let provider = tls::provider();
    let verifier = verify::PeerVerifier::new(trust, provider.clone(), admit);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(tls_err)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.max_early_data_size = 0;
    // No resumption: every connection runs the full verification (revocation, admission).
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let crypto = QuicServerConfig::try_from(config).map_err(tls_err)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport(limits)?);
    Ok(server)
}

/// The rustls side of [`client_config`], offering `alpn` (tests offer a wrong one).
fn rustls_client(
    identity: &Identity,
    trust: Arc<TrustStore>,
    expected: NodeId,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TransportError> {
    identity.check()?;
    let provider = tls::provider();
    let verifier = verify::ExpectedPeer::new(trust, provider.clone(), expected);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(tls_err)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    config.enable_early_data = false;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

fn quic_client(
    config: rustls::ClientConfig,
    limits: &Limits,
) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = QuicClientConfig::try_from(config).map_err(tls_err)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport(limits)?);
    Ok(client)
}

/// The dialer side: accepts only `expected`, verified against `trust`.
pub fn client_config(
    identity: &Identity,
    trust: Arc<TrustStore>,
    expected: NodeId,
    limits: &Limits,
) -> Result<quinn::ClientConfig, TransportError> {
    quic_client(rustls_client(identity, trust, expected, ALPN)?, limits)
}

/// The verified identity of the peer of an established connection.
pub fn peer_identity(conn: &quinn::Connection) -> Result<PeerIdentity, TransportError> {
    let addr = conn.remote_address();
    let missing = || TransportError::Identity(format!("peer at {addr} presented no certificate"));
    let chain = conn
        .peer_identity()
        .ok_or_else(missing)?
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| missing())?;
    let leaf = chain.first().ok_or_else(missing)?;
    let cert = pki::parse_node_cert(leaf)
        .map_err(|e| TransportError::Identity(format!("certificate of the peer at {addr}: {e}")))?;
    Ok(PeerIdentity {
        node: cert.node,
        serial: cert.serial,
        not_after: cert.not_after,
    })
}

/// One endpoint that both listens and dials (a node dials its peers from its listening
/// socket).
///
/// Its stateless-reset key is derived from the node's private key, so it is the same in
/// every run: when a node restarts on its address, a peer still holding the old
/// connection gets a valid stateless reset (RFC 9000 §10.3) with its next packet and
/// drops the dead connection at once, instead of refusing the new one as a collision
/// until its hold timer runs out.
pub fn endpoint(
    listen: SocketAddr,
    server: quinn::ServerConfig,
    identity: &Identity,
) -> Result<quinn::Endpoint, TransportError> {
    let io = |e: std::io::Error| TransportError::Io(format!("cannot listen on {listen}: {e}"));
    let socket = std::net::UdpSocket::bind(listen).map_err(io)?;
    socket_buffers(&socket);
    let runtime = quinn::default_runtime()
        .ok_or_else(|| TransportError::Io("no async runtime for the QUIC endpoint".into()))?;
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key(identity)));
    // Ids the new process does not drop unanswered (see `cid.rs`).
    config.cid_generator(|| {
        Box::new(cid::RandomCids::new()) as Box<dyn quinn::ConnectionIdGenerator>
    });
    quinn::Endpoint::new(config, Some(server), socket, runtime).map_err(io)
}

/// UDP socket buffers asked for: with the kernel's default (about 208 KiB) a data-plane
/// burst drops datagrams before quinn reads them (docs/performance.md).
const UDP_BUFFER: usize = 4 * 1024 * 1024;

/// Asks for [`UDP_BUFFER`] each way; the kernel caps it at `net.core.rmem_max` and
/// `wmem_max`, and a smaller buffer only costs throughput, so a refusal is logged.
fn socket_buffers(socket: &std::net::UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock
        .set_recv_buffer_size(UDP_BUFFER)
        .and_then(|()| sock.set_send_buffer_size(UDP_BUFFER))
    {
        tracing::warn!(error = %e, "UDP socket buffers not enlarged");
    }
}

/// HMAC key of the stateless-reset tokens: HMAC-SHA256 of the node's private key under a
/// fixed label (an HKDF extract step), the same in every run with that key.
fn reset_key(identity: &Identity) -> ring::hmac::Key {
    let label = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"trellis quic stateless reset v1");
    let derived = ring::hmac::sign(&label, identity.key.secret_der());
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
}

/// Dials `addr` expecting `expected`; the server name passed to quinn is a fixed placeholder
/// because node certificates carry no DNS name (the verifier checks the URI SAN instead).
///
/// With TLS 1.3 the dialer finishes its half of the handshake before the listener has
/// judged the dialer's certificate: when the listener refuses it (unknown CA, revoked, not
/// admitted), this may return a connection that is then closed with the TLS alert, seen by
/// the first stream operation or by [`quinn::Connection::closed`].
pub async fn dial(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    identity: &Identity,
    trust: Arc<TrustStore>,
    expected: NodeId,
    limits: &Limits,
) -> Result<quinn::Connection, TransportError> {
    let config = client_config(identity, trust, expected.clone(), limits)?;
    let failed = |reason: String| TransportError::Handshake {
        addr,
        peer: expected.to_string(),
        reason,
    };
    let conn = endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(|e| failed(e.to_string()))?
        .await
        .map_err(|e| match e {
            quinn::ConnectionError::TimedOut => TransportError::Unreachable {
                addr,
                peer: expected.to_string(),
            },
            e => failed(e.to_string()),
        })?;
    // The verifier already checked this; a second look costs one parse.
    let peer = peer_identity(&conn)?;
    if peer.node != expected {
        conn.close(0u32.into(), b"unexpected peer");
        return Err(failed(format!("peer presented {}", peer.node)));
    }
    Ok(conn)
}

/// Completes an incoming handshake and names the verified peer.
pub async fn accept(
    incoming: quinn::Incoming,
) -> Result<(quinn::Connection, PeerIdentity), TransportError> {
    let addr = incoming.remote_address();
    let failed = |reason: String| TransportError::Handshake {
        addr,
        peer: "an incoming node".into(),
        reason,
    };
    let conn = incoming
        .accept()
        .map_err(|e| failed(e.to_string()))?
        .await
        .map_err(|e| failed(e.to_string()))?;
    let peer = peer_identity(&conn)?;
    Ok((conn, peer))
}
