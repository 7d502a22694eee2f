//! Name ownership against real daemons (docs/adr/0011). A name belongs to the org of its
//! last label: a node refuses to advertise another org's name or a name without an org,
//! and a receiver drops (treats as withdrawn) and counts a route whose origin may not use
//! its name, even under a correctly signed manifest. The org's authority narrows who may
//! originate what with scopes, published in its signed trust snapshot.
//!
//! ```text
//!   A ── B ── evil (this process, a real acme node's key; B lists it as a peer)
//! ```

mod common;
mod rogue_peer;

use common::{code, free_port, stderr, trellis, wait_for, Authority, Node, Scratch};
use rogue_peer::{announce, manifest, Rogue};
use serde_json::Value;

fn counter(node: &Node, name: &str) -> u64 {
    node.json(&["status"])["counters"][name]
        .as_u64()
        .unwrap_or(0)
}

fn listed(node: &Node, service: &str) -> bool {
    node.json(&["routes", "list"])
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["service"] == service))
}

fn advertise(node: &Node, service: &str) -> std::process::Output {
    trellis(
        &node.dir,
        &["routes", "advertise", service, "--endpoint", "127.0.0.1:9"],
    )
}

#[test]
fn names_are_owned_by_their_org_and_scopes_narrow_who_may_originate_them() {
    let scratch = Scratch::new("names");
    let authority = Authority::start(scratch.join("auth-acme"), "acme", &[]);
    let js = authority.token(&["--auto-approve", "--uses", "3"]);
    let mut a = Node::join(&scratch, &authority, "acme", "a", &js);
    let mut b = Node::join(&scratch, &authority, "acme", "b", &js);
    let evil = Node::join(&scratch, &authority, "acme", "evil", &js);
    a.configure(&[("acme/b", b.port)], "");
    b.configure(&[("acme/a", a.port), ("acme/evil", free_port())], "");
    // Snapshots reach the nodes by the authority's push (the default poll is a minute).
    a.start();
    b.start();
    wait_for("A–B up", || {
        (a.peer_up("acme/b") && b.peer_up("acme/a")).then_some(())
    });

    // 1. A refuses, locally, names that are not acme's.
    let out = advertise(&a, "books.globex");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("books.globex belongs to globex"),
        "{}",
        stderr(&out)
    );
    let out = advertise(&a, "books");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("names no org"), "{}", stderr(&out));
    assert!(a.json(&[
        "routes",
        "advertise",
        "books.acme",
        "--endpoint",
        "127.0.0.1:9"
    ])["service"]
        .is_string());

    // 2. Evil (a valid acme node) signs a manifest with globex's name and one of acme's:
    //    B accepts acme's, drops globex's and counts it.
    let rogue = Rogue::connect(&evil.dir, "acme/b", b.port).expect("evil connects to B");
    wait_for("B sees evil up", || b.peer_up("acme/evil").then_some(()));
    let before = counter(&b, "router_routes_rejected_name_owner");
    rogue
        .send_manifest(rogue.sign(manifest("acme/evil", 1, &["shop.globex", "films.acme"])))
        .expect("manifest acknowledged");
    rogue
        .send_update(announce(
            &["shop.globex", "films.acme"],
            "acme/evil",
            1,
            &["acme/evil"],
        ))
        .expect("update acknowledged");
    wait_for("films.acme from evil at B", || b.route("films.acme"));
    wait_for("shop.globex counted at B", || {
        (counter(&b, "router_routes_rejected_name_owner") > before).then_some(())
    });
    assert!(
        !listed(&b, "shop.globex"),
        "the hijacked name is not a route"
    );
    let film = b.route("films.acme").expect("films.acme");
    assert_eq!(film["origin_check"], "valid", "{film}");

    // 3. The authority narrows acme's names: only A, only books.acme. The snapshot reaches
    //    B; evil's films.acme is withdrawn there, A's books.acme stays.
    let names = authority.json(&["names", "scope", "acme/a", "books.acme"]);
    let version = names["snapshot_version"].as_u64().expect("version");
    wait_for("B holds the scoped snapshot", || {
        let v = b.try_json(&["status"])?["snapshot_version"].as_u64()?;
        (v >= version).then_some(())
    });
    wait_for("films.acme withdrawn at B", || {
        (!listed(&b, "films.acme")).then_some(())
    });
    assert!(b.route("books.acme").is_some(), "A's books.acme stays");
    let listing = authority.json(&["names", "list"]);
    assert_eq!(listing["rules"][0]["subject"], "acme/a", "{listing}");

    // 4. A now refuses an acme name outside its scope.
    wait_for("A holds the scoped snapshot", || {
        let v = a.try_json(&["status"])?["snapshot_version"].as_u64()?;
        (v >= version).then_some(())
    });
    let out = advertise(&a, "films.acme");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("outside the name scopes"),
        "{}",
        stderr(&out)
    );

    // 5. A bad rule is refused by the authority with a reason.
    let out = trellis(
        &authority.dir,
        &["names", "scope", "acme/a", "books.globex"],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = trellis(&authority.dir, &["names", "delegate", "acme", "books.acme"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let _: Value = authority.json(&["names", "delegate", "globex", "books.acme"]);
}
