//! Node daemons peering for real: `trellisd node run` processes on 127.0.0.1, QUIC with
//! mutual TLS, Cap'n Proto sessions, SQLite stores, driven through `trellis`.
//!
//! ```text
//!   line:      A ── B ── C           triangle:  A ── B
//!                                                \  /
//!                                                 C
//! ```

mod common;

use common::{trellis, wait_for, Authority, Node, Scratch};

/// An authority for `org` and joined (not started) nodes named `names`.
fn org_with(scratch: &Scratch, org: &str, names: &[&str]) -> (Authority, Vec<Node>) {
    let authority = Authority::start(scratch.join(&format!("auth-{org}")), org, &[]);
    let uses = names.len().to_string();
    let js = authority.token(&["--auto-approve", "--uses", &uses]);
    let nodes = names
        .iter()
        .map(|n| Node::join(scratch, &authority, org, n, &js))
        .collect();
    (authority, nodes)
}

fn wire(nodes: &[Node], links: &[(usize, usize)]) {
    for (i, node) in nodes.iter().enumerate() {
        let peers: Vec<(&str, u16)> = links
            .iter()
            .filter_map(|&(a, b)| match (a == i, b == i) {
                (true, _) => Some((nodes[b].id.as_str(), nodes[b].port)),
                (_, true) => Some((nodes[a].id.as_str(), nodes[a].port)),
                _ => None,
            })
            .collect();
        node.configure(&peers, "");
    }
}

