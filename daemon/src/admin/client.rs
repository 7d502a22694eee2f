//! A blocking admin client: connect to `admin.sock`, send one request, read one answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ApiError, Request, MAX_LOCAL_REQUEST_BYTES};

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
    call_as(path, request)
}

/// [`call`], decoding the result as `T` straight from the answer's text.
pub fn call_as<T: serde::de::DeserializeOwned>(
    path: &Path,
    request: &Request,
) -> Result<T, ClientError> {
    decode(exchange(path, request)?.as_bytes())
}

/// Sends `request` and reads the answer line.
fn exchange(path: &Path, request: &Request) -> Result<String, ClientError> {
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
    Ok(answer)
}

/// A response line as a client reads it: the result borrowed from the line, not copied.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer<'a> {
    #[serde(borrow)]
    Ok(&'a RawValue),
    Error(ApiError),
}

/// Decodes a response line (local or remote): its result as `T` straight from the text,
/// or the daemon's error.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(line: &[u8]) -> Result<T, ClientError> {
    let bad = |e: serde_json::Error| ClientError::Protocol(format!("bad answer: {e}"));
    match serde_json::from_slice::<Answer<'_>>(line).map_err(bad)? {
        Answer::Ok(raw) => serde_json::from_str(raw.get()).map_err(bad),
        Answer::Error(e) => Err(ClientError::Api(e)),
    }
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{ErrorKind, Response};

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Record {
        zone: String,
        at: u64,
        hops: Vec<String>,
        next: Option<String>,
    }

    fn record() -> Record {
        Record {
            zone: "eu \"west\"\n".into(),
            at: u64::MAX,
            hops: vec!["acme/a".into(), "acme/é".into()],
            next: None,
        }
    }

    #[test]
    fn an_encoded_answer_is_the_line_a_value_tree_gave() {
        let raw = serde_json::value::to_raw_value(&record()).expect("encodes");
        let line = serde_json::to_vec(&Response::Ok(raw)).expect("encodes");
        let tree = serde_json::to_vec(&serde_json::json!({ "ok": record() })).expect("encodes");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&line).expect("json"),
            serde_json::from_slice::<serde_json::Value>(&tree).expect("json")
        );
        let error = Response::Error(ApiError::new(ErrorKind::NotFound, "no peer acme/x"));
        assert_eq!(
            serde_json::to_string(&error).expect("encodes"),
            r#"{"error":{"kind":"not_found","message":"no peer acme/x"}}"#
        );
    }

    #[test]
    fn an_answer_decodes_as_a_record_a_value_or_the_daemons_error() {
        let line = format!(
            "{}\n",
            serde_json::to_string(&serde_json::json!({ "ok": record() })).expect("encodes")
        );
        assert_eq!(
            decode::<Record>(line.as_bytes()).expect("decodes"),
            record()
        );
        let value = decode::<serde_json::Value>(line.as_bytes()).expect("decodes");
        assert_eq!(value["hops"][1], "acme/é");
        let owned: Response = serde_json::from_str(&line).expect("a Response reads from text");
        assert!(matches!(owned, Response::Ok(raw) if raw.get().starts_with("{\"zone\"")));

        let refused = br#"{"error":{"kind":"forbidden","message":"view_routes"}}"#;
        match decode::<serde_json::Value>(refused) {
            Err(ClientError::Api(e)) => assert_eq!(e.kind, ErrorKind::Forbidden),
            other => panic!("{other:?}"),
        }
        for bad in [
            &b"{\"ok\":1"[..],
            b"{\"ok\":1} trailing",
            b"{\"ok\":\"\xff\"}",
            b"{\"maybe\":1}",
            b"",
        ] {
            assert!(
                matches!(decode::<serde_json::Value>(bad), Err(ClientError::Protocol(m)) if m.starts_with("bad answer")),
                "{bad:?}"
            );
        }
        assert!(matches!(
            decode::<Record>(br#"{"ok":{"zone":1}}"#),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn the_socket_answers_one_line_a_request() {
        let dir = std::env::temp_dir().join(format!("trellis-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let path = dir.join("admin.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(async { crate::admin::server::bind(&path) })
            .expect("binds");
        let server = runtime.spawn(crate::admin::server::serve(
            listener,
            |request| async move {
                match request {
                    Request::Status => serde_json::value::to_raw_value(&record())
                        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string())),
                    _ => Err(ApiError::new(ErrorKind::NotFound, "nothing here")),
                }
            },
        ));
        assert_eq!(
            call_as::<Record>(&path, &Request::Status).expect("answers"),
            record()
        );
        assert_eq!(
            call(&path, &Request::Status).expect("answers")["at"],
            u64::MAX
        );
        match call(&path, &Request::TokensList) {
            Err(ClientError::Api(e)) => assert_eq!(e.message, "nothing here"),
            other => panic!("{other:?}"),
        }
        let mut stream = UnixStream::connect(&path).expect("connects");
        stream.write_all(b"{\"op\":\"status\"}\n").expect("sends");
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).expect("reads");
        assert_eq!(
            line,
            format!(
                "{{\"ok\":{}}}\n",
                serde_json::to_string(&record()).expect("encodes")
            )
        );
        server.abort();
        drop(runtime);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
