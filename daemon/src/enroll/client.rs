//! The node's side of enrollment: join an org, renew the certificate, fetch the newest
//! trust snapshot. Each call is one QUIC connection to the authority.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use trellis_routing::{NodeId, OrgId};

use super::joinstring::JoinString;
use super::{
    decode_response, encode_request, read_frame, write_frame, ErrorCode, IssuedCert, JoinRequest,
    Request, Response, ALPN,
};
use crate::node::{Enrollment, NodeStore, NodeStoreError, Paths};
use crate::pki::{self, PkiError};
use crate::util::datadir::{ensure_role, Role};
use crate::util::files::{private_dir, read_secret, write_atomic, write_secret_new};
use crate::util::time::now_secs;
use crate::util::{hex, sha256};

/// How long the QUIC handshake may take before the authority counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an enrollment call failed. Each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the address.
    #[error("authority at {addr} is unreachable: {reason}")]
    Unreachable {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The authority's CA is not the pinned one; nothing was sent.
    #[error("the authority at {addr} does not hold the CA pinned by the join string; refusing to send anything")]
    PinMismatch {
        /// The address.
        addr: SocketAddr,
    },
    /// The authority refused.
    #[error("{message}")]
    Refused {
        /// Why, as a code.
        code: ErrorCode,
        /// Why, from the authority.
        message: String,
    },
    /// No decision within the node's own timeout.
    #[error("no decision within {0} s; the join request was withdrawn (retry with the same join string)")]
    Timeout(u64),
    /// The exchange broke or the answer is wrong.
    #[error("enrollment protocol: {0}")]
    Protocol(String),
    /// A local file or the node store failed.
    #[error("{0}")]
    Local(String),
    /// The data dir belongs to an authority, or holds another CA's certificate.
    #[error("{0}")]
    WrongDir(String),
    /// The node is already joined.
    #[error(
        "{0} already holds a node certificate; this node has joined (use `trellis cert renew`)"
    )]
    AlreadyJoined(String),
}

impl ClientError {
    /// The process exit code for this failure (docs/operations.md, "Exit codes"). A join
    /// that nobody decided in time is a timeout (4), whichever side's wait ran out.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Refused {
                code: ErrorCode::TimedOut,
                ..
            } => 4,
            Self::Refused { .. } | Self::AlreadyJoined(_) => 1,
            Self::Unreachable { .. } => 3,
            Self::Timeout(_) => 4,
            Self::WrongDir(_) => 2,
            Self::PinMismatch { .. } => 5,
            Self::Protocol(_) | Self::Local(_) => 6,
        }
    }
}

impl From<NodeStoreError> for ClientError {
    fn from(e: NodeStoreError) -> Self {
        Self::Local(e.to_string())
    }
}

impl From<PkiError> for ClientError {
    fn from(e: PkiError) -> Self {
        Self::Local(e.to_string())
    }
}

fn local(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |e| ClientError::Local(format!("{}: {e}", path.display()))
}

/// A request/response exchange with the authority.
struct Session {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

async fn connect(
    addr: SocketAddr,
    org: &OrgId,
    pin: [u8; 32],
    identity: Option<(
        Vec<CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )>,
) -> Result<Session, ClientError> {
    let mismatch = Arc::new(AtomicBool::new(false));
    let config = crate::tls::enroll_client(pin, mismatch.clone(), identity, ALPN)
        .map_err(|e| ClientError::Local(e.to_string()))?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|_| ClientError::Local("bad bind address".into()))?;
    let mut endpoint = quinn::Endpoint::client(bind)
        .map_err(|e| ClientError::Local(format!("cannot open a UDP socket: {e}")))?;
    endpoint.set_default_client_config(config);
    let server_name = pki::authority_server_name(org);
    let connecting =
        endpoint
            .connect(addr, &server_name)
            .map_err(|e| ClientError::Unreachable {
                addr,
                reason: e.to_string(),
            })?;
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => {
            return Err(ClientError::Unreachable {
                addr,
                reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            })
        }
        Ok(Err(_)) if mismatch.load(Ordering::Relaxed) => {
            return Err(ClientError::PinMismatch { addr })
        }
        Ok(Err(e)) => {
            return Err(ClientError::Unreachable {
                addr,
                reason: e.to_string(),
            })
        }
        Ok(Ok(conn)) => conn,
    };
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(Session {
        endpoint,
        conn,
        send,
        recv,
    })
}

