//! A blocking admin client: connect to `admin.sock`, send one request, read one answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{ApiError, Request, Response, MAX_LOCAL_REQUEST_BYTES};

/// Why a call failed before the daemon could answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("the daemon is not running (cannot connect to {path}: {reason})")]
    NotRunning {
        /// Socket path.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The connection broke or the answer is not valid.
    #[error("admin API: {0}")]
    Protocol(String),
    /// The daemon answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// Sends `request` to the socket at `path` and returns the `ok` value.
pub fn call(path: &Path, request: &Request) -> Result<serde_json::Value, ClientError> {
    let stream = UnixStream::connect(path).map_err(|e| ClientError::NotRunning {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let protocol = |e: std::io::Error| ClientError::Protocol(e.to_string());
    stream
        // Bounds a hang only: a bulk load of a million routes answers once committed.
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(protocol)?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(protocol)?;
    // A daemon's own answers: `routes list` of a large table is tens of MiB.
    let mut reader = BufReader::new(&stream).take(MAX_LOCAL_REQUEST_BYTES as u64);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(protocol)?;
    if answer.is_empty() {
        return Err(ClientError::Protocol(
            "the daemon closed the connection".into(),
        ));
    }
    match serde_json::from_str::<Response>(&answer) {
        Ok(Response::Ok(value)) => Ok(value),
        Ok(Response::Error(e)) => Err(ClientError::Api(e)),
        Err(e) => Err(ClientError::Protocol(format!("bad answer: {e}"))),
    }
}

/// [`call`], decoding the result as `T`.
pub fn call_as<T: serde::de::DeserializeOwned>(
    path: &Path,
    request: &Request,
) -> Result<T, ClientError> {
    let value = call(path, request)?;
    serde_json::from_value(value).map_err(|e| ClientError::Protocol(format!("bad answer: {e}")))
}

use std::io::Read as _;
