//! A misbehaving peer against a real daemon. The test process plays "acme/evil": a node
//! with a valid certificate from the org authority, configured as a peer of B, that
//! speaks the real protocol (QUIC, mutual TLS, Cap'n Proto `PeerSession`) with the
//! daemon's own transport and codec, and then lies and sends garbage.
//!
//! ```text
//!   A ── B ── evil (this process; B lists it as a peer, evil dials B)
//! ```
//!
//! B must refuse the lies (forged origin manifests, routes whose origin never listed
//! them), count them, close the session on malformed input with `malformedMessage`, and
//! keep serving A and its operator.

mod common;
mod rogue_peer;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{free_port, wait_for, Authority, Node, Scratch};
use rogue_peer::{announce, manifest, Closed, Rogue};
use serde_json::Value;
use trellis_daemon::codec;
use trellis_schemas::peering_capnp::CloseReason;

/// A (advertising books.acme) and B peered, plus "evil" joined but never started; B lists
/// acme/evil as a peer at an address nobody listens on (B's own dials fail; evil's dials
/// in are admitted).
struct Setup {
    _scratch: Scratch,
    _authority: Authority,
    a: Node,
    b: Node,
    evil: Node,
    /// Last, so it is released after the daemons are gone.
    _serial: MutexGuard<'static, ()>,
}

/// The tests of this file run one at a time: `free_port` releases its port before the
/// daemon binds it, and a concurrent test's join clients and rogue endpoint bind ephemeral
/// UDP ports too.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn setup(name: &str) -> Setup {
    let serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let scratch = Scratch::new(name);
    let authority = Authority::start(scratch.join("auth-acme"), "acme", &[]);
    let js = authority.token(&["--auto-approve", "--uses", "3"]);
    let mut a = Node::join(&scratch, &authority, "acme", "a", &js);
    let mut b = Node::join(&scratch, &authority, "acme", "b", &js);
    let evil = Node::join(&scratch, &authority, "acme", "evil", &js);
    a.configure(&[("acme/b", b.port)], "");
    b.configure(&[("acme/a", a.port), ("acme/evil", free_port())], "");
    a.start();
    b.start();
    wait_for("a–b up", || {
        (a.peer_up("acme/b") && b.peer_up("acme/a")).then_some(())
    });
    a.json(&[
        "routes",
        "advertise",
        "books.acme",
        "--endpoint",
        "127.0.0.1:8080",
        "--protocol",
        "http",
    ]);
    wait_for("books.acme at B", || b.route("books.acme"));
    Setup {
        _scratch: scratch,
        _authority: authority,
        a,
        b,
        evil,
        _serial: serial,
    }
}

/// Evil dials B and completes `open`; returns once B shows the session as up. (B's
/// routing loop ignores an update that reaches it before the session's `Up` event, which
/// comes from another task; waiting keeps the scenarios independent of that ordering.)
fn connect_evil(s: &Setup) -> Rogue {
    let rogue = Rogue::connect(&s.evil.dir, "acme/b", s.b.port).expect("evil connects to B");
    assert_eq!(rogue.node.as_str(), "acme/evil");
    wait_for("B sees evil up", || s.b.peer_up("acme/evil").then_some(()));
    rogue
}

/// A counter from `status --json` (0 if absent).
fn counter(node: &Node, name: &str) -> u64 {
    node.json(&["status"])["counters"][name]
        .as_u64()
        .unwrap_or(0)
}

/// Every path `node` holds for `service` (`routes show --json`); empty if none.
fn paths(node: &Node, service: &str) -> Vec<Value> {
    node.try_json(&["routes", "show", service])
        .and_then(|d| d["paths"].as_array().cloned())
        .unwrap_or_default()
}

/// The path `node` holds for `service` from `peer`.
fn path_from(node: &Node, service: &str, peer: &str) -> Option<Value> {
    paths(node, service).into_iter().find(|p| p["from"] == peer)
}

/// B's own record of its session with `peer`.
fn peer_record(node: &Node, peer: &str) -> Option<Value> {
    node.try_json(&["peers", "list"])?
        .as_array()?
        .iter()
        .find(|p| p["node_id"] == peer)
        .cloned()
}

/// A's real books.acme is B's best path: next hop acme/a, valid.
fn assert_books_from_a(b: &Node) {
    let best = b.route("books.acme").expect("books.acme at B");
    assert_eq!(best["next_hop"], "acme/a", "{best}");
    assert_eq!(best["path"], serde_json::json!(["acme/a"]), "{best}");
    let from_a = path_from(b, "books.acme", "acme/a").expect("A's path at B");
    assert_eq!(from_a["valid"], true, "{from_a}");
    assert_eq!(from_a["best"], true, "{from_a}");
}

