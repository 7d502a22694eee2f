//! Cedar policies with real daemons (ADR 0016): a node's policy file decides its admin
//! calls, originations, route imports and peer sessions; `policy check` explains a decision; a bad file
//! is refused at its line on reload and the policies in force stay.

mod common;

use common::{code, org_with, stderr, trellis, wait_for, Scratch};

const BASE: &str = r#"// Operators on the admin socket may do everything.
@id("local-operator")
permit (principal is Operator, action, resource is Daemon) when { principal.role == "local" };

@id("routing")
permit (principal, action in [Action::"connect_peer", Action::"originate_route", Action::"import_route", Action::"export_route"], resource);

@id("own-org")
permit (principal is Node, action == Action::"connect_to_service", resource is Service)
when { principal.org == "acme" };

@id("no-billing")
forbid (principal, action == Action::"originate_route", resource is Route)
when { resource.service like "*.billing.acme" };

@id("no-secret-import")
forbid (principal, action == Action::"import_route", resource is Route)
when { resource.service == "secret.acme" };
"#;

#[test]
fn the_policy_file_decides_and_a_bad_reload_keeps_it() {
    let scratch = Scratch::new("policy");
    let (_authority, mut nodes) = org_with(&scratch, "acme", &["a", "b"]);
    let policy = nodes[0].dir.join("policy.cedar");
    std::fs::write(&policy, BASE).expect("write policy");
    nodes[0].configure(
        &[("acme/b", nodes[1].port)],
        &format!("[policy]\nfile = {:?}\n", policy.display().to_string()),
    );
    nodes[1].configure(&[("acme/a", nodes[0].port)], "");
    for n in &mut nodes {
        n.start();
    }
    let a = &nodes[0];
    wait_for("a–b up", || a.peer_up("acme/b").then_some(()));

    // An import the file forbids never reaches a's table: b announces secret.acme
    // before open.acme, so once open.acme is there, secret.acme was decided.
    for name in ["secret.acme", "open.acme"] {
        let out = trellis(
            &nodes[1].dir,
            &["routes", "advertise", name, "--endpoint", "127.0.0.1:9"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    wait_for("open.acme at a", || a.route("open.acme"));
    assert!(a.route("secret.acme").is_none(), "filtered on import");

    // An origination the file forbids is refused, and says by which policy.
    let advertise = |name: &str| {
        trellis(
            &a.dir,
            &["routes", "advertise", name, "--endpoint", "127.0.0.1:9"],
        )
    };
    let refused = advertise("pay.billing.acme");
    assert_eq!(code(&refused), 1, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("no-billing"),
        "{}",
        stderr(&refused)
    );
    let ok = advertise("books.acme");
    assert!(ok.status.success(), "{}", stderr(&ok));

    // `policy check` explains: allowed by own-org, denied with no policy permitting it.
    let check = |principal: &str| {
        trellis(
            &a.dir,
            &[
                "--json",
                "policy",
                "check",
                "--principal",
                principal,
                "--action",
                "connect_to_service",
                "--resource",
                "Service::\"books.acme\"",
            ],
        )
    };
    let allowed = check("Node::\"acme/b\"");
    assert_eq!(code(&allowed), 0, "{}", stderr(&allowed));
    let v: serde_json::Value = serde_json::from_slice(&allowed.stdout).expect("json");
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["policies"], serde_json::json!(["own-org"]));
    let denied = check("Node::\"globex/gw\"");
    assert_eq!(code(&denied), 1);
    let v: serde_json::Value = serde_json::from_slice(&denied.stdout).expect("json");
    assert_eq!(v["decision"], "deny");

    // A bad file is refused at its line; the policies in force stay.
    std::fs::write(
        &policy,
        format!("{BASE}\npermit (principal action, resource);\n"),
    )
    .expect("write bad policy");
    let bad = trellis(&a.dir, &["policy", "reload"]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    let line = BASE.lines().count() + 2;
    assert!(
        stderr(&bad).contains(&format!("policy.cedar:{line}:")),
        "{}",
        stderr(&bad)
    );
    assert_eq!(code(&advertise("pay.billing.acme")), 1, "still forbidden");

    // A good reload takes effect: b may no longer open a session with a.
    std::fs::write(
        &policy,
        format!("{BASE}\n@id(\"cut-b\")\nforbid (principal == Node::\"acme/b\", action == Action::\"connect_peer\", resource);\n"),
    )
    .expect("write policy");
    let reloaded = trellis(&a.dir, &["policy", "reload"]);
    assert!(reloaded.status.success(), "{}", stderr(&reloaded));
    nodes[1].kill();
    nodes[1].start();
    // The old session ends with b's process (failure detection); every new one is
    // refused, so b stays down at a while it keeps dialing.
    let first = wait_for("a refuses b's new session", || {
        let s = nodes[0].json(&["status"]);
        s["counters"]["sessions_refused_by_policy"]
            .as_u64()
            .filter(|n| *n > 0 && !nodes[0].peer_up("acme/b"))
    });
    wait_for("a refuses b again, and b is still down", || {
        let s = nodes[0].json(&["status"]);
        let n = s["counters"]["sessions_refused_by_policy"].as_u64()?;
        (n > first && !nodes[0].peer_up("acme/b")).then_some(())
    });
}
