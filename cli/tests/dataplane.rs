//! The data plane for real: `trellisd node run` processes on 127.0.0.1 in two orgs carry
//! TCP connections hop by hop (`trellis connect`), with an echo server as the endpoint.
//!
//! ```text
//!   globex                 acme
//!   g1 (ingress) ──┐
//!                  a1 ──── a2 ──── a3  origin of echo.acme, other.acme, down.acme
//!   g2 (ingress) ──┘  \            /
//!                      a4 ────────     backup path (a1–a4 costs 30), max 2 streams/peer
//! ```
//!
//! What is checked (docs/adr/0013-data-plane.md): 1 MiB both ways byte-exact with
//! half-close through 3 hops and two orgs; 50 concurrent connections; a listener kept
//! across a restart; no route, unauthorized at the ingress, unauthorized at the origin and
//! a refused endpoint each reset at once and counted; a hop killed mid-transfer resets the
//! stream and the next connection takes the new path; a peer over its stream limit is
//! refused; a revoked ingress's open stream is cut and new ones fail.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::{
    echo_server, free_tcp_port, org_with, peering, peering_with, wait_for, Node, Scratch,
};

/// Deterministic, non-repeating-looking bytes.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends `data` through `port` (then a FIN) while reading the echo to its end.
fn echo_through(port: u16, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = conn.try_clone()?;
    let data = data.to_vec();
    let sending = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(&data)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut got = Vec::new();
    let read = conn.read_to_end(&mut got);
    let sent = sending.join().expect("sender thread");
    read?;
    sent?;
    Ok(got)
}

/// Whether a connection through `port` is refused: reset or closed before any echo.
fn refused(port: u16) -> bool {
    match echo_through(port, b"ping") {
        Ok(got) => got.is_empty(),
        Err(_) => true,
    }
}

fn counter(node: &Node, name: &str) -> u64 {
    node.json(&["status"])["counters"][name]
        .as_u64()
        .unwrap_or(0)
}

