//! A node stops when it is told to: SIGTERM or SIGINT ends `trellisd node run` with exit 0
//! whatever its sessions are doing (up, down, dials in backoff, passive peers only, an
//! admin client connected), and it starts again at once on the same port.
//!
//! ```text
//!   A ──dials──► B (B is passive towards A)
//!   A ──dials──► C (never started: A's dial is in backoff)
//! ```

mod common;

use std::os::unix::net::UnixStream;

use common::{wait_for, Authority, Node, Scratch};

fn stops_cleanly(node: &mut Node, signal: &str) {
    let status = node.stop_with(signal);
    assert!(
        status.success(),
        "{} exited with {status} after kill {signal}",
        node.id
    );
    assert!(
        !node.dir.join("admin.sock").exists(),
        "{} left admin.sock behind",
        node.id
    );
}

#[test]
fn a_node_exits_on_sigterm_or_sigint_with_any_mix_of_sessions_and_restarts_on_its_port() {
    let scratch = Scratch::new("shutdown");
    let authority = Authority::start(scratch.join("auth"), "acme", &[]);
    let js = authority.token(&["--auto-approve", "--uses", "3"]);
    let mut a = Node::join(&scratch, &authority, "acme", "a", &js);
    let mut b = Node::join(&scratch, &authority, "acme", "b", &js);
    let c = Node::join(&scratch, &authority, "acme", "c", &js);
    a.configure(&[(b.id.as_str(), b.port), (c.id.as_str(), c.port)], "");
    b.configure(
        &[],
        &format!(
            "[[peer]]\naddress = \"127.0.0.1:{}\"\nnode_id = \"{}\"\npassive = true\n",
            a.port, a.id
        ),
    );
    a.start();
    b.start();
    wait_for("A–B up", || {
        (a.peer_up("acme/b") && b.peer_up("acme/a")).then_some(())
    });

    // 1. A: one dialed session up, one dial in backoff, an admin client connected.
    let admin = UnixStream::connect(a.dir.join("admin.sock")).expect("admin connection");
    stops_cleanly(&mut a, "-TERM");
    drop(admin);
    wait_for("B sees A down", || (!b.peer_up("acme/a")).then_some(()));

    // 2. A again, on the same port.
    a.start();
    wait_for("A–B up again", || {
        (a.peer_up("acme/b") && b.peer_up("acme/a")).then_some(())
    });

    // 3. B: passive peers only, its session up.
    stops_cleanly(&mut b, "-TERM");
    b.start();
    wait_for("A–B up after B's restart", || {
        (a.peer_up("acme/b") && b.peer_up("acme/a")).then_some(())
    });

    // 4. B gone again: A has no session up and both of its dials in backoff; SIGINT.
    stops_cleanly(&mut b, "-TERM");
    wait_for("A sees B down", || (!a.peer_up("acme/b")).then_some(()));
    stops_cleanly(&mut a, "-INT");

    // 5. Both come back on their ports and peer again.
    a.start();
    b.start();
    wait_for("A–B up at the end", || {
        (a.peer_up("acme/b") && b.peer_up("acme/a")).then_some(())
    });
}
