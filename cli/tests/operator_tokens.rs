//! Operator tokens from a real authority (ADR 0017): an operator makes a client
//! certificate, the authority issues an ES384 token bound to it and publishes its key in
//! the signed trust snapshot; the token verifies against that snapshot only with the same
//! certificate, and a revocation published in the next snapshot refuses it.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{stderr, trellis, Authority, Scratch};
use trellis_policy::jwt::{self, Expect, TokenError};

/// The authority's newest snapshot, verified against its CA.
fn snapshot(authority: &Authority, scratch: &Scratch, name: &str) -> trellis_policy::TrustSnapshot {
    let file = scratch.join(name);
    let file = file.to_str().expect("utf-8 path");
    let out = authority.cli(&["snapshot", "export", file]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ca = std::fs::read(authority.dir.join("ca.crt")).expect("ca");
    let ca = trellis_daemon::pki::pem_to_der(&ca).expect("ca pem");
    let bytes = std::fs::read(file).expect("snapshot");
    trellis_policy::snapshot::verify(&bytes, "acme", &ca, None, now()).expect("verifies")
}

fn now() -> u64 {
    trellis_daemon::util::time::now_secs()
}

#[test]
fn a_bound_token_verifies_against_the_snapshot_until_revoked() {
    let scratch = Scratch::new("operator-tokens");
    let authority = Authority::start(scratch.join("auth"), "acme", &[]);
    let creds = scratch.join("alice");
    let creds_arg = creds.to_str().expect("utf-8 path");
    let out = trellis(
        &authority.dir,
        &["operator", "cert", "--name", "alice", "--out", creds_arg],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&creds.join("operator.key")), 0o600);

    let token_file = scratch.join("alice.jwt");
    let cert = creds.join("operator.crt");
    let out = common::operator_token(&authority, "admin", &cert, &token_file);
    assert_eq!(mode(&token_file), 0o600);
    let token = std::fs::read_to_string(&token_file).expect("token");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(!printed.contains(&token), "the token is never printed");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let jti = info["jti"].as_str().expect("jti").to_owned();

    let cert_der =
        trellis_daemon::pki::pem_to_der(&std::fs::read(&cert).expect("cert")).expect("cert pem");
    let snap = snapshot(&authority, &scratch, "v-issued.bin");
    assert_eq!(snap.token_keys.len(), 1, "the JWKS travels in the snapshot");
    let check = |snap: &trellis_policy::TrustSnapshot, cert: &[u8]| {
        jwt::verify(
            &token,
            &Expect {
                org: "acme",
                keys: &snap.token_keys,
                revoked: &snap.revoked_tokens,
                client_cert: cert,
                now: now(),
            },
        )
    };
    let claims = check(&snap, &cert_der).expect("accepted with its certificate");
    assert_eq!(
        (claims.sub.as_str(), claims.role.as_str()),
        ("alice", "admin")
    );
    assert_eq!(
        check(&snap, b"another certificate"),
        Err(TokenError::WrongCertificate),
        "replayed from another certificate"
    );

    // Revoked: the next snapshot names it, and the token is refused.
    let out = authority.cli(&["tokens", "operator", "revoke", &jti]);
    assert!(out.status.success(), "{}", stderr(&out));
    let snap = snapshot(&authority, &scratch, "v-revoked.bin");
    assert!(snap.revoked_tokens.contains(&jti));
    assert_eq!(
        check(&snap, &cert_der),
        Err(TokenError::Revoked(jti.clone()))
    );
    let listed = authority.json(&["tokens", "operator", "list"]);
    assert!(listed[0]["revoked_at"].is_u64(), "{listed}");
    let again = authority.cli(&["tokens", "operator", "revoke", &jti]);
    assert_eq!(common::code(&again), 1, "{}", stderr(&again));
}