impl Session {
    async fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        write_frame(&mut self.send, &encode_request(request))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let _ = self.send.finish();
        Ok(())
    }

    async fn receive(&mut self) -> Result<Response, ClientError> {
        let frame = read_frame(&mut self.recv)
            .await
            .map_err(|e| ClientError::Protocol(format!("the authority closed the stream: {e}")))?;
        let response = decode_response(&frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
        match response {
            Response::Error { code, message } => Err(ClientError::Refused { code, message }),
            other => Ok(other),
        }
    }

    async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle())
            .await
            .ok();
    }
}

/// Facts a node reports when it joins.
pub fn facts() -> Vec<(String, String)> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    vec![
        ("hostname".into(), hostname),
        ("os".into(), std::env::consts::OS.into()),
        ("arch".into(), std::env::consts::ARCH.into()),
        ("version".into(), env!("CARGO_PKG_VERSION").into()),
    ]
}

/// Capabilities this build supports (names of `Capability` in `schemas/peering.capnp`).
pub const CAPABILITIES: [&str; 4] = [
    "peering/1",
    "origin-manifests",
    "trust-snapshots",
    "table-snapshots",
];

/// What a successful join or renewal produced.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Enrolled {
    /// Node id.
    pub node_id: String,
    /// Certificate serial, hex.
    pub serial: String,
    /// Certificate expiry, seconds since the epoch.
    pub not_after: u64,
    /// CA fingerprint.
    pub ca_fingerprint: String,
    /// Trust snapshot version stored (0: none received).
    pub snapshot_version: u64,
}

/// Checks an issued certificate and stores it with the CA and snapshot.
fn store_issued(
    paths: &Paths,
    issued: &IssuedCert,
    expect: &NodeId,
    public_key: &[u8],
    pin: [u8; 32],
    authority: SocketAddr,
) -> Result<Enrolled, ClientError> {
    if sha256(&issued.ca_certificate) != pin {
        return Err(ClientError::Protocol(
            "the CA certificate returned is not the pinned one".into(),
        ));
    }
    let cert = pki::parse_node_cert(&issued.certificate)?;
    if cert.node != *expect || cert.public_key != public_key {
        return Err(ClientError::Protocol(format!(
            "the certificate returned is for {} or another key, not for {} and this node's key",
            cert.node.as_str(),
            expect.as_str()
        )));
    }
    let ca_path = paths.ca_cert();
    write_atomic(
        &ca_path,
        pki::der_to_pem(&issued.ca_certificate).as_bytes(),
        0o644,
    )
    .map_err(local(&ca_path))?;
    let cert_path = paths.cert();
    write_atomic(
        &cert_path,
        pki::der_to_pem(&issued.certificate).as_bytes(),
        0o644,
    )
    .map_err(local(&cert_path))?;
    let mut store = NodeStore::open(&paths.db())?;
    let org = expect.org_str().to_owned();
    store.set_enrollment(&Enrollment {
        node_id: expect.as_str().to_owned(),
        org: org.clone(),
        authority: authority.to_string(),
    })?;
    let mut snapshot_version = store.snapshot_version(&org)?.unwrap_or(0);
    if !issued.snapshot.is_empty() {
        match store.apply_snapshot(&org, &issued.ca_certificate, &issued.snapshot, now_secs()) {
            Ok(s) => snapshot_version = s.version,
            Err(NodeStoreError::Snapshot(trellis_policy::SnapshotError::Rollback { .. })) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Enrolled {
        node_id: cert.node.as_str().to_owned(),
        serial: hex(&cert.serial),
        not_after: cert.not_after,
        ca_fingerprint: pki::fingerprint(&issued.ca_certificate),
        snapshot_version,
    })
}

/// Options of a join.
pub struct JoinOptions<'a> {
    /// Node data dir.
    pub data_dir: &'a Path,
    /// Node name.
    pub name: &'a str,
    /// The join string.
    pub join: &'a JoinString,
    /// Roles asked for.
    pub roles: Vec<String>,
    /// How long to wait for an operator.
    pub timeout: Duration,
}

