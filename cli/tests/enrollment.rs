//! Enrollment end to end with real processes on 127.0.0.1:
//!
//! ```text
//!   trellis (CLI) --admin.sock--> trellisd authority run <--QUIC/TLS-- trellisd node join
//! ```
//!
//! 1. A node joins with a token, waits, is approved, and holds a certificate that
//!    `openssl verify` accepts for TLS client and server use, with its URI SAN.
//! 2. The token cannot be used again; two concurrent joins with a one-use token: one wins.
//! 3. Revoking a node publishes a newer snapshot; the revoked node cannot renew; an older
//!    snapshot replayed to a node is refused.
//! 4. Every refusal is one line and a meaningful exit code.
//! 5. Revoking a token rejects its pending join and refuses later ones; `audit --since`
//!    filters by time; the join string can come from stdin or `TRELLIS_JOIN_STRING`
//!    instead of the command line; the authority's join wait running out exits 4.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{bin, code, join, spawn_join, stderr, trellis, Authority, Scratch};
use trellis_daemon::util::time::rfc3339;

/// `trellisd node join` with the join string kept off the command line: piped to stdin
/// (`-`) or, with `via_env`, in `TRELLIS_JOIN_STRING`.
fn join_secretly(dir: &Path, name: &str, join_string: &str, via_env: bool) -> Output {
    let mut command = Command::new(bin("trellisd"));
    command
        .args(["node", "join", "--name", name, "--data-dir"])
        .arg(dir)
        .env("TRELLIS_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if via_env {
        command.env("TRELLIS_JOIN_STRING", join_string);
    } else {
        command.arg("-");
    }
    let mut child = command.spawn().expect("spawn trellisd node join");
    let mut stdin = child.stdin.take().expect("stdin");
    if !via_env {
        writeln!(stdin, "{join_string}").expect("write the join string");
    }
    drop(stdin);
    child.wait_with_output().expect("join output")
}

fn token_id(join_string: &str) -> &str {
    let token = join_string.rsplit('/').next().expect("token");
    token.split('.').next().expect("id")
}

#[test]
fn a_node_joins_after_approval_and_its_certificate_verifies_with_openssl() {
    let scratch = Scratch::new("enroll-approve");
    let authority = Authority::start(scratch.join("auth"), "acme", &[]);
    let js = authority.token(&["--ttl", "10m", "--roles", "edge"]);
    let node_dir = scratch.join("n1");

    // 1. The node waits until an operator approves.
    let child = spawn_join(&node_dir, "n1", &js, &[]);
    let id = authority.pending_join("acme/n1");
    let pending = authority.json(&["joins", "list"]);
    assert_eq!(pending[0]["facts"]["os"], std::env::consts::OS);
    authority.json(&["joins", "approve", &id]);
    let out = child.wait_with_output().expect("join");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("waiting for approval"));

    let key_mode = std::fs::metadata(node_dir.join("node.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let ca_key_mode = std::fs::metadata(scratch.join("auth/ca.key"))
        .expect("ca key")
        .permissions()
        .mode();
    assert_eq!(ca_key_mode & 0o777, 0o600);
    let nodes = authority.json(&["nodes", "list"]);
    assert_eq!(nodes[0]["node_id"], "acme/n1");
    assert_eq!(nodes[0]["roles"][0], "edge");

    // A third-party verifier accepts the certificate for client and server TLS.
    match Command::new("openssl").arg("version").output() {
        Err(_) => println!("openssl not installed: third-party verification skipped"),
        Ok(_) => {
            for purpose in ["sslclient", "sslserver"] {
                let verify = Command::new("openssl")
                    .args(["verify", "-purpose", purpose, "-CAfile"])
                    .arg(node_dir.join("ca.crt"))
                    .arg(node_dir.join("node.crt"))
                    .output()
                    .expect("openssl verify");
                assert!(
                    verify.status.success(),
                    "openssl verify -purpose {purpose}: {}",
                    stderr(&verify)
                );
            }
            let text = Command::new("openssl")
                .args(["x509", "-noout", "-text", "-in"])
                .arg(node_dir.join("node.crt"))
                .output()
                .expect("openssl x509");
            let text = String::from_utf8_lossy(&text.stdout);
            assert!(text.contains("URI:trellis://acme/n1"), "{text}");
            assert!(text.contains("P-384"), "{text}");
        }
    }

    // 2. The spent token is refused.
    let again = join(&scratch.join("n2"), "n2", &js);
    assert_eq!(code(&again), 1);
    assert!(stderr(&again).contains("spent"), "{}", stderr(&again));

    // Renewal over the same transport gives a new certificate.
    let before = authority.json(&["nodes", "list"])[0]["cert_serial"].clone();
    let renewed = trellis(&node_dir, &["--json", "cert", "renew"]);
    assert_eq!(code(&renewed), 0, "{}", stderr(&renewed));
    let after = authority.json(&["nodes", "list"])[0]["cert_serial"].clone();
    assert_ne!(before, after);

    // The audit log holds every action, and no listing shows a secret.
    let secret = js.rsplit('.').next().expect("secret");
    let actions: Vec<String> = authority
        .json(&["audit"])
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect();
    for expected in [
        "token.create",
        "join.request",
        "join.approve",
        "cert.issue",
        "cert.renew",
        "join.refuse",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} not in {actions:?}"
        );
    }
    for listing in [
        &["tokens", "list"][..],
        &["joins", "list"],
        &["audit"],
        &["nodes", "list"],
    ] {
        let out = authority.cli(&[&["--json"], listing].concat());
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(secret),
            "{listing:?} shows the secret"
        );
    }
    let db = std::fs::read(scratch.join("auth/authority.db")).expect("db");
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is on disk"
    );

    // 5. Revoking a token rejects the join waiting on it, and refuses the next one.
    let revoked_js = authority.token(&["--uses", "2"]);
    let waiting = spawn_join(&scratch.join("n3"), "n3", &revoked_js, &[]);
    let n3 = authority.pending_join("acme/n3");
    let token = authority.json(&["tokens", "revoke", token_id(&revoked_js)]);
    assert_eq!(token["state"], "revoked");
    let out = waiting.wait_with_output().expect("join");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
    let out = join(&scratch.join("n4"), "n4", &revoked_js);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("was revoked"), "{}", stderr(&out));
    let approve = authority.cli(&["joins", "approve", &n3]);
    assert_eq!(code(&approve), 1, "a rejected request cannot be approved");

    // `audit --since` keeps the events at or after the given time.
    let all = authority.json(&["audit"]);
    let all = all.as_array().expect("events");
    let last_at = all.last().and_then(|e| e["at"].as_u64()).expect("at");
    let recent = authority.json(&["audit", "--since", &rfc3339(last_at)]);
    let recent = recent.as_array().expect("events");
    assert!(!recent.is_empty() && recent.len() <= all.len());
    assert!(recent.iter().all(|e| e["at"].as_u64() >= Some(last_at)));
    assert_eq!(recent.last(), all.last());
    let since_epoch = authority.json(&["audit", "--since", "2000-01-01T00:00:00Z"]);
    assert_eq!(since_epoch.as_array().map(Vec::len), Some(all.len()));
    let future = authority.json(&["audit", "--since", "2100-01-01T00:00:00Z"]);
    assert_eq!(future.as_array().map(Vec::len), Some(0));
    assert!(all.iter().any(|e| e["action"] == "token.revoke"));
}

