//! Runtime control of the links from another process.
//!
//! A Unix socket (mode 0600) speaks JSON lines: one request line, one
//! response line, as many as the client likes per connection.
//!
//! ```json
//! {"op":"set","a":"acme/n0","b":"acme/n1","impairment":{"delay_ms":50,"jitter_ms":5,"loss":0.05}}
//! {"op":"update","a":"acme/n0","b":"acme/n1","impairment":{"loss":0.01}}
//! {"op":"cut","a":"acme/n0","b":"acme/n1"}
//! {"op":"heal","a":"acme/n0","b":"acme/n1"}
//! {"op":"flap","a":"acme/n0","b":"acme/n1","period_ms":2000}
//! {"op":"list"}
//! ```
//!
//! A response is `{"ok": <value>}` or `{"error": "<one line>"}`. `set`,
//! `update`, `cut`, `heal` and `flap` answer with the link's entry after the
//! change; `list` with every entry, `{"a","b","name","impairment","cut","stats"}`.
//! `flap` without `period_ms` (or with 0) stops flapping; a flap that cannot
//! be started is an error. Link ends are order-insensitive. In `set`, missing
//! impairment fields default to zero / none; in `update`, they keep their
//! current values (`null` clears `burst` or `rate_kbps`).
//!
//! The parse helpers turn CLI words (`50ms`, `5%`, `1mbit`) into the values
//! of an [`Impairment`].

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

use super::{flap, lock, Hub, Impairment, Link};

/// Longest request line accepted.
const MAX_LINE: u64 = 64 * 1024;
/// Connections served at once; further ones are closed on accept.
const MAX_CONNECTIONS: usize = 16;
/// How long the client waits for the server.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Set {
        a: String,
        b: String,
        impairment: Impairment,
    },
    Update {
        a: String,
        b: String,
        impairment: serde_json::Map<String, Value>,
    },
    Cut {
        a: String,
        b: String,
    },
    Heal {
        a: String,
        b: String,
    },
    Flap {
        a: String,
        b: String,
        period_ms: Option<u64>,
    },
    List,
}

/// Serves the control protocol on a Unix socket at `path` until the returned
/// task is aborted. A stale socket file at `path` is replaced; a live one (a
/// server answers) or a file that is not a socket is an error. Must be called
/// within a tokio runtime.
pub async fn serve(path: &Path, hub: Arc<Mutex<Hub>>) -> io::Result<JoinHandle<()>> {
    clear_stale(path)?;
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(accept(listener, hub)))
}

fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("a testbed is already serving {}", path.display()),
        ));
    }
    fs::remove_file(path)
}

/// Accepts connections; aborting this task aborts the connections too.
async fn accept(listener: UnixListener, hub: Arc<Mutex<Hub>>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, _)) => {
                if connections.len() < MAX_CONNECTIONS {
                    connections.spawn(connection(stream, hub.clone()));
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn connection(stream: UnixStream, hub: Arc<Mutex<Hub>>) {
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let Ok(n) = (&mut read).take(MAX_LINE).read_line(&mut line).await else {
            return;
        };
        if n == 0 {
            return;
        }
        let too_long = !line.ends_with('\n') && n as u64 == MAX_LINE;
        if line.trim().is_empty() && !too_long {
            continue;
        }
        let response = if too_long {
            json!({ "error": format!("request longer than {MAX_LINE} bytes") })
        } else {
            handle_request(&hub, line.trim())
        };
        let mut out = response.to_string();
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() || too_long {
            return;
        }
    }
}

/// Answers one request line against `hub`: `{"ok": …}` or `{"error": …}`.
/// Starting a flap needs a tokio runtime (see [`flap`]).
pub fn handle_request(hub: &Mutex<Hub>, line: &str) -> Value {
    match respond(hub, line) {
        Ok(value) => json!({ "ok": value }),
        Err(e) => json!({ "error": one_line(&e) }),
    }
}

fn respond(hub: &Mutex<Hub>, line: &str) -> Result<Value, String> {
    let request: Request = serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))?;
    let find = |a: &str, b: &str| {
        lock(hub)
            .get(a, b)
            .map(|link| (a.to_owned(), b.to_owned(), link))
            .ok_or_else(|| format!("no link between {a} and {b}"))
    };
    let (a, b, link) = match request {
        Request::List => {
            let links = lock(hub).links();
            return Ok(links.iter().map(|(a, b, link)| entry(a, b, link)).collect());
        }
        Request::Set { a, b, impairment } => {
            impairment.validate()?;
            let found = find(&a, &b)?;
            found.2.set(impairment);
            found
        }
        Request::Update { a, b, impairment } => {
            let found = find(&a, &b)?;
            let merged = merge(&found.2.impairment(), impairment)?;
            merged.validate()?;
            found.2.set(merged);
            found
        }
        Request::Cut { a, b } => {
            let found = find(&a, &b)?;
            found.2.cut();
            found
        }
        Request::Heal { a, b } => {
            let found = find(&a, &b)?;
            found.2.heal();
            found
        }
        Request::Flap { a, b, period_ms } => {
            let found = find(&a, &b)?;
            let period = period_ms.filter(|ms| *ms > 0).map(Duration::from_millis);
            flap(&found.2, period)?;
            found
        }
    };
    Ok(entry(&a, &b, &link))
}