#[test]
fn a_peer_with_a_valid_certificate_cannot_forge_another_nodes_origin() {
    let s = setup("rogue-forge");
    let (a, b) = (&s.a, &s.b);
    let evil = connect_evil(&s);
    let rejected_before = counter(b, "router_manifests_rejected");
    let unverified_before = counter(b, "router_routes_origin_unverified");

    // 1. A manifest claiming origin acme/a, listing bank.acme, signed with evil's own key
    //    and certificate; then a route for bank.acme "originated by acme/a" under it.
    //    B takes both into its loop (the calls are acknowledged; the session stays up).
    let forged = evil.sign(manifest("acme/a", 1000, &["bank.acme"]));
    evil.send_manifest(forged)
        .expect("B acknowledges the signed call");
    evil.send_update(announce(
        &["bank.acme"],
        "acme/a",
        1000,
        &["acme/evil", "acme/a"],
    ))
    .expect("B acknowledges the update");

    // 2. B refused the manifest and counted the route as unverified.
    wait_for("B refused the forged manifest", || {
        (counter(b, "router_manifests_rejected") > rejected_before).then_some(())
    });
    wait_for("B counted bank.acme as origin-unverified", || {
        (counter(b, "router_routes_origin_unverified") > unverified_before).then_some(())
    });

    // 3. bank.acme never becomes a route: no valid path, not in `routes list`. (B keeps the
    //    invalid path, as counted above, but `routes show` lists paths only for services
    //    with a valid best, so it is not asserted on here.)
    let shown = paths(b, "bank.acme");
    assert!(
        shown
            .iter()
            .all(|p| p["valid"] == false && p["best"] == false),
        "a valid path to bank.acme at B: {shown:?}"
    );
    assert!(b.route("bank.acme").is_none());
    let listed = b.json(&["routes", "list"]);
    assert!(
        !listed.to_string().contains("bank.acme"),
        "bank.acme in B's routes: {listed}"
    );

    // 4. A's real books.acme at B is untouched, and the lie did not spread to A.
    assert_books_from_a(b);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        a.route("bank.acme").is_none(),
        "B exported the forged route"
    );
    assert!(paths(a, "bank.acme").is_empty());

    // 5. Evil re-announces A's real books.acme with an origin_seq beyond any manifest A
    //    signed: B keeps it as invalid, and A's path stays the best.
    let unverified_before = counter(b, "router_routes_origin_unverified");
    evil.send_update(announce(
        &["books.acme"],
        "acme/a",
        1_000_000,
        &["acme/evil", "acme/a"],
    ))
    .expect("B acknowledges the update");
    let held = wait_for("evil's books.acme path at B", || {
        path_from(b, "books.acme", "acme/evil")
    });
    assert_eq!(held["valid"], false, "{held}");
    assert_eq!(held["best"], false, "{held}");
    assert!(counter(b, "router_routes_origin_unverified") > unverified_before);
    assert_books_from_a(b);
    assert_eq!(
        a.route("books.acme").map(|r| r["next_hop"].clone()),
        Some(Value::Null),
        "A still originates books.acme itself"
    );

    // 6. Lies about origins are refused route by route; they do not end the session.
    assert!(b.peer_up("acme/evil"));
    assert!(b.peer_up("acme/a"));
    let inbox = evil.inbox();
    assert_eq!(inbox.opened_by.as_deref(), Some("acme/b"));
    assert!(
        inbox.end_of_table && inbox.signed >= 1,
        "B sent evil its table: {inbox:?}"
    );
    assert!(inbox.close.is_none(), "B closed on evil: {:?}", inbox.close);
}

