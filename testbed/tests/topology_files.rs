//! Topology files (`testbed/topologies/*.toml`): parsing, validation errors,
//! `--topology` resolution, and simulating the shipped files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use trellis_routing::Relationship;
use trellis_testbed::run::{audit, service_of};
use trellis_testbed::sim::{LinkParams, Sim, SimConfig};
use trellis_testbed::topology::Topology;
use trellis_testbed::topology_file::{load, parse, resolve, LinkImpairment, TopologyFile};

const LONG: Duration = Duration::from_secs(600);

fn dir() -> PathBuf {
    manifest_dir().join("topologies")
}

fn shipped() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// Every node originates one service; the network must go quiet with every
/// pair delivered and no loop.
fn assert_converges_healthy(t: &Topology, what: &str) {
    let cfg = SimConfig {
        mrai: Duration::from_millis(20),
        ..SimConfig::default()
    };
    let mut s = Sim::new(t, LinkParams::default(), cfg);
    s.start();
    for i in 0..t.nodes.len() {
        let name = service_of(&s, i);
        s.originate(i, name, Duration::ZERO);
    }
    assert!(s.run(LONG), "{what}: not quiet");
    let a = audit(&s);
    assert_eq!(
        (a.undelivered, a.loops, a.partitioned),
        (0, 0, 0),
        "{what}: {a:?}"
    );
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

const TWO_ORGS: &str = r#"
[[org]]
name = "acme"
nodes = ["edge-1", "core"]
[[org]]
name = "globex"
nodes = ["gw"]
[[link]]
a = "acme/edge-1"
b = "acme/core"
"#;

#[test]
fn every_shipped_file_parses_and_converges() {
    let files = shipped();
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        let tf = load(f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tf.impairments.len(), tf.topology.links.len());
        assert!(!tf.orgs.is_empty());
        assert_converges_healthy(&tf.topology, &f.display().to_string());
    }
}

#[test]
fn the_example_copy_of_three_orgs_is_the_same_file() {
    let example = manifest_dir().join("../examples/topologies/three-orgs.toml");
    assert_eq!(
        std::fs::read_to_string(example).unwrap(),
        std::fs::read_to_string(dir().join("three-orgs.toml")).unwrap()
    );
}

#[test]
fn three_orgs_has_its_orgs_roles_and_impairments() {
    let tf = load(&dir().join("three-orgs.toml")).unwrap();
    assert_eq!(tf.orgs, ["acme", "globex", "initech"]);
    let t = &tf.topology;
    assert_eq!(t.nodes.len(), 9);
    assert_eq!(t.nodes[0].as_str(), "acme/edge-1");
    let role = |a: &str, b: &str| {
        t.links
            .iter()
            .find(|l| t.nodes[l.a].as_str() == a && t.nodes[l.b].as_str() == b)
            .map(|l| l.role)
    };
    assert_eq!(
        role("acme/edge-1", "globex/gw-west"),
        Some(Relationship::Provider)
    );
    assert_eq!(
        role("acme/edge-2", "initech/edge-1"),
        Some(Relationship::Provider)
    );
    assert_eq!(
        role("globex/gw-east", "initech/edge-2"),
        Some(Relationship::Peer)
    );
    assert_eq!(
        role("acme/edge-1", "acme/edge-2"),
        Some(Relationship::Internal)
    );
    let peer = t
        .links
        .iter()
        .position(|l| l.role == Relationship::Peer)
        .unwrap();
    assert_eq!(
        tf.impairments[peer],
        LinkImpairment {
            delay_ms: 30.0,
            jitter_ms: 3.0,
            loss: 0.0
        }
    );
    assert_converges_healthy(t, "three-orgs");
}

#[test]
fn lossy_line_has_one_lossy_link() {
    let tf = load(&dir().join("lossy-line.toml")).unwrap();
    assert_eq!(tf.topology.nodes.len(), 4);
    let lossy: Vec<&LinkImpairment> = tf.impairments.iter().filter(|i| i.loss > 0.0).collect();
    assert_eq!(lossy.len(), 1);
    assert!((lossy[0].loss - 0.05).abs() < 1e-12);
    assert_eq!(lossy[0].delay_ms, 40.0);
}

