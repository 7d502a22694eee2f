//! Handshakes between real quinn endpoints on loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use trellis_policy::TrustSnapshot;
use trellis_routing::{NodeId, OrgId};

use super::*;
use crate::node::trust::TrustStore;
use crate::pki::{self, Ca, Issued};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn id(node: &str) -> NodeId {
    NodeId::new(node).expect("node id")
}

fn org_ca(org: &str) -> Ca {
    let org = OrgId::new(org).expect("org id");
    let key = pki::generate_key().expect("key");
    let der = pki::ca_certificate(&org, &key, now()).expect("ca");
    Ca::load(org, der, key).expect("load ca")
}

/// An identity for `node` issued by `ca`, and the issued certificate.
fn identity(ca: &Ca, node: &str) -> (Identity, Issued) {
    identity_at(ca, node, now(), pki::NODE_CERT_LIFETIME_SECS)
}

/// An identity for `node` issued by `ca` at `issued_at`, valid `lifetime` seconds.
fn identity_at(ca: &Ca, node: &str, issued_at: u64, lifetime: u64) -> (Identity, Issued) {
    let key = pki::generate_key().expect("key");
    let issued = ca
        .issue_node(&id(node), &key, issued_at, lifetime)
        .expect("issue");
    let chain = vec![
        CertificateDer::from(issued.der.clone()),
        CertificateDer::from(ca.der().to_vec()),
    ];
    let identity = Identity {
        node: id(node),
        chain,
        key: crate::tls::private_key(key.serialize_der()),
    };
    (identity, issued)
}

fn trusting(cas: &[&Ca]) -> Arc<TrustStore> {
    let trust = TrustStore::new();
    for ca in cas {
        trust.trust_ca(ca.org(), ca.der().to_vec());
    }
    Arc::new(trust)
}

