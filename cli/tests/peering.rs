//! Node daemons peering for real: `trellisd node run` processes on 127.0.0.1, QUIC with
//! mutual TLS, Cap'n Proto sessions, SQLite stores, driven through `trellis`.
//!
//! ```text
//!   line:      A ── B ── C           triangle:  A ── B
//!                                                \  /
//!                                                 C
//! ```

mod common;

use common::{org_with, trellis, wait_for, Authority, Node, Scratch};

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
    // Both originate `both.acme` at the same instant, then one service each.
    let (ra, rc) = std::thread::scope(|s| {
        let ta = s.spawn(|| [spawn(a, "both.acme"), spawn(a, "left.acme")]);
        let tc = s.spawn(|| [spawn(c, "both.acme"), spawn(c, "right.acme")]);
        (ta.join().expect("a"), tc.join().expect("c"))
    });
    for out in ra.into_iter().chain(rc) {
        assert!(out.expect("run").status.success());
    }
    wait_for("both origins of both.acme at B", || {
        let shown = b.try_json(&["routes", "show", "both.acme"])?;
        let paths = shown["paths"].as_array()?;
        (paths.len() == 2 && paths.iter().all(|p| p["valid"] == true)).then_some(())
    });
    for (node, own) in [(a, "acme/a"), (c, "acme/c")] {
        let best = node.route("both.acme").expect("best at an origin");
        assert_eq!(
            best["origin"], own,
            "an origin prefers its own service: {best}"
        );
    }
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

    // kill -9 B first (had A died first, B would have noticed within its 1 s detection
    // and rightly withdrawn A's routes), then keep A away so B cannot relearn the route
    // before we look.
    nodes[1].kill();
    nodes[0].kill();
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
fn acknowledged_changes_survive_kill_9_and_a_withdrawn_route_stays_gone_after_restarts() {
    let scratch = Scratch::new("peer-durable");
    let (_authority, mut nodes) = org_with(&scratch, "acme", &["a", "b"]);
    wire(&nodes, &[(0, 1)]);
    for n in &mut nodes {
        n.start();
    }
    wait_for("a–b up", || nodes[1].peer_up("acme/a").then_some(()));

    // An answered `advertise` and `peers add` are committed: kill -9 right after the
    // answer and both are there after the restart.
    nodes[1].json(&[
        "routes",
        "advertise",
        "own.acme",
        "--endpoint",
        "127.0.0.1:9000",
    ]);
    nodes[1].json(&["peers", "add", "acme/spare", "--address", "127.0.0.1:9"]);
    nodes[1].kill();
    nodes[1].start();
    let own = nodes[1].json(&["routes", "show", "own.acme"]);
    assert_eq!(own["paths"][0]["from"], serde_json::Value::Null, "{own}");
    let peers = nodes[1].json(&["peers", "list"]);
    assert!(
        peers.to_string().contains("acme/spare"),
        "a peer added at runtime is kept: {peers}"
    );

    // A route learned from A, withdrawn while B is down, is purged when A refreshes its
    // table, and does not come back at B's next start (session epochs grow across runs).
    nodes[0].json(&[
        "routes",
        "advertise",
        "gone.acme",
        "--endpoint",
        "127.0.0.1:9001",
    ]);
    wait_for("gone.acme at B", || nodes[1].route("gone.acme"));
    nodes[1].kill();
    nodes[0].json(&["routes", "withdraw", "gone.acme"]);
    nodes[1].start();
    wait_for("B re-peered with A", || {
        nodes[1].peer_up("acme/a").then_some(())
    });
    wait_for("gone.acme purged at B", || {
        nodes[1].route("gone.acme").is_none().then_some(())
    });
    nodes[0].kill();
    nodes[1].kill();
    nodes[1].start();
    let shown = nodes[1].json(&["routes", "show", "gone.acme"]);
    assert_eq!(
        shown["paths"],
        serde_json::json!([]),
        "a purged route came back from the store: {shown}"
    );

    // The node's event log records the operator's changes.
    let audit = nodes[1].json(&["audit"]);
    let actions: Vec<&str> = audit
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    for action in ["route.advertise", "peer.add", "session.up"] {
        assert!(actions.contains(&action), "{action} not in {actions:?}");
    }
}