#[test]
fn a_malformed_update_closes_the_session_with_a_reason_and_b_keeps_serving() {
    let s = setup("rogue-malformed");
    let (a, b) = (&s.a, &s.b);
    let bad_before = counter(b, "bad_input_from_peers");

    // 1. A legitimate first session: evil's own signed manifest and route are accepted.
    let evil = connect_evil(&s);
    evil.send_manifest(evil.sign(manifest("acme/evil", 1, &["evil.acme"])))
        .expect("manifest acknowledged");
    evil.send_update(announce(&["evil.acme"], "acme/evil", 1, &["acme/evil"]))
        .expect("update acknowledged");
    let route = wait_for("evil.acme at B", || b.route("evil.acme"));
    assert_eq!(route["next_hop"], "acme/evil", "{route}");
    wait_for("evil.acme at A", || a.route("evil.acme"));

    // 2. An announcement with an invalid service name, built with the raw builders from
    //    an otherwise valid batch: the call fails and B closes the connection with
    //    malformedMessage, after telling evil why in a close call.
    let valid = announce(&["fine.acme"], "acme/evil", 1, &["acme/evil"]);
    let refused = evil.send_raw_update(move |mut batch| {
        codec::update::write_batch(&valid, batch.reborrow());
        batch.get_announcements()?.get(0).set_service("NOT A NAME");
        Ok(())
    });
    let error = refused.expect_err("B refuses a batch with an invalid service name");
    assert!(error.contains("NOT A NAME"), "{error}");
    let closed = evil.closed();
    assert!(closed.is(CloseReason::MalformedMessage), "{closed:?}");
    let Closed::ByPeer { reason, .. } = &closed else {
        unreachable!()
    };
    assert!(reason.contains("NOT A NAME"), "close reason: {reason:?}");
    // B called close(malformedMessage, why) before closing (it waits for the answer).
    let told = evil.inbox().close.expect("B's close call");
    assert_eq!(told.0, CloseReason::MalformedMessage as u16, "{told:?}");
    assert!(told.1.contains("NOT A NAME"), "{told:?}");
    drop(evil);

    // 3. B counted it, ended the session without graceful restart (evil's routes are gone
    //    at once, here and at A), and records why.
    wait_for("B counted the bad input", || {
        (counter(b, "bad_input_from_peers") > bad_before).then_some(())
    });
    wait_for("evil's session down at B", || {
        (!b.peer_up("acme/evil")).then_some(())
    });
    wait_for("evil.acme withdrawn at B and A", || {
        (b.route("evil.acme").is_none() && a.route("evil.acme").is_none()).then_some(())
    });
    assert!(
        paths(b, "evil.acme").is_empty(),
        "{:?}",
        paths(b, "evil.acme")
    );
    let record = peer_record(b, "acme/evil").expect("evil is still a configured peer");
    let last_error = record["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("malformed"), "{record}");

    // 4. B keeps serving: status answers, the A–B session and A's route are intact.
    assert!(b.try_json(&["status"]).is_some());
    assert!(b.peer_up("acme/a") && a.peer_up("acme/b"));
    assert_books_from_a(b);

    // 5. A fresh session, another malformation: an attrIndex out of range. Same outcome.
    let evil = connect_evil(&s);
    let valid = announce(&["fine.acme"], "acme/evil", 1, &["acme/evil"]);
    let refused = evil.send_raw_update(move |mut batch| {
        codec::update::write_batch(&valid, batch.reborrow());
        batch.get_announcements()?.get(0).set_attr_index(7);
        Ok(())
    });
    let error = refused.expect_err("B refuses an attrIndex out of range");
    assert!(error.contains("attrIndex"), "{error}");
    let closed = evil.closed();
    assert!(closed.is(CloseReason::MalformedMessage), "{closed:?}");
    let told = evil.inbox().close.expect("B's close call");
    assert_eq!(told.0, CloseReason::MalformedMessage as u16, "{told:?}");
    drop(evil);
    wait_for("B counted both bad inputs", || {
        (counter(b, "bad_input_from_peers") >= bad_before + 2).then_some(())
    });
    assert!(b.route("fine.acme").is_none());
    assert!(b.try_json(&["status"]).is_some());
    assert!(b.peer_up("acme/a"));
    assert_books_from_a(b);
}

/// A stream header from evil (`hops` travelled, `requester` claimed).
fn header(service: &str, requester: &str, hops: u8) -> Vec<u8> {
    trellis_daemon::dataplane::wire::StreamHeader {
        service: rogue_peer::service(service),
        requester: rogue_peer::node(requester),
        hops,
        stream_id: 42,
        trace: None,
    }
    .encode()
}

#[test]
fn bad_data_plane_streams_are_reset_with_their_reason_and_b_keeps_serving() {
    use trellis_daemon::dataplane::wire::Reset;
    let s = setup("rogue-streams");
    let evil = connect_evil(&s);
    let code = |bytes: Vec<u8>| Reset::from_code(evil.data_stream(bytes).expect("a reset"));

    // Not a stream header at all.
    assert_eq!(code(b"GET / HTTP/1.1\r\n".to_vec()), Reset::BadHeader);
    // The first hop must name the peer that sent it.
    assert_eq!(code(header("books.acme", "acme/a", 1)), Reset::BadHeader);
    // More hops than B allows (16).
    assert_eq!(code(header("books.acme", "acme/evil", 17)), Reset::HopLimit);
    // No route at B.
    assert_eq!(code(header("nothing.acme", "acme/evil", 1)), Reset::NoRoute);
    // B forwards to A, whose endpoint (127.0.0.1:8080) does not answer: A's reason comes
    // back through B unchanged.
    assert_eq!(
        code(header("books.acme", "acme/evil", 1)),
        Reset::EndpointRefused
    );
    assert_eq!(counter(&s.b, "dataplane_refused_bad_header"), 2);
    assert_eq!(counter(&s.b, "dataplane_refused_hop_limit"), 1);
    assert_eq!(counter(&s.b, "dataplane_refused_no_route"), 1);
    assert_eq!(counter(&s.a, "dataplane_refused_endpoint_refused"), 1);

    // Resets end streams, not the session; B keeps serving.
    assert!(s.b.peer_up("acme/evil"), "the session with evil stays up");
    assert_books_from_a(&s.b);
}