/// Every acme node's data-plane counters that are not zero (for failure messages).
fn dataplane_counters(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| {
            let status = n.try_json(&["status"]).unwrap_or_default();
            let counters: Vec<String> = status["counters"]
                .as_object()
                .map(|c| {
                    c.iter()
                        .filter(|(k, v)| k.starts_with("dataplane_") && v.as_u64() != Some(0))
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect()
                })
                .unwrap_or_default();
            let peers: Vec<String> = n
                .try_json(&["peers", "list"])
                .unwrap_or_default()
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!(
                                "{} rtt {} cost {}",
                                p["node_id"], p["rtt_us"], p["link_cost"]
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!("{}: {} [{}]", n.id, counters.join(" "), peers.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn connect(node: &Node, service: &str) -> u16 {
    let port = free_tcp_port();
    let listen = format!("127.0.0.1:{port}");
    node.json(&["connect", service, "--listen", &listen]);
    port
}

fn next_hop(node: &Node, service: &str) -> Option<String> {
    node.route(service)?["next_hop"].as_str().map(str::to_owned)
}

#[test]
fn connections_cross_three_hops_and_two_orgs_and_fail_over() {
    let scratch = Scratch::new("dataplane");
    let (acme_ca, mut acme) = org_with(&scratch, "acme", &["a1", "a2", "a3", "a4"]);
    let (globex_ca, mut globex) = org_with(&scratch, "globex", &["g1", "g2"]);
    let echo = echo_server();
    let closed = free_tcp_port();
    {
        let [a1, a2, a3, a4] = [&acme[0], &acme[1], &acme[2], &acme[3]];
        let [g1, g2] = [&globex[0], &globex[1]];
        let peering_dir = "peering_dir = \"peerings\"\n";
        let cost30 = format!(
            "[[peer]]\naddress = \"127.0.0.1:{}\"\nnode_id = \"{}\"\nlink_cost = 30\n",
            a4.port, a4.id
        );
        // a1's [[peer]] a4 with cost 30 comes from `extra`; the rest from `configure`.
        a1.configure(&[(&a2.id, a2.port)], &format!("{peering_dir}{cost30}"));
        a2.configure(&[(&a1.id, a1.port), (&a3.id, a3.port)], "");
        let origin_rules = "[[dataplane.allow]]\nservices = [\"echo.acme\", \"down.acme\"]\nfrom = [\"acme\", \"globex\"]\n\
                            [[dataplane.allow]]\nservices = [\"*\"]\nfrom = [\"acme\"]\n";
        a3.configure(&[(&a2.id, a2.port), (&a4.id, a4.port)], origin_rules);
        a4.configure(
            &[(&a3.id, a3.port)],
            &format!(
                "[dataplane]\nmax_streams_per_peer = 2\n\
                 [[peer]]\naddress = \"127.0.0.1:{}\"\nnode_id = \"{}\"\nlink_cost = 30\n",
                a1.port, a1.id
            ),
        );
        let ingress_rules = "[[dataplane.allow]]\nservices = [\"echo.acme\", \"nothing.acme\"]\nfrom = [\"globex\"]\n";
        g1.configure(&[], &format!("{peering_dir}{ingress_rules}"));
        g2.configure(&[], peering_dir);
        peering_with(a1, &globex_ca, &[g1, g2], "customer");
        peering(g1, &acme_ca, a1, "provider");
        peering(g2, &acme_ca, a1, "provider");
    }
    for node in acme.iter_mut().chain(globex.iter_mut()) {
        node.start();
    }
    let a3 = &acme[2];
    let endpoint = format!("127.0.0.1:{echo}");
    let down = format!("127.0.0.1:{closed}");
    for (service, ep) in [
        ("echo.acme", &endpoint),
        ("other.acme", &endpoint),
        ("down.acme", &down),
    ] {
        a3.json(&["routes", "advertise", service, "--endpoint", ep]);
    }
    let mut globex = globex.into_iter();
    let (mut g1, g2) = (globex.next().expect("g1"), globex.next().expect("g2"));
    wait_for("echo.acme at g1 and g2", || {
        (g1.route("echo.acme").is_some() && g2.route("down.acme").is_some()).then_some(())
    });
    wait_for("a1 routes echo.acme through a2", || {
        (next_hop(&acme[0], "echo.acme").as_deref() == Some("acme/a2")).then_some(())
    });

    // 1. 1 MiB both ways, byte-exact, with half-close: g1 → a1 → a2 → a3 → echo.
    let port = connect(&g1, "echo.acme");
    let data = payload(1 << 20, 7);
    let got = echo_through(port, &data).expect("echo through three hops");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the echo differs from what was sent");
    let list = g1.json(&["connect", "list"]);
    assert_eq!(list[0]["service"], "echo.acme");
    assert_eq!(list[0]["bytes_sent"], 1 << 20);
    assert_eq!(list[0]["bytes_received"], 1 << 20);
    assert_eq!(list[0]["next_hop"], "acme/a1");
    assert!(counter(&acme[1], "dataplane_bytes_forwarded") >= 2 << 20);

    // 2. 50 connections at once.
    let clients: Vec<_> = (0..50u64)
        .map(|i| std::thread::spawn(move || (i, echo_through(port, &payload(64 * 1024, i)))))
        .collect();
    for client in clients {
        let (i, got) = client.join().expect("client thread");
        let got = got.unwrap_or_else(|e| {
            panic!(
                "connection {i}: {e}; g1's listener: {}; counters: {}",
                g1.json(&["connect", "list"]),
                dataplane_counters(&acme)
            )
        });
        assert!(got == payload(64 * 1024, i), "connection {i} differs");
    }
    assert!(counter(&acme[2], "dataplane_streams_opened") >= 51);
    assert_eq!(counter(&g1, "dataplane_streams_active"), 0);

    // 3. The listener is kept across a restart.
    g1.stop_with("-TERM");
    g1.start();
    wait_for("g1's listener restored and routed", || {
        let list = g1.try_json(&["connect", "list"])?;
        // Both ends up: a collision between the two restart dials is settled.
        let up = g1.peer_up("acme/a1") && acme[0].peer_up("globex/g1");
        (up && list[0]["listening"] == true && list[0]["next_hop"] == "acme/a1").then_some(())
    });
    let echoed = echo_through(port, b"after restart").unwrap_or_else(|e| {
        panic!(
            "echo after the restart: {e}; g1: {} {}; {}",
            g1.json(&["connect", "list"]),
            g1.json(&["peers", "list"]),
            dataplane_counters(&acme)
        )
    });
    assert!(echoed == b"after restart");

    // 4. Refusals, each at once and counted where decided.
    let nothing = connect(&g1, "nothing.acme");
    assert!(refused(nothing), "no route must refuse");
    assert_eq!(counter(&g1, "dataplane_refused_no_route"), 1);
    let error = g1.json(&["connect", "list"]);
    let nothing_entry = error
        .as_array()
        .and_then(|l| l.iter().find(|c| c["service"] == "nothing.acme").cloned())
        .expect("nothing.acme listener");
    assert!(nothing_entry["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("no route")));
    let other_at_g1 = connect(&g1, "other.acme");
    assert!(
        refused(other_at_g1),
        "g1's own rules must refuse other.acme"
    );
    assert_eq!(counter(&g1, "dataplane_refused_unauthorized"), 1);
    let other_at_g2 = connect(&g2, "other.acme");
    assert!(refused(other_at_g2), "a3 must refuse globex for other.acme");
    assert_eq!(counter(a3, "dataplane_refused_unauthorized"), 1);
    let down_at_g2 = connect(&g2, "down.acme");
    assert!(refused(down_at_g2), "a closed endpoint must refuse");
    assert_eq!(counter(a3, "dataplane_refused_endpoint_refused"), 1);

    // 5. A hop killed mid-transfer: the stream is reset, the next connection takes a4.
    let mut live = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    live.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    live.write_all(b"before").expect("write");
    let mut buf = [0u8; 6];
    live.read_exact(&mut buf).expect("echo before the kill");
    acme[1].kill();
    let cut = live.read(&mut buf);
    assert!(
        matches!(&cut, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the stream through the killed hop must be reset, got {cut:?}; {}",
        dataplane_counters(&acme)
    );
    wait_for("a1 routes echo.acme through a4", || {
        (next_hop(&acme[0], "echo.acme").as_deref() == Some("acme/a4")).then_some(())
    });
    assert!(echo_through(port, b"new path").expect("echo via a4") == b"new path");

    // 6. a4 takes at most 2 streams from a1; a third is refused, not obeyed.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        c.write_all(b"hold").expect("write");
        let mut b = [0u8; 4];
        c.read_exact(&mut b).expect("held stream echoes");
        held.push(c);
    }
    assert!(refused(port), "a third stream through a4 must be refused");
    assert_eq!(counter(&acme[3], "dataplane_refused_peer_limit"), 1);

    // 7. Revoking g1 cuts its open streams and refuses new ones.
    globex_ca.json(&["nodes", "revoke", "globex/g1", "--reason", "test"]);
    for mut c in held {
        let mut b = [0u8; 4];
        let cut = c.read(&mut b);
        assert!(
            matches!(&cut, Err(_) | Ok(0)),
            "a stream of a revoked node must end, got {cut:?}"
        );
    }
    wait_for("g1 without a route after its revocation", || {
        g1.route("echo.acme").is_none().then_some(())
    });
    assert!(
        refused(port),
        "a revoked ingress must not carry connections"
    );
}
