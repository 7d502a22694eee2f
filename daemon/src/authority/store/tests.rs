//! The authority store: token admission and spending, approvals, renewal, revocation and
//! the audit trail, against a real SQLite file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use trellis_routing::{NodeId, OrgId};

use super::*;
use crate::authority::tokens::{new_token, NewToken};
use crate::enroll::ErrorCode;
use crate::pki::{self, Ca};

pub(super) const NOW: u64 = 1_800_000_000;

pub(super) struct Fixture {
    pub dir: PathBuf,
    pub store: Store,
    pub ca: Ca,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("trellis-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let org = OrgId::new("acme").expect("org");
    let key = pki::generate_key().expect("key");
    let der = pki::ca_certificate(&org, &key, NOW).expect("ca");
    let ca = Ca::load(org, der, key).expect("ca");
    let store = Store::open(&dir.join("authority.db")).expect("open");
    Fixture { dir, store, ca }
}

pub(super) fn token(
    store: &mut Store,
    uses: u32,
    auto_approve: bool,
    roles: &[&str],
) -> (NewToken, String) {
    let t = new_token().expect("token");
    let spec = tokens_spec(
        3600,
        uses,
        auto_approve,
        roles.iter().map(|r| (*r).to_owned()).collect(),
    );
    store
        .create_token(&t, &spec, "operator", NOW)
        .expect("create");
    let full = format!("{}.{}", t.id, t.secret);
    (t, full)
}

pub(super) fn join_request(token: &str, name: &str) -> (NewJoin, rcgen::KeyPair) {
    let key = pki::generate_key().expect("key");
    let join = NewJoin {
        token: token.to_owned(),
        node_id: NodeId::new(&format!("acme/{name}")).expect("node"),
        csr: pki::csr(&key).expect("csr"),
        key_sha256: "00".into(),
        facts: BTreeMap::from([("os".to_owned(), "linux".to_owned())]),
        capabilities: vec!["peering/1".into()],
        roles: vec![],
        source: "127.0.0.1:5000".into(),
    };
    (join, key)
}

/// A node enrolled through a one-use token and an approval: its certificate and key.
pub(super) fn enrolled(f: &mut Fixture, name: &str) -> (crate::pki::Issued, rcgen::KeyPair) {
    let (_, full) = token(&mut f.store, 1, true, &[]);
    let (join, key) = join_request(&full, name);
    let admission = f
        .store
        .begin_join(&join, NOW)
        .expect("store")
        .expect("admitted");
    let (_, issued) = f
        .store
        .approve_join(&admission.join_id, &f.ca, "operator", NOW, 3600)
        .expect("approve");
    (issued, key)
}

pub(super) fn refusal_code(result: Result<Result<Admission, Refusal>, StoreError>) -> ErrorCode {
    match result.expect("store") {
        Ok(a) => panic!("admitted {a:?}"),
        Err(r) => r.code,
    }
}

#[test]
fn tokens_are_stored_only_as_hashes() {
    let mut f = fixture("hash");
    let (t, _) = token(&mut f.store, 1, false, &[]);
    let stored: Vec<u8> = f
        .store
        .conn
        .query_row("SELECT hash FROM tokens WHERE id=?1", [&t.id], |r| r.get(0))
        .expect("row");
    assert_eq!(stored, t.hash.to_vec());
    let db = std::fs::read(f.dir.join("authority.db")).expect("db");
    let wal = std::fs::read(f.dir.join("authority.db-wal")).unwrap_or_default();
    let needle = t.secret.as_bytes();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "secret found on disk"
        );
    }
}

#[test]
fn a_one_use_token_admits_exactly_one_join() {
    let mut f = fixture("one-use");
    let (_, full) = token(&mut f.store, 1, false, &[]);
    let (first, _) = join_request(&full, "a");
    assert!(f.store.begin_join(&first, NOW).expect("store").is_ok());
    let (second, _) = join_request(&full, "b");
    assert_eq!(
        refusal_code(f.store.begin_join(&second, NOW)),
        ErrorCode::TokenSpent
    );
}

#[test]
fn concurrent_joins_on_two_connections_spend_a_one_use_token_once() {
    let f = fixture("concurrent");
    let mut store = Store::open(&f.dir.join("authority.db")).expect("open");
    let (_, full) = token(&mut store, 1, false, &[]);
    let path = f.dir.join("authority.db");
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let path = path.clone();
            let full = full.clone();
            std::thread::spawn(move || {
                let mut store = Store::open(&path).expect("open");
                let (join, _) = join_request(&full, &format!("n{i}"));
                store.begin_join(&join, NOW).expect("store").is_ok()
            })
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .filter(|&won| won)
        .count();
    assert_eq!(wins, 1);
}