#[test]
fn a_link_to_an_unknown_node_is_named_with_its_line() {
    let e = err(&format!(
        "{TWO_ORGS}[[link]]\na = \"acme/edge-2\"\nb = \"globex/gw\"\nrole = \"provider\"\n"
    ));
    assert!(e.starts_with("line 12: "), "{e}");
    assert!(e.contains("no such node acme/edge-2"), "{e}");
    assert!(e.contains("edge-1, core"), "lists the org's nodes: {e}");

    let e = err(&format!(
        "{TWO_ORGS}[[link]]\na = \"gw\"\nb = \"acme/core\"\n"
    ));
    assert!(e.contains("did you mean globex/gw?"), "{e}");
    let e = err(&format!(
        "{TWO_ORGS}[[link]]\na = \"initech/x\"\nb = \"acme/core\"\n"
    ));
    assert!(e.contains("no org \"initech\""), "{e}");
}

#[test]
fn a_cross_org_link_needs_a_role() {
    let e = err(&format!(
        "{TWO_ORGS}[[link]]\na = \"acme/core\"\nb = \"globex/gw\"\n"
    ));
    assert!(e.starts_with("line 12: link acme/core - globex/gw"), "{e}");
    assert!(e.contains("needs a role"), "{e}");
    assert!(e.contains("customer"), "{e}");
    let e = err(&format!(
        "{TWO_ORGS}[[link]]\na = \"acme/core\"\nb = \"globex/gw\"\nrole = \"boss\"\n"
    ));
    assert!(e.starts_with("line 14: "), "{e}");
    assert!(e.contains("unknown role \"boss\""), "{e}");
}

#[test]
fn an_internal_link_takes_no_role() {
    let text = TWO_ORGS.replace(
        "b = \"acme/core\"\n",
        "b = \"acme/core\"\nrole = \"peer\"\n",
    );
    let e = err(&text);
    assert!(e.starts_with("line 11: "), "{e}");
    assert!(e.contains("internal and takes no role"), "{e}");
}

#[test]
fn a_disconnected_graph_names_the_unreachable_node() {
    let e = err(TWO_ORGS);
    assert!(
        e.contains("node globex/gw is unreachable from acme/edge-1"),
        "{e}"
    );
    assert!(
        e.starts_with("line 7: "),
        "points at the node's declaration: {e}"
    );
}

#[test]
fn a_bad_loss_is_explained() {
    let link = |loss: &str| {
        format!(
            "{TWO_ORGS}[[link]]\na = \"acme/core\"\nb = \"globex/gw\"\nrole = \"peer\"\nloss = {loss}\n"
        )
    };
    let e = err(&link("\"lots\""));
    assert!(
        e.starts_with("line 15: link acme/core - globex/gw: loss"),
        "{e}"
    );
    assert!(e.contains("\"1%\""), "shows the accepted forms: {e}");
    let e = err(&link("\"5\""));
    assert!(e.contains("out of range"), "{e}");
    assert!(e.contains("did you mean \"5%\""), "{e}");
    assert!(err(&link("\"100%\"")).contains("out of range"));
    assert!(err(&link("-0.1")).contains("out of range"));
    for ok in ["\"1%\"", "\"0.01\"", "0.01"] {
        let tf = parse(&link(ok)).unwrap();
        assert!((tf.impairments[1].loss - 0.01).abs() < 1e-12, "{ok}");
    }
}

#[test]
fn durations_take_units() {
    let link = |delay: &str| {
        format!("{TWO_ORGS}[[link]]\na = \"acme/core\"\nb = \"globex/gw\"\nrole = \"peer\"\ndelay = {delay}\n")
    };
    let ms = |d: &str| parse(&link(d)).map(|tf| tf.impairments[1].delay_ms);
    assert_eq!(ms("\"20ms\""), Ok(20.0));
    assert_eq!(ms("\"1s\""), Ok(1000.0));
    assert_eq!(ms("\"1.5s\""), Ok(1500.0));
    assert_eq!(ms("\"250us\""), Ok(0.25));
    assert_eq!(ms("\"0\""), Ok(0.0));
    assert_eq!(ms("0"), Ok(0.0));
    assert!(ms("\"20\"").unwrap_err().contains("needs a unit"));
    assert!(ms("20").unwrap_err().contains("needs a unit"));
    assert!(ms("\"2h\"").unwrap_err().contains("not a duration"));
    assert!(ms("\"-5ms\"").unwrap_err().contains("out of range"));
    assert!(ms("\"10min\"").is_err());
    assert!(ms("\"61s\"").unwrap_err().contains("out of range"));
}