#[test]
fn two_concurrent_joins_with_a_one_use_token_yield_exactly_one_node() {
    let scratch = Scratch::new("enroll-race");
    let authority = Authority::start(scratch.join("auth"), "acme", &["--join-wait", "1s"]);
    let js = authority.token(&["--auto-approve"]);
    let a = spawn_join(&scratch.join("a"), "a", &js, &[]);
    let b = spawn_join(&scratch.join("b"), "b", &js, &[]);
    let outs = [
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    ];
    let codes: Vec<i32> = outs.iter().map(code).collect();
    assert_eq!(
        codes.iter().filter(|&&c| c == 0).count(),
        1,
        "codes {codes:?}"
    );
    let loser = outs.iter().find(|o| code(o) != 0).expect("loser");
    assert_eq!(code(loser), 1);
    assert!(stderr(loser).contains("spent"), "{}", stderr(loser));
    assert_eq!(
        authority.json(&["nodes", "list"]).as_array().map(Vec::len),
        Some(1)
    );

    // Nobody approves within the authority's --join-wait: the timeout exit code, 4.
    let manual = authority.token(&[]);
    let out = join(&scratch.join("w"), "w", &manual);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("nobody approved"), "{}", stderr(&out));
}

#[test]
fn revocation_publishes_a_newer_snapshot_and_an_older_one_is_refused() {
    let scratch = Scratch::new("enroll-revoke");
    let authority = Authority::start(scratch.join("auth"), "acme", &[]);
    let js = authority.token(&["--auto-approve", "--uses", "2"]);
    let (good, bad) = (scratch.join("good"), scratch.join("bad"));
    // The join string from stdin, and from the environment: never on the command line.
    let out = join_secretly(&good, "good", &js, false);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = join_secretly(&bad, "bad", &js, true);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v1 = authority.json(&["status"])["snapshot_version"]
        .as_u64()
        .expect("version");
    let old = scratch.join("old.snap");
    authority.json(&["snapshot", "export", old.to_str().expect("path")]);

    let long = "x".repeat(201);
    for reason in [long.as_str(), "key leaked\nforged line"] {
        let out = authority.cli(&["nodes", "revoke", "acme/bad", "--reason", reason]);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    let revoked = authority.json(&["nodes", "revoke", "acme/bad", "--reason", "key leaked"]);
    assert_eq!(revoked["snapshot_version"].as_u64(), Some(v1 + 1));
    let again = authority.cli(&["nodes", "revoke", "acme/bad", "--reason", "twice"]);
    assert_eq!(code(&again), 1);

    // The revoked node cannot renew.
    let renew = trellis(&bad, &["cert", "renew"]);
    assert_eq!(code(&renew), 1);
    assert!(stderr(&renew).contains("revoked"), "{}", stderr(&renew));

    // A good node fetches the new snapshot; the old one replayed is refused.
    let fetched = trellis(&good, &["--json", "snapshot", "fetch"]);
    assert_eq!(code(&fetched), 0, "{}", stderr(&fetched));
    let fetched: serde_json::Value = serde_json::from_slice(&fetched.stdout).expect("json");
    assert_eq!(fetched["snapshot_version"].as_u64(), Some(v1 + 1));
    let replay = trellis(&good, &["snapshot", "apply", old.to_str().expect("path")]);
    assert_eq!(code(&replay), 1);
    assert!(stderr(&replay).contains("rollback"), "{}", stderr(&replay));
    let new = scratch.join("new.snap");
    authority.json(&["snapshot", "export", new.to_str().expect("path")]);
    let verified = trellis(
        &good,
        &["--json", "snapshot", "verify", new.to_str().expect("path")],
    );
    assert_eq!(
        code(&verified),
        1,
        "the stored version is not newer than itself"
    );
    let offline = trellis(
        &good,
        &[
            "--json",
            "snapshot",
            "verify",
            new.to_str().expect("path"),
            "--ca",
            scratch.join("auth/ca.crt").to_str().expect("path"),
        ],
    );
    assert_eq!(code(&offline), 0, "{}", stderr(&offline));
    let view: serde_json::Value = serde_json::from_slice(&offline.stdout).expect("json");
    assert_eq!(view["revoked_nodes"][0], "acme/bad");
    // A tampered snapshot fails its signature.
    let mut bytes = std::fs::read(&new).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&new, bytes).expect("write");
    let tampered = trellis(
        &good,
        &[
            "snapshot",
            "verify",
            new.to_str().expect("path"),
            "--ca",
            scratch.join("auth/ca.crt").to_str().expect("path"),
        ],
    );
    assert_eq!(code(&tampered), 1, "{}", stderr(&tampered));
}