/// `current` with the fields of `changes` replaced; unknown fields are refused.
fn merge(
    current: &Impairment,
    changes: serde_json::Map<String, Value>,
) -> Result<Impairment, String> {
    let mut value = serde_json::to_value(current).map_err(|e| e.to_string())?;
    let Value::Object(fields) = &mut value else {
        return Err("impairment is not an object".into());
    };
    for (name, change) in changes {
        if !fields.contains_key(&name) {
            return Err(format!("unknown impairment field {name:?}"));
        }
        fields.insert(name, change);
    }
    serde_json::from_value(value).map_err(|e| format!("bad impairment: {e}"))
}

/// The description of one link in responses.
fn entry(a: &str, b: &str, link: &Link) -> Value {
    json!({
        "a": a,
        "b": b,
        "name": link.name(),
        "impairment": serde_json::to_value(link.impairment()).unwrap_or(Value::Null),
        "cut": link.is_cut(),
        "stats": serde_json::to_value(link.stats()).unwrap_or(Value::Null),
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Sends one request to the control socket at `path` and returns the `ok`
/// value, or the server's `error` (or a connection problem) as a message.
/// Blocking, with a 5 s timeout on each read and write.
pub fn request(path: &Path, req: &Value) -> Result<Value, String> {
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        format!(
            "testbed is not running (cannot connect to {}: {e})",
            path.display()
        )
    })?;
    let io_err = |e: io::Error| format!("control socket {}: {e}", path.display());
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(io_err)?;
    stream
        .set_write_timeout(Some(CLIENT_TIMEOUT))
        .map_err(io_err)?;
    let mut line = req.to_string();
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io_err)?;
    let mut reply = String::new();
    BufReader::new(io::Read::take(&stream, MAX_LINE * 16))
        .read_line(&mut reply)
        .map_err(io_err)?;
    if reply.is_empty() {
        return Err(format!(
            "control socket {} closed without answering",
            path.display()
        ));
    }
    let reply: Value =
        serde_json::from_str(&reply).map_err(|e| format!("bad response from the testbed: {e}"))?;
    if let Some(error) = reply.get("error") {
        return Err(error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned));
    }
    reply
        .get("ok")
        .cloned()
        .ok_or_else(|| format!("bad response from the testbed: {reply}"))
}

/// Parses a delay: `50ms`, `1.5s`, `200us`, or `0`; returns milliseconds.
pub fn parse_delay(text: &str) -> Result<f64, String> {
    let t = text.trim().to_ascii_lowercase();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (t.as_str(), 0.0)
    };
    let value = number_in(number, text)?;
    if scale == 0.0 {
        return if value == 0.0 {
            Ok(0.0)
        } else {
            Err(format!("delay {text:?} needs a unit: ms, s or us"))
        };
    }
    Ok(value * scale)
}

/// Parses a probability: `5%` or `0.05`; returns a value in `0..=1`.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let value = match t.strip_suffix('%') {
        Some(n) => number_in(n, text)? / 100.0,
        None => number_in(t, text)?,
    };
    if value > 1.0 {
        return Err(format!(
            "{text:?} is not between 0% and 100% (write 5% or 0.05)"
        ));
    }
    Ok(value)
}

/// Parses a rate: `500kbit`, `1mbit`, `1gbit`, or the same with `kbps`,
/// `mbps`, `gbps`, which here also mean bits per second (as in the field
/// name `rate_kbps`; unlike tc, where `mbps` means megabytes). Returns kbit/s.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let units = [
        ("kbit", 1.0),
        ("mbit", 1e3),
        ("gbit", 1e6),
        ("kbps", 1.0),
        ("mbps", 1e3),
        ("gbps", 1e6),
    ];
    let Some((number, scale)) = units
        .iter()
        .find_map(|(unit, scale)| t.strip_suffix(unit).map(|n| (n, *scale)))
    else {
        return Err(format!("rate {text:?} needs a unit: kbit, mbit or gbit"));
    };
    let kbps = (number_in(number, text)? * scale).round();
    if !(1.0..=1e12).contains(&kbps) {
        return Err(format!(
            "rate {text:?} is out of range (1kbit to 1000000gbit)"
        ));
    }
    Ok(kbps as u64)
}

/// A finite non-negative number, or an error naming the whole `text`.
fn number_in(number: &str, text: &str) -> Result<f64, String> {
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a non-negative number with a unit")),
    }
}
