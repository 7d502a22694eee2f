//! The remote admin server shared by nodes and authorities (docs/adr/0017): QUIC with
//! mutual TLS, one request per bidirectional stream. The operator sends
//! `{"token": JWT, "request": REQUEST}` and finishes; the daemon answers with the admin
//! socket's response line. Each daemon supplies the [`Handler`] that verifies the token
//! against its keys and answers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::task::JoinSet;

use super::{ApiError, ErrorKind, Request, Response};

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

/// An answer in the making: the result encoded as JSON text.
pub type Answer = Pin<Box<dyn Future<Output = Result<Box<RawValue>, ApiError>> + Send>>;

/// Verifies the token of a request against the TLS client certificate (DER) it came with,
/// and answers it.
pub type Handler = Arc<dyn Fn(RemoteRequest, Vec<u8>) -> Answer + Send + Sync>;

/// Serves `endpoint` until aborted.
pub async fn serve(endpoint: quinn::Endpoint, handler: Handler) {
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
        let handler = handler.clone();
        connections.spawn(async move {
            match incoming.await {
                Ok(conn) => connection(conn, &handler).await,
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

async fn connection(conn: quinn::Connection, handler: &Handler) {
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
                Ok(r) => match handler(r, cert.clone()).await {
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

/// Verifies `token` for `org` with `keys` and `revoked`, bound to `cert`: the operator
/// as Cedar's principal, or a `Forbidden` error that says why.
pub fn operator(
    token: &str,
    org: &str,
    keys: &[trellis_policy::jwt::TokenKey],
    revoked: &[String],
    cert: &[u8],
) -> Result<trellis_policy::cedar::Subject, ApiError> {
    let expect = trellis_policy::jwt::Expect {
        org,
        keys,
        revoked,
        client_cert: cert,
        now: crate::util::time::now_secs(),
    };
    let claims = trellis_policy::jwt::verify(token, &expect).map_err(|e| {
        tracing::info!(reason = %e, "remote admin token refused");
        ApiError::new(ErrorKind::Forbidden, format!("operator token refused: {e}"))
    })?;
    Ok(trellis_policy::cedar::Subject::Operator {
        name: claims.sub,
        role: claims.role,
        org: org.to_owned(),
    })
}
