//! The join string an operator hands to a new node:
//! `trellis-join:ORG@HOST:PORT/sha256:<CA fingerprint hex>/<token id>.<secret>`.
//!
//! It carries everything the first contact needs: where the authority listens, which CA it
//! must prove it holds (pinned, as `kubeadm join --discovery-token-ca-cert-hash`), and the
//! token. It is a secret until the token is spent or expires, so besides the command line
//! (visible to every local user in `/proc/PID/cmdline`) a node takes it from stdin (`-`), a
//! file or the `TRELLIS_JOIN_STRING` variable ([`read_source`]).

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;

use trellis_routing::OrgId;

use crate::util::unhex;

const PREFIX: &str = "trellis-join:";

/// The environment variable a node reads its join string from.
pub const ENV: &str = "TRELLIS_JOIN_STRING";
/// Most bytes read from stdin or a file for a join string.
const MAX_SOURCE_BYTES: u64 = 4096;

/// Reads the join string text from the first source given: the argument (`-` reads
/// `stdin`), else the file, else the environment value. The text is not parsed here;
/// errors are one line and never contain the text.
pub fn read_source(
    arg: Option<&str>,
    file: Option<&Path>,
    env: Option<String>,
    stdin: impl Read,
) -> Result<String, String> {
    let bounded = |reader: &mut dyn Read, what: &str| -> Result<String, String> {
        let mut text = String::new();
        reader
            .take(MAX_SOURCE_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the join string from {what}: {e}"))?;
        Ok(text.trim().to_owned())
    };
    let text = match (arg, file, env) {
        (Some("-"), _, _) => bounded(&mut { stdin }, "stdin")?,
        (Some(text), _, _) => text.to_owned(),
        (None, Some(path), _) => {
            let mut f = std::fs::File::open(path)
                .map_err(|e| format!("--join-string-file {}: {e}", path.display()))?;
            bounded(&mut f, &path.display().to_string())?
        }
        (None, None, Some(text)) => text.trim().to_owned(),
        (None, None, None) => {
            return Err(format!(
                "no join string: give it as the argument, `-` to read stdin, \
                 --join-string-file FILE or {ENV}"
            ))
        }
    };
    if text.is_empty() {
        return Err("the join string is empty".into());
    }
    Ok(text)
}

/// A parsed join string.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinString {
    /// The org to join.
    pub org: OrgId,
    /// The authority's enrollment address.
    pub addr: SocketAddr,
    /// SHA-256 of the org CA certificate (DER).
    pub ca_sha256: [u8; 32],
    /// The token, `ID.SECRET`.
    pub token: String,
}

impl fmt::Debug for JoinString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("JoinString")
            .field("org", &self.org.as_str())
            .field("addr", &self.addr)
            .field("token_id", &self.token.split('.').next())
            .finish_non_exhaustive()
    }
}

/// Why a join string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed join string: {0} (expected trellis-join:ORG@HOST:PORT/sha256:HEX/ID.SECRET)")]
pub struct JoinStringError(pub String);

impl JoinString {
    /// Formats the join string (contains the secret).
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}{}@{}/sha256:{}/{}",
            self.org.as_str(),
            self.addr,
            crate::util::hex(&self.ca_sha256),
            self.token
        )
    }

    /// Parses and validates a join string.
    pub fn parse(text: &str) -> Result<Self, JoinStringError> {
        let err = |why: &str| JoinStringError(why.to_owned());
        let rest = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| err("it does not start with trellis-join:"))?;
        let (org, rest) = rest.split_once('@').ok_or_else(|| err("no ORG@"))?;
        let org = OrgId::new(org).map_err(|e| JoinStringError(e.to_string()))?;
        let mut parts = rest.splitn(3, '/');
        let (Some(addr), Some(pin), Some(token)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(err("it needs three parts separated by '/'"));
        };
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| JoinStringError(format!("{addr:?} is not HOST:PORT")))?;
        let pin = pin
            .strip_prefix("sha256:")
            .ok_or_else(|| err("the CA pin must start with sha256:"))?;
        let ca_sha256: [u8; 32] = unhex(pin)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| err("the CA pin must be 64 hex digits"))?;
        let (id, secret) = token
            .split_once('.')
            .ok_or_else(|| err("the token must be ID.SECRET"))?;
        let hex_ok = |s: &str, len: usize| s.len() == len && unhex(s).is_some();
        if !hex_ok(id, crate::authority::tokens::ID_HEX_LEN)
            || !hex_ok(secret, crate::authority::tokens::SECRET_HEX_LEN)
        {
            return Err(err("the token has the wrong shape"));
        }
        Ok(Self {
            org,
            addr,
            ca_sha256,
            token: token.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JoinString {
        JoinString {
            org: OrgId::new("acme").expect("org"),
            addr: "127.0.0.1:7100".parse().expect("addr"),
            ca_sha256: [0xab; 32],
            token: format!("{}.{}", "1".repeat(16), "2".repeat(64)),
        }
    }

    #[test]
    fn round_trips_and_hides_the_secret_in_debug() {
        let js = sample();
        assert_eq!(JoinString::parse(&js.encode()), Ok(js.clone()));
        assert!(!format!("{js:?}").contains(&"2".repeat(64)));
    }

    #[test]
    fn the_join_string_comes_from_the_argument_stdin_a_file_or_the_environment() {
        let js = sample().encode();
        let none: &[u8] = b"";
        fn read(
            arg: Option<&str>,
            file: Option<&Path>,
            env: Option<&str>,
            stdin: &[u8],
        ) -> Result<String, String> {
            read_source(arg, file, env.map(str::to_owned), stdin)
        }
        assert_eq!(
            read(Some(js.as_str()), None, Some("x"), none),
            Ok(js.clone())
        );
        let piped = format!("{js}\n");
        assert_eq!(
            read(Some("-"), None, None, piped.as_bytes()),
            Ok(js.clone())
        );
        assert_eq!(read(None, None, Some(piped.as_str()), none), Ok(js.clone()));
        let dir = std::env::temp_dir().join(format!("trellis-js-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("join");
        std::fs::write(&file, &piped).expect("write");
        assert_eq!(read(None, Some(&file), Some("x"), none), Ok(js.clone()));
        let missing = read(None, Some(&dir.join("missing")), None, none);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(missing.is_err_and(|e| e.contains("--join-string-file")));
        let nothing = read(None, None, None, none).expect_err("no source");
        assert!(
            nothing.contains(ENV) && !nothing.contains('\n'),
            "{nothing}"
        );
        assert!(read(Some("-"), None, None, b"\n").is_err(), "empty stdin");
    }

    #[test]
    fn malformed_strings_say_why() {
        let good = sample().encode();
        for bad in [
            "",
            "hello",
            &good.replace("trellis-join:", "trellis:"),
            &good.replace("acme@", "ACME@"),
            &good.replace("127.0.0.1:7100", "localhost"),
            &good.replace("sha256:", "md5:"),
            &good.replace(&"ab".repeat(32), "ab"),
            &good.replace('.', ""),
            &good[..good.len() - 1],
        ] {
            assert!(JoinString::parse(bad).is_err(), "{bad}");
        }
    }
}