#[test]
fn refusals_are_one_line_with_meaningful_exit_codes() {
    let scratch = Scratch::new("enroll-errors");
    let authority = Authority::start(scratch.join("auth"), "acme", &["--max-failures", "3"]);

    // Wrong CA pin: refused at the handshake, nothing sent (no join request recorded).
    let js = authority.token(&[]);
    let pin_at = js.find("sha256:").expect("pin") + "sha256:".len();
    let mut wrong = js.clone();
    let flipped = if &js[pin_at..=pin_at] == "0" {
        "1"
    } else {
        "0"
    };
    wrong.replace_range(pin_at..=pin_at, flipped);
    let out = join(&scratch.join("pin"), "pin", &wrong);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refusing to send"),
        "{}",
        stderr(&out)
    );
    let audit = authority.json(&["audit"]).to_string();
    assert!(
        !audit.contains("acme/pin"),
        "the authority saw the pinned-out node: {audit}"
    );

    // Malformed join string.
    let out = join(&scratch.join("m"), "m", "trellis-join:nonsense");
    assert_eq!(code(&out), 2);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    // Rejected by the operator.
    let child = spawn_join(&scratch.join("r"), "r", &js, &[]);
    let id = authority.pending_join("acme/r");
    let out = authority.cli(&["joins", "reject", &id, "--reason", "two\nlines"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    authority.json(&["joins", "reject", &id, "--reason", "unknown host"]);
    let out = child.wait_with_output().expect("join");
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("unknown host"), "{}", stderr(&out));

    // Nobody approves within the node's timeout: exit 4, and the token use is given back.
    let once = authority.token(&[]);
    let out = spawn_join(&scratch.join("t"), "t", &once, &["--timeout", "1s"])
        .wait_with_output()
        .expect("join");
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while authority
        .json(&["joins", "list", "--pending"])
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned join stays pending"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let child = spawn_join(&scratch.join("t"), "t", &once, &[]);
    let id = authority.pending_join("acme/t");
    authority.json(&["joins", "approve", &id]);
    assert_eq!(
        code(&child.wait_with_output().expect("join")),
        0,
        "the same join string works again"
    );

    // Expired token.
    let short = authority.token(&["--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = join(&scratch.join("e"), "e", &short);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));

    // Failed attempts are rate-limited per source (3 allowed; the expired one counted).
    let bad_secret = format!("{}{}", &js[..js.len() - 4], "0000");
    let mut last = String::new();
    for i in 0..3 {
        let out = join(
            &scratch.join(&format!("b{i}")),
            &format!("b{i}"),
            &bad_secret,
        );
        assert_eq!(code(&out), 1);
        last = stderr(&out);
    }
    assert!(last.contains("too many failed join attempts"), "{last}");

    // Unreachable authority and a stopped daemon.
    let unreachable = js.replace(&authority.addr, "127.0.0.1:9");
    let out = join(&scratch.join("u"), "u", &unreachable);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let out = trellis(&scratch.join("nowhere"), &["status"]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
}
