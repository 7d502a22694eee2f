//! Remote admin with real processes (ADR 0017): `trellis --remote` reaches a node's and
//! an authority's admin API over QUIC with mutual TLS and an operator token, Cedar decides with the
//! token's role, and each attack is refused: a token replayed from another certificate,
//! a token of another org's authority, a garbled token, an expired one, an unbound one,
//! one for another audience, and a revoked token.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{code, free_port, stderr, trellis, wait_for, Authority, Node, Scratch};
use trellis_policy::jwt;

struct Operator {
    dir: PathBuf,
}

fn operator(scratch: &Scratch, name: &str) -> Operator {
    let dir = scratch.join(&format!("op-{name}"));
    let out = trellis(
        scratch.join("").as_path(),
        &[
            "operator",
            "cert",
            "--name",
            name,
            "--out",
            dir.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    Operator { dir }
}

fn token(
    authority: &Authority,
    scratch: &Scratch,
    op: &Operator,
    role: &str,
    file: &str,
) -> PathBuf {
    let out_file = scratch.join(file);
    common::operator_token(authority, role, &op.dir.join("operator.crt"), &out_file);
    out_file
}

fn remote(target: &str, ca: &Path, op: &Operator, token: &Path, args: &[&str]) -> Output {
    let flags = [
        "--json",
        "--remote",
        target,
        "--ca",
        ca.to_str().expect("utf-8"),
        "--operator-dir",
        op.dir.to_str().expect("utf-8"),
        "--token-file",
        token.to_str().expect("utf-8"),
    ];
    trellis(Path::new("/nonexistent"), &[&flags[..], args].concat())
}

#[test]
fn remote_admin_needs_a_bound_unrevoked_token_and_a_permitting_policy() {
    let scratch = Scratch::new("remote-admin");
    let authority_port = free_port();
    let authority = Authority::start(
        scratch.join("auth-acme"),
        "acme",
        &["--remote-listen", &format!("127.0.0.1:{authority_port}")],
    );
    let js = authority.token(&["--auto-approve"]);
    let mut nodes = [Node::join(&scratch, &authority, "acme", "a", &js)];
    let port = free_port();
    nodes[0].configure(
        &[],
        &format!("[admin]\nremote_listen = \"127.0.0.1:{port}\"\n"),
    );
    nodes[0].start();
    let target = format!("acme/a@127.0.0.1:{port}");
    let ca = authority.dir.join("ca.crt");
    let alice = operator(&scratch, "alice");
    let mallory = operator(&scratch, "mallory");
    let admin = token(&authority, &scratch, &alice, "admin", "admin.jwt");
    let viewer = token(&authority, &scratch, &alice, "viewer", "viewer.jwt");

    // A bound admin token: every command the socket serves.
    let status = remote(&target, &ca, &alice, &admin, &["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(s["node_id"], "acme/a");
    let adv = remote(
        &target,
        &ca,
        &alice,
        &admin,
        &[
            "routes",
            "advertise",
            "books.acme",
            "--endpoint",
            "127.0.0.1:9",
        ],
    );
    assert!(adv.status.success(), "{}", stderr(&adv));

    // A viewer may look but not change (Cedar, role from the token).
    assert!(remote(&target, &ca, &alice, &viewer, &["routes", "list"])
        .status
        .success());
    let denied = remote(
        &target,
        &ca,
        &alice,
        &viewer,
        &["routes", "withdraw", "books.acme"],
    );
    assert_eq!(code(&denied), 1, "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("manage_routes"),
        "{}",
        stderr(&denied)
    );

    // The authority's admin API too, as `ORG@HOST:PORT`: its certificate is verified
    // to the CA as `authority.acme.trellis`.
    let at_authority = format!("acme@127.0.0.1:{authority_port}");
    let listed = remote(
        &at_authority,
        &ca,
        &alice,
        &admin,
        &["tokens", "operator", "list"],
    );
    assert!(listed.status.success(), "{}", stderr(&listed));
    let tokens: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(tokens.as_array().map(Vec::len), Some(2), "{tokens}");
    let denied = remote(&at_authority, &ca, &alice, &viewer, &["tokens", "list"]);
    assert_eq!(code(&denied), 1, "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("create_join_token"),
        "{}",
        stderr(&denied)
    );
    let replayed = remote(&at_authority, &ca, &mallory, &admin, &["status"]);
    assert_eq!(code(&replayed), 1, "{}", stderr(&replayed));

    // Replayed from another certificate.
    let replayed = remote(&target, &ca, &mallory, &admin, &["status"]);
    assert_eq!(code(&replayed), 1, "{}", stderr(&replayed));
    assert!(
        stderr(&replayed).contains("another client certificate"),
        "{}",
        stderr(&replayed)
    );

    // Issued by another org's authority (its key is not acme's; its audience is not acme).
    let globex = Authority::start(scratch.join("auth-globex"), "globex", &[]);
    let foreign = token(&globex, &scratch, &alice, "admin", "globex.jwt");
    let forged = remote(&target, &ca, &alice, &foreign, &["status"]);
    assert_eq!(code(&forged), 1, "{}", stderr(&forged));
    assert!(
        stderr(&forged).contains("token refused"),
        "{}",
        stderr(&forged)
    );

    // Garbled.
    let garbled = scratch.join("garbled.jwt");
    std::fs::write(&garbled, "eyJhbGciOiJub25lIn0.e30.").expect("write");
    let bad = remote(&target, &ca, &alice, &garbled, &["status"]);
    assert_eq!(code(&bad), 1, "{}", stderr(&bad));

    // Signed with acme's real token key, but expired, unbound, or for another audience
    // (minted here from token.key: the authority itself never issues such tokens).
    let pkcs8 = std::fs::read(authority.dir.join("token.key")).expect("token key");
    let key = jwt::public_key(&pkcs8).expect("key");
    let cert = std::fs::read(alice.dir.join("operator.crt")).expect("cert");
    let cert = trellis_daemon::pki::pem_to_der(&cert).expect("pem");
    let now = trellis_daemon::util::time::now_secs();
    let base = jwt::OperatorClaims {
        iss: jwt::org_uri("acme"),
        aud: jwt::org_uri("acme"),
        sub: "alice".into(),
        role: "admin".into(),
        iat: now - 7200,
        nbf: now - 7200,
        exp: now + 3600,
        jti: "minted".into(),
        cnf: Some(jwt::Confirmation {
            x5t_s256: jwt::thumbprint(&cert),
        }),
    };
    let cases = [
        (
            "expired",
            jwt::OperatorClaims {
                exp: now - 3600,
                ..base.clone()
            },
        ),
        (
            "not bound",
            jwt::OperatorClaims {
                cnf: None,
                ..base.clone()
            },
        ),
        (
            "audience",
            jwt::OperatorClaims {
                aud: jwt::org_uri("globex"),
                ..base.clone()
            },
        ),
    ];
    for (why, claims) in cases {
        let file = scratch.join(&format!("minted-{}.jwt", why.replace(' ', "-")));
        std::fs::write(&file, jwt::issue(&pkcs8, &key.kid, &claims).expect("sign")).expect("write");
        let out = remote(&target, &ca, &alice, &file, &["status"]);
        assert_eq!(code(&out), 1, "{why}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{why}: {}", stderr(&out));
    }
    let good = scratch.join("minted-good.jwt");
    std::fs::write(&good, jwt::issue(&pkcs8, &key.kid, &base).expect("sign")).expect("write");
    assert!(remote(&target, &ca, &alice, &good, &["status"])
        .status
        .success());

    // Revoked at the authority: refused once the snapshot reaches the node.
    let list = authority.json(&["tokens", "operator", "list"]);
    let jti = list
        .as_array()
        .and_then(|l| l.iter().find(|t| t["role"] == "admin"))
        .and_then(|t| t["jti"].as_str())
        .expect("the admin token")
        .to_owned();
    let out = authority.cli(&["tokens", "operator", "revoke", &jti]);
    assert!(out.status.success(), "{}", stderr(&out));
    let refused = wait_for("the node refuses the revoked token", || {
        let out = remote(&target, &ca, &alice, &admin, &["status"]);
        stderr(&out).contains("revoked").then_some(out)
    });
    assert_eq!(code(&refused), 1);
    let counters = nodes[0].json(&["status"]);
    assert!(
        counters["counters"]["remote_admin_refused"]
            .as_u64()
            .unwrap_or(0)
            >= 6,
        "{counters}"
    );
}
