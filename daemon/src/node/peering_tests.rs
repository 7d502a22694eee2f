//! Tests of peering configs: a real CA bundle, the example, and that every refusal names
//! the right file, line and reason.

use trellis_routing::{NodeId, OrgId, Relationship};

use super::*;
use crate::node::config::tests::{acme, ca_pem, refusal, TempDir};

const PEERING: &str = r#"org = "globex"
ca = "globex-ca.pem"
role = "peer"
[[endpoint]]
address = "127.0.0.1:7301"
node_id = "globex/edge-1"
"#;

#[test]
fn peering_config_with_a_real_ca_bundle_loads() {
    let dir = TempDir::new();
    dir.write(
        "globex-ca.pem",
        &format!("{}{}", ca_pem("globex"), ca_pem("globex")),
    );
    let example = manifest_dir().join("../examples/config/peerings/globex.toml");
    let file = dir.write("globex.toml", &std::fs::read_to_string(example).unwrap());
    let p = PeeringConfig::load(&file, &acme()).unwrap();
    assert_eq!(p.org, OrgId::new("globex").unwrap());
    assert_eq!(
        p.ca_ders.len(),
        2,
        "every certificate of the bundle is kept"
    );
    assert_eq!(p.role, Relationship::Customer);
    assert_eq!(
        (p.max_routes, p.trust, p.link_cost, p.local_pref),
        (10_000, 50, 10, 100)
    );
    assert_eq!(p.endpoints.len(), 2);
    assert_eq!(
        p.endpoints[0].node_id,
        NodeId::new("globex/edge-1").unwrap()
    );
    assert!(!p.endpoints[0].passive && p.endpoints[1].passive);
    assert_eq!(
        p.effective_link_cost(),
        15,
        "trust 50 weighs link cost 10 by 1.5"
    );
}

#[test]
fn trust_weighs_the_link_cost_from_once_to_twice() {
    let dir = TempDir::new();
    dir.write("globex-ca.pem", &ca_pem("globex"));
    let example = manifest_dir().join("../examples/config/peerings/globex.toml");
    let file = dir.write("globex.toml", &std::fs::read_to_string(example).unwrap());
    let mut p = PeeringConfig::load(&file, &acme()).unwrap();
    p.link_cost = 40;
    for (trust, cost) in [(100, 40), (75, 50), (0, 80)] {
        p.trust = trust;
        assert_eq!(p.effective_link_cost(), cost, "trust {trust}");
    }
    p.link_cost = 1;
    p.trust = 100;
    assert_eq!(p.effective_link_cost(), 1, "never below 1");
}

#[test]
fn peering_refusals_point_at_the_line() {
    let dir = TempDir::new();
    dir.write("globex-ca.pem", &ca_pem("globex"));
    dir.write(
        "junk.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    dir.write("empty.pem", "");
    let file = dir.0.join("globex.toml");
    let cases = [
        (
            PEERING.replace("globex/edge-1", "initech/edge-1"),
            6,
            "endpoint initech/edge-1 is not in the partner org globex",
        ),
        (
            PEERING.replace("\"peer\"", "\"internal\""),
            3,
            "role \"internal\" is not one of",
        ),
        (
            PEERING.replace("globex-ca.pem", "missing.pem"),
            2,
            "missing.pem: cannot read",
        ),
        (
            PEERING.replace("globex-ca.pem", "junk.pem"),
            2,
            "junk.pem: certificate 1 does not parse",
        ),
        (
            PEERING.replace("globex-ca.pem", "empty.pem"),
            2,
            "empty.pem: holds no PEM certificate",
        ),
        (
            PEERING.replace("org = \"globex\"", "org = \"acme\""),
            1,
            "is this node's own org",
        ),
        (
            format!("trust = 101\n{PEERING}"),
            1,
            "trust must be in 0..=100",
        ),
        (
            format!("weight = 1\n{PEERING}"),
            1,
            "unknown field `weight`",
        ),
        (
            format!("{PEERING}weight = 1\n"),
            7,
            "unknown field `weight`",
        ),
        (
            PEERING.replace("[[endpoint]]", "[[endpoints]]"),
            4,
            "unknown field `endpoints`",
        ),
    ];
    for (text, want_line, want_reason) in cases {
        let (line, msg) = refusal(PeeringConfig::parse(&text, &file, &acme()));
        assert_eq!(line, want_line, "{msg}\n---\n{text}");
        assert!(msg.contains(want_reason), "{msg:?} lacks {want_reason:?}");
    }
}

#[test]
fn a_peering_without_endpoints_is_refused() {
    let dir = TempDir::new();
    dir.write("globex-ca.pem", &ca_pem("globex"));
    let text = PEERING.split("[[endpoint]]").next().unwrap();
    let err = PeeringConfig::parse(text, &dir.0.join("g.toml"), &acme()).unwrap_err();
    assert!(err
        .to_string()
        .ends_with("g.toml: a peering needs at least one [[endpoint]]"));
}

#[test]
fn a_node_certificate_is_not_accepted_as_a_partner_ca() {
    let dir = TempDir::new();
    let org = OrgId::new("globex").unwrap();
    let ca_key = crate::pki::generate_key().unwrap();
    let ca_der = crate::pki::ca_certificate(&org, &ca_key, 1_800_000_000).unwrap();
    let ca = crate::pki::Ca::load(org.clone(), ca_der, ca_key).unwrap();
    let node_key = crate::pki::generate_key().unwrap();
    let node = NodeId::from_parts(&org, "edge-1").unwrap();
    let issued = ca
        .issue_node(&node, &node_key, 1_800_000_000, 3600)
        .unwrap();
    dir.write("globex-ca.pem", &crate::pki::der_to_pem(&issued.der));
    let (line, msg) = refusal(PeeringConfig::parse(
        PEERING,
        &dir.0.join("g.toml"),
        &acme(),
    ));
    assert_eq!(line, 2);
    assert!(msg.contains("is not a CA certificate"), "{msg}");
}

#[test]
fn load_dir_reads_toml_files_in_name_order_and_refuses_a_second_file_for_one_org() {
    let dir = TempDir::new();
    dir.write("globex-ca.pem", &ca_pem("globex"));
    dir.write("initech-ca.pem", &ca_pem("initech"));
    let initech = PEERING.replace("globex", "initech");
    dir.write("b-initech.toml", &initech);
    dir.write("a-globex.toml", PEERING);
    dir.write("README.md", "not a peering");
    dir.write("globex.toml.bak", "not = \"toml\" at all [");
    let orgs: Vec<String> = load_dir(&dir.0, &acme())
        .unwrap()
        .iter()
        .map(|p| p.org.as_str().to_string())
        .collect();
    assert_eq!(orgs, ["globex", "initech"]);

    dir.write("c-globex-again.toml", &format!("\n{PEERING}"));
    let (line, msg) = refusal(load_dir(&dir.0, &acme()));
    assert_eq!(line, 2);
    assert!(
        msg.contains("c-globex-again.toml:2:7: org globex already has a peering config in"),
        "{msg}"
    );
    assert!(msg.ends_with("a-globex.toml"), "{msg}");
}

#[test]
fn load_dir_of_a_missing_directory_names_it() {
    let dir = TempDir::new();
    let missing = dir.0.join("nope");
    let msg = load_dir(&missing, &acme()).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: cannot read peering directory",
            missing.display()
        )),
        "{msg}"
    );
}

/// The package dir at run time (cargo sets it for tests), so a test binary built from
/// another checkout sharing the target dir reads this checkout's files.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}