#[test]
fn a_reload_adds_and_removes_peers_without_a_restart() {
    let scratch = Scratch::new("peer-reload");
    let (_authority, mut nodes) = org_with(&scratch, "acme", &["a", "b"]);
    nodes[0].configure(&[], "");
    nodes[1].configure(&[("acme/a", nodes[0].port)], "");
    for n in &mut nodes {
        n.start();
    }
    let (a, b) = (&nodes[0], &nodes[1]);

    // a learns of b from its edited file.
    a.configure(&[("acme/b", b.port)], "");
    let report = a.json(&["reload"]);
    assert_eq!(report["added"], serde_json::json!(["acme/b"]), "{report}");
    wait_for("a–b up after the reload", || {
        a.peer_up("acme/b").then_some(())
    });

    // A file with an error changes nothing.
    std::fs::write(a.dir.join("trellis.toml"), "listen = \"nowhere\"\n").expect("write");
    let refused = trellis(&a.dir, &["reload"]);
    assert_eq!(refused.status.code(), Some(2), "a bad file is refused");
    assert!(a.peer_up("acme/b"), "the session survives a refused reload");

    // b is dropped from the file: its session closes, a forgets it; a timer change is
    // reported as needing a restart.
    a.configure(&[], "[limits]\nmax_peers = 8\n");
    let report = a.json(&["reload"]);
    assert_eq!(report["removed"], serde_json::json!(["acme/b"]), "{report}");
    assert!(
        report["restart_needed"].to_string().contains("limits"),
        "{report}"
    );
    let peers = a.json(&["peers", "list"]);
    assert_eq!(peers, serde_json::json!([]), "{peers}");
    wait_for("b sees the session closed", || {
        (!b.peer_up("acme/a")).then_some(())
    });
}

#[test]
fn an_unconfigured_peer_and_a_peer_from_an_untrusted_org_are_refused_at_the_handshake() {
    let scratch = Scratch::new("peer-refused");
    let (acme, mut nodes) = org_with(&scratch, "acme", &["a", "b", "stranger"]);
    let (_globex, mut foreign) = org_with(&scratch, "globex", &["x"]);
    // a knows b; b knows a; "stranger" (same org, valid certificate) dials b unasked.
    nodes[0].configure(&[("acme/b", nodes[1].port)], "");
    nodes[1].configure(&[("acme/a", nodes[0].port)], "");
    nodes[2].configure(&[("acme/b", nodes[1].port)], "");
    // globex/x holds a valid certificate from its own org's CA and a peering config for
    // acme naming b; b has no peering with globex, so it trusts no CA for globex.
    foreign[0].configure(&[], "peering_dir = \"peerings\"");
    let peerings = foreign[0].dir.join("peerings");
    std::fs::create_dir_all(&peerings).expect("peering dir");
    std::fs::copy(acme.dir.join("ca.crt"), peerings.join("acme-ca.pem")).expect("copy CA");
    std::fs::write(
        peerings.join("acme.toml"),
        format!(
            "org = \"acme\"\nca = \"acme-ca.pem\"\nrole = \"peer\"\n[[endpoint]]\n\
             address = \"127.0.0.1:{}\"\nnode_id = \"acme/b\"\n",
            nodes[1].port
        ),
    )
    .expect("write the peering config");
    for n in nodes.iter_mut().chain(foreign.iter_mut()) {
        n.start();
    }
    wait_for("a–b up", || nodes[0].peer_up("acme/b").then_some(()));
    let untrusted = wait_for("globex/x refused", || {
        let peers = foreign[0].try_json(&["peers", "list"])?;
        Some(peers[0]["last_error"].as_str()?.to_owned())
    });
    assert!(!foreign[0].peer_up("acme/b"), "refused: {untrusted}");
    assert!(untrusted.contains("no CA trusted"), "{untrusted}");
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
    assert!(!b_peers.to_string().contains("globex/x"));
    let status = nodes[1].json(&["status"]);
    assert!(
        status["counters"]["handshakes_refused"].as_u64() > Some(0),
        "refused handshakes are counted: {status}"
    );
}

#[test]
fn revoking_b_at_the_authority_closes_every_session_with_b() {
    let scratch = Scratch::new("peer-revoke");
    let (authority, mut nodes) = org_with(&scratch, "acme", &["a", "b", "c"]);
    wire(&nodes, &[(0, 1), (1, 2), (0, 2)]);
    // The authority pushes the new snapshot to every node subscribed to it (the default
    // poll is only every minute); the mesh floods it too.
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
    // A and C stop dialing B for good; B's own status says it is revoked.
    for n in [a, c] {
        wait_for("B shown as revoked", || {
            let peers = n.try_json(&["peers", "list"])?;
            let b = peers
                .as_array()?
                .iter()
                .find(|p| p["node_id"] == "acme/b")?
                .clone();
            (b["state"] == "revoked").then_some(())
        });
    }
    wait_for("B knows it is revoked", || {
        (nodes[1].try_json(&["status"])?["revoked"] == true).then_some(())
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