/// Joins an org: makes the key locally, sends the token, CSR and facts, waits for the
/// decision; `on_pending(request_id, node_id)` is called when an operator must approve.
pub async fn join(
    options: JoinOptions<'_>,
    on_pending: impl FnOnce(&str, &str),
) -> Result<Enrolled, ClientError> {
    let paths = Paths::new(options.data_dir);
    ensure_role(&paths.dir, Role::Node).map_err(ClientError::WrongDir)?;
    if let Some(ca) = std::fs::read(paths.ca_cert())
        .ok()
        .and_then(|pem| pki::pem_to_der(&pem).ok())
    {
        if sha256(&ca) != options.join.ca_sha256 {
            return Err(ClientError::WrongDir(format!(
                "{} holds the certificate of another CA (ca.crt); refusing to overwrite it: \
                 give the node an empty data dir",
                paths.dir.display()
            )));
        }
    }
    private_dir(&paths.dir).map_err(local(&paths.dir))?;
    if paths.cert().exists() {
        return Err(ClientError::AlreadyJoined(paths.dir.display().to_string()));
    }
    let node = NodeId::from_parts(&options.join.org, options.name)
        .map_err(|e| ClientError::Local(format!("bad node name {:?}: {e}", options.name)))?;
    // Reuse the key of an earlier attempt that got no certificate.
    let key_path = paths.key();
    let key = if key_path.exists() {
        pki::load_key(&read_secret(&key_path).map_err(local(&key_path))?)?
    } else {
        let key = pki::generate_key()?;
        write_secret_new(&key_path, key.serialize_pem().as_bytes()).map_err(local(&key_path))?;
        key
    };
    let csr = pki::csr(&key)?;
    let addr = options.join.addr;
    let pin = options.join.ca_sha256;
    let mut session = connect(addr, &options.join.org, pin, None).await?;
    session
        .send(&Request::Join(JoinRequest {
            token: options.join.token.clone(),
            name: options.name.to_owned(),
            csr,
            facts: facts(),
            capabilities: CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
            roles: options.roles,
        }))
        .await?;
    let exchange = async {
        let mut on_pending = Some(on_pending);
        loop {
            match session.receive().await? {
                Response::Pending {
                    request_id,
                    node_id,
                } => {
                    if let Some(f) = on_pending.take() {
                        f(&request_id, &node_id);
                    }
                }
                Response::Issued(issued) => return Ok(issued),
                other => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected answer {other:?}"
                    )))
                }
            }
        }
    };
    let issued = match tokio::time::timeout(options.timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout(options.timeout.as_secs())),
    };
    session.close().await;
    store_issued(&paths, &issued?, &node, key.public_key_raw(), pin, addr)
}

/// The node's identity as stored: enrollment, CA, certificate chain, key.
struct Identity {
    enrollment: Enrollment,
    org: OrgId,
    node: NodeId,
    addr: SocketAddr,
    ca_der: Vec<u8>,
    cert: pki::NodeCert,
    cert_der: Vec<u8>,
    key: rcgen::KeyPair,
}

fn identity(paths: &Paths) -> Result<Identity, ClientError> {
    let enrollment = NodeStore::open(&paths.db())?.enrollment()?;
    let org = OrgId::new(&enrollment.org).map_err(|e| ClientError::Local(e.to_string()))?;
    let node = NodeId::new(&enrollment.node_id).map_err(|e| ClientError::Local(e.to_string()))?;
    let addr = enrollment.authority.parse().map_err(|_| {
        ClientError::Local(format!(
            "stored authority address {:?} is invalid",
            enrollment.authority
        ))
    })?;
    let read = |p: &Path| std::fs::read(p).map_err(local(p));
    let ca_der = pki::pem_to_der(&read(&paths.ca_cert())?)?;
    let cert_der = pki::pem_to_der(&read(&paths.cert())?)?;
    let key_path = paths.key();
    let key = pki::load_key(&read_secret(&key_path).map_err(local(&key_path))?)?;
    let cert = pki::parse_node_cert(&cert_der)?;
    Ok(Identity {
        enrollment,
        org,
        node,
        addr,
        ca_der,
        cert,
        cert_der,
        key,
    })
}

async fn authenticated(id: &Identity) -> Result<Session, ClientError> {
    let now = now_secs();
    if id.cert.not_after <= now {
        return Err(ClientError::Local(format!(
            "the node certificate expired at {}; join again with a new token",
            crate::util::time::rfc3339(id.cert.not_after)
        )));
    }
    let chain = vec![CertificateDer::from(id.cert_der.clone())];
    let key = crate::tls::private_key(id.key.serialize_der());
    connect(id.addr, &id.org, sha256(&id.ca_der), Some((chain, key))).await
}

