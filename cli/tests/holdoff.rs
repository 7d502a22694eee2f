//! A peer over its max-routes limit is closed and then held off (as BGP's idle hold after
//! a maximum-prefix cease): refused at the handshake and not dialed until the hold-off
//! ends, audited, and let back in once it is over. A refused handshake is audited too.
//!
//! ```text
//!   A ── B     B allows A at most 2 routes; A advertises 3, then withdraws one
//! ```

mod common;

use common::{wait_for, Authority, Node, Scratch};

fn config(node: &Node, peer: &Node, extra_peer: &str, timers: &str) {
    let text = format!(
        "listen = \"127.0.0.1:{}\"\n[timers]\nhold_time = \"3s\"\nkeepalive = \"1s\"\n\
         connect_retry_min = \"100ms\"\nconnect_retry_max = \"1s\"\n{timers}\n\
         [[peer]]\naddress = \"127.0.0.1:{}\"\nnode_id = \"{}\"\n{extra_peer}\n",
        node.port, peer.port, peer.id
    );
    std::fs::write(node.dir.join("trellis.toml"), text).expect("write config");
}

fn events(node: &Node) -> String {
    node.json(&["audit"]).to_string()
}

#[test]
fn a_peer_over_its_route_limit_is_held_off_audited_and_let_back_after_the_hold_off() {
    let scratch = Scratch::new("holdoff");
    let authority = Authority::start(scratch.join("auth"), "acme", &[]);
    let js = authority.token(&["--auto-approve", "--uses", "3"]);
    let mut a = Node::join(&scratch, &authority, "acme", "a", &js);
    let mut b = Node::join(&scratch, &authority, "acme", "b", &js);
    config(&a, &b, "", "");
    config(&b, &a, "max_routes = 2", "max_routes_restart = \"4s\"");
    a.start();
    b.start();
    wait_for("A–B up", || {
        (a.peer_up("acme/b") && b.peer_up("acme/a")).then_some(())
    });

    // 1. A goes over B's limit: B closes the session and holds A off.
    for s in ["one.acme", "two.acme", "three.acme"] {
        a.json(&["routes", "advertise", s, "--endpoint", "127.0.0.1:9"]);
    }
    let held = wait_for("A held off at B", || {
        let peers = b.try_json(&["peers", "list"])?;
        let a_at_b = peers
            .as_array()?
            .iter()
            .find(|p| p["node_id"] == "acme/a")?;
        (a_at_b["state"] == "held off").then(|| a_at_b.clone())
    });
    assert!(
        held["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refused for 4s")),
        "{held}"
    );
    assert!(events(&b).contains("peer.held_off"), "{}", events(&b));
    assert_eq!(b.json(&["status"])["counters"]["peers_held_off"], 1);

    // 2. While held off, A's redials are refused at the handshake, and audited.
    wait_for("a refused handshake at B", || {
        let refused = b.json(&["status"])["counters"]["handshakes_refused"].as_u64()?;
        (refused > 0).then_some(())
    });
    assert!(!a.peer_up("acme/b"), "no session while A is held off");
    wait_for("the refusal in B's event log", || {
        events(&b).contains("peer.refused").then_some(())
    });

    // 3. A keeps to the limit now; after the hold-off the session comes back.
    a.json(&["routes", "withdraw", "three.acme"]);
    wait_for("A–B up after the hold-off", || {
        (a.peer_up("acme/b") && b.peer_up("acme/a")).then_some(())
    });
    assert!(events(&b).contains("peer.released"), "{}", events(&b));
    wait_for("two.acme at B", || b.route("two.acme"));
}
