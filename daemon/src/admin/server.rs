//! The admin socket server, shared by the authority and the node: bind with mode 0600,
//! at most [`MAX_CONNECTIONS`] connections, one JSON request line → one response line.
//! Each daemon supplies only its handler, which answers with its result already encoded.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{ApiError, ErrorKind, Request, Response, MAX_LOCAL_REQUEST_BYTES};

/// Most concurrent admin connections.
pub const MAX_CONNECTIONS: usize = 32;

/// Binds `path` with mode 0600, replacing a stale socket file; refuses a socket another
/// daemon still serves.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another daemon is serving this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves `listener` until aborted, answering each request with `handle`.
pub async fn serve<H, F>(listener: UnixListener, handle: H)
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Box<RawValue>, ApiError>> + Send,
{
    let handle = Arc::new(handle);
    // Owned here: when the server is aborted, every open admin connection ends with it
    // (a client that keeps its connection open must not keep the daemon alive).
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            let _ = connections.join_next().await;
            continue;
        }
        match listener.accept().await {
            Ok((stream, _)) => {
                let handle = handle.clone();
                connections.spawn(async move {
                    connection(stream, handle.as_ref()).await;
                });
            }
            Err(e) => tracing::warn!(error = %e, "admin accept failed"),
        }
    }
}

async fn connection<H, F>(stream: UnixStream, handle: &H)
where
    H: Fn(Request) -> F,
    F: Future<Output = Result<Box<RawValue>, ApiError>>,
{
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_LOCAL_REQUEST_BYTES as u64 * 2)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let response = if line.len() > MAX_LOCAL_REQUEST_BYTES {
            Response::Error(ApiError::new(
                ErrorKind::BadRequest,
                "request line too long",
            ))
        } else {
            match serde_json::from_str::<Request>(&line) {
                Ok(request) => match handle(request).await {
                    Ok(value) => Response::Ok(value),
                    Err(e) => Response::Error(e),
                },
                Err(e) => Response::Error(ApiError::new(
                    ErrorKind::BadRequest,
                    format!("bad request: {e}"),
                )),
            }
        };
        // Written off the runtime's workers: an answer can be a whole table (the handler
        // encoded it; this copies it into the line).
        let encoded = tokio::task::spawn_blocking(move || serde_json::to_vec(&response)).await;
        let mut out = match encoded {
            Ok(Ok(out)) => out,
            _ => b"{\"error\":{\"kind\":\"internal\",\"message\":\"encoding failed\"}}".to_vec(),
        };
        out.push(b'\n');
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}
