//! A data dir belongs to one role and one org: no command overwrites another role's or
//! another org's keys and certificates, and each refusal names the dir and what to do.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{bin, code, join, stderr, Authority, Scratch};

fn trellisd(args: &[&str], dir: &Path) -> Output {
    Command::new(bin("trellisd"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("TRELLIS_LOG", "warn")
        .output()
        .expect("run trellisd")
}

fn refused_as_usage(out: &Output, what: &str) {
    assert_eq!(code(out), 2, "{what}: {}", stderr(out));
    let text = stderr(out);
    assert!(
        text.starts_with("error: ") && text.trim_end().lines().count() == 1,
        "{what}: one error line expected: {text}"
    );
}

#[test]
fn no_command_overwrites_a_data_dir_of_the_other_role_or_another_org() {
    let scratch = Scratch::new("datadirs");
    let acme = Authority::start(scratch.join("auth-acme"), "acme", &[]);
    let globex = Authority::start(scratch.join("auth-globex"), "globex", &[]);
    let acme_js = acme.token(&["--auto-approve", "--uses", "3"]);
    let globex_js = globex.token(&["--auto-approve"]);
    let node_dir = scratch.join("node");
    let joined = join(&node_dir, "edge-1", &acme_js);
    assert!(joined.status.success(), "join: {}", stderr(&joined));
    let node_ca = std::fs::read(node_dir.join("ca.crt")).expect("node ca.crt");
    let authority_ca = std::fs::read(acme.dir.join("ca.crt")).expect("authority ca.crt");

    // 1. An authority init or run in a node's dir.
    let out = trellisd(&["authority", "init", "--org", "acme"], &node_dir);
    refused_as_usage(&out, "authority init in a node dir");
    assert!(
        stderr(&out).contains("a node's data dir"),
        "{}",
        stderr(&out)
    );
    let out = trellisd(&["authority", "run", "--listen", "127.0.0.1:0"], &node_dir);
    refused_as_usage(&out, "authority run in a node dir");

    // 2. A node join or run in an authority's dir.
    let out = join(&acme.dir, "edge-2", &acme_js);
    refused_as_usage(&out, "node join in an authority dir");
    assert!(
        stderr(&out).contains("an authority's data dir"),
        "{}",
        stderr(&out)
    );
    let out = trellisd(&["node", "run"], &acme.dir);
    refused_as_usage(&out, "node run in an authority dir");
    assert!(
        !acme.dir.join("node.db").exists() && !acme.dir.join("node.key").exists(),
        "nothing of a node was written into the authority's dir"
    );

    // 3. A join for another org into a dir that holds acme's CA.
    let half = scratch.join("half-joined");
    std::fs::create_dir_all(&half).expect("dir");
    std::fs::write(half.join("ca.crt"), &authority_ca).expect("copy ca.crt");
    let out = join(&half, "edge-3", &globex_js);
    refused_as_usage(&out, "a join for globex over acme's ca.crt");
    assert_eq!(
        std::fs::read(half.join("ca.crt")).expect("ca"),
        authority_ca
    );

    // 4. An authority init over a lone CA certificate, and a second init.
    let out = trellisd(&["authority", "init", "--org", "initech"], &half);
    refused_as_usage(&out, "authority init over a ca.crt");
    let out = trellisd(&["authority", "init", "--org", "acme"], &acme.dir);
    assert_eq!(code(&out), 1, "second init: {}", stderr(&out));

    // Nothing was overwritten; the node still works with its own CA.
    assert_eq!(std::fs::read(node_dir.join("ca.crt")).expect("ca"), node_ca);
    assert_eq!(
        std::fs::read(acme.dir.join("ca.crt")).expect("ca"),
        authority_ca
    );
    let again = join(&scratch.join("node-2"), "edge-2", &acme_js);
    assert!(
        again.status.success(),
        "acme still enrols: {}",
        stderr(&again)
    );
}
