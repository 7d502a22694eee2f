//! Decisions on join requests and certificates that depend on other state: a revoked
//! token, a failed automatic approval, a retried join, a superseded certificate.

use std::collections::BTreeMap;

use trellis_routing::NodeId;

use super::tests::{enrolled, fixture, join_request, refusal_code, token, NOW};
use super::*;
use crate::enroll::ErrorCode;
use crate::pki;

fn conflict_message(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(StoreError::Api(e)) if e.kind == ErrorKind::Conflict => e.message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn actions(store: &Store) -> Vec<String> {
    store
        .list_audit(0)
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect()
}

/// The join a node sends again with its own key after losing the reply.
fn retry(full: &str, name: &str, key: &rcgen::KeyPair) -> NewJoin {
    NewJoin {
        token: full.to_owned(),
        node_id: NodeId::new(&format!("acme/{name}")).expect("node"),
        csr: pki::csr(key).expect("csr"),
        key_sha256: "00".into(),
        facts: BTreeMap::new(),
        capabilities: vec![],
        roles: vec![],
        source: "127.0.0.1:5001".into(),
    }
}

#[test]
fn revoking_a_token_rejects_its_pending_joins_and_they_cannot_be_approved() {
    let mut f = fixture("revoke-pending");
    let (t, full) = token(&mut f.store, 2, false, &[]);
    let (_, other) = token(&mut f.store, 1, false, &[]);
    let mut ids = ["a", "b"].map(|name| {
        let (join, _) = join_request(&full, name);
        let admitted = f.store.begin_join(&join, NOW).expect("store");
        admitted.expect("admitted").join_id
    });
    ids.sort();
    let (join, _) = join_request(&other, "c");
    let untouched = f.store.begin_join(&join, NOW).expect("store");
    let untouched = untouched.expect("admitted").join_id;

    let rejected = f
        .store
        .revoke_token(&t.id, "operator", NOW + 1)
        .expect("revoke");
    assert_eq!(rejected, ids.to_vec());
    for id in &ids {
        let info = f.store.join(id).expect("store").expect("join");
        assert_eq!(info.state, "rejected");
        assert!(info.reason.is_some_and(|r| r.contains("revoked")));
        let refused = f.store.approve_join(id, &f.ca, "operator", NOW + 2, 3600);
        assert!(conflict_message(refused).contains("rejected"));
    }
    let info = f.store.join(&untouched).expect("store").expect("join");
    assert_eq!(info.state, "pending", "another token's request stays");
    assert!(f.store.list_nodes().expect("nodes").is_empty());
    assert!(actions(&f.store).iter().any(|a| a == "join.reject"));
}

#[test]
fn approving_a_pending_join_whose_token_was_revoked_is_refused() {
    let mut f = fixture("approve-revoked");
    let (t, full) = token(&mut f.store, 1, false, &[]);
    let (join, _) = join_request(&full, "a");
    let admitted = f.store.begin_join(&join, NOW).expect("store");
    let id = admitted.expect("admitted").join_id;
    // A request left pending with a revoked token (recorded before revocation rejected
    // pending requests, or revoked by hand in the database).
    f.store
        .conn
        .execute(
            "UPDATE tokens SET revoked_at=?2 WHERE id=?1",
            rusqlite::params![t.id, to_i64(NOW)],
        )
        .expect("revoke by hand");
    let refused = f.store.approve_join(&id, &f.ca, "operator", NOW, 3600);
    let message = conflict_message(refused);
    assert!(
        message.contains("revoked") && message.contains(&t.id),
        "{message}"
    );
    assert!(f.store.list_nodes().expect("nodes").is_empty());
}

#[test]
fn a_failed_automatic_approval_is_withdrawn_and_gives_the_token_use_back() {
    let mut f = fixture("auto-fail");
    let (t, full) = token(&mut f.store, 1, true, &[]);
    let (join, _) = join_request(&full, "a");
    let admitted = f.store.begin_join(&join, NOW).expect("store");
    let id = admitted.expect("admitted").join_id;
    let info = f
        .store
        .fail_auto_approval(&id, "automatic approval failed: disk full", NOW)
        .expect("withdraw");
    assert_eq!(info.state, "rejected");
    assert_eq!(
        info.reason.as_deref(),
        Some("automatic approval failed: disk full")
    );
    let tokens = f.store.list_tokens(NOW).expect("tokens");
    let spent = tokens.iter().find(|x| x.id == t.id).expect("token");
    assert_eq!((spent.uses, spent.state.as_str()), (0, "active"));
    assert!(
        f.store.begin_join(&join, NOW).expect("store").is_ok(),
        "the same join string works again"
    );
    assert!(actions(&f.store)
        .iter()
        .any(|a| a == "join.auto_approve_fail"));
}

#[test]
fn a_retried_join_with_the_enrolled_key_gets_its_certificate_again() {
    let mut f = fixture("redeliver");
    // One-use token: the retry comes after the use was spent.
    let (t, full) = token(&mut f.store, 1, false, &[]);
    let (join, key) = join_request(&full, "n");
    let admitted = f.store.begin_join(&join, NOW).expect("store");
    let id = admitted.expect("admitted").join_id;
    let (_, issued) = f
        .store
        .approve_join(&id, &f.ca, "operator", NOW, 3600)
        .expect("approve");

    // The reply was lost; the node sends the same join again (a new CSR, same key).
    let again = f
        .store
        .redeliver(&retry(&full, "n", &key), NOW + 5)
        .expect("store")
        .expect("redelivered");
    assert_eq!(again.der, issued.der);
    assert_eq!(again.serial, crate::util::hex(&issued.serial));
    assert!(actions(&f.store).iter().any(|a| a == "join.redeliver"));
    assert_eq!(f.store.list_nodes().expect("nodes").len(), 1);

    // Same name, another key: not a retry, and the name is taken.
    let (_, two_uses) = token(&mut f.store, 2, false, &[]);
    let (impostor, _) = join_request(&two_uses, "n");
    assert!(f
        .store
        .redeliver(&impostor, NOW + 5)
        .expect("store")
        .is_none());
    assert_eq!(
        refusal_code(f.store.begin_join(&impostor, NOW + 5)),
        ErrorCode::NameTaken
    );
    // Same key but another token, or a wrong secret: not a retry either.
    let other = retry(&two_uses, "n", &key);
    assert!(f.store.redeliver(&other, NOW + 5).expect("store").is_none());
    let wrong = retry(&format!("{}.{}", t.id, "0".repeat(64)), "n", &key);
    assert!(f.store.redeliver(&wrong, NOW + 5).expect("store").is_none());
    // An expired certificate or a revoked node gets nothing.
    let late = retry(&full, "n", &key);
    assert!(f
        .store
        .redeliver(&late, NOW + 3600)
        .expect("store")
        .is_none());
    f.store
        .revoke_node("acme/n", "gone", &f.ca, "operator", NOW + 10)
        .expect("revoke");
    assert!(f.store.redeliver(&late, NOW + 20).expect("store").is_none());
}

#[test]
fn only_the_newest_certificate_renews_and_a_superseded_one_gets_the_newest_back() {
    let mut f = fixture("renew-newest");
    let (first, key) = enrolled(&mut f, "n");
    let node = NodeId::new("acme/n").expect("node");
    let csr = pki::parse_csr(&pki::csr(&key).expect("csr")).expect("parse");
    let renew = |f: &mut super::tests::Fixture, serial: &[u8], at: u64| {
        f.store
            .renew(&node, serial, &csr.public_key, &f.ca, at, 3600)
            .expect("store")
    };
    let second = renew(&mut f, &first.serial, NOW + 10).expect("renewed");
    // The reply was lost: the node asks again with the first certificate and gets the
    // second back; nothing new is issued.
    let again = renew(&mut f, &first.serial, NOW + 20).expect("re-delivered");
    assert_eq!(again.serial, second.serial);
    assert_eq!(again.der, second.der);
    let third = renew(&mut f, &second.serial, NOW + 30).expect("the newest renews");
    assert_eq!(
        renew(&mut f, &second.serial, NOW + 40)
            .expect("re-delivered")
            .serial,
        third.serial
    );
    assert!(renew(&mut f, &third.serial, NOW + 50).is_ok());
    // Once the newest has expired a superseded certificate gets nothing.
    let refused = renew(&mut f, &first.serial, NOW + 100_000).expect_err("superseded");
    assert_eq!(refused.code, ErrorCode::Unauthenticated);
    assert!(
        refused.message.contains("superseded"),
        "{}",
        refused.message
    );
}