#[test]
fn wrong_secret_unknown_expired_and_revoked_tokens_are_refused() {
    let mut f = fixture("refused");
    let (t, full) = token(&mut f.store, 5, false, &[]);
    let wrong = format!("{}.{}", t.id, "0".repeat(64));
    let unknown = format!("{}.{}", "f".repeat(16), t.secret);
    for bad in [wrong.as_str(), unknown.as_str(), "garbage"] {
        let (join, _) = join_request(bad, "x");
        assert_eq!(
            refusal_code(f.store.begin_join(&join, NOW)),
            ErrorCode::InvalidToken
        );
    }
    let (join, _) = join_request(&full, "x");
    assert_eq!(
        refusal_code(f.store.begin_join(&join, NOW + 3600)),
        ErrorCode::TokenExpired
    );
    f.store
        .revoke_token(&t.id, "operator", NOW)
        .expect("revoke");
    assert_eq!(
        refusal_code(f.store.begin_join(&join, NOW)),
        ErrorCode::TokenRevoked
    );
}

#[test]
fn roles_outside_the_token_scope_are_refused() {
    let mut f = fixture("scope");
    let (_, full) = token(&mut f.store, 2, false, &["edge"]);
    let (mut join, _) = join_request(&full, "x");
    join.roles = vec!["relay".into()];
    assert_eq!(
        refusal_code(f.store.begin_join(&join, NOW)),
        ErrorCode::Scope
    );
    join.roles = vec!["edge".into()];
    assert!(f.store.begin_join(&join, NOW).expect("store").is_ok());
}

#[test]
fn approval_issues_a_certificate_for_the_csr_key_and_audits_it() {
    let mut f = fixture("approve");
    let (_, full) = token(&mut f.store, 1, false, &["edge"]);
    let (join, key) = join_request(&full, "edge-1");
    let admission = f
        .store
        .begin_join(&join, NOW)
        .expect("store")
        .expect("admitted");
    let (info, issued) = f
        .store
        .approve_join(&admission.join_id, &f.ca, "operator", NOW, 3600)
        .expect("approve");
    assert_eq!(info.state, "approved");
    assert_eq!(info.roles, vec!["edge".to_owned()]);
    let cert = pki::parse_node_cert(&issued.der).expect("cert");
    assert_eq!(cert.node.as_str(), "acme/edge-1");
    assert_eq!(cert.public_key, key.public_key_raw());
    assert_eq!(
        f.store.join_certificate(&admission.join_id).expect("cert"),
        Some(issued.der.clone())
    );
    // Deciding twice is a conflict; the same name cannot join again.
    let again = f
        .store
        .approve_join(&admission.join_id, &f.ca, "operator", NOW, 3600);
    assert!(matches!(again, Err(StoreError::Api(e)) if e.kind == ErrorKind::Conflict));
    let (_, full2) = token(&mut f.store, 1, false, &[]);
    let (dup, _) = join_request(&full2, "edge-1");
    assert_eq!(
        refusal_code(f.store.begin_join(&dup, NOW)),
        ErrorCode::NameTaken
    );
    let actions: Vec<String> = f
        .store
        .list_audit(0)
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect();
    for expected in ["token.create", "join.request", "join.approve", "cert.issue"] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
}

#[test]
fn an_expired_join_gives_the_token_use_back_and_a_rejected_one_does_not() {
    let mut f = fixture("expire");
    let (t, full) = token(&mut f.store, 1, false, &[]);
    let (join, _) = join_request(&full, "x");
    let admission = f
        .store
        .begin_join(&join, NOW)
        .expect("store")
        .expect("admitted");
    f.store
        .expire_join(&admission.join_id, NOW)
        .expect("expire");
    let admission = f
        .store
        .begin_join(&join, NOW)
        .expect("store")
        .expect("admitted again");
    f.store
        .reject_join(&admission.join_id, "unknown host", "operator", NOW)
        .expect("reject");
    let token = f
        .store
        .list_tokens(NOW)
        .expect("list")
        .into_iter()
        .find(|x| x.id == t.id)
        .expect("token");
    assert_eq!((token.uses, token.state.as_str()), (1, "spent"));
}

