//! The operator's side of remote admin (docs/adr/0017-operator-tokens.md): one request
//! over QUIC with mutual TLS to a node's `[admin] remote_listen`, carrying the operator
//! token; the answer is the admin socket's response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use trellis_routing::{NodeId, OrgId};

use super::client::ClientError;
use super::Request;
use crate::node::trust::TrustStore;

/// Which daemon answers at the remote address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteDaemon {
    /// A node: its certificate must name this node id.
    Node(NodeId),
    /// An org's authority: its certificate must be `authority.ORG.trellis`.
    Authority(OrgId),
}

/// Where and as whom to call.
pub struct RemoteTarget {
    /// The daemon expected at `addr`.
    pub daemon: RemoteDaemon,
    /// Its remote admin address.
    pub addr: SocketAddr,
    /// The org CA certificate (DER) the node's certificate must chain to.
    pub ca_der: Vec<u8>,
    /// The operator's client certificate (PEM).
    pub cert_pem: Vec<u8>,
    /// Its private key (PEM).
    pub key_pem: Vec<u8>,
    /// The operator token bound to that certificate.
    pub token: String,
}

/// How long one remote call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

fn protocol(e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(e.to_string())
}

/// Sends `request` to `target` and returns the `ok` value.
pub fn call(target: &RemoteTarget, request: &Request) -> Result<serde_json::Value, ClientError> {
    call_as(target, request)
}

/// [`call`], decoding the result as `T` straight from the answer's text.
pub fn call_as<T: serde::de::DeserializeOwned>(
    target: &RemoteTarget,
    request: &Request,
) -> Result<T, ClientError> {
    let answer = exchange(target, request)?;
    super::client::decode(&answer)
}

/// Sends `request` to `target` and reads the answer.
fn exchange(target: &RemoteTarget, request: &Request) -> Result<Vec<u8>, ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(protocol)?;
    runtime.block_on(async {
        tokio::time::timeout(CALL_TIMEOUT, call_async(target, request))
            .await
            .map_err(|_| ClientError::NotRunning {
                path: target.addr.to_string(),
                reason: "no answer within 15 s".into(),
            })?
    })
}

async fn call_async(target: &RemoteTarget, request: &Request) -> Result<Vec<u8>, ClientError> {
    let chain = CertificateDer::pem_slice_iter(&target.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| protocol(format!("operator certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&target.key_pem)
        .map_err(|e| protocol(format!("operator key: {e}")))?;
    let (config, server_name) = match &target.daemon {
        RemoteDaemon::Node(node) => {
            let trust = Arc::new(TrustStore::new());
            trust.trust_ca(&node.org(), target.ca_der.clone());
            let config =
                crate::transport::admin::admin_client_config(chain, key, trust, node.clone())
                    .map_err(protocol)?;
            (config, "admin.trellis".to_owned())
        }
        RemoteDaemon::Authority(org) => {
            let pin: [u8; 32] = crate::util::sha256(&target.ca_der);
            let mismatch = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let config = crate::tls::enroll_client(
                pin,
                mismatch,
                Some((chain, key)),
                crate::transport::admin::ADMIN_ALPN,
            )
            .map_err(protocol)?;
            (config, format!("authority.{}.trellis", org.as_str()))
        }
    };
    let bind: SocketAddr = if target.addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let endpoint = quinn::Endpoint::client(bind).map_err(protocol)?;
    let unreachable = |reason: String| ClientError::NotRunning {
        path: target.addr.to_string(),
        reason,
    };
    let conn = endpoint
        .connect_with(config, target.addr, &server_name)
        .map_err(|e| unreachable(e.to_string()))?
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(protocol)?;
    let body = serde_json::json!({ "token": target.token, "request": request });
    let bytes = serde_json::to_vec(&body).map_err(protocol)?;
    send.write_all(&bytes).await.map_err(protocol)?;
    send.finish().map_err(protocol)?;
    let answer = recv
        .read_to_end(super::MAX_LINE_BYTES * 64)
        .await
        .map_err(protocol)?;
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    Ok(answer)
}
