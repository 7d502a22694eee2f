//! Bulk loads for real: `trellis routes advertise --file` and `routes withdraw --file`
//! against two `trellisd node run` processes. A load is one committed change: answered
//! once in `node.db` (it survives `kill -9` right after the answer), all or nothing (one
//! name the node may not use refuses the whole file), and its routes reach the peer.

mod common;

use common::{code, stderr, trellis, wait_for, Authority, Node, Scratch};

const ROUTES: usize = 20_000;

fn status(node: &Node, key: &str) -> u64 {
    node.json(&["status"])[key].as_u64().unwrap_or(0)
}

#[test]
fn a_route_file_is_one_committed_change_that_reaches_the_peer() {
    let scratch = Scratch::new("bulk");
    let authority = Authority::start(scratch.join("auth-acme"), "acme", &[]);
    let js = authority.token(&["--auto-approve", "--uses", "2"]);
    let mut a = Node::join(&scratch, &authority, "acme", "a", &js);
    let mut b = Node::join(&scratch, &authority, "acme", "b", &js);
    a.configure(&[(&b.id, b.port)], "");
    b.configure(&[(&a.id, a.port)], "");
    a.start();
    b.start();
    wait_for("a–b up", || a.peer_up("acme/b").then_some(()));

    // Text and JSON lines, comments and blank lines.
    let mut text = String::from("# a bulk load\n\n");
    for i in 0..ROUTES {
        if i % 2 == 0 {
            text.push_str(&format!("s{i}.acme 127.0.0.1:{}\n", 1024 + i % 1000));
        } else {
            text.push_str(&format!(
                "{{\"service\":\"s{i}.acme\",\"endpoint\":\"127.0.0.1:9000\",\"protocol\":\"http\"}}\n"
            ));
        }
    }
    let file = scratch.join("routes.txt");
    std::fs::write(&file, &text).expect("write the route file");
    let file = file.to_str().expect("path");
    let done = a.json(&["routes", "advertise", "--file", file]);
    assert_eq!(done["requested"], ROUTES as u64, "{done}");
    assert_eq!(done["changed"], ROUTES as u64, "{done}");
    assert_eq!(status(&a, "originated"), ROUTES as u64);
    wait_for("every route at b", || {
        (status(&b, "routes") >= ROUTES as u64).then_some(())
    });
    let one = b.route("s3.acme").expect("s3.acme at b");
    assert_eq!(one["protocol"], "http");
    assert_eq!(one["next_hop"], "acme/a");
    // One audit event for the load, not twenty thousand.
    let audit = a.json(&["audit"]);
    let loads = audit
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["action"] == "route.advertise")
                .count()
        })
        .unwrap_or(0);
    assert_eq!(loads, 1, "{audit}");

    // Answered means committed: kill -9 now, and every route is back after the start.
    a.kill();
    a.start();
    assert_eq!(status(&a, "originated"), ROUTES as u64);
    wait_for("a–b up again", || a.peer_up("acme/b").then_some(()));

    // All or nothing: a name of another org refuses the whole file.
    let bad = scratch.join("bad.txt");
    std::fs::write(
        &bad,
        "new1.acme 127.0.0.1:1\nbooks.globex 127.0.0.1:2\nnew2.acme 127.0.0.1:3\n",
    )
    .expect("write");
    let out = trellis(
        &a.dir,
        &["routes", "advertise", "--file", bad.to_str().expect("path")],
    );
    assert_ne!(code(&out), 0);
    let err = stderr(&out);
    assert!(
        err.contains("books.globex") && err.contains("nothing applied"),
        "{err}"
    );
    assert!(
        a.route("new1.acme").is_none(),
        "nothing of a refused load is applied"
    );

    // A malformed line is refused before anything is sent, by file and line.
    let broken = scratch.join("broken.txt");
    std::fs::write(&broken, "ok.acme 127.0.0.1:1\nno-endpoint.acme\n").expect("write");
    let out = trellis(
        &a.dir,
        &[
            "routes",
            "advertise",
            "--file",
            broken.to_str().expect("path"),
        ],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("broken.txt:2:"), "{}", stderr(&out));

    // The same file withdraws it all.
    let gone = a.json(&["routes", "withdraw", "--file", file]);
    assert_eq!(gone["changed"], ROUTES as u64, "{gone}");
    assert_eq!(status(&a, "originated"), 0);
    wait_for("every route gone at b", || {
        (status(&b, "routes") == 0).then_some(())
    });
}