#[test]
fn a_service_advertised_at_a_reaches_c_through_b_and_its_withdrawal_reaches_everyone() {
    let scratch = Scratch::new("peer-line");
    let (_authority, mut nodes) = org_with(&scratch, "acme", &["a", "b", "c"]);
    wire(&nodes, &[(0, 1), (1, 2)]);
    for n in &mut nodes {
        n.start();
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_for("sessions up", || {
        (a.peer_up("acme/b") && c.peer_up("acme/b")).then_some(())
    });

    // 1. Advertised at A, C reaches it with path [B, A].
    a.json(&[
        "routes",
        "advertise",
        "books.acme",
        "--endpoint",
        "127.0.0.1:8080",
        "--protocol",
        "http",
    ]);
    let path = wait_for("books.acme at C", || c.path("books.acme"));
    assert_eq!(path, vec!["acme/b", "acme/a"]);
    let route = c.route("books.acme").expect("route");
    assert_eq!(route["next_hop"], "acme/b");
    assert_eq!(route["protocol"], "http");
    let shown = c.json(&["routes", "show", "books.acme"]);
    assert_eq!(
        shown["paths"][0]["valid"], true,
        "the origin's signed manifest lists it"
    );

    // 2. Withdrawn at A, it disappears everywhere.
    a.json(&["routes", "withdraw", "books.acme"]);
    wait_for("withdrawal at B and C", || {
        (b.route("books.acme").is_none() && c.route("books.acme").is_none()).then_some(())
    });
    assert!(a.route("books.acme").is_none());
    // A missing route is a clear refusal on the CLI.
    let out = trellis(&c.dir, &["routes", "show", "books.acme"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn in_a_triangle_dropping_a_b_leaves_both_on_the_path_through_c() {
    let scratch = Scratch::new("peer-triangle");
    let (_authority, mut nodes) = org_with(&scratch, "acme", &["a", "b", "c"]);
    wire(&nodes, &[(0, 1), (1, 2), (0, 2)]);
    for n in &mut nodes {
        n.start();
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_for("all sessions", || {
        (a.peer_up("acme/b") && a.peer_up("acme/c") && b.peer_up("acme/c")).then_some(())
    });
    a.json(&[
        "routes",
        "advertise",
        "books.acme",
        "--endpoint",
        "127.0.0.1:8080",
    ]);
    wait_for("direct paths", || {
        (b.path("books.acme")? == ["acme/a"] && c.path("books.acme")? == ["acme/a"]).then_some(())
    });
    // B already holds C's path as a backup.
    let shown = b.json(&["routes", "show", "books.acme"]);
    assert_eq!(shown["paths"].as_array().map(Vec::len), Some(2), "{shown}");

    // Drop the A–B link (both sides remove the peering).
    a.json(&["peers", "remove", "acme/b"]);
    b.json(&["peers", "remove", "acme/a"]);
    let path = wait_for("B through C", || {
        b.path("books.acme").filter(|p| p.len() == 2)
    });
    assert_eq!(path, vec!["acme/c", "acme/a"]);
    assert_eq!(c.path("books.acme"), Some(vec!["acme/a".to_owned()]));
}

#[test]
fn two_services_advertised_at_the_same_instant_both_converge() {
    let scratch = Scratch::new("peer-same-instant");
    let (_authority, mut nodes) = org_with(&scratch, "acme", &["a", "b", "c"]);
    wire(&nodes, &[(0, 1), (1, 2)]);
    for n in &mut nodes {
        n.start();
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_for("sessions up", || {
        (a.peer_up("acme/b") && c.peer_up("acme/b")).then_some(())
    });
    let spawn = |node: &Node, service: &str| {
        std::process::Command::new(common::bin("trellis"))
            .arg("--data-dir")
            .arg(&node.dir)
            .args([
                "routes",
                "advertise",
                service,
                "--endpoint",
                "127.0.0.1:9000",
            ])
            .output()
    };
    let (ra, rc) = std::thread::scope(|s| {
        let ta = s.spawn(|| spawn(a, "left.acme"));
        let tc = s.spawn(|| spawn(c, "right.acme"));
        (ta.join().expect("a"), tc.join().expect("c"))
    });
    assert!(ra.expect("run").status.success() && rc.expect("run").status.success());
    for node in [a, b, c] {
        wait_for("both services everywhere", || {
            (node.route("left.acme").is_some() && node.route("right.acme").is_some()).then_some(())
        });
    }
    assert_eq!(
        a.path("right.acme"),
        Some(vec!["acme/b".to_owned(), "acme/c".to_owned()])
    );
    assert_eq!(
        c.path("left.acme"),
        Some(vec!["acme/b".to_owned(), "acme/a".to_owned()])
    );
}

#[test]
fn a_restarted_node_restores_its_table_from_sqlite_and_peers_again() {
    let scratch = Scratch::new("peer-restart");
    let (_authority, mut nodes) = org_with(&scratch, "acme", &["a", "b", "c"]);
    wire(&nodes, &[(0, 1), (1, 2)]);
    for n in &mut nodes {
        n.start();
    }
    wait_for("sessions up", || {
        (nodes[0].peer_up("acme/b") && nodes[2].peer_up("acme/b")).then_some(())
    });
    nodes[0].json(&[
        "routes",
        "advertise",
        "books.acme",
        "--endpoint",
        "127.0.0.1:8080",
    ]);
    wait_for("books.acme at B", || nodes[1].route("books.acme"));

    // kill -9 B, and keep A away so B cannot relearn the route before we look.
    nodes[0].kill();
    nodes[1].kill();
    nodes[1].start();
    let restored = nodes[1].json(&["routes", "show", "books.acme"]);
    let path = &restored["paths"][0];
    assert_eq!(path["from"], "acme/a", "{restored}");
    assert_eq!(
        path["stale"], true,
        "restored paths are stale until the peer refreshes them"
    );

    // A comes back: the sessions come up again and the path is fresh.
    nodes[0].start();
    wait_for("B re-peered with A and C", || {
        (nodes[1].peer_up("acme/a") && nodes[1].peer_up("acme/c")).then_some(())
    });
    wait_for("fresh path at B", || {
        let shown = nodes[1].try_json(&["routes", "show", "books.acme"])?;
        (shown["paths"][0]["stale"] == false).then_some(())
    });
    wait_for("books.acme at C", || {
        nodes[2].path("books.acme").filter(|p| p.len() == 2)
    });
}

#[test]
fn an_unconfigured_peer_and_a_peer_from_an_untrusted_org_are_refused_at_the_handshake() {
    let scratch = Scratch::new("peer-refused");
    let (_acme, mut nodes) = org_with(&scratch, "acme", &["a", "b", "stranger"]);
    // a knows b; b knows a; "stranger" (same org, valid certificate) dials b unasked.
    nodes[0].configure(&[("acme/b", nodes[1].port)], "");
    nodes[1].configure(&[("acme/a", nodes[0].port)], "");
    nodes[2].configure(&[("acme/b", nodes[1].port)], "");
    for n in &mut nodes {
        n.start();
    }
    wait_for("a–b up", || nodes[0].peer_up("acme/b").then_some(()));
    let refused = wait_for("stranger refused", || {
        let peers = nodes[2].try_json(&["peers", "list"])?;
        let err = peers[0]["last_error"].as_str()?.to_owned();
        Some(err)
    });
    assert!(!nodes[2].peer_up("acme/b"), "refused: {refused}");
    // The refused side is told why, as a BGP NOTIFICATION would (docs/security.md).
    assert!(refused.contains("not configured"), "{refused}");
    let b_peers = nodes[1].json(&["peers", "list"]);
    assert!(!b_peers.to_string().contains("acme/stranger"));
}

#[test]
fn revoking_b_at_the_authority_closes_every_session_with_b() {
    let scratch = Scratch::new("peer-revoke");
    let (authority, mut nodes) = org_with(&scratch, "acme", &["a", "b", "c"]);
    wire(&nodes, &[(0, 1), (1, 2), (0, 2)]);
    // Only A polls the authority (every second); C learns the revocation through the mesh.
    nodes[0].env("TRELLIS_TRUST_REFRESH", "1s");
    for n in &mut nodes {
        n.start();
    }
    let (a, c) = (&nodes[0], &nodes[2]);
    wait_for("sessions with b", || {
        (a.peer_up("acme/b") && c.peer_up("acme/b")).then_some(())
    });
    a.json(&[
        "routes",
        "advertise",
        "books.acme",
        "--endpoint",
        "127.0.0.1:8080",
    ]);
    wait_for("books.acme at C", || c.route("books.acme"));

    let revoked = authority.json(&["nodes", "revoke", "acme/b", "--reason", "compromised"]);
    let version = revoked["snapshot_version"].as_u64().expect("version");
    wait_for("A and C hold the new snapshot", || {
        let va = a.try_json(&["status"])?["snapshot_version"].as_u64()?;
        let vc = c.try_json(&["status"])?["snapshot_version"].as_u64()?;
        (va >= version && vc >= version).then_some(())
    });
    wait_for("every session with B closed", || {
        (!a.peer_up("acme/b") && !c.peer_up("acme/b")).then_some(())
    });
    // C still reaches A directly, and B stays out.
    assert_eq!(c.path("books.acme"), Some(vec!["acme/a".to_owned()]));
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        !a.peer_up("acme/b") && !c.peer_up("acme/b"),
        "B was let back in"
    );
}

#[test]
fn a_running_node_renews_its_certificate_and_keeps_peering_after_the_old_one_expires() {
    let scratch = Scratch::new("peer-renew");
    // Certificates live 20 s (plus the 5-minute backdating), so nodes renew at once and
    // the first certificates expire during the test.
    let authority = Authority::start(scratch.join("auth"), "acme", &["--cert-lifetime", "20s"]);
    let js = authority.token(&["--auto-approve", "--uses", "3", "--ttl", "10m"]);
    let mut a = Node::join(&scratch, &authority, "acme", "a", &js);
    let mut b = Node::join(&scratch, &authority, "acme", "b", &js);
    let joined = std::time::Instant::now();
    let d_port = common::free_port();
    a.configure(&[("acme/b", b.port)], "");
    b.configure(&[("acme/a", a.port), ("acme/d", d_port)], "");
    for n in [&mut a, &mut b] {
        n.env("TRELLIS_TRUST_REFRESH", "1s");
        n.start();
    }
    wait_for("a–b up", || a.peer_up("acme/b").then_some(()));
    a.json(&[
        "routes",
        "advertise",
        "books.acme",
        "--endpoint",
        "127.0.0.1:8080",
    ]);
    wait_for("books.acme at B", || b.route("books.acme"));

    // 1. Both renew while running (the authority logs cert.renew for each).
    wait_for("renewals", || {
        let audit = authority.json(&["audit"]).to_string();
        (audit.contains("\"cert.renew\"") && audit.matches("cert.renew").count() >= 2).then_some(())
    });
    // 2. Past the first certificates' expiry, a new handshake still succeeds.
    let expiry = std::time::Duration::from_secs(22);
    std::thread::sleep(expiry.saturating_sub(joined.elapsed()));
    a.json(&["peers", "reset", "acme/b"]);
    wait_for("a–b up again with renewed certificates", || {
        let peers = a.try_json(&["peers", "list"])?;
        let sessions = peers[0]["sessions"].as_u64()?;
        (sessions >= 2 && a.peer_up("acme/b")).then_some(())
    });
    // 3. A node that joins now learns A's manifest, re-signed with A's renewed certificate.
    let mut d = Node::join(&scratch, &authority, "acme", "d", &js);
    d.port = d_port;
    d.configure(&[("acme/b", b.port)], "");
    d.start();
    let path = wait_for("books.acme at D", || d.path("books.acme"));
    assert_eq!(path, vec!["acme/b", "acme/a"]);
    let shown = d.json(&["routes", "show", "books.acme"]);
    assert_eq!(shown["paths"][0]["valid"], true, "{shown}");
}
