//! Route files for `trellis routes advertise --file` and `routes withdraw --file`: one
//! route per line, as text (`SERVICE ENDPOINT [PROTOCOL]`) or as a JSON object
//! (`{"service": "...", "endpoint": "IP:PORT", "protocol": "tcp"}`); blank lines and
//! lines starting with `#` are skipped. A withdrawal file needs only the service (the
//! first word, or `service` in JSON), so an advertise file can be withdrawn as it is.
//! A bad line is refused as `FILE:LINE: reason` before anything is sent.

use std::path::Path;

use serde::Deserialize;
use trellis_daemon::admin::BulkRoute;

/// A JSON line: the same keys as the admin API's bulk route.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRoute {
    service: String,
    endpoint: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
}

fn lines(path: &Path) -> Result<Vec<(usize, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().to_owned()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect())
}

fn parse_line(line: &str) -> Result<JsonRoute, String> {
    if line.starts_with('{') {
        return serde_json::from_str(line).map_err(|e| format!("not a route object: {e}"));
    }
    let mut words = line.split_whitespace();
    let service = words.next().unwrap_or_default().to_owned();
    let endpoint = words.next().map(str::to_owned);
    let protocol = words.next().map(str::to_owned);
    if let Some(extra) = words.next() {
        return Err(format!(
            "unexpected {extra:?}: write SERVICE ENDPOINT [PROTOCOL]"
        ));
    }
    Ok(JsonRoute {
        service,
        endpoint,
        protocol,
    })
}

/// The routes of an advertise file.
pub fn advertise_file(path: &Path) -> Result<Vec<BulkRoute>, String> {
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let at = |why: String| format!("{}:{n}: {why}", path.display());
        let r = parse_line(&line).map_err(at)?;
        let endpoint = r
            .endpoint
            .ok_or_else(|| at(format!("{} has no endpoint (IP:PORT)", r.service)))?;
        out.push(BulkRoute {
            service: r.service,
            endpoint,
            protocol: r.protocol.unwrap_or_else(|| "tcp".into()),
        });
    }
    if out.is_empty() {
        return Err(format!("{}: no routes in the file", path.display()));
    }
    Ok(out)
}

/// The services of a withdraw file.
pub fn withdraw_file(path: &Path) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let r = parse_line(&line).map_err(|why| format!("{}:{n}: {why}", path.display()))?;
        out.push(r.service);
    }
    if out.is_empty() {
        return Err(format!("{}: no services in the file", path.display()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("trellis-bulk-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn text_and_json_lines_mix() {
        let path = file(
            "mix",
            "# routes\nbooks.acme 127.0.0.1:8080\n\n{\"service\":\"api.acme\",\"endpoint\":\"127.0.0.1:9090\",\"protocol\":\"grpc\"}\nweb.acme 127.0.0.1:80 http\n",
        );
        let routes = advertise_file(&path).expect("routes");
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[0].protocol, "tcp");
        assert_eq!(routes[1].protocol, "grpc");
        assert_eq!(routes[2].endpoint, "127.0.0.1:80");
        assert_eq!(
            withdraw_file(&path).expect("services"),
            ["books.acme", "api.acme", "web.acme"]
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_bad_line_is_named_with_its_number() {
        for (text, line) in [
            ("a.acme 127.0.0.1:1\nb.acme\n", 2),
            ("a.acme 127.0.0.1:1 tcp extra\n", 1),
            ("\n\n{\"service\":\"a.acme\",\"metric\":3}\n", 3),
        ] {
            let path = file("bad", text);
            let err = advertise_file(&path).unwrap_err();
            assert!(err.contains(&format!(":{line}: ")), "{err}");
            assert!(!err.contains('\n'), "{err}");
            let _ = std::fs::remove_file(path);
        }
    }
}