fn admit_all() -> Admit {
    Arc::new(|_: &NodeId| true)
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// A node's endpoint on loopback, listening with `trust` and `admit`.
fn node_endpoint(identity: &Identity, trust: Arc<TrustStore>, admit: Admit) -> quinn::Endpoint {
    let server = server_config(identity, trust, admit, &Limits::default()).expect("server");
    endpoint(loopback(), server, identity).expect("endpoint")
}

/// Accepts one connection on `listener` in a task; yields the handshake's outcome.
fn accept_one(
    listener: &quinn::Endpoint,
) -> tokio::task::JoinHandle<Result<(quinn::Connection, PeerIdentity), TransportError>> {
    let listener = listener.clone();
    tokio::spawn(async move {
        let incoming = listener.accept().await.expect("endpoint open");
        accept(incoming).await
    })
}

/// What the dialer saw when the listener refused it: the dial failed, or the connection
/// it returned was then closed by the listener's alert.
async fn refusal_seen_by_dialer(dialed: Result<quinn::Connection, TransportError>) -> String {
    match dialed {
        Err(e) => e.to_string(),
        Ok(conn) => match conn.closed().await {
            quinn::ConnectionError::ConnectionClosed(close) => close.to_string(),
            quinn::ConnectionError::TransportError(e) => e.to_string(),
            other => panic!("connection ended without a handshake refusal: {other}"),
        },
    }
}

/// A listener `acme/a` issued by `acme` and a dialer `dialer` issued by `dialer_ca`; the
/// listener trusts `acme` and `listener_trust`, and admits with `admit`. Returns the
/// listener's outcome and what the dialer saw (its view of the listener if it connected).
async fn handshake(
    acme: &Ca,
    dialer_ca: &Ca,
    dialer: &str,
    listener_trust: Arc<TrustStore>,
    admit: Admit,
) -> (Result<PeerIdentity, String>, Result<PeerIdentity, String>) {
    listener_trust.trust_ca(acme.org(), acme.der().to_vec());
    let (a, _) = identity(acme, "acme/a");
    let (b, _) = identity(dialer_ca, dialer);
    let listener = node_endpoint(&a, listener_trust, admit);
    let addr = listener.local_addr().expect("addr");
    let dialer_trust = trusting(&[acme]);
    let dialing = node_endpoint(&b, dialer_trust.clone(), admit_all());
    let server = accept_one(&listener);
    let dialed = dial(
        &dialing,
        addr,
        &b,
        dialer_trust,
        id("acme/a"),
        &Limits::default(),
    )
    .await;
    let server = match server.await.expect("task") {
        Ok((_conn, peer)) => Ok(peer),
        Err(e) => Err(e.to_string()),
    };
    let client = match (&server, dialed) {
        (Ok(_), Ok(conn)) => peer_identity(&conn).map_err(|e| e.to_string()),
        (Ok(_), Err(e)) => Err(e.to_string()),
        (Err(_), dialed) => Err(refusal_seen_by_dialer(dialed).await),
    };
    (server, client)
}

#[tokio::test]
async fn two_nodes_of_one_org_connect_and_each_names_the_other() {
    let acme = org_ca("acme");
    let (server, client) = handshake(&acme, &acme, "acme/b", trusting(&[]), admit_all()).await;
    let server = server.expect("listener accepts acme/b");
    assert_eq!(server.node, id("acme/b"));
    assert!(server.not_after > now());
    assert_eq!(client.expect("dialer reaches acme/a").node, id("acme/a"));
}

#[tokio::test]
async fn a_dialer_expecting_one_node_refuses_another() {
    let acme = org_ca("acme");
    let trust = trusting(&[&acme]);
    let (b, _) = identity(&acme, "acme/b");
    let (c, _) = identity(&acme, "acme/c");
    let listener = node_endpoint(&c, trust.clone(), admit_all());
    let addr = listener.local_addr().expect("addr");
    let dialing = node_endpoint(&b, trust.clone(), admit_all());
    let server = accept_one(&listener);
    let dialed = dial(&dialing, addr, &b, trust, id("acme/b"), &Limits::default()).await;
    let err = dialed.expect_err("acme/c is not acme/b").to_string();
    assert!(
        err.contains("peer presented acme/c, expected acme/b"),
        "{err}"
    );
    assert!(server.await.expect("task").is_err());
}

#[tokio::test]
async fn a_partner_ca_vouches_only_for_nodes_of_its_own_org() {
    let acme = org_ca("acme");
    let globex = org_ca("globex");
    let (server, client) =
        handshake(&acme, &globex, "acme/x", trusting(&[&globex]), admit_all()).await;
    let err = server.expect_err("globex CA cannot issue acme/x");
    assert!(
        err.contains("does not verify to a CA trusted for org acme"),
        "{err}"
    );
    assert!(client.is_err());

    let (server, client) = handshake(
        &acme,
        &globex,
        "globex/y",
        trusting(&[&globex]),
        admit_all(),
    )
    .await;
    assert_eq!(server.expect("globex/y accepted").node, id("globex/y"));
    assert!(client.is_ok());
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let acme = org_ca("acme");
    let trust = trusting(&[&acme]);
    let (a, _) = identity(&acme, "acme/a");
    let (b, _) = identity_at(&acme, "acme/b", now() - 3 * 3600, 3600);
    let listener = node_endpoint(&a, trust.clone(), admit_all());
    let addr = listener.local_addr().expect("addr");
    let dialing = node_endpoint(&b, trust.clone(), admit_all());
    let server = accept_one(&listener);
    let dialed = dial(&dialing, addr, &b, trust, id("acme/a"), &Limits::default()).await;
    let err = server
        .await
        .expect("task")
        .expect_err("expired")
        .to_string();
    assert!(
        err.contains("certificate of acme/b does not verify"),
        "{err}"
    );
    assert!(err.contains("CertExpired"), "{err}");
    assert!(!refusal_seen_by_dialer(dialed).await.is_empty());
}

#[tokio::test]
async fn a_node_of_an_org_with_no_trusted_ca_is_refused() {
    let acme = org_ca("acme");
    let evil = org_ca("evil");
    let (server, client) = handshake(&acme, &evil, "evil/z", trusting(&[]), admit_all()).await;
    let err = server.expect_err("evil is not trusted");
    assert!(err.contains("no CA trusted for org evil"), "{err}");
    let seen = client.expect_err("dialer sees the refusal");
    assert!(!seen.is_empty());
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_by_the_listener() {
    let acme = org_ca("acme");
    let (b, issued) = identity(&acme, "acme/b");
    let trust = trusting(&[&acme]);
    let snapshot = TrustSnapshot {
        org: "acme".into(),
        version: 1,
        issued_at: now(),
        expires_at: now() + 3600,
        revoked_serials: vec![issued.serial.clone()],
        revoked_nodes: vec![],
        ca_certificate_der: acme.der().to_vec(),
        ..TrustSnapshot::default()
    };
    trust.apply_snapshot(acme.org(), &snapshot);
    let (a, _) = identity(&acme, "acme/a");
    let listener = node_endpoint(&a, trust.clone(), admit_all());
    let addr = listener.local_addr().expect("addr");
    let dialing = node_endpoint(&b, trust.clone(), admit_all());
    let server = accept_one(&listener);
    let dialed = dial(&dialing, addr, &b, trust, id("acme/a"), &Limits::default()).await;
    let err = server
        .await
        .expect("task")
        .expect_err("revoked")
        .to_string();
    assert!(err.contains("certificate of acme/b is revoked"), "{err}");
    assert!(!refusal_seen_by_dialer(dialed).await.is_empty());
}

#[tokio::test]
async fn a_dialer_refuses_a_listener_whose_node_is_revoked() {
    let acme = org_ca("acme");
    let trust = trusting(&[&acme]);
    let snapshot = TrustSnapshot {
        org: "acme".into(),
        version: 1,
        issued_at: now(),
        expires_at: now() + 3600,
        revoked_serials: vec![],
        revoked_nodes: vec!["acme/a".into()],
        ca_certificate_der: acme.der().to_vec(),
        ..TrustSnapshot::default()
    };
    trust.apply_snapshot(acme.org(), &snapshot);
    let (a, _) = identity(&acme, "acme/a");
    let (b, _) = identity(&acme, "acme/b");
    let listener = node_endpoint(&a, trusting(&[&acme]), admit_all());
    let addr = listener.local_addr().expect("addr");
    let dialing = node_endpoint(&b, trust.clone(), admit_all());
    let server = accept_one(&listener);
    let dialed = dial(&dialing, addr, &b, trust, id("acme/a"), &Limits::default()).await;
    let err = dialed.expect_err("acme/a is revoked").to_string();
    assert!(err.contains("certificate of acme/a is revoked"), "{err}");
    assert!(server.await.expect("task").is_err());
}

#[tokio::test]
async fn a_node_that_is_not_a_configured_peer_is_refused() {
    let acme = org_ca("acme");
    let only_c: Admit = Arc::new(|node: &NodeId| node.as_str() == "acme/c");
    let (server, client) = handshake(&acme, &acme, "acme/b", trusting(&[]), only_c).await;
    let err = server.expect_err("acme/b not configured");
    assert!(err.contains("peer acme/b is not configured"), "{err}");
    assert!(client.is_err());
}

#[tokio::test]
async fn a_client_offering_another_alpn_is_refused() {
    let acme = org_ca("acme");
    let trust = trusting(&[&acme]);
    let (a, _) = identity(&acme, "acme/a");
    let (b, _) = identity(&acme, "acme/b");
    let listener = node_endpoint(&a, trust.clone(), admit_all());
    let addr = listener.local_addr().expect("addr");
    let dialing = node_endpoint(&b, trust.clone(), admit_all());
    let server = accept_one(&listener);
    let tls = rustls_client(&b, trust, id("acme/a"), b"other/1").expect("tls");
    let config = quic_client(tls, &Limits::default()).expect("client");
    let dialed = dialing
        .connect_with(config, addr, SERVER_NAME)
        .expect("connect")
        .await;
    assert!(dialed.is_err(), "wrong ALPN must not connect");
    assert!(server.await.expect("task").is_err());
}

#[test]
fn an_identity_whose_certificate_names_another_node_is_unusable() {
    let acme = org_ca("acme");
    let (mut b, _) = identity(&acme, "acme/b");
    b.node = id("acme/c");
    let err = server_config(&b, trusting(&[&acme]), admit_all(), &Limits::default())
        .expect_err("mismatch");
    assert!(
        err.to_string().contains("certificate names acme/b"),
        "{err}"
    );
}

#[test]
fn a_keep_alive_not_shorter_than_the_idle_timeout_is_refused() {
    let acme = org_ca("acme");
    let (b, _) = identity(&acme, "acme/b");
    let limits = Limits {
        keep_alive: Limits::default().idle_timeout,
        ..Limits::default()
    };
    let err = client_config(&b, trusting(&[&acme]), id("acme/a"), &limits).expect_err("limits");
    assert!(matches!(err, TransportError::Limits(_)), "{err}");
}

/// A node restarted on its address with its key: a peer still holding the connection to
/// the old process gets a stateless reset with its next packet, not a silent hold-timer
/// wait.
#[tokio::test]
async fn a_restarted_node_resets_a_peers_connection_to_its_old_process() {
    let acme = org_ca("acme");
    let (a, _) = identity(&acme, "acme/a");
    let (b, _) = identity(&acme, "acme/b");
    let trust = trusting(&[&acme]);

    // The "old process" of a: its own runtime on a thread, dropped without closing
    // anything (as kill -9 leaves it).
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (old_a, old_trust) = (a.clone(), trust.clone());
    let old = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        rt.spawn(async move {
            let listener = node_endpoint(&old_a, old_trust, admit_all());
            addr_tx
                .send(listener.local_addr().expect("addr"))
                .expect("send addr");
            let incoming = listener.accept().await.expect("endpoint open");
            let (accepted, _) = accept(incoming).await.expect("accepted");
            // Echo b's probe (see below).
            let (mut send, mut recv) = accepted.accept_bi().await.expect("probe stream");
            let probe = recv.read_to_end(64).await.expect("probe");
            send.write_all(&probe).await.expect("echo");
            send.finish().expect("echo finished");
            std::future::pending::<()>().await;
        });
        let _ = rt.block_on(stop_rx);
        // Shutting the runtime down drops the endpoint's driver mid-flight: no close
        // frame is sent, the socket is released.
        drop(_guard);
        rt.shutdown_background();
    });
    let addr = addr_rx.recv().expect("old a listening");
    let dialing = node_endpoint(&b, trust.clone(), admit_all());
    let conn = dial(
        &dialing,
        addr,
        &b,
        trust.clone(),
        id("acme/a"),
        &Limits::default(),
    )
    .await
    .expect("dial");
    // `dial` returns once b has sent its Finished, before a has even read it. Until b
    // receives a's HANDSHAKE_DONE its handshake is unconfirmed: it keeps retransmitting its
    // Finished in long-header Handshake packets (with any 1-RTT frame coalesced behind
    // them), which an endpoint never answers with a stateless reset, so b would wait for
    // its idle timeout. a sends HANDSHAKE_DONE with its first 1-RTT packet after the
    // handshake, ahead of any stream data: once b has read a's echo, its connection is
    // fully established, as the connection to a running process is.
    let (mut probe, mut echo) = conn.open_bi().await.expect("probe stream");
    probe.write_all(b"probe").await.expect("probe");
    probe.finish().expect("probe finished");
    assert_eq!(echo.read_to_end(64).await.expect("echo"), b"probe");
    let _ = stop_tx.send(());
    old.join().expect("old a gone");

    // The new process binds the same address with the same key.
    let server = server_config(&a, trust.clone(), admit_all(), &Limits::default()).expect("server");
    let restarted = endpoint(addr, server, &a).expect("rebind the same address");

    // b sends on the old connection: the new process answers with a stateless reset. (A
    // bidirectional stream: peers may open no unidirectional ones, so `open_uni` would wait
    // for the end of the connection.)
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        if let Ok((mut stream, _)) = conn.open_bi().await {
            let _ = stream.write_all(&[0u8; 200]).await;
        }
        conn.closed().await
    })
    .await;
    drop(restarted);
    assert!(
        matches!(outcome, Ok(quinn::ConnectionError::Reset)),
        "the old connection ended with {outcome:?}"
    );
}