#[test]
fn names_and_duplicates_are_checked() {
    // Bad org id, bad node name.
    let e = err("[[org]]\nname = \"Acme\"\nnodes = [\"a\", \"b\"]\n");
    assert!(e.starts_with("line 2: org \"Acme\""), "{e}");
    let e = err("[[org]]\nname = \"acme\"\nnodes = [\"a\", \"b_c\"]\n");
    assert!(e.starts_with("line 3: node \"b_c\" of org acme"), "{e}");
    // Duplicate org, duplicate node.
    let e = err(
        "[[org]]\nname = \"acme\"\nnodes = [\"a\"]\n[[org]]\nname = \"acme\"\nnodes = [\"b\"]\n",
    );
    assert!(
        e.contains("line 5: org acme is declared twice (first on line 2)"),
        "{e}"
    );
    let e = err("[[org]]\nname = \"acme\"\nnodes = [\"a\", \"a\"]\n");
    assert!(e.contains("node acme/a is declared twice"), "{e}");
    // Self link, duplicate link (either direction).
    let base = "[[org]]\nname = \"acme\"\nnodes = [\"a\", \"b\"]\n[[link]]\na = \"acme/a\"\nb = \"acme/b\"\n";
    let e = err(&format!("{base}[[link]]\na = \"acme/a\"\nb = \"acme/a\"\n"));
    assert!(e.contains("joins a node to itself"), "{e}");
    let e = err(&format!("{base}[[link]]\na = \"acme/b\"\nb = \"acme/a\"\n"));
    assert!(e.starts_with("line 8: "), "{e}");
    assert!(e.contains("already linked (line 5)"), "{e}");
    // Unknown keys and TOML syntax carry a line too.
    let e = err(&format!("{base}colour = \"red\"\n"));
    assert!(e.contains("colour"), "{e}");
    let e = err("[[org]]\nname = \"acme\"\nnodes = [\"a\", \"b\"\n");
    assert!(e.starts_with("line "), "{e}");
    // Too small.
    assert!(err("[[org]]\nname = \"acme\"\nnodes = [\"a\"]\n").contains("at least 2 nodes"));
    assert!(err("").contains("at least 2 nodes"));
}

#[test]
fn load_prefixes_the_path() {
    let e = load(Path::new("/nonexistent/topo.toml")).unwrap_err();
    assert!(e.starts_with("/nonexistent/topo.toml: "), "{e}");
    let path = std::env::temp_dir().join(format!("trellis-topo-{}.toml", std::process::id()));
    std::fs::write(&path, TWO_ORGS).unwrap();
    let e = load(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(
        e.starts_with(&format!("{}: line 7: ", path.display())),
        "{e}"
    );
}

#[test]
fn resolve_takes_a_shape_or_a_file() {
    let tf: TopologyFile = resolve("ring", 5, 1, 1).unwrap();
    assert_eq!(tf.topology.nodes.len(), 5);
    assert_eq!(tf.topology.links.len(), 5);
    assert_eq!(tf.impairments, vec![LinkImpairment::default(); 5]);
    assert_eq!(tf.orgs, ["a"]);

    let tf = resolve("multi-org", 12, 3, 1).unwrap();
    assert_eq!(tf.orgs, ["a", "b", "c"]);
    let tf = resolve("full-mesh", 5, 1, 1).unwrap();
    assert_eq!(tf.topology.links.len(), 10);

    let path = dir().join("triangle.toml");
    let tf = resolve(path.to_str().unwrap(), 100, 3, 1).unwrap();
    assert_eq!(tf.topology.nodes.len(), 3, "a file ignores --nodes");
    assert_eq!(tf.orgs, ["lab"]);

    let e = resolve("donut", 5, 1, 1).unwrap_err();
    assert!(e.contains("mesh") && e.contains(".toml"), "{e}");
    let e = resolve("missing.toml", 5, 1, 1).unwrap_err();
    assert!(e.starts_with("missing.toml: "), "{e}");
    assert!(resolve("ring", 1, 1, 1).is_err());
}

/// The package dir at run time (cargo sets it for tests), so a test binary built from
/// another checkout sharing the target dir reads this checkout's files.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}
