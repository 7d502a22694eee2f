//! Peer scores with real daemons: session failures lower a peer's trust and raise its
//! link cost, `peers show` says so, and a restart does not forget it (ADR 0014).

mod common;

use common::{wait_for, Authority, Node, Scratch};

fn peer(node: &Node, id: &str) -> serde_json::Value {
    node.json(&["peers", "show", id])
}

#[test]
fn failures_lower_trust_and_survive_a_restart() {
    let scratch = Scratch::new("scoring");
    let authority = Authority::start(scratch.join("auth-acme"), "acme", &[]);
    let js = authority.token(&["--auto-approve", "--uses", "2"]);
    let mut a = Node::join(&scratch, &authority, "acme", "a", &js);
    let mut b = Node::join(&scratch, &authority, "acme", "b", &js);
    a.configure(&[("acme/b", b.port)], "");
    b.configure(&[("acme/a", a.port)], "");
    a.start();
    b.start();
    wait_for("a–b up", || a.peer_up("acme/b").then_some(()));
    let fresh = peer(&a, "acme/b");
    assert_eq!(fresh["trust"], 100);
    assert_eq!(fresh["failures"], 0);
    assert_eq!(fresh["base_cost"], 10);
    // Measured while up: QUIC's RTT estimate arrives within a second.
    wait_for("an RTT for b", || peer(&a, "acme/b")["rtt_us"].as_u64());

    // Two crashes of b: at least two session failures at a (a session that a loaded
    // host lets time out while b restarts counts too).
    let mut failures = 0;
    for _ in 0..2 {
        b.kill();
        failures = wait_for("a notices b is gone", || {
            peer(&a, "acme/b")["failures"]
                .as_u64()
                .filter(|f| *f > failures)
        });
        b.start();
        wait_for("a–b up again", || a.peer_up("acme/b").then_some(()));
    }
    let hurt = peer(&a, "acme/b");
    let failures = hurt["failures"].as_u64().unwrap_or_default();
    assert!(failures >= 2, "{hurt}");
    assert_eq!(
        hurt["trust"].as_u64(),
        Some(100u64.saturating_sub(10 * failures)),
        "10 points per failure: {hurt}"
    );
    // Two failures and trust 80: at least 10 × 1.2 × 2 = 24, announced after the 2 s
    // confirmation.
    let cost = wait_for("b's cost rises", || {
        peer(&a, "acme/b")["link_cost"]
            .as_u64()
            .filter(|c| *c >= 24)
    });

    // A restart of a keeps what it learned about b.
    a.stop_with("-TERM");
    a.start();
    let remembered = peer(&a, "acme/b");
    assert_eq!(remembered["failures"], failures, "{remembered}");
    assert_eq!(remembered["trust"], hurt["trust"]);
    assert!(
        remembered["link_cost"].as_u64().is_some_and(|c| c >= 24),
        "the cost it had ({cost}) is where it starts: {remembered}"
    );
}