/// Renews the node certificate (same key) and stores the newest trust snapshot.
pub async fn renew(data_dir: &Path) -> Result<Enrolled, ClientError> {
    let paths = Paths::new(data_dir);
    let id = identity(&paths)?;
    let mut session = authenticated(&id).await?;
    session
        .send(&Request::Renew {
            csr: pki::csr(&id.key)?,
        })
        .await?;
    let response = session.receive().await;
    session.close().await;
    match response? {
        Response::Issued(issued) => store_issued(
            &paths,
            &issued,
            &id.node,
            id.key.public_key_raw(),
            sha256(&id.ca_der),
            id.addr,
        ),
        other => Err(ClientError::Protocol(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

/// Opens an authenticated session and asks for the snapshots newer than the stored
/// one, with `request` (`Snapshot` or `Subscribe`) built from the stored version.
async fn ask_snapshots(
    data_dir: &Path,
    request: impl FnOnce(u64) -> Request,
) -> Result<Session, ClientError> {
    let paths = Paths::new(data_dir);
    let id = identity(&paths)?;
    let have = NodeStore::open(&paths.db())?.snapshot_version(&id.enrollment.org)?;
    let mut session = authenticated(&id).await?;
    session.send(&request(have.unwrap_or(0))).await?;
    Ok(session)
}

/// Fetches the authority's newest trust snapshot without applying it (`None`: nothing
/// newer than what `node.db` holds). The node daemon applies it in its routing loop.
pub async fn fetch_snapshot_bytes(data_dir: &Path) -> Result<Option<Vec<u8>>, ClientError> {
    let mut session =
        ask_snapshots(data_dir, |have_version| Request::Snapshot { have_version }).await?;
    let response = session.receive().await;
    session.close().await;
    match response? {
        Response::Snapshot(bytes) if bytes.is_empty() => Ok(None),
        Response::Snapshot(bytes) => Ok(Some(bytes)),
        other => Err(ClientError::Protocol(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

/// Subscribes to the authority's trust snapshots: `on_snapshot` gets every envelope newer
/// than the stored one as soon as the authority publishes it (unverified: the caller
/// verifies and stores it). Runs until the stream or the connection ends; then `Err` says
/// why. With a `listing`, the authority lists the node in the org's node directory.
pub async fn subscribe_snapshots(
    data_dir: &Path,
    listing: Option<super::Listing>,
    mut on_snapshot: impl FnMut(Vec<u8>),
) -> Result<(), ClientError> {
    let mut session = ask_snapshots(data_dir, |have_version| Request::Subscribe {
        have_version,
        listing,
    })
    .await?;
    loop {
        match session.receive().await? {
            Response::Snapshot(bytes) if bytes.is_empty() => {}
            Response::Snapshot(bytes) => on_snapshot(bytes),
            other => {
                return Err(ClientError::Protocol(format!(
                    "unexpected answer {other:?}"
                )))
            }
        }
    }
}

/// Fetches the authority's newest trust snapshot and applies it; returns the stored version.
pub async fn fetch_snapshot(data_dir: &Path) -> Result<u64, ClientError> {
    let paths = Paths::new(data_dir);
    let id = identity(&paths)?;
    let mut store = NodeStore::open(&paths.db())?;
    let have = store.snapshot_version(&id.enrollment.org)?;
    let mut session = authenticated(&id).await?;
    session
        .send(&Request::Snapshot {
            have_version: have.unwrap_or(0),
        })
        .await?;
    let response = session.receive().await;
    session.close().await;
    match response? {
        Response::Snapshot(bytes) if bytes.is_empty() => Ok(have.unwrap_or(0)),
        Response::Snapshot(bytes) => Ok(store
            .apply_snapshot(&id.enrollment.org, &id.ca_der, &bytes, now_secs())?
            .version),
        other => Err(ClientError::Protocol(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_wait_run_out_on_either_side_exits_with_the_timeout_code() {
        let authority_side = ClientError::Refused {
            code: ErrorCode::TimedOut,
            message: "nobody approved join request j-1 within 900 s".into(),
        };
        assert_eq!(authority_side.exit_code(), 4);
        assert_eq!(ClientError::Timeout(600).exit_code(), 4);
        let rejected = ClientError::Refused {
            code: ErrorCode::Rejected,
            message: "no".into(),
        };
        assert_eq!(rejected.exit_code(), 1);
    }
}
