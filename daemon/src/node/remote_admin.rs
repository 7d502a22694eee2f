//! Remote admin (docs/adr/0017-operator-tokens.md): the node's admin API over QUIC with
//! mutual TLS (`[admin] remote_listen`). Each request is one bidirectional stream: the
//! operator sends `{"token": JWT, "request": REQUEST}` and finishes; the node answers
//! with the same response line as the admin socket.
//!
//! A request is served only when its token verifies against the own org's token keys in
//! the newest trust snapshot (ES384 pinned, `iss`/`aud`, times, revocation) and is bound
//! to the TLS client certificate of this connection. Then Cedar decides with the token's
//! operator and role as principal, exactly as for the socket's local operator.

use std::sync::Arc;

use serde::Deserialize;
use tokio::task::JoinSet;
use trellis_policy::cedar::Subject;
use trellis_policy::jwt::{self, Expect};
use trellis_routing::OrgId;

use super::admin_server::{handle, AdminCtx};
use super::trust::TrustStore;
use crate::admin::{ApiError, ErrorKind, Request, Response};
use crate::util::time::now_secs;

/// Largest request accepted, bytes.
const MAX_REQUEST: usize = 64 * 1024;
/// Most connections served at once.
const MAX_CONNECTIONS: usize = 32;

/// One remote request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteRequest {
    /// The operator token (ES384 JWT).
    pub token: String,
    /// What the socket would be asked.
    pub request: Request,
}

/// What the remote server needs.
pub struct Remote {
    /// The admin handler shared with the socket.
    pub ctx: Arc<AdminCtx>,
    /// The node's trust view (token keys and revocations).
    pub trust: Arc<TrustStore>,
    /// The node's org.
    pub org: OrgId,
}

/// Serves `endpoint` until aborted.
pub async fn serve(endpoint: quinn::Endpoint, remote: Arc<Remote>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            Some(_) = connections.join_next(), if connections.len() >= MAX_CONNECTIONS => continue,
        };
        let Some(incoming) = incoming else { return };
        if connections.len() >= MAX_CONNECTIONS {
            incoming.refuse();
            continue;
        }
        let remote = remote.clone();
        connections.spawn(async move {
            match incoming.await {
                Ok(conn) => connection(conn, &remote).await,
                Err(e) => tracing::info!(error = %e, "remote admin handshake failed"),
            }
        });
    }
}

fn client_cert(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let chain = conn
        .peer_identity()?
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .ok()?;
    chain.first().map(|c| c.as_ref().to_vec())
}

async fn connection(conn: quinn::Connection, remote: &Remote) {
    let Some(cert) = client_cert(&conn) else {
        conn.close(1u32.into(), b"no client certificate");
        return;
    };
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let answer = match recv.read_to_end(MAX_REQUEST).await {
            Err(e) => Response::Error(ApiError::new(
                ErrorKind::BadRequest,
                format!("request not read: {e}"),
            )),
            Ok(bytes) => match serde_json::from_slice::<RemoteRequest>(&bytes) {
                Err(e) => Response::Error(ApiError::new(
                    ErrorKind::BadRequest,
                    format!("malformed request: {e}"),
                )),
                Ok(r) => match serve_one(remote, &cert, r).await {
                    Ok(value) => Response::Ok(value),
                    Err(e) => Response::Error(e),
                },
            },
        };
        let mut line = serde_json::to_vec(&answer).unwrap_or_default();
        line.push(b'\n');
        if send.write_all(&line).await.is_err() {
            return;
        }
        let _ = send.finish();
    }
}

async fn serve_one(
    remote: &Remote,
    cert: &[u8],
    r: RemoteRequest,
) -> Result<serde_json::Value, ApiError> {
    let (keys, revoked) = remote.trust.operator_tokens(&remote.org);
    let expect = Expect {
        org: remote.org.as_str(),
        keys: &keys,
        revoked: &revoked,
        client_cert: cert,
        now: now_secs(),
    };
    let claims = jwt::verify(&r.token, &expect).map_err(|e| {
        remote.ctx.view.count("remote_admin_refused", 1);
        tracing::info!(reason = %e, "remote admin token refused");
        ApiError::new(ErrorKind::Forbidden, format!("operator token refused: {e}"))
    })?;
    let who = Subject::Operator {
        name: claims.sub,
        role: claims.role,
        org: remote.org.as_str().to_owned(),
    };
    handle(&remote.ctx, &who, r.request).await
}