#[test]
fn revocation_publishes_a_newer_snapshot_that_names_the_node_and_blocks_renewal() {
    let mut f = fixture("revoke");
    let v1 = f.store.refresh_snapshot(&f.ca, NOW).expect("snapshot");
    let (issued, key) = enrolled(&mut f, "bad");
    let node = NodeId::new("acme/bad").expect("node");
    let csr = pki::parse_csr(&pki::csr(&key).expect("csr")).expect("parse");
    let renewed = f
        .store
        .renew(
            &node,
            &issued.serial,
            &csr.public_key,
            &f.ca,
            NOW + 10,
            3600,
        )
        .expect("store");
    assert!(renewed.is_ok(), "an active node renews");

    let revoked = f
        .store
        .revoke_node("acme/bad", "compromised", &f.ca, "operator", NOW + 20)
        .expect("revoke");
    assert_eq!(revoked.snapshot_version, v1 + 1);
    assert_eq!(revoked.serials.len(), 2, "both certificates are revoked");
    let (version, envelope) = f
        .store
        .snapshot_envelope(None)
        .expect("store")
        .expect("snapshot");
    let snapshot =
        trellis_policy::snapshot::verify(&envelope, "acme", f.ca.der(), Some(v1), NOW + 30)
            .expect("verify");
    assert_eq!(snapshot.version, version);
    assert!(snapshot.revokes("acme/bad", &[]));
    assert!(snapshot.revokes("acme/other", &issued.serial));

    let refused = f
        .store
        .renew(
            &node,
            &issued.serial,
            &csr.public_key,
            &f.ca,
            NOW + 40,
            3600,
        )
        .expect("store");
    assert!(matches!(refused, Err(r) if r.code == ErrorCode::Revoked));
    let again = f
        .store
        .revoke_node("acme/bad", "again", &f.ca, "operator", NOW + 50);
    assert!(matches!(again, Err(StoreError::Api(e)) if e.kind == ErrorKind::Conflict));
}

#[test]
fn renewal_with_another_key_is_refused() {
    let mut f = fixture("renew-key");
    let (issued, _) = enrolled(&mut f, "n");
    let other = pki::generate_key().expect("key");
    let csr = pki::parse_csr(&pki::csr(&other).expect("csr")).expect("parse");
    let node = NodeId::new("acme/n").expect("node");
    let refused = f
        .store
        .renew(&node, &issued.serial, &csr.public_key, &f.ca, NOW, 3600)
        .expect("store");
    assert!(matches!(refused, Err(r) if r.code == ErrorCode::BadRequest));
}

#[test]
fn a_listing_publishes_once_and_a_revoked_node_leaves_the_directory() {
    let mut f = fixture("directory");
    let v1 = f.store.refresh_snapshot(&f.ca, NOW).expect("snapshot");
    enrolled(&mut f, "n1");
    let node = NodeId::new("acme/n1").expect("node");
    let directory = |f: &Fixture| {
        let (_, bytes) = f
            .store
            .snapshot_envelope(None)
            .expect("store")
            .expect("one");
        let envelope =
            trellis_policy::Envelope::decode(&bytes, trellis_policy::Kind::TrustSnapshot)
                .expect("envelope");
        trellis_policy::TrustSnapshot::from_payload(&envelope.payload)
            .expect("payload")
            .directory
    };
    let listed = f
        .store
        .list_node(&f.ca, &node, "127.0.0.1:7001", "", NOW + 1)
        .expect("store");
    let Listed::Published(v2) = listed else {
        panic!("{listed:?}")
    };
    assert!(v2 > v1);
    let entries = directory(&f);
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (
            entries[0].node.as_str(),
            entries[0].address.as_str(),
            entries[0].role.as_str()
        ),
        ("acme/n1", "127.0.0.1:7001", "default")
    );
    let again = f
        .store
        .list_node(&f.ca, &node, "127.0.0.1:7001", "default", NOW + 2)
        .expect("store");
    assert_eq!(
        again,
        Listed::Unchanged,
        "a resubscription publishes nothing"
    );
    let bad = f
        .store
        .list_node(&f.ca, &node, "0.0.0.0:7001", "default", NOW + 3)
        .expect("store");
    assert!(
        matches!(bad, Listed::Refused(ref why) if why.contains("dial")),
        "{bad:?}"
    );
    let stranger = NodeId::new("acme/never-joined").expect("node");
    let refused = f
        .store
        .list_node(&f.ca, &stranger, "127.0.0.1:7009", "default", NOW + 3)
        .expect("store");
    assert!(matches!(refused, Listed::Refused(_)), "{refused:?}");
    f.store
        .revoke_node("acme/n1", "compromised", &f.ca, "operator", NOW + 4)
        .expect("revoked");
    assert!(directory(&f).is_empty(), "a revoked node is not listed");
}
